"""The derived-cell study's summary (``experiments/derived_cell_study.py``) on made-up runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `experiments` is a folder of scripts, not an installed package

from experiments import derived_cell_study as dcs  # noqa: E402
from experiments import searcher_study as st  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return st.open_table("synthetic-small")


def _run(seed, placements):
    return {"variant": "demo", "seed": seed, "epochs": 8, "stable_epochs": 2,
            "sink_entropy_ratio": 0.9, "top_sink_share": 0.1, "supergraph_val_top1": 0.7,
            "search_s": 1.0, "cells_per_epoch": ["c"] * 8, "placements": placements}  # fmt: skip


def test_a_table_cell_is_placed_by_its_row_and_older_runs_lack_a2b1(bench):
    cell = bench.cells()[0]
    row = {"hash": cell.hash(), "num_ops": 2, "in_table": False, "mean": 0.0, "percentile": 0.0}
    trained = {"hash": "x" * 16, "num_ops": 1, "in_table": False, "mean": bench.mean(cell)}
    runs = [
        _run(0, {"a1b1": trained, "space": trained}),  # a run from before the a2b1 rule
        _run(1, {"a1b1": trained, "a2b1": row, "space": trained}),
    ]
    summary = dcs.summarise([{**r, "placements": {k: {**v, "percentile": 0.0}
                                                  for k, v in r["placements"].items()}}
                             for r in runs], bench)  # fmt: skip
    demo = summary["variants"]["demo"]
    assert len(demo["a1b1"]["percentiles"]) == 2 and len(demo["a2b1"]["percentiles"]) == 1
    # the row's own mean and percentile replace what the run stored; the trained cell's mean
    # is placed among the cell means
    assert demo["a2b1"]["in_table"] == 1
    assert demo["a2b1"]["mean"][0] == pytest.approx(bench.mean(cell))
    assert demo["a2b1"]["percentile_median"][0] == pytest.approx(bench.percentile(cell))
    assert demo["a1b1"]["percentile_median"][0] == pytest.approx(
        bench.percentile_of(bench.mean(cell))
    )
    assert "| demo | 2 |" in dcs.markdown(summary, bench) and "| 1 / 1 |" in dcs.markdown(
        summary, bench
    )


def test_a_fresh_checkout_gets_its_runs_back_from_the_results_json(tmp_path: Path):
    import json

    results = tmp_path / "study.json"
    runs = [{"variant": "demo", "seed": 0, "x": 1}, {"variant": "dirichlet", "seed": 3, "x": 2}]
    results.write_text(json.dumps({"summary": {}, "runs": runs}))
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    kept = work / "runs" / "demo_seed0.json"
    kept.write_text(json.dumps({"variant": "demo", "seed": 0, "x": 9}))  # a newer local run
    assert dcs.restore_runs(results, work) == 1
    assert json.loads(kept.read_text())["x"] == 9  # what is there is never overwritten
    assert json.loads((work / "runs" / "dirichlet_seed3.json").read_text()) == runs[1]
    assert dcs.restore_runs(tmp_path / "missing.json", work) == 0


def test_variants_are_paired_with_the_reference_over_the_seeds_both_ran(bench):
    def placed(mean):
        return {"space": {"hash": "x" * 16, "num_ops": 4, "in_table": False, "mean": mean,
                          "percentile": 0.0}}  # fmt: skip

    runs = [
        {**_run(0, placed(0.70)), "variant": dcs.REFERENCE},
        {**_run(1, placed(0.74)), "variant": dcs.REFERENCE},
        {**_run(0, placed(0.75)), "variant": "other"},
        {**_run(1, placed(0.77)), "variant": "other"},
        {**_run(2, placed(0.10)), "variant": "other"},  # no reference run of seed 2
    ]
    runs[3] = {**runs[3], "supergraph_val_top1": 0.5}  # seed 1 trained another supergraph
    summary = dcs.summarise(runs, bench)
    paired = summary["against_reference"]
    assert list(paired) == ["other"] and paired["other"]["seeds"] == [0, 1]
    assert paired["other"]["diff"][0] == pytest.approx(0.04)
    assert paired["other"]["same_search"] == 1  # seed 0: the same supergraph, another selection
    assert list(paired["other"]["rules"]) == ["space"]  # the runs placed no other rule
    assert "(2 seeds; the same trained supergraph in 1 of them)" in dcs.markdown(summary, bench)


def test_a_variant_is_also_paired_with_the_rerun_of_the_reference_on_its_machine(bench):
    def placed(mean):
        return {"space": {"hash": "x" * 16, "num_ops": 4, "in_table": False, "mean": mean,
                          "percentile": 0.0}}  # fmt: skip

    (name, rerun), *_ = dcs.RERUN_OF_REFERENCE.items()
    runs = [
        {**_run(0, placed(0.70)), "variant": dcs.REFERENCE},
        {**_run(0, placed(0.80)), "variant": name, "supergraph_val_top1": 0.5},
        {**_run(0, placed(0.72)), "variant": rerun, "supergraph_val_top1": 0.5},
    ]
    summary = dcs.summarise(runs, bench)
    assert summary["against_reference"][name]["same_search"] == 0
    again = summary["against_rerun"][name]
    assert again["diff"][0] == pytest.approx(0.08) and again["same_search"] == 1
    assert f"`{name}` against `{rerun}`" in dcs.markdown(summary, bench)


def test_a_variant_is_also_paired_with_the_variant_it_changes(bench):
    def placed(mean):
        return {"space": {"hash": "x" * 16, "num_ops": 4, "in_table": False, "mean": mean,
                          "percentile": 0.0}}  # fmt: skip

    (name, other), *_ = dcs.ALSO_AGAINST.items()
    runs = [{**_run(s, placed(0.70 + s / 100)), "variant": dcs.REFERENCE} for s in (0, 1)] + [
        {**_run(0, placed(0.78)), "variant": name},
        {**_run(1, placed(0.81)), "variant": name},
        {**_run(0, placed(0.69)), "variant": other},
        {**_run(1, placed(0.70)), "variant": other},
    ]
    summary = dcs.summarise(runs, bench)
    assert summary["against_reference"][name]["diff"][0] == pytest.approx(0.09)
    versus = summary["against_other"][name]
    assert versus["seeds"] == [0, 1] and versus["diff"][0] == pytest.approx(0.10)
    assert f"`{name}` against `{other}`, paired: 10.00" in dcs.markdown(summary, bench)


def test_the_selection_signal_compares_the_rises_with_what_the_table_says_a_node_is_worth(bench):
    import statistics

    kinds = sorted({f"{o.op.type}/{o.op.dim}" for c in bench.cells() for o in c.ops})
    worth = {
        k: statistics.fmean(
            bench.mean(c) for c in bench.cells() if k in {f"{o.op.type}/{o.op.dim}" for o in c.ops}
        )
        for k in kinds
    }
    ordered = sorted(kinds, key=worth.get)  # least to most worth
    agree = {f"L1.{k}": float(i) for i, k in enumerate(ordered)}
    disagree = {f"L1.{k}": float(-i) for i, k in enumerate(ordered)}

    def run(seed, rises, method="perturbation"):
        meta = {"derivation": {"method": method, "sink_scores": rises}}
        space = {"hash": "x" * 16, "num_ops": 4, "in_table": False, "mean": 0.7,
                 "percentile": 0.0, "cell": {"meta": meta}}  # fmt: skip
        return {**_run(seed, {"space": space}), "variant": "pt"}

    runs = [run(0, agree), run(1, agree), run(2, disagree), run(3, disagree, "weights")]
    signal = dcs.summarise(runs, bench)["selection_signal"]["pt"]
    assert signal["runs"] == 3  # the run selected by the weights is left out
    assert signal["tau_per_run"][0] == pytest.approx(1.0)  # the median of 1, 1, -1
    assert signal["top_node"] == f"L1.{ordered[-1]}"  # mean rises i/3: the most worth on top
    assert signal["best_worth"] == ordered[-1]
    # second-largest over largest rise: (n-2)/(n-1) in the two runs with a positive rise
    n = len(kinds)
    assert n >= 3 and signal["second_over_first"][0] == pytest.approx((n - 2) / (n - 1))


def test_a_pruned_cells_signal_is_the_order_its_nodes_survive(bench):
    import statistics

    kinds = sorted({f"{o.op.type}/{o.op.dim}" for c in bench.cells() for o in c.ops})

    def worth(k):
        return statistics.fmean(
            bench.mean(c) for c in bench.cells() if k in {f"{o.op.type}/{o.op.dim}" for o in c.ops}
        )

    ordered = [f"L1.{k}" for k in sorted(kinds, key=worth)]  # least to most worth
    # pruned least worth first; the two kept nodes' last rises put the most worth on top
    rises = {n: float("-inf") for n in ordered[:-2]} | {ordered[-2]: 0.3, ordered[-1]: 0.2}
    selection = {"pruned": [{"node": n, "rise": 0.0, "loss_after": 1.0} for n in ordered[:-2]]}
    meta = {"derivation": {"method": "pruning", "sink_scores": rises, "selection": selection}}
    space = {"hash": "x" * 16, "num_ops": 4, "in_table": False, "mean": 0.7,
             "percentile": 0.0, "cell": {"meta": meta}}  # fmt: skip
    summary = dcs.summarise([{**_run(0, {"space": space}), "variant": "prune"}], bench)
    signal = summary["selection_signal"]["prune"]
    assert signal["method"] == "pruning" and signal["second_over_first"] is None
    # survival 0, 1, ... in pruning order, then the kept by their rises: all but the top pair
    # agree with the worth
    assert signal["top_node"] == ordered[-2]
    n = len(ordered)
    assert signal["tau_per_run"][0] == pytest.approx(1 - 2 / (n * (n - 1) / 2))
    assert "survive the pruning" in dcs.markdown(summary, bench)


def test_a_oneshot_cells_signal_places_its_best_candidates_on_the_table(bench):
    by_mean = sorted(bench.cells(), key=bench.mean)  # worst to best
    best3, worst3 = by_mean[-3:], by_mean[:3]

    def run(seed, cells, method="oneshot"):
        ranked = [{"hash": c.hash(), "top1": 0.5, "loss": 1.0} for c in cells]
        meta = {"derivation": {"method": method, "candidates": 99, "ranked": ranked}}
        space = {"hash": cells[0].hash(), "num_ops": 2, "in_table": True, "mean": 0.7,
                 "percentile": 0.0, "cell": {"meta": meta}}  # fmt: skip
        return {**_run(seed, {"space": space}), "variant": "os"}

    runs = [run(0, best3), run(1, best3[::-1]), run(2, worst3), run(3, worst3, "weights")]
    summary = dcs.summarise(runs, bench)
    signal = summary["oneshot_signal"]["os"]
    assert signal["runs"] == 3 and signal["candidates"] == 3  # the weights' run left out
    assert signal["percentiles"][0] == [round(bench.percentile(c), 1) for c in best3]
    assert signal["in_top10"][0] == 3.0  # the median of 3, 3, 0
    assert signal["best_percentile"][0] == pytest.approx(100.0)
    assert "best cells by one-shot top-1, 3 runs" in dcs.markdown(summary, bench)


def test_the_random_control_picks_by_one_seed_and_judges_by_the_other(bench):
    import numpy as np

    cells = bench.cells()
    first, second = sorted(int(s) for s in bench.manifest["seeds"])[:2]

    def value(c, seed):
        return next(r.val_top1 for r in bench.rows(c) if r.seed == seed)

    def judged(c, pick, judge):  # the percentile among the judging seed's values
        values = np.array([value(x, judge) for x in cells])
        return 100.0 * float(np.mean(values <= value(c, judge)))

    # every cell drawn: the pick is the best by one seed, deterministically
    control = dcs.random_control(bench, ks=(len(cells),))
    best = [max(cells, key=lambda c, s=s: value(c, s)) for s in (first, second)]
    expected = [judged(best[0], first, second), judged(best[1], second, first)]
    entry = control[str(len(cells))]
    assert entry["mean"] == pytest.approx(sum(expected) / 2)
    assert control["seeds"] == [first, second]
    one = dcs.random_control(bench, ks=(1,))["1"]  # one cell: a random cell, about 50
    assert 40 < one["mean"] < 60
