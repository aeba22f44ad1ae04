"""Kernels of the COPC octree (`pipeline.tiles.copc_octree.build_octree`; numba). The plain reference the
tests compare the octree with is `tests/unit/test_copc_octree.py` (numpy, one pass per array and level)
and `tests/integration/test_copc.py` (Python, point by point).

* `fine_morton`: the Morton codes of records' integer positions (`copc_octree.fine_positions` and
  `morton_codes` in one pass);
* `pack_keys`: sort keys of the Morton codes' top bits with the record index below;
* `sorted_points`: the Morton codes in the order of a sort of packed (prefix, record index) keys, and their
  hashes (`copc_octree._mix64` of the code above, the record index below);
* `count_runs`: the number of runs of equal values of `m >> shift` (the nodes of a level);
* `take_level`: one level of the octree in one pass over the remaining points: per node either all of its
  points (a leaf) or the point of smallest hash per grid cell; the rest compacted in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_LOW32 = np.uint64(0xFFFFFFFF)
_HIGH32 = np.uint64(0xFFFFFFFF00000000)


@njit(cache=True, nogil=True)
def _spread3(v: np.uint64) -> np.uint64:
    v &= np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


@njit(cache=True, nogil=True)
def fine_morton(
    X: np.ndarray,
    Y: np.ndarray,
    Z: np.ndarray,
    scales: np.ndarray,
    offsets: np.ndarray,
    lows: np.ndarray,
    factor: float,
    cells: int,
    out: np.ndarray,
) -> None:
    """`out[i]`: the Morton code (x highest) of point i's cell `floor((V * scale + offset - low) * factor)`
    per axis, clipped to 0..cells - 1: the same arithmetic, in the same order, as the numpy reference."""
    for i in range(len(X)):
        code = np.uint64(0)
        for a in range(3):
            raw = X[i] if a == 0 else Y[i] if a == 1 else Z[i]
            u = np.floor((np.float64(raw) * scales[a] + offsets[a] - lows[a]) * factor)
            u = min(max(u, 0.0), cells - 1.0)
            code |= _spread3(np.uint64(np.int64(u))) << np.uint64(2 - a)
        out[i] = code


@njit(cache=True, nogil=True)
def pack_keys(morton: np.ndarray, drop_bits: int, index_bits: int) -> np.ndarray:
    """`(morton[i] >> drop_bits) << index_bits | i` for every i."""
    out = np.empty(len(morton), np.uint64)
    drop, shift = np.uint64(drop_bits), np.uint64(index_bits)
    for i in range(len(morton)):
        out[i] = ((morton[i] >> drop) << shift) | np.uint64(i)
    return out


@njit(cache=True, nogil=True)
def sorted_points(morton: np.ndarray, packed: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, h): `m[i] = morton[r]` and `h[i]` = the splitmix64 finaliser of `m[i]` (its high 32 bits) with `r`
    (low 32 bits), where `r` is the record index in the low `index_bits` bits of the sorted `packed[i]`."""
    n = len(packed)
    low = (np.uint64(1) << np.uint64(index_bits)) - np.uint64(1)
    m = np.empty(n, np.uint64)
    h = np.empty(n, np.uint64)
    for i in range(n):
        r = packed[i] & low
        v = morton[r]
        m[i] = v
        v ^= v >> np.uint64(30)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(27)
        v *= np.uint64(0x94D049BB133111EB)
        v ^= v >> np.uint64(31)
        h[i] = (v & _HIGH32) | r
    return m, h


@njit(cache=True, nogil=True)
def count_runs(m: np.ndarray, n: int, shift: np.uint64) -> int:
    """Runs of equal `m[i] >> shift` among the first `n` values."""
    if n == 0:
        return 0
    runs = 1
    prev = m[0] >> shift
    for i in range(1, n):
        v = m[i] >> shift
        if v != prev:
            runs += 1
            prev = v
    return runs


@njit(cache=True, nogil=True)
def take_level(
    m: np.ndarray,
    h: np.ndarray,
    n: int,
    node_shift: np.uint64,
    cell_shift: np.uint64,
    max_node_points: int,
    all_leaves: bool,
    index: np.ndarray,
    node_ids: np.ndarray,
    node_counts: np.ndarray,
) -> tuple[int, int]:
    """One octree level over the first `n` of the points `m` (Morton codes, every node `m >> node_shift`
    and cell `m >> cell_shift` of the level a run) and `h` (hash above, record index in the low 32 bits).

    A node of at most `max_node_points` points (every node when `all_leaves`) takes all of them, a larger
    one the point of smallest `h` of each of its cells. Writes the record indices of the taken points
    into `index` (grouped by node, in the order of `m`), each node's id and count into `node_ids` /
    `node_counts` (`count_runs` entries), and moves the points not taken to the front of `m` and `h`
    (order kept). Returns (points taken, points kept)."""
    taken = 0
    kept = 0
    nodes = 0
    i = 0
    while i < n:
        node = m[i] >> node_shift
        e = i + 1
        while e < n and (m[e] >> node_shift) == node:
            e += 1
        first = taken
        if all_leaves or e - i <= max_node_points:
            for j in range(i, e):
                index[taken] = h[j] & _LOW32
                taken += 1
        else:
            a = i
            while a < e:
                cell = m[a] >> cell_shift
                b = a + 1
                best = a
                while b < e and (m[b] >> cell_shift) == cell:
                    if h[b] < h[best]:
                        best = b
                    b += 1
                for j in range(
                    a, b
                ):  # kept points move forward only (kept <= j): nothing unread is overwritten
                    if j == best:
                        index[taken] = h[j] & _LOW32
                        taken += 1
                    else:
                        m[kept] = m[j]
                        h[kept] = h[j]
                        kept += 1
                a = b
        node_ids[nodes] = node
        node_counts[nodes] = taken - first
        nodes += 1
        i = e
    return taken, kept
