"""The oracle files (outputs of the authors' code) live in the repository, so the checks against
them run in a plain clone: nothing under ``../shared`` is needed and none of them skips."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLES = ROOT / "tests" / "data" / "oracles"
NAMES = (
    "bat_video_block_T4_H8_s4_ts2_k4_tk2.pt",
    "nl_pytorchvideo_softmax_pool122.pt",
    "rsa_VplusR_VplusR.pt",
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_oracle_copies_are_in_the_repository() -> None:
    for name in NAMES:
        assert (ORACLES / name).is_file(), name
    assert sum((ORACLES / n).stat().st_size for n in NAMES) < 600_000  # about 430 KB


def test_oracle_copies_equal_the_shared_originals(shared_dir: Path) -> None:
    for name in NAMES:
        assert _sha256(ORACLES / name) == _sha256(shared_dir / "oracles" / name), name


def test_oracle_tests_run_in_a_clone_without_shared(tmp_path: Path) -> None:
    """A clone at a path with no ``../shared`` next to it: the non-local oracle tests pass."""
    clone = tmp_path / "clone" / "repo"
    (clone / "tests" / "unit" / "interop").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", clone)
    shutil.copy(ROOT / "tests" / "conftest.py", clone / "tests")
    shutil.copytree(ORACLES, clone / "tests" / "data" / "oracles")
    test = "tests/unit/interop/test_nonlocal_oracle.py"
    shutil.copy(ROOT / test, clone / test)
    assert not (clone.parent / "shared").exists()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=clone, env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "skipped" not in out.stdout, out.stdout
    assert " passed" in out.stdout, out.stdout
