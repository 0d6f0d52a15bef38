"""The embedded moving-digits task: determinism, balance, and label information only in time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid

from attnas.data import MovingDigits, build_dataset


def test_deterministic_from_seed_and_streams_differ() -> None:
    a = MovingDigits(64, seed=3)
    b = MovingDigits(64, seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert torch.equal(a.labels, b.labels)
    c = MovingDigits(64, seed=3, stream=1)
    assert not np.array_equal(a.frames, c.frames)
    train = build_dataset("moving_digits", split="train", num_clips=16)
    val = build_dataset("moving_digits", split="val", num_clips=16)
    assert not np.array_equal(train.frames, val.frames)


@pytest.mark.parametrize("num_classes", [2, 4, 8])
def test_labels_balanced_and_clip_format(num_classes: int) -> None:
    ds = MovingDigits(203, num_frames=6, size=32, num_classes=num_classes, mean=0.5, std=0.25)
    counts = torch.bincount(ds.labels, minlength=num_classes)
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 203
    clip, label = ds[5]
    assert clip.shape == ds.clip_shape == (3, 6, 32, 32) and clip.dtype == torch.float32
    assert 0 <= label < num_classes and len(ds.classes) == num_classes
    raw = torch.from_numpy(ds.frames[5]).float() / 255
    torch.testing.assert_close(clip[1], (raw - 0.5) / 0.25)
    torch.testing.assert_close(clip[0], clip[2])


def test_motion_follows_the_label() -> None:
    """Frame t+1 is frame t shifted (on the torus) by the label's direction times the speed."""
    ds = MovingDigits(40, num_frames=4, size=32, num_classes=8, speed=(1, 2))
    dirs = {
        "right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0),
        "down_right": (1, 1), "up_left": (-1, -1), "down_left": (1, -1), "up_right": (-1, 1),
    }  # fmt: skip
    for f, y in zip(ds.frames, ds.labels.tolist()):
        dy, dx = dirs[ds.classes[y]]
        ok = [
            all(np.array_equal(np.roll(f[t], (v * dy, v * dx), axis=(0, 1)), f[t + 1])
                for t in range(3))
            for v in (1, 2)
        ]  # fmt: skip
        assert sum(ok) == 1
        assert f[0].max() > 0


def test_size_64_upscales_digits_and_generates_fast() -> None:
    import time

    start = time.perf_counter()
    ds = MovingDigits(512, num_frames=8, size=64)
    assert time.perf_counter() - start < 5.0
    assert ds.frames.shape == (512, 8, 64, 64)
    # 16 x 16 digits: at most 256 lit pixels per frame, and more than an 8x8 digit could light
    lit = (ds.frames[:, 0] > 0).reshape(512, -1).sum(1)
    assert lit.max() <= 256 and lit.max() > 64


def _single_frame(ds: MovingDigits, t: int) -> np.ndarray:
    return ds.frames[:, t].reshape(len(ds), -1).astype(np.float32) / 255  # (N, H*W)


def _inter_frame_correlation(ds: MovingDigits) -> np.ndarray:
    """Circular cross-correlation of frames 0 and 1 (translation invariant, peaks at the shift)."""
    f = ds.frames[:, :2].astype(np.float32) / 255  # (N, 2, H, W)
    spec = np.conj(np.fft.rfft2(f[:, 0])) * np.fft.rfft2(f[:, 1])
    corr = np.fft.irfft2(spec, s=f.shape[-2:])  # (N, H, W)
    corr /= corr.max(axis=(1, 2), keepdims=True) + 1e-6
    return corr.reshape(len(ds), -1)


def test_single_frames_carry_no_label_information() -> None:
    """Classifiers on single frames score at chance; the same on two frames' relation, ~100 %."""
    k = 4
    train = build_dataset("moving_digits", split="train", num_clips=800, num_classes=k)
    val = build_dataset("moving_digits", split="val", num_clips=400, num_classes=k)
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    # chance 0.25; std of a 400-sample accuracy at chance is 0.022, so 0.34 is ~4 sigma
    for t in (0, 7):
        nc = NearestCentroid().fit(_single_frame(train, t), y_tr)
        assert nc.score(_single_frame(val, t), y_va) < 0.34
    lr = LogisticRegression(max_iter=200).fit(_single_frame(train, 3), y_tr)
    assert lr.score(_single_frame(val, 3), y_va) < 0.34
    # a per-frame model over all frames with averaged scores (late fusion) is at chance too
    frames_tr = np.concatenate([_single_frame(train, t) for t in range(8)])
    per_frame = NearestCentroid().fit(frames_tr, np.tile(y_tr, 8))
    dist = np.stack([
        ((_single_frame(val, t)[:, None, :] - per_frame.centroids_[None]) ** 2).sum(-1)
        for t in range(8)
    ])  # fmt: skip
    assert (dist.mean(0).argmin(1) == y_va).mean() < 0.34
    # the temporal relation of two frames carries the label
    nc = NearestCentroid().fit(_inter_frame_correlation(train), y_tr)
    assert nc.score(_inter_frame_correlation(val), y_va) > 0.95


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes must be 2, 4 or 8, got 3"):
        MovingDigits(8, num_classes=3)
    with pytest.raises(ValueError, match="digits of 16 px do not fit a 12 px canvas"):
        MovingDigits(8, size=12, digit_scale=2)
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        build_dataset("moving_digits", split="test")


def test_distractor_only_adds_a_dimmer_digit() -> None:
    plain = MovingDigits(32, seed=1)
    busy = MovingDigits(32, seed=1, distractor=True)
    assert torch.equal(plain.labels, busy.labels)
    assert (busy.frames >= plain.frames).all() and (busy.frames > plain.frames).any()
    extra = busy.frames[busy.frames > plain.frames]
    assert extra.max() <= 128  # half intensity
