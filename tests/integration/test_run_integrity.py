"""Run integrity through the command lines (issue 16): no silent wrong result, a run record that
can be trusted, exit codes that tell the truth. Each test names the item it covers.

The unmarked tests fail before any training starts (a few seconds each: the interpreter start);
the ``slow`` ones train tiny networks (16 clips, one epoch)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled"}
TINY = ["data.train_kwargs.num_clips=16", "data.val_kwargs.num_clips=8", "tracking=none"]
BANDIT = ["experiment=smoke", "searcher=random", "dispatch.workers=1", *TINY]
DIFF = [
    "experiment=smoke",
    "searcher=differentiable",
    "searcher.position_specific=true",
    "backbone.positions=[Mixed_4b,Mixed_4c]",
    *TINY,
]


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**ENV, "HOME": str(cwd), "TMPDIR": str(cwd / "tmp")},
    )


def _error_line(proc: subprocess.CompletedProcess[str], prog: str) -> str:
    """The one ``<prog>: error:`` line of a failed command (and no traceback)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def _snapshot(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _encode(path: Path, num_frames: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for k in range(num_frames):
            img = np.full((32, 32, 3), 10 * k, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))


def _videos(root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        for i in range(n):
            _encode(root / name / f"{name}{i}.mp4")
    return root


def _train_args(train: Path, val: Path, run: Path) -> list[str]:
    return [
        "data=video_folder",
        f"data.train_kwargs.root={train}",
        f"data.val_kwargs.root={val}",
        "data.kwargs.num_frames=4",
        "data.kwargs.size=32",
        "backbone=r3d_tiny",
        "trainer.epochs=1",
        "trainer.batch_size=2",
        "trainer.device=cpu",
        "tracking=none",
        f"hydra.run.dir={run}",
    ]


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "tmp").mkdir()
    return tmp_path


# ------------------------------------------------------------------ fast: refused before training
def test_item1_a_val_class_unknown_to_training_is_an_error(cwd: Path) -> None:
    """It was renumbered (val 'jack' got label 0 = 'bend') and reported top-1 100 %."""
    train = _videos(cwd / "train", {"bend": 1, "jack": 1})
    val = _videos(cwd / "val", {"jack": 1, "skip": 1})
    proc = _cli("attnas.cli.train", *_train_args(train, val, cwd / "run"), cwd=cwd)
    assert proc.returncode == 1
    line = _error_line(proc, "attnas-train")
    assert "['skip'] are not among the classes ['bend', 'jack']" in line


def test_item2_a_training_class_without_a_readable_video_is_an_error(cwd: Path) -> None:
    train = _videos(cwd / "train", {"bend": 1, "jack": 1})
    (train / "wave").mkdir()
    (train / "wave" / "w0.mp4").write_bytes(b"corrupt")
    proc = _cli("attnas.cli.train", *_train_args(train, train, cwd / "run"), cwd=cwd)
    assert proc.returncode == 1
    assert "['wave'] have no readable training video" in _error_line(proc, "attnas-train")


def test_item6_resume_of_a_missing_run_is_an_error(cwd: Path) -> None:
    """It started a fresh search in a new directory (84 s of training)."""
    run = cwd / "nothing_here"
    proc = _cli("attnas.cli.search", *BANDIT, "resume=true", f"hydra.run.dir={run}", cwd=cwd)
    assert proc.returncode == 2
    assert f"nothing to resume at {run}" in _error_line(proc, "attnas-search")
    assert not run.exists()


def test_item8_failures_exit_nonzero_with_one_line(cwd: Path) -> None:
    """A missing data root printed 'failed' and a traceback with exit 0; derive created the
    mistyped run directory."""
    missing = cwd / "no_such_root"
    proc = _cli("attnas.cli.train", *_train_args(missing, missing, cwd / "run"), cwd=cwd)
    assert proc.returncode == 1
    assert f"video folder {missing} does not exist" in _error_line(proc, "attnas-train")
    typo = cwd / "typo"
    proc = _cli("attnas.cli.derive", f"run_dir={typo}", cwd=cwd)
    assert proc.returncode == 2
    assert f"run_dir {typo} is not a directory" in _error_line(proc, "attnas-derive")
    assert not typo.exists()


def test_item4_a_config_error_leaves_no_run_behind(cwd: Path) -> None:
    """Conversions happen before the run directory is written: fixing the typo then works."""
    run = cwd / "run"
    proc = _cli("attnas.cli.search", *BANDIT, "trainer.optimizer=adamm", f"hydra.run.dir={run}",
                cwd=cwd)  # fmt: skip
    assert proc.returncode == 2
    assert "adamm" in _error_line(proc, "attnas-search")
    assert not (run / "run.json").exists() and not (run / "config.yaml").exists()


# ------------------------------------------------------------------ slow: tiny real runs
@pytest.mark.slow
def test_item2_data_failures_and_padding_are_counted_and_reported(cwd: Path) -> None:
    """Corrupt files were only in worker.log; result.json said data_failures: []."""
    train = _videos(cwd / "train", {"bend": 2, "jack": 2})
    (train / "jack" / "broken.mp4").write_bytes(b"corrupt")
    _encode(train / "bend" / "short.mp4", num_frames=3)  # a 4-frame clip spans 7 frames
    run = cwd / "run"
    proc = _cli("attnas.cli.train", *_train_args(train, train, run), cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    broken, short = str(train / "jack" / "broken.mp4"), str(train / "bend" / "short.mp4")
    assert any(line.startswith(f"train unreadable: {broken}") for line in result["data_failures"])
    assert result["data_report"]["train"]["unreadable"].keys() == {broken}
    assert result["data_report"]["train"]["padded"] == {short: 3}
    report = (run / "report.md").read_text()
    assert "## Data problems" in report
    assert "| train | unreadable (dropped) | 1 | `broken.mp4` |" in report
    assert "| train | shorter than a clip (last frame repeated) | 1 | `short.mp4` |" in report
    assert "data: train: 1 video(s) unreadable" in proc.stdout


@pytest.mark.slow
def test_items8_9_10_a_systematic_failure_stops_the_search(cwd: Path) -> None:
    """'0 completed, 4 failed' exited 0 after spending the budget; ``experiment=smoke
    data=video_folder`` failed on the preset's options. Now the preset composes, the first 2
    identical failures stop the search, and the exit status is 1 with the error named."""
    missing = cwd / "no_videos"
    args = [
        "experiment=smoke",
        "searcher=random",
        "data=video_folder",
        f"data.train_kwargs.root={missing}",
        f"data.val_kwargs.root={missing}",
        "dispatch.workers=1",
        "tracking=none",
    ]
    run = cwd / "run"
    proc = _cli("attnas.cli.search", *args, "budget=6", "dispatch.fail_fast=2",
                f"hydra.run.dir={run}", cwd=cwd)  # fmt: skip
    assert proc.returncode == 1
    line = _error_line(proc, "attnas-search")
    assert "the first 2 trials all failed with the same error" in line
    assert f"video folder {missing} does not exist" in line
    assert len([r for r in (run / "trials").iterdir()]) <= 2
    # without fail-fast: the budget is spent, and the errors are grouped
    run2 = cwd / "run2"
    proc = _cli("attnas.cli.search", *args, "budget=2", "dispatch.fail_fast=0",
                f"hydra.run.dir={run2}", cwd=cwd)  # fmt: skip
    assert proc.returncode == 1
    line = _error_line(proc, "attnas-search")
    assert "no trial completed (2 failed: 2 × FileNotFoundError: video folder" in line
    assert "Why trials failed (grouped by message):" in (run2 / "report.md").read_text()


@pytest.fixture(scope="module")
def bandit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("bandit")
    (cwd / "tmp").mkdir()
    run = cwd / "run"
    proc = _cli("attnas.cli.search", *BANDIT, "budget=1", f"hydra.run.dir={run}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.slow
def test_items3_4_a_refused_resume_names_the_keys_and_changes_nothing(bandit_run: Path) -> None:
    """Resuming with another trainer.lr or data.* was accepted; a refused resume rewrote
    config.yaml and .hydra/config.yaml first."""
    run, cwd = bandit_run, bandit_run.parent
    before = _snapshot(run)
    assert {".hydra/config.yaml", "config.yaml", "run.json"} <= before.keys()
    for change, shown in [
        ("trainer.lr=0.5", "trainer.lr: 0.002 -> 0.5"),
        ("data.train_kwargs.num_clips=32", "data.train_kwargs.num_clips: 16 -> 32"),
        ("seed=1", "seed: 0 -> 1"),
        ("+space.overrides.num_ops=2", "space.overrides.num_ops: '<unset>' -> 2"),
    ]:
        proc = _cli("attnas.cli.search", *BANDIT, "budget=1", "resume=true", change,
                    f"hydra.run.dir={run}", cwd=cwd)  # fmt: skip
        assert proc.returncode == 2
        assert shown in _error_line(proc, "attnas-search")
        assert _snapshot(run) == before
    proc = _cli("attnas.cli.search", *BANDIT, "budget=1", f"hydra.run.dir={run}", cwd=cwd)
    assert "already holds a run; pass resume=true" in _error_line(proc, "attnas-search")
    assert _snapshot(run) == before


@pytest.mark.slow
def test_item7_13_growing_a_finished_search(bandit_run: Path) -> None:
    """``resume=true budget=<larger>`` adds trials; the report says which invocation ran which;
    the dispatcher's scratch files stay in the run directory (not attnas-dispatch-* in /tmp)."""
    run, cwd = bandit_run, bandit_run.parent
    proc = _cli("attnas.cli.search", *BANDIT, "budget=2", "resume=true", "dispatch.workers=2",
                f"hydra.run.dir={run}", cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 completed, 0 failed" in proc.stdout and "(resumed)" in proc.stdout
    record = json.loads((run / "run.json").read_text())
    assert [(i["budget"], i["first_trial"]) for i in record["invocations"]] == [(1, 1), (2, 2)]
    report = (run / "report.md").read_text()
    assert "budget 1): trials 1–1" in report and "budget 2): trials 2–2" in report
    assert "| 2 | 2 | completed |" in report
    assert not list((cwd / "tmp").glob("attnas-dispatch-*"))
    assert not (run / ".dispatch").exists()


@pytest.mark.slow
def test_issue15_the_top_cells_are_retrained_against_the_baselines(bandit_run: Path) -> None:
    """Issue 15: the best of N trials was set against single baseline runs. ``report.*`` may
    change on resume, so the comparison is added to the finished search."""
    run, cwd = bandit_run, bandit_run.parent
    proc = _cli("attnas.cli.search", *BANDIT, "budget=2", "resume=true", "report.baselines=true",
                "report.retrain_top=1", f"hydra.run.dir={run}", cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (run / "report.md").read_text()
    comparison = report.split("## Accuracy and cost")[1].split("## All trials")[0]
    assert "**Selection figure**: the best of 2 completed trials" in comparison
    rows = [ln for ln in comparison.splitlines() if ln.startswith("| ") and "---" not in ln]
    labels = [r.split("|")[1].strip() for r in rows[1:]]
    assert labels == [
        "backbone alone",
        "+ non-local blocks",
        "+ rank1 cell (retrained, fresh seed)",
    ]
    assert all("| n/a |" in r for r in rows[1:])  # 4 classes: top-5 carries no information
    best = yaml.safe_load((run / "cells" / "rank1.yaml").read_text())["meta"]["search"]
    retrained = next((run / "retrain").glob("*/result.json"))
    import sqlite3

    with sqlite3.connect(run / "trials.sqlite") as db:
        seeds = {s for (s,) in db.execute("SELECT seed FROM trials")}
    seed = json.loads(retrained.read_text())["seed"]
    assert seed not in seeds and best["trial_id"] in (1, 2)


@pytest.fixture(scope="module")
def diff_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("diff")
    (cwd / "tmp").mkdir()
    run = cwd / "run"
    proc = _cli("attnas.cli.search", *DIFF, f"hydra.run.dir={run}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.slow
def test_items3_5_a_differentiable_run_is_neither_overwritten_nor_resumed_otherwise(
    diff_run: Path,
) -> None:
    """Without resume=true it replaced last.pt, the cells and the report; resumed with seed=1
    it said 'Seed: 1' over a seed-0 checkpoint."""
    run, cwd = diff_run, diff_run.parent
    before = _snapshot(run)
    proc = _cli("attnas.cli.search", *DIFF, f"hydra.run.dir={run}", cwd=cwd)
    assert proc.returncode == 2
    assert "already holds a run" in _error_line(proc, "attnas-search")
    proc = _cli("attnas.cli.search", *DIFF, "resume=true", "seed=1", f"hydra.run.dir={run}",
                cwd=cwd)  # fmt: skip
    assert proc.returncode == 2
    assert "seed: 0 -> 1" in _error_line(proc, "attnas-search")
    assert _snapshot(run) == before


@pytest.mark.slow
def test_item11_a_position_specific_search_is_reused_as_found(diff_run: Path) -> None:
    """The report's command inserted cell_Mixed_4b.yaml at all five positions."""
    from attnas.backbones import build_backbone, insert_cells
    from attnas.cells import CellSet
    from attnas.space import CellSpec

    run, cwd = diff_run, diff_run.parent
    cells = run / "cells" / "cells.yaml"
    data = yaml.safe_load(cells.read_text())
    assert data == {
        "kind": "cell_set",
        "cells": {"Mixed_4b": "cell_Mixed_4b.yaml", "Mixed_4c": "cell_Mixed_4c.yaml"},
    }
    report = (run / "report.md").read_text()
    assert f"attnas-train -m cell=none,nonlocal,{cells} " in report
    assert "a derived cell's number of ops comes from α and β" in report  # item 13
    line = next(ln for ln in report.splitlines() if ln.startswith("One line (numbered"))
    first = CellSpec.load(run / "cells" / "cell_Mixed_4b.yaml")  # item 13: YAML numbering
    assert f"1: {first.ops[0].op.type}/{first.ops[0].op.dim}/" in line
    assert (run / "cells" / "cell_Mixed_4b.graph.png").is_file()  # item 13: the cell drawn
    out = cwd / "train_set"
    proc = _cli("attnas.cli.train", f"cell={cells}", *TINY, "trainer.epochs=1",
                f"hydra.run.dir={out}", cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    model = build_backbone("i3d_tiny", 4, (3, 8, 32, 32))
    insert_cells(model, None, CellSet.load(cells))
    assert list(model.inserted) == ["Mixed_4b", "Mixed_4c"]
    assert result["num_parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_item12_attnas_export_writes_a_program_that_runs(diff_run: Path) -> None:
    from attnas.export import load_exported

    run, cwd = diff_run, diff_run.parent
    import torch

    out = cwd / "export" / "model"
    proc = _cli("attnas.cli.export", f"cell={run / 'cells' / 'cells.yaml'}", "backbone=i3d_tiny",
                "num_classes=4", "input_shape=[3,8,32,32]", f"out={out}", cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    program = load_exported(out.with_suffix(".pt2"))
    assert program.module()(torch.randn(1, 3, 8, 32, 32)).shape == (1, 4)
    desc = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert desc["positions"] == ["Mixed_4b", "Mixed_4c"] and desc["input_shape"] == [
        1,
        3,
        8,
        32,
        32,
    ]
