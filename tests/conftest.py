"""Shared fixtures for the whole test suite, and the ``gpu`` marker's skip.

- ``@pytest.mark.gpu`` tests are skipped (with a reason) when ``torch.cuda.is_available()`` is
  False. torch is imported lazily there, so collecting pure-data tests stays torch-free.
- ``shared_dir``: the spec folder ``../shared`` next to the repository root (the first parent of
  this file holding ``pyproject.toml``); tests that need it are skipped when it is absent.
- ``load_oracle``: loads ``tests/data/oracles/<name>``, the repository's copies of the authors'
  reference outputs (a trusted project file, hence ``weights_only=False``), so the checks
  against the authors' code run in a plain clone without ``../shared``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def repo_root() -> Path:
    """The first parent of this file that holds ``pyproject.toml``."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError(f"no pyproject.toml above {here}")


def shared_path() -> Path:
    """``<repo root>/../shared`` (may not exist)."""
    return repo_root().parent / "shared"


ORACLE_DIR = Path(__file__).resolve().parent / "data" / "oracles"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` spec folder; skips the test when it is absent."""
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared spec folder {path} is absent (oracles and papers live there)")
    return path


@pytest.fixture(scope="session")
def load_oracle() -> Callable[[str], dict[str, Any]]:
    """``load_oracle(name)`` -> the dict saved in ``tests/data/oracles/<name>``.

    A missing file is an error, not a skip: the copies are part of the repository.
    """
    import torch

    def _load(name: str) -> dict[str, Any]:
        path = ORACLE_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"oracle file {path} is missing from the repository")
        # Trusted project file holding a dict of tensors and plain constructor arguments.
        return torch.load(path, weights_only=False)

    return _load


@pytest.fixture
def project_root() -> Path:
    """The repository root (holds ``pyproject.toml`` and ``search_spaces/``)."""
    return repo_root()


def _nonlocal_reference(
    x: Any,
    state_dict: dict[str, Any],
    pool_size: tuple[int, int, int] = (1, 1, 1),
    instantiation: str = "softmax",
    norm: bool = True,
    train: bool = False,
    eps: float = 1e-5,
) -> Any:
    """pytorchvideo's non-local block restated from REFERENCE_OPS.md with einsum and explicit
    block max-pooling, reading the official parameter names from ``state_dict``.

    Shape:
        ``x``: ``(B, C, T, H, W)`` with T, H, W multiples of ``pool_size``; returns the same.
    """
    import torch

    def conv(name: str, inp: torch.Tensor) -> torch.Tensor:
        weight = state_dict[f"{name}.weight"][:, :, 0, 0, 0]  # (C_out, C_in)
        out = torch.einsum("oc,bcthw->bothw", weight, inp)
        return out + state_dict[f"{name}.bias"][None, :, None, None, None]

    b, c, t, h, w = x.shape
    pt, ph, pw = pool_size
    theta = conv("conv_theta", x)  # (B, d, T, H, W)
    d = theta.shape[1]
    # max over each pt×ph×pw block of x, before phi and g (Caffe2 order)
    blocks = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    x_p = blocks.amax(dim=(3, 5, 7))  # (B, C, T', H', W')
    phi = conv("conv_phi", x_p)
    g = conv("conv_g", x_p)
    q = theta.reshape(b, d, t * h * w)
    k = phi.reshape(b, d, -1)
    v = g.reshape(b, d, -1)
    n_keys = k.shape[-1]
    a = torch.einsum("bdi,bdj->bij", q, k)  # (B, THW, T'H'W')
    if instantiation == "softmax":
        a = a * d**-0.5
        a = torch.exp(a - a.amax(dim=-1, keepdim=True))
        a = a / a.sum(dim=-1, keepdim=True)
    elif instantiation == "dot_product":
        a = a / n_keys
    else:
        raise ValueError(instantiation)
    y = torch.einsum("bij,bdj->bdi", a, v).reshape(b, d, t, h, w)
    p = conv("conv_out", y)  # (B, C, T, H, W)
    if norm:
        if train:
            mean = p.mean(dim=(0, 2, 3, 4))
            var = ((p - mean[None, :, None, None, None]) ** 2).mean(dim=(0, 2, 3, 4))
        else:
            mean, var = state_dict["norm.running_mean"], state_dict["norm.running_var"]
        shape = (1, c, 1, 1, 1)
        p = (p - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
        p = p * state_dict["norm.weight"].view(shape) + state_dict["norm.bias"].view(shape)
    return x + p


@pytest.fixture(scope="session")
def nonlocal_reference() -> Callable[..., Any]:
    """The explicit restatement of pytorchvideo's non-local block (see ``_nonlocal_reference``)."""
    return _nonlocal_reference


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a killed but not yet reaped zombie counts as dead.

    In containers the process that inherits orphans may reap them late, so ``os.kill(pid, 0)``
    alone would call a dead worker alive.
    """
    import os

    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def process_alive() -> Callable[[int], bool]:
    """``process_alive(pid)``: see ``_process_alive``."""
    return _process_alive
