"""``report.md`` writers: the numbers in the tables are the results' numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnas.cli.report import (
    ResultRow,
    SearchContext,
    compare_sentence,
    comparison_table,
    noise_lines,
    wilson_interval,
    within_noise,
    write_bandit_report,
    write_differentiable_report,
    write_train_report,
)
from attnas.space import OpSpec, chain, single_op_cell


def _ctx(run_dir: Path) -> SearchContext:
    return SearchContext(
        title="t",
        run_dir=run_dir,
        searcher="random",
        searcher_options={},
        space="s",
        space_file="s.yaml",
        space_size=290304,
        num_ops=1,
        backbone="i3d_tiny",
        positions=["Mixed_4b"],
        data="moving_digits",
        data_options={"size": 32},
        trainer={"epochs": 1},
        budget="2 trials",
        seed=0,
        num_classes=4,
        input_shape=(3, 8, 32, 32),
    )


def test_comparison_table_percentages_and_delta() -> None:
    rows = [
        ResultRow.from_result(
            "backbone alone",
            {
                "top1": 0.5,
                "top5": 0.9,
                "num_parameters": 2_000_000,
                "flops": 3_500_000_000,
                "wall_time_s": 12.4,
            },
        ),
        ResultRow("+ cell", top1=0.5625, top5=0.95, params=2_100_000, flops=3_600_000_000),
    ]
    table = comparison_table(rows, reference="backbone alone").splitlines()
    assert table[2] == (
        "| backbone alone | 50.00 | – | 1 seed | 90.00 | – | 2.000 | 3.500 | 12 | completed |"
    )
    assert table[3] == "| + cell | 56.25 | – | – | 95.00 | +6.25 | 2.100 | 3.600 | – | completed |"


def test_bandit_report_lists_every_trial_and_the_best(tmp_path: Path) -> None:
    a = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    b = chain([OpSpec("map", "temporal", "sigmoid"), OpSpec("dot", "spatial", "relu")])
    best = b.save(tmp_path / "cells" / "best.yaml")
    trials = [
        {
            "trial_id": 1,
            "cell": a.to_dict(),
            "state": "completed",
            "metrics": {"top1": 0.25, "top5": 1.0, "num_parameters": 10, "flops": 20},
        },
        {
            "trial_id": 2,
            "cell": b.to_dict(),
            "state": "completed",
            "metrics": {"top1": 0.75, "top5": 1.0, "num_parameters": 11, "flops": 21},
        },
        {
            "trial_id": 3,
            "cell": a.to_dict(),
            "state": "failed",
            "metrics": {},
            "error": "RuntimeError: out of memory\n  more",
        },
    ]
    baselines = {"none": {"top1": 0.5, "top5": 1.0, "num_parameters": 9, "flops": 19}}
    path = write_bandit_report(tmp_path / "report.md", _ctx(tmp_path), trials, [best], baselines)
    text = path.read_text()
    assert "3 trial(s): 2 completed, 1 failed." in text
    # the selection figure stands apart, labelled; it is not a row against single runs
    assert (
        "**Selection figure**: the best of 2 completed trials, trial 2, reached top-1 75.00" in text
    )
    assert "+ best cell" not in text
    assert "| 3 | – | failed (RuntimeError: out of memory) |" in text
    assert "- 1 × `RuntimeError: out of memory` (trials 3)" in text
    assert b.describe().splitlines()[0] in text and b.hash() in text
    assert f"cell_file = {str(best)!r}" in text
    assert "input_shape=(3, 8, 32, 32)" in text and "num_classes=4" in text


def test_top5_is_na_with_five_or_fewer_classes() -> None:
    """Issue 15: top-5 with <= 5 classes is always 100 %, so it is shown as n/a."""
    result = {"top1": 0.5, "top5": 1.0}
    assert ResultRow.from_result("x", result, num_classes=4).top5 is None
    assert ResultRow.from_result("x", {**result, "num_classes": 5}).top5 is None
    assert ResultRow.from_result("x", result, num_classes=6).top5 == 1.0
    table = comparison_table([ResultRow.from_result("x", result, num_classes=4)])
    assert table.splitlines()[2].startswith("| x | 50.00 | – | 1 seed | n/a | – |")


def test_bandit_report_compares_retrained_top_cells_not_the_selection(tmp_path: Path) -> None:
    """Issue 15: the top cells retrained with fresh seeds form the comparison with the
    baselines; the selection figure is shown apart and labelled."""
    a = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    best = a.save(tmp_path / "cells" / "best.yaml")
    trials = [
        {"trial_id": i, "cell": a.to_dict(), "state": "completed", "metrics": {"top1": v}}
        for i, v in [(1, 0.9), (2, 0.4)]
    ]
    baselines = {"none": {"top1": 0.5, "val_clips": 512}, "nonlocal": {"top1": 0.55}}
    retrained = {"rank1": {"top1": 0.6, "seed": 123, "history": [{"val_clips": 512}]}}
    text = write_bandit_report(
        tmp_path / "report.md",
        _ctx(tmp_path),
        trials,
        [best],
        baselines,
        retrained=retrained,
        invocations=[
            {"invocation": 1, "budget": 1, "first_trial": 1},
            {"invocation": 2, "budget": 2, "first_trial": 2},
        ],
    ).read_text()
    assert (
        "| + rank1 cell (retrained, fresh seed) | 60.00 | 55.7–64.2 (512 clips) | 1 seed | n/a "
        "| +10.00 |"
    ) in text
    assert "| backbone alone | 50.00 | 45.7–54.3 (512 clips) | 1 seed | n/a | – |" in text
    assert "| + non-local blocks | 55.00 | – | 1 seed | n/a | +5.00 |" in text
    # rank1 and the backbone are apart beyond binomial noise over 512 clips
    assert "No two rows are within noise of each other" in text
    assert (
        "**Selection figure**: the best of 2 completed trials, trial 1, reached top-1 90.00" in text
    )
    assert "| 90.00 |" not in text.split("## All trials")[0].split("**Selection figure**")[1]
    # which invocation ran which trial
    assert "- invocation 1 (?, budget 1): trials 1–1" in text
    assert "| 2 | 2 | completed |" in text


def test_wilson_interval_fixed_numbers() -> None:
    """Issue 15: every top-1 carries a binomial interval over the validation clips."""
    lo, hi = wilson_interval(0.5, 512)
    assert round(100 * lo, 2) == 45.69 and round(100 * hi, 2) == 54.31
    lo, hi = wilson_interval(0.79, 512)
    assert round(100 * lo, 2) == 75.26 and round(100 * hi, 2) == 82.31
    assert wilson_interval(0.0, 16)[0] == 0.0 and round(wilson_interval(0.0, 16)[1], 4) == 0.1936
    assert wilson_interval(1.0, 16)[1] == 1.0


def test_seed_rows_show_mean_std_and_the_interval_of_the_mean() -> None:
    results = [{"top1": v, "history": [{"val_clips": 512}]} for v in (0.77, 0.79, 0.81)]
    row = ResultRow.from_results("+ non-local blocks", results, num_classes=2)
    assert row.top1 == pytest.approx(0.79) and row.values == (0.77, 0.79, 0.81)
    assert row.std == pytest.approx(0.02) and row.clips == 512
    line = comparison_table([row]).splitlines()[2]
    assert line.startswith(
        "| + non-local blocks | 79.00 | 75.3–82.3 (512 clips) | 79.00 ± 2.00 (n = 3) | n/a |"
    )
    failed = ResultRow.from_results("x", [*results[:2], {"status": "failed"}])
    assert failed.status == "1 of 3 failed" and failed.values == (0.77, 0.79)


def test_within_noise_rule_and_sentences() -> None:
    """Issue 15: a plain sentence when two rows are within noise of each other."""
    n = {"history": [{"val_clips": 512}]}
    backbone = ResultRow.from_results("backbone", [{"top1": v, **n} for v in (0.50, 0.52)])
    nonlocal_ = ResultRow.from_results("non-local", [{"top1": v, **n} for v in (0.78, 0.80)])
    cell = ResultRow.from_results("cell", [{"top1": v, **n} for v in (0.75, 0.77)])
    # 76 % and 79 % over 512 clips: the Wilson intervals overlap
    assert within_noise(cell, nonlocal_) and not within_noise(cell, backbone)
    # intervals apart, but the seeds overlap: a re-run could swap them
    wide_a = ResultRow.from_results("a", [{"top1": v, **n} for v in (0.60, 0.90)])
    wide_b = ResultRow.from_results("b", [{"top1": v, **n} for v in (0.50, 0.61)])
    assert wide_a.interval[0] > wide_b.interval[1] and within_noise(wide_a, wide_b)
    lines = noise_lines([backbone, nonlocal_, cell])
    assert lines[0].startswith("**non-local** and **cell** are within noise of each other")
    assert "Wilson 95 % intervals overlap" in lines[0]
    assert compare_sentence(cell, nonlocal_, "The derived cell", "non-local blocks") == (
        "The derived cell does not beat non-local blocks: 76.00 % against 79.00 %, within noise."
    )
    assert compare_sentence(cell, backbone).startswith("cell beats backbone beyond noise")
    assert compare_sentence(backbone, cell).endswith("lower beyond noise.")
    assert noise_lines([backbone, nonlocal_])[0].startswith("No two rows are within noise")


def test_differentiable_report_compares_seeds_with_uncertainty(tmp_path: Path) -> None:
    cell = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    f = cell.save(tmp_path / "cells" / "cell.yaml")
    n = {"history": [{"val_clips": 512}]}
    retrained = {
        "none": [{"top1": v, **n} for v in (0.50, 0.52)],
        "nonlocal": [{"top1": v, **n} for v in (0.78, 0.80)],
        "derived": [{"top1": v, **n} for v in (0.75, 0.77)],
    }
    text = write_differentiable_report(
        tmp_path / "report.md",
        _ctx(tmp_path),
        {"Mixed_4b": cell},
        [f],
        {"top1": 0.7, **n},
        retrained,
        2,
        1,
        extra_sections=["## Extra", ""],
    ).read_text()
    assert "| + derived cell | 76.00 | 72.1–79.5 (512 clips) | 76.00 ± 1.41 (n = 2) |" in text
    assert "| supergraph (search run) | 70.00 | 65.9–73.8 (512 clips) | 1 seed |" in text
    assert "- The derived cell does not beat non-local blocks: 76.00 % against 79.00 %" in text
    assert "- The derived cell beats the backbone alone beyond noise" in text
    assert "**+ non-local blocks** and **+ derived cell** are within noise" in text
    assert "Wilson score interval" in text and "## Extra" in text


def test_train_report_and_multirun_comparison_carry_uncertainty(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from attnas.cli.train import ComparisonTable

    result = {"top1": 0.75, "status": "completed", "history": [{"val_clips": 256}]}
    text = write_train_report(tmp_path / "report.md", "t", "none", result, 4).read_text()
    assert "| none | 75.00 | 69.4–79.9 (256 clips) | 1 seed |" in text
    for job, (cell, top1) in enumerate([("none", 0.5), ("nonlocal", 0.53)]):
        (tmp_path / "sweep" / str(job)).mkdir(parents=True)
        (tmp_path / "sweep" / str(job) / "config.yaml").write_text(f"cell: {cell}\n")
        res = {"top1": top1, "history": [{"val_clips": 256}]}
        (tmp_path / "sweep" / str(job) / "result.json").write_text(json.dumps(res))
    ComparisonTable().on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    )
    table = (tmp_path / "sweep" / "comparison.md").read_text()
    assert "| nonlocal | 53.00 | 46.9–59.0 (256 clips) | 1 seed |" in table
    assert "**none** and **nonlocal** are within noise of each other" in table
