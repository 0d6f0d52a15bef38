"""I3D-R50: ResNet-50 inflated to 3D as in the non-local paper (Wang et al. 2018).

Layout (stage names; output at the default 8×224×224 clip):

=========  ================================================================  ================
stage      layers                                                            output
=========  ================================================================  ================
stem       conv 5×7×7, 64, stride 1,2,2; BN; ReLU; max 1×3×3, stride 1,2,2    64 × 8 × 56²
res2_0..2  bottleneck (64, 256), temporal kernels 3, 3, 3                    256 × 8 × 56²
pool2      max 2×1×1, stride 2,1,1                                          256 × 4 × 56²
res3_0..3  bottleneck (128, 512), stride 2 in res3_0, kernels 3, 1, 3, 1      512 × 4 × 28²
res4_0..5  bottleneck (256, 1024), stride 2, kernels 3, 1, 3, 1, 3, 1         1024 × 4 × 14²
res5_0..2  bottleneck (512, 2048), stride 2, kernels 1, 3, 1                  2048 × 4 × 7²
head       global average pool, dropout, linear
=========  ================================================================  ================

Which blocks are inflated: the non-local paper's ``I3D_{3×1×1}`` inflates the first 1×1 conv of
a bottleneck to 3×1×1 in "every other" residual block. This follows the pattern of the authors'
released code, as restated by SlowFast / PyTorchVideo's I3D-R50 (``_TEMPORAL_KERNEL_BASIS["i3d"]``):
res2 all blocks; res3 and res4 blocks 0, 2, (4); res5 block 1 only. The stem's temporal kernel is
5 (``stem_temporal_kernel``, 1 gives the C2D stem); the only temporal downsampling is the 2×1×1
max pool after res2 (``pool2_temporal``). With these choices the parameter count at 400 classes is
PyTorchVideo's published 28.04 M for ``i3d_r50`` (tests/unit/backbones/test_cost.py).

Design choices where the spec is silent:

- Spatial stride on the 1×3×3 conv of the first block of res3..res5 (the PyTorchVideo / SlowFast
  convention; the Caffe2 code strides the first 1×1 conv). Parameter counts are the same.
- The last BatchNorm of every bottleneck starts at zero (``zero_init_residual``, as SlowFast and
  PyTorchVideo do), so each block starts as the identity map plus its shortcut.
- BatchNorm ``eps=1e-5``; the classifier is a linear layer on globally pooled features.

Insertion points: the stem and every bottleneck (``res{stage}_{block}``, 0-based). Default
positions: the non-local paper's placement (REFERENCE_OPS.md): blocks 1 and 3 of res3 and blocks
1, 3, 5 of res4. The CPU-sized ``r3d_tiny`` has 1, 2, 3, 1 blocks and 1/8 of the channels; its
default positions are all of res3 and res4 (2 + 3 = 5 blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from attnas.backbones.base import Shape4, VideoBackbone
from attnas.backbones.registry import register_backbone

_NONLOCAL_POSITIONS = ["res3_1", "res3_3", "res4_1", "res4_3", "res4_5"]


class Bottleneck3D(nn.Module):
    """ResNet bottleneck with a ``k_t×1×1`` first conv (inflated) and a ``1×3×3`` middle conv.

    Args:
        c_in: Input channels.
        c_inner: Bottleneck width.
        c_out: Output channels.
        temporal_kernel: ``k_t`` of ``conv_a`` (1 = not inflated).
        spatial_stride: Stride of ``conv_b`` and of the projection shortcut.
        zero_init_residual: Start ``bn_c``'s weight at zero.

    Shape:
        - Input: ``(B, c_in, T, H, W)``
        - Output: ``(B, c_out, T, H / s, W / s)``
    """

    def __init__(
        self,
        c_in: int,
        c_inner: int,
        c_out: int,
        temporal_kernel: int = 1,
        spatial_stride: int = 1,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        kt, s = temporal_kernel, spatial_stride
        self.conv_a = nn.Conv3d(c_in, c_inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn_a = nn.BatchNorm3d(c_inner)
        self.conv_b = nn.Conv3d(
            c_inner, c_inner, (1, 3, 3), stride=(1, s, s), padding=(0, 1, 1), bias=False
        )
        self.bn_b = nn.BatchNorm3d(c_inner)
        self.conv_c = nn.Conv3d(c_inner, c_out, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(c_out)
        if zero_init_residual:
            nn.init.zeros_(self.bn_c.weight)
        self.shortcut: nn.Module | None = None
        if c_in != c_out or s != 1:
            self.shortcut = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=(1, s, s), bias=False), nn.BatchNorm3d(c_out)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn_a(self.conv_a(x)))  # (B, c_inner, T, H, W)
        y = self.relu(self.bn_b(self.conv_b(y)))  # (B, c_inner, T, H/s, W/s)
        y = self.bn_c(self.conv_c(y))  # (B, c_out, T, H/s, W/s)
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(y + identity)


class _LinearHead(nn.Module):
    """Global average pool, dropout, linear.

    Shape:
        - Input: ``(B, C, T, H, W)``
        - Output: ``(B, num_classes)``
    """

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.mean(dim=(2, 3, 4))  # (B, C)
        return self.fc(self.dropout(x))  # (B, K)


class ResNet3D(VideoBackbone):
    """Inflated ResNet (bottleneck) with named insertion points; I3D-R50 by default.

    Args:
        num_classes: Output size.
        input_shape: ``(3, T, H, W)`` of one clip.
        depths: Blocks in res2..res5 (ResNet-50: 3, 4, 6, 3).
        base_width: Width of res2's bottleneck (64); stage i has ``base_width * 2**i`` inner
            and 4 times that output channels.
        temporal_kernels: Per stage, the temporal kernels of ``conv_a``, cycled over its blocks.
        stem_temporal_kernel: Temporal kernel of the stem conv (5 for I3D, 1 for C2D).
        pool2_temporal: Temporal kernel and stride of the max pool after res2 (1 = none).
        zero_init_residual: Start every bottleneck's last BatchNorm weight at zero.
        dropout: Dropout before the classifier.
        default_positions: Override the 5 default insertion points.

    Shape:
        - Input: ``(B, 3, T, H, W)``
        - Output: ``(B, num_classes)``
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Shape4,
        *,
        depths: Sequence[int] = (3, 4, 6, 3),
        base_width: int = 64,
        temporal_kernels: Sequence[Sequence[int]] = ((3,), (3, 1), (3, 1), (1, 3)),
        stem_temporal_kernel: int = 5,
        pool2_temporal: int = 2,
        zero_init_residual: bool = True,
        dropout: float = 0.5,
        default_positions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, input_shape)
        if len(depths) != 4 or len(temporal_kernels) != 4:
            raise ValueError("depths and temporal_kernels need one entry per stage res2..res5")
        kt = stem_temporal_kernel
        stages: dict[str, nn.Module] = {
            "stem": nn.Sequential(
                nn.Conv3d(
                    self.input_shape[0],
                    base_width,
                    (kt, 7, 7),
                    stride=(1, 2, 2),
                    padding=(kt // 2, 3, 3),
                    bias=False,
                ),
                nn.BatchNorm3d(base_width),
                nn.ReLU(inplace=True),
                nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            )
        }
        c = base_width
        for i, (depth, kernels) in enumerate(zip(depths, temporal_kernels)):
            inner = base_width * 2**i
            for j in range(depth):
                stages[f"res{i + 2}_{j}"] = Bottleneck3D(
                    c,
                    inner,
                    4 * inner,
                    temporal_kernel=kernels[j % len(kernels)],
                    spatial_stride=2 if (i > 0 and j == 0) else 1,
                    zero_init_residual=zero_init_residual,
                )
                c = 4 * inner
            if i == 0 and pool2_temporal > 1:
                stages["pool2"] = nn.MaxPool3d(
                    (pool2_temporal, 1, 1), stride=(pool2_temporal, 1, 1)
                )
        self.stages = nn.ModuleDict(stages)
        points = [n for n in stages if n != "pool2"]
        self.define_insertion_points(points, list(default_positions or _NONLOCAL_POSITIONS))
        self.head = _LinearHead(c, num_classes, dropout)


@register_backbone
def i3d_r50(
    num_classes: int = 400, input_shape: Shape4 | None = None, **kwargs: object
) -> ResNet3D:
    """I3D-R50 as in the non-local paper; default clip 3×8×224×224 (the 8×8 recipe)."""
    return ResNet3D(num_classes, input_shape or (3, 8, 224, 224), **kwargs)  # type: ignore[arg-type]


@register_backbone
def r3d_tiny(
    num_classes: int = 10, input_shape: Shape4 | None = None, **kwargs: object
) -> ResNet3D:
    """CPU-sized I3D-R50: blocks 1, 2, 3, 1 and 1/8 of the channels; default clip 3×8×64×64.

    At the default clip res3 gives 64 × 4 × 8 × 8 features (N = 256) and res4 128 × 4 × 4 × 4.
    """
    opts: dict[str, object] = {
        "depths": (1, 2, 3, 1),
        "base_width": 8,
        "default_positions": ["res3_0", "res3_1", "res4_0", "res4_1", "res4_2"],
        **kwargs,
    }
    return ResNet3D(num_classes, input_shape or (3, 8, 64, 64), **opts)  # type: ignore[arg-type]
