"""Ground truth for the searchers: a tabular benchmark of the attention-cell space.

The NAS-Bench-201 idea for attention cells in video. Every distinct cell of a space is trained
under a fixed proxy protocol (``ProxyProtocol``: a digit-pretrained backbone frozen below the
cells, on the attention-sensitive ``distant_match`` task) with two or more seeds; the table
records each seed's per-epoch validation top-1, losses, wall time, parameters and FLOPs, and
the bare backbone and + non-local under the same protocol. ``load()`` returns the default
table; ``SimulatedDispatcher`` answers trials from a table so that searches run through the
real ``run_search`` loop and trial store in seconds::

    from attnas import benchmark
    bench = benchmark.load()                       # benchmarks/distant_match_k2
    cell = bench.cells()[0]
    bench.mean(cell), bench.std(cell), bench.values(cell), bench.percentile(cell)
    bench.top(0.01), bench.baseline("nonlocal"), bench.space

Rebuild a table with ``attnas-bench`` (``make tabular``): resumable after a kill, local worker
processes (one per GPU where there are GPUs), exported as it grows.
"""

from __future__ import annotations

from attnas.benchmark.protocol import (
    FeatureCache,
    ProxyProtocol,
    build_proxy_model,
    pretrained_weights,
    run_proxy_trial,
)
from attnas.benchmark.simulated import SimulatedDispatcher, simulated_result
from attnas.benchmark.table import (
    BASELINES,
    COLUMNS,
    DEFAULT_BENCHMARK,
    Benchmark,
    BenchmarkRow,
    load,
    read_table,
    write_table,
)

__all__ = [
    "BASELINES",
    "COLUMNS",
    "DEFAULT_BENCHMARK",
    "Benchmark",
    "BenchmarkRow",
    "FeatureCache",
    "ProxyProtocol",
    "SimulatedDispatcher",
    "build_proxy_model",
    "load",
    "pretrained_weights",
    "read_table",
    "run_proxy_trial",
    "simulated_result",
    "write_table",
]
