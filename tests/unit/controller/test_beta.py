from __future__ import annotations

import math

import pytest

from attnas.controller import BetaSchedule, gp_ucb_beta


@pytest.mark.parametrize(
    ("t", "size", "delta"), [(1, 290_304, 0.1), (50, 290_304, 0.1), (7, 48, 0.05)]
)
def test_beta_matches_srinivas_formula(t: int, size: int, delta: float) -> None:
    expected = 2.0 * math.log(size * t**2 * math.pi**2 / (6.0 * delta))
    assert gp_ucb_beta(t, size, delta) == pytest.approx(expected, rel=1e-12)


def test_beta_known_value_for_the_paper_space() -> None:
    # 290304 · π² / 0.6 = 4.77531e6, ln = 15.37897, times 2 (computed by hand)
    assert gp_ucb_beta(1, 290_304, 0.1) == pytest.approx(30.75794, abs=1e-4)
    # β grows by 4 log(t) with the round
    assert gp_ucb_beta(10, 290_304, 0.1) - gp_ucb_beta(1, 290_304, 0.1) == pytest.approx(
        4 * math.log(10)
    )


def test_schedule_scale_and_fixed() -> None:
    sched = BetaSchedule(290_304, delta=0.1, scale=0.2)
    assert sched(3) == pytest.approx(0.2 * gp_ucb_beta(3, 290_304, 0.1))
    fixed = BetaSchedule(290_304, fixed=4.0)
    assert fixed(1) == fixed(1000) == 4.0


def test_beta_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="delta"):
        BetaSchedule(10, delta=1.5)
    with pytest.raises(ValueError, match="round t"):
        gp_ucb_beta(0, 10, 0.1)
    with pytest.raises(ValueError, match="fixed beta"):
        BetaSchedule(10, fixed=-1.0)
