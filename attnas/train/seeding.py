"""Seeds: per-trial seeds derived from one master seed, global seeding, deterministic mode.

``derive_seed(master, *keys)`` hashes ``(master, keys)`` with SHA-256 and keeps 31 bits, so
every trial of a search gets its own stream (a cell hash or trial id as key) and the same key
always gets the same seed, on any machine and Python version (``hash()`` is salted per process,
so it is not used). 31 bits fit every consumer: ``random``, ``numpy.random.seed`` (< 2**32) and
``torch.manual_seed``.

Deterministic mode turns on ``torch.use_deterministic_algorithms`` (errors on ops without a
deterministic implementation), cuDNN's deterministic kernels without autotuning, and sets
``CUBLAS_WORKSPACE_CONFIG`` (needed by deterministic cuBLAS) when the user has not.
``deterministic_mode`` is a context manager that restores the previous settings, so a trial
does not change the process for the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

_SEED_BITS = 31


def derive_seed(master_seed: int, *keys: object) -> int:
    """A seed in ``[0, 2**31)`` determined by a master seed and any number of keys.

    Args:
        master_seed: The search's (or run's) master seed.
        *keys: What distinguishes this stream, e.g. a trial key, ``"loader"``, an epoch.

    Returns:
        The derived seed.
    """
    text = repr((int(master_seed), *(str(k) for k in keys))).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") % (1 << _SEED_BITS)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device).

    Args:
        seed: The seed (``0 <= seed < 2**32``).
    """
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: seed ``random`` and NumPy from the worker's torch seed.

    torch gives each worker ``base_seed + worker_id`` (``base_seed`` drawn from the loader's
    generator), but NumPy's global RNG would otherwise be a copy of the parent's in every
    worker, so random augmentations would repeat across workers.

    Args:
        worker_id: Index of the worker (unused; the torch seed already includes it).
    """
    seed = torch.initial_seed() % (1 << 32)
    random.seed(seed)
    np.random.seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Run a block with deterministic algorithms (or leave the settings alone when disabled).

    Args:
        enabled: Whether to switch deterministic mode on inside the block.

    Yields:
        Nothing; the previous settings are restored on exit.
    """
    if not enabled:
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic = previous[2]
        torch.backends.cudnn.benchmark = previous[3]
