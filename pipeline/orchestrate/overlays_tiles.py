"""Tile partitions of the parcel overlay and the building change: one task per tile on the executor seam.

    parcel_rows(ctx, ...)     -> the parcel overlay's rows, assembled from per-tile rows
    building_rows(ctx, ...)   -> building_change's rows, assembled from per-tile rows

The partition is the square grid of `layers.overlays.partition_m` (the delivery tile grid: 1 km in NRW) in
the working CRS. A feature (parcel, footprint) belongs to the tile that holds the centre of its envelope.
A tile's task gets the features it owns, the neighbours that reach into its window (the owned features'
envelope plus one cell) in region order, and the raster window cropped from the analysis grid; it returns
the owned features' rows. Neighbours take part in the rasterisation only, so a cell whose centre lies on a
shared edge goes to the same feature as in a one-piece run: the rows equal those of one partition holding
the whole region (tests/unit/test_overlays_tiles.py), and the output does not depend on the partition or
the executor.

Memory of a task: its tile's features and raster window. GeoPackage parcels are read by the task itself
through the spatial index (`read_parcels(bbox=...)`), the planning pass here reads only their envelopes
(`pyogrio.read_bounds`). Formats without a spatial index (NAS: updates apply across the whole delivery)
are read once, streaming, by the planning pass, and each task gets the parcels of its window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine

from pipeline.orchestrate.grouping import group_positions
from pipeline.sources.rasters import Grid

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class ParcelSource:
    """Where a task reads its parcels (the arguments of `pipeline.sources.cadastre.read_parcels`)."""

    files: tuple[str, ...]
    fmt: str
    layer: str | None
    crs: str | None
    target_crs: str

    @property
    def indexed(self) -> bool:
        """True when every file is a GeoPackage (read by box through its spatial index)."""
        return self.fmt != "nas" and all(f.lower().endswith(".gpkg") for f in self.files)

    def read(self, bbox: Bounds | None = None) -> gpd.GeoDataFrame:
        from pipeline.sources.cadastre import read_parcels

        p = read_parcels(
            list(self.files), self.fmt, layer=self.layer, crs=self.crs, target_crs=self.target_crs, bbox=bbox
        )
        return p.iloc[parcel_order(p)].reset_index(drop=True)

    def envelopes(self) -> np.ndarray:
        """(N, 4) envelopes of every parcel in the working CRS, in `parcel_order` (planning pass)."""
        import pyogrio

        from pipeline.sources.cadastre.gpkg import PARCEL_LAYERS, find_layer, same_crs

        files = sorted(self.files)
        if self.indexed:
            parts: list[np.ndarray] = []
            keys: list[str | None] = []
            for f in files:
                lyr = find_layer(Path(f), self.layer, PARCEL_LAYERS, "parcel")
                # same CRS as the working CRS: the envelopes alone (no geometries, no attributes)
                if not same_crs(Path(f), lyr, self.crs, self.target_crs)[0]:
                    break
                lower = {str(c).lower(): str(c) for c in pyogrio.read_info(f, layer=lyr)["fields"]}
                key = lower.get("flstkennz") or lower.get("flurstueckskennzeichen")
                if key is None:
                    break
                df = pyogrio.read_dataframe(f, layer=lyr, columns=[key], read_geometry=False)
                _fids, b = pyogrio.read_bounds(f, layer=lyr)
                parts.append(np.asarray(b, dtype=np.float64).T)
                keys.extend(None if v is None else str(v) for v in df[key].to_numpy())
            else:
                env = np.concatenate(parts) if parts else np.zeros((0, 4))
                return env[_order(np.array(keys, dtype=object), env)]
        p = self.read()
        return shapely.bounds(p.geometry.to_numpy())


def _order(keys: np.ndarray, env: np.ndarray) -> np.ndarray:
    """Parcels by flstkennz (missing last), ties by envelope: a total order that does not depend on the
    order a file (or a spatial filter) returns them in."""
    missing = np.array([k is None or (isinstance(k, float) and math.isnan(k)) for k in keys], dtype=bool)
    text = np.array(["" if m else str(k) for k, m in zip(keys, missing, strict=True)], dtype=object)
    e = np.nan_to_num(env, nan=np.inf)
    return np.lexsort((e[:, 3], e[:, 2], e[:, 1], e[:, 0], text, missing))


def parcel_order(p: gpd.GeoDataFrame) -> np.ndarray:
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    return _order(p["flstkennz"].to_numpy(dtype=object), shapely.bounds(p.geometry.to_numpy()))


def tile_keys(env: np.ndarray, size: float) -> np.ndarray:
    """(N, 2) int64 tile index (column, row from the origin) of each envelope's centre; -2**62 if none."""
    cx = (env[:, 0] + env[:, 2]) / 2
    cy = (env[:, 1] + env[:, 3]) / 2
    ok = np.isfinite(cx) & np.isfinite(cy)
    out = np.full((len(env), 2), -(2**62), dtype=np.int64)
    out[ok, 0] = np.floor(cx[ok] / size).astype(np.int64)
    out[ok, 1] = np.floor(cy[ok] / size).astype(np.int64)
    return out


def tiles_of(keys: np.ndarray) -> list[tuple[int, int]]:
    """The occupied tiles, sorted (south-west first, row by row)."""
    ok = keys[:, 0] > -(2**62)
    uniq = np.unique(keys[ok], axis=0) if ok.any() else np.zeros((0, 2), dtype=np.int64)
    return sorted((int(i), int(j)) for i, j in uniq)


def crop(grid: Grid, arrays: list[np.ndarray | None], bounds: Bounds, margin: int = 1):
    """The cells of `grid` covering `bounds` plus `margin` cells: (cropped arrays, window transform,
    window extent)."""
    t = grid.transform
    res = t.a
    c0 = max(math.floor((bounds[0] - t.c) / res) - margin, 0)
    c1 = min(math.ceil((bounds[2] - t.c) / res) + margin, grid.width)
    r0 = max(math.floor((t.f - bounds[3]) / res) - margin, 0)
    r1 = min(math.ceil((t.f - bounds[1]) / res) + margin, grid.height)
    c1, r1 = max(c1, c0), max(r1, r0)
    win = Affine(t.a, t.b, t.c + c0 * t.a, t.d, t.e, t.f + r0 * t.e)
    extent = (win.c, win.f + win.e * (r1 - r0), win.c + win.a * (c1 - c0), win.f)
    return [None if a is None else np.ascontiguousarray(a[r0:r1, c0:c1]) for a in arrays], win, extent


def _union_bounds(env: np.ndarray) -> Bounds:
    return (
        float(np.nanmin(env[:, 0])),
        float(np.nanmin(env[:, 1])),
        float(np.nanmax(env[:, 2])),
        float(np.nanmax(env[:, 3])),
    )


def _intersecting(tree: shapely.STRtree, bounds: Bounds) -> np.ndarray:
    """Positions of the tree's geometries whose envelope intersects `bounds`, ascending (region order)."""
    return np.sort(tree.query(shapely.box(*bounds)))


# ---- parcels --------------------------------------------------------------------------------------


def window_rows(frame: gpd.GeoDataFrame, env: np.ndarray, box: Bounds) -> gpd.GeoDataFrame:
    """The rows of `frame` whose envelope (`env`, one row per feature) intersects `box`, in frame order
    (what `read_parcels(bbox=box)` selects)."""
    hit = (env[:, 0] <= box[2]) & (env[:, 2] >= box[0]) & (env[:, 1] <= box[3]) & (env[:, 3] >= box[1])
    return frame[hit].reset_index(drop=True)


def parcel_tile(
    source: ParcelSource | gpd.GeoDataFrame,
    tile: tuple[int, int],
    size: float,
    window: Bounds,
    buildings: gpd.GeoDataFrame,
    landcover: np.ndarray | None,
    ndsm: np.ndarray | None,
    transform: Affine,
    floor_height_m: float,
) -> gpd.GeoDataFrame:
    """The parcel overlay rows of the parcels one tile owns. `source`: where the task reads its parcels
    (by the window), or the parcels of the window in region order (a format without a spatial index)."""
    from pipeline.stages.overlays.parcels import parcel_overlay

    p = source.read(window) if isinstance(source, ParcelSource) else source
    env = shapely.bounds(p.geometry.to_numpy())
    keys = tile_keys(env, size)
    owned = (keys[:, 0] == tile[0]) & (keys[:, 1] == tile[1])
    out = parcel_overlay(
        p,
        buildings,
        landcover=landcover,
        ndsm=ndsm,
        transform=transform,
        floor_height_m=floor_height_m,
        owned=owned,
    )
    # the position key of the region order (parcel_order) travels with the rows
    kept = p[owned]
    kept = kept[kept.geometry.notna() & ~kept.geometry.is_empty]
    e = shapely.bounds(kept.geometry.to_numpy())
    for i, c in enumerate(("_e0", "_e1", "_e2", "_e3")):
        out[c] = e[:, i]
    return out


def parcel_rows(
    source: ParcelSource,
    size: float,
    buildings: gpd.GeoDataFrame,
    grid: Grid,
    landcover: np.ndarray | None,
    ndsm: np.ndarray | None,
    floor_height_m: float,
    executor: Any = None,
    progress: Any = None,
    window: int | None = None,
) -> gpd.GeoDataFrame | None:
    """Every parcel's overlay row, from one task per tile, in region order (None: no parcels). With
    `window`, at most that many tiles' tasks (and raster windows) are in flight at a time."""
    from pipeline.orchestrate.executor import map_ordered

    whole = None if source.indexed else source.read()  # one streaming read, partitioned below
    env = source.envelopes() if whole is None else shapely.bounds(whole.geometry.to_numpy())
    keys = tile_keys(env, size)
    tiles = tiles_of(keys)
    if not tiles:
        return None
    bgeoms = buildings.geometry.to_numpy()
    tree = shapely.STRtree(bgeoms)

    def item(k: int) -> tuple:
        # a tile's arguments (its raster windows are copies) are cut when its task is submitted
        tile = tiles[k]
        own = (keys[:, 0] == tile[0]) & (keys[:, 1] == tile[1])
        window = _union_bounds(env[own])
        (lc, nd), win_t, extent = crop(grid, [landcover, ndsm], window)
        # every parcel reaching into the raster window takes part in the rasterisation
        box = (
            min(window[0], extent[0]),
            min(window[1], extent[1]),
            max(window[2], extent[2]),
            max(window[3], extent[3]),
        )
        bsub = buildings.iloc[_intersecting(tree, window)].reset_index(drop=True)
        own_parcels = source if whole is None else window_rows(whole, env, box)
        return (own_parcels, tile, size, box, bsub, lc, nd, win_t, floor_height_m)

    parts = map_ordered(
        executor,
        parcel_tile,
        (item(i) for i in range(len(tiles))),
        name="parcel tiles",
        total=len(tiles),
        progress=progress,
        window=window,
    )
    out = pd.concat(parts, ignore_index=True)
    order = _order(
        out["flstkennz"].to_numpy(dtype=object), out[["_e0", "_e1", "_e2", "_e3"]].to_numpy(dtype=np.float64)
    )
    out = out.iloc[order].drop(columns=["_e0", "_e1", "_e2", "_e3"]).reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=parts[0].crs)


# ---- building change ------------------------------------------------------------------------------


def change_tile(
    footprints: gpd.GeoDataFrame,
    owned: np.ndarray,
    ndsm_old: np.ndarray,
    ndsm_new: np.ndarray,
    transform: Affine,
    cfg: Any,
) -> pd.DataFrame:
    """building_change rows of the footprints one tile owns (the others are neighbours in its window)."""
    from pipeline.stages.change import building_change

    ch = building_change(footprints, ndsm_old, ndsm_new, transform, cfg)
    return ch[owned]


def building_rows(
    buildings: gpd.GeoDataFrame,
    size: float,
    grid: Grid,
    ndsm_old: np.ndarray,
    ndsm_new: np.ndarray,
    cfg: Any,
    executor: Any = None,
    progress: Any = None,
    window: int | None = None,
) -> pd.DataFrame:
    """building_change(buildings, ...) assembled from one task per tile (index aligned with `buildings`).
    With `window`, at most that many tiles' tasks (and raster windows) are in flight at a time."""
    from pipeline.orchestrate.executor import map_ordered
    from pipeline.stages.change import building_change

    b = buildings.reset_index(drop=True)
    geoms = b.geometry.to_numpy()
    env = shapely.bounds(geoms)
    keys = tile_keys(env, size)
    tiles = tiles_of(keys)
    loose = keys[:, 0] == -(2**62)  # no geometry: no tile (rows computed with the first task's rules)
    if not tiles or loose.any():
        return building_change(b, ndsm_old, ndsm_new, grid.transform, cfg).set_axis(buildings.index)
    tree = shapely.STRtree(geoms)
    # the footprints each tile owns (ascending), and those its task gets (owned + neighbours in its window)
    _tiles, inverse = np.unique(keys, axis=0, return_inverse=True)  # the order of `tiles_of`
    inverse = inverse.reshape(-1)
    owned = [pos for _k, pos in group_positions(inverse)]
    sels = []
    for own in owned:
        (_o, _n), _t, extent = crop(grid, [None, None], _union_bounds(env[own]))
        sels.append(np.union1d(_intersecting(tree, extent), own))

    def item(k: int) -> tuple:
        # a tile's arguments (its raster windows are copies) are cut when its task is submitted
        own, sel = owned[k], sels[k]
        (o, n), win_t, _extent = crop(grid, [ndsm_old, ndsm_new], _union_bounds(env[own]))
        assert o is not None and n is not None
        return (b.iloc[sel].reset_index(drop=True), np.isin(sel, own), o, n, win_t, cfg)

    parts = map_ordered(
        executor,
        change_tile,
        (item(i) for i in range(len(tiles))),
        name="change tiles",
        total=len(tiles),
        progress=progress,
        window=window,
    )
    owners = owned
    rows = pd.concat(parts, ignore_index=True)
    pos = np.concatenate(owners)
    out = rows.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True)
    return out.set_axis(buildings.index)
