"""The searcher interface (ask/tell), trial outcomes, resume records and the searcher registry.

Every searcher (``GPBandit``, ``RandomSearch``, ``RegularizedEvolution``) follows one protocol:

- ``suggest(n)`` returns up to ``n`` cells that are neither evaluated nor pending, compared by
  ``CellSpec.hash()`` so isomorphic duplicates count as the same cell. Suggested cells are
  pending until ``observe``d (or ``release``d), so n workers asking at once get n different cells.
- ``observe(cell, result)`` records a finished trial: a ``TrialOutcome`` or a plain float (the
  objective, validation top-1, maximised). A non-finite value (NaN loss, diverged run) is
  recorded as a failure.
- ``mark_pending(cell)`` registers a trial that runs without having been suggested by this
  instance (e.g. one re-queued after a restart); ``release(cell)`` drops a pending cell without
  a result, so it may be proposed again.
- ``restore(records)`` rebuilds the state from the trial store's records (completed, failed and
  pending/running trials), so a resumed search continues where it stopped.

Choices where the spec is silent:

- Randomness is drawn from a ``random.Random`` seeded by (seed, purpose, number of cells seen so
  far) rather than one long-lived generator, so a searcher restored from records makes the same
  next proposal as the one that wrote them, and the same seed gives the same proposals.
- Observing a cell whose hash is already observed is an error (a trial must not be counted
  twice); marking an already-pending cell pending again is a no-op.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from attnas.registry import Registry
from attnas.space import CellSpec, SearchSpace

TRIAL_STATES = ("pending", "running", "completed", "failed")


@dataclass(frozen=True)
class TrialOutcome:
    """The result of one trial as a searcher sees it.

    Args:
        value: the objective (validation top-1, maximised); None for a failed trial.
        failed: whether the trial failed (exception, NaN loss, timeout, out of memory).
        error: what went wrong, for failed trials.

    A non-failed outcome with a missing or non-finite value is turned into a failure whose
    error names the value, so a NaN never reaches a model.
    """

    value: float | None = None
    failed: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        if self.failed:
            if self.value is not None and not math.isfinite(self.value):
                object.__setattr__(self, "value", None)
            return
        if self.value is None:
            raise ValueError("a TrialOutcome that did not fail needs a value (or failed=True)")
        value = float(self.value)
        if not math.isfinite(value):
            object.__setattr__(self, "value", None)
            object.__setattr__(self, "failed", True)
            object.__setattr__(self, "error", self.error or f"non-finite objective value {value}")
            return
        object.__setattr__(self, "value", value)

    @classmethod
    def success(cls, value: float) -> TrialOutcome:
        return cls(value=value)

    @classmethod
    def failure(cls, error: str) -> TrialOutcome:
        return cls(value=None, failed=True, error=error)


def as_outcome(result: TrialOutcome | float | int) -> TrialOutcome:
    """``result`` as a ``TrialOutcome`` (a number is a successful trial's objective)."""
    if isinstance(result, TrialOutcome):
        return result
    if isinstance(result, bool) or not isinstance(result, (int, float)):
        raise TypeError(
            f"observe() takes a TrialOutcome or a float objective, got {type(result).__name__}"
        )
    return TrialOutcome(value=float(result))


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored, for ``restore``: its cell, state and (when finished) its outcome.

    Args:
        cell: the trial's cell.
        state: one of ``pending``, ``running``, ``completed``, ``failed``.
        value: the objective of a completed trial.
        error: the error text of a failed trial.
    """

    cell: CellSpec
    state: str
    value: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in TRIAL_STATES:
            raise ValueError(f"trial state {self.state!r} is not one of {list(TRIAL_STATES)}")

    @classmethod
    def coerce(cls, record: Any, metric: str = "top1") -> TrialRecord:
        """A ``TrialRecord`` from a store record (an object or a mapping).

        The record needs ``cell`` (a ``CellSpec`` or its dict form) and ``state``; a completed
        one needs ``value`` or ``metrics[metric]``; ``error`` is optional.
        """
        if isinstance(record, TrialRecord):
            return record

        def get(key: str) -> Any:
            if isinstance(record, Mapping):
                return record.get(key)
            return getattr(record, key, None)

        cell, state = get("cell"), get("state")
        if cell is None or state is None:
            raise ValueError(f"trial record needs 'cell' and 'state', got {record!r}")
        if isinstance(cell, Mapping):
            cell = CellSpec.from_dict(cell, source="trial record")
        value = get("value")
        metrics = get("metrics")
        if value is None and isinstance(metrics, Mapping):
            value = metrics.get(metric)
        if state == "completed" and value is None:
            raise ValueError(
                f"completed trial record has no 'value' and no metrics[{metric!r}]: {record!r}"
            )
        return cls(cell=cell, state=str(state), value=value, error=get("error"))

    def outcome(self) -> TrialOutcome:
        """The outcome of a finished (completed or failed) record."""
        if self.state == "completed":
            assert self.value is not None
            return TrialOutcome(value=float(self.value))
        if self.state == "failed":
            return TrialOutcome.failure(self.error or "failed (no error recorded)")
        raise ValueError(f"a {self.state} trial has no outcome yet")


@runtime_checkable
class Searcher(Protocol):
    """Ask/tell interface every searcher implements (see the module docstring)."""

    space: SearchSpace

    def suggest(self, n: int = 1) -> list[CellSpec]: ...

    def observe(self, cell: CellSpec, result: TrialOutcome | float) -> None: ...

    def mark_pending(self, cell: CellSpec) -> None: ...

    def release(self, cell: CellSpec) -> None: ...

    def restore(self, records: Iterable[Any], metric: str = "top1") -> None: ...


@dataclass(frozen=True)
class Observation:
    """A finished trial held by a searcher."""

    cell: CellSpec
    vector: tuple[int, ...]
    outcome: TrialOutcome


class SearcherBase:
    """Bookkeeping shared by the searchers: observed and pending cells keyed by canonical hash.

    Subclasses implement ``_propose(n, excluded)`` returning up to n cells whose hashes are not
    in ``excluded`` and are pairwise distinct.
    """

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)
        self._observed: dict[str, Observation] = {}
        self._pending: dict[str, CellSpec] = {}

    # ------------------------------------------------------------------ ask / tell
    def suggest(self, n: int = 1) -> list[CellSpec]:
        """Up to ``n`` new cells (fewer only when the space runs out); they become pending."""
        if n < 0:
            raise ValueError(f"suggest(n) needs n >= 0, got {n}")
        if n == 0:
            return []
        cells = self._propose(n, self._excluded())
        for cell in cells:
            self._pending[cell.hash()] = cell
        return cells

    def observe(self, cell: CellSpec, result: TrialOutcome | float) -> None:
        """Record a finished trial of ``cell`` (completed or failed)."""
        outcome = as_outcome(result)
        vector = tuple(self.space.encode(cell))
        key = cell.hash()
        if key in self._observed:
            raise ValueError(
                f"cell {key} was already observed (value {self._observed[key].outcome.value}); "
                "a trial must not be observed twice"
            )
        self._pending.pop(key, None)
        self._observed[key] = Observation(cell, vector, outcome)
        self._on_observe(self._observed[key])

    def mark_pending(self, cell: CellSpec) -> None:
        """Register ``cell`` as running (not yet observed) so it is not proposed again."""
        self.space.check(cell)
        key = cell.hash()
        if key in self._observed:
            raise ValueError(f"cell {key} is already observed; it cannot be pending")
        self._pending.setdefault(key, cell)

    def release(self, cell: CellSpec) -> None:
        """Drop a pending cell without a result (its trial was abandoned)."""
        key = cell.hash()
        if key not in self._pending:
            raise KeyError(f"cell {key} is not pending")
        del self._pending[key]

    def restore(self, records: Iterable[Any], metric: str = "top1") -> None:
        """Replay trial-store records (in the order given) into a fresh searcher.

        Completed and failed records are observed; pending and running ones are marked pending.

        Args:
            records: ``TrialRecord``s, or store records with ``cell``, ``state`` and
                ``value``/``metrics[metric]``/``error`` (see ``TrialRecord.coerce``).
            metric: the metrics key holding the objective.
        """
        if self._observed or self._pending:
            raise RuntimeError("restore() needs a fresh searcher (it has observations already)")
        for raw in records:
            record = TrialRecord.coerce(raw, metric)
            if record.state in ("completed", "failed"):
                self.observe(record.cell, record.outcome())
            else:
                self.mark_pending(record.cell)

    # ------------------------------------------------------------------ views
    @property
    def observations(self) -> list[Observation]:
        """Finished trials in the order they were observed."""
        return list(self._observed.values())

    @property
    def pending(self) -> list[CellSpec]:
        return list(self._pending.values())

    def best(self) -> tuple[CellSpec, float] | None:
        """The best completed cell and its value (the first one on ties); None before any."""
        done = [o for o in self._observed.values() if not o.outcome.failed]
        if not done:
            return None
        top = max(done, key=lambda o: o.outcome.value)  # max keeps the first of equal values
        assert top.outcome.value is not None
        return top.cell, top.outcome.value

    # ------------------------------------------------------------------ helpers for subclasses
    def _excluded(self) -> set[str]:
        return set(self._observed) | set(self._pending)

    def _rng(self, purpose: str) -> random.Random:
        """A generator fixed by (seed, purpose, number of cells seen): see the module docstring."""
        return random.Random(f"{self.seed}:{purpose}:{len(self._observed)}:{len(self._pending)}")

    def _random_cells(self, n: int, excluded: set[str], rng: random.Random) -> list[CellSpec]:
        """Up to n uniformly random cells with distinct hashes outside ``excluded``."""
        return _random_distinct(self.space, n, excluded, rng)

    def _on_observe(self, obs: Observation) -> None:
        """Hook for subclasses (e.g. evolution's population)."""

    def _propose(self, n: int, excluded: set[str]) -> list[CellSpec]:
        raise NotImplementedError


def _random_distinct(
    space: SearchSpace, n: int, excluded: set[str], rng: random.Random
) -> list[CellSpec]:
    """Sample cell vectors uniformly, keeping new hashes, until n or the space is exhausted.

    Rejection sampling while that is cheap; once 30 draws in a row are rejected the remaining
    cells are enumerated (only ever needed for spaces nearly used up, which are small).
    """
    cards = space.cardinalities()
    taken = set(excluded)
    out: list[CellSpec] = []
    misses = 0
    while len(out) < n and misses < 30:
        cell = space.decode([rng.randrange(c) for c in cards])
        key = cell.hash()
        if key in taken:
            misses += 1
            continue
        misses = 0
        taken.add(key)
        out.append(cell)
    if len(out) < n:
        rest = {}
        for cell in space.enumerate(limit=2_000_000):
            rest.setdefault(cell.hash(), cell)
        left = [c for h, c in rest.items() if h not in taken]
        rng.shuffle(left)
        out.extend(left[: n - len(out)])
    return out


S = TypeVar("S")
_SEARCHERS: Registry[Callable[..., Any]] = Registry("searcher")


def register_searcher(name: str) -> Callable[[S], S]:
    """Class decorator registering a searcher under ``name``; a duplicate name is an error."""
    return _SEARCHERS.register(name)  # type: ignore[return-value]


def list_searchers(pattern: str | None = None) -> list[str]:
    """Registered searcher names, sorted, optionally filtered by a glob ``pattern``."""
    return _SEARCHERS.names(pattern)


def searcher_class(name: str) -> Callable[..., Any]:
    """The class registered as ``name`` (e.g. to check options against its signature)."""
    return _SEARCHERS.get(name)


def build_searcher(name: str, space: SearchSpace, **kwargs: Any) -> Searcher:
    """The searcher registered as ``name``, built for ``space`` with keyword arguments."""
    return _SEARCHERS.get(name)(space, **kwargs)
