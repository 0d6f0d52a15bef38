"""``Registry[T]``: the one name -> object table behind every ``register_*`` / ``build_*``.

Modelled on timm's ``_registry.py``: a plain dict filled by a decorator that refuses a duplicate
name, ``names(pattern)`` filtered with ``fnmatch``, and an unknown name answered with the list
of known ones. Ops, backbones, datasets, searchers and dispatchers each keep their own public
functions (``register_op``, ``build_backbone``, ``list_datasets``, ...) as thin wrappers over one
instance, so the behaviour (messages included) is the same everywhere.

Pure Python: importing it imports neither torch nor anything else of the project, so the
pure-data and controller layers may use it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind looked up by name.

    Args:
        kind: what is registered (``"op type"``, ``"backbone"``, ...), used in messages.

    Example::

        _THINGS: Registry[type[Thing]] = Registry("thing")

        @_THINGS.register("mine")
        class Mine(Thing): ...

        _THINGS.get("mine")  # Mine
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding its argument under ``name`` and returning it unchanged.

        Raises:
            ValueError: ``name`` is already registered (the message names the holder).
        """

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Add ``obj`` under ``name``; a duplicate name raises ``ValueError``."""
        if name in self._entries:
            held = self._entries[name]
            owner = getattr(held, "__module__", None)
            qual = getattr(held, "__qualname__", type(held).__name__)
            by = f" (by {owner}.{qual})" if owner else ""
            raise ValueError(f"{self.kind} {name!r} is already registered{by}")
        self._entries[name] = obj

    def remove(self, name: str) -> T:
        """Remove and return the entry ``name`` (tests and plug-in reloads)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry ``name``.

        Raises:
            KeyError: for an unknown name; the message lists the registered ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {self.names()}") from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted, optionally filtered by a case-sensitive glob pattern."""
        names = sorted(self._entries)
        return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
