"""Per-building byte strings (packed LoD2 roofs and solids) kept in a spill file instead of in memory.

The buildings stage makes one packed roof partition and one packed solid per building (a few kB each:
hundreds of MB for 100,000 buildings). `BlobStore` appends them to one file as the reconstruction tasks
return them and keeps only an offset and a length per building, so the build process holds the index
(16 bytes per building), not the roofs. The writers read what one tile needs: the build process for the
tile's cache key (`BlobStore.take`), the task on the worker through a `BlobRef` (file path, offsets,
lengths: a few bytes per building to send instead of the roofs). The file lies on the filesystem the
workers write the release to (`tempfile.mkdtemp` under the release folder) and is removed with its
folder by the stage that made it.

Only the build process writes (`store[i] = blob` appends; a replaced blob stays in the file unused);
b"" (no LoD2 roof) takes no space.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BlobRef:
    """Where some blobs of a `BlobStore` lie in its file; `load()` reads them (in any process)."""

    path: str
    offsets: np.ndarray
    lengths: np.ndarray

    def load(self) -> list[bytes]:
        if not np.any(self.lengths):
            return [b""] * len(self.lengths)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return [
                _pread(fd, int(o), int(n), self.path) for o, n in zip(self.offsets, self.lengths, strict=True)
            ]
        finally:
            os.close(fd)


def _pread(fd: int, offset: int, length: int, path: str) -> bytes:
    if length == 0:
        return b""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"spill file {path} is short: {len(data)} of {length} bytes at offset {offset}")
    return data


class BlobStore:
    """`n` byte strings (all b"" at first) in the file `path` (created, truncated)."""

    def __init__(self, path: Path | str, n: int):
        self.path = str(path)
        self.offsets = np.zeros(n, dtype=np.int64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._end = 0

    @classmethod
    def of(cls, path: Path | str, blobs: Iterable[bytes], n: int) -> BlobStore:
        """A store of `n` blobs taken from `blobs` in order (e.g. another store's, reordered)."""
        out = cls(path, n)
        for i, b in enumerate(blobs):
            out[i] = b
        return out

    def __len__(self) -> int:
        return len(self.offsets)

    def __setitem__(self, i: int, blob: bytes) -> None:
        n = len(blob)
        if n:
            written = os.pwrite(self._fd, blob, self._end)
            if written != n:
                raise OSError(f"spill file {self.path}: wrote {written} of {n} bytes")
        self.offsets[i] = self._end
        self.lengths[i] = n
        self._end += n

    def __getitem__(self, i: int) -> bytes:
        return _pread(self._fd, int(self.offsets[i]), int(self.lengths[i]), self.path)

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self)):
            yield self[i]

    def take(self, idx: Iterable[int]) -> list[bytes]:
        return [self[int(i)] for i in idx]

    def ref(self, idx: np.ndarray) -> BlobRef:
        """The blobs `idx` for a task in another process."""
        idx = np.asarray(idx, dtype=np.int64)
        return BlobRef(self.path, self.offsets[idx].copy(), self.lengths[idx].copy())

    def nonempty(self) -> np.ndarray:
        """Which entries are not b"" (bool per entry; nothing read)."""
        return self.lengths > 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()
