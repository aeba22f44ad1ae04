"""Point kernels: the nested min-hash level of detail of one bin (see docs/pointcloud.md) and the order of
its points by level."""

from __future__ import annotations

import numba as nb
import numpy as np

U64 = np.uint64


@nb.njit(cache=True, nogil=True)
def _select_kernel(keys, hashes, D, b, g, tmax, max_points, level):
    n = keys.shape[0]
    t0 = b - g
    if t0 < 0:
        t0 = 0
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
    cap = 8 * (tmax - b + 2) + 16
    s_lo = np.empty(cap, np.int64)
    s_hi = np.empty(cap, np.int64)
    s_t = np.empty(cap, np.int64)
    s_free = np.empty(cap, np.int64)
    remaining = 0
    for i in range(n):
        if level[i] < 0:
            remaining += 1
    s_lo[0] = 0
    s_hi[0] = n
    s_t[0] = b
    s_free[0] = remaining
    sp = 1
    while sp > 0:
        sp -= 1
        lo = s_lo[sp]
        hi = s_hi[sp]
        t = s_t[sp]
        remaining = s_free[sp]
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
                s_lo[sp] = child_lo
                s_hi[sp] = i
                s_t[sp] = t + 1
                s_free[sp] = child_free
                sp += 1
                child_lo = i
                child_key = ck
                child_free = 0
            if level[best] < 0:
                level[best] = t
                free -= 1
            child_free += free
            i = j
        s_lo[sp] = child_lo
        s_hi[sp] = hi
        s_t[sp] = t + 1
        s_free[sp] = child_free
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
    if len(keys):
        _select_kernel(keys, hashes, D, b, g, tmax, max_points, level)
    return level


@nb.njit(cache=True, nogil=True)
def _level_order(level, out):
    counts = np.zeros(129, np.int64)
    for i in range(level.shape[0]):
        counts[np.int64(level[i]) + 1] += 1
    for v in range(1, 129):
        counts[v] += counts[v - 1]
    for i in range(level.shape[0]):
        lv = np.int64(level[i])
        out[counts[lv]] = i
        counts[lv] += 1


@nb.njit(cache=True, nogil=True)
def _apply_level_order(order, by_level, keys, level, prefix, D, start, perm, keys_l, level_l, starts):
    n = by_level.shape[0]
    for i in range(n):
        k = by_level[i]
        perm[i] = order[k]
        keys_l[i] = keys[k] | prefix
        level_l[i] = level[k]
    m = 0
    for i in range(start, n):
        lv = np.int64(level_l[i])
        if i == start:
            starts[m] = i
            m += 1
            continue
        sh = U64(3 * (D - lv))
        if lv != np.int64(level_l[i - 1]) or (keys_l[i] >> sh) != (keys_l[i - 1] >> sh):
            starts[m] = i
            m += 1
    return m


def apply_level_order(order, by_level, keys, level, prefix: int, D: int, start: int):
    """perm = order[by_level], keys[by_level] | prefix, level[by_level] in one pass, and the first index
    of every tile (run of equal level and tile id at that level) from `start` on."""
    n = len(by_level)
    perm = np.empty(n, np.int64)
    keys_l = np.empty(n, np.uint64)
    level_l = np.empty(n, np.int8)
    starts = np.empty(max(n - start, 0) + 1, np.int64)
    m = (
        _apply_level_order(
            order,
            by_level,
            keys,
            level,
            U64(prefix),
            np.int64(D),
            np.int64(start),
            perm,
            keys_l,
            level_l,
            starts,
        )
        if n
        else 0
    )
    return perm, keys_l, level_l, starts[:m]


def level_order(level: np.ndarray) -> np.ndarray:
    """`np.argsort(level, kind="stable")` for int8 levels 0..127 (a counting sort: one pass + one scatter)."""
    out = np.empty(len(level), np.int64)
    if len(level):
        if int(level.min()) < 0:
            raise ValueError("level_order: negative level")
        _level_order(level, out)
    return out
