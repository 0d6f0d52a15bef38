"""``JsonlTracker``: one JSON object per line in ``metrics.jsonl``, flushed at every write.

Lines are appended, so a resumed run continues the same file; every line is flushed so that a
killed run keeps what it logged. Values that JSON cannot hold (tensors, numpy scalars, paths)
are converted: 0-d tensors and numpy scalars to numbers, other objects to ``str``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """A JSON-serialisable version of ``value`` (non-finite floats become strings)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _plain(item())
    return str(value)


class JsonlTracker:
    """Appends config, metrics and summary records to a JSONL file.

    Args:
        path: The file (parent folders are created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._file.closed:
            raise RuntimeError(f"JsonlTracker for {self.path} was already finished")
        self._file.write(json.dumps(_plain(record), sort_keys=False) + "\n")
        self._file.flush()

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Write the ``{"type": "config", "config": ...}`` line."""
        self._write({"type": "config", "time": time.time(), "config": config})

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Write a ``{"type": "metrics", "step": step, ...metrics}`` line."""
        self._write({"type": "metrics", "step": int(step), "time": time.time(), **metrics})

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write the ``{"type": "summary", ...}`` line and close the file."""
        if self._file.closed:
            return
        self._write({"type": "summary", "time": time.time(), **(summary or {})})
        self._file.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file, in order.

    Args:
        path: The file.

    Returns:
        One dict per line.
    """
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
