"""The benchmark suite's shared machinery: configs, results, interleaved timing, peak memory.

``python -m experiments.bench`` (``make bench``) runs every benchmark module of this package
and writes ``bench/results.json``; see ``__main__.py``. Each benchmark module exposes
``run(cfg: BenchConfig) -> list[BenchResult]``.

Design choices (the issue is silent on them):

- Speed figures are ratios of medians measured in one process. Compared variants run
  interleaved (A, B | B, A | A, B ...) after warm-up calls, so machine noise hits all of them; the
  reported value is the median of the per-round ratios A_i / B_i (a slow drift of the machine
  cancels within a round), with each variant's median absolute time alongside.
- Peak memory of a forward + backward: on CUDA ``torch.cuda.max_memory_allocated`` above the
  allocation at the start; on CPU the replay of ``torch.profiler`` allocation/free events
  (``experiments.bench.rsa_memory.peak_memory_bytes``), the same method for every compared
  variant.
- Where a goal is missed, ``details["limit"]`` names what limits it: the top lines of
  ``torch.profiler``'s ``key_averages`` for the slower (or hungrier) variant.
- Three scales: ``tiny`` (trivially small, for the harness's tests; the numbers mean nothing),
  ``quick`` (< 5 minutes on 2 cores) and ``full``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

SCALES = ("tiny", "quick", "full")
MIB = 2.0**20

T = TypeVar("T")


@dataclass(frozen=True)
class BenchConfig:
    """How big and how often every benchmark measures.

    Attributes:
        scale: ``"tiny"``, ``"quick"`` or ``"full"``.
        device: where models run (CPU or CUDA).
        repeats: timed rounds per variant (None: the scale's default).
        seed: seed of every random input.
        data_root: video-folder root for the data benchmark (None: weizmann4, else generated).
        compile: ``torch.compile`` the models the search-cost benchmark compares (off by
            default: inductor takes minutes per model on a CPU; the warm-up pays for it).
    """

    scale: str = "quick"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    repeats: int | None = None
    seed: int = 0
    data_root: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"bench scale must be one of {SCALES}, got {self.scale!r}")
        if self.repeats is not None and self.repeats < 1:
            raise ValueError(f"bench repeats must be >= 1, got {self.repeats}")

    def pick(self, tiny: T, quick: T, full: T) -> T:
        """The value for this config's scale."""
        return {"tiny": tiny, "quick": quick, "full": full}[self.scale]

    def rounds(self, quick: int, full: int) -> int:
        """Timed rounds: ``repeats`` when given, else 1 (tiny) / ``quick`` / ``full``."""
        return self.repeats if self.repeats is not None else self.pick(1, quick, full)

    @property
    def warmup(self) -> int:
        """Untimed calls of each variant before timing."""
        return self.pick(0, 2, 3)


@dataclass
class BenchResult:
    """One row of ``results.json``.

    Attributes:
        name: ``"<benchmark>/<figure>"``.
        goal: the goal in words (with its bound).
        value: the measured figure (None when the benchmark errored).
        unit: ``"x"`` for ratios, ``"s"``, ``"clips/s"``, ...
        met: whether the goal is met (None: a figure reported without a goal).
        details: absolute times and memory, sizes, and ``limit`` when the goal is missed.
    """

    name: str
    goal: str
    value: float | None
    unit: str
    met: bool | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one ``fn()`` call (device synchronised before and after)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]], rounds: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each variant, run round-robin, the order reversed every other round.

    Rounds go A, B | B, A | A, B ...: noise hits every variant alike, and neither always runs
    first (after another variant has just filled or flushed the caches).

    Args:
        fns: variant name -> a call doing one unit of work (e.g. forward + backward).
        rounds: timed rounds (each runs every variant once).
        warmup: untimed rounds first.
        device: the device to synchronise.

    Returns:
        ``{name: [seconds of round 1, ..., round n]}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(timed(fns[name], device))
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a[i] / b[i]`` (times measured in the same round)."""
    if len(a) != len(b) or not a:
        raise ValueError(
            f"paired_ratio needs two equally long non-empty lists, got {len(a)}, {len(b)}"
        )
    return statistics.median(x / y for x, y in zip(a, b))


def ms(times: list[float]) -> float:
    """Median of ``times`` (seconds) in milliseconds, rounded to 0.01 ms."""
    return round(statistics.median(times) * 1e3, 2)


def peak_memory(fn: Callable[[], torch.Tensor], device: torch.device) -> int:
    """Peak bytes allocated while running ``fn()`` and backpropagating ``fn().sum()``.

    CUDA: ``max_memory_allocated`` above the allocation at the start. CPU: the replay of the
    profiler's allocation events (``rsa_memory.peak_memory_bytes``).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn().sum().backward()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from experiments.bench.rsa_memory import peak_memory_bytes

    return int(peak_memory_bytes(fn))


def profile_lines(
    fn: Callable[[], Any], device: torch.device, by: str = "time", top: int = 3
) -> list[str]:
    """The top ``torch.profiler`` ``key_averages`` rows of one ``fn()`` call, as text lines.

    Args:
        fn: the work to profile (e.g. forward + backward).
        device: CPU or CUDA (CUDA adds device times).
        by: ``"time"`` (self time) or ``"memory"`` (self allocated bytes).
        top: rows to keep.

    Returns:
        Lines like ``"aten::bmm: 41.2% of self time (12.30 ms, 6 calls)"``.
    """
    if by not in ("time", "memory"):
        raise ValueError(f"profile_lines: by must be 'time' or 'memory', got {by!r}")
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize(device)
    with profile(activities=activities, profile_memory=by == "memory") as prof:
        fn()
        synchronize(device)
    rows = prof.key_averages()
    if by == "time":
        attr = "self_device_time_total" if cuda else "self_cpu_time_total"
        total = sum(getattr(r, attr) for r in rows) or 1.0
        ranked = sorted(rows, key=lambda r: -getattr(r, attr))[:top]
        return [
            f"{r.key}: {100 * getattr(r, attr) / total:.1f}% of self time "
            f"({getattr(r, attr) / 1e3:.2f} ms, {r.count} calls)"
            for r in ranked
        ]
    attr = "self_device_memory_usage" if cuda else "self_cpu_memory_usage"
    ranked = sorted(rows, key=lambda r: -getattr(r, attr))[:top]
    return [
        f"{r.key}: {getattr(r, attr) / MIB:.1f} MiB allocated ({r.count} calls)" for r in ranked
    ]


def machine_info() -> dict[str, Any]:
    """Host facts recorded with the results (the load average says how noisy it was)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def device_name(device: torch.device) -> str:
    """``"cpu"`` or ``"cuda:<i> (<GPU name>)"``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def ratio_result(
    name: str,
    bound: float,
    value: float,
    details: dict[str, Any],
    limit: Callable[[], list[str]] | None = None,
    goal: str | None = None,
) -> BenchResult:
    """A ratio row with goal ``value <= bound``; on a miss ``details["limit"] = limit()``."""
    met = bool(value <= bound)
    if not met and limit is not None:
        details = {**details, "limit": limit()}
    return BenchResult(
        name=name,
        goal=goal or f"<= {bound:g}x",
        value=round(float(value), 4),
        unit="x",
        met=met,
        details=details,
    )
