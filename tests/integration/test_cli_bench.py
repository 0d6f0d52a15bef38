"""``attnas-bench`` on the tiny config: the table has the documented columns, a second run
resumes without retraining anything, and bad input is one line with exit status 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnas.benchmark import COLUMNS, load

REPO = Path(__file__).resolve().parents[2]


def _bench(*overrides: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "attnas.cli.bench", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_tiny_build_has_the_documented_columns_and_resumes(tmp_path: Path):
    args = ("benchmark=tiny", f"work_dir={tmp_path / 'work'}", f"out_root={tmp_path / 'out'}")
    first = _bench(*args, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    folder = tmp_path / "out" / "tiny"
    with (folder / "table.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        assert tuple(reader.fieldnames) == COLUMNS
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("protocol", "space", "code_commit", "machine", "seconds_spent", "complete"):
        assert key in manifest
    assert manifest["machine"]["torch"] and manifest["complete"] is True
    assert manifest["cells_done"] == manifest["cells_total"] == 4
    kinds = [r["kind"] for r in rows]
    assert kinds.count("backbone") == kinds.count("nonlocal") == 2
    # 4 cells x 2 seeds, and the first cell of the order has the extra seed too
    assert kinds.count("cell") == 4 * 2 + 1
    for r in rows:
        assert 0.0 <= float(r["val_top1"]) <= 1.0
        assert len(r["val_top1_epochs"].split(";")) == 2
        assert float(r["val_top1_epochs"].split(";")[-1]) == float(r["val_top1"])
    bench = load(str(folder))
    assert len(bench) == 4 and bench.space.num_ops == 2
    assert all(len(bench.values(c)) in (2, 3) for c in bench.cells())

    again = _bench(*args, cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    with (folder / "table.csv").open() as fh:
        assert list(csv.DictReader(fh)) == rows  # nothing was trained again
    assert "imported" not in again.stderr
    assert len(list((tmp_path / "work" / "trials").iterdir())) == 4

    # a fresh clone has the exported table but no run directory: the build continues from it
    import shutil

    weights = [p.name for p in folder.glob("pretrained_*.pt")]
    assert len(weights) == 1  # the rows' pre-trained weights travel with the table
    shutil.rmtree(tmp_path / "work")
    fresh = _bench(*args, cwd=REPO)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert not (tmp_path / "work" / "trials").exists()  # nothing was trained
    with (folder / "table.csv").open() as fh:
        assert list(csv.DictReader(fh)) == rows

    # a count recorded wrong (e.g. by a counter since fixed) is recounted and re-exported
    from attnas.dispatch import TrialStore

    with TrialStore.open(tmp_path / "work") as store:
        record = store.trials("completed")[0]
        seeds = [{**r, "flops": 1} for r in record.metrics["seeds"]]
        store.amend_metrics(record.trial_id, {**record.metrics, "seeds": seeds})
    recount = _bench(*args, "recount_cost=true", cwd=REPO)
    assert recount.returncode == 0, recount.stderr[-2000:]
    assert "1 corrected" in recount.stdout
    with (folder / "table.csv").open() as fh:
        assert list(csv.DictReader(fh)) == rows


def test_unknown_key_and_missing_build_are_one_line_errors(tmp_path: Path):
    bad = _bench("benchmark=tiny", "+benchmark.epochz=3", f"work_dir={tmp_path}", cwd=REPO)
    assert bad.returncode == 2
    assert "epochz" in bad.stderr and "Traceback" not in bad.stderr
    missing = _bench(
        "benchmark=tiny", "export_only=true", f"work_dir={tmp_path / 'none'}", cwd=REPO
    )
    assert missing.returncode == 2
    assert "nothing to export" in missing.stderr and "Traceback" not in missing.stderr
