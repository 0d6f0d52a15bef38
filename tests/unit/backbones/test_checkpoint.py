from __future__ import annotations

import pytest
import torch

from attnas.backbones import (
    CheckpointMismatchError,
    build_backbone,
    insert_cells,
    load_checkpoint,
    save_checkpoint,
)


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
