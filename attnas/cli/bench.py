"""``attnas-bench``: build (or resume building) a tabular benchmark and export it.

Reads top to bottom: compose ``conf/bench.yaml`` (the table's protocol, space and seeds come
from the ``benchmark`` group), convert it into ``attnas.benchmark.build.BuildConfig``, then
either export what an existing build has finished (``export_only=true``) or build: pre-train the
backbone once, train the baselines, and train every cell of the space through the trial store
and local worker processes, exporting ``<out_root>/<name>/table.csv`` and ``manifest.json`` as
the table grows. Running the same command again after a kill resumes the build.
``recount_cost=true`` (also beside a running build) recounts the finished cells' parameters
and FLOPs with the current counter, corrects the store where they differ, and re-exports.
Exit status: 0 when the build finished (or the export was written), 1 when cells failed, 2 for
a user error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from attnas.cli import CONFIG_DIR
from attnas.cli.errors import RunFailed, UserError, convert, run_cli

log = logging.getLogger("attnas.cli.bench")


@dataclass
class BenchConf:
    """Schema of ``conf/bench.yaml`` (a typo in a key fails at composition)."""

    benchmark: Any = MISSING
    workers: int = 2
    gpus: Any = None
    threads_per_worker: int | None = 1
    export_every: int = 50
    export_only: bool = False
    recount_cost: bool = False
    work_dir: str = MISSING
    out_root: str = "benchmarks"


ConfigStore.instance().store(name="schema_bench", node=BenchConf)


def build_config(cfg: Any) -> Any:
    """The ``BuildConfig`` of a composed ``attnas-bench`` config."""
    from attnas.benchmark.build import BuildConfig

    bench = OmegaConf.to_container(cfg.benchmark, resolve=True)
    if not isinstance(bench, dict):
        raise UserError("benchmark: expected a mapping (a file of conf/benchmark/)")
    gpus = OmegaConf.to_container(cfg.gpus) if OmegaConf.is_config(cfg.gpus) else cfg.gpus
    return convert(
        "benchmark",
        lambda: BuildConfig(
            **bench,
            out_root=cfg.out_root,
            work_dir=cfg.work_dir,
            workers=cfg.workers,
            gpus=gpus,
            threads_per_worker=cfg.threads_per_worker,
            export_every=cfg.export_every,
        ),
    )


def _bench(cfg: DictConfig) -> None:
    from attnas.benchmark.build import build_table, export_table, recount_cost
    from attnas.dispatch import TrialStore

    config = build_config(cfg)
    work = Path(config.work_dir)
    if cfg.export_only or cfg.recount_cost:
        if not (work / "trials.sqlite").is_file():
            raise UserError(f"nothing to export at {work}: no build has started there")
        if cfg.recount_cost:
            corrections = recount_cost(config, work)
            print(f"attnas-bench: recounted the cost of the finished cells; "
                  f"{len(corrections)} corrected")  # fmt: skip
        out = export_table(config, work)
    else:
        out = build_table(config)
    manifest = json.loads((out / "manifest.json").read_text())
    print(
        f"attnas-bench: {out}: {manifest['cells_done']} of {manifest['cells_total']} cells, "
        f"{manifest['rows']} rows, {manifest['seconds_spent']:.0f} trial-seconds"
        + ("" if manifest["complete"] else " (incomplete: run the same command to continue)")
    )
    if manifest["cells_failed"]:
        with TrialStore.open(work) as store:
            errors = {r.error for r in store.trials("failed")}
        raise RunFailed(
            f"{len(manifest['cells_failed'])} cells failed; first error: {sorted(errors)[0]}"
        )


@hydra.main(config_path=str(CONFIG_DIR), config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-bench`` (see ``conf/bench.yaml``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_cli("attnas-bench", lambda: _bench(cfg))


if __name__ == "__main__":
    main()
