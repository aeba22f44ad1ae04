"""Point kernels: the nested min-hash level of detail of one bin (see docs/pointcloud.md) and the order of
its points by level."""

from __future__ import annotations

import numba as nb
import numpy as np

U64 = np.uint64


@nb.njit(cache=True, nogil=True)
def _select_kernel(keys, hashes, D, b, g, tmax, max_points, level):
    n = keys.shape[0]
    t0 = max(b - g, 0)
    # tiles above the bin (depth < b): their cells at depth t + g >= b lie inside the bin. One pass for
    # all of these levels: the cells are nested, so a point that wins a coarse cell also wins every finer
    # cell containing it; giving each winner the coarsest level it wins equals claiming level by level
    # (each level only claims free points)
    nl = b - t0
    if nl > 0:
        cur = np.empty(nl, np.uint64)
        win = np.full(nl, -1, np.int64)
        for i in range(n):
            k = keys[i]
            h = hashes[i]
            for m in range(nl):
                c = k >> U64(3 * (D - (t0 + m + g)))
                w = win[m]
                if w < 0 or c != cur[m]:
                    if w >= 0 and (level[w] < 0 or level[w] > t0 + m):
                        level[w] = t0 + m
                    cur[m] = c
                    win[m] = i
                elif h < hashes[w]:
                    win[m] = i
        for m in range(nl):
            w = win[m]
            if w >= 0 and (level[w] < 0 or level[w] > t0 + m):
                level[w] = t0 + m
    # tiles inside the bin, top-down with an explicit stack of (range, level, free points in it). One
    # pass per node claims its cells and splits it into children, counting their free points on the way
    # (cells at depth t + g >= t + 1 never straddle two children)
    stack = np.empty((8 * (tmax - b + 2) + 16, 4), np.int64)
    free = 0
    for i in range(n):
        if level[i] < 0:
            free += 1
    stack[0] = (0, n, b, free)
    sp = 1
    while sp > 0:
        sp -= 1
        lo = stack[sp, 0]
        hi = stack[sp, 1]
        t = stack[sp, 2]
        remaining = stack[sp, 3]
        if remaining == 0:
            continue
        if remaining <= max_points or t >= tmax:
            for i in range(lo, hi):
                if level[i] < 0:
                    level[i] = t
            continue
        cshift = U64(3 * (D - (t + g)))
        chshift = U64(3 * (D - (t + 1)))
        child_lo = lo
        child_key = keys[lo] >> chshift
        child_free = 0
        i = lo
        while i < hi:
            k = keys[i] >> cshift
            best = i
            free = 0
            j = i
            while j < hi and (keys[j] >> cshift) == k:
                if hashes[j] < hashes[best]:
                    best = j
                if level[j] < 0:
                    free += 1
                j += 1
            ck = keys[i] >> chshift
            if ck != child_key:
                stack[sp] = (child_lo, i, t + 1, child_free)
                sp += 1
                child_lo = i
                child_key = ck
                child_free = 0
            if level[best] < 0:
                level[best] = t
                free -= 1
            child_free += free
            i = j
        stack[sp] = (child_lo, hi, t + 1, child_free)
        sp += 1


def select_levels(
    keys: np.ndarray, hashes: np.ndarray, D: int, b: int, g: int, tmax: int, max_points: int
) -> np.ndarray:
    """Tile depth of every point of one bin (keys sorted ascending, depth-D Morton keys).

    A point's depth is the coarsest tile level l whose grid cell (octree depth l + g) has it as min-hash
    point, unless a tile with at most `max_points` remaining points (or at depth `tmax`) takes all of them.
    Levels < b belong to tiles above the bin; see docs/pointcloud.md for why this is partition-independent.
    """
    if g < 1:
        raise ValueError("select_levels: the sampling grid needs at least 1 bit (g >= 1)")
    level = np.full(len(keys), -1, np.int8)
    _select_kernel(keys, hashes, D, b, g, tmax, max_points, level)
    return level


@nb.njit(cache=True, nogil=True)
def _by_level(order, keys, hashes, level, prefix, D, b, perm, keys_l, hashes_l, level_l, starts):
    n = level.shape[0]
    first = np.zeros(129, np.int64)  # a counting sort by level (stable: keeps key order)
    for i in range(n):
        first[np.int64(level[i]) + 1] += 1
    for v in range(1, 129):
        first[v] += first[v - 1]
    n_upper = first[b]  # points of levels < b
    for i in range(n):
        lv = np.int64(level[i])
        p = first[lv]
        first[lv] += 1
        perm[p] = order[i]
        keys_l[p] = keys[i] | prefix
        level_l[p] = lv
        if p < n_upper:
            hashes_l[p] = hashes[i]
    m = 0
    for i in range(n_upper, n):
        sh = U64(3 * (D - np.int64(level_l[i])))
        if i == n_upper or level_l[i] != level_l[i - 1] or (keys_l[i] >> sh) != (keys_l[i - 1] >> sh):
            starts[m] = i
            m += 1
    return n_upper, m


def order_by_level(order, keys, hashes, level, prefix: int, D: int, b: int):
    """The points of a bin (sorted by key: input point order[i] has keys[i], hashes[i], level[i] >= 0, as
    `select_levels` gives them) in tile order, by level (stable): their input points, keys | prefix and
    levels, the hashes of the first n_upper (the points of levels < b, above the bin), the first index of
    every tile below (a run of equal level and tile id at that level) and n_upper."""
    n = len(level)
    perm, keys_l, hashes_l = np.empty(n, np.int64), np.empty(n, np.uint64), np.empty(n, np.uint64)
    level_l, starts = np.empty(n, np.int8), np.empty(n + 1, np.int64)
    n_upper, m = _by_level(
        order, keys, hashes, level, U64(prefix), np.int64(D), np.int64(b), perm, keys_l, hashes_l, level_l,
        starts,
    )  # fmt: skip
    return perm, keys_l, hashes_l[:n_upper], level_l, starts[:m], int(n_upper)
