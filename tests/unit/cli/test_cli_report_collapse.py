"""The differentiable search report's collapse monitor section (``collapse_section``)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from attnas.cli.report import SearchContext, collapse_section, write_differentiable_report
from attnas.space import OpSpec, single_op_cell

UNIFORM = {"entropy_max/sink": math.log(12), "entropy_max/level": math.log(6),
           "entropy_max/act": math.log(4)}  # fmt: skip


def _record(epoch: int, sink: float, cell: str) -> dict:
    row = {
        **UNIFORM,
        "entropy/sink": sink,
        "entropy/level": math.log(6) * 0.8,
        "entropy/act": math.log(4) * 0.7,
        "cell": cell,
        "top_sink": {"L1.dot/temporal": 0.3},
        "top_sink_share": 0.3,
        "grad_norm/sink": 0.02,
        "grad_coherence/sink": 0.5,
    }
    return {"epoch": epoch, "grad_norm/net": 0.7, "positions": {"all": row}}


def _ctx(run_dir: Path) -> SearchContext:
    return SearchContext(
        title="t", run_dir=run_dir, searcher="differentiable", searcher_options={}, space="s",
        space_file="s.yaml", space_size=10, num_ops=1, backbone="i3d_tiny",
        positions=["Mixed_4b"], data="moving_digits", data_options={}, trainer={"epochs": 3},
        budget="one run", seed=0, num_classes=4, input_shape=(3, 8, 32, 32),
    )  # fmt: skip


def test_section_shows_the_per_epoch_table_and_no_warning_for_a_settled_search():
    records = [_record(e, s, "A") for e, s in ((1, 2.3), (2, 2.0), (3, 1.5))]
    text = "\n".join(collapse_section(records))
    assert "## Did the search decide? (collapse monitor)" in text
    assert f"sink {1.5 / math.log(12):.3f}, level 0.800, activation 0.700" in text
    assert "held for the last 3 of 3 epoch(s)" in text
    assert "**Warning**" not in text
    assert (
        f"| 3 | {1.5 / math.log(12):.3f} | 0.800 | 0.700 | 0.300 |  | 2.00e-02 | 7.00e-01 |" in text
    )


def test_report_reads_the_run_telemetry_and_warns_about_an_undecided_changing_search(tmp_path):
    records = [_record(1, 2.484, "A"), _record(2, 2.483, "B"), _record(3, 2.482, "C")]
    (tmp_path / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cell = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    f = cell.save(tmp_path / "cells" / "cell.yaml")
    text = write_differentiable_report(
        tmp_path / "report.md", _ctx(tmp_path), {"Mixed_4b": cell}, [f], {"top1": 0.5}, {}, 1, 1
    ).read_text()
    assert "**Warning**: sink entropy 2.482 is 0.1 % below uniform" in text
    assert "still changing at the end" in text
    assert "| 3 |" in text and "yes" in text
    # no telemetry: no section
    assert collapse_section([]) == []


def test_report_says_what_ranked_the_derivations_choices(tmp_path):
    cell = single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))
    f = cell.save(tmp_path / "cells" / "cell.yaml")
    picked = dataclasses.replace(cell, meta={"derivation": {"method": "perturbation"}})
    pruned = dataclasses.replace(cell, meta={"derivation": {"method": "pruning"}})
    scored = dataclasses.replace(
        cell, meta={"derivation": {"method": "oneshot", "candidates": 1452}}
    )
    again = [{"hash": "a", "top1": 0.5, "trials": [0.5] * 3}] * 2
    filtered = dataclasses.replace(
        cell, meta={"derivation": {"method": "oneshot", "candidates": 1452, "retrained": again}}
    )
    texts = [
        write_differentiable_report(
            tmp_path / f"{i}.md", _ctx(tmp_path), {"Mixed_4b": c}, [f], {"top1": 0.5}, {}, 1, 1
        ).read_text()
        for i, c in enumerate((cell, picked, pruned, scored, filtered))
    ]
    assert "and the best is the derived cell;" in texts[3]
    assert "the 2 best were trained from scratch with 3 fresh seeds each" in texts[4]
    assert "each of the space's 1,452 cells with 1 op was scored by the weights it" in texts[3]
    assert "α = 1" not in texts[3]
    assert "(pruning selection; the sink pruned one node at a time" in texts[2]
    assert "(perturbation selection, `attnas" in texts[1]
    assert "Derived from the learned connection weights with α = 1" in texts[0]
    assert "Derived from the learned connection weights" not in texts[1]
    assert "ranked not by its connection weight but by how much the trained network's" in texts[1]
