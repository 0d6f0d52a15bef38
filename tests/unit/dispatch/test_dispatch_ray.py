"""RayDispatcher on a local Ray: a few synthetic trials, one raising, one whose worker dies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from attnas.dispatch import SYNTHETIC_TRIAL_FN, TrialStore, run_search, synthetic_objective
from attnas.space import load_space

SPACE = load_space("attention_nas")


@dataclass(frozen=True)
class Outcome:
    value: float | None
    failed: bool
    error: str | None


class FirstCells:
    """Deterministic searcher: the cells of vectors drawn from a fixed seed, deduplicated."""

    def __init__(self) -> None:
        self.i, self.seen, self.observed = 0, set(), {}

    def suggest(self, n: int = 1) -> list:
        out = []
        while len(out) < n:
            cell = SPACE.sample(self.i)
            self.i += 1
            if cell.hash() not in self.seen:
                self.seen.add(cell.hash())
                out.append(cell)
        return out

    def observe(self, cell, outcome) -> None:
        self.observed[cell.hash()] = outcome

    def restore(self, records, metric: str = "top1") -> None:
        raise AssertionError("a fresh store needs no restore")


@pytest.mark.slow
def test_local_ray_search_completes(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from attnas.dispatch import RayDispatcher, build_dispatcher

    store = TrialStore.open(tmp_path)
    config = {"raise_on_trials": [3], "crash_on_trials": {"2": 1}}
    dispatcher = build_dispatcher("ray", trial_fn=SYNTHETIC_TRIAL_FN, num_cpus=2, num_workers=2)
    try:
        assert isinstance(dispatcher, RayDispatcher)
        assert dispatcher.gpus_per_trial == 0.0 and dispatcher.free_slots() == 2
        searcher = FirstCells()
        summary = run_search(
            searcher,
            store,
            dispatcher,
            budget=4,
            trial_config=config,
            poll_interval_s=0.5,
            outcome_type=Outcome,
            max_attempts=2,
        )
    finally:
        dispatcher.shutdown()
    assert not ray.is_initialized()
    records = {r.trial_id: r for r in store.trials()}
    assert summary.completed + summary.failed == 4 == len(records)
    assert records[3].state == "failed" and "synthetic failure of trial 3" in records[3].error
    # the worker that SIGKILLed itself surfaced as a Ray worker death: re-queued, then completed
    assert records[2].state == "completed" and records[2].attempts == 2
    for tid in (1, 2, 4):
        rec = records[tid]
        expected = synthetic_objective(SPACE.encode(rec.spec()), SPACE.cardinalities())
        assert rec.metrics["top1"] == pytest.approx(expected)
        assert rec.worker.startswith("ray:")
    assert len(searcher.observed) == 4
