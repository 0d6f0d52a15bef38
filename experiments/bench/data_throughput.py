"""Benchmark 7: clips/s of the video-folder loader, decoding every epoch vs the decoded cache.

The dataset is ``video_folder`` over weizmann4 (``<repo>/../shared/data/weizmann4``: 72 mp4s
of 64×64, 25 fps, 51–146 frames) or, when it is absent, a few generated 64×64 mp4s (PyAV) in a
temporary folder; training clips of 8 frames at stride 2, 64×64 after the random resized crop.
A ``DataLoader`` with 2 workers (batch 8, ``collate_skip_failed``) runs whole epochs; clips/s
is clips delivered / epoch seconds, worker start-up included (new workers per epoch, as a
trainer without persistent workers has). With the cache (``cache_dir``) the first epoch
decodes and stores every video; later epochs read the stored frames: the first is reported as
``cold``, the figure is the later ones'. Uncached and cached epochs run interleaved.
The issue sets no throughput target: the two rates are reported (``met`` null) and the goal
checked is that the cache pays off, cached / uncached >= 1.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from attnas.data import DEFAULT_WEIZMANN4_ROOT, build_dataset, collate_skip_failed
from experiments.bench import BenchConfig, BenchResult, interleaved_times

NAME = "data_throughput"


def write_videos(root: Path, classes: int, per_class: int, frames: int, size: int = 64) -> Path:
    """Write ``classes × per_class`` small mp4s (a moving bright square on noise) under ``root``.

    Returns:
        ``root``, laid out as ``root/<class>/<video>.mp4``.
    """
    import av

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(per_class):
            with av.open(str(folder / f"video{v}.mp4"), mode="w") as container:
                stream = container.add_stream("mpeg4", rate=25)
                stream.width = stream.height = size
                stream.pix_fmt = "yuv420p"
                for f in range(frames):
                    img = rng.integers(0, 64, (size, size, 3), dtype=np.uint8)
                    y = (f * (c + 1) * 2) % (size - 16)
                    img[y : y + 16, v * 4 : v * 4 + 16] = 255
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    container.mux(stream.encode(frame))
                container.mux(stream.encode())
    return root


def _epoch(loader: DataLoader, counter: dict[str, int]) -> Any:
    def run_epoch() -> None:
        for batch in loader:
            counter["clips"] += int(batch.labels.numel())

    return run_epoch


def _profile_items(dataset: Any, top: int = 3) -> list[str]:
    """The functions with the most own time while loading a few items in-process (cProfile)."""
    prof = cProfile.Profile()
    prof.runcall(lambda: [dataset[i] for i in range(min(8, len(dataset)))])
    stats = pstats.Stats(prof)
    total = stats.total_tt or 1.0
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return [
        f"{func[2]} ({func[0].rsplit('/', 1)[-1]}:{func[1]}): {100 * tt / total:.1f}% "
        f"of {total:.3f} s own time (8 cached items)"
        for func, (_, _, tt, _, _) in rows
    ]


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Clips/s without and with the decoded-clip cache, and their ratio."""
    workers, batch = cfg.pick(0, 2, 2), 8
    with tempfile.TemporaryDirectory(prefix="attnas-bench-") as tmp:
        tmp_path = Path(tmp)
        if cfg.data_root is not None:
            root, source = Path(cfg.data_root), cfg.data_root
        elif cfg.scale != "tiny" and DEFAULT_WEIZMANN4_ROOT.is_dir():
            root, source = DEFAULT_WEIZMANN4_ROOT, "weizmann4"
        else:
            per_class, frames = cfg.pick((2, 20), (8, 60), (8, 60))
            root = write_videos(tmp_path / "videos", 2, per_class, frames)
            source = f"generated: 2 classes x {per_class} mp4s, {frames} frames, 64x64"
        common = {"root": root, "split": "train", "num_frames": 8, "stride": 2, "size": 64}
        datasets = {
            "uncached": build_dataset("video_folder", **common),
            "cached": build_dataset("video_folder", cache_dir=tmp_path / "cache", **common),
        }
        counters = {key: {"clips": 0} for key in datasets}
        fns = {}
        for key, ds in datasets.items():
            loader = DataLoader(
                ds,
                batch_size=batch,
                shuffle=True,
                num_workers=workers,
                collate_fn=collate_skip_failed,
                generator=torch.Generator().manual_seed(cfg.seed),
            )
            fns[key] = _epoch(loader, counters[key])
        cold = interleaved_times({"cached": fns["cached"]}, 1, 0, torch.device("cpu"))["cached"][0]
        cold_clips = counters["cached"]["clips"]
        counters["cached"]["clips"] = 0
        times = interleaved_times(fns, cfg.rounds(2, 3), 0, torch.device("cpu"))
        n_videos = len(datasets["uncached"])
        limit = (
            _profile_items(datasets["cached"])
            if sum(times["cached"]) > sum(times["uncached"])
            else None
        )
    rate = {
        key: counters[key]["clips"] / sum(times[key]) for key in datasets
    }  # clips/s over the timed epochs
    details: dict[str, Any] = {
        "source": source,
        "videos": n_videos,
        "clip": [3, 8, 64, 64],
        "num_workers": workers,
        "batch_size": batch,
        "epochs": len(times["uncached"]),
        "uncached_epoch_s": [round(t, 3) for t in times["uncached"]],
        "cached_epoch_s": [round(t, 3) for t in times["cached"]],
        "cold_cache_epoch_s": round(cold, 3),
        "cold_cache_clips_per_s": round(cold_clips / cold, 2),
    }
    speedup = rate["cached"] / rate["uncached"]
    if limit is not None:
        details["limit"] = limit
    return [
        BenchResult(
            f"{NAME}/uncached",
            "reported (no target)",
            round(rate["uncached"], 2),
            "clips/s",
            None,
            details,
        ),
        BenchResult(
            f"{NAME}/cached",
            "reported (no target)",
            round(rate["cached"], 2),
            "clips/s",
            None,
            details,
        ),
        BenchResult(
            f"{NAME}/cache_speedup",
            ">= 1.0x (cached epochs at least as fast as decoding)",
            round(speedup, 4),
            "x",
            bool(speedup >= 1.0),
            details,
        ),
    ]
