"""The compare_searchers table and its curves agree (issue 16, item 13): the table used every
trial's best while the curves stopped at the budget, so a last trial that ended past the budget
counted in one and not the other (gpb 0.992 in the table, 0.977 at the curve's end)."""

from __future__ import annotations

from experiments.compare_searchers import best_at_budget, final_table, summarise_curves


def test_table_is_the_curves_end_point() -> None:
    trace = [
        {"cost_s": 40.0, "value": 0.90, "best": 0.90, "overhead_s": 0.0},
        {"cost_s": 90.0, "value": 0.977, "best": 0.977, "overhead_s": 0.0},
        {"cost_s": 130.0, "value": 0.992, "best": 0.992, "overhead_s": 0.0},  # past the budget
    ]
    runs = {"gpb": [{"trace": trace, "trials": 3, "best_value": 0.992, "overhead_s": 0.0}]}
    report = {"budget_s": 100.0, "runs": runs, "curves": summarise_curves(runs, 100.0, 10)}
    assert best_at_budget(runs["gpb"][0], 100.0) == 0.977
    assert report["curves"]["gpb"]["mean"][-1] == 0.977
    assert "| gpb | 0.977 ± 0.000 | [2] |" in final_table(report)
