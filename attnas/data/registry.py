"""Dataset registry: builders looked up by name (timm / BoTorch style).

A builder is a function ``builder(split: str = "train", **kwargs) -> Dataset``; ``split`` is
``"train"`` (random clip sampling and augmentation) or ``"val"`` (deterministic views). Plug in a
new dataset with ``@register_dataset("name")`` and a config file; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch.utils.data import Dataset

from attnas.registry import Registry

DatasetBuilder = Callable[..., Dataset]
_B = TypeVar("_B", bound=DatasetBuilder)

_DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def register_dataset(name: str) -> Callable[[_B], _B]:
    """Decorator registering a dataset builder under ``name``.

    Args:
        name: registry name; registering a name twice raises.

    Returns:
        The decorator, which returns the builder unchanged.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    return _DATASETS.register(name)  # type: ignore[return-value]


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
    return _DATASETS.get(name)(**kwargs)


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names, sorted, optionally filtered by a glob ``pattern``."""
    return _DATASETS.names(pattern)
