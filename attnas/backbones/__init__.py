"""Video backbones with named insertion points: I3D, S3D, I3D-R50 and CPU-sized variants.

``build_backbone(name, num_classes, input_shape)`` builds a registered backbone for a clip shape
``(3, T, H, W)``; ``model.insertion_points()`` gives ``{name: (C, T, H, W)}`` and
``model.default_positions`` the 5 default positions; ``insert_cells(model, positions, factory)``
puts ``factory(name, shape)`` after each. ``load_checkpoint`` reads local weights
(``weights_only=True``); ``count_parameters`` / ``count_flops`` report the model's cost.

Registered: ``i3d``, ``s3d``, ``i3d_r50`` (full size) and ``i3d_tiny``, ``s3d_tiny``,
``r3d_tiny`` (the same code with fewer channels/blocks, default clip 3×8×64×64, insertion
points with T·H·W ≤ 256).
"""

from __future__ import annotations

from attnas.backbones import i3d as _i3d  # noqa: F401  (registers i3d, s3d, *_tiny)
from attnas.backbones import resnet3d as _resnet3d  # noqa: F401  (registers i3d_r50, r3d_tiny)
from attnas.backbones.base import VideoBackbone
from attnas.backbones.checkpoint import (
    CheckpointMismatchError,
    LoadReport,
    load_checkpoint,
    save_checkpoint,
)
from attnas.backbones.cost import count_flops, count_parameters
from attnas.backbones.i3d import InceptionVideoNet
from attnas.backbones.insertion import insert_cells, remove_cells
from attnas.backbones.registry import build_backbone, list_backbones, register_backbone
from attnas.backbones.resnet3d import ResNet3D

__all__ = [
    "CheckpointMismatchError",
    "InceptionVideoNet",
    "LoadReport",
    "ResNet3D",
    "VideoBackbone",
    "build_backbone",
    "count_flops",
    "count_parameters",
    "insert_cells",
    "list_backbones",
    "load_checkpoint",
    "register_backbone",
    "remove_cells",
    "save_checkpoint",
]
