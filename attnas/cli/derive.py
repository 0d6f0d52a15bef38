"""``attnas-derive``: derive cells again from a differentiable search, with other α/β.

No retraining: the learned connection weights are read from the search's
``cells/cell*.weights.json`` (or its checkpoint ``search/checkpoints/last.pt``, which also works
while the search still runs), and the cells, weights JSON and a PNG of the weights are written
to ``<run_dir>/derived_a{alpha}_b{beta}/`` (or ``out_dir=``); a position-specific search also
gets the cell-set file ``cells.yaml`` there. A ``run_dir`` that does not exist is an error
(exit status 2); nothing is created for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from attnas.cli import CONFIG_DIR
from attnas.cli import schema as _schema  # noqa: F401  (registers the schemas)
from attnas.cli.errors import UserError, run_cli

log = logging.getLogger("attnas.cli.derive")


def run_derive_config(cfg: Any) -> tuple[Path, list[Path]]:
    """Derive cells again from a differentiable search's learned weights (no retraining).

    Reads ``<run_dir>/cells/*.weights.json`` when present, else the connection weights in
    ``<run_dir>/search/checkpoints/last.pt``; α/β default to those of the search's config.

    Returns:
        The output folder and the cell files written there.
    """
    from attnas.supergraph.search import export_cells

    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir} is not a directory")
    alpha, beta, positions, space_defaults = _search_settings(run_dir)
    alpha = int(cfg.alpha) if cfg.alpha is not None else alpha
    beta = int(cfg.beta) if cfg.beta is not None else beta
    if alpha is None or beta is None:
        alpha = alpha or space_defaults[0]
        beta = beta or space_defaults[1]
    weights = _load_weights(run_dir, str(cfg.source))
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / f"derived_a{alpha}_b{beta}"
    for w in weights.values():
        n_sink = w.levels * w.num_nodes
        if not 1 <= alpha <= n_sink:
            raise UserError(f"alpha={alpha} must be in 1..{n_sink} (the supergraph's nodes)")
        if not 1 <= beta <= w.num_nodes:
            raise UserError(f"beta={beta} must be in 1..{w.num_nodes} (nodes per level)")
    if positions is None and "all" not in weights:
        positions = sorted(weights)
    cells, files = export_cells(weights, alpha, beta, out_dir, positions or [])
    if len(cells) > 1:
        from attnas.cells import CellSet

        by_position = {f.stem.removeprefix("cell_"): f for f in files}
        CellSet(dict(cells)).save(out_dir / "cells.yaml", by_position)
    (out_dir / "derive_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out_dir, files


def _search_settings(run_dir: Path) -> tuple[int | None, int | None, list[str] | None, tuple]:
    """α, β, positions of the search (from its ``config.yaml``) and the space's defaults."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None, None, None, (3, 1)
    import yaml

    cfg = yaml.safe_load(path.read_text()) or {}
    searcher = cfg.get("searcher") or {}
    positions = (cfg.get("backbone") or {}).get("positions")
    defaults = (3, 1)
    space = cfg.get("space") or {}
    if space.get("file"):
        try:
            from attnas.space import load_space

            s = load_space(space["file"], **(space.get("overrides") or {}))
            defaults = (s.alpha, s.beta)
        except (OSError, ValueError) as err:  # the space file moved: α/β then need to be given
            log.warning("could not load the search's space %s: %s", space.get("file"), err)
    return searcher.get("alpha"), searcher.get("beta"), positions, defaults


def _load_weights(run_dir: Path, source: str = "auto") -> dict[str, Any]:
    """``{"all" | position: ArchitectureWeights}`` from the cells' JSON or the checkpoint.

    ``source``: ``weights`` (the exported JSON), ``checkpoint`` (``search/checkpoints/last.pt``,
    e.g. of a search still running or killed) or ``auto`` (the JSON when present).
    """
    from attnas.supergraph import ArchitectureWeights

    if source not in ("auto", "weights", "checkpoint"):
        raise UserError(f"source must be auto, weights or checkpoint, got {source!r}")
    files = sorted((run_dir / "cells").glob("cell*.weights.json"))
    if source == "weights" and not files:
        raise UserError(f"{run_dir / 'cells'} holds no cell*.weights.json")
    if files and source != "checkpoint":
        out = {}
        for f in files:
            stem = f.name.removesuffix(".weights.json")
            key = "all" if stem == "cell" else stem.removeprefix("cell_")
            out[key] = ArchitectureWeights.from_dict(json.loads(f.read_text()))
        return out
    ckpt = run_dir / "search" / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        raise UserError(
            f"{run_dir} holds neither cells/cell*.weights.json nor {ckpt.relative_to(run_dir)}: "
            "is it the run directory of a differentiable search?"
        )
    return _weights_from_checkpoint(ckpt)


def _weights_from_checkpoint(path: Path) -> dict[str, Any]:
    """Rebuild the connection weights from a search checkpoint and the search's space."""
    import torch
    import yaml

    from attnas.space import load_space
    from attnas.supergraph import ArchitectureWeights

    config = path.parents[2] / "config.yaml"
    if not config.is_file():
        raise UserError(f"{config} not found: the search's space is needed to read {path}")
    cfg = yaml.safe_load(config.read_text()) or {}
    space_cfg = cfg.get("space") or {}
    space = load_space(space_cfg["file"], **(space_cfg.get("overrides") or {}))
    temperature = float((cfg.get("searcher") or {}).get("temperature", 1.0))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = state.get("model", state)
    groups: dict[str, dict[str, Any]] = {}
    for k, v in model.items():
        if k.startswith("architecture."):
            key, _, leaf = k.removeprefix("architecture.").rpartition(".")
            groups.setdefault(key, {})[leaf] = v
    if not groups:
        raise UserError(f"{path}: no connection weights (architecture.*) in the checkpoint")
    nodes = list(space.supergraph.nodes)
    out = {}
    for key, tensors in groups.items():
        w = ArchitectureWeights(
            space.supergraph.levels,
            nodes,
            [space.activations_for(t) for t, _ in nodes],
            temperature=temperature,
        )
        w.load_state_dict(tensors, strict=False)
        out[key] = w
    return out


def _derive(cfg: DictConfig) -> None:
    from attnas.cli.report import cell_line
    from attnas.space import CellSpec

    out_dir, files = run_cli("attnas-derive", lambda: run_derive_config(cfg))
    print(f"attnas-derive: {len(files)} cell file(s) in {out_dir}")
    for f in files:
        print(f"  {f}: {cell_line(CellSpec.load(f))}")
        png = f.with_suffix(".png")
        if png.is_file():
            print(f"  {png}")
    if (out_dir / "cells.yaml").is_file():
        print(f"  cell set (each position its own cell): {out_dir / 'cells.yaml'}")


@hydra.main(config_path=str(CONFIG_DIR), config_name="derive", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-derive`` (see ``conf/derive.yaml``)."""
    _derive(cfg)


if __name__ == "__main__":
    main()
