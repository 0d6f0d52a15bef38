"""A simulated trial backend: trials answered from a tabular benchmark, on a simulated clock.

``SimulatedDispatcher`` is a ``Dispatcher`` (``submit`` / ``poll`` / ``free_slots`` /
``shutdown``), so a searcher study runs through the real ``run_search`` loop and trial store,
exactly as a search with real training does, but each trial is a table lookup: it returns one
of the cell's recorded seeds (drawn from the trial's seed, so a resumed search gets the same
answer), with that seed's per-epoch curve. Each trial takes the wall time recorded for it on a
simulated clock: ``poll`` jumps the clock to the next finishing trial instead of sleeping, so
with several workers trials finish in the order they would have finished on real workers, and
the searcher sees pending trials exactly as it would (Syne Tune's simulator backend is the prior
art). A study of hundreds of searches therefore takes minutes.

Design choices where the spec is silent:

- A cell that is not in the table is a failed trial whose error names the cell and the table,
  not a crash of the search.
- ``time_scale`` multiplies the recorded wall times (0 makes every trial instantaneous, which
  turns the schedule into "first submitted, first finished").
- The simulated clock (``clock_s``) starts at 0 in each process; after a resume it restarts,
  since the trial store keeps real time stamps only.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnas.benchmark.table import Benchmark, load
from attnas.dispatch.base import TrialEvent, register_dispatcher
from attnas.space import CellSpec


@dataclass(order=True)
class _Running:
    finish_s: float
    order: int
    trial_id: int = field(compare=False)
    result: dict[str, Any] = field(compare=False)
    start_s: float = field(compare=False)


def simulated_result(benchmark: Benchmark, cell: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The trial result the table gives a cell for a trial seed (one recorded seed's row).

    Args:
        benchmark: The table.
        cell: The cell as a dict (``CellSpec.to_dict()``).
        seed: The trial's seed; it picks which recorded seed answers.

    Returns:
        A ``TrialResult``-like dict (``status``, ``top1``, ``history``, ``wall_time_s``, ...).
    """
    spec = CellSpec.from_dict(cell)
    if spec not in benchmark:
        return {
            "status": "failed",
            "error": f"cell {spec.hash()} ({spec.describe()}) is not in benchmark "
            f"{benchmark.name!r}",
        }
    rows = benchmark.rows(spec)
    row = rows[random.Random(int(seed)).randrange(len(rows))]
    history = [{"epoch": i + 1, "val_top1": v} for i, v in enumerate(row.val_top1_epochs)]
    return {
        "status": "completed",
        "top1": row.val_top1,
        "val_loss": row.val_loss,
        "history": history,
        "wall_time_s": row.wall_s,
        "num_parameters": row.params,
        "flops": row.flops,
        "seed": int(seed),
        "table_seed": row.seed,
        "simulated": True,
    }


@register_dispatcher("simulated")
class SimulatedDispatcher:
    """Trials answered from a tabular benchmark on a simulated clock (module docstring).

    Args:
        benchmark: The table, or its name for ``attnas.benchmark.load`` (None: the default).
        num_workers: Concurrent simulated workers.
        time_scale: Factor on the recorded wall times (0: instantaneous trials).
    """

    def __init__(
        self,
        benchmark: Benchmark | str | None = None,
        num_workers: int = 1,
        time_scale: float = 1.0,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.benchmark = benchmark if isinstance(benchmark, Benchmark) else load(benchmark)
        self.num_workers = int(num_workers)
        self.time_scale = float(time_scale)
        self.clock_s = 0.0
        self.submitted = 0
        self._running: list[_Running] = []

    def free_slots(self) -> int:
        """Simulated workers with no running trial."""
        return self.num_workers - len(self._running)

    def submit(self, trial_id: int, payload: Mapping[str, Any]) -> None:
        """Start a trial: look its result up now; it finishes after its recorded wall time."""
        if self.free_slots() <= 0:
            raise RuntimeError("no free simulated worker: check free_slots() before submit()")
        result = simulated_result(self.benchmark, payload["cell"], int(payload["seed"]))
        duration = float(result.get("wall_time_s") or 0.0) * self.time_scale
        self.submitted += 1
        heapq.heappush(
            self._running,
            _Running(self.clock_s + duration, self.submitted, trial_id, result, self.clock_s),
        )

    def poll(self, timeout: float) -> list[TrialEvent]:
        """Advance the clock to the next finishing trial and return every trial done by then.

        ``timeout`` is ignored: simulated time never waits for real time.
        """
        if not self._running:
            return []
        self.clock_s = max(self.clock_s, self._running[0].finish_s)
        events = []
        while self._running and self._running[0].finish_s <= self.clock_s:
            done = heapq.heappop(self._running)
            slot = self.num_workers - len(self._running) - 1
            events.append(
                TrialEvent(
                    trial_id=done.trial_id,
                    ok=True,
                    result=done.result,
                    worker=f"simulated:{slot}",
                    elapsed_s=done.finish_s - done.start_s,
                )
            )
        return events

    def shutdown(self) -> None:
        """Forget running trials."""
        self._running.clear()
