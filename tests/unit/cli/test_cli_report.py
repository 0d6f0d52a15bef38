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
    assert "| + best cell (trial 2) | 75.00 | 100.00 | +25.00 |" in text
    assert "| 3 | failed (RuntimeError: out of memory) |" in text
    assert b.describe().splitlines()[0] in text and b.hash() in text
    assert f"cell_file = {str(best)!r}" in text
    assert "input_shape=(3, 8, 32, 32)" in text and "num_classes=4" in text
