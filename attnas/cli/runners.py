"""What the CLIs do once Hydra has composed their config: searches, derivation, training.

The Hydra entry points (``search.py``, ``derive.py``, ``train.py``) only find their run
directory and call the functions here with the composed config; these convert it to the
library's plain dataclasses (``attnas.cli.schema``) and call the library.

Design choices where the spec is silent:

- Errors a user can fix (a malformed space or cell file, a missing data path, an unset
  mandatory key, a bad option value) are printed as one ``<prog>: error: ...`` line and exit
  with status 2; anything else keeps its traceback, since it is a bug or a real failure.
- Bandit searches refuse to start in a directory that already holds trials unless
  ``resume=true``, so that a reused ``hydra.run.dir`` never silently mixes two searches.
- The best cells of a bandit search are exported as ``cells/best.yaml`` (the best) and
  ``cells/rank<k>.yaml`` (the ``report.top_k`` best); a differentiable search exports
  ``cells/cell.yaml`` (position-agnostic) or ``cells/cell_<position>.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from attnas.cli import schema
from attnas.cli.report import SearchContext

log = logging.getLogger("attnas.cli")


class UserError(Exception):
    """An error the user fixes in the config or the files (printed without a traceback)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types printed as one line by ``run_cli``."""
    from attnas.space import SpecError

    errors: list[type[BaseException]] = [UserError, SpecError, MissingMandatoryValue]
    errors.append(FileNotFoundError)
    data = sys.modules.get("attnas.data")  # only when loaded: importing it would import torch
    if data is not None:
        errors.append(data.NoReadableVideosError)
    return tuple(errors)


def run_cli(prog: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn``; print a user error as ``<prog>: error: ...`` and exit with status 2."""
    try:
        return fn()
    except user_errors() as err:
        msg = str(err)
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or ""
            msg = f"missing mandatory value {key!r}: set it on the command line ({key}=...)"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)


def convert(what: str, fn: Callable[[], Any]) -> Any:
    """Run a config conversion; its ``ValueError``/``KeyError``/``TypeError`` become user errors."""
    try:
        return fn()
    except (ValueError, KeyError, TypeError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UserError(f"{what}: {text}") from None


def save_config(cfg: Any, run_dir: Path, name: str = "config.yaml") -> Path:
    """Write the resolved config as plain YAML next to Hydra's ``.hydra/``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def apply_tracking_env(cfg: Any) -> None:
    """Set ``WANDB_MODE`` from ``tracking.wandb_mode`` when the environment does not."""
    mode = cfg.tracking.get("wandb_mode")
    if mode and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = str(mode)


def _op_params(space: Any) -> dict[str, dict[str, Any]]:
    return {t: dict(c.params) for t, c in space.op_types.items() if c.params}


def _clip_facts(cfg: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """Classes and clip shape from the data config when it states them (for the report)."""
    data = schema.plain(cfg.data) if OmegaConf.is_config(cfg.data) else cfg.data
    kw = {**data.get("kwargs", {}), **data.get("train_kwargs", {})}
    classes = data.get("num_classes") or kw.get("num_classes")
    shape = data.get("input_shape")
    if shape is None and "num_frames" in kw and "size" in kw:
        shape = (3, kw["num_frames"], kw["size"], kw["size"])
    return classes, None if shape is None else tuple(shape)


@dataclass
class SearchOutput:
    """What ``run_search_config`` produced (for the printed summary and the tests)."""

    run_dir: Path
    report: Path
    cell_files: list[Path]
    summary: list[str]


def _context(cfg: Any, space: Any, run_dir: Path, budget: str) -> SearchContext:
    classes, shape = _clip_facts(cfg)
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


def run_search_config(cfg: Any, run_dir: Path) -> SearchOutput:
    """Run the search a composed ``attnas-search`` config describes, in ``run_dir``.

    Args:
        cfg: the composed config.
        run_dir: the Hydra run directory.

    Returns:
        The run directory, report, cell files and summary lines.
    """
    apply_tracking_env(cfg)
    space = convert("space", lambda: schema.load_space_from(cfg.space))
    save_config(cfg, run_dir)
    if cfg.searcher.name == "differentiable":
        return _run_differentiable(cfg, space, run_dir)
    if cfg.searcher.name in schema.BANDIT_SEARCHERS:
        return _run_bandit(cfg, space, run_dir)
    raise UserError(
        f"searcher.name {cfg.searcher.name!r} is not one of "
        f"{['differentiable', *schema.BANDIT_SEARCHERS]}"
    )


def _run_differentiable(cfg: Any, space: Any, run_dir: Path) -> SearchOutput:
    from attnas.cli.report import write_differentiable_report
    from attnas.supergraph.search import run_differentiable_search

    config = convert("searcher", lambda: schema.to_search_config(cfg.searcher))
    spec = convert(
        "config",
        lambda: schema.to_trial_spec(
            cfg,
            op_channel_ratio=space.op_channel_ratio,
            op_params=_op_params(space),
            resume=bool(cfg.resume),
            name=str(cfg.name),
        ),
    )
    if cfg.resume and not (run_dir / "search").is_dir():
        log.warning("resume=true but %s holds no search yet; starting it", run_dir)
    result = run_differentiable_search(space, spec, config, run_dir)
    alpha, beta = config.alpha or space.alpha, config.beta or space.beta
    epochs = spec.train.epochs
    ctx = _context(cfg, space, run_dir, f"one training run of {epochs} epoch(s) with supergraphs")
    retrained = {k: v.to_dict() for k, v in result.retrained.items()}
    report = write_differentiable_report(
        run_dir / "report.md",
        ctx,
        result.cells,
        result.cell_files,
        result.search.to_dict(),
        retrained,
        alpha,
        beta,
    )
    summary = [f"search: top-1 of the supergraph network {_pct(result.search.top1)}"]
    for f in result.cell_files:
        summary.append(f"cell {f.name}: {_canonical(f)}")
    for k, v in retrained.items():
        summary.append(
            f"retrained {k}: top-1 {_pct(v.get('top1'))}, params "
            f"{v.get('num_parameters')}, FLOPs {v.get('flops')}"
        )
    return SearchOutput(run_dir, report, list(result.cell_files), summary)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _canonical(path: Path) -> str:
    from attnas.space import CellSpec

    return CellSpec.load(path).canonical()


def _dispatcher_kwargs(cfg: Any) -> tuple[str, dict[str, Any]]:
    from attnas.dispatch import TRAIN_TRIAL_FN

    d = schema.plain(cfg.dispatch)
    name = d["name"]
    if name == "local":
        gpus = d.get("gpus")
        return name, {
            "trial_fn": TRAIN_TRIAL_FN,
            "num_workers": d.get("workers"),
            "gpus": gpus if gpus is not None else None,
            "timeout_s": d.get("timeout_s"),
            "threads_per_worker": d.get("threads_per_worker"),
        }
    if name == "ray":
        return name, {
            "trial_fn": TRAIN_TRIAL_FN,
            "address": d.get("address"),
            "num_workers": d.get("workers"),
            "gpus_per_trial": d.get("gpus_per_trial"),
            "cpus_per_trial": d.get("cpus_per_trial", 1.0),
            "timeout_s": d.get("timeout_s"),
            "num_cpus": d.get("num_cpus"),
        }
    raise UserError(f"dispatch.name {name!r} is not one of ['local', 'ray']")


def _run_bandit(cfg: Any, space: Any, run_dir: Path) -> SearchOutput:
    from attnas.controller import build_searcher
    from attnas.dispatch import TrialStore, build_dispatcher, run_search

    name = str(cfg.searcher.name)
    budget = int(cfg.budget)
    if budget < 1:
        raise UserError(f"budget must be >= 1, got {budget}")
    searcher = convert(
        f"searcher {name}",
        lambda: build_searcher(
            name, space, seed=int(cfg.seed), **schema.searcher_kwargs(cfg.searcher)
        ),
    )
    base = convert(
        "config",
        lambda: schema.to_trial_spec(
            cfg, op_channel_ratio=space.op_channel_ratio, op_params=_op_params(space)
        ),
    )
    trial_config = {
        k: v
        for k, v in base.to_dict().items()
        if k not in ("cell", "run_dir", "resume", "trial_key", "name")
    }
    dname, dkwargs = _dispatcher_kwargs(cfg)
    store = TrialStore.open(run_dir)
    try:
        if len(store) and not cfg.resume:
            raise UserError(
                f"{run_dir} already holds {len(store)} trial(s); pass resume=true to continue "
                "that search, or choose another hydra.run.dir"
            )

        def on_finish(record: Any) -> None:
            m = record.metrics or {}
            top1 = m.get("top1")
            print(
                f"[{name}] trial {record.trial_id} {record.state}: top-1 "
                f"{_pct(top1) if isinstance(top1, (int, float)) else 'n/a'} "
                f"({record.cell_hash})",
                flush=True,
            )

        dispatcher = convert(f"dispatch {dname}", lambda: build_dispatcher(dname, **dkwargs))
        try:
            summary = run_search(
                searcher,
                store,
                dispatcher,
                budget,
                trial_config=trial_config,
                metric="top1",
                master_seed=int(cfg.seed),
                max_attempts=int(cfg.dispatch.max_attempts),
                poll_interval_s=float(cfg.dispatch.poll_interval_s),
                on_finish=on_finish,
                meta={"searcher": name, "space": space.name},
            )
        finally:
            dispatcher.shutdown()
        trials = [r.to_dict() for r in store.trials()]
    finally:
        store.close()
    best_files = _export_best(trials, run_dir / "cells", int(cfg.report.top_k))
    plot = _plot_progress(trials, run_dir / "plots" / "best_so_far.png", name)
    baselines: dict[str, dict[str, Any]] = {}
    if cfg.report.baselines:
        baselines = _train_baselines(cfg, base, run_dir / "baselines")
    ctx = _context(cfg, space, run_dir, f"{budget} trials, each {base.train.epochs} epoch(s)")
    from attnas.cli.report import write_bandit_report

    report = write_bandit_report(run_dir / "report.md", ctx, trials, best_files, baselines, plot)
    lines = [
        f"{name}: {summary.completed} completed, {summary.failed} failed trial(s) in "
        f"{summary.wall_s:.0f} s" + (" (resumed)" if summary.resumed else "")
    ]
    if summary.best is not None:
        lines.append(
            f"best: trial {summary.best.trial_id}, top-1 "
            f"{_pct(summary.best.metrics.get('top1'))}, cell "
            f"{run_dir / 'cells' / 'best.yaml'}"
        )
    for k, v in baselines.items():
        lines.append(f"baseline {k}: top-1 {_pct(v.get('top1'))}")
    return SearchOutput(run_dir, report, best_files, lines)


def _export_best(trials: list[dict[str, Any]], out_dir: Path, top_k: int) -> list[Path]:
    """Write the ``top_k`` best completed cells as ``rank<k>.yaml`` and the best as
    ``best.yaml``; return the rank files, best first."""
    from attnas.space import CellSpec

    done = [t for t in trials if t["state"] == "completed" and t["metrics"].get("top1") is not None]
    done.sort(key=lambda t: (-float(t["metrics"]["top1"]), t["trial_id"]))
    files: list[Path] = []
    for rank, t in enumerate(done[: max(1, top_k)], start=1):
        cell = CellSpec.from_dict(t["cell"])
        meta = {
            **cell.meta,
            "search": {"trial_id": t["trial_id"], "rank": rank, "top1": t["metrics"]["top1"]},
        }
        cell = CellSpec(cell.ops, cell.outputs, name=f"rank{rank}", meta=meta)
        files.append(cell.save(out_dir / f"rank{rank}.yaml"))
        if rank == 1:
            cell.save(out_dir / "best.yaml")
    return files


def _plot_progress(trials: list[dict[str, Any]], path: Path, name: str) -> Path | None:
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


def _train_baselines(cfg: Any, base: Any, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Backbone alone and with non-local blocks, under the trials' budget (resumable)."""
    from attnas.train import run_trial

    results: dict[str, dict[str, Any]] = {}
    for cell in ("none", "nonlocal"):
        spec = base.replace(
            cell=cell, run_dir=str(out_dir / cell), resume=bool(cfg.resume), name=f"baseline-{cell}"
        )
        print(f"training baseline {cell} ...", flush=True)
        results[cell] = run_trial(spec).to_dict()
    return results


# ---------------------------------------------------------------------------- derive
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
    _, files = export_cells(weights, alpha, beta, out_dir, positions or [])
    save_config(cfg, out_dir, "derive_config.yaml")
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
        except Exception as err:  # the space file may have moved; α/β then need to be given
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


# ---------------------------------------------------------------------------- train
def run_train_config(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate the backbone with ``cfg.cell`` inserted; write result and report."""
    from attnas.cli.report import write_train_report
    from attnas.train import run_trial

    apply_tracking_env(cfg)
    cell = str(cfg.cell)
    if cell not in ("none", "nonlocal"):
        from attnas.space import CellSpec

        CellSpec.load(cell)  # a missing or malformed file fails here, naming it
        cell = str(Path(cell).resolve())
    spec = convert(
        "config",
        lambda: schema.to_trial_spec(
            cfg,
            cell=cell,
            op_channel_ratio=float(cfg.op_channel_ratio),
            run_dir=str(run_dir),
            name=cfg.name or Path(cell).stem,
        ),
    )
    save_config(cfg, run_dir)
    result = run_trial(spec).to_dict()
    write_train_report(run_dir / "report.md", f"attnas-train: {Path(cell).name}", cell, result)
    return result
