"""``attnas-search``: search a space of attention cells (Hydra app, ``conf/search.yaml``).

Everything the run writes goes to its Hydra run directory: Hydra's ``.hydra/`` and a plain
``config.yaml``, the trial store (``trials.sqlite``, bandit searchers) or the checkpoints
(``search/``, differentiable), cells as YAML (``cells/``), plots (PNG) and ``report.md``. The
run directory and a short summary are printed at the end.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from attnas.cli import CONFIG_DIR
from attnas.cli import schema as _schema  # noqa: F401  (registers the schemas)
from attnas.cli.runners import run_cli, run_search_config

log = logging.getLogger("attnas.cli.search")


def _search(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = run_cli("attnas-search", lambda: run_search_config(cfg, run_dir))
    print(f"\nattnas-search finished; run directory: {out.run_dir}")
    for line in out.summary:
        print(f"  {line}")
    print(f"  report: {out.report}")


@hydra.main(config_path=str(CONFIG_DIR), config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-search`` (see ``conf/search.yaml``)."""
    _search(cfg)


if __name__ == "__main__":
    main()
