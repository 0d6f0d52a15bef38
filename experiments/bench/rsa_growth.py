"""Benchmark 6: RSA peak memory against the context size M, efficient vs naive.

Uses ``experiments.bench.rsa_memory.measure`` (which also checks the two forms agree): peak
live CPU bytes of forward + backward from ``torch.profiler`` memory events, for the efficient
RSA (Eq. 11–12 through convolutions) and the naive restatement that forms each position's
M×M self-correlation. Measured at two contexts, 3×5×5 (M = 75) and the paper's 5×7×7
(M = 245). Goal: the efficient form's peak grows at most linearly in M, i.e.
``peak(M2) / peak(M1) <= M2 / M1``; the naive form's growth (towards M², from its M×M terms)
is reported for contrast. Always on CPU (the profiler replay is a CPU measurement).
"""

from __future__ import annotations

import math

from experiments.bench import MIB, BenchConfig, BenchResult
from experiments.bench.rsa_memory import measure

NAME = "rsa_memory"


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Growth of the efficient and naive RSA peaks from the small to the paper's context."""
    shape = cfg.pick((1, 8, 3, 6, 6), (1, 32, 4, 14, 14), (1, 64, 8, 14, 14))
    contexts = cfg.pick(((1, 3, 3), (3, 3, 3)), ((3, 5, 5), (5, 7, 7)), ((3, 5, 5), (5, 7, 7)))
    nh = cfg.pick(4, 8, 8)
    res = {k: measure(shape, k, nh) for k in contexts}
    small, large = contexts
    m_small, m_large = math.prod(small), math.prod(large)
    m_ratio = m_large / m_small
    growth = {
        form: res[large][form]["peak"] / max(res[small][form]["peak"], 1)
        for form in ("efficient", "naive")
    }
    details = {
        "input": list(shape),
        "nh": nh,
        "contexts": {
            "x".join(map(str, k)): {
                "M": math.prod(k),
                **{
                    f"{form}_{kind}_mib": round(res[k][form][kind] / MIB, 3)
                    for form in ("efficient", "naive")
                    for kind in ("peak", "saved")
                },
            }
            for k in contexts
        },
        "M_ratio": round(m_ratio, 4),
        "M_squared_ratio": round(m_ratio**2, 4),
        "naive_growth": round(growth["naive"], 4),
        "naive_over_efficient_at_large_M": round(
            res[large]["naive"]["peak"] / max(res[large]["efficient"]["peak"], 1), 2
        ),
    }
    met = growth["efficient"] <= m_ratio
    if not met:
        details["limit"] = [
            f"efficient peak {res[large]['efficient']['peak'] / MIB:.1f} MiB at M={m_large} vs "
            f"{res[small]['efficient']['peak'] / MIB:.1f} MiB at M={m_small}"
        ]
    return [
        BenchResult(
            name=f"{NAME}/efficient_growth",
            goal=f"peak(M={m_large}) / peak(M={m_small}) <= M ratio {m_ratio:.3g} (linear in M)",
            value=round(growth["efficient"], 4),
            unit="x",
            met=met,
            details=details,
        ),
        BenchResult(
            name=f"{NAME}/naive_growth",
            goal=f"reported for contrast (M ratio {m_ratio:.3g}, M^2 ratio {m_ratio**2:.3g})",
            value=round(growth["naive"], 4),
            unit="x",
            met=None,
            details={
                "naive_peak_mib": {
                    "x".join(map(str, k)): round(res[k]["naive"]["peak"] / MIB, 3) for k in contexts
                }
            },
        ),
    ]
