"""The dispatcher interface, its finished-trial events and the dispatcher registry.

A dispatcher runs trial functions somewhere (local processes, a Ray cluster) and reports when
they finish. It knows trial ids and payloads (plain dicts), not cells, searchers or the store:
``run_search`` decides what a finished trial means (complete, fail, re-queue).

A trial function is named by an import path ``"package.module:function"``, resolved in the
worker; it takes the payload dict and returns a JSON-serialisable metrics dict (see
``attnas.dispatch.worker``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from attnas.registry import Registry


@dataclass(frozen=True)
class TrialEvent:
    """A trial that finished on a worker.

    Attributes:
        trial_id: the trial's id.
        ok: whether the trial function returned (its result is in ``result``).
        result: what the trial function returned (None unless ``ok``).
        error: why it did not return: the trial's traceback, ``timeout ...`` or the worker's
            death (None when ``ok``).
        retryable: the failure was the worker's, not the trial's (the process died, was
            killed or its node was lost), so running the trial again may succeed.
        worker: which worker ran it, e.g. ``local:0:gpu1`` or ``ray:<node id>``.
        elapsed_s: wall-clock seconds from submission to the event.
    """

    trial_id: int
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = False
    worker: str | None = None
    elapsed_s: float = 0.0


@runtime_checkable
class Dispatcher(Protocol):
    """Runs trials asynchronously (``submit``) and reports finished ones (``poll``)."""

    def submit(self, trial_id: int, payload: Mapping[str, Any]) -> None:
        """Start the trial on a free worker (``free_slots() > 0`` is the caller's check)."""
        ...

    def poll(self, timeout: float) -> list[TrialEvent]:
        """Wait up to ``timeout`` seconds for at least one trial to finish; return all that did."""
        ...

    def free_slots(self) -> int:
        """How many more trials can run now."""
        ...

    def shutdown(self) -> None:
        """Stop every running trial and release the workers."""
        ...


def resolve_trial_fn(path: str) -> Callable[[dict[str, Any]], Mapping[str, Any]]:
    """The function named by ``"package.module:function"``.

    Raises:
        ValueError: when ``path`` is not of that form or names something not callable.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"trial function {path!r} must look like 'package.module:function'")
    module = importlib.import_module(module_name)
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"trial function {path!r}: {module_name} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"trial function {path!r} is not callable")
    return fn  # type: ignore[return-value]


D = TypeVar("D")
_DISPATCHERS: Registry[Callable[..., Dispatcher]] = Registry("dispatcher")


def register_dispatcher(name: str) -> Callable[[D], D]:
    """Class decorator registering a dispatcher under ``name``; a duplicate name is an error."""
    return _DISPATCHERS.register(name)  # type: ignore[return-value]


def list_dispatchers(pattern: str | None = None) -> list[str]:
    """Names of the registered dispatchers, optionally filtered by a glob ``pattern``."""
    return _DISPATCHERS.names(pattern)


def build_dispatcher(name: str, **kwargs: Any) -> Dispatcher:
    """The dispatcher registered as ``name``, built with keyword arguments.

    Raises:
        KeyError: for an unknown name (the message lists the registered ones).
    """
    return _DISPATCHERS.get(name)(**kwargs)
