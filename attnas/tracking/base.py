"""The ``Tracker`` protocol, the null and fan-out trackers, and ``build_tracker``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """Where a run's resolved config and metrics go.

    ``log_config`` is called once, before any metrics; ``log_metrics`` with a monotonically
    increasing ``step``; ``finish`` once at the end (with optional summary values).
    """

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def finish(self, summary: Mapping[str, Any] | None = None) -> None: ...


class NullTracker:
    """Discards everything (non-zero ranks of a distributed run, or tracking turned off)."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Ignore the config."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Ignore the metrics."""

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Nothing to close."""


class MultiTracker:
    """Sends every call to each of several trackers, in order.

    Args:
        trackers: The trackers to fan out to.
    """

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Log the config to every tracker."""
        for t in self.trackers:
            t.log_config(config)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the metrics to every tracker."""
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Finish every tracker."""
        for t in self.trackers:
            t.finish(summary)


_KINDS = ("jsonl", "wandb", "none")


def build_tracker(
    kind: str | Sequence[str],
    run_dir: str | Path | None,
    config: Mapping[str, Any] | None = None,
    *,
    jsonl: bool = True,
    project: str = "attnas",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
) -> Tracker:
    """Build the tracker(s) for a run and log its resolved config once.

    Args:
        kind: ``"jsonl"``, ``"wandb"``, ``"none"``, or a list of them.
        run_dir: The run directory (``metrics.jsonl`` and the ``wandb`` folder go there);
            ``None`` allows only ``"none"``/wandb-with-``WANDB_DIR``.
        config: The resolved config, logged once (skipped when None).
        jsonl: Also write ``<run_dir>/metrics.jsonl`` whatever ``kind`` says.
        project: wandb project name.
        name: wandb run name (default: the run directory's name).
        group: wandb group (e.g. the search a trial belongs to).
        tags: wandb tags.

    Returns:
        One tracker (a ``MultiTracker`` when several apply, a ``NullTracker`` when none does).

    Raises:
        ValueError: For an unknown kind (the message lists the known ones).
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown:
        raise ValueError(f"unknown tracker kind(s) {unknown}; known kinds: {list(_KINDS)}")
    want_jsonl = run_dir is not None and (jsonl or "jsonl" in kinds)
    trackers: list[Tracker] = []
    if want_jsonl:
        from attnas.tracking.jsonl import JsonlTracker

        trackers.append(JsonlTracker(Path(run_dir) / "metrics.jsonl"))  # type: ignore[arg-type]
    if "wandb" in kinds:
        from attnas.tracking.wandb_tracker import WandbTracker

        trackers.append(
            WandbTracker(run_dir, project=project, name=name, group=group, tags=tuple(tags))
        )
    tracker: Tracker
    if not trackers:
        tracker = NullTracker()
    elif len(trackers) == 1:
        tracker = trackers[0]
    else:
        tracker = MultiTracker(trackers)
    if config is not None:
        tracker.log_config(config)
    return tracker
