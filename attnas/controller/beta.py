"""The GP-UCB exploration weight β_t of Srinivas et al. (2010), for a finite decision set.

Theorem 1 of Srinivas et al. ("Gaussian process optimization in the bandit setting", ICML 2010,
AttentionNAS ref. 26) bounds the regret of UCB for a finite decision set D when, at round t,

    β_t = 2 log(|D| t² π² / (6 δ)),

with probability at least 1 - δ. UCB picks argmax_x μ_{t-1}(x) + sqrt(β_t) σ_{t-1}(x).

The theoretical β_t is known to over-explore; Srinivas et al. scale it down by a factor of 5 in
their own experiments. ``BetaSchedule`` therefore takes a ``scale`` (default 1: the theorem's
value) and a ``fixed`` β that replaces the schedule altogether.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def gp_ucb_beta(t: int, size: int, delta: float) -> float:
    """β_t = 2 log(|D| t² π² / (6 δ)) for a decision set of ``size`` points.

    Args:
        t: the round, 1 for the first point chosen by UCB.
        size: |D|, the number of points in the decision set.
        delta: the failure probability δ in (0, 1).

    Returns:
        β_t (a float > 0).
    """
    if t < 1:
        raise ValueError(f"GP-UCB round t must be >= 1, got {t}")
    if size < 1:
        raise ValueError(f"decision-set size |D| must be >= 1, got {size}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"GP-UCB delta must be in (0, 1), got {delta}")
    # log of the product, summed term by term so huge |D| cannot overflow
    return 2.0 * (
        math.log(size) + 2.0 * math.log(t) + 2.0 * math.log(math.pi) - math.log(6.0 * delta)
    )


@dataclass(frozen=True)
class BetaSchedule:
    """β_t for UCB: ``fixed`` when given, else ``scale`` * the GP-UCB schedule over ``size`` points.

    Args:
        size: |D|, the number of cells in the search space.
        delta: δ of the GP-UCB schedule.
        scale: multiplies the schedule's β_t (1 = the theorem's value).
        fixed: a constant β used for every round instead of the schedule.
    """

    size: int
    delta: float = 0.1
    scale: float = 1.0
    fixed: float | None = None

    def __post_init__(self) -> None:
        if self.fixed is not None and not (math.isfinite(self.fixed) and self.fixed >= 0.0):
            raise ValueError(f"fixed beta must be a finite number >= 0, got {self.fixed}")
        if not (math.isfinite(self.scale) and self.scale > 0.0):
            raise ValueError(f"beta scale must be a finite number > 0, got {self.scale}")
        if self.fixed is None:
            gp_ucb_beta(1, self.size, self.delta)  # validates size and delta now, not at round t

    def __call__(self, t: int) -> float:
        """β for round ``t`` (1-based)."""
        if self.fixed is not None:
            if t < 1:
                raise ValueError(f"GP-UCB round t must be >= 1, got {t}")
            return self.fixed
        return self.scale * gp_ucb_beta(t, self.size, self.delta)
