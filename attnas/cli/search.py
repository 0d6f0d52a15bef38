"""``attnas-search``: search a space of attention cells (Hydra app, ``conf/search.yaml``).

Reads top to bottom: load the space, convert the config for the searcher (``plan_*``), open
the run directory (``attnas.cli.rundir``: refuse a
run directory that holds a run unless ``resume=true``, refuse a resume with other settings, say
"nothing to resume" for an empty one), then run the differentiable search
(``search_differentiable``; ``search_proxy`` when ``proxy.benchmark`` names a table, as
``make demo`` does) or a bandit search (``search_bandit``) and print the summary.

Everything the run writes goes to its run directory: ``run.json`` (fingerprint and
invocations), ``.hydra/`` and a plain ``config.yaml``, ``search.log``, the trial store
(``trials.sqlite``, bandit searchers) or the checkpoints (``search/``, differentiable), cells as
YAML (``cells/``), plots (PNG) and ``report.md``. Exit status: 0 when the search produced a
result, 1 when it ran and failed (e.g. no trial completed), 2 for a user error; each failure is
one line naming its cause.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from attnas.cli import CONFIG_DIR
from attnas.cli import schema as _schema
from attnas.cli.errors import UserError, convert, run_cli
from attnas.cli.rundir import RunDir, hydra_files, space_fingerprint

log = logging.getLogger("attnas.cli.search")


def apply_tracking_env(cfg: Any) -> None:
    """Set ``WANDB_MODE`` from ``tracking.wandb_mode`` when the environment does not."""
    mode = cfg.tracking.get("wandb_mode")
    if mode and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = str(mode)


def fingerprint(cfg: Any, space: Any) -> dict[str, Any]:
    """What defines a search: its resolved config and the content of its space."""
    return {**_schema.plain(cfg), "space_content": space_fingerprint(space)}


def run_search_config(cfg: Any, run_dir: Path, hydra: dict[str, str] | None = None) -> Any:
    """Run (or resume) the search a composed ``attnas-search`` config describes, in ``run_dir``.

    Args:
        cfg: the composed config.
        run_dir: the run directory.
        hydra: Hydra's ``.hydra/`` files, written once the run is accepted.

    Returns:
        The ``SearchOutput`` (run directory, report, cell files, summary lines).
    """
    from attnas.cli.search_bandit import plan_bandit, run_bandit
    from attnas.cli.search_differentiable import plan_differentiable, run_differentiable
    from attnas.cli.search_proxy import plan_proxy, run_proxy

    apply_tracking_env(cfg)
    name = str(cfg.searcher.name)
    if name != "differentiable" and name not in _schema.BANDIT_SEARCHERS:
        raise UserError(
            f"searcher.name {name!r} is not one of {['differentiable', *_schema.BANDIT_SEARCHERS]}"
        )
    space = convert("space", lambda: _schema.load_space_from(cfg.space))
    plain = convert("config", lambda: fingerprint(cfg, space))
    proxy = name == "differentiable" and cfg.proxy.benchmark is not None
    if proxy:
        plan: Any = plan_proxy(cfg, space)
    elif name == "differentiable":
        plan = plan_differentiable(cfg, space)
    else:
        plan = plan_bandit(cfg, space, run_dir)
    run = RunDir.open(
        run_dir,
        "attnas-search",
        cfg,
        resume=bool(cfg.resume),
        fingerprint=plain,
        hydra_files=hydra,
    )
    if proxy:
        return run_proxy(cfg, space, plan, run)
    if name == "differentiable":
        return run_differentiable(cfg, space, plan, run)
    return run_bandit(cfg, space, plan, run)


def _search(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = run_cli("attnas-search", lambda: run_search_config(cfg, run_dir, hydra_files()))
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
