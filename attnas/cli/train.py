"""``attnas-train``: train and evaluate a backbone with a cell inserted (or a baseline).

``cell=none`` trains the backbone alone, ``cell=nonlocal`` inserts non-local blocks, and a path
inserts that cell file at the backbone's positions. Top-1/top-5, parameters and FLOPs are
printed and written to ``result.json`` and ``report.md`` in the run directory. A multirun
(``-m cell=none,nonlocal,<file>``) also writes ``comparison.md`` in the sweep directory (the
``ComparisonTable`` callback), so every comparison table is one command away.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnas.cli import CONFIG_DIR
from attnas.cli import schema as _schema  # noqa: F401  (registers the schemas)
from attnas.cli.report import ResultRow, comparison_table
from attnas.cli.runners import run_cli, run_train_config


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run_cli("attnas-train", lambda: run_train_config(cfg, run_dir))
    print(
        f"attnas-train {cfg.cell} on {cfg.backbone.name}/{cfg.data.name}: {result['status']}, "
        f"top-1 {_fmt(result.get('top1'))}, top-5 {_fmt(result.get('top5'))}, "
        f"params {result.get('num_parameters')}, FLOPs {result.get('flops')}"
    )
    if result["status"] != "completed":
        print(result.get("error", ""))
    print(f"  run directory: {run_dir}")
    return result


class ComparisonTable(Callback):
    """Hydra callback: after a multirun, tabulate every job's ``result.json`` in
    ``<sweep dir>/comparison.md``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        rows = []
        for result_file in sorted(sweep.glob("*/result.json"), key=lambda p: p.parent.name):
            cfg_file = result_file.parent / "config.yaml"
            label = result_file.parent.name
            if cfg_file.is_file():
                import yaml

                label = str((yaml.safe_load(cfg_file.read_text()) or {}).get("cell", label))
            rows.append(ResultRow.from_result(label, json.loads(result_file.read_text())))
        if not rows:
            return
        text = "# attnas-train comparison\n\n" + comparison_table(rows, reference="none") + "\n"
        (sweep / "comparison.md").write_text(text)
        print(f"\n{text}\nwritten to {sweep / 'comparison.md'}")


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-train`` (see ``conf/train.yaml``)."""
    _train(cfg)


if __name__ == "__main__":
    main()
