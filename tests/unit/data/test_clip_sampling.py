"""Clip samplers and transforms against hand-computed indices and pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnas.data import ClipSampler, EvalClipTransform, TrainClipTransform
from attnas.data.transforms import resize_short_side, to_float_clip


def test_stride_eval_indices() -> None:
    s = ClipSampler(num_frames=4, stride=2)
    assert s.span == 7
    np.testing.assert_array_equal(s.eval_indices(16), [[5, 7, 9, 11]])
    # three clips at 1/6, 3/6, 5/6 of the 9 valid offsets: 2, 5 (4.5 rounds up), 8
    np.testing.assert_array_equal(s.eval_indices(16, 3)[:, 0], [2, 5, 8])
    # shorter than the span: indices clamp to the last frame
    np.testing.assert_array_equal(s.eval_indices(5), [[0, 2, 4, 4]])


def test_stride_train_indices_cover_all_offsets() -> None:
    s = ClipSampler(num_frames=3, stride=2)
    g = torch.Generator().manual_seed(0)
    starts = {int(s.train_indices(10, g)[0]) for _ in range(200)}
    assert starts == set(range(10 - 5 + 1))
    np.testing.assert_array_equal(np.diff(s.train_indices(10, g)), [2, 2])


def test_segment_indices() -> None:
    s = ClipSampler(num_frames=4, mode="segment")
    np.testing.assert_array_equal(s.eval_indices(16), [[2, 6, 10, 14]])
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        idx = s.train_indices(16, g)
        assert all(4 * k <= i < 4 * (k + 1) for k, i in enumerate(idx))
    np.testing.assert_array_equal(s.eval_indices(2), [[0, 0, 1, 1]])


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        ClipSampler(num_frames=0)
    with pytest.raises(ValueError, match="mode must be 'stride' or 'segment'"):
        ClipSampler(mode="dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 frames"):
        ClipSampler().eval_indices(0)


def _ramp(t: int = 2, h: int = 8, w: int = 12) -> np.ndarray:
    x = np.arange(w, dtype=np.uint8)[None, None, :, None] * 20  # horizontal ramp
    return np.broadcast_to(x, (t, h, w, 3)).copy()  # (T, H, W, 3)


def test_to_float_clip_layout_and_scale() -> None:
    frames = np.zeros((3, 4, 5, 3), dtype=np.uint8)
    frames[1, 2, 3, 0] = 255
    clip = to_float_clip(frames)
    assert clip.shape == (3, 3, 4, 5) and clip[0, 1, 2, 3] == 1.0 and clip.sum() == 1.0


def test_eval_centre_and_three_crops() -> None:
    frames = _ramp()  # 8 x 12, short side 8
    raw = {"mean": (0.0,) * 3, "std": (1.0,) * 3}
    centre = EvalClipTransform(8, **raw)(frames)
    assert centre.shape == (3, 2, 8, 8)
    # columns 2..9 of the ramp
    np.testing.assert_allclose(centre[0, 0, 0].numpy() * 255, np.arange(2, 10) * 20, atol=1e-3)
    crops = EvalClipTransform(8, num_crops=3, **raw)(frames)
    assert crops.shape == (3, 3, 2, 8, 8)
    firsts = [float(crops[k, 0, 0, 0, 0]) * 255 for k in range(3)]
    np.testing.assert_allclose(firsts, [0, 40, 80], atol=1e-3)


def test_normalisation_and_short_side_resize() -> None:
    frames = np.full((1, 6, 9, 3), 255, dtype=np.uint8)
    out = EvalClipTransform(4, short_side=4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(frames)
    np.testing.assert_allclose(out[:, 0, 0, 0].numpy(), [1.0, 3.0, 0.5], atol=1e-6)
    resized = resize_short_side(torch.zeros(3, 1, 6, 9), 4)
    assert resized.shape == (3, 1, 4, 6)


def test_train_flip_and_full_crop_match_eval() -> None:
    frames = _ramp(h=8, w=8)
    raw = {"mean": (0.0,) * 3, "std": (1.0,) * 3}
    full = TrainClipTransform(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, **raw)
    out = full(frames, torch.Generator().manual_seed(0))
    ref = EvalClipTransform(8, **raw)(frames).flip(-1)
    torch.testing.assert_close(out, ref)


def test_train_outputs_fixed_size_and_scale_jitter() -> None:
    frames = _ramp(t=3, h=20, w=30)
    g = torch.Generator().manual_seed(0)
    for tr in (TrainClipTransform(16), TrainClipTransform(16, short_side_range=(16, 24))):
        assert tr(frames, g).shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="must start at or above the crop size 16"):
        TrainClipTransform(16, short_side_range=(8, 24))
