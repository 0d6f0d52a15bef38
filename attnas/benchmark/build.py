"""Building a tabular benchmark: every cell of a space, trained under the proxy protocol.

The build is an ordinary search run: a ``TableSearcher`` proposes every cell of the space once,
in a seeded random order, and ``run_search`` dispatches them through the trial store and a
dispatcher (local worker processes by default, one per GPU where there are GPUs; Ray works the
same way), so a build killed at any moment resumes from its store without losing or repeating a
finished cell. One store trial trains one cell under every table seed (``seeds``; the first
``extra_seed_cells`` cells of the order also under ``extra_seeds``), so each worker process
pays its start-up and the frozen-prefix feature cache once per cell, not once per seed.

The bare backbone and + non-local are trained under the same protocol and seeds
(``baseline_seeds``) in the build process before the cells; each finished seed is kept in
``<work_dir>/baselines.json`` so they are not retrained on resume.

``export_table`` writes ``table.csv`` and ``manifest.json`` from the store at any time, so the
exported table grows with the build; the manifest says how complete it is. The exported folder
is the build's durable state: it also keeps the pre-trained weights the rows were trained with,
and a build started where the run directory is gone (a fresh clone) first imports the exported
rows into a new store and the exported baselines, so it continues where the table stopped with
the very same weights, instead of starting again.

``recount_cost`` recounts every finished cell's parameters and FLOPs with the current counter
(``count_proxy_cost``) and corrects the store where a recorded count differs (each correction
is returned and logged), for when the counter is fixed after rows were recorded; the cells'
accuracies are untouched, since the count runs on a separate model. ``attnas-bench
recount_cost=true`` runs it; it may run beside a build, which never rewrites a finished trial
(SQLite serialises the two processes' writes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnas.benchmark.protocol import FeatureCache, ProxyProtocol, pretrained_weights
from attnas.benchmark.table import (
    MANIFEST_FILENAME,
    TABLE_FILENAME,
    BenchmarkRow,
    read_table,
    write_table,
)
from attnas.space import CellSpec, SearchSpace, load_space

logger = logging.getLogger("attnas.benchmark")

TABLE_TRIAL_FN = "attnas.benchmark.build:run_table_trial"
BASELINES_FILENAME = "baselines.json"


@dataclass(frozen=True)
class BuildConfig:
    """What a table build does.

    Attributes:
        name: The table's name (its folder under ``out_root``).
        protocol: The proxy protocol of every trial.
        space: Search-space name or file (``load_space``).
        num_ops: K of the space (None: the file's).
        seeds: Table seeds every cell is trained with.
        extra_seeds: More seeds for the first ``extra_seed_cells`` cells of the order.
        extra_seed_cells: How many cells get ``extra_seeds``.
        baseline_seeds: Seeds of the bare backbone and + non-local rows.
        order_seed: Seed of the random order in which cells are built.
        max_cells: Build only this many cells (None: the whole space; for tiny test tables).
        out_root: Where ``<name>/table.csv`` and ``manifest.json`` go.
        work_dir: The build's run directory (store, feature-cache weights, baselines).
        workers: Concurrent trials.
        gpus: ``"auto"`` (one worker per visible GPU), a list of GPU ids, or None for CPU.
        threads_per_worker: Threads of each worker (None: cores // workers).
        export_every: Re-export the table after this many finished cells.
    """

    name: str = "distant_match_k2"
    protocol: ProxyProtocol = field(default_factory=ProxyProtocol)
    space: str = "attention_nas"
    num_ops: int | None = 2
    seeds: tuple[int, ...] = (0, 1)
    extra_seeds: tuple[int, ...] = (2,)
    extra_seed_cells: int = 200
    baseline_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    order_seed: int = 0
    max_cells: int | None = None
    out_root: str = "benchmarks"
    work_dir: str = "runs/benchmarks/distant_match_k2"
    workers: int = 2
    gpus: Any = None
    threads_per_worker: int | None = 1
    export_every: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.protocol, Mapping):
            object.__setattr__(self, "protocol", ProxyProtocol.from_dict(self.protocol))
        for name in ("seeds", "extra_seeds", "baseline_seeds"):
            object.__setattr__(self, name, tuple(int(s) for s in getattr(self, name)))
        if not self.seeds:
            raise ValueError("BuildConfig.seeds must hold at least one seed")

    def load_space(self) -> SearchSpace:
        """The table's search space."""
        space = load_space(self.space)
        return space if self.num_ops is None else space.with_overrides(num_ops=self.num_ops)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["protocol"] = self.protocol.to_dict()
        return json.loads(json.dumps(data))


def distinct_cells(space: SearchSpace) -> list[CellSpec]:
    """One cell per canonical hash, in enumeration order."""
    seen: dict[str, CellSpec] = {}
    for cell in space.enumerate():
        seen.setdefault(cell.hash(), cell)
    return list(seen.values())


def build_order(
    space: SearchSpace, order_seed: int, max_cells: int | None = None
) -> list[CellSpec]:
    """The distinct cells in the seeded random order the build trains them in."""
    cells = distinct_cells(space)
    random.Random(f"attnas.benchmark.order:{order_seed}").shuffle(cells)
    return cells if max_cells is None else cells[:max_cells]


class TableSearcher:
    """Proposes each cell of a fixed list once, in order (the build's "searcher").

    Args:
        cells: The cells to build.
    """

    def __init__(self, cells: Sequence[CellSpec]) -> None:
        self._cells = list(cells)
        self._seen: set[str] = set()
        self._next = 0

    def suggest(self, n: int = 1) -> list[CellSpec]:
        """The next ``n`` cells not yet proposed or recorded."""
        out: list[CellSpec] = []
        while len(out) < n and self._next < len(self._cells):
            cell = self._cells[self._next]
            self._next += 1
            if cell.hash() not in self._seen:
                self._seen.add(cell.hash())
                out.append(cell)
        return out

    def observe(self, cell: CellSpec, result: Any) -> None:
        """Nothing to learn: the order is fixed."""
        self._seen.add(cell.hash())

    def restore(self, records: Iterable[Any], metric: str = "top1") -> None:
        """Skip every cell the store already holds."""
        for record in records:
            self._seen.add(record.cell_hash)


_CACHES: dict[str, FeatureCache] = {}


def _cache(protocol: ProxyProtocol, cache_dir: str) -> FeatureCache:
    key = json.dumps(protocol.to_dict(), sort_keys=True)
    if key not in _CACHES:
        _CACHES[key] = FeatureCache(
            protocol, pretrained_weights(protocol, cache_dir), store=cache_dir
        )
    return _CACHES[key]


def _row_dict(result: Any, seed: int) -> dict[str, Any]:
    last = result.history[-1] if result.history else {}
    return {
        "seed": seed,
        "val_top1": result.top1,
        "val_top1_epochs": [h["val_top1"] for h in result.history],
        "train_loss": last.get("train_loss"),
        "val_loss": result.val_loss,
        "wall_s": result.wall_time_s,
        "params": result.num_parameters,
        "flops": result.flops,
    }


def run_table_trial(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Trial function of a build: train one cell under every table seed.

    ``payload["config"]`` holds ``protocol`` (dict), ``seeds``, ``extra_seeds``,
    ``extra_hashes`` (the cells that get the extra seeds) and ``cache_dir``.

    Returns:
        ``{"status", "top1" (mean over seeds), "seeds": [per-seed row dicts], "error"?}``.
    """
    import torch

    from attnas.benchmark.protocol import count_proxy_cost, run_proxy_trial

    config = payload["config"]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    protocol = ProxyProtocol.from_dict(config["protocol"])
    cache = _cache(protocol, config["cache_dir"])
    seeds = list(config["seeds"])
    if payload["cell_hash"] in set(config.get("extra_hashes", ())):
        seeds += list(config.get("extra_seeds", ()))
    rows = []
    cost = count_proxy_cost(protocol, payload["cell"])
    for seed in seeds:
        result = run_proxy_trial(protocol, cache, payload["cell"], seed, cost=cost)
        if not result.ok:
            return {"status": "failed", "error": f"seed {seed}: {result.error}", "seeds": rows}
        rows.append(_row_dict(result, seed))
    top1 = sum(r["val_top1"] for r in rows) / len(rows)
    return {"status": "completed", "top1": top1, "seeds": rows}


def run_baselines(config: BuildConfig, work_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Train the bare backbone and + non-local under the protocol (resumable per seed)."""
    from attnas.benchmark.protocol import count_proxy_cost, run_proxy_trial

    path = work_dir / BASELINES_FILENAME
    done: dict[str, list[dict[str, Any]]] = (
        json.loads(path.read_text()) if path.is_file() else {"backbone": [], "nonlocal": []}
    )
    cache = _cache(config.protocol, str(work_dir / "cache"))
    for kind, cell in (("backbone", "none"), ("nonlocal", "nonlocal")):
        cost = count_proxy_cost(config.protocol, cell)
        have = {r["seed"] for r in done[kind]}
        for seed in config.baseline_seeds:
            if seed in have:
                continue
            result = run_proxy_trial(config.protocol, cache, cell, seed, cost=cost)
            if not result.ok:
                raise RuntimeError(f"baseline {kind} seed {seed} failed: {result.error}")
            done[kind].append(_row_dict(result, seed))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=1))
            os.replace(tmp, path)
            logger.info("baseline %s seed %d: top-1 %.3f", kind, seed, result.top1)
    return done


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _code_commits(previous: Path, head: str | None) -> list[str]:
    """Every commit an export of this table ran at, oldest first: the previous manifest's list
    (or its single ``code_commit``), then ``head`` if new. A table built over several sittings
    has rows from the commits between the first and the last; ``code_commit`` alone names only
    the last export's."""
    commits: list[str] = []
    if previous.is_file():
        old = json.loads(previous.read_text())
        commits = list(old.get("code_commits") or [c for c in [old.get("code_commit")] if c])
    if head and head not in commits:
        commits.append(head)
    return commits


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def export_table(config: BuildConfig, work_dir: str | Path | None = None) -> Path:
    """Write ``table.csv`` and ``manifest.json`` for what the build has finished so far.

    Returns:
        The table's folder.
    """
    from attnas.dispatch import TrialStore

    work = Path(work_dir or config.work_dir)
    out = Path(config.out_root) / config.name
    out.mkdir(parents=True, exist_ok=True)
    space = config.load_space()
    order = build_order(space, config.order_seed, config.max_cells)
    rows: list[BenchmarkRow] = []
    failed: list[dict[str, Any]] = []
    seconds = 0.0
    with TrialStore.open(work) as store:
        records = {r.cell_hash: r for r in store.trials()}
    for cell in order:
        record = records.get(cell.hash())
        if record is None or record.state != "completed":
            if record is not None and record.state == "failed":
                failed.append({"cell_hash": record.cell_hash, "error": record.error})
            continue
        vector = tuple(space.encode(cell))
        for r in record.metrics["seeds"]:
            rows.append(_to_row("cell", cell.hash(), vector, cell.to_dict(), r))
            seconds += float(r["wall_s"])
    baselines_path = work / BASELINES_FILENAME
    baselines = json.loads(baselines_path.read_text()) if baselines_path.is_file() else {}
    for kind in ("backbone", "nonlocal"):
        for r in baselines.get(kind, []):
            rows.append(_to_row(kind, kind, None, None, r))
            seconds += float(r["wall_s"])
    write_table(out / TABLE_FILENAME, rows)
    cells_done = len({r.cell_hash for r in rows if r.kind == "cell"})
    weights = (
        work / "cache" / f"pretrained_{config.protocol.backbone}_"
        f"{config.protocol.pretrain_key()}.pt"
    )
    head = _git_commit()
    manifest = {
        "name": config.name,
        "description": "Tabular benchmark of attention cells: every distinct cell of `space` "
        "trained under `protocol` with each of `seeds` (and `extra_seeds` for a uniform "
        "subset); the bare backbone and + non-local under the same protocol.",
        "protocol": config.protocol.to_dict(),
        "space": space.to_dict(),
        "build": config.to_dict(),
        "cells_total": len(order),
        "cells_done": cells_done,
        "cells_failed": failed,
        "complete": cells_done == len(order)
        and all(
            len(baselines.get(k, [])) >= len(config.baseline_seeds)
            for k in ("backbone", "nonlocal")
        ),
        "rows": len(rows),
        "seeds": list(config.seeds),
        "extra_seeds": list(config.extra_seeds),
        "extra_seed_cells": config.extra_seed_cells,
        "baseline_seeds": list(config.baseline_seeds),
        "seconds_spent": round(seconds, 1),
        "pretrained_weights_sha256": _sha256(weights) if weights.is_file() else None,
        "code_commit": head,
        "code_commits": _code_commits(out / MANIFEST_FILENAME, head),
        "machine": _machine(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2) + "\n")
    if weights.is_file() and not (out / weights.name).is_file():
        shutil.copyfile(weights, out / weights.name)
    return out


def recount_cost(config: BuildConfig, work_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Recount the parameters and FLOPs of every completed cell; correct those that differ.

    Returns:
        One dict per corrected cell: ``cell_hash``, ``recorded`` and ``counted``
        (``[params, flops]`` each).
    """
    from attnas.benchmark.protocol import count_proxy_cost
    from attnas.dispatch import TrialStore

    corrections = []
    with TrialStore.open(Path(work_dir or config.work_dir), create=False) as store:
        for record in store.trials("completed"):
            counted = list(count_proxy_cost(config.protocol, record.cell))
            seeds = record.metrics.get("seeds", [])
            recorded = {(r.get("params"), r.get("flops")) for r in seeds}
            if recorded == {tuple(counted)}:
                continue
            metrics = {
                **record.metrics,
                "seeds": [{**r, "params": counted[0], "flops": counted[1]} for r in seeds],
            }
            store.amend_metrics(record.trial_id, metrics)
            old = sorted(recorded, key=str)
            corrections.append(
                {"cell_hash": record.cell_hash, "recorded": list(old[0]), "counted": counted}
            )
            logger.info("cell %s: cost %s recounted as %s", record.cell_hash, old, counted)
    return corrections


def _row_metrics(row: BenchmarkRow) -> dict[str, Any]:
    return {
        "seed": row.seed,
        "val_top1": row.val_top1,
        "val_top1_epochs": list(row.val_top1_epochs),
        "train_loss": row.train_loss,
        "val_loss": row.val_loss,
        "wall_s": row.wall_s,
        "params": row.params,
        "flops": row.flops,
    }


def import_exported(config: BuildConfig, work: Path) -> int:
    """Seed a new build directory from the exported table (rows, baselines, weights).

    Only cells the store does not hold are imported, as completed trials whose metrics are the
    exported rows; the exported pre-trained weights are copied into the cache.

    Returns:
        The number of cells imported.
    """
    from attnas.dispatch import TrialStore

    out = Path(config.out_root) / config.name
    weights = f"pretrained_{config.protocol.backbone}_{config.protocol.pretrain_key()}.pt"
    if (out / weights).is_file() and not (work / "cache" / weights).is_file():
        (work / "cache").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / weights, work / "cache" / weights)
    if not (out / TABLE_FILENAME).is_file():
        return 0
    manifest = json.loads((out / MANIFEST_FILENAME).read_text())
    if manifest.get("protocol") != config.protocol.to_dict():
        raise ValueError(
            f"the table in {out} was built under another protocol; build it elsewhere "
            "(another name or out_root), or remove it to start again"
        )
    rows = read_table(out / TABLE_FILENAME)
    baselines_path = work / BASELINES_FILENAME
    if not baselines_path.is_file():
        exported = {
            k: [_row_metrics(r) for r in rows if r.kind == k] for k in ("backbone", "nonlocal")
        }
        baselines_path.write_text(json.dumps(exported, indent=1))
    by_cell: dict[str, list[BenchmarkRow]] = {}
    for r in rows:
        if r.kind == "cell":
            by_cell.setdefault(r.cell_hash, []).append(r)
    imported = 0
    with TrialStore.open(work) as store:
        store.ensure_meta({"master_seed": int(config.order_seed)})
        have = store.hashes()
        for key, group in by_cell.items():
            if key in have:
                continue
            cell = CellSpec.from_dict(group[0].cell or {})
            trial = store.add(cell)
            store.mark_running(trial, worker="imported")
            seeds = [_row_metrics(r) for r in sorted(group, key=lambda r: r.seed)]
            top1 = sum(m["val_top1"] for m in seeds) / len(seeds)
            store.complete(
                trial,
                {"status": "completed", "top1": top1, "seeds": seeds, "imported_from": str(out)},
            )
            imported += 1
    return imported


def _to_row(kind: str, key: str, vector: Any, cell: Any, r: Mapping[str, Any]) -> BenchmarkRow:
    return BenchmarkRow(
        kind=kind,
        cell_hash=key,
        vector=vector,
        cell=cell,
        seed=int(r["seed"]),
        val_top1=float(r["val_top1"]),
        val_top1_epochs=tuple(r["val_top1_epochs"]),
        train_loss=r.get("train_loss"),
        val_loss=r.get("val_loss"),
        wall_s=float(r["wall_s"]),
        params=r.get("params"),
        flops=r.get("flops"),
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_table(config: BuildConfig) -> Path:
    """Build (or resume building) a table, exporting it as it grows.

    Returns:
        The table's folder (``<out_root>/<name>``).
    """
    from attnas.dispatch import LocalDispatcher, TrialStore, run_search

    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    space = config.load_space()
    order = build_order(space, config.order_seed, config.max_cells)
    imported = import_exported(config, work)
    if imported:
        logger.info("imported %d finished cells from the exported table", imported)
    pretrained_weights(config.protocol, work / "cache")
    run_baselines(config, work)
    extra = [c.hash() for c in order[: config.extra_seed_cells]] if config.extra_seeds else []
    trial_config = {
        "protocol": config.protocol.to_dict(),
        "seeds": list(config.seeds),
        "extra_seeds": list(config.extra_seeds),
        "extra_hashes": extra,
        "cache_dir": str((work / "cache").resolve()),
    }
    finished = 0

    def on_finish(record: Any) -> None:
        nonlocal finished
        finished += 1
        if finished % max(1, config.export_every) == 0:
            export_table(config, work)

    dispatcher = LocalDispatcher(
        TABLE_TRIAL_FN,
        num_workers=config.workers,
        gpus=config.gpus,
        threads_per_worker=config.threads_per_worker,
        scratch_dir=work / "scratch",
    )
    try:
        with TrialStore.open(work) as store:
            summary = run_search(
                TableSearcher(order),
                store,
                dispatcher,
                budget=len(order),
                trial_config=trial_config,
                master_seed=config.order_seed,
                on_finish=on_finish,
                poll_interval_s=0.5,
                meta={"benchmark": config.name, "protocol": config.protocol.to_dict()},
            )
    finally:
        dispatcher.shutdown()
        export_table(config, work)
    logger.info(
        "build %s: %d completed, %d failed of %d cells in %.0f s",
        config.name,
        summary.completed,
        summary.failed,
        len(order),
        summary.wall_s,
    )
    return Path(config.out_root) / config.name
