"""The simulated backend through the real ``run_search`` loop and trial store, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnas.benchmark import Benchmark, SimulatedDispatcher, load, simulated_result
from attnas.benchmark.synthetic import synthetic_benchmark
from attnas.controller import RandomSearch, build_searcher
from attnas.dispatch import TrialStore, run_search

from .conftest import SPACE_K1, manifest, synthetic_rows


def test_result_is_one_recorded_seed_chosen_by_the_trial_seed(bench: Benchmark):
    cell = bench.cells()[3]
    answers = {simulated_result(bench, cell.to_dict(), s)["top1"] for s in range(20)}
    assert answers == set(bench.values(cell))
    again = simulated_result(bench, cell.to_dict(), 7)
    assert again == simulated_result(bench, cell.to_dict(), 7)
    assert again["history"][-1]["val_top1"] == again["top1"]
    assert again["table_seed"] in bench.seeds(cell)


def test_a_cell_missing_from_the_table_is_a_failed_trial(bench: Benchmark):
    space = SPACE_K1.with_overrides(num_ops=2)
    cell = space.sample(0)
    result = simulated_result(bench, cell.to_dict(), 0)
    assert result["status"] == "failed" and "is not in benchmark 'synthetic'" in result["error"]


def test_search_through_run_search_and_the_store(bench: Benchmark, tmp_path: Path):
    dispatcher = SimulatedDispatcher(bench, num_workers=4)
    with TrialStore.open(tmp_path) as store:
        summary = run_search(RandomSearch(SPACE_K1, seed=0), store, dispatcher, budget=10)
        records = store.trials()
    assert summary.completed == 10 and summary.failed == 0
    for r in records:
        assert r.metrics["simulated"] is True
        assert r.metrics["top1"] in bench.values(r.cell_hash)
    # four simulated workers: trials overlap on the simulated clock, which never waited
    assert dispatcher.clock_s < sum(r.metrics["wall_time_s"] for r in records)
    assert summary.wall_s < 30


def test_asynchronous_workers_finish_in_simulated_time_order(tmp_path: Path):
    rows = synthetic_rows(wall_s=1.0)  # wall times 1, 2, 3 s by cell index
    bench = Benchmark(rows, manifest())
    dispatcher = SimulatedDispatcher(bench, num_workers=3)
    cells = bench.cells()[:3]  # durations 1, 2, 3
    for i, cell in enumerate(reversed(cells)):
        dispatcher.submit(i, {"cell": cell.to_dict(), "seed": 0})
    order = [e.trial_id for _ in range(3) for e in dispatcher.poll(0)]
    assert order == [2, 1, 0] and dispatcher.clock_s == pytest.approx(3.0)
    assert dispatcher.free_slots() == 3


_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from attnas.benchmark import SimulatedDispatcher, load
    from attnas.controller import RandomSearch
    from attnas.dispatch import TrialStore, run_search

    table, run_dir = sys.argv[1], sys.argv[2]
    budget, kill_after = int(sys.argv[3]), int(sys.argv[4])
    bench = load(table)
    done = 0

    def on_finish(record):
        global done
        done += 1
        if done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    with TrialStore.open(run_dir) as store:
        run_search(RandomSearch(bench.space, seed=3), store, SimulatedDispatcher(bench, 4),
                   budget=budget, master_seed=5, on_finish=on_finish)
    """
)


def _run(table: Path, run_dir: Path, budget: int, kill_after: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(table), str(run_dir), str(budget), str(kill_after)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode


def _snapshot(run_dir: Path) -> list[tuple]:
    with TrialStore.open(run_dir) as store:
        return [
            (r.trial_id, r.cell_hash, r.seed, r.state, json.dumps(r.metrics, sort_keys=True))
            for r in store.trials()
        ]


def test_killed_simulated_search_resumes_exactly(table_dir: Path, tmp_path: Path):
    killed = tmp_path / "killed"
    assert _run(table_dir, killed, budget=14, kill_after=5) == -signal.SIGKILL
    before = {t[0]: t for t in _snapshot(killed)}
    completed_before = {k: t for k, t in before.items() if t[3] == "completed"}
    running_before = [t for t in before.values() if t[3] == "running"]
    assert len(completed_before) == 5
    assert running_before, "some trial must have been in flight at the kill"
    assert _run(table_dir, killed, budget=14, kill_after=0) == 0
    after = _snapshot(killed)
    assert sum(t[3] in ("completed", "failed") for t in after) == 14
    assert len({a[1] for a in after}) == len(after)  # no cell ran twice
    by_id = {a[0]: a for a in after}
    for tid, t in completed_before.items():  # finished trials survive unchanged
        assert by_id[tid] == t
    for t in running_before:  # in-flight trials re-run with the same cell and seed
        assert (by_id[t[0]][1], by_id[t[0]][2], by_id[t[0]][3]) == (t[1], t[2], "completed")
    bench = load(str(table_dir))
    with TrialStore.open(killed) as store:  # every answer is the table's for (cell, seed)
        for r in store.trials():
            assert r.metrics == simulated_result(bench, r.cell, r.seed)


class _Stop(Exception):
    pass


def _search(bench: Benchmark, name: str, run_dir: Path, budget: int, stop_after: int = 0):
    kwargs = {"gpb": dict(fit_restarts=0, fit_maxiter=10)}.get(name, {})
    done = 0

    def on_finish(record):
        nonlocal done
        done += 1
        if done == stop_after:
            raise _Stop

    with TrialStore.open(run_dir) as store:
        searcher = build_searcher(name, bench.space, seed=3, **kwargs)
        run_search(searcher, store, SimulatedDispatcher(bench, 4), budget=budget, master_seed=5,
                   on_finish=on_finish)  # fmt: skip


@pytest.mark.parametrize("name", ["gpb", "optuna_tpe"])
def test_a_stopped_search_proposes_what_the_unbroken_one_did(tmp_path: Path, name: str):
    """Stopped after its 6th finished trial (trials 7-9 still running), GPB or a peer rebuilt
    from the store proposes trial 10 exactly as the unbroken search did: the same finished
    trials, the same pending ones. (Later trials may differ: the simulated clock restarts, so
    the re-run trials finish later than they would have.) Synthetic wall times are distinct, so
    trials finish one at a time."""
    bench = synthetic_benchmark(SPACE_K1)
    _search(bench, name, tmp_path / "unbroken", budget=12)
    with pytest.raises(_Stop):
        _search(bench, name, tmp_path / "stopped", budget=12, stop_after=6)
    with TrialStore.open(tmp_path / "stopped") as store:
        assert store.counts()["running"] == 3
    _search(bench, name, tmp_path / "stopped", budget=12)
    unbroken, resumed = _snapshot(tmp_path / "unbroken"), _snapshot(tmp_path / "stopped")
    assert len(unbroken) == 12 and sum(t[3] == "completed" for t in resumed) == 12
    assert [t[:3] for t in resumed[:10]] == [t[:3] for t in unbroken[:10]]
    assert len({t[1] for t in resumed}) == 12
