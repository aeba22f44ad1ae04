"""Spill files: one per decode unit, points sorted by a Morton prefix, keys and records in separate files.

`u000042.key`  uint64 Morton keys at the spill depth S (sorted ascending)
`u000042.rec`  the records (structured dtype `layout.dtype`) in the same order

Any octree node at depth <= S is a contiguous range of every spill file, found by binary search on the
memory-mapped keys (a few pages read). Bin tasks get (path, first, last) ranges and read only those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPILL_DEPTH = 13  # 39-bit keys; packed with a 24-bit point index into one uint64 for np.sort
GRID_BITS = 7  # 128^3 sampling grid per tile: cell size = tile size / 128 (the tile's point spacing)
MAX_KEY_DEPTH = 21  # 63-bit Morton keys


@dataclass(frozen=True)
class CubeSpec:
    """The root octree cube: 2**R millimetres wide, origin in mm relative to the project ENU frame."""

    origin: tuple[int, int, int]
    R: int

    @property
    def D(self) -> int:  # depth of the full-resolution Morton keys
        return min(self.R, MAX_KEY_DEPTH)

    @property
    def key_shift(self) -> int:  # mm -> key cell coordinates
        return self.R - self.D

    @property
    def S(self) -> int:
        return min(SPILL_DEPTH, self.D)

    @property
    def tmax(self) -> int:  # deepest tile level (its grid cells are the finest key cells)
        return max(self.D - GRID_BITS, 0)

    @property
    def size_m(self) -> float:
        return (1 << self.R) / 1000.0

    def spacing_m(self, depth: int) -> float:
        return self.size_m / (1 << (depth + GRID_BITS))


def cube_for(lo_mm: np.ndarray, hi_mm: np.ndarray) -> CubeSpec:
    """Smallest power-of-two cube containing [lo, hi], its origin on a grid of half its size.

    The alignment keeps tile ids stable when the extent changes a little; half-size (not full-size)
    alignment lets a cube straddle the frame origin."""
    lo = np.asarray(lo_mm, dtype=np.int64)
    hi = np.asarray(hi_mm, dtype=np.int64)
    R = max(int(np.ceil(np.log2(max(int((hi - lo).max()) + 1, 2)))), 10)
    while True:
        size = 1 << R
        half = size >> 1
        origin = (lo // half) * half
        if np.all(origin + size > hi):
            return CubeSpec(tuple(int(v) for v in origin), R)
        R += 1


# ---- record layout ------------------------------------------------------------------------------------

BASE_RECORD = [
    ("x", "<i4"),
    ("y", "<i4"),
    ("z", "<i4"),
    ("intensity", "<u2"),
    ("point_source_id", "<u2"),
    ("classification", "u1"),
    ("return_number", "u1"),
    ("number_of_returns", "u1"),
]


@dataclass(frozen=True)
class RecordLayout:
    has_rgb: bool
    has_gps: bool
    has_nir: bool
    extra_dims: tuple[str, ...] = ()

    @property
    def fields(self) -> list[tuple[str, str] | tuple[str, str, tuple[int]]]:
        f: list = list(BASE_RECORD)
        if self.has_rgb:
            f.append(("rgb", "u1", (3,)))
        if self.has_nir:
            f.append(("nir", "<u2"))
        if self.has_gps:
            f.append(("gps_time", "<f8"))
        for name in self.extra_dims:
            f.append((f"x_{name}", "<f4"))
        return f

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.fields)


@dataclass(frozen=True)
class SpillPart:
    unit_index: int
    count: int
    key_path: str
    rec_path: str
    lo_mm: tuple[int, int, int]
    hi_mm: tuple[int, int, int]
    class_codes: tuple[int, ...] = ()


def write_spill(directory: Path, unit_index: int, keys: np.ndarray, records: np.ndarray) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    kp = directory / f"u{unit_index:06d}.key"
    rp = directory / f"u{unit_index:06d}.rec"
    keys.astype(np.uint64, copy=False).tofile(kp)
    records.tofile(rp)
    return str(kp), str(rp)


def node_range(key_path: str, count: int, depth: int, prefix: int, S: int) -> tuple[int, int]:
    """Index range of the octree node (depth, prefix) in a spill file (keys at depth S)."""
    if count == 0:
        return 0, 0
    keys = np.memmap(key_path, dtype=np.uint64, mode="r", shape=(count,))
    sh = 3 * (S - depth)
    lo = np.uint64(prefix << sh)
    hi = np.uint64((prefix + 1) << sh)
    a = int(np.searchsorted(keys, lo, side="left"))
    b = int(np.searchsorted(keys, hi, side="left")) if (prefix + 1) << sh < (1 << 64) else count
    del keys
    return a, b


def read_records(rec_path: str, dtype: np.dtype, first: int, last: int) -> np.ndarray:
    if last <= first:
        return np.empty(0, dtype=dtype)
    with open(rec_path, "rb") as f:
        f.seek(first * dtype.itemsize)
        return np.fromfile(f, dtype=dtype, count=last - first)


def read_ranges(ranges: tuple[tuple[str, int, int], ...], dtype: np.dtype) -> np.ndarray:
    """The records of several (rec_path, first, last) ranges, read straight into one array (no concat)."""
    total = sum(max(b - a, 0) for _p, a, b in ranges)
    out = np.empty(total, dtype=dtype)
    buf = out.view(np.uint8)
    off = 0
    for path, a, b in ranges:
        if b <= a:
            continue
        nbytes = (b - a) * dtype.itemsize
        with open(path, "rb") as f:
            f.seek(a * dtype.itemsize)
            got = f.readinto(memoryview(buf[off : off + nbytes]))
        if got != nbytes:
            raise OSError(f"spill file {path} is short: {got} of {nbytes} bytes")
        off += nbytes
    return out
