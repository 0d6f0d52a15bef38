from __future__ import annotations

import pytest
import torch
from torch import nn

from attnas.backbones import build_backbone, list_backbones, register_backbone
from attnas.backbones import registry as registry_module


def test_all_backbones_registered():
    assert set(list_backbones()) >= {"i3d", "s3d", "i3d_r50", "i3d_tiny", "s3d_tiny", "r3d_tiny"}
    assert list_backbones("*_tiny") == ["i3d_tiny", "r3d_tiny", "s3d_tiny"]
    assert list_backbones("nothing*") == []


def test_duplicate_name_refused():
    with pytest.raises(ValueError, match="'i3d' is already registered"):

        @register_backbone(name="i3d")
        def _other(num_classes, input_shape, **kwargs):
            return nn.Identity()


def test_register_and_build_custom(monkeypatch):
    monkeypatch.setattr(
        registry_module._BACKBONES, "_entries", dict(registry_module._BACKBONES._entries)
    )

    @register_backbone
    def my_net(num_classes, input_shape=None, width=3):
        return nn.Linear(width, num_classes)

    assert "my_net" in list_backbones()
    model = build_backbone("my_net", 7, width=5)
    assert (model.in_features, model.out_features) == (5, 7)


def test_unknown_backbone_lists_registered():
    with pytest.raises(KeyError, match=r"unknown backbone 'resnet9000'.*i3d_r50"):
        build_backbone("resnet9000", 10)


def test_user_network_as_backbone(monkeypatch):
    """A user's own network: subclass VideoBackbone, register, insert cells."""
    from attnas.backbones import VideoBackbone, insert_cells

    monkeypatch.setattr(
        registry_module._BACKBONES, "_entries", dict(registry_module._BACKBONES._entries)
    )

    class TwoConv(VideoBackbone):
        def __init__(self, num_classes, input_shape):
            super().__init__(num_classes, input_shape)
            self.stages = nn.ModuleDict(
                {
                    "conv1": nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1),
                    "conv2": nn.Conv3d(8, 16, 3, stride=2, padding=1),
                }
            )
            self.define_insertion_points(["conv1", "conv2"], ["conv2"])
            self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    @register_backbone
    def two_conv(num_classes, input_shape=None):
        return TwoConv(num_classes, input_shape or (3, 4, 16, 16))

    model = build_backbone("two_conv", 3)
    assert model.insertion_points() == {"conv1": (8, 4, 8, 8), "conv2": (16, 2, 4, 4)}
    insert_cells(model, None, lambda pos, shape: nn.BatchNorm3d(shape[0]))
    assert list(model.inserted) == ["conv2"]
    assert model(torch.randn(2, 3, 4, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"insertion points \['conv3'\] are not stages"):
        model.define_insertion_points(["conv3"], [])
