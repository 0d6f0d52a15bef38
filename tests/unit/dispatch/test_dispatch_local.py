"""LocalDispatcher: results, raised errors, worker death, timeout, pinning, registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from attnas.dispatch import (
    SYNTHETIC_TRIAL_FN,
    Dispatcher,
    LocalDispatcher,
    build_dispatcher,
    list_dispatchers,
    synthetic_objective,
)
from attnas.space import load_space


def _payload(tmp_path: Path, trial_id: int, **config) -> dict:
    space = load_space("attention_nas")
    return {
        "trial_id": trial_id,
        "cell": space.sample(trial_id).to_dict(),
        "attempt": 1,
        "trial_dir": str(tmp_path / "trials" / str(trial_id)),
        "config": config,
    }


def _drain(dispatcher: LocalDispatcher, n: int, limit_s: float = 30.0) -> dict:
    events, deadline = {}, time.monotonic() + limit_s
    while len(events) < n and time.monotonic() < deadline:
        for event in dispatcher.poll(0.5):
            events[event.trial_id] = event
    assert len(events) == n, f"only {len(events)} of {n} trials finished in {limit_s} s"
    return events


def test_registry_and_protocol(tmp_path: Path) -> None:
    assert {"local", "ray"} <= set(list_dispatchers())
    with build_dispatcher("local", trial_fn=SYNTHETIC_TRIAL_FN, num_workers=2, gpus=None) as d:
        assert isinstance(d, Dispatcher) and isinstance(d, LocalDispatcher)
        assert d.free_slots() == 2
    with pytest.raises(KeyError, match=r"unknown dispatcher 'slurm'; registered: .*'local'"):
        build_dispatcher("slurm")
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=0, gpus=None)
    with pytest.raises(ValueError, match="gpus must be 'auto'"):
        LocalDispatcher(SYNTHETIC_TRIAL_FN, gpus="all")


def test_results_errors_death_and_pinning(tmp_path: Path) -> None:
    """Three slots at once: a normal trial, one that raises, one whose process is SIGKILLed."""
    space = load_space("attention_nas")
    config = {
        "raise_on_trials": [2],
        "crash_on_trials": {"3": 1},
        "report_env": ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "ATTNAS_WORKER"],
    }
    with LocalDispatcher(
        SYNTHETIC_TRIAL_FN, num_workers=3, gpus=["5", "7"], threads_per_worker=2
    ) as dispatcher:
        for tid in (1, 2, 3):
            dispatcher.submit(tid, _payload(tmp_path, tid, **config))
        assert dispatcher.free_slots() == 0
        with pytest.raises(RuntimeError, match="no free worker slot"):
            dispatcher.submit(4, _payload(tmp_path, 4))
        events = _drain(dispatcher, 3)
        assert dispatcher.free_slots() == 3

    ok = events[1]
    assert ok.ok and not ok.retryable and ok.error is None
    cell = space.sample(1)
    expected = synthetic_objective(space.encode(cell), space.cardinalities())
    assert ok.result["top1"] == pytest.approx(expected, abs=1e-12)
    # slot 0 -> first GPU id; threads as asked; worker label names the slot and GPU
    assert ok.result["env"] == {
        "CUDA_VISIBLE_DEVICES": "5",
        "OMP_NUM_THREADS": "2",
        "ATTNAS_WORKER": "local:0:gpu5",
    }
    assert ok.worker == "local:0:gpu5"

    raised = events[2]
    assert not raised.ok and not raised.retryable
    assert (
        "Traceback" in raised.error and "RuntimeError: synthetic failure of trial 2" in raised.error
    )

    died = events[3]
    assert not died.ok and died.retryable and died.result is None
    assert "worker died: the process of trial 3 was killed by SIGKILL" in died.error
    assert died.worker == "local:2:gpu5"  # slot 2 wraps around the two GPUs
    # the trial wrote its marker before dying, and its worker log exists in the trial dir
    assert (tmp_path / "trials" / "3" / "executions.log").read_text().split()[1] == "1"
    assert (tmp_path / "trials" / "3" / "worker.log").is_file()


def test_timeout_kills_the_worker(tmp_path: Path) -> None:
    with LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=1, gpus=None, timeout_s=1.0) as d:
        d.submit(1, _payload(tmp_path, 1, sleep_s=30))
        start = time.monotonic()
        (event,) = _drain(d, 1).values()
        waited = time.monotonic() - start
    assert not event.ok and not event.retryable
    assert event.error == "timeout: trial 1 ran longer than 1 s and was killed"
    assert 1.0 <= waited < 5.0
    assert event.worker == "local:0:cpu"


def test_cpu_workers_get_empty_cuda_visible_devices(tmp_path: Path) -> None:
    with LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=2, gpus=None) as d:
        assert d.threads_per_worker >= 1
        d.submit(1, _payload(tmp_path, 1, report_env=["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"]))
        (event,) = _drain(d, 1).values()
    assert event.result["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert event.result["env"]["OMP_NUM_THREADS"] == str(d.threads_per_worker)


_PARENT = """
import sys, time
from attnas.dispatch import SYNTHETIC_TRIAL_FN, LocalDispatcher
d = LocalDispatcher(SYNTHETIC_TRIAL_FN, num_workers=1, gpus=None)
d.submit(1, {"trial_id": 1, "cell": {}, "trial_dir": sys.argv[1], "config": {"sleep_s": 60}})
time.sleep(60)
"""


def test_worker_exits_when_the_search_process_is_killed(
    tmp_path: Path, process_alive: Callable[[int], bool]
) -> None:
    """Killing only the search process (not its group) still stops its workers (watchdog)."""
    import os
    import signal
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path)])
    marker = tmp_path / "executions.log"
    deadline = time.monotonic() + 30
    while not marker.is_file() or not marker.read_text().strip():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)
    worker_pid = int(marker.read_text().split()[0])
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not process_alive(worker_pid):
            break
        time.sleep(0.05)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        pytest.fail(f"worker {worker_pid} outlived its search process by 5 s")
