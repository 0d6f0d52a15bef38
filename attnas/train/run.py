"""``run_trial(spec) -> TrialResult``: build, train, evaluate; never raise for a failed trial.

This is the single code path of ``attnas-train``, every GPB trial and (through ``Trainer`` and
its hooks) the differentiable search. The spec is plain data; programmatic pieces come as
keyword arguments:

- ``module_factory(name, shape) -> nn.Module`` overrides ``spec.cell`` (the supergraph search
  passes one that builds supergraphs sharing its connection weights);
- ``hooks`` / ``exclude_parameters`` may be callables of the built model, because what they
  refer to (e.g. architecture weights) exists only once the modules are inserted.

A trial-level failure — a non-finite loss, CUDA out of memory, a cell that does not fit the
backbone, any other ``Exception`` — gives ``status="failed"`` with the error text (type,
message and the last traceback lines) and whatever history was completed, unless
``spec.raise_on_failure`` is set. ``KeyboardInterrupt`` and ``SystemExit`` are never caught.

Backbone weights (``spec.backbone_checkpoint``) load with
``attnas.backbones.checkpoint.load_backbone_checkpoint``: strictly, except that a classifier
head of another size is dropped on purpose; any other difference raises (the trial fails with
the differing keys named), and what was dropped is logged.

FLOPs are counted once the hooks are built, because a hook may register modules in the model
(the differentiable search attaches its connection weights there); counting before would see
parameters outside the model, fail on the meta device and fall back to a full forward pass.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` after a reset at the start of the
trial; on CPU, the process's peak resident set size (``ru_maxrss``), which is a lifetime
maximum of the process and hence an upper bound when several trials share one process.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from attnas.tracking import Tracker, build_tracker
from attnas.train.datasets import build_datasets
from attnas.train.distributed import dist_info
from attnas.train.seeding import seed_everything
from attnas.train.spec import TrialResult, TrialSpec
from attnas.train.temporal import set_temporal_kernels_to_one
from attnas.train.trainer import Trainer, TrainerHook

logger = logging.getLogger("attnas.train")

ModuleFactory = Callable[[str, tuple[int, int, int, int]], nn.Module]
HooksArg = Sequence[TrainerHook] | Callable[[nn.Module], Sequence[TrainerHook]]
ExcludeArg = Iterable[nn.Parameter] | Callable[[nn.Module], Iterable[nn.Parameter]]

RESULT_NAME = "result.json"


def cell_factory(
    cell: str | dict[str, Any],
    op_channel_ratio: float = 0.25,
    op_params: dict[str, dict[str, Any]] | None = None,
) -> ModuleFactory | None:
    """The module factory for a spec's ``cell`` value.

    Args:
        cell: ``"none"``, ``"nonlocal"``, a cell file path, a cell-set file path
            (``attnas.cells.CellSet``: its cells go to its positions), or a ``CellSpec`` dict.
        op_channel_ratio: ``C_op = max(1, round(C * ratio))`` for attention cells.
        op_params: Per-op-type ``build_op`` options.

    Returns:
        ``factory(name, shape)``, or None for ``"none"``.

    Raises:
        FileNotFoundError: If ``cell`` is neither a keyword nor an existing file.
    """
    if isinstance(cell, str) and cell == "none":
        return None
    if isinstance(cell, str) and cell == "nonlocal":
        from attnas.blocks import NonLocalBlock

        return lambda name, shape: NonLocalBlock(shape[0], shape[0] // 2)

    from attnas.cells import AttentionCell
    from attnas.space import CellSpec

    if isinstance(cell, str):
        path = Path(cell)
        if not path.is_file():
            raise FileNotFoundError(
                f"cell {cell!r} is not 'none', 'nonlocal' or an existing cell file"
            )
        from attnas.cells import CellSet, is_cell_set

        if is_cell_set(path):  # one cell per position (a position-specific search)
            return CellSet.load(path, op_channel_ratio, op_params)
        spec = CellSpec.load(path)
    else:
        spec = CellSpec.from_dict(cell)

    def factory(name: str, shape: tuple[int, int, int, int]) -> nn.Module:
        c_op = max(1, round(shape[0] * op_channel_ratio))
        return AttentionCell(spec, shape[0], c_op, shape, op_params=op_params)

    return factory


def build_model(spec: TrialSpec, num_classes: int, input_shape: tuple[int, int, int, int],
                module_factory: ModuleFactory | None = None) -> nn.Module:  # fmt: skip
    """The backbone of a spec with its inserted modules (on the CPU).

    ``spec.backbone_checkpoint`` is loaded into the backbone before the modules are inserted
    (``temporal_kernels_one`` converts the loaded 3D kernels), with
    ``load_backbone_checkpoint``.

    Args:
        spec: The trial spec.
        num_classes: Classifier size.
        input_shape: Clip shape ``(3, T, H, W)``.
        module_factory: Overrides ``spec.cell`` when given.

    Returns:
        The model.

    Raises:
        CheckpointMismatchError: If the checkpoint's keys differ beyond a resized head.
    """
    from attnas.backbones import build_backbone, insert_cells
    from attnas.backbones.checkpoint import load_backbone_checkpoint

    model = build_backbone(spec.backbone, num_classes, input_shape, **spec.backbone_kwargs)
    if spec.backbone_checkpoint is not None:
        report = load_backbone_checkpoint(model, spec.backbone_checkpoint)
        logger.info("loaded %d tensors from %s", len(report.loaded), spec.backbone_checkpoint)
    if spec.temporal_kernels_one:
        set_temporal_kernels_to_one(model)
    factory = module_factory or cell_factory(spec.cell, spec.op_channel_ratio, spec.op_params)
    if factory is not None:
        insert_cells(model, spec.positions, factory)  # type: ignore[arg-type]
    return model


def data_report(
    datasets: tuple[Dataset, Dataset] | None, loader_failures: dict[str, str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """What went wrong with the data, per split: ``{split: {kind: {path: detail}}}``.

    Kinds: ``unreadable`` (dropped when the dataset opened every header), ``decode_failed``
    (skipped by the loaders during training or evaluation, ``loader_failures``) and ``padded``
    (shorter than a clip's span: the last frame repeats; the detail is the frame count). Only
    non-empty splits and kinds appear, so ``{}`` means the data was read in full.
    """
    report: dict[str, dict[str, dict[str, Any]]] = {}
    if datasets is None:
        return report
    left = dict(loader_failures)
    for split, ds in zip(("train", "val"), datasets):
        entry: dict[str, dict[str, Any]] = {}
        if getattr(ds, "invalid", None):
            entry["unreadable"] = dict(sorted(ds.invalid.items()))  # type: ignore[attr-defined]
        paths = {str(r.path) for r in getattr(ds, "records", ())}
        failed = {p: r for p, r in left.items() if p in paths}
        if failed:
            entry["decode_failed"] = dict(sorted(failed.items()))
            left = {p: r for p, r in left.items() if p not in failed}
        if getattr(ds, "padded", None):
            entry["padded"] = dict(sorted(ds.padded.items()))  # type: ignore[attr-defined]
        if entry:
            report[split] = entry
    if left:
        report.setdefault("train", {}).setdefault("decode_failed", {}).update(sorted(left.items()))
    return report


def _failure_lines(report: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, ...]:
    """``"<split> <kind>: <path>: <reason>"`` of every unreadable or failed item."""
    return tuple(
        f"{split} {kind}: {path}: {reason}"
        for split, kinds in report.items()
        for kind in ("unreadable", "decode_failed")
        for path, reason in kinds.get(kind, {}).items()
    )


def _count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    from attnas.backbones import count_flops

    try:
        return count_flops(model, input_shape)
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
        logger.info("FLOP count on the meta device failed (%s); counting on the CPU", err)
    try:
        return count_flops(model, input_shape, device="cpu")
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
        logger.warning("could not count FLOPs: %s", err)
        return None


def _peak_memory_mb(device: torch.device | None) -> float | None:
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _error_text(err: BaseException) -> str:
    tail = traceback.format_exception(type(err), err, err.__traceback__)[-6:]
    return f"{type(err).__name__}: {err}\n" + "".join(tail)


def run_trial(
    spec: TrialSpec,
    *,
    module_factory: ModuleFactory | None = None,
    hooks: HooksArg = (),
    exclude_parameters: ExcludeArg = (),
    datasets: tuple[Dataset, Dataset] | None = None,
    tracker: Tracker | None = None,
) -> TrialResult:
    """Build the spec's model and data, train, evaluate, and return the result.

    Args:
        spec: What to run.
        module_factory: ``factory(name, shape)`` inserted at ``spec.positions`` instead of
            ``spec.cell``.
        hooks: Trainer hooks, or a callable ``model -> hooks``.
        exclude_parameters: Parameters kept out of the network optimiser, or a callable
            ``model -> parameters``.
        datasets: ``(train, val)`` to use instead of building ``spec.dataset``.
        tracker: Tracker to use (the caller finishes it); None builds ``spec.tracker`` for
            ``spec.run_dir`` and finishes it here.

    Returns:
        The ``TrialResult`` (also written to ``<run_dir>/result.json`` by rank 0).

    Raises:
        Exception: Only with ``spec.raise_on_failure``: whatever made the trial fail.
    """
    start = time.perf_counter()
    info = dist_info()
    run_dir = None if spec.run_dir is None else Path(spec.run_dir)
    own_tracker = tracker is None
    if tracker is None:
        tracker = build_tracker(
            spec.tracker if info.is_main else "none",
            run_dir if info.is_main else None,
            spec.to_dict() | {"seed": spec.seed},
            name=spec.name,
        )
    trainer: Trainer | None = None
    num_parameters: int | None = None
    flops: int | None = None
    device: torch.device | None = None
    built: tuple[Dataset, Dataset] | None = None
    num_classes: int | None = None
    try:
        seed_everything(spec.seed)
        built = datasets if datasets is not None else build_datasets(spec)
        train_ds, val_ds = built
        num_classes = spec.num_classes or int(train_ds.num_classes)  # type: ignore[attr-defined]
        input_shape = spec.input_shape or tuple(train_ds.clip_shape)  # type: ignore[attr-defined]
        model = build_model(spec, num_classes, input_shape, module_factory)
        trial_hooks = hooks(model) if callable(hooks) else list(hooks)
        excluded = exclude_parameters(model) if callable(exclude_parameters) else exclude_parameters
        num_parameters = sum(p.numel() for p in model.parameters())
        flops = _count_flops(model, input_shape)  # after the hooks: they may add modules
        trainer = Trainer(
            model,
            train_ds,
            val_ds,
            spec.train,
            tracker=tracker,
            run_dir=run_dir,
            exclude_parameters=excluded,
            hooks=trial_hooks,
            seed=spec.seed,
        )
        device = trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        history = trainer.fit(resume=spec.resume)
        last = history[-1]
        data = data_report(built, trainer.data_failures)
        result = TrialResult(
            status="completed",
            top1=last.get("val_top1"),
            top5=last.get("val_top5"),
            val_loss=last.get("val_loss"),
            val_nonfinite=last.get("val_nonfinite"),
            history=tuple(history),
            wall_time_s=time.perf_counter() - start,
            peak_memory_mb=_peak_memory_mb(device),
            num_parameters=num_parameters,
            flops=flops,
            seed=spec.seed,
            epochs_completed=trainer.epoch,
            data_failures=_failure_lines(data),
            data_report=data,
            num_classes=num_classes,
            run_dir=spec.run_dir,
        )
    except Exception as err:
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
        if spec.raise_on_failure:
            if own_tracker:
                tracker.finish({"status": "failed", "error": f"{type(err).__name__}: {err}"})
            raise
        logger.warning("trial failed: %s: %s", type(err).__name__, err)
        history = [] if trainer is None else list(trainer.history)
        data = data_report(built, {} if trainer is None else trainer.data_failures)
        result = TrialResult(
            status="failed",
            error=_error_text(err),
            val_nonfinite=history[-1].get("val_nonfinite") if history else None,
            history=tuple(history),
            wall_time_s=time.perf_counter() - start,
            peak_memory_mb=_peak_memory_mb(device),
            num_parameters=num_parameters,
            flops=flops,
            seed=spec.seed,
            epochs_completed=0 if trainer is None else trainer.epoch,
            data_failures=_failure_lines(data),
            data_report=data,
            num_classes=num_classes,
            run_dir=spec.run_dir,
        )
    if own_tracker:
        tracker.finish(
            {
                k: v
                for k, v in result.to_dict().items()
                if k not in ("history", "data_failures", "data_report")
            }
        )
    if run_dir is not None and info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RESULT_NAME).write_text(json.dumps(result.to_dict(), indent=2))
    return result
