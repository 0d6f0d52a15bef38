"""End to end: ``attnas-search experiment=smoke searcher=<each>`` in a temporary directory, then
``attnas-derive`` on the differentiable run and ``attnas-train`` with the derived cell (slow:
each search trains small networks; about a minute per searcher on 2 idle cores)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from attnas.space import CellSpec

pytestmark = pytest.mark.slow


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "WANDB_MODE": "disabled",
        },
    )
    print(f"{module} {' '.join(args)}: {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def differentiable_run(workdir: Path) -> Path:
    run = workdir / "differentiable"
    proc = _cli(
        "attnas.cli.search",
        "experiment=smoke",
        "searcher=differentiable",
        f"hydra.run.dir={run}",
        cwd=workdir,
    )
    assert f"run directory: {run}" in proc.stdout
    return run


def _common_checks(run: Path, searcher: str) -> str:
    assert (run / ".hydra" / "config.yaml").is_file()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["searcher"]["name"] == searcher and cfg["budget"] == 4
    report = (run / "report.md").read_text()
    assert "## What was searched" in report and "290,304 cells" in report
    assert "## How to reuse the cell" in report
    return report


def test_differentiable_smoke_run_directory(differentiable_run: Path) -> None:
    run = differentiable_run
    report = _common_checks(run, "differentiable")
    assert (run / "search" / "checkpoints" / "last.pt").is_file()
    cell = CellSpec.load(run / "cells" / "cell.yaml")
    assert (run / "cells" / "cell.png").stat().st_size > 1000
    assert cell.hash() in report and cell.describe().splitlines()[0] in report
    results = {
        k: json.loads((run / "retrain" / k / "result.json").read_text())
        for k in ("derived", "none", "nonlocal")
    }
    for label, key in [
        ("backbone alone", "none"),
        ("+ non-local blocks", "nonlocal"),
        ("+ derived cell", "derived"),
    ]:
        row = next(ln for ln in report.splitlines() if ln.startswith(f"| {label} |"))
        assert f"{100 * results[key]['top1']:.2f}" in row
        assert f"{results[key]['num_parameters'] / 1e6:.3f}" in row
    assert results["nonlocal"]["num_parameters"] > results["none"]["num_parameters"]
    assert str(run / "cells" / "cell.yaml") in report  # the Python snippet's real path
    # the collapse monitor reads the run's telemetry: one epoch, so stability is unknown
    assert "## Did the search decide? (collapse monitor)" in report
    assert "only one epoch was recorded" in report


@pytest.mark.parametrize("searcher", ["gpb", "random", "evolution"])
def test_bandit_smoke_run_directory(workdir: Path, searcher: str) -> None:
    run = workdir / searcher
    proc = _cli(
        "attnas.cli.search",
        "experiment=smoke",
        f"searcher={searcher}",
        f"hydra.run.dir={run}",
        cwd=workdir,
    )
    report = _common_checks(run, searcher)
    with sqlite3.connect(run / "trials.sqlite") as db:
        states = [s for (s,) in db.execute("SELECT state FROM trials ORDER BY id")]
        rows = db.execute("SELECT id, metrics FROM trials WHERE state='completed'").fetchall()
    assert states == ["completed"] * 4
    best_id, best = max(((i, json.loads(m)) for i, m in rows), key=lambda r: (r[1]["top1"], -r[0]))
    best_cell = CellSpec.load(run / "cells" / "best.yaml")
    assert best_cell.meta["search"]["trial_id"] == best_id
    assert f"the best of 4 completed trials, trial {best_id}," in report
    assert best_cell.hash() in report
    assert f"{100 * best['top1']:.2f}" in report
    assert (run / "plots" / "best_so_far.png").stat().st_size > 1000
    assert sum(ln.startswith("| ") and "completed" in ln for ln in report.splitlines()) >= 4
    assert f"run directory: {run}" in proc.stdout


def test_resume_of_a_finished_bandit_search_runs_nothing_more(workdir: Path) -> None:
    run = workdir / "random"
    if not (run / "trials.sqlite").is_file():
        pytest.skip("needs the random smoke run")
    proc = _cli(
        "attnas.cli.search",
        "experiment=smoke",
        "searcher=random",
        "resume=true",
        f"hydra.run.dir={run}",
        cwd=workdir,
    )
    assert "4 completed, 0 failed" in proc.stdout and "(resumed)" in proc.stdout


def test_derive_and_train_with_the_derived_cell(differentiable_run: Path, workdir: Path) -> None:
    run = differentiable_run
    _cli("attnas.cli.derive", f"run_dir={run}", "alpha=2", "beta=1", cwd=workdir)
    out = run / "derived_a2_b1"
    cell = CellSpec.load(out / "cell.yaml")
    assert cell.meta["derivation"]["alpha"] == 2 and len(cell.outputs) == 2
    assert (out / "cell.png").is_file() and (out / "cell.weights.json").is_file()
    # the checkpoint gives the same cell as the exported weights
    _cli(
        "attnas.cli.derive",
        f"run_dir={run}",
        "alpha=2",
        "beta=1",
        "source=checkpoint",
        f"out_dir={run / 'from_ckpt'}",
        cwd=workdir,
    )
    assert CellSpec.load(run / "from_ckpt" / "cell.yaml").canonical() == cell.canonical()

    train_dir = workdir / "train"
    proc = _cli(
        "attnas.cli.train",
        f"cell={out / 'cell.yaml'}",
        "trainer.epochs=1",
        "data.train_kwargs.num_clips=64",
        "data.val_kwargs.num_clips=32",
        f"hydra.run.dir={train_dir}",
        cwd=workdir,
    )
    result = json.loads((train_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["num_parameters"] > 0
    assert f"top-1 {100 * result['top1']:.2f}%" in proc.stdout
    assert (train_dir / "report.md").is_file() and (train_dir / "config.yaml").is_file()
