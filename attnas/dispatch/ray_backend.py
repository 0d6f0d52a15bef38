"""``RayDispatcher``: trials as Ray tasks on a Ray cluster (or a local Ray for tests).

Each trial is one task ``_ray_trial(trial_fn, payload)`` with ``num_gpus=gpus_per_trial`` (Ray
sets ``CUDA_VISIBLE_DEVICES`` for it) and ``max_retries=0``: retries are ``run_search``'s
decision, so that the store counts every attempt. ``poll`` is ``ray.wait`` on the running
tasks.

Design choices where the spec is silent:

- The task catches the trial's own exceptions (``attnas.dispatch.worker.run_payload``) and
  returns the traceback, so a ``RayTaskError`` never has to be unwrapped for the common case;
  Ray's own errors (``WorkerCrashedError`` when the worker process died, ``NodeDiedError``,
  ``OutOfMemoryError``, lost objects...) are the worker's failures and come back ``retryable``.
- ``ray.init`` is called only when Ray is not initialised yet, with ``address`` (None starts a
  local Ray with ``num_cpus`` CPUs), no dashboard and ``log_to_driver=False`` (trial output stays
  in the trial's directory and Ray's logs). ``shutdown`` stops Ray only if this dispatcher
  started it.
- ``num_workers`` (concurrent trials) defaults to the cluster's GPUs when trials take a GPU, else
  to its CPUs divided by ``cpus_per_trial``; ``gpus_per_trial`` defaults to 1 when the cluster
  has a GPU, else 0.
- A per-trial ``timeout_s`` cancels the task (``ray.cancel(force=True)``) and reports
  ``timeout ...``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from attnas.dispatch.base import TrialEvent, register_dispatcher
from attnas.dispatch.worker import run_payload


def _ray_trial(fn_path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The Ray task: run the trial function and say where it ran."""
    import ray

    outcome = run_payload(fn_path, payload)
    outcome["worker"] = f"ray:{ray.get_runtime_context().get_node_id()[:12]}"
    return outcome


@register_dispatcher("ray")
class RayDispatcher:
    """Trials as Ray tasks (see the module docstring).

    Args:
        trial_fn: the trial function, ``"package.module:function"`` (importable on the workers).
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``...); None starts a local Ray.
        num_workers: concurrent trials (None: from the cluster's resources).
        gpus_per_trial: GPUs per task (None: 1 if the cluster has GPUs, else 0).
        cpus_per_trial: CPUs per task.
        timeout_s: per-trial wall-clock limit (None: none).
        num_cpus: CPUs of a local Ray started here (ignored with an ``address``).
        init_kwargs: more ``ray.init`` arguments (e.g. ``runtime_env``).
    """

    def __init__(
        self,
        trial_fn: str,
        address: str | None = None,
        num_workers: int | None = None,
        gpus_per_trial: float | None = None,
        cpus_per_trial: float = 1.0,
        timeout_s: float | None = None,
        num_cpus: int | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        import ray

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address is None and num_cpus is not None:
                kwargs["num_cpus"] = int(num_cpus)
            kwargs.update(init_kwargs or {})
            ray.init(address=address, **kwargs)
        resources = ray.cluster_resources()
        if gpus_per_trial is None:
            gpus_per_trial = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        if num_workers is None:
            if gpus_per_trial > 0:
                num_workers = int(resources.get("GPU", 0) // gpus_per_trial)
            else:
                num_workers = int(resources.get("CPU", 1) // max(cpus_per_trial, 1e-9))
            num_workers = max(1, num_workers)
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.trial_fn = trial_fn
        self.num_workers = int(num_workers)
        self.gpus_per_trial = float(gpus_per_trial)
        self.cpus_per_trial = float(cpus_per_trial)
        self.timeout_s = timeout_s
        self._task = ray.remote(_ray_trial).options(
            num_gpus=self.gpus_per_trial, num_cpus=self.cpus_per_trial, max_retries=0
        )
        self._inflight: dict[Any, tuple[int, float]] = {}
        self._closed = False

    def free_slots(self) -> int:
        """Trials that can start now."""
        return max(0, self.num_workers - len(self._inflight))

    def submit(self, trial_id: int, payload: Mapping[str, Any]) -> None:
        """Start the trial as a Ray task.

        Raises:
            RuntimeError: when every slot is busy, the trial already runs, or after shutdown.
        """
        if self._closed:
            raise RuntimeError("RayDispatcher was shut down")
        if self.free_slots() == 0:
            raise RuntimeError(
                f"no free worker slot ({self.num_workers} busy); check free_slots() first"
            )
        if any(tid == trial_id for tid, _ in self._inflight.values()):
            raise RuntimeError(f"trial {trial_id} is already running")
        ref = self._task.remote(self.trial_fn, dict(payload))
        self._inflight[ref] = (int(trial_id), time.monotonic())

    def poll(self, timeout: float) -> list[TrialEvent]:
        """``ray.wait`` up to ``timeout`` s for finished tasks; every finished one as an event."""
        events = self._timeouts()
        if events or not self._inflight:
            return events
        wait = max(0.0, timeout)
        if self.timeout_s is not None:
            now = time.monotonic()
            next_deadline = min(s + self.timeout_s for _, s in self._inflight.values())
            wait = min(wait, max(0.0, next_deadline - now))
        refs = list(self._inflight)
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=wait)
        if ready:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            events.append(self._event(ref))
        return events or self._timeouts()

    def shutdown(self) -> None:
        """Cancel running tasks; stop Ray if this dispatcher started it."""
        if self._closed:
            return
        for ref in list(self._inflight):
            self._cancel(ref)
        self._inflight.clear()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._closed = True

    def __enter__(self) -> RayDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ internals
    def _event(self, ref: Any) -> TrialEvent:
        exceptions = self._ray.exceptions
        trial_id, started = self._inflight.pop(ref)
        elapsed = time.monotonic() - started
        try:
            out = self._ray.get(ref)
        except exceptions.RayTaskError as err:
            return TrialEvent(trial_id, False, None, str(err), False, "ray", elapsed)
        except exceptions.RayError as err:
            error = f"worker died: Ray reported {type(err).__name__} for trial {trial_id}: {err}"
            return TrialEvent(trial_id, False, None, error, True, "ray", elapsed)
        worker = out.get("worker", "ray")
        if out.get("ok"):
            return TrialEvent(
                trial_id, True, dict(out.get("result") or {}), None, False, worker, elapsed
            )
        return TrialEvent(trial_id, False, None, str(out.get("error")), False, worker, elapsed)

    def _timeouts(self) -> list[TrialEvent]:
        if self.timeout_s is None:
            return []
        now, events = time.monotonic(), []
        for ref, (trial_id, started) in list(self._inflight.items()):
            if now - started > self.timeout_s:
                self._cancel(ref)
                del self._inflight[ref]
                error = (
                    f"timeout: trial {trial_id} ran longer than {self.timeout_s:g} s "
                    "and was cancelled"
                )
                events.append(TrialEvent(trial_id, False, None, error, False, "ray", now - started))
        return events

    def _cancel(self, ref: Any) -> None:
        # A task that already finished or is gone has nothing left to stop.
        with contextlib.suppress(ValueError, TypeError, self._ray.exceptions.RayError):
            self._ray.cancel(ref, force=True)
