"""The COPC octree (`pipeline.tiles.copc_octree.build_octree`, numba kernels in
`pipeline.tiles._copc_octree_kernels`) against a plain numpy reference: the same nodes, the same points
per node, the same index layout, on scattered, clustered and duplicated points (the Python point-by-point
reference is in tests/integration/test_copc.py); the one-pass Morton codes (`morton_of`) against
`fine_positions` + `morton_codes`."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tiles.copc_octree import (
    FINE_BITS,
    GRID_BITS,
    MAX_DEPTH,
    _compact3,
    _mix64,
    build_octree,
    fine_positions,
    morton_codes,
    morton_of,
)


def _runs(sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.concatenate([[0], np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1])
    return starts, np.diff(np.concatenate([starts, [len(sorted_ids)]]))


def _numpy_octree(morton: np.ndarray, max_node_points: int):
    """The octree level by level with whole-array numpy passes: (keys, starts, counts, index)."""
    n = len(morton)
    order = np.argsort(morton, kind="stable").astype(np.uint64)
    m = morton[order]
    h = (_mix64(m) & np.uint64(0xFFFFFFFF00000000)) | order
    lvl_keys, lvl_counts, lvl_index = [], [], []
    for level in range(MAX_DEPTH + 1):
        if len(m) == 0:
            break
        _, node_counts = _runs(m >> np.uint64(3 * (FINE_BITS - level)))
        leaf = node_counts <= max_node_points if level < MAX_DEPTH else np.ones(len(node_counts), bool)
        take = np.repeat(leaf, node_counts)
        if not take.all():
            cell_starts, cell_counts = _runs(m >> np.uint64(3 * (FINE_BITS - level - GRID_BITS)))
            take |= h == np.repeat(np.minimum.reduceat(h, cell_starts), cell_counts)
        tm = m[take]
        t_starts, t_counts = _runs(tm >> np.uint64(3 * (FINE_BITS - level)))
        node_id = tm[t_starts] >> np.uint64(3 * (FINE_BITS - level))
        lvl_keys.append(
            np.stack(
                [np.full(len(node_id), level)] + [_compact3(node_id >> np.uint64(s)) for s in (2, 1, 0)],
                axis=1,
            ).astype(np.int32)
        )
        lvl_counts.append(t_counts)
        lvl_index.append((h[take] & np.uint64(0xFFFFFFFF)).astype(np.int64))
        m, h = m[~take], h[~take]
    keys = np.concatenate(lvl_keys)
    counts = np.concatenate(lvl_counts).astype(np.int64)
    index = np.concatenate(lvl_index)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    srt = np.lexsort((keys[:, 3], keys[:, 2], keys[:, 1], keys[:, 0]))
    keys, starts, counts = keys[srt], starts[srt], counts[srt]
    for s, c in zip(starts.tolist(), counts.tolist(), strict=True):
        index[s : s + c].sort()
    assert len(index) == n
    return keys, starts, counts, index


def _corridor_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mobile-mapping-like positions: most points in a few narrow strips, some scattered, some repeated."""
    top = 2**FINE_BITS
    q = rng.integers(0, top, (n, 3))
    strip = rng.random(n) < 0.8
    q[strip, 1] = top // 3 + rng.integers(0, top // 200, strip.sum())
    q[strip, 2] = top // 2 + rng.integers(0, top // 500, strip.sum())
    q[: n // 20] = q[n // 2]  # repeated positions reach the deepest level
    return q.astype(np.int32)


@pytest.mark.parametrize(("seed", "n", "max_node_points"), [(0, 1, 10), (1, 5_000, 40), (2, 60_000, 500)])
def test_octree_equals_the_numpy_reference(seed, n, max_node_points):
    q = _corridor_points(np.random.default_rng(seed), n)
    morton = morton_codes(q)
    want = _numpy_octree(morton.copy(), max_node_points)
    tree = build_octree(morton, max_node_points)
    for name, ref in zip(("keys", "starts", "counts", "index"), want, strict=True):
        np.testing.assert_array_equal(getattr(tree, name), ref, err_msg=name)
    assert sorted(tree.index.tolist()) == list(range(n))  # every point exactly once
    if n > 1:
        assert tree.keys[:, 0].max() == MAX_DEPTH  # the repeated positions went down to the last level


def test_one_pass_morton_codes_equal_the_numpy_reference():
    rng = np.random.default_rng(7)
    n = 200_000
    # a 1 km tile at 1 cm (the demo's mobile scans), a few points beyond the cube on every side (clipped)
    X = rng.integers(-1000, 101_000, n).astype(np.int32)
    Y = rng.integers(-1000, 101_000, n).astype(np.int32)
    Z = rng.integers(4_000, 9_000, n).astype(np.int32)
    X[:3] = [0, 100_000, 37]
    scales, offsets = (0.01, 0.01, 0.01), (362000.0, 5716000.0, 0.0)
    center, halfsize = (362500.0, 5716500.0, 65.0), 500.0 * (1.0 + 1e-9)
    want = morton_codes(fine_positions(X, Y, Z, scales, offsets, center, halfsize))
    got = np.empty(n, np.uint64)
    morton_of(X, Y, Z, scales, offsets, center, halfsize, got)
    np.testing.assert_array_equal(got, want)
    rec = np.zeros(n, [("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("intensity", "<u2")])  # strided columns
    rec["X"], rec["Y"], rec["Z"] = X, Y, Z
    got[:] = 0
    morton_of(rec["X"], rec["Y"], rec["Z"], scales, offsets, center, halfsize, got)
    np.testing.assert_array_equal(got, want)
