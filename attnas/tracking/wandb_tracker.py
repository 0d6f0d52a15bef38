"""``WandbTracker``: Weights & Biases, offline unless ``WANDB_MODE`` says otherwise.

wandb is imported inside the constructor, so importing ``attnas.tracking`` costs nothing. The
mode comes from ``WANDB_MODE`` when set (``online``, ``offline``, ``disabled``), else
``offline``: a run never needs an account or a network, and ``wandb sync`` uploads it later.
Files go to ``WANDB_DIR`` when set, else the run directory, so wandb's ``wandb/offline-run-*``
folder sits next to the run's other outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class WandbTracker:
    """Logs to a wandb run (offline by default).

    Args:
        run_dir: Run directory; wandb writes ``<run_dir>/wandb/`` (``WANDB_DIR`` wins if set).
        project: wandb project.
        name: Run name (default: the run directory's name).
        group: Run group.
        tags: Run tags.
        mode: ``"offline"``, ``"online"`` or ``"disabled"``; None reads ``WANDB_MODE``
            (default ``"offline"``).

    Attributes:
        run: The ``wandb`` run object.
        run_path: The local folder of the wandb run (``.../wandb/offline-run-*``).
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        *,
        project: str = "attnas",
        name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        mode: str | None = None,
    ) -> None:
        import wandb

        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        directory = os.environ.get("WANDB_DIR") or (None if run_dir is None else str(run_dir))
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        if name is None and run_dir is not None:
            name = Path(run_dir).name
        self.run = wandb.init(
            project=project,
            name=name,
            group=group,
            tags=list(tags) or None,
            dir=directory,
            mode=mode,  # type: ignore[arg-type]
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run_path = Path(self.run.dir).parent if mode != "disabled" else None

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Set the run's config (once)."""
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log numeric metrics at ``step``."""
        self.run.log(dict(metrics), step=int(step))

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write summary values and close the run. wandb's service process writes the offline
        files; on a busy machine their last records can land just after this returns."""
        if summary:
            for key, value in summary.items():
                self.run.summary[key] = value
        self.run.finish()
