"""``attnas-train``: train and evaluate a backbone with a cell inserted (or a baseline).

``cell=none`` trains the backbone alone, ``cell=nonlocal`` inserts non-local blocks, a cell file
inserts that cell at the backbone's positions, and a cell-set file (``cells/cells.yaml`` of a
position-specific search) inserts each of its cells at its own position. Top-1/top-5 (n/a with 5
or fewer classes), parameters and FLOPs are printed and written to ``result.json`` and
``report.md`` in the run directory. A multirun (``-m cell=none,nonlocal,<file>``) also writes
``comparison.md`` in the sweep directory (the ``ComparisonTable`` callback).

Reads top to bottom: check the cell file, convert the config, open the run directory
(``attnas.cli.rundir``: an existing run is refused unless ``resume=true``, which continues from
its last checkpoint with the same settings), train, write the result and the report. Exit
status: 0 when the run completed, 1 when it failed (one line naming the cause), 2 for a user
error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnas.cli import CONFIG_DIR, schema
from attnas.cli.errors import RunFailed, convert, first_line, run_cli
from attnas.cli.report import (
    UNCERTAINTY_NOTE,
    ResultRow,
    comparison_table,
    noise_lines,
    top1_words,
    write_train_report,
)
from attnas.cli.rundir import RunDir, hydra_files
from attnas.cli.search import apply_tracking_env


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _check_cell(cell: str) -> str:
    """``none``/``nonlocal``, or the resolved path of a valid cell or cell-set file."""
    if cell in ("none", "nonlocal"):
        return cell
    from attnas.cells import CellSet, is_cell_set
    from attnas.space import CellSpec

    if is_cell_set(cell):
        CellSet.load(cell)  # a missing or malformed cell of the set fails here, naming it
    else:
        CellSpec.load(cell)  # a missing or malformed file fails here, naming it
    return str(Path(cell).resolve())


def run_train_config(
    cfg: Any, run_dir: Path, hydra: dict[str, str] | None = None
) -> dict[str, Any]:
    """Train and evaluate the backbone with ``cfg.cell`` inserted; write result and report.

    Raises:
        RunFailed: the training run failed (after ``result.json`` and ``report.md`` are written).
    """
    from attnas.train import run_trial

    apply_tracking_env(cfg)
    cell = _check_cell(str(cfg.cell))
    spec = convert(
        "config",
        lambda: schema.to_trial_spec(
            cfg,
            cell=cell,
            op_channel_ratio=float(cfg.op_channel_ratio),
            run_dir=str(run_dir),
            resume=bool(cfg.resume),
            name=cfg.name or Path(cell).stem,
        ),
    )
    from attnas.cells import CellSet, is_cell_set

    if cell not in ("none", "nonlocal") and is_cell_set(cell):  # each cell at its own position
        spec = spec.replace(positions=tuple(CellSet.load(cell).positions))
    RunDir.open(
        run_dir,
        "attnas-train",
        cfg,
        resume=bool(cfg.resume),
        fingerprint=schema.plain(cfg),
        hydra_files=hydra,
    )
    result = run_trial(spec).to_dict()
    write_train_report(
        run_dir / "report.md",
        f"attnas-train: {Path(cell).name}",
        cell,
        result,
        result.get("num_classes"),
    )
    if result["status"] != "completed":
        raise RunFailed(f"training failed: {first_line(result.get('error'))} (see {run_dir})")
    return result


def _train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run_cli("attnas-train", lambda: run_train_config(cfg, run_dir, hydra_files()))
    row = ResultRow.from_result(str(cfg.cell), result)
    print(
        f"attnas-train {cfg.cell} on {cfg.backbone.name}/{cfg.data.name}: {result['status']}, "
        f"top-1 {top1_words(row)}, top-5 {_fmt(row.top5)}, "
        f"params {result.get('num_parameters')}, FLOPs {result.get('flops')}"
    )
    for split, kinds in (result.get("data_report") or {}).items():
        for kind, files in kinds.items():
            print(f"  data: {split}: {len(files)} video(s) {kind.replace('_', ' ')}")
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
        body = [comparison_table(rows, reference="none"), "", UNCERTAINTY_NOTE, ""]
        text = "# attnas-train comparison\n\n" + "\n".join([*body, *noise_lines(rows)])
        (sweep / "comparison.md").write_text(text)
        print(f"\n{text}\nwritten to {sweep / 'comparison.md'}")


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-train`` (see ``conf/train.yaml``)."""
    _train(cfg)


if __name__ == "__main__":
    main()
