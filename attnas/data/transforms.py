"""Clip transforms: uint8 frames ``(T, H, W, 3)`` -> normalised float clips ``(3, T, H, W)``.

Design choices (the spec is silent on them):

- torch only (no torchvision: there is no CPU build of it in this environment); resizing uses
  ``torch.nn.functional.interpolate`` (bilinear, ``antialias=True`` when shrinking so that small
  crops do not alias).
- One spatial crop and one flip decision per clip, shared by every frame, as every video
  training recipe does (per-frame crops would add fake motion).
- Training: Inception-style random resized crop over an area fraction ``scale`` and aspect
  ``ratio`` (the default for small videos), or, when ``short_side_range`` is given, SlowFast /
  I3D scale jitter (resize the short side to a random length, then a random square crop).
  A horizontal flip with probability ``flip_p``; set it to 0 for tasks whose label depends on
  left/right (Something-Something, the moving-digits task).
- Evaluation: resize the short side to ``short_side`` (default: the crop size) and take one
  centre crop, or three crops along the longer side (SlowFast's 3-crop testing; for square
  frames the crops run along the width). Several crops are stacked as views ``(V, 3, T, H, W)``.
- Default normalisation is the Kinetics mean/std used by pytorchvideo and SlowFast
  (0.45, 0.225 per channel), on pixel values scaled to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

KINETICS_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
KINETICS_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)


def to_float_clip(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Convert uint8 frames to a float clip in [0, 1] with channels first.

    Args:
        frames: uint8 frames.

    Returns:
        float32 clip.

    Shape:
        frames: ``(T, H, W, 3)``; output: ``(3, T, H, W)``.
    """
    x = torch.as_tensor(np.ascontiguousarray(frames))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(x.shape)}")
    x = rearrange(x, "t h w c -> c t h w").float().div_(255.0)  # (3, T, H, W)
    return x.contiguous()


def resize_clip(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of every frame (antialiased when shrinking).

    Args:
        clip: float clip.
        height: output height.
        width: output width.

    Returns:
        The resized clip.

    Shape:
        clip: ``(C, T, H, W)``; output: ``(C, T, height, width)``.
    """
    _, _, h, w = clip.shape
    if (h, w) == (height, width):
        return clip
    x = rearrange(clip, "c t h w -> t c h w")  # (T, C, H, W)
    x = F.interpolate(
        x,
        size=(height, width),
        mode="bilinear",
        align_corners=False,
        antialias=height < h or width < w,
    )  # (T, C, height, width)
    return rearrange(x, "t c h w -> c t h w")  # (C, T, height, width)


def resize_short_side(clip: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize so that the shorter spatial side equals ``short_side``, keeping the aspect ratio.

    Args:
        clip: float clip.
        short_side: target length of the shorter side.

    Returns:
        The resized clip.

    Shape:
        clip: ``(C, T, H, W)``; output: ``(C, T, H', W')`` with ``min(H', W') == short_side``.
    """
    _, _, h, w = clip.shape
    if h <= w:
        new_h, new_w = short_side, max(1, round(w * short_side / h))
    else:
        new_h, new_w = max(1, round(h * short_side / w)), short_side
    return resize_clip(clip, new_h, new_w)


def _normalise(clip: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (clip - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


class TrainClipTransform:
    """Random resized crop (or scale jitter + random crop), horizontal flip, normalisation.

    Args:
        size: output height and width.
        scale: area fraction range of the random resized crop.
        ratio: aspect-ratio range (w/h) of the random resized crop.
        short_side_range: if given, scale jitter instead: the short side is resized to a length
            drawn uniformly from this inclusive range, then a random ``size`` crop is taken.
        flip_p: probability of a horizontal flip.
        mean: per-channel mean (pixel values in [0, 1]).
        std: per-channel standard deviation.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        short_side_range: tuple[int, int] | None = None,
        flip_p: float = 0.5,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        if short_side_range is not None and short_side_range[0] < size:
            raise ValueError(
                f"short_side_range {short_side_range} must start at or above the crop size {size}"
            )
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.short_side_range = short_side_range
        self.flip_p = flip_p
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __call__(
        self, frames: np.ndarray, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Apply the random transform.

        Args:
            frames: uint8 frames.
            generator: torch RNG (None: torch's global RNG).

        Returns:
            Normalised clip.

        Shape:
            frames: ``(T, H, W, 3)``; output: ``(3, T, size, size)``.
        """
        clip = to_float_clip(frames)  # (3, T, H, W)
        if self.short_side_range is not None:
            lo, hi = self.short_side_range
            side = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            clip = resize_short_side(clip, side)  # (3, T, H', W')
            _, _, h, w = clip.shape
            top = int(torch.randint(0, h - self.size + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - self.size + 1, (1,), generator=generator))
            clip = clip[:, :, top : top + self.size, left : left + self.size]  # (3, T, s, s)
        else:
            top, left, ch, cw = self._resized_crop_box(clip.shape[2], clip.shape[3], generator)
            clip = clip[:, :, top : top + ch, left : left + cw]  # (3, T, ch, cw)
            clip = resize_clip(clip, self.size, self.size)  # (3, T, s, s)
        if self.flip_p > 0 and float(torch.rand(1, generator=generator)) < self.flip_p:
            clip = clip.flip(-1)
        return _normalise(clip, self.mean, self.std).contiguous()

    def _resized_crop_box(
        self, h: int, w: int, generator: torch.Generator | None
    ) -> tuple[int, int, int, int]:
        area = h * w
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(*self.scale, generator=generator))
            aspect = math.exp(float(torch.empty(1).uniform_(log_lo, log_hi, generator=generator)))
            cw = round(math.sqrt(target * aspect))
            ch = round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
                return top, left, ch, cw
        # Fallback (as torchvision does): the largest centred crop within the ratio range.
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, round(w / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            ch, cw = h, round(h * self.ratio[1])
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw


class EvalClipTransform:
    """Resize the short side, then one centre crop or three crops along the longer side.

    Args:
        size: output height and width.
        short_side: short-side length before cropping (None: ``size``).
        num_crops: 1 (centre) or 3 (start, centre, end of the longer side).
        mean: per-channel mean (pixel values in [0, 1]).
        std: per-channel standard deviation.
    """

    def __init__(
        self,
        size: int,
        short_side: int | None = None,
        num_crops: int = 1,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"EvalClipTransform.num_crops must be 1 or 3, got {num_crops}")
        self.size = size
        self.short_side = size if short_side is None else short_side
        if self.short_side < size:
            raise ValueError(f"short_side {self.short_side} is smaller than the crop size {size}")
        self.num_crops = num_crops
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __call__(
        self, frames: np.ndarray, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Apply the deterministic transform (``generator`` is accepted and ignored).

        Args:
            frames: uint8 frames.
            generator: unused.

        Returns:
            The centre crop ``(3, T, size, size)`` when ``num_crops == 1``, else the crops
            stacked ``(num_crops, 3, T, size, size)``.
        """
        clip = resize_short_side(to_float_clip(frames), self.short_side)  # (3, T, H', W')
        clip = _normalise(clip, self.mean, self.std)
        _, _, h, w = clip.shape
        s = self.size
        if self.num_crops == 1:
            top, left = (h - s) // 2, (w - s) // 2
            return clip[:, :, top : top + s, left : left + s].contiguous()  # (3, T, s, s)
        crops = []
        for k in range(3):
            if h > w:
                top, left = k * (h - s) // 2, (w - s) // 2
            else:
                top, left = (h - s) // 2, k * (w - s) // 2
            crops.append(clip[:, :, top : top + s, left : left + s])
        return torch.stack(crops).contiguous()  # (3 crops, 3, T, s, s)
