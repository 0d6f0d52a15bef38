"""``run_search``: the asynchronous ask/tell loop joining searcher, trial store and dispatcher.

While fewer than ``budget`` trials have finished (completed or failed), every free worker gets
a trial: first the store's pending trials (re-queued ones), then new cells from
``searcher.suggest(k)``, each added to the store before it is submitted. As soon as any trial
finishes it is recorded in the store, then observed by the searcher, and its worker is refilled,
so workers never wait for a batch.

Resume: started on a run directory whose store already holds trials, ``run_search`` re-queues the
trials that were running, rebuilds the searcher from the store (``searcher.restore(records)``:
completed and failed trials are observed in id order, pending ones marked pending) and submits
the pending trials again (same cell, same seed) before asking for new cells. Because the store
is written before the searcher learns anything and before a trial is submitted, a search killed
at any moment loses no finished trial, re-runs none, and stops at exactly ``budget`` finished
trials.

Design choices where the spec is silent:

- A trial whose worker died (``TrialEvent.retryable``) is re-queued until it has been started
  ``max_attempts`` times, then recorded failed; the searcher hears of it only once it is final.
- A returned result with ``status == "failed"`` (``attnas.train.TrialResult``'s convention) or a
  missing / non-finite ``metrics[metric]`` is a failed trial; its metrics are kept in the store.
- The master seed and metric are recorded in the store's ``meta`` table; resuming with another
  value is an error (``TrialStore.ensure_meta``). The budget is recorded too and may grow on
  resume (``budget=<larger>`` adds trials to a finished search; ``meta`` keeps every budget
  asked for under ``budgets``), never shrink.
- Fail fast: when the first ``fail_fast`` finished trials of the store all failed with the same
  error (its first line), the search stops with ``SystematicFailure`` naming that error instead
  of spending the rest of the budget on it (Ray Tune's ``max_failures``, Ax's failure-rate
  check). ``fail_fast=0`` never stops.
- The searcher's outcome objects are built by ``outcome_type(value=..., failed=..., error=...)``,
  by default ``attnas.controller.TrialOutcome`` imported when first needed, so this module does
  not import the GP machinery.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from attnas.dispatch.base import Dispatcher, TrialEvent
from attnas.dispatch.store import TrialRecord, TrialStore

log = logging.getLogger(__name__)

PayloadBuilder = Callable[[TrialRecord, Path], dict[str, Any]]


class AskTell(Protocol):
    """What ``run_search`` needs of a searcher (``attnas.controller.Searcher`` satisfies it)."""

    def suggest(self, n: int = 1) -> list[Any]: ...

    def observe(self, cell: Any, result: Any) -> None: ...

    def restore(self, records: Iterable[Any], metric: str = "top1") -> None: ...


class SystematicFailure(RuntimeError):
    """The first trials of a search all failed with one error (see ``run_search``'s
    ``fail_fast``).

    Attributes:
        error: the shared first line of their errors.
        trial_ids: the failed trials.
    """

    def __init__(self, error: str, trial_ids: list[int]) -> None:
        super().__init__(
            f"the first {len(trial_ids)} trials all failed with the same error, so the search "
            f"stopped: {error}"
        )
        self.error = error
        self.trial_ids = trial_ids


def _first_line(text: str | None) -> str:
    lines = [ln for ln in str(text or "failed").strip().splitlines() if ln.strip()]
    return lines[0] if lines else "failed"


@dataclass(frozen=True)
class SearchSummary:
    """What a call of ``run_search`` did.

    Attributes:
        budget: finished trials the search runs to.
        completed: completed trials in the store at the end.
        failed: failed trials in the store at the end.
        resumed: whether the store already held trials when the call started.
        requeued_at_start: running trials put back to pending at the start (resume).
        launched: trial starts during this call (re-queued attempts included).
        exhausted: the searcher ran out of new cells before the budget was reached.
        best: the best completed trial (by ``metric``), if any.
        wall_s: seconds the call took.
    """

    budget: int
    completed: int
    failed: int
    resumed: bool
    requeued_at_start: int
    launched: int
    exhausted: bool
    best: TrialRecord | None
    wall_s: float


def build_payload(
    record: TrialRecord, run_dir: Path, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The payload a trial function receives (a JSON-serialisable dict).

    Args:
        record: the trial (after ``mark_running``, so ``attempts`` is this attempt's number).
        run_dir: the search's run directory.
        config: the trial config shared by every trial (e.g. ``TrialSpec`` fields).

    Returns:
        ``{"trial_id", "cell", "cell_hash", "seed", "attempt", "run_dir", "trial_dir", "config"}``
        with ``trial_dir = <run_dir>/trials/<trial_id>``.
    """
    return {
        "trial_id": record.trial_id,
        "cell": record.cell,
        "cell_hash": record.cell_hash,
        "seed": record.seed,
        "attempt": record.attempts,
        "run_dir": str(run_dir),
        "trial_dir": str(Path(run_dir) / "trials" / str(record.trial_id)),
        "config": dict(config or {}),
    }


def restore_searcher(searcher: Any, records: list[TrialRecord], metric: str = "top1") -> None:
    """Replay the store's records (id order) into a fresh searcher.

    Uses ``searcher.restore(records, metric=...)`` when the searcher has it; otherwise observes
    finished trials (``observe``) and marks the others pending (``mark_pending``, when present).
    """
    if hasattr(searcher, "restore"):
        searcher.restore(records, metric=metric)
        return
    outcome_type = _default_outcome_type()
    for record in records:
        if record.finished:
            searcher.observe(record.spec(), _outcome(outcome_type, record, metric))
        elif hasattr(searcher, "mark_pending"):
            searcher.mark_pending(record.spec())


def run_search(
    searcher: AskTell,
    store: TrialStore,
    dispatcher: Dispatcher,
    budget: int,
    *,
    trial_config: Mapping[str, Any] | None = None,
    payload_builder: PayloadBuilder | None = None,
    metric: str = "top1",
    master_seed: int = 0,
    max_attempts: int = 3,
    poll_interval_s: float = 1.0,
    outcome_type: Callable[..., Any] | None = None,
    on_finish: Callable[[TrialRecord], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    fail_fast: int = 0,
) -> SearchSummary:
    """Run (or resume) a search until ``budget`` trials have finished.

    Args:
        searcher: the ask/tell searcher; must be fresh (no observations) when the store already
            holds trials, since it is rebuilt from them.
        store: the run's trial store (its directory is the run directory).
        dispatcher: where trials run; the caller shuts it down.
        budget: number of trials to finish (completed + failed), counting earlier runs.
        trial_config: the config shared by every trial, passed in each payload as ``config``.
        payload_builder: ``(record, run_dir) -> payload``; default ``build_payload`` with
            ``trial_config``.
        metric: the key of a trial's metrics the searcher maximises.
        master_seed: seeds every trial (``trial_seed(master_seed, trial_id)``).
        max_attempts: starts allowed for a trial whose worker keeps dying.
        poll_interval_s: longest wait for a finished trial before checking again.
        outcome_type: builds the searcher's outcomes (see the module docstring).
        on_finish: called with each trial's final record (e.g. to log it).
        meta: more values recorded in (and checked against) the store's ``meta`` table.
        fail_fast: stop when the first this many finished trials all failed with one error
            (0: never).

    Returns:
        A ``SearchSummary``.

    Raises:
        ValueError: for a bad budget, a budget smaller than the one recorded, or a store
            recorded with another seed/metric.
        RuntimeError: when the searcher proposes a cell that is already in the store.
        SystematicFailure: see ``fail_fast``.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if fail_fast < 0:
        raise ValueError(f"fail_fast must be >= 0, got {fail_fast}")
    start = time.monotonic()
    _grow_budget(store, int(budget))
    store.ensure_meta({"master_seed": int(master_seed), "metric": metric, **(meta or {})})
    if payload_builder is None:

        def payload_builder(record: TrialRecord, run_dir: Path) -> dict[str, Any]:
            return build_payload(record, run_dir, trial_config)

    make_outcome = outcome_type or _default_outcome_type()

    requeued = store.requeue_running()
    records = store.trials()
    resumed = bool(records)
    if resumed:
        restore_searcher(searcher, records, metric)
        log.info("resuming %s: %s, re-queued %s", store.path, store.counts(), requeued or "nothing")
    queue: deque[int] = deque(r.trial_id for r in records if r.state == "pending")
    known = {r.cell_hash for r in records}
    inflight: set[int] = set()
    launched = 0
    exhausted = False

    def finished() -> int:
        counts = store.counts()
        return counts["completed"] + counts["failed"]

    def launch(trial_id: int) -> None:
        nonlocal launched
        store.mark_running(trial_id)
        payload = payload_builder(store.get(trial_id), store.run_dir)
        dispatcher.submit(trial_id, payload)
        inflight.add(trial_id)
        launched += 1

    done = finished()
    while done < budget:
        while dispatcher.free_slots() > 0:
            if queue:
                launch(queue.popleft())
                continue
            room = budget - done - len(inflight)
            if room <= 0 or exhausted:
                break
            cells = searcher.suggest(min(dispatcher.free_slots(), room))
            if not cells:
                exhausted = True
                log.info("the searcher has no new cell; stopping at %d finished trials", done)
                break
            for cell in cells:
                key = cell.hash()
                if key in known:
                    raise RuntimeError(
                        f"searcher {type(searcher).__name__} proposed cell {key}, which is "
                        "already in the trial store"
                    )
                known.add(key)
                queue.append(store.add(cell))
        if not inflight:
            break  # nothing running and nothing left to start: the space is exhausted
        for event in dispatcher.poll(poll_interval_s):
            if event.trial_id not in inflight:
                log.warning("ignoring an event for trial %d, which is not running", event.trial_id)
                continue
            inflight.discard(event.trial_id)
            record = _record_event(store, event, metric, max_attempts)
            if record is None:
                queue.append(event.trial_id)
                continue
            searcher.observe(record.spec(), _outcome(make_outcome, record, metric))
            if on_finish is not None:
                on_finish(record)
            if record.state == "failed" and fail_fast:
                _check_systematic(store, fail_fast)
        done = finished()

    counts = store.counts()
    return SearchSummary(
        budget=int(budget),
        completed=counts["completed"],
        failed=counts["failed"],
        resumed=resumed,
        requeued_at_start=len(requeued),
        launched=launched,
        exhausted=exhausted,
        best=store.best(metric),
        wall_s=time.monotonic() - start,
    )


def _grow_budget(store: TrialStore, budget: int) -> None:
    """Record ``budget``, or grow the recorded one; a smaller budget is an error."""
    old = store.get_meta("budget")
    if old is not None and budget < int(old):
        raise ValueError(
            f"trial store {store.path}: meta 'budget' is {old} from the earlier run, but this run "
            f"asks for {budget}; a budget may grow on resume, not shrink"
        )
    if old is None or budget > int(old):
        store.set_meta("budget", budget)
        store.set_meta("budgets", [*(store.get_meta("budgets") or ([old] if old else [])), budget])


def _check_systematic(store: TrialStore, k: int) -> None:
    """Raise ``SystematicFailure`` when the first ``k`` finished trials failed alike."""
    finished = sorted(
        (r for r in store.trials() if r.finished), key=lambda r: (r.finished_at or 0, r.trial_id)
    )
    if len(finished) < k or any(r.state == "completed" for r in finished):
        return
    first = finished[:k]
    errors = {_first_line(r.error) for r in first}
    if len(errors) == 1:
        raise SystematicFailure(errors.pop(), [r.trial_id for r in first])


def _record_event(
    store: TrialStore, event: TrialEvent, metric: str, max_attempts: int
) -> TrialRecord | None:
    """Write a finished trial to the store; its final record, or None when it was re-queued."""
    tid = event.trial_id
    if event.ok:
        result = dict(event.result or {})
        value = result.get(metric)
        if result.get("status") == "failed":
            store.fail(
                tid,
                str(result.get("error") or "the trial reported a failure"),
                result,
                event.worker,
            )
        elif (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            store.fail(
                tid,
                f"the trial returned no finite {metric!r} (got {value!r})",
                result,
                event.worker,
            )
        else:
            store.complete(tid, result, event.worker)
        return store.get(tid)
    attempts = store.get(tid).attempts
    if event.retryable and attempts < max_attempts:
        log.warning(
            "trial %d: %s; re-queued (attempt %d of %d)",
            tid,
            (event.error or "").splitlines()[0],
            attempts,
            max_attempts,
        )
        store.requeue(tid, event.error)
        return None
    error = event.error or "failed"
    if event.retryable:
        error = f"{error}\n(gave up after {attempts} attempts)"
    store.fail(tid, error, worker=event.worker)
    return store.get(tid)


def _default_outcome_type() -> Callable[..., Any]:
    from attnas.controller import TrialOutcome

    return TrialOutcome


def _outcome(make: Callable[..., Any], record: TrialRecord, metric: str) -> Any:
    if record.state == "completed":
        return make(value=record.objective(metric), failed=False, error=None)
    return make(value=None, failed=True, error=record.error or "failed")
