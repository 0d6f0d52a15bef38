"""The search-cost and growth benchmarks: their rows' schema, never their speed.

The benchmarks run at ``--tiny`` scale (the numbers mean nothing there); the tests check which
rows come back, that every ratio and exponent the issue asks for is reported with the
interleaved rounds behind it, and the arithmetic of the exponent fit and the excess profile.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
ROW_KEYS = {"name", "goal", "value", "unit", "met", "details"}


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))


def _rows(tmp_path: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    from experiments.bench.__main__ import main

    out = tmp_path / "results.json"
    assert (
        main(["--tiny", "--device", "cpu", "--threads", "1", "--only", *names, "--out", str(out)])
        == 0
    )
    payload = json.loads(out.read_text())
    rows = {}
    for row in payload["benchmarks"]:
        assert set(row) == ROW_KEYS, row["name"]
        assert isinstance(row["value"], float | int) and math.isfinite(row["value"]), row
        assert row["met"] in (True, False, None)
        assert isinstance(row["goal"], str) and row["goal"]
        assert "error" not in row["details"], row["details"].get("error")
        if row["met"] is False:
            assert row["details"].get("limit"), f"{row['name']} missed its goal without a limit"
        rows[row["name"]] = row
    return rows


def test_growth_rows_state_a_fitted_exponent_per_op_type(tmp_path: Path) -> None:
    rows = _rows(tmp_path, ["growth"])
    assert list(rows) == [
        "growth/map_exponent",
        "growth/dot_exponent",
        "growth/map_parameter_exponent",
        "growth/supergraph_exponent",
        "growth/levels_exponent",
    ]
    for ty, order in (("map", "O(N)"), ("dot", "O(N^2)")):
        row = rows[f"growth/{ty}_exponent"]
        d = row["details"]
        assert row["unit"] == "exponent" and order in row["goal"] and d["expected"] == order
        assert d["N"] == sorted(d["N"]) and len(d["N"]) >= 3
        assert all(b == 2 * a for a, b in zip(d["N"], d["N"][1:]))  # N doubles along the ladder
        assert len(d["ms"]) == len(d["N"]) == len(d["flops"]) == len(d["wall_ms"])
        assert row["value"] == d["fit"]["k"] and d["fit"]["method"] == "top slope"
        assert len(d["fit"]["slopes"]) == len(d["N"]) - 1
        assert set(d["per_dim"]) == {"spatial", "temporal", "spatiotemporal"}
        for fit in d["per_dim"].values():
            assert len(fit["ms"]) == len(d["N"]) and math.isfinite(fit["exponent"])
        assert all(f > 0 for f in d["flops"]) and d["flops"] == sorted(d["flops"])
    # FLOPs, which do not depend on the machine: dot's spatiotemporal node pays its N x N
    # weights, map nodes grow linearly (their MLP's hidden width is 8 at these tiny N)
    dot = rows["growth/dot_exponent"]["details"]["per_dim"]["spatiotemporal"]
    assert dot["flop_exponent"] > 1.1
    for fit in rows["growth/map_exponent"]["details"]["per_dim"].values():
        assert fit["flop_exponent"] == pytest.approx(1.0, abs=0.02)
    assert rows["growth/map_exponent"]["details"]["map_mlp_crossover_N"]["level_1"] > 0
    params = rows["growth/map_parameter_exponent"]
    assert params["unit"] == "exponent" and "O(N)" in params["goal"]
    d = params["details"]
    assert len(d["parameters"]) == len(d["N"]) and all(
        m < p for m, p in zip(d["mlp_parameters"], d["parameters"])
    )
    assert set(d["per_dim"]) == {"spatial", "temporal", "spatiotemporal"}
    # at the paper's I3D Mixed_4b the map/spatiotemporal node's G2 MLP is most of its weights
    paper = d["paper_map_spatiotemporal_node"]
    assert paper["N"] == 16 * 14 * 14 and paper["mlp_parameters"] > 0.9 * paper["parameters"]
    levels = rows["growth/levels_exponent"]["details"]
    assert levels["levels"] == [1, 2] and len(levels["ms"]) == 2
    assert rows["growth/supergraph_exponent"]["met"] is None


@pytest.mark.slow
def test_search_cost_rows_report_every_ratio_with_its_rounds(tmp_path: Path) -> None:
    rows = _rows(tmp_path, ["search_cost"])
    assert list(rows) == [
        "search_cost/epoch_time",
        "search_cost/over_backbone",
        "search_cost/cell_machinery",
        "search_cost/dirichlet_epoch_time",
        "search_cost/dirichlet_over_search",
        "search_cost/oneshot_epoch_time",
        "search_cost/ratio_spread",
    ]
    goals = {
        "epoch_time": "1.25x",
        "over_backbone": "1.5x",
        "cell_machinery": "1.05x",
        "dirichlet_epoch_time": "1.25x",
    }
    for key, bound in goals.items():
        row = rows[f"search_cost/{key}"]
        assert row["unit"] == "x" and bound in row["goal"] and row["met"] in (True, False)
        d = row["details"]
        assert set(d["epoch_ms"]) == {
            "search", "search_dirichlet", "derived", "bare", "op_cell", "nonlocal", "oneshot_cell"
        }  # fmt: skip
        assert all(len(v) == d["rounds"] for v in d["round_epoch_ms"].values())
        assert len(d["round_ratios"]) == d["rounds"]
        assert set(d["step_peak_mib"]) == set(d["epoch_ms"])
        assert set(d["cpu_ratios"]) == set(goals)
    details = rows["search_cost/epoch_time"]["details"]
    assert details["supergraph_fused"] is True
    # the one-op cell and the non-local block are the same computation
    assert details["op_cell_vs_nonlocal_tied_max_abs_diff"] < 1e-4
    extra = rows["search_cost/dirichlet_over_search"]
    assert extra["met"] is None and len(extra["details"]["round_ratios"]) == details["rounds"]
    ms = extra["details"]["epoch_ms"]
    assert ms["search_dirichlet"] == details["epoch_ms"]["search_dirichlet"]
    oneshot = rows["search_cost/oneshot_epoch_time"]
    assert oneshot["met"] is None and oneshot["details"]["oneshot_cell"].count(";") == 1  # 2 ops
    assert oneshot["value"] == pytest.approx(
        statistics.median(oneshot["details"]["round_ratios"]), rel=1e-3
    )
    spread = rows["search_cost/ratio_spread"]
    assert spread["met"] is None and spread["value"] >= 1.0
    assert spread["value"] == pytest.approx(
        max(spread["details"]["round_ratios"]) / min(spread["details"]["round_ratios"]), rel=1e-3
    )


def test_fit_exponent_takes_the_slope_where_n_is_largest() -> None:
    from experiments.bench.growth import fit_exponent

    xs = [64, 128, 256, 512]
    for k in (1.0, 2.0):
        fit = fit_exponent(xs, [1e-3 * x**k for x in xs])
        assert fit["method"] == "top slope" and fit["k"] == pytest.approx(k, abs=1e-3)
        assert fit["slopes"] == [pytest.approx(k, abs=1e-3)] * 3
    # a fixed cost: the top slope reads low, the fit of a + b x^k recovers k and a
    fit = fit_exponent(xs, [5.0 + 1e-3 * x**1.5 for x in xs])
    assert fit["k"] < fit["fixed_power"]["k"] == pytest.approx(1.5, abs=0.01)
    assert fit["fixed_power"]["fixed"] == pytest.approx(5.0 / (5.0 + 64**1.5 * 1e-3), abs=0.01)
    assert fit["slopes"] == sorted(fit["slopes"])  # the fixed share falls as N grows
    levels = fit_exponent([1, 2, 4], [4.5 + 7.7 * m for m in (1, 2, 4)])
    assert levels["fixed_power"]["k"] == pytest.approx(1.0, abs=0.01)
    two = fit_exponent([1, 2], [1.0, 2.0])
    assert two["k"] == 1.0 and two["fixed_power"] is None


def test_excess_profile_lines_name_the_ops_the_slower_call_adds() -> None:
    from experiments.bench.search_cost import excess_profile_lines

    a = torch.randn(128, 128)

    def slow() -> None:
        for _ in range(50):
            a.mm(a)
        a.sum()

    lines = excess_profile_lines(slow, lambda: a.sum(), torch.device("cpu"), "ref")
    assert len(lines) == 3 and all("over ref" in line for line in lines)
    (mm,) = [line for line in lines if line.startswith("aten::mm: +")]
    assert "50 vs 0 calls" in mm


def test_interleaved_clock_times_records_both_clocks_round_robin() -> None:
    from experiments.bench.search_cost import interleaved_clock_times

    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = interleaved_clock_times(fns, rounds=3, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(out) == {"wall", "cpu", "sys"}
    assert all(len(v) == 3 and min(v) >= 0 for clock in out.values() for v in clock.values())
    # epochs of two steps: interleaved step by step, the order reversed every step
    calls.clear()
    steps = {k: [lambda k=k, i=i: calls.append(f"{k}{i}") for i in (1, 2)] for k in "ab"}
    out = interleaved_clock_times(steps, rounds=2, warmup=0, device=torch.device("cpu"))
    assert calls == ["a1", "b1", "b2", "a2", "a1", "b1", "b2", "a2"]
    assert {k: len(v) for k, v in out["wall"].items()} == {"a": 2, "b": 2}
    calls.clear()  # rewarm: each timed call right after an untimed one of the same piece
    interleaved_clock_times(fns, rounds=1, warmup=0, device=torch.device("cpu"), rewarm=True)
    assert calls == ["a", "a", "b", "b"]
