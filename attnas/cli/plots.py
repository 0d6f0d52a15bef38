"""Plots of the command lines' reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_progress(trials: Sequence[Mapping[str, Any]], path: Path, name: str) -> Path | None:
    """Each completed trial's top-1 and the best so far, by trial id; None without any."""
    done = [(t["trial_id"], t["metrics"].get("top1")) for t in trials if t["state"] == "completed"]
    done = [(i, v) for i, v in done if isinstance(v, (int, float))]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [i for i, _ in done]
    vals = [100 * v for _, v in done]
    best = [max(vals[: k + 1]) for k in range(len(vals))]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ids, vals, "o", label="trial top-1")
    ax.step(ids, best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"{name} search")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
