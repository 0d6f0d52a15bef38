"""run_search: failures, worker deaths, asynchrony, resume, budget, searcher contract."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

from attnas.dispatch import (
    SYNTHETIC_TRIAL_FN,
    LocalDispatcher,
    TrialEvent,
    TrialStore,
    build_payload,
    run_search,
    synthetic_objective,
    trial_seed,
)
from attnas.dispatch.synthetic import run_synthetic_trial
from attnas.dispatch.worker import run_payload
from attnas.space import load_space

SPACE = load_space("attention_nas")


@dataclass(frozen=True)
class Outcome:
    value: float | None
    failed: bool
    error: str | None


class HashRandomSearcher:
    """A minimal ask/tell searcher: random new cells, deduplicated by CellSpec.hash()."""

    def __init__(self, seed: int = 0, limit: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.observed: dict[str, Outcome] = {}
        self.pending: set[str] = set()
        self.limit = limit
        self.suggest_calls: list[int] = []

    def suggest(self, n: int = 1) -> list:
        self.suggest_calls.append(n)
        out = []
        while len(out) < n:
            if self.limit is not None and len(self.observed) + len(self.pending) >= self.limit:
                break
            cell = SPACE.sample(self.rng)
            if cell.hash() in self.observed or cell.hash() in self.pending:
                continue
            self.pending.add(cell.hash())
            out.append(cell)
        return out

    def observe(self, cell, outcome: Outcome) -> None:
        assert cell.hash() not in self.observed, "observed twice"
        self.pending.discard(cell.hash())
        self.observed[cell.hash()] = outcome

    def restore(self, records, metric: str = "top1") -> None:
        for r in records:
            if r.state in ("completed", "failed"):
                self.observe(r.spec(), Outcome(r.objective(metric), r.state == "failed", r.error))
            else:
                self.pending.add(r.cell_hash)


class InlineDispatcher:
    """Runs the synthetic trial in this process when polled, oldest first (fast, for logic)."""

    def __init__(self, slots: int = 2, stop_after: int | None = None) -> None:
        self.slots, self.stop_after = slots, stop_after
        self.running: deque[tuple[int, dict]] = deque()
        self.submitted: list[int] = []
        self.finished = 0

    def submit(self, trial_id: int, payload) -> None:
        assert len(self.running) < self.slots
        self.running.append((trial_id, dict(payload)))
        self.submitted.append(trial_id)

    def free_slots(self) -> int:
        return self.slots - len(self.running)

    def poll(self, timeout: float) -> list[TrialEvent]:
        if self.stop_after is not None and self.finished >= self.stop_after:
            raise KeyboardInterrupt("simulated kill of the search")
        trial_id, payload = self.running.popleft()
        out = run_payload(SYNTHETIC_TRIAL_FN, payload)
        self.finished += 1
        return [TrialEvent(trial_id, out["ok"], out.get("result"), out.get("error"))]

    def shutdown(self) -> None:
        self.running.clear()


def _expected_top1(record) -> float:
    return synthetic_objective(SPACE.encode(record.spec()), SPACE.cardinalities())


def test_failures_and_worker_deaths_with_local_workers(tmp_path: Path) -> None:
    config = {
        "raise_on_trials": [2],
        "crash_on_trials": {"3": 1, "4": 9},  # 3 dies once then succeeds; 4 always dies
        "nan_on_trials": [5],
    }
    store = TrialStore.open(tmp_path)
    searcher = HashRandomSearcher(seed=1)
    finished = []
    with LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=2, gpus=None) as dispatcher:
        summary = run_search(
            searcher, store, dispatcher, budget=6, trial_config=config, master_seed=11,
            max_attempts=2, poll_interval_s=0.2, outcome_type=Outcome, on_finish=finished.append,
        )  # fmt: skip
    records = {r.trial_id: r for r in store.trials()}
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    assert (summary.completed, summary.failed, summary.launched) == (3, 3, 8)
    assert summary.completed + summary.failed == 6 and not summary.exhausted

    assert records[2].state == "failed" and "RuntimeError: synthetic failure" in records[2].error
    assert records[3].state == "completed" and records[3].attempts == 2
    assert len((tmp_path / "trials" / "3" / "executions.log").read_text().splitlines()) == 2
    assert records[4].state == "failed" and records[4].attempts == 2
    assert "killed by SIGKILL" in records[4].error
    assert records[4].error.endswith("(gave up after 2 attempts)")
    assert records[5].state == "failed"
    assert records[5].error == "the trial returned no finite 'top1' (got nan)"
    for tid in (1, 3, 6):
        assert records[tid].metrics["top1"] == pytest.approx(_expected_top1(records[tid]))
        assert records[tid].worker.startswith("local:")
    assert all(r.seed == trial_seed(11, r.trial_id) for r in records.values())
    # the searcher heard of each trial once, with failures as failures
    assert set(searcher.observed) == {r.cell_hash for r in records.values()}
    assert not searcher.pending
    for r in records.values():
        outcome = searcher.observed[r.cell_hash]
        assert outcome.failed == (r.state == "failed")
        if r.state == "completed":
            assert outcome.value == r.metrics["top1"]
    assert sorted(r.trial_id for r in finished) == [1, 2, 3, 4, 5, 6]
    assert summary.best == max(
        (r for r in records.values() if r.state == "completed"), key=lambda r: r.metrics["top1"]
    )


def test_asynchronous_refill_while_a_trial_is_slow(tmp_path: Path) -> None:
    store = TrialStore.open(tmp_path)
    config = {"sleep_s": 0.1, "sleep_s_by_trial": {"1": 3.0}}
    with LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=2, gpus=None) as dispatcher:
        run_search(
            HashRandomSearcher(seed=2), store, dispatcher, budget=5, trial_config=config,
            poll_interval_s=0.2, outcome_type=Outcome,
        )  # fmt: skip
    records = {r.trial_id: r for r in store.trials()}
    slow = records[1]
    assert slow.state == "completed"
    during = [
        r for r in records.values()
        if r.trial_id != 1 and r.started_at > slow.started_at and r.finished_at < slow.finished_at
    ]  # fmt: skip
    assert len(during) >= 2, [(r.trial_id, r.started_at, r.finished_at) for r in records.values()]
    # a new trial was submitted after another one finished, while the slow one still ran
    first_done = min(r.finished_at for r in during)
    assert any(first_done <= r.started_at < slow.finished_at for r in during)


def test_resume_requeues_and_respects_budget(tmp_path: Path) -> None:
    """A store left by a killed search: 2 completed, 1 running, 1 pending; budget 6."""
    store = TrialStore.open(tmp_path)
    store.ensure_meta({"budget": 6, "master_seed": 0, "metric": "top1"})
    first = HashRandomSearcher(seed=3)
    cells = first.suggest(4)
    ids = [store.add(c) for c in cells]
    for tid in ids[:3]:
        store.mark_running(tid)
    store.complete(ids[0], {"top1": 0.25})
    store.fail(ids[1], "boom")
    before = {r.trial_id: r for r in store.trials()}

    searcher = HashRandomSearcher(seed=3)  # same seed: would propose the same cells again
    dispatcher = InlineDispatcher(slots=2)
    summary = run_search(searcher, store, dispatcher, budget=6, outcome_type=Outcome)
    records = {r.trial_id: r for r in store.trials()}
    assert summary.resumed and summary.requeued_at_start == 1
    assert summary.completed + summary.failed == 6 == len(records)
    # finished trials kept as they were, never re-run
    assert records[1] == before[1] and records[2] == before[2]
    assert dispatcher.submitted[:2] == [3, 4]  # re-queued/pending ones first, same cell
    assert sorted(dispatcher.submitted) == [3, 4, 5, 6]
    assert records[3].cell_hash == cells[2].hash() and records[3].attempts == 2
    assert records[3].seed == before[3].seed
    assert len({r.cell_hash for r in records.values()}) == 6
    assert set(searcher.observed) == {r.cell_hash for r in records.values()}
    assert searcher.observed[cells[0].hash()] == Outcome(0.25, False, None)
    assert searcher.observed[cells[1].hash()] == Outcome(None, True, "boom")
    # resuming a finished search does nothing
    again = run_search(HashRandomSearcher(), store, InlineDispatcher(), 6, outcome_type=Outcome)
    assert again.launched == 0 and again.completed + again.failed == 6
    with pytest.raises(ValueError, match=r"meta 'budget' is 6 .* may grow on resume, not shrink"):
        run_search(HashRandomSearcher(), store, InlineDispatcher(), 5, outcome_type=Outcome)


def test_a_finished_search_grows_with_a_larger_budget(tmp_path: Path) -> None:
    """Issue 16 item 7: ``budget=<larger>`` on resume adds trials (it used to be refused)."""
    store = TrialStore.open(tmp_path)
    run_search(HashRandomSearcher(seed=1), store, InlineDispatcher(), 3, outcome_type=Outcome)
    first = {r.trial_id: r for r in store.trials()}
    grown = run_search(
        HashRandomSearcher(seed=1), store, InlineDispatcher(), 5, outcome_type=Outcome
    )
    records = {r.trial_id: r for r in store.trials()}
    assert grown.resumed and grown.launched == 2 and sorted(records) == [1, 2, 3, 4, 5]
    assert all(records[i] == first[i] for i in first)  # the earlier trials are kept as they were
    assert store.get_meta("budget") == 5 and store.get_meta("budgets") == [3, 5]
    assert len({r.cell_hash for r in records.values()}) == 5


def test_fail_fast_stops_a_systematic_error(tmp_path: Path) -> None:
    """Issue 16 item 9: the first k trials failing alike stop the search with that error."""
    from attnas.dispatch import SystematicFailure

    class Broken(InlineDispatcher):
        def poll(self, timeout: float) -> list[TrialEvent]:
            trial_id, _ = self.running.popleft()
            error = f"TypeError: unknown dataset options ['x']\n  trial {trial_id}"
            return [TrialEvent(trial_id, True, {"status": "failed", "error": error})]

    store = TrialStore.open(tmp_path)
    with pytest.raises(SystematicFailure, match=r"first 3 trials all failed .*unknown dataset"):
        run_search(HashRandomSearcher(), store, Broken(), 20, outcome_type=Outcome, fail_fast=3)
    assert store.counts()["failed"] == 3 and len(store) <= 4  # 3 failed + 1 in flight, not 20
    # fail_fast=0 spends the budget, as before
    other = TrialStore.open(tmp_path / "b")
    summary = run_search(HashRandomSearcher(), other, Broken(), 4, outcome_type=Outcome)
    assert summary.failed == 4


def test_budget_caps_suggestions_and_exhaustion_stops(tmp_path: Path) -> None:
    searcher = HashRandomSearcher(seed=4)
    store = TrialStore.open(tmp_path / "a")
    summary = run_search(searcher, store, InlineDispatcher(slots=4), 5, outcome_type=Outcome)
    assert len(store) == 5 and summary.completed == 5
    assert searcher.suggest_calls[0] == 4 and sum(searcher.suggest_calls) == 5
    # a searcher that runs out of cells: the search ends early, flagged exhausted
    small = HashRandomSearcher(seed=5, limit=3)
    summary = run_search(
        small, TrialStore.open(tmp_path / "b"), InlineDispatcher(), 10, outcome_type=Outcome
    )
    assert summary.exhausted and summary.completed == 3


def test_duplicate_proposal_and_bad_arguments(tmp_path: Path) -> None:
    class Repeats(HashRandomSearcher):
        def suggest(self, n: int = 1) -> list:
            return [SPACE.sample(0)] * n

    with pytest.raises(RuntimeError, match=r"proposed cell [0-9a-f]{16}, which is already in"):
        run_search(
            Repeats(), TrialStore.open(tmp_path), InlineDispatcher(), 3, outcome_type=Outcome
        )
    with pytest.raises(ValueError, match="budget must be >= 1, got 0"):
        run_search(HashRandomSearcher(), TrialStore.open(tmp_path / "c"), InlineDispatcher(), 0)


def test_payload_contents(tmp_path: Path) -> None:
    store = TrialStore.open(tmp_path)
    tid = store.add(SPACE.sample(0), seed=5)
    store.mark_running(tid)
    payload = build_payload(store.get(tid), tmp_path, {"sleep_s": 0})
    assert payload == {
        "trial_id": 1,
        "cell": SPACE.sample(0).to_dict(),
        "cell_hash": SPACE.sample(0).hash(),
        "seed": 5,
        "attempt": 1,
        "run_dir": str(tmp_path),
        "trial_dir": str(tmp_path / "trials" / "1"),
        "config": {"sleep_s": 0},
    }
    assert store.trial_dir(tid) == tmp_path / "trials" / "1"
    assert run_synthetic_trial(payload)["top1"] == pytest.approx(
        synthetic_objective(SPACE.encode(SPACE.sample(0)), SPACE.cardinalities())
    )


def test_real_random_search_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    """The controller's RandomSearch + its TrialOutcome (default outcome_type) across a kill."""
    from attnas.controller import RandomSearch

    store = TrialStore.open(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_search(
            RandomSearch(SPACE, seed=0),
            store,
            InlineDispatcher(2, stop_after=3),
            6,
            trial_config={"raise_on_trials": [2]},
        )
    counts = store.counts()
    assert counts["completed"] + counts["failed"] == 3 and counts["running"] == 2
    before = {r.trial_id: r for r in store.trials() if r.finished}

    searcher = RandomSearch(SPACE, seed=0)
    summary = run_search(
        searcher, store, InlineDispatcher(2), 6, trial_config={"raise_on_trials": [2]}
    )
    assert summary.completed + summary.failed == 6 == len(store)
    after = {r.trial_id: r for r in store.trials()}
    assert all(after[tid] == rec for tid, rec in before.items())
    assert after[2].state == "failed"
    observed = {o.cell.hash(): o.outcome for o in searcher.observations}
    assert set(observed) == {r.cell_hash for r in after.values()}
    assert observed[after[2].cell_hash].failed
    best = searcher.best()
    assert best is not None and best[1] == summary.best.metrics["top1"]
