"""Spill files: one per decode unit, its points sorted by a Morton prefix.

`u000042.rec`  the records (structured dtype `layout.dtype`), sorted by the Morton key of their position
               at the spill depth S, then the key of every `INDEX_STEP`-th record (uint64: a sparse index)

Any octree node at depth <= S is a contiguous range of every spill file. Its bounds are found in the
sparse index, then among the at most `INDEX_STEP` records it leaves, read into a small buffer and keyed
from their position (no key per point: 8 bytes per point less to write). The records are never
memory-mapped for this: a mapped probe faults in a whole page-cache folio (up to MBs on recent kernels), and
the searches of a 100 M-point plan mapped 560 MB of spill that way. Bin tasks get (path, first, last)
ranges and read only those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.point_attributes import PointAttribute, active, record_fields

SPILL_DEPTH = 13  # 39-bit keys; packed with a 24-bit point index into one uint64 for np.sort
INDEX_STEP = 256  # sparse index: 8 bytes per 256 records; a node bound then reads <= 255 records (~8 KB)
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
            return CubeSpec((int(origin[0]), int(origin[1]), int(origin[2])), R)
        R += 1


# ---- record layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordLayout:
    """The attributes of a run's spill records (see `pipeline.point_attributes`): colour, GPS time and NIR
    when any input has them (or an orthophoto gives colour / NIR), the opt-in attributes asked for, and the
    extra dimensions asked for that an input has."""

    has_rgb: bool
    has_gps: bool
    has_nir: bool
    extra_dims: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # opt-in attributes of the table (e.g. "scan_angle")

    @property
    def attributes(self) -> tuple[PointAttribute, ...]:
        return active(self.has_rgb, self.has_gps, self.has_nir, self.optional, self.extra_dims)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(record_fields(self.attributes))


@dataclass(frozen=True)
class SpillPart:
    count: int
    rec_path: str
    class_codes: tuple[int, ...] = ()
    # set instead of a spill file when the unit's points lie outside its file's header bounds and the job
    # asks for the real bounds: the unit's raw integer (min x, y, z, max x, y, z); the planner widens the
    # file's bounds and runs again
    outside: tuple[int, ...] | None = None
    rgb_max: int = -1  # largest raw RGB channel value of the unit (-1: no RGB); 0 = zeroed colours


class SpillSearch:
    """Octree node bounds in one spill file of `count` records (see the module doc): a lookup in its sparse
    index, then a binary search among the <= INDEX_STEP - 1 records it leaves, read into a small array."""

    def __init__(self, rec_path: str, dtype: np.dtype, count: int, cube: CubeSpec):
        self.path, self.dtype, self.count, self.cube = rec_path, dtype, count, cube
        n_index = -(-count // INDEX_STEP)  # the keys of records 0, INDEX_STEP, 2 * INDEX_STEP, ...
        self.keys = np.fromfile(rec_path, np.uint64, n_index, offset=count * dtype.itemsize)
        if len(self.keys) != n_index:
            raise OSError(f"spill file {rec_path} is short: its index has {len(self.keys)} keys")
        self._org = np.asarray(cube.origin, np.int64)

    def lower_bound(self, first: int, last: int, target: int) -> int:
        """First index in [first, last) whose key is >= target; `last` if none."""
        from pipeline.stages.points.kernels import spill_lower_bound

        j = int(np.searchsorted(self.keys, np.uint64(target)))  # keys[j - 1] < target <= keys[j]
        blk_lo = (j - 1) * INDEX_STEP + 1 if j else 0  # the bound lies in [blk_lo, blk_hi]
        blk_hi = min(j * INDEX_STEP, self.count)
        lo, hi = max(blk_lo, first), min(blk_hi, last)
        if lo >= hi:
            return min(max(blk_lo, first), last)
        rec = read_ranges(((self.path, lo, hi),), self.dtype)
        shift = self.cube.R - self.cube.S
        return lo + spill_lower_bound(rec["x"], rec["y"], rec["z"], self._org, shift, 0, hi - lo, target)

    def node_range(self, depth: int, prefix: int, first: int, last: int) -> tuple[int, int]:
        """Index range of the octree node (depth, prefix) within [first, last)."""
        if last <= first:
            return first, first
        sh = 3 * (self.cube.S - depth)
        a = self.lower_bound(first, last, prefix << sh)
        hi = (prefix + 1) << sh
        b = self.lower_bound(a, last, hi) if hi < (1 << (3 * self.cube.S)) else last
        return a, b


def read_ranges(ranges: tuple[tuple[str, int, int], ...], dtype: np.dtype) -> np.ndarray:
    """The records of several (rec_path, first, last) ranges, read straight into one array (no concat)."""
    out = np.empty(sum(b - a for _p, a, b in ranges), dtype=dtype)
    buf = out.view(np.uint8)
    off = 0
    for path, a, b in ranges:
        nbytes = (b - a) * dtype.itemsize
        with open(path, "rb") as f:
            f.seek(a * dtype.itemsize)
            got = f.readinto(buf[off : off + nbytes].data)
        if got != nbytes:
            raise OSError(f"spill file {path} is short: {got} of {nbytes} bytes")
        off += nbytes
    return out
