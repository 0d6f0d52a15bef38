"""Trainer: LR schedule values, resume equality, multi-view evaluation, skipped items, hooks."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from attnas.data import FailedItem, NoReadableVideosError
from attnas.tracking import build_tracker, read_jsonl
from attnas.train import (
    NonFiniteOutputError,
    TrainConfig,
    Trainer,
    TrainerHook,
    WarmupCosine,
    seed_everything,
)


class _Clips(Dataset):
    """Random clips (3, 4, 6, 6) with labels; training items are randomly flipped (global RNG)."""

    def __init__(self, n: int = 24, classes: int = 3, seed: int = 0, views: int = 1,
                 fail: tuple[int, ...] = ()) -> None:  # fmt: skip
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, views, 3, 4, 6, 6, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.views, self.fail, self.num_classes = views, fail, classes

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Any:
        if i in self.fail:
            return FailedItem(f"clip_{i}.mp4", "InvalidDataError: truncated")
        x = self.x[i] if self.views > 1 else self.x[i, 0]
        if self.views == 1 and torch.rand(()) < 0.5:  # augmentation drawn from the global RNG
            x = x.flip(-1)
        return x, int(self.y[i])


def _model(classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.Dropout(0.2),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, classes),
    )  # fmt: skip


def test_warmup_cosine_matches_formula() -> None:
    f = WarmupCosine(total_steps=20, warmup_steps=4, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert f(12) == pytest.approx(0.1 + 0.9 * 0.5)  # cosine midpoint: (12 - 4) / 16 = 1/2
    assert f(20) == pytest.approx(0.1)
    assert f(8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_trainer_learning_rates_follow_schedule() -> None:
    seed_everything(0)
    config = TrainConfig(
        epochs=2, batch_size=4, lr=0.2, warmup_epochs=0.5, optimizer="sgd", nesterov=True,
        weight_decay=0.0, device="cpu",
    )  # fmt: skip
    trainer = Trainer(_model(), _Clips(32), None, config)
    assert trainer.steps_per_epoch == 8  # 32 items / batch 4, drop_last
    seen = []

    class _Record(TrainerHook):
        def on_train_step(self, trainer: Trainer, batch: Any, step: int) -> None:
            seen.append(trainer.optimizer.param_groups[0]["lr"])

    trainer.hooks.append(_Record())
    lrs_used = [trainer.optimizer.param_groups[0]["lr"]]
    trainer.fit()
    lrs_used += seen[:-1]  # the LR of update s is the LR set after update s - 1
    total, warm = 16, 4
    expected = [0.2 * WarmupCosine(total, warm)(s) for s in range(total)]
    assert lrs_used == pytest.approx(expected)
    assert lrs_used[warm - 1] == pytest.approx(0.2)  # end of warm-up
    assert lrs_used[warm + (total - warm) // 2] == pytest.approx(0.1)  # cosine midpoint
    assert trainer.optimizer.param_groups[0]["nesterov"] is True


class _Kill(TrainerHook):
    """Simulates a killed process: raises at the first step of an epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_step(self, trainer: Trainer, batch: Any, step: int) -> None:
        if step == self.epoch * trainer.steps_per_epoch + 1:
            raise KeyboardInterrupt("killed")


class _Counter(TrainerHook):
    """A stateful hook (like an architecture optimiser): its state must survive a resume."""

    def __init__(self) -> None:
        self.calls = 0

    def on_train_step(self, trainer: Trainer, batch: Any, step: int) -> None:
        self.calls += 1

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Any) -> None:
        self.calls = state["calls"]


def _run(run_dir: Path, resume: bool, hooks: list[TrainerHook]) -> Trainer:
    seed_everything(7)  # as run_trial does: seed, then build the model
    config = TrainConfig(epochs=3, batch_size=4, lr=0.05, warmup_epochs=1, deterministic=True,
                         grad_clip=1.0, label_smoothing=0.1, device="cpu")  # fmt: skip
    trainer = Trainer(_model(), _Clips(20), _Clips(12, seed=1), config, run_dir=run_dir,
                      hooks=hooks, seed=7)  # fmt: skip
    trainer.fit(resume=resume)
    return trainer


def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = _run(tmp_path / "full", resume=False, hooks=[_Counter()])
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", resume=False, hooks=[_Counter(), _Kill(epoch=1)])
    ckpt = torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["hooks"][0] == {"calls": 5}
    resumed = _run(tmp_path / "killed", resume=True, hooks=[_Counter(), _Kill(epoch=99)])
    assert resumed.epoch == full.epoch == 3
    assert resumed.global_step == full.global_step == 15
    assert resumed.hooks[0].calls == full.hooks[0].calls == 15
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # bitwise equal in deterministic mode
    untimed = [
        [{k: v for k, v in e.items() if k not in ("epoch_time_s", "clips_per_s")} for e in h]
        for h in (full.history, resumed.history)
    ]
    assert untimed[0] == untimed[1]  # losses and accuracies of all 3 epochs, exactly


def test_multi_view_evaluation_averages_softmax_scores() -> None:
    seed_everything(0)
    data = _Clips(10, classes=4, views=3)
    model = _model(4).eval()
    config = TrainConfig(batch_size=4, device="cpu")
    trainer = Trainer(model, _Clips(8, classes=4), data, config)
    metrics = trainer.evaluate()
    with torch.no_grad():
        probs = torch.stack([model(data.x[i]).softmax(-1).mean(0) for i in range(10)])  # (10, 4)
    expected_loss = -probs[torch.arange(10), data.y].log().mean().item()
    expected_top1 = (probs.argmax(-1) == data.y).double().mean().item()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["top1"] == pytest.approx(expected_top1)
    assert metrics["top5"] == 1.0 and metrics["clips"] == 10.0  # 4 classes: top-4 covers all


def test_skipped_items_are_counted_and_reported(tmp_path: Path) -> None:
    seed_everything(0)
    config = TrainConfig(epochs=1, batch_size=4, drop_last=False, device="cpu")
    tracker = build_tracker("jsonl", tmp_path, {"k": 1})
    trainer = Trainer(_model(), _Clips(12, fail=(3, 5)), _Clips(6, fail=(0,)), config,
                      tracker=tracker)  # fmt: skip
    (metrics,) = trainer.fit()
    assert metrics["skipped_items"] == 2
    assert metrics["val_clips"] == 5.0
    assert sorted(trainer.data_failures) == ["clip_0.mp4", "clip_3.mp4", "clip_5.mp4"]
    tracker.finish()
    (logged,) = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "metrics"]
    assert logged["skipped_items"] == 2 and logged["step"] == 3


def test_excluded_parameters_stay_out_of_the_network_optimiser() -> None:
    model = _model()
    extra = nn.Parameter(torch.zeros(2))
    model.register_parameter("arch", extra)
    trainer = Trainer(model, _Clips(8), None, TrainConfig(batch_size=4, device="cpu"),
                      exclude_parameters=[extra])  # fmt: skip
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(extra) not in in_opt
    assert len(in_opt) == sum(1 for _ in model.parameters()) - 1


class _NaNForMarked(nn.Module):
    """``_model`` whose logits are NaN for clips marked by a huge first row (``_mark``)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.inner = _model(classes)
        self.active = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)  # (B, K)
        marked = (x[:, 0, 0, 0, 0] > 100) & self.active  # (B,)
        return torch.where(marked[:, None], torch.full_like(out, math.nan), out)


def _mark(data: _Clips, items: tuple[int, ...]) -> _Clips:
    for i in items:
        data.x[i, :, 0, 0, 0, :] = 1e3  # a whole row, so the random flip keeps the marker
    return data


def test_nonfinite_validation_outputs_are_errors_left_out_of_the_loss() -> None:
    seed_everything(0)
    val = _mark(_Clips(10, classes=3, seed=1, views=2), (1, 4))  # views: no random flip
    model = _NaNForMarked().eval()
    trainer = Trainer(model, _Clips(8), val, TrainConfig(batch_size=4, device="cpu"))
    metrics = trainer.evaluate()
    with torch.no_grad():
        probs = torch.stack([model(val.x[i]).softmax(-1).mean(0) for i in range(10)])  # (10, K)
    finite = torch.isfinite(probs).all(1)
    assert finite.tolist() == [i not in (1, 4) for i in range(10)]
    expected_loss = -probs[finite][torch.arange(8), val.y[finite]].log().mean().item()
    correct = (probs[finite].argmax(-1) == val.y[finite]).sum().item()
    assert metrics["nonfinite"] == 2
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["top1"] == pytest.approx(correct / 10)  # NaN clips are errors, not hits
    assert metrics["top5"] == pytest.approx(0.8)  # 3 classes: every finite clip is a top-3 hit


class _HealAfter(TrainerHook):
    """Stops ``_NaNForMarked`` from producing NaN after the given epoch."""

    def __init__(self, model: _NaNForMarked, epochs: int) -> None:
        self.model, self.epochs = model, epochs

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch + 1 >= self.epochs:
            self.model.active = False


def test_nonfinite_final_validation_outputs_fail_the_trial_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_everything(0)
    val = _mark(_Clips(10, seed=1), (1, 4))
    config = TrainConfig(epochs=2, batch_size=4, device="cpu")
    assert config.max_val_nonfinite == 0.0
    trainer = Trainer(_NaNForMarked(), _Clips(8), val, config)
    with pytest.raises(NonFiniteOutputError, match="epoch 2: 2 of 10 validation clips"):
        trainer.fit()
    assert [m["val_nonfinite"] for m in trainer.history] == [2, 2]  # the last epoch recorded
    assert math.isfinite(trainer.history[-1]["val_loss"])
    tolerant = Trainer(_NaNForMarked(), _Clips(8), val, config.replace(max_val_nonfinite=0.2))
    assert [m["val_nonfinite"] for m in tolerant.fit()] == [2, 2]
    # non-finite outputs in an earlier epoch only: a warning, the final evaluation decides
    caplog.set_level(logging.WARNING, logger="attnas.train")
    model = _NaNForMarked()
    healed = Trainer(model, _Clips(8), val, config, hooks=[_HealAfter(model, 1)])
    assert [m["val_nonfinite"] for m in healed.fit()] == [2, 0]
    assert "epoch 1: 2 of 10 validation clips had non-finite outputs" in caplog.text
    with pytest.raises(ValueError, match="max_val_nonfinite"):
        TrainConfig(max_val_nonfinite=1.5)


def test_epoch_in_which_nothing_is_read_raises(caplog: pytest.LogCaptureFixture) -> None:
    seed_everything(0)
    config = TrainConfig(epochs=1, batch_size=4, drop_last=False, device="cpu")
    dead = _Clips(8, fail=tuple(range(8)))
    with pytest.raises(NoReadableVideosError, match=r"training: no item was read \(8 failed"):
        Trainer(_model(), dead, _Clips(4), config).fit()
    with pytest.raises(NoReadableVideosError, match=r"evaluation: no item was read \(4 failed"):
        Trainer(_model(), _Clips(8), _Clips(4, fail=(0, 1, 2, 3)), config).fit()
    caplog.set_level(logging.WARNING, logger="attnas.train")
    (metrics,) = Trainer(_model(), _Clips(12, fail=(3, 5)), _Clips(4), config).fit()
    assert metrics["skipped_items"] == 2
    assert "skipped 2 of 12 items" in caplog.text and "clip_5.mp4" in caplog.text
