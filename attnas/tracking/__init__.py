"""Experiment tracking behind one small interface: JSONL always, wandb (offline by default), none.

``build_tracker(kind, run_dir, config)`` returns a ``Tracker`` (``log_config`` / ``log_metrics``
/ ``finish``). Only this package imports wandb, and only when a wandb tracker is built, so the
rest of the framework (and the GP controller's process) never pays for it.

Design choices where the spec is silent:

- ``kind="none"`` means *no external service*: when there is a run directory the JSONL file is
  still written, because it is the run's own record (``jsonl=False`` turns it off as well).
- ``metrics.jsonl`` holds one JSON object per line with a ``"type"`` field: one ``"config"``
  line (the resolved config, logged once), ``"metrics"`` lines (``step`` plus the values) and a
  final ``"summary"`` line written by ``finish``.
- wandb runs in offline mode unless ``WANDB_MODE`` says otherwise, never asks for an account,
  and writes under ``<run_dir>/wandb`` unless ``WANDB_DIR`` is set.
"""

from __future__ import annotations

from attnas.tracking.base import MultiTracker, NullTracker, Tracker, build_tracker
from attnas.tracking.jsonl import JsonlTracker, read_jsonl
from attnas.tracking.wandb_tracker import WandbTracker

__all__ = [
    "JsonlTracker",
    "MultiTracker",
    "NullTracker",
    "Tracker",
    "WandbTracker",
    "build_tracker",
    "read_jsonl",
]
