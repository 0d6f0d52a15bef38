"""Kill -9 a running search (and its workers) mid-run, start it again, check the trial store.

The search runs as its own process group: a small script (written below) with a searcher,
``LocalDispatcher`` with 2 CPU workers and a trial function. Once enough trials completed the
whole group gets SIGKILL; the same script is then run to the end on the same run directory.

- fast: a hash-deduplicating random searcher and the synthetic trial function (each trial sleeps
  0.3 s and appends a marker line to ``<trial_dir>/executions.log``).
- slow: the controller's ``RandomSearch`` and the real trainer (``run_train_trial``: a tiny
  R3D on moving digits, one epoch).

Executions are counted from the ``=== attnas: trial N started`` lines ``LocalDispatcher`` writes
to each trial's ``worker.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from attnas.dispatch import TrialStore

_SYNTHETIC_SCRIPT = textwrap.dedent(
    """
    import random, sys
    from dataclasses import dataclass
    from attnas.dispatch import SYNTHETIC_TRIAL_FN, LocalDispatcher, TrialStore, run_search
    from attnas.space import load_space

    SPACE = load_space("attention_nas")

    @dataclass(frozen=True)
    class Outcome:
        value: float | None
        failed: bool
        error: str | None

    class Searcher:
        def __init__(self, seed):
            self.rng, self.seen = random.Random(seed), set()

        def suggest(self, n=1):
            out = []
            while len(out) < n:
                cell = SPACE.sample(self.rng)
                if cell.hash() not in self.seen:
                    self.seen.add(cell.hash())
                    out.append(cell)
            return out

        def observe(self, cell, outcome):
            self.seen.add(cell.hash())

        def restore(self, records, metric="top1"):
            self.seen.update(r.cell_hash for r in records)

    store = TrialStore.open(sys.argv[1])
    with LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=2, gpus=None) as dispatcher:
        s = run_search(Searcher(int(sys.argv[2])), store, dispatcher, budget={budget},
                       trial_config={"sleep_s": 0.3}, poll_interval_s=0.1, outcome_type=Outcome)
    print("DONE", s.completed, s.failed, s.launched, s.requeued_at_start, flush=True)
    """
)

_REAL_SCRIPT = textwrap.dedent(
    """
    import sys
    from attnas.controller import RandomSearch
    from attnas.dispatch import TRAIN_TRIAL_FN, LocalDispatcher, TrialStore, run_search
    from attnas.space import load_space

    config = {
        "backbone": "r3d_tiny",
        "dataset": "moving_digits",
        "dataset_kwargs": {"size": 32, "num_frames": 4},
        "train_kwargs": {"num_clips": 8},
        "val_kwargs": {"num_clips": 8},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "device": "cpu"},
    }
    store = TrialStore.open(sys.argv[1])
    searcher = RandomSearch(load_space("attention_nas"), seed=int(sys.argv[2]))
    with LocalDispatcher(TRAIN_TRIAL_FN, num_workers=2, gpus=None) as dispatcher:
        s = run_search(searcher, store, dispatcher, budget={budget}, trial_config=config,
                       poll_interval_s=0.2)
    print("DONE", s.completed, s.failed, s.launched, s.requeued_at_start, flush=True)
    """
)


def _starts(run_dir: Path, trial_id: int) -> int:
    path = run_dir / "trials" / str(trial_id) / "worker.log"
    if not path.is_file():
        return 0
    marker = f"=== attnas: trial {trial_id} started"
    return sum(line.startswith(marker) for line in path.read_text().splitlines())


def _worker_pids(run_dir: Path, trial_id: int) -> list[int]:
    path = run_dir / "trials" / str(trial_id) / "executions.log"
    return [int(x.split()[0]) for x in path.read_text().splitlines()] if path.is_file() else []


def _any_alive(pids: list[int], alive: Callable[[int], bool], wait_s: float = 10.0) -> bool:
    """Whether any of ``pids`` is still alive after waiting up to ``wait_s`` for them to go."""
    deadline = time.monotonic() + wait_s
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False


def _kill_and_resume(
    tmp_path: Path,
    script_text: str,
    budget: int,
    kill_after: int,
    limit_s: float,
    started: Callable[[Path, int], bool] = lambda run_dir, tid: _starts(run_dir, tid) >= 1,
) -> tuple[dict, dict, list[int]]:
    """Run, SIGKILL the group once ``kill_after`` trials completed and one is running, resume.

    The kill waits for a running trial whose worker has ``started`` (by default: wrote its
    start line), so every run checks the re-queueing of a trial cut off mid-run.

    Returns:
        The records at the kill, the final records, and the output numbers of the resumed run.
    """
    script = tmp_path / "search.py"
    script.write_text(script_text.replace("{budget}", str(budget)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), "1"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def ready() -> bool:
        if not (run_dir / "trials.sqlite").is_file():
            return False
        with TrialStore.open(run_dir, create=False) as store:
            records = store.trials()
        completed = sum(r.state == "completed" for r in records)
        running = [r.trial_id for r in records if r.state == "running"]
        return completed >= kill_after and any(started(run_dir, tid) for tid in running)

    try:
        deadline = time.monotonic() + limit_s
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, (
                f"no {kill_after} completed trials and a running one in {limit_s} s"
            )
            time.sleep(0.05)
            if not ready():
                continue
            # freeze the group and look again: a 0.3 s trial can finish between the look
            # and the kill, and then no trial is cut off mid-run
            os.killpg(proc.pid, signal.SIGSTOP)
            if ready():
                break
            os.killpg(proc.pid, signal.SIGCONT)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the search and its workers
        proc.wait()
        proc.stdout.close()

    with TrialStore.open(run_dir, create=False) as store:
        at_kill = {r.trial_id: r for r in store.trials()}
    done_before = {tid: r for tid, r in at_kill.items() if r.state == "completed"}
    running_before = [tid for tid, r in at_kill.items() if r.state == "running"]
    assert kill_after <= len(done_before) < budget
    assert running_before, "no trial was running at the kill: the re-queue path went untested"

    out = subprocess.run(
        [sys.executable, str(script), str(run_dir), "2"],
        capture_output=True,
        text=True,
        timeout=limit_s * 3,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    done_line = out.stdout.strip().splitlines()[-1].split()
    assert done_line[0] == "DONE"
    completed, failed, launched, requeued = map(int, done_line[1:])
    assert requeued == len(running_before)

    with TrialStore.open(run_dir, create=False) as store:
        final = {r.trial_id: r for r in store.trials()}
        counts = store.counts()
    # budget exact: every trial finished, none lost, none extra
    assert counts["completed"] + counts["failed"] == budget == len(final)
    assert (completed, failed) == (counts["completed"], counts["failed"])
    assert counts["pending"] == counts["running"] == 0
    # the resumed run started exactly the trials that had not finished before the kill
    finished_before = sum(r.finished for r in at_kill.values())
    assert launched == budget - finished_before
    # completed trials kept unchanged and never re-run
    for tid, record in done_before.items():
        assert final[tid] == record
        assert _starts(run_dir, tid) == 1
    # trials cut off by the kill ran again, same cell and seed
    for tid in running_before:
        assert final[tid].cell_hash == at_kill[tid].cell_hash
        assert final[tid].seed == at_kill[tid].seed
        assert final[tid].attempts == 2 and final[tid].state == "completed"
        # 2 starts, or 1 when the kill fell between mark_running and the worker's launch
        assert _starts(run_dir, tid) in (1, 2)
    hashes = [r.cell_hash for r in final.values() if r.state == "completed"]
    assert len(hashes) == len(set(hashes))
    assert len({r.cell_hash for r in final.values()}) == budget
    return at_kill, final, [completed, failed, launched, requeued]


def test_kill_and_resume_keeps_every_trial_once(
    tmp_path: Path, process_alive: Callable[[int], bool]
) -> None:
    at_kill, final, _ = _kill_and_resume(
        tmp_path, _SYNTHETIC_SCRIPT, 8, 3, 60.0,
        started=lambda run_dir, tid: bool(_worker_pids(run_dir, tid)),
    )  # fmt: skip
    run_dir = tmp_path / "run"
    # the workers killed with the search are gone (pids from their marker lines)
    running_before = [tid for tid, r in at_kill.items() if r.state == "running"]
    pids = [p for tid in running_before for p in _worker_pids(run_dir, tid)[:1]]
    assert pids, "no worker of a running trial had started at the kill"
    assert not _any_alive(pids, process_alive)
    assert all(r.state == "completed" for r in final.values())


@pytest.mark.slow
def test_kill_and_resume_with_real_trials(tmp_path: Path) -> None:
    _, final, _ = _kill_and_resume(tmp_path, _REAL_SCRIPT, 3, 1, 240.0)
    for record in final.values():
        assert record.state == "completed", record.error
        assert 0.0 <= record.metrics["top1"] <= 1.0
        trial_dir = tmp_path / "run" / "trials" / str(record.trial_id)
        assert (trial_dir / "result.json").is_file()
        assert (trial_dir / "checkpoints" / "last.pt").is_file()
