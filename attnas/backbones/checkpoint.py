"""Load and save backbone weights from local files (``torch.load(weights_only=True)``).

Nothing is downloaded. A checkpoint is a state dict, or a dict holding one under ``state_dict``
or ``model`` (the common wrappers of training scripts). A ``module.`` prefix on every key (saved
from ``DataParallel``/``DistributedDataParallel``) is stripped.

Strict mode requires the same keys and shapes and raises ``CheckpointMismatchError`` naming every
missing, unexpected and mis-shaped key. Non-strict mode loads the keys that match in name and
shape, leaves the rest as initialised, and returns the report (so a backbone trained on 400
classes can be loaded into one for 10: the head is reported as mis-shaped and left alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn


class CheckpointMismatchError(KeyError):
    """The checkpoint's keys or shapes do not match the model's."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LoadReport:
    """What ``load_checkpoint`` did.

    Attributes:
        loaded: Keys copied from the checkpoint.
        missing: Model keys absent from the checkpoint.
        unexpected: Checkpoint keys the model does not have.
        mismatched: ``{key: (checkpoint shape, model shape)}`` for keys present in both.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """True when every key matched in name and shape."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """A human-readable list of the differences."""
        parts = []
        if self.missing:
            parts.append(f"missing keys (in the model, not the checkpoint): {self.missing}")
        if self.unexpected:
            parts.append(f"unexpected keys (in the checkpoint, not the model): {self.unexpected}")
        if self.mismatched:
            shapes = {
                k: f"checkpoint {list(a)} vs model {list(b)}"
                for k, (a, b) in self.mismatched.items()
            }
            parts.append(f"shape mismatches: {shapes}")
        return "; ".join(parts) if parts else "all keys match"


def _extract_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a dict of tensors)")
    keys = list(obj)
    if keys and all(k.startswith("module.") for k in keys):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj  # type: ignore[return-value]


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load weights from a local file into ``model`` (in place).

    Args:
        model: The module to fill.
        path: A file written by ``save_checkpoint`` / ``torch.save(model.state_dict())``.
        strict: Require exactly the model's keys and shapes.

    Returns:
        The ``LoadReport`` (in strict mode, always exact).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointMismatchError: In strict mode, when keys or shapes differ; the message names
            every differing key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    state = _extract_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = {
        k: (tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and state[k].shape != own[k].shape
    }
    loaded = [k for k in own if k in state and k not in mismatched]
    report = LoadReport(loaded, missing, unexpected, mismatched)
    if strict and not report.exact:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match {type(model).__name__}: {report.describe()}"
        )
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return report


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Save ``model.state_dict()`` to ``path`` (parent folders created).

    Args:
        model: The module to save.
        path: Destination file.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
