"""Load and save backbone weights from local files (``torch.load(weights_only=True)``).

Nothing is downloaded. A checkpoint is a state dict, or a dict holding one under ``state_dict``
or ``model`` (the common wrappers of training scripts). A ``module.`` prefix on every key (saved
from ``DataParallel``/``DistributedDataParallel``) is stripped.

Strict mode requires the same keys and shapes and raises ``CheckpointMismatchError`` naming every
missing, unexpected and mis-shaped key. Non-strict mode loads the keys that match in name and
shape, leaves the rest as initialised, logs every missing, unexpected and mis-shaped key, and
returns the report; a checkpoint of which no key matches raises in either mode (nothing
silently loads zero tensors).

``load_backbone_checkpoint`` is the loader for pretrained backbone weights, in the manner of
timm's ``load_pretrained``: strict, with two differences made on purpose and logged. A
classifier head (keys under ``head.``) whose shapes differ from the checkpoint's (a backbone
trained on 400 classes, loaded for 10) is dropped and left as initialised; modules inserted
into the model (keys under ``inserted.``: cells, supergraphs, non-local blocks) are new, so
their absence from the checkpoint is expected. Any other difference raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger("attnas.backbones")

HEAD_PREFIX = "head."
INSERTED_PREFIX = "inserted."


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
        new: Missing keys of modules inserted into the model (``load_backbone_checkpoint``).
        dropped_head: Classifier-head keys left as initialised because their shapes differ
            (``load_backbone_checkpoint``).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    dropped_head: list[str] = field(default_factory=list)

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


def _compare(model: nn.Module, path: Path) -> tuple[dict[str, Tensor], LoadReport]:
    """Read ``path`` and compare its keys and shapes with ``model``'s."""
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
    return state, LoadReport(loaded, missing, unexpected, mismatched)


def _raise_if_nothing_matched(report: LoadReport, model: nn.Module, path: Path) -> None:
    if not report.loaded:
        raise CheckpointMismatchError(
            f"no key of checkpoint {path} matches {type(model).__name__} in name and shape, "
            f"nothing was loaded: {report.describe()}"
        )


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load weights from a local file into ``model`` (in place).

    Args:
        model: The module to fill.
        path: A file written by ``save_checkpoint`` / ``torch.save(model.state_dict())``.
        strict: Require exactly the model's keys and shapes. Without it, the keys that match
            are loaded and the differences logged as a warning.

    Returns:
        The ``LoadReport`` (in strict mode, always exact).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointMismatchError: In strict mode, when keys or shapes differ; in either mode,
            when no key matches. The message names every differing key.
    """
    path = Path(path)
    state, report = _compare(model, path)
    if strict and not report.exact:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match {type(model).__name__}: {report.describe()}"
        )
    _raise_if_nothing_matched(report, model, path)
    if not report.exact:
        logger.warning(
            "checkpoint %s: loaded %d of %d model tensors; %s",
            path, len(report.loaded), len(model.state_dict()), report.describe(),
        )  # fmt: skip
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    return report


def load_backbone_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    head_prefix: str = HEAD_PREFIX,
    inserted_prefix: str = INSERTED_PREFIX,
) -> LoadReport:
    """Load pretrained backbone weights strictly, except for a resized head and new modules.

    Like timm's ``load_pretrained``: every key must match in name and shape, except that

    - classifier-head keys (``head_prefix``) whose shapes differ are dropped on purpose (the
      head keeps its initialisation; logged as a warning), and
    - model keys of inserted modules (``inserted_prefix``) absent from the checkpoint are new
      (logged at info level).

    Args:
        model: A backbone, with or without inserted modules.
        path: A state-dict file of the backbone.
        head_prefix: Key prefix of the classifier head.
        inserted_prefix: Key prefix of inserted modules.

    Returns:
        The ``LoadReport``: ``dropped_head`` and ``new`` list the two exceptions; ``missing``,
        ``unexpected`` and ``mismatched`` are empty.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointMismatchError: For any other missing, unexpected or mis-shaped key, or when no
            key matches; the message names every differing key.
    """
    path = Path(path)
    state, found = _compare(model, path)
    dropped = [k for k in found.mismatched if k.startswith(head_prefix)]
    new = [k for k in found.missing if k.startswith(inserted_prefix)]
    report = LoadReport(
        loaded=found.loaded,
        missing=[k for k in found.missing if k not in new],
        unexpected=found.unexpected,
        mismatched={k: v for k, v in found.mismatched.items() if k not in dropped},
        new=new,
        dropped_head=dropped,
    )
    if not report.exact:
        message = (
            f"checkpoint {path} does not match {type(model).__name__} (only a resized "
            f"'{head_prefix}' classifier and new '{inserted_prefix}' modules may differ): "
            f"{report.describe()}"
        )
        logger.error(message)
        raise CheckpointMismatchError(message)
    _raise_if_nothing_matched(report, model, path)
    if dropped:
        shapes = {k: f"{list(found.mismatched[k][0])} -> {list(found.mismatched[k][1])}"
                  for k in dropped}  # fmt: skip
        logger.warning(
            "checkpoint %s: classifier head resized, left as initialised: %s", path, shapes
        )
    if new:
        logger.info("checkpoint %s: %d tensors of inserted modules are new", path, len(new))
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
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
