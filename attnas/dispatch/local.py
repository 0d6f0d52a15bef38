"""``LocalDispatcher``: trials in worker processes on this machine, one per GPU (or CPU slot).

Each trial runs in a fresh ``python -m attnas.dispatch.worker`` process (see
``attnas.dispatch.worker``) started with ``subprocess.Popen``; a slot is free again when its
process exits.

Design choices where the spec is silent:

- A process per trial rather than a long-lived worker per slot: a trial leaves nothing behind
  (GPU memory, CUDA state, leaked threads, a half-broken interpreter after an OOM), pinning is a
  plain environment variable set before the interpreter starts, and death detection is the
  process's exit status. Start-up (an interpreter plus the trial's imports, about a second or
  two with torch) is small next to a training run.
- Payload and result travel as JSON files in a scratch folder, not pickles: the worker writes
  its result atomically, so "no result file" means the worker died (killed, segfault,
  OOM-killed, ``os._exit``) and the event is ``retryable``; a trial that raises reports its
  traceback and is not retried.
- Pinning: slot ``i`` runs with ``CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)]`` (the entries of the
  parent's own ``CUDA_VISIBLE_DEVICES`` when set, so a restricted parent stays restricted);
  CPU slots run with ``CUDA_VISIBLE_DEVICES=""``. Every worker gets
  ``OMP_NUM_THREADS=MKL_NUM_THREADS=threads_per_worker`` (default: cores // workers, at least 1)
  so N workers do not oversubscribe the cores.
- Output: a worker's stdout and stderr go to ``<trial_dir>/worker.log`` when the payload names a
  ``trial_dir`` (else to the scratch folder), after a line ``=== attnas: trial N started on
  <worker> at <time>`` per attempt; the tail of that log is part of the error text of a worker
  that died.
- A per-trial ``timeout_s`` kills the worker and reports ``timeout ...`` (not retried: a trial
  that timed out once will likely time out again).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from attnas.dispatch.base import TrialEvent, register_dispatcher

_LOG_TAIL_CHARS = 2000


@dataclass
class _Running:
    trial_id: int
    proc: subprocess.Popen[bytes]
    started: float
    result_path: Path
    payload_path: Path
    log_path: Path
    log: IO[bytes]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    The parent's ``CUDA_VISIBLE_DEVICES`` entries when it is set, else ``0..n-1`` with ``n`` from
    ``torch.cuda.device_count()`` (0 when torch is not installed).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [e.strip() for e in env.split(",") if e.strip() and e.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


@register_dispatcher("local")
class LocalDispatcher:
    """Trials in local worker processes (see the module docstring).

    Args:
        trial_fn: the trial function, ``"package.module:function"`` (importable by a fresh
            interpreter).
        num_workers: concurrent trials; None: one per GPU, or 1 on a machine without GPUs.
        gpus: ``"auto"`` (``visible_gpus()``), a list of ``CUDA_VISIBLE_DEVICES`` entries, or
            None / ``[]`` for CPU workers.
        timeout_s: per-trial wall-clock limit (None: none).
        threads_per_worker: ``OMP_NUM_THREADS`` of each worker (None: cores // workers).
        scratch_dir: where payload/result files go (None: a temporary folder removed by
            ``shutdown``).
        python: the interpreter for the workers (None: this one).
        env: extra environment variables for the workers.
    """

    def __init__(
        self,
        trial_fn: str,
        num_workers: int | None = None,
        gpus: Sequence[int | str] | str | None = "auto",
        timeout_s: float | None = None,
        threads_per_worker: int | None = None,
        scratch_dir: str | Path | None = None,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(gpus, str):
            if gpus != "auto":
                raise ValueError(f"gpus must be 'auto', a list of GPU ids or None, got {gpus!r}")
            gpu_list = visible_gpus()
        else:
            gpu_list = [str(g) for g in (gpus or [])]
        if num_workers is None:
            num_workers = len(gpu_list) or 1
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
        self.trial_fn = trial_fn
        self.num_workers = int(num_workers)
        self.gpus = gpu_list
        self.timeout_s = timeout_s
        cores = os.cpu_count() or 1
        self.threads_per_worker = int(threads_per_worker or max(1, cores // self.num_workers))
        self._own_scratch = scratch_dir is None
        self.scratch_dir = Path(scratch_dir or tempfile.mkdtemp(prefix="attnas-dispatch-"))
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.env = dict(env or {})
        self._slots: list[_Running | None] = [None] * self.num_workers
        self._seq = 0
        self._closed = False

    # ------------------------------------------------------------------ interface
    def free_slots(self) -> int:
        """Slots with no running trial."""
        return sum(slot is None for slot in self._slots)

    def worker_name(self, slot: int) -> str:
        """``local:<slot>:gpu<id>`` or ``local:<slot>:cpu``."""
        return f"local:{slot}:" + (f"gpu{self._gpu(slot)}" if self.gpus else "cpu")

    def _gpu(self, slot: int) -> str:
        return self.gpus[slot % len(self.gpus)] if self.gpus else ""

    def submit(self, trial_id: int, payload: Mapping[str, Any]) -> None:
        """Start ``trial_fn(payload)`` in a new worker process on a free slot.

        Raises:
            RuntimeError: when every slot is busy or the dispatcher was shut down.
        """
        if self._closed:
            raise RuntimeError("LocalDispatcher was shut down")
        if any(s is not None and s.trial_id == trial_id for s in self._slots):
            raise RuntimeError(f"trial {trial_id} is already running")
        try:
            slot = self._slots.index(None)
        except ValueError:
            raise RuntimeError(
                f"no free worker slot ({self.num_workers} busy); check free_slots() first"
            ) from None
        self._seq += 1
        stem = f"{int(trial_id)}.{self._seq}"
        payload_path = self.scratch_dir / f"{stem}.payload.json"
        result_path = self.scratch_dir / f"{stem}.result.json"
        payload_path.write_text(json.dumps(dict(payload)), encoding="utf-8")
        trial_dir = payload.get("trial_dir")
        if trial_dir:
            Path(trial_dir).mkdir(parents=True, exist_ok=True)
            log_path = Path(trial_dir) / "worker.log"
        else:
            log_path = self.scratch_dir / f"{stem}.log"
        env = {**os.environ, **self.env}
        env["CUDA_VISIBLE_DEVICES"] = self._gpu(slot)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads_per_worker)
        env["ATTNAS_WORKER"] = self.worker_name(slot)
        log = open(log_path, "ab")  # noqa: SIM115 - closed when the trial finishes
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(
            f"=== attnas: trial {trial_id} started on {env['ATTNAS_WORKER']} at {stamp}\n".encode()
        )
        log.flush()
        cmd = [self.python, "-m", "attnas.dispatch.worker", self.trial_fn]
        proc = subprocess.Popen(
            [*cmd, str(payload_path), str(result_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._slots[slot] = _Running(
            int(trial_id), proc, time.monotonic(), result_path, payload_path, log_path, log
        )

    def poll(self, timeout: float) -> list[TrialEvent]:
        """Wait up to ``timeout`` s for a trial to finish (or time out); return all that did."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            events = self._collect()
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self.free_slots() == self.num_workers:
                return events
            time.sleep(min(0.02, remaining))

    def shutdown(self) -> None:
        """Kill every running worker and remove the scratch folder if it was a temporary one."""
        for i, run in enumerate(self._slots):
            if run is not None:
                _kill(run.proc)
                run.log.close()
                self._slots[i] = None
        if self._own_scratch and not self._closed:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> LocalDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ internals
    def _collect(self) -> list[TrialEvent]:
        events = []
        now = time.monotonic()
        for i, run in enumerate(self._slots):
            if run is None:
                continue
            code = run.proc.poll()
            if code is None:
                if self.timeout_s is not None and now - run.started > self.timeout_s:
                    _kill(run.proc)
                    events.append(
                        TrialEvent(
                            run.trial_id,
                            ok=False,
                            error=f"timeout: trial {run.trial_id} ran longer than "
                            f"{self.timeout_s:g} s and was killed",
                            worker=self.worker_name(i),
                            elapsed_s=now - run.started,
                        )
                    )
                    self._release(i)
                continue
            events.append(self._event(i, run, code, now))
            self._release(i)
        return events

    def _event(self, slot: int, run: _Running, code: int, now: float) -> TrialEvent:
        worker, elapsed = self.worker_name(slot), now - run.started
        outcome = _read_result(run.result_path)
        if outcome is not None:
            if outcome.get("ok"):
                result = dict(outcome.get("result") or {})
                return TrialEvent(run.trial_id, True, result, None, False, worker, elapsed)
            return TrialEvent(
                run.trial_id, False, None, str(outcome.get("error")), False, worker, elapsed
            )
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code} without a result"
        run.log.flush()
        tail = _tail(run.log_path)
        error = f"worker died: the process of trial {run.trial_id} {how}"
        if tail:
            error += f"\n--- end of {run.log_path} ---\n{tail}"
        return TrialEvent(run.trial_id, False, None, error, True, worker, elapsed)

    def _release(self, slot: int) -> None:
        run = self._slots[slot]
        assert run is not None
        run.log.close()
        for path in (run.payload_path, run.result_path):
            path.unlink(missing_ok=True)
        self._slots[slot] = None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _LOG_TAIL_CHARS))
            return f.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""
