"""``report.md`` writers: the numbers in the tables are the results' numbers."""

from __future__ import annotations

from pathlib import Path

from attnas.cli.report import (
    ResultRow,
    SearchContext,
    comparison_table,
    write_bandit_report,
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
    assert table[2] == "| backbone alone | 50.00 | 90.00 | – | 2.000 | 3.500 | 12 | completed |"
    assert table[3] == "| + cell | 56.25 | 95.00 | +6.25 | 2.100 | 3.600 | – | completed |"


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
    assert table.splitlines()[2].startswith("| x | 50.00 | n/a | – |")


def test_bandit_report_compares_retrained_top_cells_not_the_selection(tmp_path: Path) -> None:
    """Issue 15: the top cells retrained with fresh seeds form the comparison with the
    baselines; the selection figure is shown apart and labelled."""
    a = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    best = a.save(tmp_path / "cells" / "best.yaml")
    trials = [
        {"trial_id": i, "cell": a.to_dict(), "state": "completed", "metrics": {"top1": v}}
        for i, v in [(1, 0.9), (2, 0.4)]
    ]
    baselines = {"none": {"top1": 0.5}, "nonlocal": {"top1": 0.55}}
    retrained = {"rank1": {"top1": 0.6, "seed": 123}}
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
    assert "| + rank1 cell (retrained, fresh seed) | 60.00 | n/a | +10.00 |" in text
    assert "| backbone alone | 50.00 | n/a | – |" in text
    assert "| + non-local blocks | 55.00 | n/a | +5.00 |" in text
    assert (
        "**Selection figure**: the best of 2 completed trials, trial 1, reached top-1 90.00" in text
    )
    assert "| 90.00 |" not in text.split("## All trials")[0].split("**Selection figure**")[1]
    # which invocation ran which trial
    assert "- invocation 1 (?, budget 1): trials 1–1" in text
    assert "| 2 | 2 | completed |" in text
