from __future__ import annotations

import logging

import pytest
import torch

from attnas.backbones import (
    CheckpointMismatchError,
    build_backbone,
    insert_cells,
    load_checkpoint,
    save_checkpoint,
)
from attnas.backbones.checkpoint import load_backbone_checkpoint


def _trained_like(name="r3d_tiny", seed=0):
    torch.manual_seed(seed)
    model = build_backbone(name, 10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.train()(torch.randn(2, *model.input_shape))  # moves the BN running statistics
    return model


def test_round_trip_is_exact(tmp_path):
    src = _trained_like(seed=0)
    path = save_checkpoint(src, tmp_path / "ckpt" / "r3d.pt")
    dst = build_backbone("r3d_tiny", 10, checkpoint=path)
    a, b = src.state_dict(), dst.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(2, *src.input_shape)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))


def test_wrapped_and_dataparallel_checkpoints(tmp_path):
    src = _trained_like(seed=1)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "w.pt")
    dst = build_backbone("r3d_tiny", 10)
    report = load_checkpoint(dst, tmp_path / "w.pt")
    assert report.exact
    assert torch.equal(dst.head.fc.weight, src.head.fc.weight)


def test_wrong_key_is_named(tmp_path):
    state = _trained_like().state_dict()
    state["stages.res9_0.conv_a.weight"] = state.pop("stages.res3_0.conv_a.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(build_backbone("r3d_tiny", 10), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing keys" in msg and "stages.res3_0.conv_a.weight" in msg
    assert "unexpected keys" in msg and "stages.res9_0.conv_a.weight" in msg
    assert "bad.pt" in msg


def test_non_strict_skips_mismatches_and_reports(tmp_path):
    src = _trained_like()
    path = save_checkpoint(src, tmp_path / "k400.pt")
    dst = build_backbone("r3d_tiny", 7)  # a different head
    with pytest.raises(CheckpointMismatchError, match=r"head\.fc\.weight.*\[10, 256\].*\[7, 256\]"):
        load_checkpoint(dst, path)
    report = load_checkpoint(dst, path, strict=False)
    assert set(report.mismatched) == {"head.fc.weight", "head.fc.bias"}
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(dst.stages["res3_0"].conv_a.weight, src.stages["res3_0"].conv_a.weight)
    assert dst.head.fc.weight.shape == (7, 256)


def test_backbone_checkpoint_into_model_with_cells(tmp_path):
    src = _trained_like()
    path = save_checkpoint(src, tmp_path / "bare.pt")
    dst = build_backbone("r3d_tiny", 10)
    insert_cells(dst, ["res3_0"], lambda pos, shape: torch.nn.BatchNorm3d(shape[0]))
    with pytest.raises(CheckpointMismatchError, match=r"inserted\.res3_0\.weight"):
        load_checkpoint(dst, path)
    report = load_checkpoint(dst, path, strict=False)
    assert sorted(report.missing) == sorted(
        f"inserted.res3_0.{k}" for k in torch.nn.BatchNorm3d(4).state_dict()
    )


def test_missing_file_and_non_state_dict(tmp_path):
    model = build_backbone("r3d_tiny", 10)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(model, tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_checkpoint(model, tmp_path / "list.pt")


def test_no_matching_key_raises_even_when_not_strict(tmp_path, caplog):
    """A checkpoint with renamed keys loaded 0 of 158 tensors without a word before."""
    state = _trained_like().state_dict()
    torch.save({f"encoder.{k}": v for k, v in state.items()}, tmp_path / "renamed.pt")
    model = build_backbone("r3d_tiny", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="nothing was loaded"):
        load_checkpoint(model, tmp_path / "renamed.pt", strict=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a partial match loads, and the differences are logged
    caplog.set_level(logging.WARNING, logger="attnas.backbones")
    state["stages.res9_0.conv_a.weight"] = state.pop("stages.res3_0.conv_a.weight")
    torch.save(state, tmp_path / "partial.pt")
    report = load_checkpoint(model, tmp_path / "partial.pt", strict=False)
    assert report.missing == ["stages.res3_0.conv_a.weight"]
    assert "stages.res3_0.conv_a.weight" in caplog.text and "stages.res9_0" in caplog.text


def test_backbone_loader_drops_only_a_resized_head_and_accepts_new_modules(tmp_path, caplog):
    src = _trained_like()
    path = save_checkpoint(src, tmp_path / "k10.pt")
    dst = build_backbone("r3d_tiny", 7)
    insert_cells(dst, ["res3_0"], lambda pos, shape: torch.nn.BatchNorm3d(shape[0]))
    head_before = dst.head.fc.weight.detach().clone()
    caplog.set_level(logging.INFO, logger="attnas.backbones")
    report = load_backbone_checkpoint(dst, path)
    assert report.exact
    assert report.dropped_head == ["head.fc.weight", "head.fc.bias"]
    assert sorted(report.new) == sorted(
        f"inserted.res3_0.{k}" for k in torch.nn.BatchNorm3d(4).state_dict()
    )
    assert torch.equal(dst.stages["res3_0"].conv_a.weight, src.stages["res3_0"].conv_a.weight)
    assert torch.equal(dst.head.fc.weight, head_before)  # left as initialised
    assert "classifier head resized" in caplog.text and "[10, 256] -> [7, 256]" in caplog.text
    # same number of classes: the head loads too
    same = build_backbone("r3d_tiny", 10)
    assert load_backbone_checkpoint(same, path).dropped_head == []
    assert torch.equal(same.head.fc.weight, src.head.fc.weight)


def test_backbone_loader_is_strict_outside_the_head(tmp_path):
    state = _trained_like().state_dict()
    state["stages.res9_0.conv_a.weight"] = state.pop("stages.res3_0.conv_a.weight")
    state["stages.stem.0.weight"] = state["stages.stem.0.weight"][:, :, :1]  # a body mismatch
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_backbone_checkpoint(build_backbone("r3d_tiny", 10), tmp_path / "bad.pt")
    msg = str(err.value)
    for key in ("stages.res3_0.conv_a.weight", "stages.res9_0.conv_a.weight", "stem.0.weight"):
        assert key in msg
    state = {f"encoder.{k}": v for k, v in _trained_like().state_dict().items()}
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_backbone_checkpoint(build_backbone("r3d_tiny", 10), tmp_path / "renamed.pt")
