"""Dataset registry: builders looked up by name (timm / BoTorch style).

A builder is a function ``builder(split: str = "train", **kwargs) -> Dataset``; ``split`` is
``"train"`` (random clip sampling and augmentation) or ``"val"`` (deterministic views). Plug in a
new dataset with ``@register_dataset("name")`` and a config file; nothing else changes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch.utils.data import Dataset

DatasetBuilder = Callable[..., Dataset]
_B = TypeVar("_B", bound=DatasetBuilder)

_DATASETS: dict[str, DatasetBuilder] = {}


def register_dataset(name: str) -> Callable[[_B], _B]:
    """Decorator registering a dataset builder under ``name``.

    Args:
        name: registry name; registering a name twice raises.

    Returns:
        The decorator, which returns the builder unchanged.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(builder: _B) -> _B:
        if name in _DATASETS:
            raise ValueError(
                f"dataset {name!r} is already registered (by {_DATASETS[name].__module__}."
                f"{_DATASETS[name].__qualname__})"
            )
        _DATASETS[name] = builder
        return builder

    return decorator


def build_dataset(name: str, **kwargs: Any) -> Dataset:
    """Build a registered dataset.

    Args:
        name: registry name (see ``list_datasets()``).
        **kwargs: passed to the builder (``split``, sizes, paths, ...).

    Returns:
        The dataset.

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(_DATASETS)}")
    return _DATASETS[name](**kwargs)


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names, sorted, optionally filtered by a glob ``pattern``."""
    names = sorted(_DATASETS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]
