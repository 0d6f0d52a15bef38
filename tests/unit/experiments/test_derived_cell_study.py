"""The derived-cell study's summary (``experiments/derived_cell_study.py``) on made-up runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
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
            "search_s": 1.0, "placements": placements}  # fmt: skip


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
    paired = dcs.summarise(runs, bench)["against_reference"]
    assert list(paired) == ["other"] and paired["other"]["seeds"] == [0, 1]
    assert paired["other"]["diff"][0] == pytest.approx(0.04)


def test_a_selection_is_paired_with_its_own_networks_weights_rule(bench, tmp_path: Path):
    import json

    def placed(mean, h="x"):
        return {"hash": h * 16, "num_ops": 4, "in_table": False, "mean": mean, "percentile": 0.0}

    runs = [
        {**_run(0, {"space": placed(0.80, "a")}), "variant": "pt",
         "weights_placements": {"space": placed(0.70, "b")}},
        {**_run(1, {"space": placed(0.74, "c")}), "variant": "pt",
         "weights_placements": {"space": placed(0.74, "c")}},
        {**_run(2, {"space": placed(0.60)}), "variant": "pt"},  # no weights-rule placement
    ]  # fmt: skip
    summary = dcs.summarise(runs, bench)
    same = summary["against_weights_rule"]["pt"]
    assert same["seeds"] == [0, 1] and set(same) == {"seeds", "space"}
    assert same["space"]["diff"][0] == pytest.approx(0.05)
    assert same["space"]["same_cell"] == 1 and same["space"]["runs"] == 2
    assert same["space"]["weights_percentile_median"][0] == pytest.approx(
        float(np.median([bench.percentile_of(0.70), bench.percentile_of(0.74)]))
    )
    assert "`pt` against the cells its own trained networks' weights give" in dcs.markdown(
        summary, bench
    )
    # the backfill leaves alone what is not a perturbation-selection run, or already has them
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    plain = {**runs[2], "config": {"selection": "weights"}}
    done = {**runs[0], "config": {"selection": "perturbation"}}
    dcs.run_path(work, "pt", 2).write_text(json.dumps(plain))
    dcs.run_path(work, "pt", 0).write_text(json.dumps(done))
    assert dcs.backfill_weights_rule(work, ["pt"], [0, 1, 2]) == 0
