"""DGM -> quadtree of regular-grid terrain meshes (level of detail pyramid).

The root square covers the district; level `l` splits it into 2^l x 2^l tiles of `tile_cells` x
`tile_cells` grid cells each, so each level halves the cell size and the finest level has the terrain
resolution. Vertex heights of a level come from the DGM averaged to that level's cell size; vertices sit on
tile edges, so neighbouring tiles of one level share their edge heights exactly (no cracks).

The geometric error of a tile is the largest vertical deviation of its mesh from the finest model inside
it, but at least twice its texel size (so viewers also refine for sharper orthophoto texture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

from pipeline.sources.rasters import Bounds, bilinear


@dataclass(frozen=True)
class TerrainPlan:
    """The quadtree: origin (NW corner), finest cell size, tile cells, deepest level."""

    x0: float  # west
    y1: float  # north
    res: float  # finest vertex spacing
    tile_cells: int
    levels: int  # number of levels (deepest level = levels - 1)

    @property
    def size(self) -> float:
        return self.tile_cells * self.res * 2 ** (self.levels - 1)

    def step(self, level: int) -> float:
        return self.res * 2 ** (self.levels - 1 - level)

    def tile_bounds(self, level: int, tx: int, ty: int) -> Bounds:
        s = self.size / 2**level
        return (self.x0 + tx * s, self.y1 - (ty + 1) * s, self.x0 + (tx + 1) * s, self.y1 - ty * s)

    def vertex_count(self, level: int) -> int:
        """Vertices per side of the whole level."""
        return self.tile_cells * 2**level + 1


def plan_terrain(bounds: Bounds, res: float, tile_cells: int) -> TerrainPlan:
    """Smallest quadtree whose finest level has cells of `res` and covers `bounds` (snapped to `res`)."""
    xmin, ymin, xmax, ymax = bounds
    x0 = math.floor(xmin / res + 1e-9) * res
    y1 = math.ceil(ymax / res - 1e-9) * res
    extent = max(xmax - x0, y1 - ymin)
    levels = 1
    while tile_cells * res * 2 ** (levels - 1) < extent - 1e-9:
        levels += 1
    return TerrainPlan(x0, y1, res, tile_cells, levels)


def block_mean(a: np.ndarray) -> np.ndarray:
    """2x2 NaN-aware mean (shape halves; the input must have even shape)."""
    h, w = a.shape
    b = a.reshape(h // 2, 2, w // 2, 2)
    ok = np.isfinite(b)
    cnt = ok.sum(axis=(1, 3))
    s = np.where(ok, b, 0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan).astype(np.float32)


def level_vertex_heights(plan: TerrainPlan, fine: np.ndarray) -> list[np.ndarray]:
    """Vertex height grids per level, row 0 = north edge.

    `fine` is the model on the finest cell grid of the root square: shape (n, n) with n =
    tile_cells * 2^(levels-1), cell (0, 0) at the NW corner. NaN = no data.
    """
    n = plan.tile_cells * 2 ** (plan.levels - 1)
    if fine.shape != (n, n):
        raise ValueError(f"fine grid must be {n}x{n}, got {fine.shape}")
    cells = [fine]
    for _ in range(plan.levels - 1):
        cells.append(block_mean(cells[-1]))
    cells = cells[::-1]  # level 0 first
    out = []
    for level, c in enumerate(cells):
        step = plan.step(level)
        t = Affine(step, 0, plan.x0, 0, -step, plan.y1)
        m = plan.vertex_count(level)
        xs = plan.x0 + step * np.arange(m)
        ys = plan.y1 - step * np.arange(m)
        gx, gy = np.meshgrid(xs, ys)
        v = bilinear(c, t, gx, gy)
        # corners of a NaN-bordered area: fall back to any valid neighbouring cell value
        out.append(v.astype(np.float64))
    return out


def level_errors(plan: TerrainPlan, vertices: list[np.ndarray], fine: np.ndarray) -> list[np.ndarray]:
    """Max |mesh - finest model| per tile of each level: arrays (2^l, 2^l), row = ty."""
    n = fine.shape[0]
    res = plan.res
    xs = plan.x0 + res * (np.arange(n) + 0.5)
    ys = plan.y1 - res * (np.arange(n) + 0.5)
    gx, gy = np.meshgrid(xs, ys)
    errs = []
    for level, v in enumerate(vertices):
        step = plan.step(level)
        # vertex grid as a raster whose cell centres are the vertices
        t = Affine(step, 0, plan.x0 - step / 2, 0, -step, plan.y1 + step / 2)
        approx = bilinear(v, t, gx, gy)
        d = np.abs(approx - fine)
        d[~np.isfinite(d)] = 0.0
        k = 2**level
        b = n // k
        errs.append(d.reshape(k, b, k, b).max(axis=(1, 3)))
    return errs


def tile_grid_mesh(
    vertex_heights: np.ndarray, bounds: Bounds, skirt: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate one tile's (m, m) vertex grid (row 0 north).

    Returns (xyh (N,3) float64 in the source CRS with normal heights, uv (N,2) float32, triangles (M,3)
    uint32 counter-clockwise seen from above / from outside, source index (N,) into the flattened grid,
    skirt vertices indexed m*m + k). Triangles touching a NaN vertex are dropped and unused vertices
    removed. `skirt > 0` adds a vertical curtain of that depth below the four tile edges, which hides the
    cracks between neighbouring tiles shown at different levels of detail.
    """
    m = vertex_heights.shape[0]
    xmin, ymin, xmax, ymax = bounds
    u = np.linspace(0.0, 1.0, m)
    gx, gy = np.meshgrid(xmin + u * (xmax - xmin), ymax - u * (ymax - ymin))
    gu, gv = np.meshgrid(u, u)
    idx = np.arange(m * m).reshape(m, m)
    a = idx[:-1, :-1].ravel()  # NW
    b = idx[:-1, 1:].ravel()  # NE
    c = idx[1:, :-1].ravel()  # SW
    d = idx[1:, 1:].ravel()  # SE
    # counter-clockwise seen from above (x east, y north): SW -> SE -> NE, SW -> NE -> NW
    tris = [np.stack([c, d, b], axis=1), np.stack([c, b, a], axis=1)]
    x, y, h = gx.ravel(), gy.ravel(), vertex_heights.ravel().astype(np.float64)
    uu, vv = gu.ravel(), gv.ravel()
    if skirt > 0:
        # the tile outline counter-clockwise: S edge west->east, E south->north, N east->west, W north->south
        ring = np.concatenate([idx[m - 1, :], idx[::-1, m - 1][1:], idx[0, ::-1][1:], idx[:, 0][1:]])
        low = m * m + np.arange(ring.size)
        x = np.concatenate([x, x[ring]])
        y = np.concatenate([y, y[ring]])
        h = np.concatenate([h, h[ring] - skirt])
        uu = np.concatenate([uu, uu[ring]])
        vv = np.concatenate([vv, vv[ring]])
        top_a, top_b = ring[:-1], ring[1:]
        low_a, low_b = low[:-1], low[1:]
        # outward is to the right of travel: (a_low, b_low, b_top), (a_low, b_top, a_top)
        tris += [np.stack([low_a, low_b, top_b], axis=1), np.stack([low_a, top_b, top_a], axis=1)]
    tris = np.concatenate(tris)
    ok = np.all(np.isfinite(h[tris]), axis=1)
    if ok.all():  # every vertex is used (grid and skirt): np.unique would return them all
        return (
            np.stack([x, y, h], axis=1),
            np.stack([uu, vv], axis=1).astype(np.float32),
            tris.astype(np.uint32),
            np.arange(h.size),
        )
    tris = tris[ok]
    used = np.unique(tris)
    remap = np.full(h.size, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    xyh = np.stack([x[used], y[used], h[used]], axis=1)
    uv = np.stack([uu[used], vv[used]], axis=1).astype(np.float32)
    return xyh, uv, remap[tris].astype(np.uint32), used
