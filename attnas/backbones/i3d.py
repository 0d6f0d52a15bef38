"""I3D (Inception-v1 inflated, Carreira & Zisserman 2017) and S3D (Xie et al. 2018).

Both share one Inception layout; S3D replaces every convolution with a kernel larger than 1
(``k_t × k × k``) by a separable pair ``1 × k × k`` then ``k_t × 1 × 1``, each followed by
BatchNorm and ReLU (S3D paper Fig. 2c; no feature gating, i.e. S3D, not S3D-G).

Layout (stage names are the DeepMind I3D end points):

=================  ==========================================  =====================
stage              layer                                       output at 64×224×224
=================  ==========================================  =====================
Conv3d_1a_7x7      conv 7×7×7, 64, stride 2                    64 × 32 × 112 × 112
MaxPool3d_2a_3x3   max 1×3×3, stride 1,2,2                     64 × 32 × 56 × 56
Conv3d_2b_1x1      conv 1×1×1, 64                              64 × 32 × 56 × 56
Conv3d_2c_3x3      conv 3×3×3, 192                             192 × 32 × 56 × 56
MaxPool3d_3a_3x3   max 1×3×3, stride 1,2,2                     192 × 32 × 28 × 28
Mixed_3b, 3c       Inception                                   256, 480 × 32 × 28²
MaxPool3d_4a_3x3   max 3×3×3, stride 2                         480 × 16 × 14 × 14
Mixed_4b … 4f      Inception                                   512 … 832 × 16 × 14²
MaxPool3d_5a_2x2   max 2×2×2, stride 2                         832 × 8 × 7 × 7
Mixed_5b, 5c       Inception                                   832, 1024 × 8 × 7²
head               avg 2×7×7 stride 1, dropout, 1×1×1 conv logits, mean over time
=================  ==========================================  =====================

Design choices where the papers are silent or this code departs from them:

- Padding: PyTorch symmetric padding (k // 2) instead of TensorFlow's ``SAME``. The output sizes
  are the same for the even sizes used in practice; the windows are offset by one pixel.
- BatchNorm ``eps=1e-3`` (the TensorFlow value of the released models); convolutions before a
  BatchNorm have no bias; the logits convolution has a bias (as in the released I3D).
- The head's average pool is ``min(2, T) × H × W`` with stride 1 (the published ``2×7×7`` at
  the default clip); the per-window logits are averaged over time.
- ``stem_temporal_stride`` (default 2, the published value) is a parameter so that the CPU-sized
  variants can keep 4 frames at their insertion points from an 8-frame clip.
- ``width`` scales every channel count (rounded to a multiple of 4, at least 4) for the
  CPU-sized variants; ``width=1`` is the published network.

Insertion points: every convolutional unit and Inception block. Default positions: the five
Inception blocks of stage 4 (``Mixed_4b … Mixed_4f``). The AttentionNAS paper inserts 5 cells
but does not list where; the non-local paper (REFERENCE_OPS.md) puts its blocks in the middle
stages of ResNet (res3, res4) where features are 1/8 and 1/16 of the input. Stage 4 is the
Inception network's 1/16 stage and has exactly five blocks; at the default 64×224×224 clip it
has N = 16·14·14 = 3136 positions (affordable for dot-product attention), while stage 3 would
have N = 32·28·28 = 25088.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnas.backbones.base import Shape4, VideoBackbone
from attnas.backbones.registry import register_backbone

_BN_EPS = 1e-3

# Inception-v1 blocks: (1x1, 3x3 reduce, 3x3, 3x3' reduce, 3x3', pool proj). I3D uses a 3x3x3
# conv in the second "5x5" branch as well, as the released model does.
_INCEPTION_V1: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_I3D_DEFAULT_POSITIONS = ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"]


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected 3 values (T, H, W), got {v}")
    return t  # type: ignore[return-value]


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU, padding ``k // 2``.

    Shape:
        - Input: ``(B, C_in, T, H, W)``
        - Output: ``(B, C_out, T', H', W')``
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        k = _triple(kernel)
        self.conv = nn.Conv3d(
            c_in, c_out, k, stride=_triple(stride), padding=tuple(x // 2 for x in k), bias=False
        )
        self.bn = nn.BatchNorm3d(c_out, eps=_BN_EPS)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))  # (B, C_out, T', H', W')


class SeparableUnit3D(nn.Module):
    """S3D's separable unit: ``1×k×k`` spatial then ``k_t×1×1`` temporal, each conv+BN+ReLU.

    The spatial stride goes to the spatial conv and the temporal stride to the temporal conv.

    Shape:
        - Input: ``(B, C_in, T, H, W)``
        - Output: ``(B, C_out, T', H', W')``
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        kt, kh, kw = _triple(kernel)
        st, sh, sw = _triple(stride)
        self.spatial = Unit3D(c_in, c_out, (1, kh, kw), (1, sh, sw))
        self.temporal = Unit3D(c_out, c_out, (kt, 1, 1), (st, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal(self.spatial(x))  # (B, C_out, T', H', W')


def _conv_unit(
    separable: bool,
    c_in: int,
    c_out: int,
    kernel: int | Sequence[int],
    stride: int | Sequence[int] = 1,
) -> nn.Module:
    """A plain unit for 1×1×1 kernels, otherwise the I3D (3D) or S3D (separable) unit."""
    if separable and max(_triple(kernel)) > 1:
        return SeparableUnit3D(c_in, c_out, kernel, stride)
    return Unit3D(c_in, c_out, kernel, stride)


class InceptionBlock3D(nn.Module):
    """Inflated Inception-v1 block: four branches concatenated on channels.

    Branches: 1×1×1; 1×1×1 -> 3×3×3; 1×1×1 -> 3×3×3; max 3×3×3 (stride 1) -> 1×1×1. With
    ``separable=True`` the 3×3×3 convs are S3D's separable units.

    Shape:
        - Input: ``(B, C_in, T, H, W)``
        - Output: ``(B, b0 + b1b + b2b + b3b, T, H, W)``
    """

    def __init__(self, c_in: int, channels: Sequence[int], separable: bool = False) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = channels
        self.branch0 = Unit3D(c_in, b0, 1)
        self.branch1 = nn.Sequential(Unit3D(c_in, b1a, 1), _conv_unit(separable, b1a, b1b, 3))
        self.branch2 = nn.Sequential(Unit3D(c_in, b2a, 1), _conv_unit(separable, b2a, b2b, 3))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), Unit3D(c_in, b3b, 1))
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1
        )  # (B, C_out, T, H, W)


def separable_avg_pool3d(
    x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]
) -> Tensor:
    """``F.avg_pool3d(x, kernel, stride)`` (no padding) as two 2D average pools.

    Without padding, the mean over a ``kt×kh×kw`` box is the mean over ``kt`` frames of the
    per-frame ``kh×kw`` means. ``avg_pool2d`` has a deterministic CUDA backward, where
    ``avg_pool3d``'s makes ``torch.use_deterministic_algorithms(True)`` raise.

    Shape:
        - Input: ``(B, C, T, H, W)``
        - Output: ``(B, C, T', H', W')``, as ``F.avg_pool3d``'s
    """
    (kt, kh, kw), (st, sh, sw) = kernel, stride
    b, c, t, h, w = x.shape
    y = F.avg_pool2d(x.reshape(b, c * t, h, w), (kh, kw), (sh, sw))  # (B, C*T, H', W')
    h2, w2 = y.shape[-2:]
    y = F.avg_pool2d(y.reshape(b, c, t, h2 * w2), (kt, 1), (st, 1))  # (B, C, T', H'*W')
    return y.reshape(b, c, y.shape[2], h2, w2)  # (B, C, T', H', W')


class DeterministicAvgPool3d(nn.AvgPool3d):
    """``nn.AvgPool3d`` (no padding) that computes ``separable_avg_pool3d`` on CUDA when
    deterministic algorithms are on (``TrainConfig.deterministic``), so that a deterministic
    CUDA trial does not raise on ``avg_pool3d``'s backward; elsewhere the 3D kernel runs."""

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda and torch.are_deterministic_algorithms_enabled():
            kernel, stride = _triple(self.kernel_size), _triple(self.stride or self.kernel_size)
            if _triple(self.padding) == (0, 0, 0) and not self.ceil_mode:
                return separable_avg_pool3d(x, kernel, stride)
        return super().forward(x)


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else (int(v[0]), int(v[1]), int(v[2]))


class _InceptionHead(nn.Module):
    """I3D's head: average pool ``kt×H×W`` (stride 1), dropout, 1×1×1 conv logits, mean over time.

    Shape:
        - Input: ``(B, C, T, H, W)``
        - Output: ``(B, num_classes)``
    """

    def __init__(self, feature_shape: Shape4, num_classes: int, dropout: float) -> None:
        super().__init__()
        c, t, h, w = feature_shape
        self.pool = DeterministicAvgPool3d((min(2, t), h, w), stride=1)
        self.dropout = nn.Dropout(dropout)
        self.logits = nn.Conv3d(c, num_classes, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.logits(self.dropout(self.pool(x)))  # (B, K, T', 1, 1)
        return x.mean(dim=(2, 3, 4))  # (B, K)


class InceptionVideoNet(VideoBackbone):
    """I3D (``separable=False``) or S3D (``separable=True``) with named insertion points.

    Args:
        num_classes: Output size.
        input_shape: ``(3, T, H, W)`` of one clip.
        separable: Build S3D's separable convolutions instead of full 3D ones.
        width: Channel multiplier (1 = the published network).
        stem_temporal_stride: Temporal stride of ``Conv3d_1a_7x7`` (published: 2).
        dropout: Dropout probability before the logits.
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
        separable: bool = False,
        width: float = 1.0,
        stem_temporal_stride: int = 2,
        dropout: float = 0.5,
        default_positions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, input_shape)
        self.separable = separable

        def ch(c: int) -> int:
            return c if width == 1.0 else max(4, round(c * width / 4) * 4)

        c_in = self.input_shape[0]
        stages: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": _conv_unit(separable, c_in, ch(64), 7, (stem_temporal_stride, 2, 2)),
            "MaxPool3d_2a_3x3": nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            "Conv3d_2b_1x1": Unit3D(ch(64), ch(64), 1),
            "Conv3d_2c_3x3": _conv_unit(separable, ch(64), ch(192), 3),
            "MaxPool3d_3a_3x3": nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        }
        c = ch(192)
        for name, spec in _INCEPTION_V1.items():
            if name == "Mixed_4b":
                stages["MaxPool3d_4a_3x3"] = nn.MaxPool3d(3, stride=2, padding=1)
            if name == "Mixed_5b":
                stages["MaxPool3d_5a_2x2"] = nn.MaxPool3d(2, stride=2)
            block = InceptionBlock3D(c, [ch(x) for x in spec], separable=separable)
            stages[name] = block
            c = block.out_channels
        self.stages = nn.ModuleDict(stages)
        points = [n for n in stages if not n.startswith("MaxPool")]
        self.define_insertion_points(points, list(default_positions or _I3D_DEFAULT_POSITIONS))
        self.head = _InceptionHead(self.feature_shape, num_classes, dropout)


_FULL_CLIP: Shape4 = (3, 64, 224, 224)
_TINY_CLIP: Shape4 = (3, 8, 64, 64)
# CPU-sized: 1/8 of the channels and temporal stride 1 in the stem, so that an 8×64×64 clip
# reaches stage 4 as 4×4×4 features (N = 64 positions, C = 64..104).
_TINY_OPTIONS = {"width": 0.125, "stem_temporal_stride": 1}


@register_backbone
def i3d(
    num_classes: int = 400, input_shape: Shape4 | None = None, **kwargs: object
) -> InceptionVideoNet:
    """I3D, Inception-v1 inflated (Carreira & Zisserman 2017); default clip 3×64×224×224."""
    return InceptionVideoNet(num_classes, input_shape or _FULL_CLIP, **kwargs)  # type: ignore[arg-type]


@register_backbone
def s3d(
    num_classes: int = 400, input_shape: Shape4 | None = None, **kwargs: object
) -> InceptionVideoNet:
    """S3D, separable Inception (Xie et al. 2018); default clip 3×64×224×224."""
    return InceptionVideoNet(
        num_classes,
        input_shape or _FULL_CLIP,
        separable=True,
        **kwargs,  # type: ignore[arg-type]
    )


@register_backbone
def i3d_tiny(
    num_classes: int = 10, input_shape: Shape4 | None = None, **kwargs: object
) -> InceptionVideoNet:
    """CPU-sized I3D (1/8 channels, stem temporal stride 1); default clip 3×8×64×64."""
    opts = {**_TINY_OPTIONS, **kwargs}
    return InceptionVideoNet(num_classes, input_shape or _TINY_CLIP, **opts)  # type: ignore[arg-type]


@register_backbone
def s3d_tiny(
    num_classes: int = 10, input_shape: Shape4 | None = None, **kwargs: object
) -> InceptionVideoNet:
    """CPU-sized S3D (1/8 channels, stem temporal stride 1); default clip 3×8×64×64."""
    opts = {**_TINY_OPTIONS, **kwargs}
    return InceptionVideoNet(
        num_classes,
        input_shape or _TINY_CLIP,
        separable=True,
        **opts,  # type: ignore[arg-type]
    )
