"""What both searchers of ``attnas-search`` share: the report's context and the summary type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnas.cli import schema
from attnas.cli.report import SearchContext


@dataclass
class SearchOutput:
    """What a search produced (for the printed summary and the tests)."""

    run_dir: Path
    report: Path
    cell_files: list[Path]
    summary: list[str]


def pct(x: float | None) -> str:
    """``0.5`` -> ``50.00%``; None -> ``n/a``."""
    return "n/a" if x is None else f"{100 * x:.2f}%"


def op_params(space: Any) -> dict[str, dict[str, Any]]:
    """The space's per-op-type ``build_op`` options."""
    return {t: dict(c.params) for t, c in space.op_types.items() if c.params}


def clip_facts(cfg: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """Classes and clip shape from the data config when it states them (for the report)."""
    data = schema.plain(cfg.data) if OmegaConf.is_config(cfg.data) else cfg.data
    kw = {**data.get("kwargs", {}), **data.get("train_kwargs", {})}
    classes = data.get("num_classes") or kw.get("num_classes")
    shape = data.get("input_shape")
    if shape is None and "num_frames" in kw and "size" in kw:
        shape = (3, kw["num_frames"], kw["size"], kw["size"])
    return classes, None if shape is None else tuple(shape)


def search_context(cfg: Any, space: Any, run_dir: Path, budget: str) -> SearchContext:
    """The report's "what was searched" from a composed config."""
    classes, shape = clip_facts(cfg)
    data = schema.plain(cfg.data)
    return SearchContext(
        title=f"attnas search report: {cfg.name}",
        run_dir=run_dir,
        searcher=str(cfg.searcher.name),
        searcher_options={k: v for k, v in schema.plain(cfg.searcher).items() if k != "name"},
        space=space.name,
        space_file=str(cfg.space.file),
        space_size=space.size(),
        num_ops=space.num_ops,
        backbone=str(cfg.backbone.name),
        positions=None if cfg.backbone.positions is None else list(cfg.backbone.positions),
        data=str(cfg.data.name),
        data_options={
            **data["kwargs"],
            **{f"train.{k}": v for k, v in data["train_kwargs"].items()},
            **{f"val.{k}": v for k, v in data["val_kwargs"].items()},
        },
        trainer=schema.plain(cfg.trainer),
        budget=budget,
        seed=int(cfg.seed),
        num_classes=classes,
        input_shape=shape,
        op_channel_ratio=space.op_channel_ratio,
    )
