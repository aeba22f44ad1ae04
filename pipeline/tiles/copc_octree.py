"""The octree of the COPC writer (`pipeline.tiles.copc`): which node of the octree each point goes to.

A node holds one point per cell of a 128^3 grid over the node (the point whose position hash is smallest
among the points not taken by a coarser node), so the spacing at the root is cube size / 128 and halves at
every level; a node whose remaining points are at most `max_node_points` keeps all of them (a leaf). Every
point is stored exactly once. numpy sorts, then one pass per level (numba kernels:
`pipeline.tiles._copc_octree_kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.tiles._copc_octree_kernels import count_runs, fine_morton, pack_keys, sorted_points, take_level

GRID_BITS = 7  # 128^3 sampling grid per node
MAX_DEPTH = 14  # node key (3 * level bits) + cell (21 bits) fit one int64 sort key
FINE_BITS = GRID_BITS + MAX_DEPTH  # integer position resolution of the octree (2^21 per axis)
MAX_NODE_POINTS = 100_000  # a node with at most this many remaining points is a leaf


def _mix64(v: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> well-mixed uint64), vectorised."""
    v = v.astype(np.uint64, copy=True)
    v ^= v >> np.uint64(30)
    v *= np.uint64(0xBF58476D1CE4E5B9)
    v ^= v >> np.uint64(27)
    v *= np.uint64(0x94D049BB133111EB)
    v ^= v >> np.uint64(31)
    return v


@dataclass(frozen=True)
class Octree:
    """Nodes sorted by (level, x, y, z): `keys` (M, 4) int32, points of node i are
    `index[starts[i]:starts[i] + counts[i]]` (record indices, ascending)."""

    keys: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    index: np.ndarray


def fine_positions(
    X: np.ndarray, Y: np.ndarray, Z: np.ndarray, scales, offsets, center, halfsize: float
) -> np.ndarray:
    """(N, 3) int32 integer positions in the cube, 2^FINE_BITS cells per axis (clipped into the cube)."""
    n = 1 << FINE_BITS
    out = np.empty((len(X), 3), np.int32)
    for a, (col, s, o, c) in enumerate(zip((X, Y, Z), scales, offsets, center, strict=True)):
        u = (col.astype(np.float64) * s + o - (c - halfsize)) * (n / (2.0 * halfsize))
        np.clip(np.floor(u), 0, n - 1, out=u)
        out[:, a] = u
    return out


def morton_of(
    X: np.ndarray, Y: np.ndarray, Z: np.ndarray, scales, offsets, center, halfsize: float, out: np.ndarray
) -> None:
    """`out[:] = morton_codes(fine_positions(X, Y, Z, scales, offsets, center, halfsize))` in one pass
    (`fine_morton`; the two numpy functions are its reference)."""
    n = 1 << FINE_BITS
    lows = np.array([c - halfsize for c in center], np.float64)
    sc, of = np.asarray(scales, np.float64), np.asarray(offsets, np.float64)
    fine_morton(X, Y, Z, sc, of, lows, n / (2.0 * halfsize), n, out)


def _spread3(v: np.ndarray) -> np.ndarray:
    """21-bit integers -> their bits spread to every third bit (Morton interleave), uint64."""
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    for shift, mask in (
        (32, 0x1F00000000FFFF),
        (16, 0x1F0000FF0000FF),
        (8, 0x100F00F00F00F00F),
        (4, 0x10C30C30C30C30C3),
        (2, 0x1249249249249249),
    ):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def _compact3(v: np.ndarray) -> np.ndarray:
    """Inverse of `_spread3`: every third bit gathered into an integer."""
    v = v & np.uint64(0x1249249249249249)
    for shift, mask in (
        (2, 0x10C30C30C30C30C3),
        (4, 0x100F00F00F00F00F),
        (8, 0x1F0000FF0000FF),
        (16, 0x1F00000000FFFF),
        (32, 0x1FFFFF),
    ):
        v = (v ^ (v >> np.uint64(shift))) & np.uint64(mask)
    return v


def morton_codes(q: np.ndarray) -> np.ndarray:
    """63-bit Morton codes (x, y, z interleaved, x highest) of fine positions `q` (N, 3)."""
    return (_spread3(q[:, 0]) << np.uint64(2)) | (_spread3(q[:, 1]) << np.uint64(1)) | _spread3(q[:, 2])


def build_octree(morton: np.ndarray, max_node_points: int = MAX_NODE_POINTS) -> Octree:
    """Assign every point (its Morton code of the fine positions, see `fine_positions`, `morton_codes`;
    the array is consumed: sorted in place) to one octree node.

    One sort by Morton code (prefix); then every node and every grid cell of any level is a run of the sorted
    points, so each level is one linear pass (`take_level`): per cell the point with the smallest hash (64
    bits: a hash of the position above, the record index below, so ties are impossible) among the points no
    coarser node took; the points left move to the front, in order."""
    n = len(morton)
    if n >= 2**32:
        raise ValueError("a COPC file of this writer holds fewer than 2^32 points")
    # sort by the top Morton bits and the record index packed in one uint64 (np.sort of values is ~8x
    # faster than argsort); levels that need more Morton bits re-sort their remaining points below
    b = max(int(n - 1).bit_length(), 1)
    sorted_bits = 3 * ((64 - b) // 3)
    packed = pack_keys(morton, 3 * FINE_BITS - sorted_bits, b)
    packed.sort()
    m, h = sorted_points(morton, packed, b)
    del packed, morton
    index = np.empty(n, np.int64)  # the levels' taken points, one after the other
    lvl_keys, lvl_counts = [], []
    done = 0
    for level in range(MAX_DEPTH + 1):
        if len(m) == 0:
            break
        if 3 * (level + GRID_BITS) > sorted_bits:  # cells finer than the sorted prefix: full sort
            o = np.argsort(m)  # ties (equal positions) are told apart by h, whatever their order
            m, h = m[o], h[o]
            del o
            sorted_bits = 3 * FINE_BITS
        node_shift = np.uint64(3 * (FINE_BITS - level))
        cell_shift = np.uint64(3 * max(FINE_BITS - level - GRID_BITS, 0))
        nodes = count_runs(m, len(m), node_shift)
        node_id = np.empty(nodes, np.uint64)
        counts = np.empty(nodes, np.int64)
        taken, kept = take_level(
            m,
            h,
            len(m),
            node_shift,
            cell_shift,
            max_node_points,
            level == MAX_DEPTH,
            index[done:],
            node_id,
            counts,
        )
        done += taken
        keys = np.stack(
            [
                np.full(len(node_id), level, np.int64),
                _compact3(node_id >> np.uint64(2)).astype(np.int64),
                _compact3(node_id >> np.uint64(1)).astype(np.int64),
                _compact3(node_id).astype(np.int64),
            ],
            axis=1,
        ).astype(np.int32)
        lvl_keys.append(keys)
        lvl_counts.append(counts)
        m, h = m[:kept], h[:kept]
    keys = np.concatenate(lvl_keys)
    counts = np.concatenate(lvl_counts).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    # nodes in (level, x, y, z) order; each node's records in file order (compresses best)
    srt = np.lexsort((keys[:, 3], keys[:, 2], keys[:, 1], keys[:, 0]))
    keys, starts, counts = keys[srt], starts[srt], counts[srt]
    for s, c in zip(starts.tolist(), counts.tolist(), strict=True):
        index[s : s + c].sort()
    return Octree(keys, starts, counts, index)
