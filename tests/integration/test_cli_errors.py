"""The CLIs fail fast and clearly: a malformed override names the key (Hydra's message), a
malformed space file names the file and the key (one line, no traceback, exit status 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def test_misspelled_override_names_the_key(tmp_path: Path) -> None:
    proc = _cli(
        "attnas.cli.search",
        "experiment=smoke",
        "searcher.alpah=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Could not override 'searcher.alpah'" in proc.stderr
    assert "Key 'alpah' not in 'DifferentiableSearcherConf'" in proc.stderr
    assert not (tmp_path / "run").exists()  # failed at composition: nothing was written


def test_malformed_space_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad_space.yaml"
    bad.write_text(
        "schema_version: 1\nname: bad\nnum_ops: 2\n"
        "op_types:\n  map: {dims: [spatial], activations: [softmax], colour: red}\n"
    )
    proc = _cli(
        "attnas.cli.search",
        "experiment=smoke",
        f"space.file={bad}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    error = [ln for ln in lines if ln.startswith("attnas-search: error:")]
    assert len(error) == 1, proc.stderr
    assert str(bad) in error[0] and "op_types.map" in error[0] and "colour" in error[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_data_path_is_named(tmp_path: Path) -> None:
    proc = _cli(
        "attnas.cli.search",
        "experiment=kinetics600_i3d_gpb",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "data.train_kwargs.csv_path" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_with_a_missing_cell_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    proc = _cli(
        "attnas.cli.train", f"cell={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert f"{missing}: cell file not found" in proc.stderr and "Traceback" not in proc.stderr
