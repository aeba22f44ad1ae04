"""Terrain pyramid by chunks: one chunk = one tile of the `chunk level` and every tile below it.

The quadtree of `TerrainPlan` is cut at the chunk level c = max(0, levels - 1 - depth): each chunk holds
1 + 4 + ... + 4^depth tiles and is built from its own window of the terrain model (the chunk plus a margin
of one level-c cell, so vertex heights on chunk edges equal those of the neighbouring chunk). The levels
above c are built from the chunks' small summaries (their level-c cells and texture), never from the
full raster. Every function here is pure (arrays in, arrays out).

Vertex heights: the model averaged to each level's cell size (NaN-aware 2x2 means, level by level), each
vertex the mean of the four cells around it (NaN if any is NaN); outside the root square the edge cells are
repeated (the clamp of `pyramid.bilinear`). Errors: levels >= c the largest |mesh - model| over the finest
cells of the tile (as `pyramid.level_errors`); levels < c an upper bound (see `upper_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.sources.rasters import Bounds
from pipeline.stages.terrain.pyramid import TerrainPlan, block_mean

CHUNK_DEPTH = 3  # levels below the chunk level held by one chunk (4x4... 8x8 finest tiles per chunk)


@dataclass(frozen=True)
class ChunkLayout:
    plan: TerrainPlan
    level: int  # chunk level c

    @property
    def factor(self) -> int:
        """Finest cells per level-c cell (the margin of a chunk window, in finest cells)."""
        return 2 ** (self.plan.levels - 1 - self.level)

    @property
    def side(self) -> int:
        """Finest cells per chunk side."""
        return self.plan.tile_cells * self.factor

    @property
    def count(self) -> int:
        """Chunks per side."""
        return 2**self.level

    def chunk_bounds(self, cx: int, cy: int) -> Bounds:
        return self.plan.tile_bounds(self.level, cx, cy)

    def window_bounds(self, cx: int, cy: int) -> Bounds:
        m = self.factor * self.plan.res
        b = self.chunk_bounds(cx, cy)
        return (b[0] - m, b[1] - m, b[2] + m, b[3] + m)

    def window_origin(self, cx: int, cy: int) -> tuple[int, int]:
        """(row, col) of the window's first finest cell in the root square (may be negative)."""
        return cy * self.side - self.factor, cx * self.side - self.factor


def chunk_layout(plan: TerrainPlan, depth: int = CHUNK_DEPTH) -> ChunkLayout:
    return ChunkLayout(plan, max(0, plan.levels - 1 - depth))


def repeat_edges(cells: np.ndarray, row0: int, col0: int, n: int) -> np.ndarray:
    """Cells of a window whose first cell is (row0, col0) in a level grid of n x n cells: rows/columns
    outside [0, n) become copies of the nearest edge row/column inside (in place; returns `cells`)."""
    h, w = cells.shape
    top, left = max(0, -row0), max(0, -col0)
    bottom, right = max(0, row0 + h - n), max(0, col0 + w - n)
    if top:
        cells[:top] = cells[top]
    if bottom:
        cells[h - bottom :] = cells[h - bottom - 1]
    if left:
        cells[:, :left] = cells[:, left : left + 1]
    if right:
        cells[:, w - right :] = cells[:, w - right - 1 : w - right]
    return cells


def corner_vertices(cells: np.ndarray) -> np.ndarray:
    """(h, w) cells -> (h-1, w-1) heights at the inner cell corners: mean of the four cells (float64)."""
    a = cells.astype(np.float64)
    return ((a[:-1, :-1] + a[:-1, 1:]) + (a[1:, :-1] + a[1:, 1:])) * 0.25


def interpolate_vertices(v: np.ndarray, f: int, offset: float) -> np.ndarray:
    """Bilinear interpolation of a vertex grid (n+1, n+1) at points spaced 1/f apart in vertex units,
    starting `offset` (0.5 = cell centres of a grid f times finer, 0 = its vertices)."""
    n = v.shape[0] - 1
    m = n * f + (0 if offset else 1)
    u = (np.arange(m) + offset) / f
    i0 = np.minimum(np.floor(u).astype(np.int64), n - 1)
    t = u - i0
    top = v[i0][:, i0] * (1 - t)[None, :] + v[i0][:, i0 + 1] * t[None, :]
    bot = v[i0 + 1][:, i0] * (1 - t)[None, :] + v[i0 + 1][:, i0 + 1] * t[None, :]
    return top * (1 - t)[:, None] + bot * t[:, None]


def _max_per_tile(d: np.ndarray, k: int) -> np.ndarray:
    d = np.where(np.isfinite(d), d, 0.0)
    b = d.shape[0] // k
    return d[: k * b, : k * b].reshape(k, b, k, b).max(axis=(1, 3))


@dataclass
class MeshChunk:
    """Vertex heights and errors of the tiles of one chunk, plus its summary for the levels above."""

    cx: int
    cy: int
    vertices: dict[tuple[int, int, int], np.ndarray]  # (level, tx, ty) -> (tc+1, tc+1) float64
    errors: dict[int, np.ndarray]  # level -> (k, k) max |mesh - model| of the chunk's tiles, row = ty
    cells: np.ndarray  # (tc, tc) float32: the model averaged to level-c cells (the chunk tile's cells)


def mesh_chunk(layout: ChunkLayout, cx: int, cy: int, window: np.ndarray) -> MeshChunk:
    """Tiles of chunk (cx, cy) from its window of the finest model: (side + 2 margin)^2 float32, NaN = no
    data, first cell at `layout.window_origin(cx, cy)`."""
    plan, c = layout.plan, layout.level
    tc, top = plan.tile_cells, plan.levels - 1
    mfine = layout.factor
    if window.shape != (layout.side + 2 * mfine,) * 2:
        raise ValueError(f"chunk window must be {layout.side + 2 * mfine} cells square, got {window.shape}")
    r0, c0 = layout.window_origin(cx, cy)
    fine_inner = window[mfine:-mfine, mfine:-mfine]
    cells = np.array(window, dtype=np.float32, copy=True)
    vertices: dict[tuple[int, int, int], np.ndarray] = {}
    errors: dict[int, np.ndarray] = {}
    summary = None
    for level in range(top, c - 1, -1):
        f = 2 ** (top - level)  # finest cells per cell of this level
        if level < top:
            cells = block_mean(cells)
        m = mfine // f  # margin in cells of this level
        repeat_edges(cells, r0 // f, c0 // f, tc * 2**level)
        n = tc * 2 ** (level - c)  # cells of this level per chunk side
        v = corner_vertices(cells[m - 1 : m + n + 1, m - 1 : m + n + 1])  # (n+1, n+1)
        k = 2 ** (level - c)
        for j in range(k):
            for i in range(k):
                tile = v[j * tc : (j + 1) * tc + 1, i * tc : (i + 1) * tc + 1]
                vertices[(level, cx * k + i, cy * k + j)] = np.ascontiguousarray(tile)
        approx = interpolate_vertices(v, f, 0.5)
        errors[level] = _max_per_tile(np.abs(approx - fine_inner), k)
        if level == c:
            summary = np.ascontiguousarray(cells[m : m + n, m : m + n])
    assert summary is not None
    return MeshChunk(cx, cy, vertices, errors, summary)


def upper_levels(
    layout: ChunkLayout, chunk_cells: dict[tuple[int, int], np.ndarray]
) -> dict[tuple[int, int, int], np.ndarray]:
    """Vertex heights of the tiles above the chunk level from the chunks' level-c cells (missing = NaN)."""
    plan, c, tc = layout.plan, layout.level, layout.plan.tile_cells
    out: dict[tuple[int, int, int], np.ndarray] = {}
    if c == 0:
        return out
    cells = np.full((tc * 2**c, tc * 2**c), np.nan, dtype=np.float32)
    for (cx, cy), a in chunk_cells.items():
        cells[cy * tc : (cy + 1) * tc, cx * tc : (cx + 1) * tc] = a
    for level in range(c - 1, -1, -1):
        cells = block_mean(cells)
        padded = repeat_edges(np.pad(cells, 1), -1, -1, cells.shape[0])
        v = corner_vertices(padded)
        for ty in range(2**level):
            for tx in range(2**level):
                out[(level, tx, ty)] = np.ascontiguousarray(
                    v[ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1]
                )
    del plan
    return out


def upper_errors(
    layout: ChunkLayout,
    vertices: dict[tuple[int, int, int], np.ndarray],
    chunk_errors: np.ndarray,
) -> list[np.ndarray]:
    """Error bound of the tiles above the chunk level (levels 0 .. c-1; arrays (2^l, 2^l), row = ty).

    |mesh_l - model| <= |mesh_l - mesh_c| + |mesh_c - model|: the first term is bilinear inside every
    level-c cell, so its maximum is reached at level-c vertices; the second is the largest error of the
    chunk tiles inside. `chunk_errors` (2^c, 2^c) are the chunk tiles' errors."""
    c, tc = layout.level, layout.plan.tile_cells
    n = tc * 2**c
    vc = np.full((n + 1, n + 1), np.nan)
    for (level, tx, ty), v in vertices.items():
        if level == c:
            vc[ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1] = v
    out = []
    for level in range(c):
        k = 2**level
        nl = tc * k
        vl = np.full((nl + 1, nl + 1), np.nan)
        for ty in range(k):
            for tx in range(k):
                vl[ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1] = vertices[(level, tx, ty)]
        approx = interpolate_vertices(vl, 2 ** (c - level), 0.0)
        d = np.abs(approx - vc)
        d = np.where(np.isfinite(d), d, 0.0)
        b = n // k
        # vertices on a tile edge belong to both tiles
        e = np.zeros((k, k))
        for ty in range(k):
            for tx in range(k):
                e[ty, tx] = d[ty * b : (ty + 1) * b + 1, tx * b : (tx + 1) * b + 1].max()
        sub = chunk_errors.reshape(k, 2 ** (c - level), k, 2 ** (c - level)).max(axis=(1, 3))
        out.append(e + sub)
    return out


# ---- textures ------------------------------------------------------------------------------------


def area_weights(n_src: int, start: float, ratio: float, n_dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights of an area-average resampling along one axis: destination pixel j covers source pixels
    [start + j * ratio, start + (j + 1) * ratio). Returns (index (n_dst, K), weight (n_dst, K))."""
    k = int(np.ceil(ratio)) + 1
    a = start + np.arange(n_dst) * ratio
    b = a + ratio
    i = np.floor(a).astype(np.int64)[:, None] + np.arange(k)[None, :]
    w = np.clip(np.minimum(b[:, None], i + 1) - np.maximum(a[:, None], i), 0.0, None)
    w[(i < 0) | (i >= n_src)] = 0.0
    return np.clip(i, 0, n_src - 1), w


def _resample_axis(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Area-weighted sums along `axis` (n source pixels -> n_out, the same extent). When the pattern of
    weights repeats every few pixels (gcd of the sizes), each output column of one period is a short sum
    of strided source columns; otherwise a gather per weight."""
    from math import gcd

    n = a.shape[axis]
    g = gcd(n, n_out)
    ps, pd = n // g, n_out // g
    idx, w = area_weights(n, 0.0, n / n_out, n_out)
    if ps <= 64:  # views of the source split into periods along `axis`: no copies, no gathers
        xp = a.reshape(*a.shape[:axis], g, ps, *a.shape[axis + 1 :])
        out = np.zeros((*a.shape[:axis], g, pd, *a.shape[axis + 1 :]), dtype=np.float32)
        lead: tuple[slice | int, ...] = (slice(None),) * (axis + 1)
        for j in range(pd):
            for k in range(idx.shape[1]):
                if w[j, k] > 0:
                    out[(*lead, j)] += np.float32(w[j, k]) * xp[(*lead, int(idx[j, k]))]
        return out.reshape(*a.shape[:axis], n_out, *a.shape[axis + 1 :])
    x = np.moveaxis(a, axis, -1)
    out = np.zeros((*x.shape[:-1], n_out), dtype=np.float32)
    for k in range(idx.shape[1]):
        out += x[..., idx[:, k]] * w[:, k].astype(np.float32)
    return np.moveaxis(out, -1, axis)


def area_resample(src: np.ndarray, n_out: int) -> np.ndarray:
    """(bands, n, n) float with NaN = no data -> (bands, n_out, n_out): area-weighted mean over the valid
    source pixels (NaN where none). Separable; sums in float32 in a fixed order (deterministic)."""
    ok = np.isfinite(src).all(axis=0)
    full = bool(ok.all())
    val = src.astype(np.float32, copy=False) if full else np.where(ok[None], src, 0.0).astype(np.float32)
    num = _resample_axis(_resample_axis(val, 1, n_out), 2, n_out)
    if full:  # every weight counts: the denominator is the weight sum of each row and column
        one = np.ones((1, src.shape[1], src.shape[2]), np.float32)
        den = _resample_axis(_resample_axis(one[:, :, :1], 1, n_out), 2, 1) * _resample_axis(
            one[:, :1, :], 2, n_out
        )
    else:
        den = _resample_axis(_resample_axis(ok.astype(np.float32)[None], 1, n_out), 2, n_out)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / den, np.nan).astype(np.float32)


def halve_texture(rgb: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, 2h, 2w) uint8 + valid (2h, 2w) -> (3, h, w): mean of the valid pixels of each 2x2 block,
    rounded half up in integers (deterministic), invalid where none is valid."""
    _b, h2, w2 = rgb.shape
    if valid.all():  # the common case, same result: (sum + 2) // 4
        a = rgb.astype(np.uint16)
        s4 = (a[:, 0::2, 0::2] + a[:, 0::2, 1::2]) + (a[:, 1::2, 0::2] + a[:, 1::2, 1::2])
        return ((s4 + 2) // 4).astype(np.uint8), np.ones((h2 // 2, w2 // 2), dtype=bool)
    v = valid.astype(np.uint16)
    cnt = (v[0::2, 0::2] + v[0::2, 1::2]) + (v[1::2, 0::2] + v[1::2, 1::2])
    a = rgb.astype(np.uint16) * v[None]
    s = (a[:, 0::2, 0::2] + a[:, 0::2, 1::2]) + (a[:, 1::2, 0::2] + a[:, 1::2, 1::2])
    out = ((2 * s + cnt) // np.maximum(2 * cnt, 1)).astype(np.uint8)  # 0 where cnt == 0
    return out, cnt > 0


def texture_image(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels without orthophoto become neutral grey (128)."""
    return np.where(valid[None], rgb, np.uint8(128))


def _ladder(gap: np.ndarray) -> np.ndarray:
    return np.exp2(np.ceil(np.log2(np.maximum(0.5, gap))))


def edge_skirts(vertices: dict[tuple[int, int, int], np.ndarray], levels: int, tc: int) -> list[np.ndarray]:
    """Skirt depth per tile from the cracks it can actually show (levels 0 .. levels-1, arrays (2^l, 2^l)).

    Tiles of one level share their edge heights, so a crack opens only where a tile meets a coarser one
    across a boundary of that coarser level, and its height there is the difference between the finer
    tile's edge and its own ancestor's edge on that boundary line (both linear between the finer vertices,
    so the largest difference is at a vertex). A tile's skirt covers (a) its edges against every ancestor
    (the coarser neighbour lies lower) and (b) the edges of the finer tiles across each of its edges
    against it (the finer neighbour lies lower). Rounded up to a power of two metres, at least 0.5 m; the
    root has none. Only boundary lines near a changed DGM cell change, so an edited DGM tile rebuilds
    few tiles beyond its own and its ancestors."""
    grids = []
    for level in range(levels):
        k = 2**level
        g = np.full((tc * k + 1, tc * k + 1), np.nan)
        for ty in range(k):
            for tx in range(k):
                v = vertices.get((level, tx, ty))
                if v is not None:
                    g[ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1] = v
        grids.append(g)
    up = [np.zeros((2**level, 2**level)) for level in range(levels)]  # (a), per finer tile
    down = [np.zeros((2**level, 2**level)) for level in range(levels)]  # (b), per coarser tile
    for m in range(1, levels):
        for k in range(m + 1, levels):
            f = 2 ** (k - m)
            n = tc * 2**k
            pos = np.arange(n + 1) / f  # level-k vertices in level-m vertex units
            src = np.arange(tc * 2**m + 1)
            for axis in (0, 1):  # 0: rows (north/south edges), 1: columns (west/east edges)
                for j in range(1, 2**m):  # inner boundary lines of level m (the root's outline has no cracks)
                    line_k = grids[k][j * tc * f, :] if axis == 0 else grids[k][:, j * tc * f]
                    line_m = grids[m][j * tc, :] if axis == 0 else grids[m][:, j * tc]
                    d = np.abs(line_k - np.interp(pos, src, line_m))  # NaN next to a vertex without data
                    d[~np.isfinite(d)] = 0.0
                    seg_k = np.maximum(d[:n].reshape(-1, tc).max(axis=1), d[tc::tc])
                    seg_m = np.maximum(d[:n].reshape(-1, tc * f).max(axis=1), d[tc * f :: tc * f])
                    for side_k, side_m in ((j * f - 1, j - 1), (j * f, j)):  # both sides of the line
                        for arr, side, seg in ((up[k], side_k, seg_k), (down[m], side_m, seg_m)):
                            a = arr[side, :] if axis == 0 else arr[:, side]
                            np.maximum(a, seg, out=a)
    out = [np.zeros((1, 1))]
    for level in range(1, levels):
        out.append(_ladder(np.maximum(up[level], down[level])))
    return out
