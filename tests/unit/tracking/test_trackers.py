"""Trackers: JSONL contents, build_tracker kinds, wandb offline run folder, lazy wandb import."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnas.tracking import (
    JsonlTracker,
    MultiTracker,
    NullTracker,
    build_tracker,
    read_jsonl,
)


def test_jsonl_records_config_once_metrics_and_summary(tmp_path: Path) -> None:
    tracker = build_tracker("none", tmp_path, {"lr": 0.1, "shape": (3, 8)})
    assert isinstance(tracker, JsonlTracker)
    tracker.log_metrics({"loss": 2.5, "acc": 0.25}, step=4)
    tracker.log_metrics({"loss": float("nan")}, step=8)
    tracker.finish({"top1": 0.75})
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["type"] for r in records] == ["config", "metrics", "metrics", "summary"]
    assert records[0]["config"] == {"lr": 0.1, "shape": [3, 8]}
    assert (records[1]["step"], records[1]["loss"], records[1]["acc"]) == (4, 2.5, 0.25)
    assert records[2]["loss"] == "nan"  # non-finite floats stay valid JSON
    assert records[3]["top1"] == 0.75


def test_build_tracker_kinds_and_errors(tmp_path: Path) -> None:
    assert isinstance(build_tracker("none", None), NullTracker)
    assert isinstance(build_tracker("jsonl", tmp_path, jsonl=False), JsonlTracker)
    assert isinstance(build_tracker("none", tmp_path, jsonl=False), NullTracker)
    with pytest.raises(ValueError, match=r"unknown tracker kind\(s\) \['tensorboard'\]"):
        build_tracker("tensorboard", tmp_path)


def test_multi_tracker_fans_out(tmp_path: Path) -> None:
    a, b = JsonlTracker(tmp_path / "a.jsonl"), JsonlTracker(tmp_path / "b.jsonl")
    multi = MultiTracker([a, b])
    multi.log_config({"x": 1})
    multi.log_metrics({"m": 3.0}, step=1)
    multi.finish()
    for name in ("a.jsonl", "b.jsonl"):
        assert [r["type"] for r in read_jsonl(tmp_path / name)] == ["config", "metrics", "summary"]


def test_wandb_offline_run_folder_holds_logged_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run_dir = tmp_path / "run"
    tracker = build_tracker("wandb", run_dir, {"lr": 0.125}, name="unit")
    assert isinstance(tracker, MultiTracker)  # JSONL + wandb
    tracker.log_metrics({"train_loss": 0.3333333333333333}, step=1)
    tracker.log_metrics({"train_loss": 0.25}, step=2)
    tracker.finish({"top1": 0.875})
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("run-*.wandb")
    # History items are stored as (key, JSON value) protobuf fields in the offline log. wandb's
    # service process writes it: once in a fresh-clone CI run the file held only its header
    # right after finish() returned, so the test waits (up to 30 s) for the records to land.
    expected = (b"train_loss", b"0.3333333333333333", b"0.25", b"top1", b"0.875", b"lr", b"0.125")
    deadline = time.monotonic() + 30
    data = log.read_bytes()
    while not all(x in data for x in expected) and time.monotonic() < deadline:
        time.sleep(0.2)
        data = log.read_bytes()
    assert b"train_loss" in data and b"0.3333333333333333" in data and b"0.25" in data
    assert b"top1" in data and b"0.875" in data
    assert b"lr" in data and b"0.125" in data
    assert [r["type"] for r in read_jsonl(run_dir / "metrics.jsonl")][-1] == "summary"


def test_importing_tracking_and_train_does_not_import_wandb() -> None:
    code = "import sys, attnas.tracking, attnas.train; print('wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
