"""Embedded default task: moving handwritten digits whose label is the direction of motion.

Source of the digits: ``sklearn.datasets.load_digits`` — 1,797 real handwritten digits (8×8,
16 grey levels; the UCI optical-recognition test set, 43 writers) bundled inside the
scikit-learn wheel, which is already a dependency of this project. Nothing is downloaded at run
time (MNIST loaders such as torchvision's or ``fetch_openml`` download), so the task works
offline, on CI and in a fresh clone.

Label rule: each clip shows one digit translating at a constant integer velocity on a periodic
(toroidal) canvas; the label is the direction of motion: 2 classes (right, left), 4 (+ down, up,
the default) or 8 (+ the four diagonals). Speed is drawn from ``speed`` independently of the
label (pixels per frame, per axis).

Why a per-frame model is at chance: the start position is uniform over every pixel of the
canvas and the canvas wraps around, so the digit's position in *every* frame is exactly uniform
whatever the direction; the digit image (and the optional distractor) is drawn independently of
the label. Hence the distribution of any single frame is identical for all classes, and the
Bayes accuracy of a classifier that looks at frames one at a time, or averages per-frame
scores (TSN-style late fusion), is 1/num_classes. The label is only in how consecutive frames
relate (the displacement), which a temporal (3D) model sees: the task behaves like
Something-Something rather than Kinetics. ``tests/unit/data/test_motion.py`` checks both sides
with a linear classifier on single-frame pixels (chance) and on inter-frame correlation
(near perfect).

Optional distractor: a second digit at half intensity moving in a random direction, so the
model must track the bright digit (off by default).

Generation is vectorised numpy (one fancy-indexing gather for all clips, in chunks), stores
uint8 frames and converts to float on access; train and validation use different RNG streams
of the same seed (``stream=0`` / ``1``) and, through the builder, disjoint halves of the digit
images (even / odd indices), so validation also measures generalisation to unseen handwriting.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from attnas.data.registry import register_dataset

_DIRECTIONS: dict[str, tuple[int, int]] = {  # (dy, dx); y grows downwards
    "right": (0, 1),
    "left": (0, -1),
    "down": (1, 0),
    "up": (-1, 0),
    "down_right": (1, 1),
    "up_left": (-1, -1),
    "down_left": (1, -1),
    "up_right": (-1, 1),
}
_CHUNK = 256


@lru_cache(maxsize=1)
def _digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images  # (1797, 8, 8), values 0..16
    return np.round(images * (255.0 / 16.0)).astype(np.uint8)


class MovingDigits(Dataset):
    """Clips of a handwritten digit moving in one of 2/4/8 directions; label = direction.

    Args:
        num_clips: number of clips.
        num_frames: frames per clip T.
        size: canvas height = width.
        num_classes: 2, 4 or 8 directions.
        seed: RNG seed.
        stream: RNG stream of the seed (the builder uses 0 for train, 1 for val).
        speed: inclusive range of the speed in pixels per frame (None: ``(s, 2 s)`` with ``s``
            the digit's upscale factor).
        digit_scale: integer upscale of the 8×8 digits (None: ``max(1, size // 32)``).
        digits: which digit images to draw from: ``"all"``, ``"even"`` or ``"odd"`` indices.
        distractor: add a half-intensity digit moving in a random direction.
        mean: normalisation mean (pixel values in [0, 1]).
        std: normalisation std.

    Attributes:
        classes: direction names in label order.
        labels: ``(num_clips,)`` int64 labels (balanced to within one clip).
        frames: ``(num_clips, T, size, size)`` uint8 frames.
    """

    def __init__(
        self,
        num_clips: int = 1024,
        num_frames: int = 8,
        size: int = 32,
        num_classes: int = 4,
        seed: int = 0,
        stream: int = 0,
        speed: tuple[int, int] | None = None,
        digit_scale: int | None = None,
        digits: Literal["all", "even", "odd"] = "all",
        distractor: bool = False,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        if num_classes not in (2, 4, 8):
            raise ValueError(f"MovingDigits.num_classes must be 2, 4 or 8, got {num_classes}")
        scale = max(1, size // 32) if digit_scale is None else digit_scale
        if 8 * scale > size:
            raise ValueError(f"digits of {8 * scale} px do not fit a {size} px canvas")
        lo, hi = (scale, 2 * scale) if speed is None else speed
        if not 1 <= lo <= hi:
            raise ValueError(f"speed range must satisfy 1 <= lo <= hi, got {(lo, hi)}")
        self.classes = list(_DIRECTIONS)[:num_classes]
        self.num_frames, self.size, self.mean, self.std = num_frames, size, mean, std
        self.train = True

        rng = np.random.default_rng([seed, stream])
        pool = _digit_images()
        if digits == "even":
            pool = pool[0::2]
        elif digits == "odd":
            pool = pool[1::2]
        elif digits != "all":
            raise ValueError(f"digits must be 'all', 'even' or 'odd', got {digits!r}")
        labels = rng.permutation(np.arange(num_clips) % num_classes)
        dirs = np.array([_DIRECTIONS[c] for c in self.classes])  # (K, 2)
        velocity = dirs[labels] * rng.integers(lo, hi + 1, num_clips)[:, None]  # (N, 2)
        start = rng.integers(0, size, (num_clips, 2))  # (N, 2)
        glyphs = pool[rng.integers(0, len(pool), num_clips)]  # (N, 8, 8)
        frames = self._render(glyphs, start, velocity, scale)  # (N, T, S, S)
        if distractor:
            d_glyphs = pool[rng.integers(0, len(pool), num_clips)]
            d_dirs = np.array(list(_DIRECTIONS.values()))[rng.integers(0, 8, num_clips)]
            d_vel = d_dirs * rng.integers(lo, hi + 1, num_clips)[:, None]
            d_start = rng.integers(0, size, (num_clips, 2))
            d_frames = self._render(d_glyphs // 2, d_start, d_vel, scale)
            frames = np.maximum(frames, d_frames)
        self.frames = frames
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def _render(
        self, glyphs: np.ndarray, start: np.ndarray, velocity: np.ndarray, scale: int
    ) -> np.ndarray:
        n, t_len, s = len(glyphs), self.num_frames, self.size
        g = 8 * scale
        base = np.zeros((n, s, s), dtype=np.uint8)
        base[:, :g, :g] = glyphs.repeat(scale, axis=1).repeat(scale, axis=2)  # (N, g, g)
        t = np.arange(t_len)
        pos = start[:, None, :] + velocity[:, None, :] * t[None, :, None]  # (N, T, 2)
        grid = np.arange(s)
        out = np.empty((n, t_len, s, s), dtype=np.uint8)
        for a in range(0, n, _CHUNK):
            b = min(a + _CHUNK, n)
            rows = (grid[None, None, :] - pos[a:b, :, 0, None]) % s  # (n, T, S)
            cols = (grid[None, None, :] - pos[a:b, :, 1, None]) % s  # (n, T, S)
            idx = np.arange(a, b)[:, None, None, None]
            out[a:b] = base[idx, rows[:, :, :, None], cols[:, :, None, :]]  # (n, T, S, S)
        return out

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip ``(3, T, H, W)``."""
        return (3, self.num_frames, self.size, self.size)

    @property
    def num_views(self) -> int:
        """Views per item (always 1)."""
        return 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.frames[index]).float().div_(255.0)  # (T, H, W)
        x = (x - self.mean) / self.std
        clip = x.unsqueeze(0).expand(3, -1, -1, -1).contiguous()  # (3, T, H, W)
        return clip, int(self.labels[index])


@register_dataset("moving_digits")
def moving_digits(
    split: str = "train",
    *,
    num_clips: int | None = None,
    num_frames: int = 8,
    size: int = 32,
    num_classes: int = 4,
    seed: int = 0,
    speed: tuple[int, int] | None = None,
    distractor: bool = False,
    mean: float = 0.0,
    std: float = 1.0,
) -> MovingDigits:
    """The embedded motion task: train and val from different RNG streams and digit images.

    Args:
        split: ``"train"`` (stream 0, even-index digits) or ``"val"`` (stream 1, odd-index).
        num_clips: clips in the split (None: 1024 for train, 256 for val).
        num_frames: frames per clip.
        size: canvas height = width.
        num_classes: 2, 4 or 8 directions.
        seed: master seed.
        speed: speed range in pixels per frame (None: default of ``MovingDigits``).
        distractor: add a half-intensity distractor digit.
        mean: normalisation mean.
        std: normalisation std.

    Returns:
        The dataset.
    """
    if split not in ("train", "val"):
        raise ValueError(f"moving_digits split must be 'train' or 'val', got {split!r}")
    train = split == "train"
    if num_clips is None:
        num_clips = 1024 if train else 256
    ds = MovingDigits(
        num_clips, num_frames, size, num_classes, seed, stream=0 if train else 1, speed=speed,
        digits="even" if train else "odd", distractor=distractor, mean=mean, std=std,
    )  # fmt: skip
    ds.train = train
    return ds
