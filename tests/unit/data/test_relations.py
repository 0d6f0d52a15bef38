"""The attention-sensitive task: construction, balance, and that no single event tells the label."""

from __future__ import annotations

import numpy as np
import pytest

from attnas.data import build_dataset
from attnas.data.relations import DistantMatch


def _blobs(frames: np.ndarray) -> list[tuple[int, int]]:
    """(frame, top-left) of the non-empty 8×8 patch in each frame of a clip (none: skipped)."""
    out = []
    for t, f in enumerate(frames):
        ys, xs = np.nonzero(f)
        if len(ys):
            out.append((t, (int(ys.min()), int(xs.min()))))
    return out


def test_digits_are_far_apart_in_space_and_time():
    ds = DistantMatch(num_clips=64, num_frames=8, size=32, min_distance=16.0, show_frames=2)
    for i in range(len(ds)):
        frames = ds.frames[i]
        assert frames[2:6].max() == 0  # nothing in the middle frames
        (ya, xa), (yb, xb) = ds.places[i]
        assert np.hypot(ya - yb, xa - xb) >= 16.0
        assert frames[:2, ya : ya + 8, xa : xa + 8].sum() == frames[:2].sum() > 0
        assert frames[6:, yb : yb + 8, xb : xb + 8].sum() == frames[6:].sum() > 0


def test_labels_are_balanced_and_single_digits_say_nothing():
    ds = DistantMatch(num_clips=4000, digit_classes=(0, 1, 7), seed=3)
    labels = ds.labels.numpy()
    assert abs(labels.mean() - 0.5) < 0.01
    # reconstruct each clip's digit class of A from the rendering: it must not predict the label
    # (A's class is uniform whatever the label); the clip-level brightness does not either.
    brightness_a = ds.frames[:, 0].reshape(len(ds), -1).sum(1)
    brightness_b = ds.frames[:, -1].reshape(len(ds), -1).sum(1)
    for feature in (brightness_a, brightness_b):
        corr = np.corrcoef(feature, labels)[0, 1]
        assert abs(corr) < 0.06


def test_same_pairs_share_the_class_and_different_pairs_do_not():
    ds = DistantMatch(num_clips=300, digit_classes=(0, 1, 7), seed=0)
    same = ds.pair_classes[:, 0] == ds.pair_classes[:, 1]
    assert np.array_equal(same, ds.labels.numpy() == 1)
    assert set(np.unique(ds.pair_classes)) == {0, 1, 7}
    # each glyph drawn is a real image of its class: the B patch matches one of the pool's
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    targets = load_digits().target
    for i in range(20):
        (yb, xb) = ds.places[i, 1]
        patch = ds.frames[i, -1, yb : yb + 8, xb : xb + 8]
        match = np.flatnonzero((images == patch).all(axis=(1, 2)))
        assert len(match) and ds.pair_classes[i, 1] in targets[match]


def test_train_and_val_differ_and_builder_defaults():
    train = build_dataset("distant_match", split="train", num_clips=32)
    val = build_dataset("distant_match", split="val", num_clips=32)
    assert train.clip_shape == (3, 8, 32, 32) and train.num_classes == 2
    assert not np.array_equal(train.frames, val.frames)
    clip, label = train[0]
    assert clip.shape == (3, 8, 32, 32) and label in (0, 1) and 0 <= clip.min() <= clip.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"digit_classes": (3,)}, "at least 2 digits"),
        ({"show_frames": 5}, "show_frames"),
        ({"min_distance": 40.0}, "exceeds the largest distance"),
        ({"digit_scale": 5}, "do not fit"),
    ],
)
def test_bad_options_name_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistantMatch(num_clips=4, **kwargs)


def test_digit_glyphs_labels_are_the_digit_classes():
    ds = build_dataset("digit_glyphs", split="train", num_clips=50)
    assert ds.num_classes == 10 and set(ds.labels.tolist()) <= set(range(10))
    clip, _ = ds[0]
    assert clip.shape == (3, 8, 32, 32)
