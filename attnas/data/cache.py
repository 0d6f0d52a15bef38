"""On-disk cache of decoded videos for small datasets.

Design choices (the spec is silent on them):

- One uint8 ``.npy`` file per decoded video (or CSV window) holding all its frames
  ``(N, H, W, 3)``; clips are sampled from it after loading, so random temporal offsets and
  crops still change every epoch while the decoder runs once per video.
- The key is a SHA-1 of the absolute path, the file's mtime (ns) and size, the decode window
  and a format version: editing or replacing a video invalidates its entry, and two windows of
  one file are two entries.
- Writes go to a temporary file that is renamed into place (atomic on POSIX), so DataLoader
  workers that decode the same video at once never read a half-written file.
- Entries are loaded with ``mmap_mode="r"``: only the sampled frames are read from disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

_FORMAT_VERSION = 1


class DecodedClipCache:
    """Decoded frames per video, stored as uint8 ``.npy`` files under ``cache_dir``.

    Args:
        cache_dir: folder for the entries (created if missing).
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def key(self, path: str | Path, start_sec: float | None, end_sec: float | None) -> str:
        """Cache key of one decode request.

        Args:
            path: video file (must exist: its mtime and size enter the key).
            start_sec: decode window start (None: from the start).
            end_sec: decode window end (None: to the end).

        Returns:
            Hex digest naming the entry.
        """
        p = Path(path).resolve()
        st = p.stat()
        text = f"v{_FORMAT_VERSION}|{p}|{st.st_mtime_ns}|{st.st_size}|{start_sec}|{end_sec}|rgb24"
        return hashlib.sha1(text.encode()).hexdigest()

    def entry_path(self, key: str) -> Path:
        """File holding the entry ``key``."""
        return self.cache_dir / f"{key}.npy"

    def load(self, key: str) -> np.ndarray | None:
        """Return the cached frames ``(N, H, W, 3)`` (memory-mapped), or None on a miss.

        Args:
            key: entry key from ``key()``.

        Returns:
            The frames, or None if absent or unreadable (a damaged entry is treated as a miss).
        """
        f = self.entry_path(key)
        if not f.exists():
            return None
        try:
            return np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None

    def store(self, key: str, frames: np.ndarray) -> None:
        """Write an entry atomically.

        Args:
            key: entry key from ``key()``.
            frames: uint8 frames ``(N, H, W, 3)``.
        """
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
            os.replace(tmp, self.entry_path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.cache_dir.glob("*.npy"))
