"""Video-folder and CSV datasets on tiny clips encoded with PyAV in the test."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from attnas.data import (
    ClipBatch,
    ClipOptions,
    CsvVideoDataset,
    FailedItem,
    FailureLog,
    NoReadableVideosError,
    VideoFolderDataset,
    collate_skip_failed,
    decode_frames,
    probe_video,
    video,
)

FPS = 8
NUM_FRAMES = 16
SIZE = 32
# Raw [0, 1] pixels, so decoded intensity maps straight back to the encoded frame index.
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _level(base: int, k: int) -> int:
    return base + 12 * k  # grey level of frame k; base 20 -> 200 at k = 15


def _encode(path: Path, base: int, num_frames: int = NUM_FRAMES) -> None:
    """Encode a clip whose frame k is uniform grey `_level(base, k)`, at FPS frames/s."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"qscale": "1"}
        for k in range(num_frames):
            img = np.full((SIZE, SIZE, 3), _level(base, k), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _frame_index(clip: torch.Tensor, base: int) -> np.ndarray:
    """Recover the encoded frame index of each frame of a raw [0, 1] clip (3, T, H, W)."""
    level = clip.mean(dim=(0, 2, 3)).numpy() * 255.0
    return (level - base) / 12.0


BASES = {"a": 20, "b": 30}


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for cls, base in BASES.items():
        (root / cls).mkdir()
        for j in range(2):
            _encode(root / cls / f"v{j}.mp4", base)
    return root


def test_decode_returns_every_frame_in_order(video_root: Path) -> None:
    frames = decode_frames(video_root / "a" / "v0.mp4")
    assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    levels = [_level(20, k) for k in range(16)]
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), levels, atol=2)
    pick = np.array([[15, 3], [3, 0]])
    picked = decode_frames(video_root / "a" / "v0.mp4", select=lambda n: pick)
    assert picked.shape == (2, 2, SIZE, SIZE, 3)
    np.testing.assert_allclose(picked.mean(axis=(2, 3, 4)), [[200, 56], [56, 20]], atol=2)
    info = probe_video(video_root / "a" / "v0.mp4")
    assert (info.num_frames, info.fps, info.height, info.width) == (16, 8.0, 32, 32)


def test_folder_dataset_labels_shapes_and_centre_clip(video_root: Path) -> None:
    opts = ClipOptions(num_frames=4, stride=2, size=SIZE, **RAW)
    ds = VideoFolderDataset(video_root, train=False, options=opts)
    assert ds.classes == ["a", "b"] and ds.labels == [0, 0, 1, 1] and len(ds) == 4
    assert ds.clip_shape == (3, 4, SIZE, SIZE)
    for i in range(len(ds)):
        clip, label = ds[i]
        assert clip.shape == (3, 4, SIZE, SIZE) and clip.dtype == torch.float32
        # span 7 of 16 frames: centre offset round(9 / 2) = 5 -> frames 5, 7, 9, 11
        base = BASES[ds.classes[label]]
        np.testing.assert_allclose(_frame_index(clip, base), [5, 7, 9, 11], atol=0.25)


def test_train_clips_are_random_offsets_at_the_stride(video_root: Path) -> None:
    opts = ClipOptions(num_frames=4, stride=3, size=SIZE, flip_p=0.5, **RAW)
    ds = VideoFolderDataset(video_root, train=True, options=opts)
    torch.manual_seed(0)
    starts = set()
    for _ in range(12):
        clip, label = ds[0]
        assert clip.shape == (3, 4, SIZE, SIZE) and label == 0
        # Random resized crop of a uniform frame keeps its level: the index is still readable.
        idx = _frame_index(clip, 20)
        np.testing.assert_allclose(np.diff(idx), [3, 3, 3], atol=0.3)
        assert -0.3 <= idx[0] <= 16 - 10 + 0.3  # span 10: offset in [0, 6]
        starts.add(round(float(idx[0])))
    assert len(starts) >= 3


def test_segment_sampling_and_multiview(video_root: Path) -> None:
    opts = ClipOptions(num_frames=4, sampling="segment", size=24, num_clips=2, num_crops=3, **RAW)
    ds = VideoFolderDataset(video_root, train=False, options=opts)
    views, _ = ds[0]
    assert views.shape == (6, 3, 4, 24, 24) and ds.num_views == 6
    # segments of 4 frames; view clip 0 at 1/4 of each segment, clip 1 at 3/4 (crops repeat)
    np.testing.assert_allclose(_frame_index(views[0], 20), [1, 5, 9, 13], atol=0.25)
    np.testing.assert_allclose(_frame_index(views[3], 20), [3, 7, 11, 15], atol=0.25)
    torch.testing.assert_close(views[0], views[2])  # uniform frames: every crop equal


def test_csv_dataset_paths_labels_and_time_window(video_root: Path, tmp_path: Path) -> None:
    csv_path = video_root / "ann.csv"
    csv_path.write_text(
        "a/v0.mp4,a,1.0,1.5\n"  # frames 8..11 (t = k / 8 in [1.0, 1.5))
        f"{video_root / 'b' / 'v1.mp4'},b\n"  # absolute path, whole video
    )
    opts = ClipOptions(num_frames=4, stride=1, size=SIZE, **RAW)
    ds = CsvVideoDataset(csv_path, train=False, options=opts)
    assert ds.classes == ["a", "b"] and ds.labels == [0, 1]
    assert ds.records[0].path == video_root / "a" / "v0.mp4"
    np.testing.assert_allclose(_frame_index(ds[0][0], 20), [8, 9, 10, 11], atol=0.25)
    # whole 16-frame video, span 4: centre offset round(12 / 2) = 6
    np.testing.assert_allclose(_frame_index(ds[1][0], 30), [6, 7, 8, 9], atol=0.25)
    window = decode_frames(video_root / "a" / "v0.mp4", 1.0, 1.5)
    assert window.shape[0] == 4

    # header row, named columns in another order, class list fixed by the caller
    with_header = tmp_path / "h.csv"
    with_header.write_text(f"label,path,start_sec\nb,{video_root / 'b' / 'v0.mp4'},1.5\n")
    ds2 = CsvVideoDataset(with_header, train=False, options=opts, classes=["a", "b"])
    assert ds2.labels == [1]
    np.testing.assert_allclose(_frame_index(ds2[0][0], 30), [12, 13, 14, 15], atol=0.25)


def test_csv_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x.mp4,a,soon\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: non-numeric time 'soon'"):
        CsvVideoDataset(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        CsvVideoDataset(tmp_path / "missing.csv")


def _corrupt_copy(video_root: Path, dest: Path) -> None:
    """dest/<class>/ with good copies, one truncated file and one garbage file."""
    for cls in BASES:
        (dest / cls).mkdir(parents=True)
        for j in range(2):
            (dest / cls / f"v{j}.mp4").write_bytes((video_root / cls / f"v{j}.mp4").read_bytes())
    data = (video_root / "a" / "v0.mp4").read_bytes()
    (dest / "a" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (dest / "b" / "garbage.avi").write_bytes(os.urandom(3000))


def test_corrupt_files_are_skipped_and_reported_across_workers(
    video_root: Path, tmp_path: Path
) -> None:
    _corrupt_copy(video_root, tmp_path / "set")
    opts = ClipOptions(num_frames=4, stride=2, size=SIZE)
    ds = VideoFolderDataset(tmp_path / "set", train=True, options=opts, validate=False)
    assert len(ds) == 6
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip_failed)
    log = FailureLog(ds.root)
    for batch in loader:
        assert isinstance(batch, ClipBatch)
        log.update(batch)
        if batch.labels.numel():
            assert batch.clips.shape[1:] == (3, 4, SIZE, SIZE)
    assert log.num_ok == 4 and log.num_failed == 2
    report = log.end_epoch()
    assert "skipped 2 of 6" in report and "truncated.mp4" in report and "garbage.avi" in report

    # in-process failures are also kept on the dataset
    garbage = next(i for i, r in enumerate(ds.records) if r.path.name == "garbage.avi")
    item = ds[garbage]
    assert isinstance(item, FailedItem) and item.path.endswith("garbage.avi")
    assert "decoding failed" in item.reason
    assert any("garbage.avi" in p for p in ds.failures)

    # validated up front: the two bad files are dropped, named, and warned about
    with pytest.warns(UserWarning, match="skipping 2 unreadable videos"):
        checked = VideoFolderDataset(tmp_path / "set", options=opts)
    assert len(checked) == 4
    assert sorted(Path(p).name for p in checked.invalid) == ["garbage.avi", "truncated.mp4"]


def test_all_corrupt_raises_naming_the_root(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    (root / "a").mkdir(parents=True)
    for j in range(3):
        (root / "a" / f"x{j}.mp4").write_bytes(b"\x00not a video" * 50)
    with pytest.raises(NoReadableVideosError, match=r"broken: none of the 3 videos can be opened"):
        VideoFolderDataset(root)
    ds = VideoFolderDataset(root, validate=False)
    log = FailureLog(ds.root)
    for batch in DataLoader(ds, batch_size=2, collate_fn=collate_skip_failed):
        assert batch.clips.numel() == 0
        log.update(batch)
    with pytest.raises(NoReadableVideosError, match=r"every video failed.*broken"):
        log.end_epoch()


def test_empty_folder_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \[.*'\.mp4'.*\] files"):
        VideoFolderDataset(tmp_path)


def test_cache_second_epoch_does_not_decode(
    video_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = video.decode_frames

    def counting(path, start_sec=None, end_sec=None):
        calls.append(str(path))
        return real(path, start_sec, end_sec)

    monkeypatch.setattr(video, "decode_frames", counting)
    opts = ClipOptions(num_frames=4, stride=2, size=SIZE)
    ds = VideoFolderDataset(video_root, train=False, options=opts, cache_dir=tmp_path / "cache")
    first = [ds[i][0] for i in range(len(ds))]
    assert len(calls) == 4 and len(ds.cache) == 4
    second = [ds[i][0] for i in range(len(ds))]
    assert len(calls) == 4
    for x, y in zip(first, second):
        torch.testing.assert_close(x, y)
    # a fresh dataset on the same cache folder does not decode either; training mode still
    # draws random clips from the cached frames
    again = VideoFolderDataset(video_root, train=True, options=opts, cache_dir=tmp_path / "cache")
    _ = [again[i] for i in range(len(again))]
    assert len(calls) == 4
    # a modified file is a new key: decoded once more
    target = video_root / "a" / "v0.mp4"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _ = ds[0]
    assert calls[4:] == [str(target)]
