"""The position study's summary (``experiments/position_study.py``) on made-up runs."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `experiments` is a folder of scripts, not an installed package

from experiments import derived_cell_study as dcs  # noqa: E402
from experiments import position_study as ps  # noqa: E402


def _run(mode, seed, retrained, stable=(2, 2), hashes=("a", "b")):
    keys = ["all"] if mode == "agnostic" else list(ps.POSITIONS)
    stats = {k: {"sink_entropy_ratio": 0.9, "top_sink_share": 0.2, "stable_epochs": s}
             for k, s in zip(keys, stable)}  # fmt: skip
    return {"mode": mode, "seed": seed, "epochs": 8, "weights_stats": stats,
            "hashes": dict(zip(ps.POSITIONS, hashes)), "retrained": retrained, "failed": [],
            "search_s": 1.0, "supergraph_val_top1": 0.6}  # fmt: skip


def test_modes_are_compared_paired_over_the_seeds_both_ran():
    baselines = {"none": [0.70, 0.72], "nonlocal": [0.80, 0.82]}
    runs = [
        _run("agnostic", 0, [0.75, 0.77], hashes=("a", "a")),
        _run("agnostic", 1, [0.79, 0.81], stable=(1,), hashes=("c", "c")),
        _run("specific", 0, [0.80, 0.80], stable=(2, 1)),  # one position still changing
        _run("specific", 1, [0.82, 0.84]),
        _run("specific", 2, [0.50, 0.50]),  # no agnostic run of seed 2: not in the pairs
    ]
    summary = ps.summarise(runs, baselines)
    agnostic, specific = summary["modes"]["agnostic"], summary["modes"]["specific"]
    assert agnostic["mean"][0] == pytest.approx(0.78)
    assert agnostic["minus_nonlocal"][0] == pytest.approx(0.78 - 0.81)
    assert agnostic["minus_none"][0] == pytest.approx(0.78 - 0.71)
    assert agnostic["stable_seeds"] == 1 and specific["stable_seeds"] == 2  # of seeds 0, 1, 2
    assert agnostic["distinct_cells_across_positions"] == 0
    assert specific["distinct_cells_across_positions"] == 3
    paired = summary["specific_minus_agnostic"]
    assert paired["seeds"] == [0, 1]
    assert paired["diff"][0] == pytest.approx(statistics.fmean([0.80 - 0.76, 0.83 - 0.80]))
    text = ps.markdown(summary)
    assert "| agnostic | 2 |" in text and "| specific | 3 |" in text and "[0, 1]" in text


def test_stability_is_counted_for_the_named_weights():
    def epoch(a, b):
        return {"positions": {"Conv3d_2c_3x3": {"cell": a}, "Mixed_3b": {"cell": b}}}

    telemetry = [epoch("x", "p"), epoch("y", "q"), epoch("y", "q"), epoch("y", "r")]
    assert dcs.stable_epochs(telemetry, "Conv3d_2c_3x3") == 3
    assert dcs.stable_epochs(telemetry, "Mixed_3b") == 1
