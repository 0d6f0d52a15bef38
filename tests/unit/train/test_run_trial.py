"""run_trial: results, files written, failures as data, spec round trips, frame-wise control."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnas.backbones import build_backbone
from attnas.data import build_dataset
from attnas.train import (
    NonFiniteLossError,
    TrainConfig,
    TrialResult,
    TrialSpec,
    derive_seed,
    run_trial,
    set_temporal_kernels_to_one,
)


def _spec(tmp_path: Path, **changes: object) -> TrialSpec:
    spec = TrialSpec(
        backbone="r3d_tiny",
        dataset="moving_digits",
        dataset_kwargs={"size": 32, "num_frames": 4},
        train_kwargs={"num_clips": 16},
        val_kwargs={"num_clips": 8},
        train=TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu"),
        run_dir=str(tmp_path / "run"),
    )
    return spec.replace(**changes)


def test_spec_and_result_round_trip_through_json(tmp_path: Path) -> None:
    spec = _spec(tmp_path, positions=("res3_0",), trial_key="cell-abc", master_seed=3)
    again = TrialSpec.from_json(spec.to_json())
    assert again == spec
    assert again.seed == derive_seed(3, "cell-abc") != derive_seed(4, "cell-abc")
    result = TrialResult(status="completed", top1=0.5, history=({"epoch": 1, "val_top1": 0.5},))
    assert TrialResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['lrr'\]"):
        TrainConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")  # type: ignore[arg-type]


def test_run_trial_reports_metrics_costs_and_writes_files(tmp_path: Path) -> None:
    result = run_trial(_spec(tmp_path, cell="nonlocal"))
    assert result.status == "completed", result.error
    assert result.epochs_completed == 1 and len(result.history) == 1
    assert result.top1 == result.history[-1]["val_top1"]
    assert 0.0 <= result.top1 <= result.top5 <= 1.0
    bare = build_backbone("r3d_tiny", 4, (3, 4, 32, 32))
    added = 0
    for c, *_ in (bare.insertion_points()[p] for p in bare.default_positions):
        added += sum(p.numel() for p in _nonlocal(c).parameters())
    assert result.num_parameters == sum(p.numel() for p in bare.parameters()) + added
    assert result.flops > 0 and result.peak_memory_mb > 0 and result.wall_time_s > 0
    run = tmp_path / "run"
    assert TrialResult.from_dict(json.loads((run / "result.json").read_text())) == result
    assert (run / "checkpoints" / "last.pt").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in lines] == ["config", "metrics", "summary"]
    assert lines[0]["config"]["cell"] == "nonlocal" and lines[2]["top1"] == result.top1


def _nonlocal(c: int) -> nn.Module:
    from attnas.blocks import NonLocalBlock

    return NonLocalBlock(c, c // 2)


class _NaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def test_nan_loss_gives_failed_status_not_an_exception(tmp_path: Path) -> None:
    result = run_trial(_spec(tmp_path), module_factory=lambda name, shape: _NaN())
    assert result.status == "failed" and not result.ok
    assert result.error.startswith("NonFiniteLossError: non-finite training loss (nan)")
    assert result.top1 is None and result.epochs_completed == 0
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1"):
        run_trial(_spec(tmp_path, raise_on_failure=True), module_factory=lambda n, s: _NaN())


def test_unknown_cell_file_fails_with_its_name(tmp_path: Path) -> None:
    result = run_trial(_spec(tmp_path, cell=str(tmp_path / "missing.yaml")))
    assert result.status == "failed"
    assert "missing.yaml" in result.error and "'none', 'nonlocal'" in result.error


def test_temporal_kernels_one_makes_convolutions_framewise() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, (3, 3, 3), padding=1)
    holder = nn.Sequential(conv)
    assert set_temporal_kernels_to_one(holder) == 1
    flat = holder[0]
    x = torch.randn(1, 2, 5, 6, 6)  # (B, C, T, H, W)
    w2d = conv.weight.sum(dim=2)  # (3, 2, 3, 3)
    per_frame = torch.stack(
        [F.conv2d(x[:, :, t], w2d, conv.bias, padding=1) for t in range(5)], dim=2
    )  # (B, 3, T, H, W)
    torch.testing.assert_close(flat(x), per_frame)
    for name in ("i3d_tiny", "s3d_tiny", "r3d_tiny"):
        model = build_backbone(name, 4)
        points = model.insertion_points()
        assert set_temporal_kernels_to_one(model) > 0
        kernels = [m.kernel_size[0] for m in model.modules() if isinstance(m, nn.Conv3d)]
        assert max(kernels) == 1, name
        assert model.insertion_points() == points
        assert model(torch.zeros(2, 3, 8, 64, 64)).shape == (2, 4)


def test_moving_digits_builds_through_the_registry_used_by_run_trial() -> None:
    ds = build_dataset("moving_digits", split="train", num_clips=4, size=32, num_frames=4)
    assert tuple(ds.clip_shape) == (3, 4, 32, 32) and ds.num_classes == 4


class _NaNInEval(nn.Module):
    """Identity in training, NaN in evaluation: the overflow seen in eval mode only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x * float("nan")


def test_nonfinite_validation_outputs_fail_the_trial(tmp_path: Path) -> None:
    result = run_trial(_spec(tmp_path), module_factory=lambda name, shape: _NaNInEval())
    assert result.status == "failed", "a trial whose validation logits are NaN completed"
    assert result.error.startswith("NonFiniteOutputError: epoch 1: 8 of 8 validation clips")
    assert result.val_nonfinite == 8 and result.history[-1]["val_nonfinite"] == 8
    lenient = _spec(tmp_path, train=TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu",
                                                max_val_nonfinite=1.0))  # fmt: skip
    result = run_trial(lenient, module_factory=lambda name, shape: _NaNInEval())
    assert result.status == "completed" and result.val_nonfinite == 8
    assert result.top1 == 0.0 and result.top5 == 0.0  # NaN clips are errors, not predictions


def test_backbone_checkpoint_that_does_not_match_fails_the_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = build_backbone("r3d_tiny", 10, (3, 4, 32, 32)).state_dict()
    renamed = tmp_path / "renamed.pt"
    torch.save({f"backbone.{k}": v for k, v in state.items()}, renamed)
    result = run_trial(_spec(tmp_path, cell="nonlocal", backbone_checkpoint=str(renamed)))
    assert result.status == "failed", "a checkpoint of which no key matches loaded silently"
    assert result.error.startswith("CheckpointMismatchError")
    assert "backbone.stages.stem.0.weight" in result.error
    # a checkpoint for another number of classes: the head is dropped, the rest loads
    other_head = tmp_path / "k10.pt"
    torch.save(state, other_head)
    caplog.set_level(logging.INFO)
    result = run_trial(_spec(tmp_path, cell="nonlocal", backbone_checkpoint=str(other_head)))
    assert result.status == "completed", result.error
    assert "classifier head resized" in caplog.text and "head.fc.weight" in caplog.text
