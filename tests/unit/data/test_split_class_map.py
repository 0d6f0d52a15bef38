"""Every split shares the training split's class map (issue 16, item 1), a training class with
no readable video is an error, and short (padded) videos are found (item 2)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from attnas.data import NoReadableVideosError
from attnas.data.builders import build_splits

OPTS = {"num_frames": 4, "stride": 2, "size": 16}


def _encode(path: Path, num_frames: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for k in range(num_frames):
            img = np.full((16, 16, 3), 10 * k, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))


def _tree(root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        for i in range(n):
            _encode(root / name / f"{name}{i}.mp4")
    return root


def test_val_folder_lacking_a_class_keeps_the_training_labels(tmp_path: Path) -> None:
    train = _tree(tmp_path / "train", {"bend": 1, "jack": 1, "wave": 1})
    val = _tree(tmp_path / "val", {"jack": 1})
    tr, va = build_splits("video_folder", OPTS, {"root": str(train)}, {"root": str(val)})
    assert tr.classes == va.classes == ["bend", "jack", "wave"]
    assert va.labels == [1]  # jack, not 0 (= bend in training)


def test_val_class_unknown_to_training_is_named(tmp_path: Path) -> None:
    train = _tree(tmp_path / "train", {"bend": 1, "jack": 1})
    val = _tree(tmp_path / "val", {"jack": 1, "skip": 1})
    with pytest.raises(ValueError, match=r"class folder\(s\) \['skip'\] are not among"):
        build_splits("video_folder", OPTS, {"root": str(train)}, {"root": str(val)})


def test_csv_splits_share_the_training_map(tmp_path: Path) -> None:
    _tree(tmp_path, {"bend": 1, "jack": 1})
    (tmp_path / "train.csv").write_text("path,label\nbend/bend0.mp4,bend\njack/jack0.mp4,jack\n")
    (tmp_path / "val.csv").write_text("path,label\njack/jack0.mp4,jack\n")
    tr, va = build_splits(
        "video_csv",
        OPTS,
        {"csv_path": str(tmp_path / "train.csv")},
        {"csv_path": str(tmp_path / "val.csv")},
    )
    assert va.classes == tr.classes and va.labels == [1]
    (tmp_path / "bad.csv").write_text("path,label\njack/jack0.mp4,run\n")
    with pytest.raises(ValueError, match=r"label 'run' of .* is not among the classes"):
        build_splits(
            "video_csv",
            OPTS,
            {"csv_path": str(tmp_path / "train.csv")},
            {"csv_path": str(tmp_path / "bad.csv")},
        )


def test_training_class_without_a_readable_video_is_an_error(tmp_path: Path) -> None:
    train = _tree(tmp_path / "train", {"bend": 1, "jack": 1})
    (train / "wave").mkdir()
    (train / "wave" / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(NoReadableVideosError, match=r"\['wave'\] have no readable training video"):
        build_splits("video_folder", OPTS, {"root": str(train)}, {"root": str(train)})


def test_short_videos_are_listed_as_padded(tmp_path: Path) -> None:
    train = _tree(tmp_path / "train", {"bend": 1, "jack": 1})
    _encode(train / "jack" / "short.mp4", num_frames=3)  # a clip spans (4 - 1) * 2 + 1 = 7
    with pytest.warns(UserWarning, match="padded"):
        tr, _ = build_splits("video_folder", OPTS, {"root": str(train)}, {"root": str(train)})
    assert tr.padded == {str(train / "jack" / "short.mp4"): 3}
