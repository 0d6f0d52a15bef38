"""``Trainer``: the one training loop of ``attnas-train``, GPB trials and the supergraph search.

A ``Trainer`` owns the network optimiser (SGD or AdamW over the model's parameters minus
``exclude_parameters``), a per-step warm-up + cosine schedule, the loss (cross-entropy with
label smoothing), optional gradient clipping and CUDA autocast, the data order, checkpoints
and tracking. Anything else a caller needs during training — the differentiable search's
second optimiser for connection weights, a bilevel step on a held-out split — plugs in as a
``TrainerHook`` whose state is checkpointed and resumed with the rest.

Design choices where the spec is silent:

- Order of one step: zero every gradient of the model (so hooks' excluded parameters start from
  zero too), forward, loss, finite check, backward, clip, network optimiser step, scheduler
  step, then each hook's ``on_train_step`` (the gradients of the step are still there).
- Order of one epoch: train, evaluate, hooks' ``on_epoch_end`` (which may add metrics), log,
  checkpoint. A checkpoint therefore holds complete epochs only; a run killed mid-epoch
  replays that epoch from its start, with the RNG states of its start.
- Reproducible data order: the training sampler is a ``DistributedSampler`` (also in a single
  process, with one replica) whose permutation is seeded by ``(seed, epoch)``; the loader's
  generator, which seeds the workers, is re-seeded from ``(seed, epoch)`` every epoch; workers
  seed NumPy and ``random`` from their torch seed. Augmentations in the main process use the
  global RNGs, which checkpoints save and restore.
- Under DDP each process gets ``batch_size`` clips per step, so one step sees the same global
  batch as a single process with ``batch_size * world_size`` (the sampler interleaves the
  permutation across ranks). Evaluation shards the validation set without padding and sums
  loss and hit counts over ranks, so the metrics equal the single-process ones. Only rank 0
  logs and writes checkpoints.
- Evaluation with several views per clip (``(B, V, 3, T, H, W)`` batches) averages the softmax
  scores of the views; the validation loss is the negative log of the averaged probability of
  the true class (plain cross-entropy when V = 1).
- A non-finite training loss raises ``NonFiniteLossError`` (all ranks agree under DDP);
  ``run_trial`` turns it into a failed trial.
- Non-finite validation outputs: a clip whose averaged log-probabilities are not all finite is
  an error (``topk`` would rank NaN first and score it as a prediction), is left out of the
  validation loss and is counted in ``val_nonfinite`` (and logged). When more than
  ``config.max_val_nonfinite`` of the clips of the *last* epoch's evaluation (the trial's
  result) are such, ``fit`` records the epoch's metrics and raises ``NonFiniteOutputError``
  (default 0: any). Earlier epochs only warn: measured on chains of unbounded dot ops
  (``experiments/nonfinite_dot_chains.py``), a few clips overflow in one early epoch of runs
  whose final model evaluates finitely, and failing those trials would record a working cell
  as a failure.
- Unreadable items: every batch's failed items go to a ``FailureLog`` per epoch and loader;
  its report is logged when items were skipped, and an epoch (training or validation) in which
  no item at all was read raises ``NoReadableVideosError`` (all ranks agree under DDP) instead
  of reporting loss 0 and top-1 0.
- Mixed precision: ``grad_scale`` is the factor the step's gradients carry (the GradScaler's
  scale before its update; 1.0 without fp16). A hook that steps its own optimiser on those
  gradients divides by it and skips a step whose gradients are not finite
  (``unscale_and_check``), as ``GradScaler.step`` does for the network optimiser.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from attnas.tracking import NullTracker, Tracker
from attnas.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from attnas.train.distributed import DistInfo, all_reduce_sum, barrier, dist_info
from attnas.train.seeding import derive_seed, deterministic_mode, seed_worker
from attnas.train.spec import TrainConfig

logger = logging.getLogger("attnas.train")

CHECKPOINT_NAME = "last.pt"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteOutputError(RuntimeError):
    """More validation clips than ``TrainConfig.max_val_nonfinite`` allows had non-finite logits."""


def unscale_and_check(params: Iterable[nn.Parameter], scale: float) -> bool:
    """Divide the gradients of ``params`` by ``scale`` in place; whether all are finite.

    For an optimiser outside the trainer's GradScaler (a hook's) stepping on gradients of the
    scaled loss. Call it before ``step`` and skip the step when it returns False.

    Args:
        params: The parameters whose ``.grad`` to unscale (those without a gradient are skipped).
        scale: ``Trainer.grad_scale`` of the step.

    Returns:
        True when every gradient is finite after unscaling.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    if scale != 1.0:
        for g in grads:
            g.mul_(1.0 / scale)
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class TrainerHook:
    """Extension point of the training loop; override what you need.

    A hook that holds state (an optimiser, a step counter) returns it from ``state_dict`` so
    that checkpoints carry it and ``resume`` restores it.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once at the start of ``fit`` (after a resume has restored state)."""

    def on_train_step(self, trainer: Trainer, batch: Any, step: int) -> None:
        """Called after the network optimiser's step; ``step`` counts steps from 1."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after evaluation; may add entries to ``metrics`` (they are logged)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state returned by ``state_dict``."""


class WarmupCosine:
    """Learning-rate factor per optimiser step: linear warm-up, then cosine to ``min_ratio``.

    ``factor(s)`` multiplies the peak learning rate for the update number ``s`` (0-based):

    - ``s < W``: ``(s + 1) / W`` (the W-th update uses the peak);
    - ``s >= W``: ``m + (1 - m) * (1 + cos(pi * (s - W) / (S - W))) / 2``.

    Args:
        total_steps: S, the number of updates of the whole run.
        warmup_steps: W.
        min_ratio: m, the final factor.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        w, s_total, m = self.warmup_steps, self.total_steps, self.min_ratio
        if step < w:
            return (step + 1) / w
        progress = min(1.0, (step - w) / max(1, s_total - w))
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every item exactly once over all ranks."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """``(clips, labels, failed)`` from a ``ClipBatch`` or a ``(clips, labels)`` pair."""
    failed = getattr(batch, "failed", None)
    if failed is not None:
        return batch.clips, batch.labels, list(failed)
    if isinstance(batch, Sequence) and len(batch) == 2:
        return batch[0], batch[1], []
    raise TypeError(
        f"a batch must be a ClipBatch or a (clips, labels) pair, got {type(batch).__name__}"
    )


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision logits (autocast); float32/float64 logits are kept."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank if info.is_distributed else 0)
    return device


class Trainer:
    """Trains and evaluates one model.

    Args:
        model: The network (a backbone with whatever is inserted), on the CPU or any device.
        train_data: A ``Dataset`` (the trainer builds a seeded, sharded loader) or a ready
            ``DataLoader`` (used as is; its sampler's ``set_epoch`` is called if it has one).
        val_data: Same for evaluation; None skips evaluation.
        config: The training config.
        tracker: Where metrics go (None: nowhere). Only rank 0 logs.
        run_dir: Where ``checkpoints/last.pt`` is written (None: no checkpoints).
        exclude_parameters: Parameters left out of the network optimiser (e.g. architecture
            weights that a hook optimises).
        hooks: Extension hooks, called in order.
        seed: Seed of the data order (None: ``config.seed``).

    Attributes:
        model: The unwrapped model. ``net`` is the module called in training (DDP-wrapped
            under torchrun).
        optimizer: The network optimiser.
        scheduler: Per-step ``LambdaLR`` with a ``WarmupCosine`` factor.
        epoch: Completed epochs.
        global_step: Completed optimiser steps.
        history: One metrics dict per completed epoch.
        data_failures: ``{path: reason}`` of every item the loaders skipped so far.
        last_loss: The last training step's loss (a 0-d tensor), for hooks.
        last_logits: The last training step's logits, for hooks.
        grad_scale: The factor the last step's gradients carry (GradScaler's scale, 1.0
            without fp16 autocast); see ``unscale_and_check``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader | None,
        config: TrainConfig,
        *,
        tracker: Tracker | None = None,
        run_dir: str | Path | None = None,
        exclude_parameters: Iterable[nn.Parameter] = (),
        hooks: Sequence[TrainerHook] = (),
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.seed = config.seed if seed is None else int(seed)
        self.dist = dist_info()
        self.device = _resolve_device(config.device, self.dist)
        self.tracker: Tracker = (
            tracker if tracker is not None and self.dist.is_main else NullTracker()
        )
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.hooks = list(hooks)
        on_cuda = self.device.type == "cuda"
        self.amp_dtype = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp) if on_cuda else None
        )
        self.channels_last = config.channels_last and on_cuda

        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        if self.dist.is_distributed and config.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        if self.dist.is_distributed:
            ids = [self.device.index] if on_cuda else None
            self.net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.net = model

        self._generator = torch.Generator()
        self.train_loader = self._loader(train_data, train=True)
        self.val_loader = None if val_data is None else self._loader(val_data, train=False)
        n_batches = len(self.train_loader)
        if config.max_steps_per_epoch is not None:
            n_batches = min(n_batches, config.max_steps_per_epoch)
        if n_batches < 1:
            raise ValueError(
                f"the training loader yields no full batch ({len(train_data)} items, "  # type: ignore[arg-type]
                f"batch_size={config.batch_size}, world_size={self.dist.world_size}, "
                f"drop_last={config.drop_last})"
            )
        self.steps_per_epoch = n_batches

        excluded = {id(p) for p in exclude_parameters}
        self.parameters = [
            p for p in model.parameters() if p.requires_grad and id(p) not in excluded
        ]
        self.optimizer = self._optimizer(self.parameters)
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(total, warmup, config.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype is torch.float16
        )
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.data_failures: dict[str, str] = {}
        self.last_loss: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None
        self.grad_scale = 1.0

    # ------------------------------------------------------------------ construction helpers
    def _loader(self, data: Dataset | DataLoader, train: bool) -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        from attnas.data import collate_skip_failed

        cfg, info = self.config, self.dist
        sampler: Sampler[int]
        if train:
            sampler = DistributedSampler(
                data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=self.seed
            )
        else:
            sampler = _ShardSampler(len(data), info.rank, info.world_size)  # type: ignore[arg-type]
        return DataLoader(
            data,
            batch_size=cfg.batch_size if train else (cfg.val_batch_size or cfg.batch_size),
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_skip_failed,
            drop_last=cfg.drop_last and train,
            worker_init_fn=seed_worker,
            generator=self._generator,
            pin_memory=self.device.type == "cuda",
        )

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
            )
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    # ------------------------------------------------------------------ loop
    @property
    def checkpoint_path(self) -> Path | None:
        """``<run_dir>/checkpoints/last.pt`` (None without a run directory)."""
        return None if self.run_dir is None else self.run_dir / "checkpoints" / CHECKPOINT_NAME

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train for ``config.epochs`` epochs (from the last checkpoint when resuming).

        The caller seeds the global RNGs before building the model (``run_trial`` does);
        ``fit`` itself only seeds the data order, from ``(seed, epoch)``.

        Args:
            resume: Continue from ``checkpoint_path`` if it exists.

        Returns:
            ``history``: one metrics dict per epoch.

        Raises:
            NonFiniteLossError: If the training loss becomes NaN or infinite.
            NonFiniteOutputError: If more validation clips of the last epoch than
                ``config.max_val_nonfinite`` allows have non-finite outputs (after the epoch's
                metrics are recorded).
            NoReadableVideosError: If an epoch reads no item at all.
        """
        with deterministic_mode(self.config.deterministic):
            path = self.checkpoint_path
            if resume and path is not None and path.is_file():
                self.load_state_dict(load_checkpoint(path, map_location=self.device))
                logger.info("resumed from %s after epoch %d", path, self.epoch)
            for hook in self.hooks:
                hook.on_fit_start(self)
            for epoch in range(self.epoch, self.config.epochs):
                metrics = self.train_epoch(epoch)
                if self.val_loader is not None:
                    metrics.update(
                        {f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()}
                    )
                for hook in self.hooks:
                    hook.on_epoch_end(self, epoch, metrics)
                self.history.append(metrics)
                self.epoch = epoch + 1
                self.tracker.log_metrics(metrics, step=self.global_step)
                if self.dist.is_main:
                    logger.info(_summary_line(metrics, self.config.epochs))
                self._check_outputs(metrics, last=self.epoch == self.config.epochs)
                self._maybe_checkpoint()
        return self.history

    def _check_outputs(self, metrics: Mapping[str, Any], last: bool) -> None:
        """Warn about non-finite validation outputs; apply ``config.max_val_nonfinite`` to the
        last epoch's."""
        bad, clips = metrics.get("val_nonfinite", 0), metrics.get("val_clips", 0)
        if not bad:
            return
        limit = self.config.max_val_nonfinite
        if self.dist.is_main:
            logger.warning(
                "epoch %d: %d of %d validation clips had non-finite outputs (counted as errors)",
                metrics["epoch"], bad, clips,
            )  # fmt: skip
        if last and bad > limit * clips:
            raise NonFiniteOutputError(
                f"epoch {metrics['epoch']}: {bad:.0f} of {clips:.0f} validation clips had "
                f"non-finite outputs, more than max_val_nonfinite={limit} allows"
            )

    def _maybe_checkpoint(self) -> None:
        path, every = self.checkpoint_path, self.config.checkpoint_every
        if path is None or every <= 0:
            return
        if self.epoch % every == 0 or self.epoch == self.config.epochs:
            if self.dist.is_main:
                save_checkpoint(self.state_dict(), path)
            barrier()

    def _set_epoch(self, loader: DataLoader, epoch: int) -> None:
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        if loader.generator is self._generator:
            self._generator.manual_seed(derive_seed(self.seed, "loader", epoch))

    def _show_progress(self) -> bool:
        if not self.dist.is_main:
            return False
        if self.config.progress is not None:
            return self.config.progress
        return sys.stderr.isatty()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training loader (at most ``max_steps_per_epoch`` steps).

        Args:
            epoch: 0-based epoch index (seeds the data order).

        Returns:
            ``epoch`` (1-based), ``train_loss``, ``train_acc``, ``lr``, ``epoch_time_s``,
            ``clips_per_s``, ``skipped_items`` (summed over ranks).

        Raises:
            NoReadableVideosError: If no training item was read in the epoch (every batch
                failed), on every rank.
        """
        from tqdm.auto import tqdm

        self.net.train()
        self._set_epoch(self.train_loader, epoch)
        # loss*n, correct, n, failed items
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        failures = self._failure_log(self.train_loader)
        start = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self._show_progress(),
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            for i, batch in enumerate(self.train_loader):
                if i >= self.steps_per_epoch:
                    break
                x, y, failed = _unpack(batch)
                self._record_failures(failures, x, y, failed)
                if y.numel() == 0:
                    continue
                loss, logits = self._train_step(self._to_device(x), y.to(self.device), epoch, i)
                self.global_step += 1
                for hook in self.hooks:
                    hook.on_train_step(self, batch, self.global_step)
                n = y.numel()
                with torch.no_grad():
                    correct = (logits.argmax(dim=1).cpu() == y).sum()
                sums[:3] += torch.tensor(
                    [loss.item() * n, float(correct), float(n)],
                    dtype=torch.float64,
                    device=self.device,
                )
                bar.update(1)
                if bar.disable is False:
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(
                        loss=f"{sums[0].item() / sums[2].item():.4f}",
                        acc=f"{sums[1].item() / sums[2].item():.3f}",
                        clips_s=f"{sums[2].item() * self.dist.world_size / elapsed:.1f}",
                    )
        finally:
            bar.close()
        sums[3] = float(failures.num_failed)
        all_reduce_sum(sums)
        self._check_read(failures, sums[2].item(), sums[3].item(), f"epoch {epoch + 1}: training")
        elapsed = time.perf_counter() - start
        total = max(sums[2].item(), 1.0)
        return {
            "epoch": epoch + 1,
            "train_loss": sums[0].item() / total,
            "train_acc": sums[1].item() / total,
            "lr": self.scheduler.get_last_lr()[0],
            "epoch_time_s": elapsed,
            "clips_per_s": sums[2].item() / max(elapsed, 1e-9),
            "skipped_items": int(sums[3].item()),
        }

    def _failure_log(self, loader: DataLoader) -> Any:
        from attnas.data import FailureLog

        dataset = getattr(loader, "dataset", None)
        return FailureLog(getattr(dataset, "root", None) or type(dataset).__name__)

    def _record_failures(
        self, log: Any, x: torch.Tensor, y: torch.Tensor, failed: list[tuple[str, str]]
    ) -> None:
        from attnas.data import ClipBatch

        log.update(ClipBatch(x, y, failed))
        self.data_failures.update(dict(failed))

    def _check_read(self, log: Any, read: float, failed: float, what: str) -> None:
        """Raise when no item was read (``read``/``failed`` are summed over ranks); log skips."""
        from attnas.data import NoReadableVideosError

        if read == 0:
            raise NoReadableVideosError(
                f"{what}: no item was read ({failed:.0f} failed on all ranks); {log.report()}"
            )
        if log.num_failed:
            logger.warning("%s: %s", what, log.report())

    def _train_step(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.grad_scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.model.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.net(x)  # (B, K)
        loss = F.cross_entropy(_upcast(logits), y, label_smoothing=self.config.label_smoothing)
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=self.device)
        if self.dist.is_distributed:
            all_reduce_sum(bad)
        if bad.item() > 0:
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, step {index + 1}"
                + (" on some rank" if self.dist.is_distributed else "")
            )
        self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.last_loss, self.last_logits = loss.detach(), logits.detach()
        return loss.detach(), logits.detach()

    @torch.no_grad()
    def evaluate(self, loader: DataLoader | None = None) -> dict[str, float]:
        """Top-1, top-5 (k = min(5, classes)) and loss over a loader, averaging views' softmax.

        A clip whose averaged log-probabilities are not all finite counts as an error in top-1
        and top-5 and is left out of the loss.

        Args:
            loader: The loader (None: the validation loader).

        Returns:
            ``loss`` (mean over the clips with finite outputs; NaN if there is none), ``top1``,
            ``top5``, ``clips``, ``nonfinite`` (clips with non-finite outputs), ``skipped_items``
            (all summed over ranks under DDP).

        Raises:
            NoReadableVideosError: If no item of the loader could be read.
        """
        loader = loader or self.val_loader
        if loader is None:
            raise ValueError("Trainer.evaluate: no loader given and no validation data")
        was_training = self.model.training
        self.model.eval()
        # loss, top1, top5, n, non-finite, failed items
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        failures = self._failure_log(loader)
        try:
            for batch in loader:
                x, y, failed = _unpack(batch)
                self._record_failures(failures, x, y, failed)
                if y.numel() == 0:
                    continue
                views = x.shape[1] if x.dim() == 6 else 1
                if x.dim() == 6:
                    x = rearrange(x, "b v c t h w -> (b v) c t h w")  # (B*V, 3, T, H, W)
                y = y.to(self.device)
                with self._autocast():
                    logits = _upcast(self.model(self._to_device(x)))  # (B*V, K)
                logp = F.log_softmax(logits, dim=-1)  # (B*V, K)
                logp = rearrange(logp, "(b v) k -> b v k", v=views)  # (B, V, K)
                log_mean = torch.logsumexp(logp, dim=1) - math.log(views)  # (B, K)
                finite = torch.isfinite(log_mean).all(dim=1)  # (B,)
                k = min(5, log_mean.shape[1])
                top = log_mean.topk(k, dim=1).indices  # (B, k)
                hits = (top == y[:, None]) & finite[:, None]  # (B, k)
                nll = F.nll_loss(log_mean[finite], y[finite], reduction="sum")
                sums[:5] += torch.stack(
                    [
                        nll.double(),
                        hits[:, 0].sum().double(),
                        hits.any(dim=1).sum().double(),
                        torch.tensor(float(y.numel()), dtype=torch.float64, device=self.device),
                        (~finite).sum().double(),
                    ]
                )
        finally:
            self.model.train(was_training)
        sums[5] = float(failures.num_failed)
        all_reduce_sum(sums)
        self._check_read(failures, sums[3].item(), sums[5].item(), "evaluation")
        n = sums[3].item()
        n_finite = n - sums[4].item()
        return {
            "loss": sums[0].item() / n_finite if n_finite > 0 else math.nan,
            "top1": sums[1].item() / n,
            "top5": sums[2].item() / n,
            "clips": n,
            "nonfinite": int(sums[4].item()),
            "skipped_items": int(sums[5].item()),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: model, optimiser, scheduler, scaler, hooks, RNG, progress."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "hooks": [hook.state_dict() for hook in self.hooks],
            "rng": rng_state(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": list(self.history),
            "data_failures": dict(self.data_failures),
            "config": self.config.to_dict(),
            "seed": self.seed,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict`` (the model must have the same architecture).

        Raises:
            ValueError: If the checkpoint holds a different number of hook states.
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        hook_states = state.get("hooks", [])
        if len(hook_states) != len(self.hooks):
            raise ValueError(
                f"checkpoint holds {len(hook_states)} hook states but the trainer has "
                f"{len(self.hooks)} hooks"
            )
        for hook, hook_state in zip(self.hooks, hook_states):
            hook.load_state_dict(hook_state)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = [dict(h) for h in state["history"]]
        self.data_failures = dict(state.get("data_failures", {}))
        set_rng_state(state["rng"])


def _summary_line(metrics: Mapping[str, Any], epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{epochs}"]
    for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4g}")
    parts.append(f"{metrics['clips_per_s']:.1f} clips/s")
    if metrics.get("val_nonfinite"):
        parts.append(f"{metrics['val_nonfinite']} val clips non-finite")
    if metrics.get("skipped_items"):
        parts.append(f"skipped {metrics['skipped_items']} unreadable items")
    if metrics.get("val_skipped_items"):
        parts.append(f"skipped {metrics['val_skipped_items']} unreadable val items")
    return " | ".join(parts)
