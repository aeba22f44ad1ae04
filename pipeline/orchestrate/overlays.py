"""Planning overlays and change detection.

    build_overlay_layers(ctx, previous) -> [parcels overlay, change]

Inputs: footprints (the buildings layer's buildings.gpkg when it exists, else the cadastre), parcels
(ALKIS Flurstueck), orthophoto (NDVI), terrain model (DGM, else ground points) and the surface of each
aerial epoch (highest point per cell). Surface rasterisation runs one Dask task per point-cloud file; the
rest is vectorised on a district grid.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.config.model import TwinConfig
from pipeline.errors import InputError
from pipeline.model import BuildContext, LayerResult
from pipeline.orchestrate.executor import Executor, build_executor
from pipeline.orchestrate.grouping import group_positions
from pipeline.orchestrate.overlays_tiles import ParcelSource, building_rows, parcel_rows
from pipeline.orchestrate.point_products import fill_once
from pipeline.orchestrate.terrain import delivery_infos, ground_model, las_bounds
from pipeline.sources.rasters import Grid, orthophoto_bands
from pipeline.stages.point_products import point_product
from pipeline.stages.terrain.rasterise import FileRasters, RasterTarget
from pipeline.styles.gpkg import embed_styles, write_layer

if TYPE_CHECKING:
    from pipeline.orchestrate.cache import CachedCall

STYLES = Path(__file__).resolve().parent.parent / "styles"
# classes never used for the surface: ASPRS noise (7 low, 18 high); AdV files use the same codes for noise
NOISE_CLASSES = (7, 18)
TILE_SIZE_M = 250.0
NODATA_METADATA = -9999.0
OUTLINE_LIFT_M = 0.05  # parcel edges this far above the draped parcels (no z-fighting with the fill)


# ---- inputs ---------------------------------------------------------------------------------------


def district_bounds(ctx: BuildContext) -> tuple[float, float, float, float]:
    cfg = ctx.cfg
    if cfg.sources.aerial:
        files = [i.path for i in ctx.inputs_for(f"aerial:{cfg.sources.aerial[-1].epoch}")]
        if files:
            return las_bounds(files, cfg.crs, cfg.sources.aerial[-1].crs)
    if cfg.sources.dgm:
        from pipeline.orchestrate.terrain import delivery_infos
        from pipeline.sources.rasters import delivery_bounds

        return delivery_bounds(delivery_infos(ctx, "dgm"), cfg.crs.horizontal)
    raise InputError("overlays need an aerial point cloud or a DGM to define the district")


def read_buildings(ctx: BuildContext, previous: list[LayerResult]) -> tuple[gpd.GeoDataFrame, str]:
    """Footprints with `oid` and (when known) `height`: the buildings layer's output, else the cadastre."""
    gpkg = ctx.release_dir / "buildings" / "buildings.gpkg"
    if gpkg.is_file():
        gdf = gpd.read_file(gpkg, layer="buildings")
        return gdf.sort_values("oid").reset_index(drop=True), "buildings layer"
    cfg = ctx.cfg
    if not cfg.sources.cadastre:
        raise InputError("overlays need the cadastre (sources.cadastre) for footprints and parcels")
    from pipeline.sources.cadastre import FootprintFilter, read_footprints

    b = cfg.layers.buildings
    src = cfg.sources.cadastre
    table = read_footprints(
        [i.path for i in ctx.inputs_for("cadastre")],
        src.format,
        flt=FootprintFilter(
            skip_bauteil=b.skip_bauteil, skip_underground=b.skip_underground, min_area_m2=b.min_area_m2
        ),
        layer=src.layer,
        columns=src.columns,
        crs=src.crs,
        target_crs=cfg.crs.horizontal,
    )
    gdf = (
        table.gdf[["oid", "funktion", "geometry"]].copy()
        if "funktion" in table.gdf
        else table.gdf[["oid", "geometry"]].copy()
    )
    return gdf.sort_values("oid").reset_index(drop=True), "cadastre"


def registered_outlines(ctx: BuildContext) -> np.ndarray:
    """Every building-like outline of the cadastre, unfiltered (Bauteile, underground records, invalid
    geometries made valid or, failing that, their envelope): whatever the cadastre records is registered."""
    cfg = ctx.cfg
    src = cfg.sources.cadastre
    if src is None:
        return np.zeros(0, dtype=object)
    files = [i.path for i in ctx.inputs_for("cadastre")]
    out: list = []
    if src.format != "nas" and all(f.suffix.lower() in (".gpkg", ".geojson", ".json", ".shp") for f in files):
        import pyogrio

        from pipeline.sources.cadastre.gpkg import BUILDING_LAYERS, find_layer

        for f in files:
            lyr = (
                find_layer(f, src.layer, BUILDING_LAYERS, "building")
                if f.suffix.lower() == ".gpkg"
                else src.layer
            )
            g = pyogrio.read_dataframe(f, layer=lyr, columns=[], read_geometry=True)
            if src.crs:
                g = g.set_crs(src.crs, allow_override=True)
            if g.crs is not None and g.crs.to_epsg() != parse_epsg(cfg.crs.horizontal):
                g = g.to_crs(cfg.crs.horizontal)
            geoms = g.geometry.to_numpy()
            geoms = geoms[~shapely.is_missing(geoms)]
            fixed = shapely.make_valid(geoms)
            bad = shapely.is_empty(fixed) | (shapely.area(fixed) <= 0)
            fixed[bad] = shapely.envelope(geoms[bad])
            out.extend(fixed)
    else:
        from pipeline.sources.cadastre import FootprintFilter, read_footprints

        t = read_footprints(
            files,
            src.format,
            flt=FootprintFilter(skip_bauteil=False, skip_underground=False, min_area_m2=0.0),
            layer=src.layer,
            columns=src.columns,
            crs=src.crs,
            target_crs=cfg.crs.horizontal,
        )
        out.extend(t.gdf.geometry.to_numpy())
    return np.array(out, dtype=object)


def parse_epsg(crs: str) -> int | None:
    from pipeline.crs import parse_crs

    return parse_crs(crs).to_epsg()


def read_parcels_for(ctx: BuildContext) -> gpd.GeoDataFrame:
    cfg = ctx.cfg
    if not cfg.sources.cadastre:
        raise InputError("the parcel overlay needs the cadastre (sources.cadastre)")
    from pipeline.sources.cadastre import read_parcels

    src = cfg.sources.cadastre
    p = read_parcels(
        [i.path for i in ctx.inputs_for("cadastre")],
        src.format,
        layer=src.parcel_layer,
        crs=src.crs,
        target_crs=cfg.crs.horizontal,
    )
    key = "flstkennz" if "flstkennz" in p else None
    return p.sort_values(key).reset_index(drop=True) if key else p.reset_index(drop=True)


def parcel_source(ctx: BuildContext) -> ParcelSource:
    """Where the parcel tasks read the parcels (ALKIS Flurstueck) from."""
    src = ctx.cfg.sources.cadastre
    if src is None:
        raise InputError("the parcel overlay needs the cadastre (sources.cadastre)")
    files = tuple(str(i.path) for i in ctx.inputs_for("cadastre"))
    return ParcelSource(files, src.format, src.parcel_layer, src.crs, ctx.cfg.crs.horizontal)


def land_use_areas(
    files: list[Path], fmt: str, layer: str | None, column: str, crs: str | None, target_crs: str
) -> gpd.GeoDataFrame | None:
    """Every land-use area (`nutzart` + geometry) of the cadastre, or None when it has no land-use layer
    (and none was asked for). Read from ALKIS GeoPackages only (ConfigError when asked for in another
    format)."""
    from pipeline.errors import ConfigError
    from pipeline.sources.cadastre.gpkg import read_land_use

    if fmt != "alkis_gpkg":
        if layer:
            raise ConfigError(
                f"sources.cadastre.landuse_layer: land use is read from ALKIS GeoPackages only, not {fmt!r}"
            )
        return None
    frames = [
        lu
        for f in sorted(files)
        if f.suffix.lower() == ".gpkg"
        and (lu := read_land_use(f, layer, column, crs, target_crs)) is not None
    ]
    if not frames:
        return None
    lu = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    return lu[lu.geometry.notna() & ~lu.geometry.is_empty].reset_index(drop=True)


def parcel_land_use_for(ctx: BuildContext, parcels: np.ndarray, warnings: list[str]) -> np.ndarray | None:
    """Land-use class of each parcel (`layers.overlays.land_use_classes`) from the cadastre's land-use
    layer; None (with a warning: the parcels are drawn by GRZ class alone) when the cadastre has none."""
    from pipeline.stages.overlays.land_use import parcel_land_use

    classes = ctx.cfg.layers.overlays.land_use_classes
    src = ctx.cfg.sources.cadastre
    if not classes or src is None:
        return None
    files = [Path(i.path) for i in ctx.inputs_for("cadastre")]
    areas = land_use_areas(
        files, src.format, src.landuse_layer, src.landuse_column, src.crs, ctx.cfg.crs.horizontal
    )
    if areas is None:
        warnings.append(
            f"the cadastre ({src.format}) has no land-use layer (sources.cadastre.landuse_layer): parcels "
            "carry no land-use class and are drawn by GRZ class only (streets like building land)"
        )
        return None
    return parcel_land_use(parcels, areas.geometry.to_numpy(), areas["nutzart"].to_numpy(), classes)


def executor(ctx: BuildContext) -> Executor | None:
    """The build's executor (the Dask client's), None without one: tasks run here, in order."""
    return build_executor(ctx.client)


def task_window(ctx: BuildContext) -> int | None:
    """Tile tasks in flight at a time (two per worker, so none waits): their arguments (raster windows)
    are cut as they are submitted, not all at once. None without a client (tasks run here, in order)."""
    from pipeline.orchestrate.executor import dask_workers

    return 2 * dask_workers(ctx.client) if ctx.client is not None else None


# cell of the point density raster of the build report (report/data/point_density.tif)
DENSITY_CELL_M = 2.0


def _point_targets(ctx: BuildContext, epoch_index: int) -> list[tuple[str, RasterTarget]]:
    """Every raster the build derives from one aerial epoch's points, computed in one decoding pass:
    the surfaces (highest non-noise point) of the parcel overlay, the change detection and the solar
    layer, and the point counts of the report's density raster (newest epoch)."""
    cfg = ctx.cfg
    n = len(cfg.sources.aerial)
    bounds = district_bounds(ctx)
    res = []
    if cfg.layers.overlays.enabled and epoch_index == n - 1:
        res.append(cfg.layers.overlays.raster_res_m)
    if cfg.layers.change.enabled and n >= 2 and epoch_index >= n - 2:
        res.append(cfg.layers.change.raster_res_m)
    if cfg.layers.solar.enabled and epoch_index == n - 1:  # pipeline.orchestrate.solar
        res.append(cfg.layers.solar.raster_res_m)
    out = [
        (
            f"dsm {r:g}",
            RasterTarget(Grid.from_bounds(bounds, r, cfg.crs.horizontal), "max", None, NOISE_CLASSES),
        )
        for r in sorted(set(res))
    ]
    if epoch_index == n - 1:
        grid = Grid.from_bounds(bounds, DENSITY_CELL_M, cfg.crs.horizontal)
        out.append(("count", RasterTarget(grid, "max", None, ())))
    return out


class FileRasterWindows(FileRasters):
    """`FileRasters` of one point file with each target's result as (row0, col0, value, count) cropped
    to the cells the file touches (a point product: `pipeline.orchestrate.point_products`)."""

    def result(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:  # type: ignore[override]
        out = []
        for acc in self.accs:
            value, count = acc.value, acc.count
            rows = np.flatnonzero(count.any(axis=1))
            cols = np.flatnonzero(count.any(axis=0))
            if rows.size == 0:
                out.append((0, 0, value[:0, :0].copy(), count[:0, :0].copy()))
                continue
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            out.append((r0, c0, value[r0:r1, c0:c1].copy(), count[r0:r1, c0:c1].copy()))
        return out


def _grid_key(grid: Grid) -> list:
    return [list(grid.transform)[:6], grid.width, grid.height, str(grid.crs)]


def _epoch_calls(ctx: BuildContext, epoch_index: int) -> tuple[list[tuple[str, Grid]], list[CachedCall]]:
    """The names and grids of `_point_targets` of one aerial epoch and one cached call per point file
    ((key parts, function, arguments, keyword arguments) of `pipeline.orchestrate.cache.run_cached`)."""
    ep = ctx.cfg.sources.aerial[epoch_index]
    named = _point_targets(ctx, epoch_index)
    targets = [t for _n, t in named]
    tkey = [[_grid_key(t.grid), t.stat, t.include_classes, list(t.exclude_classes)] for t in targets]
    key = ["overlays-point-rasters-v1", tkey, ctx.cfg.crs, ep.crs]
    calls: list[CachedCall] = [
        (
            [*key, i.sha256],
            point_product,
            (str(i.path), FileRasterWindows, (targets, ctx.cfg.crs, ep.crs)),
            {},
        )
        for i in ctx.inputs_for(f"aerial:{ep.epoch}")
    ]
    return [(name, t.grid) for name, t in named], calls


def epoch_raster_windows(ctx: BuildContext, epoch_index: int, name: str) -> tuple[Grid, Iterator[tuple]]:
    """One raster of `_point_targets` of one aerial epoch as per-file windows: (its grid, an iterator of
    (row0, col0, value, count), one per point file, in input order).

    One task per point file (each file decoded once for all the grids) through the build cache: each
    file's windows are cached by the file's sha256 + the grids + CRS settings, so a rebuild after one
    changed tile rasterises that tile only, and the report reads the overlays' counts from the cache. The
    tasks leave their windows in the cache and the iterator loads one file's at a time: memory here is
    one file's windows, not the region's."""
    from pipeline.orchestrate.cache import build_cache

    named, calls = _epoch_calls(ctx, epoch_index)
    k = [n for n, _g in named].index(name)
    cache = build_cache(ctx)
    keys = fill_once(ctx, calls, f"point-rasters-{ctx.cfg.sources.aerial[epoch_index].epoch}")

    def windows() -> Iterator[tuple]:
        for key, (_kp, fn, args, kw) in zip(keys, calls, strict=True):
            yield cache.call_key(key, fn, *args, **kw)[k]  # computed again here if evicted meanwhile

    return named[k][1], windows()


def surface(ctx: BuildContext, epoch_index: int, grid: Grid) -> np.ndarray:
    """Highest non-noise point per cell of one aerial epoch (NaN where none; 1-cell gaps filled), float32
    assembled from the per-file windows one file at a time (`epoch_raster_windows`)."""
    from pipeline.stages.terrain.rasterise import fill_gaps

    g, windows = epoch_raster_windows(ctx, epoch_index, f"dsm {grid.res:g}")
    assert (g.height, g.width) == (grid.height, grid.width)
    dsm = max_surface((grid.height, grid.width), windows)
    return fill_gaps(dsm, max_cells=1)


def max_surface(shape: tuple[int, int], windows: Iterable[tuple]) -> np.ndarray:
    """float32 grid of the highest value per cell over (row0, col0, value, count) windows (cells with a
    count only; NaN where no window has one), one window at a time: memory is the grid (5 bytes a cell)
    and one window. Equals the float64 maximum cast to float32 (rounding is monotonic)."""
    dsm = np.full(shape, -np.inf, dtype=np.float32)
    seen = np.zeros(shape, dtype=bool)
    for r0, c0, v, c in windows:
        h, w = c.shape
        win = (slice(r0, r0 + h), slice(c0, c0 + w))
        hit = c > 0
        np.maximum(dsm[win], np.where(hit, v, -np.inf).astype(np.float32), out=dsm[win])
        seen[win] |= hit
    dsm[~seen] = np.nan
    return dsm


def point_density(ctx: BuildContext) -> tuple[Grid, list[tuple[int, int, np.ndarray]]] | None:
    """Points per DENSITY_CELL_M cell of the newest aerial epoch (every class), None without points:
    the grid and one (row0, col0, counts) window per point file (windows of neighbouring files share
    their edge cells: counts add up)."""
    cfg = ctx.cfg
    if not cfg.sources.aerial or not ctx.inputs_for(f"aerial:{cfg.sources.aerial[-1].epoch}"):
        return None
    grid, windows = epoch_raster_windows(ctx, len(cfg.sources.aerial) - 1, "count")
    return grid, [(r0, c0, c) for r0, c0, _v, c in windows]


def ndvi_grids(ctx: BuildContext) -> list[Grid]:
    """The analysis grids this build reads the NDVI on (`analysis_grid` of the parcel overlay, the change
    detection and the solar layer), finest first: each orthophoto tile is decoded once for all of them."""
    cfg = ctx.cfg
    res: list[float] = []
    if cfg.layers.overlays.enabled:
        res.append(cfg.layers.overlays.raster_res_m)
    if cfg.layers.change.enabled and len(cfg.sources.aerial) >= 2:
        res.append(cfg.layers.change.raster_res_m)
    if cfg.layers.solar.enabled:
        res.append(cfg.layers.solar.raster_res_m)
    if not res:
        return []
    bounds = district_bounds(ctx)
    return [Grid.from_bounds(bounds, r, cfg.crs.horizontal) for r in sorted(set(res))]


def ndvi_calls(ctx: BuildContext, grids: list[Grid]) -> list[CachedCall] | None:
    """One cached call per orthophoto tile computing its NDVI windows on every grid of `grids` from one
    read of the tile (`_ndvi_windows`), None without an orthophoto or without a near-infrared band
    (`ndvi_grid` says which)."""
    cfg = ctx.cfg
    if not cfg.sources.orthophoto:
        return None
    infos = delivery_infos(ctx, "orthophoto")
    bands = orthophoto_bands(cfg.sources.orthophoto.bands)
    if max(i.count for i in infos) < bands["nir"]:
        return None
    from pipeline.orchestrate.cache import input_sha256

    # incremental: keyed by the tile's content, the bands and the grids
    key = ["overlays-ndvi-windows-v2", cfg.sources.orthophoto, [_grid_key(g) for g in grids], cfg.crs]
    pair = [bands["red"], bands["nir"]]
    return [
        ([*key, input_sha256(ctx, info.path)], _ndvi_windows, (info, list(grids), pair), {}) for info in infos
    ]


def ndvi_grid(ctx: BuildContext, grid: Grid) -> np.ndarray | None:
    cfg = ctx.cfg
    if not cfg.sources.orthophoto:
        return None
    grids = ndvi_grids(ctx)
    keys = [_grid_key(g) for g in grids]
    if _grid_key(grid) not in keys:
        grids, keys = [grid], [_grid_key(grid)]
    k = keys.index(_grid_key(grid))
    calls = ndvi_calls(ctx, grids)
    if calls is None:
        ctx.warn("orthophoto has no near-infrared band: no NDVI (green shares and vegetation masks skipped)")
        return None
    from pipeline.orchestrate.cache import build_cache

    cache = build_cache(ctx)

    def compute() -> np.ndarray:
        # one task per orthophoto tile (memory: the tile's cells) leaving its NDVI windows in the cache,
        # mosaicked here one window at a time like read_grid does (first tile in path order wins where
        # tiles overlap; a cell is a tile's where both bands have data): one float32 and one flag per cell
        keys = fill_once(ctx, calls, "ndvi tiles")
        windows = (
            cache.call_key(key, fn, *a, **kw)[k] for key, (_kp, fn, a, kw) in zip(keys, calls, strict=True)
        )
        return mosaic_first((grid.height, grid.width), windows)

    # incremental: keyed by the orthophoto files' content, the bands and the grid
    key = [
        "overlays-ndvi-v1",
        sorted(i.sha256 for i in ctx.inputs_for("orthophoto")),
        cfg.sources.orthophoto,
        _grid_key(grid),
        cfg.crs,
    ]
    return cache.call(key, compute)


def mosaic_first(shape: tuple[int, int], parts: Iterable[tuple]) -> np.ndarray:
    """float32 mosaic of (row0, col0, value, ok) windows: a cell takes the value of the first window (in
    the given order) whose `ok` is set there, NaN where none is."""
    out = np.full(shape, np.nan, dtype=np.float32)
    filled = np.zeros(shape, dtype=bool)
    for r0, c0, value, ok in parts:
        h, w = ok.shape
        win = (slice(r0, r0 + h), slice(c0, c0 + w))
        take = ok & ~filled[win]
        out[win][take] = value[take]
        filled[win] |= take
    return out


def _crop_cells(r0: int, c0: int, data: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(row0, col0, (bands, rows, cols)) cropped to the cells where every band has data."""
    ok = np.all(np.isfinite(data), axis=0)
    rows = np.flatnonzero(ok.any(axis=1))
    cols = np.flatnonzero(ok.any(axis=0))
    if rows.size == 0:
        return 0, 0, data[:, :0, :0].copy()
    a0, a1, b0, b1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return r0 + a0, c0 + b0, data[:, a0:a1, b0:b1].copy()


def _red_nir_window(info, grid: Grid, bands: list[int]) -> tuple[int, int, np.ndarray]:
    """Red and NIR of one orthophoto tile averaged onto the analysis grid (a task), cropped to the cells
    it fills: (row0, col0, (2, rows, cols)). Memory: the tile's cells and a strip of its pixels, whatever
    the region's size (`pipeline.sources.rasters.read_tile_cells`)."""
    from rasterio.enums import Resampling

    from pipeline.sources.rasters import read_tile_cells

    r0, c0, data = read_tile_cells(info, grid, bands=bands, resampling=Resampling.average)
    return _crop_cells(r0, c0, data)


def _ndvi_of(window: tuple[int, int, np.ndarray]) -> tuple[int, int, np.ndarray, np.ndarray]:
    from pipeline.stages.overlays.ndvi import ndvi

    r0, c0, data = window
    return r0, c0, ndvi(data[0], data[1]), np.all(np.isfinite(data), axis=0)


def _ndvi_window(info, grid: Grid, bands: list[int]) -> tuple[int, int, np.ndarray, np.ndarray]:
    """NDVI of one orthophoto tile on the analysis grid (a task): (row0, col0, NDVI float32, cells where
    both bands have data), cropped like `_red_nir_window`. The NDVI of a cell depends on that cell's red
    and NIR only, so the mosaic of these windows equals the NDVI of the mosaicked bands."""
    return _ndvi_of(_red_nir_window(info, grid, bands))


def _ndvi_windows(
    info, grids: list[Grid], bands: list[int], max_source_pixels: int = 2**23
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """`_ndvi_window` of one orthophoto tile on each of `grids` (a task). The grids whose cells are whole
    blocks of the tile's pixels (`aligned_blocks`) take the exact area average of those pixels from one
    read of the tile in strips of rows (what GDAL's average warp computes there, without warping: the
    cost is decoding the tile once); any other grid is warped as `_ndvi_window` does."""
    blocks = aligned_blocks(info, grids)
    fast = [i for i, b in enumerate(blocks) if b is not None]
    out: list[tuple[int, int, np.ndarray, np.ndarray] | None] = [None] * len(grids)
    if fast:
        sums = block_averages(info, [blocks[i] for i in fast], bands, max_source_pixels)  # type: ignore[misc]
        for i, w in zip(fast, sums, strict=True):
            out[i] = _ndvi_of(_crop_cells(*w))
    for i, g in enumerate(grids):
        if out[i] is None:
            out[i] = _ndvi_window(info, g, bands)
    return [w for w in out if w is not None]


@dataclass(frozen=True)
class CellBlocks:
    """Cells [r0:r1, c0:c1] of a grid, each the k x k tile pixels starting at pixel (prow0 + k * (r - r0),
    pcol0 + k * (c - c0)) of the tile."""

    r0: int
    r1: int
    c0: int
    c1: int
    k: int
    prow0: int
    pcol0: int


def aligned_blocks(info, grids: list[Grid]) -> list[CellBlocks | None]:
    """For each grid, the cells the tile touches as whole blocks of its pixels, or None when they are not:
    the tile is in the grid's CRS and needs no warp, has integer pixels (no nodata value: every pixel
    counts), square pixels with the cell an integer number k of them, and the tile's edges on cell edges
    (every touched cell lies wholly in the tile)."""
    from pipeline.crs import parse_crs
    from pipeline.sources.rasters import _horizontal_epsg, tile_cells

    out: list[CellBlocks | None] = []
    px, py = abs(info.res[0]), abs(info.res[1])
    left, _bottom, _right, top = info.bounds
    ok_tile = (
        not info.reproject
        and info.nodata is None
        and np.dtype(info.dtype).kind in "ui"
        and np.dtype(info.dtype).itemsize <= 2
        and abs(px - py) <= 1e-9 * px
    )
    for g in grids:
        t = g.transform
        res = g.res
        k = round(res / px) if ok_tile else 0
        cells = tile_cells(info, g) if ok_tile else None
        if (
            cells is None
            or k < 1
            or abs(k * px - res) > 1e-9 * res
            or abs(t.e + res) > 1e-9 * res
            or info.horizontal_epsg != _horizontal_epsg(parse_crs(g.crs))
        ):
            out.append(None)
            continue
        r0, r1, c0, c1 = cells
        # pixel offsets of the first touched cell in the tile: integers, and the tile's edges on cell edges
        pcol = (t.c + c0 * res - left) / px
        prow = (top - (t.f - r0 * res)) / px
        wpx = (info.bounds[2] - left) / px
        hpx = (top - info.bounds[1]) / px
        vals = [pcol, prow, wpx, hpx, (left - t.c) / res, (t.f - top) / res]
        if any(abs(v - round(v)) > 1e-6 for v in vals) or round(wpx) % k or round(hpx) % k:
            out.append(None)
            continue
        out.append(CellBlocks(r0, r1, c0, c1, k, round(prow), round(pcol)))
    return out


def block_averages(
    info, blocks: list[CellBlocks], bands: list[int], max_source_pixels: int = 2**23
) -> list[tuple[int, int, np.ndarray]]:
    """(row0, col0, (bands, rows, cols) float32) per `CellBlocks`: each cell the mean of its k x k pixels
    (integer sums, float64 division, float32: the area average exactly), from one read of the tile in
    strips of rows holding at most about `max_source_pixels` pixels per band."""
    import math

    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    # the pixel rows and columns the grids need; each grid's cells start on a multiple of its k from the
    # tile's first pixel (the tile's edges are cell edges), so strips starting on multiples of the least
    # common multiple of the k hold whole cells of every grid
    step = math.lcm(*(b.k for b in blocks))
    lo = min(b.prow0 for b in blocks) // step * step
    hi = max(b.prow0 + b.k * (b.r1 - b.r0) for b in blocks)
    col_lo = min(b.pcol0 for b in blocks)
    col_hi = max(b.pcol0 + b.k * (b.c1 - b.c0) for b in blocks)
    rows = max(step, (max_source_pixels // max(col_hi - col_lo, 1)) // step * step)
    sums = [np.zeros((len(bands), b.r1 - b.r0, b.c1 - b.c0), dtype=np.uint64) for b in blocks]
    try:
        with rasterio.open(info.path) as ds:
            for s0 in range(lo, hi, rows):
                s1 = min(s0 + rows, hi)
                data = ds.read(bands, window=Window(col_lo, s0, col_hi - col_lo, s1 - s0), masked=False)
                for b, acc in zip(blocks, sums, strict=True):
                    a0 = max(s0, b.prow0)
                    a1 = min(s1, b.prow0 + b.k * (b.r1 - b.r0))
                    if a1 <= a0:
                        continue
                    k = b.k
                    c0 = b.pcol0 - col_lo
                    part = data[:, a0 - s0 : a1 - s0, c0 : c0 + k * (b.c1 - b.c0)]
                    n, h, w = part.shape
                    cell_sums = part.reshape(n, h // k, k, w // k, k).sum(axis=(2, 4), dtype=np.uint64)
                    r = (a0 - b.prow0) // k
                    acc[:, r : r + h // k] += cell_sums
    except RasterioError as e:
        raise InputError(f"cannot read raster: {e}", path=info.path) from e
    return [
        (b.r0, b.c0, (acc.astype(np.float64) / float(b.k * b.k)).astype(np.float32))
        for b, acc in zip(blocks, sums, strict=True)
    ]


@dataclass
class Surfaces:
    grid: Grid
    dtm: np.ndarray
    ndvi: np.ndarray | None


def analysis_grid(ctx: BuildContext, res: float) -> Surfaces:
    bounds = district_bounds(ctx)
    grid = Grid.from_bounds(bounds, res, ctx.cfg.crs.horizontal)
    from pipeline.orchestrate.cache import build_cache

    # incremental: the ground model depends on the DGM (or, without one, the newest epoch's points)
    roles = ["dgm"] if ctx.cfg.sources.dgm else [f"aerial:{ctx.cfg.sources.aerial[-1].epoch}"]
    key = [
        "overlays-ground-v1",
        sorted((i.role, i.sha256) for r in roles for i in ctx.inputs_for(r)),
        ctx.cfg.sources.dgm,
        ctx.cfg.sources.aerial[-1] if ctx.cfg.sources.aerial else None,
        res,
        list(grid.bounds),
        ctx.cfg.crs,
    ]
    dtm, g2, _crs, _src = build_cache(ctx).call(key, ground_model, ctx, res, grid.bounds)
    assert (g2.width, g2.height) == (grid.width, grid.height)
    return Surfaces(grid, dtm, ndvi_grid(ctx, grid))


def roof_heights(buildings: gpd.GeoDataFrame, ndsm: np.ndarray, grid: Grid) -> np.ndarray:
    """p75 of the nDSM inside each footprint (fallback when the buildings layer is absent)."""
    from pipeline.stages.change import label_grid, label_quantile

    labels = label_grid(shapely.buffer(buildings.geometry.to_numpy(), -0.5), grid.transform, ndsm.shape)
    h, _ = label_quantile(labels, ndsm, 0.75, len(buildings))
    return h


# ---- writers --------------------------------------------------------------------------------------


def write_vector(
    gdf: gpd.GeoDataFrame,
    path: Path,
    layer: str,
    *,
    geojson: Path | None = None,
    geometry_type: str = "MultiPolygon",
) -> list[Path]:
    """GeoPackage layer (declared geometry type and CRS even when empty, fixed timestamps so rebuilds are
    byte-stable: pipeline.styles.gpkg) + GeoJSON in EPSG:4326."""
    write_layer(gdf, path, layer, geometry_type)
    out = [path]
    if geojson is not None:
        if geojson.exists():
            geojson.unlink()
        gdf.to_crs("EPSG:4326").to_file(
            geojson,
            driver="GeoJSON",
            engine="pyogrio",
            layer_options={"COORDINATE_PRECISION": 7, "RFC7946": "YES"},
        )
        out.append(geojson)
    return out


def copy_style(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STYLES / name, dest)
    return dest


def _metadata_columns(df: pd.DataFrame, cols: list[str]) -> tuple[dict, dict]:
    columns: dict = {}
    props: dict = {}
    for c in cols:
        v = df[c]
        if v.dtype.kind in "fi" or v.dtype == bool:
            if v.dtype == bool:
                columns[c] = v.to_numpy().astype(np.uint8)
            else:
                a = v.to_numpy(dtype=np.float64)
                if np.isnan(a).any():
                    props[c] = {"noData": NODATA_METADATA}
                columns[c] = np.where(np.isfinite(a), a, NODATA_METADATA)
        else:
            columns[c] = ["" if x is None or (isinstance(x, float) and np.isnan(x)) else str(x) for x in v]
    return columns, props


def _feature_tile_cached(ctx: BuildContext, path: Path, args: tuple, kw: dict) -> None:
    """One feature tile, memoised in the build cache by its mesh and table (an incremental build hard-links
    the tiles whose features did not change instead of encoding and writing them again)."""
    from pipeline.orchestrate.cache import build_cache
    from pipeline.tiles.overlay_glb import feature_mesh_glb

    def build(tmp: Path) -> None:
        (tmp / "tile.glb").write_bytes(feature_mesh_glb(*args, **kw))

    cache = build_cache(ctx)
    key = cache.key(["overlays-feature-tile-v1", list(args), sorted(kw.items())])
    cache.materialize(key, build, {"tile.glb": path})


def write_feature_tiles(
    ctx: BuildContext,
    out_dir: Path,
    mesh,
    table: pd.DataFrame,
    colours: np.ndarray,
    *,
    class_id: str,
    columns: list[str],
    height_crs: str,
    unlit: bool,
    outlines=None,
) -> tuple[str, list[str]]:
    """Split a feature mesh into TILE_SIZE_M tiles by feature centroid; GLBs + a quadtree of tilesets over
    them (`grid_tilesets`). `outlines` (pipeline.stages.overlays.mesh.Outlines): line segments per
    feature, written into the tile of their feature."""
    from pipeline.orchestrate.cache import build_cache
    from pipeline.stages.terrain import normal_to_enu
    from pipeline.styles.palettes import PARCEL_OUTLINE
    from pipeline.tiles.overlay_glb import grid_tilesets
    from pipeline.tiles.tileset import write_json

    # memoised: creating the PROJ transformer with the geoid grid costs more than the transformation
    key = [
        "overlays-normal-to-enu-v1",
        np.ascontiguousarray(mesh.xyz),
        height_crs,
        ctx.cfg.crs,
        ctx.frame.to_json(),
    ]
    enu = build_cache(ctx).call(key, normal_to_enu, mesh.xyz, height_crs, ctx.cfg.crs, ctx.frame)
    if outlines is not None and len(outlines.segments):
        okey = ["overlays-normal-to-enu-v1", np.ascontiguousarray(outlines.xyz), height_crs, ctx.cfg.crs]
        okey.append(ctx.frame.to_json())
        line_enu = build_cache(ctx).call(
            okey, normal_to_enu, outlines.xyz, height_crs, ctx.cfg.crs, ctx.frame
        )
    # normals: the frame's axes are within a fraction of a degree of the source grid's: keep them
    fx = np.bincount(mesh.feature, weights=mesh.xyz[:, 0]) / np.maximum(np.bincount(mesh.feature), 1)
    fy = np.bincount(mesh.feature, weights=mesh.xyz[:, 1]) / np.maximum(np.bincount(mesh.feature), 1)
    tkey = np.floor(fx / TILE_SIZE_M).astype(np.int64) * 100000 + np.floor(fy / TILE_SIZE_M).astype(np.int64)
    vkey = tkey[mesh.feature]
    if outlines is not None and len(outlines.segments):
        seg_key = tkey[outlines.feature[outlines.segments[:, 0]]]
    tiles = []
    files = []
    tri_key = vkey[mesh.triangles[:, 0]]
    # each tile's triangles (and segments) by one sort, and its vertex and feature rows by searchsorted:
    # no scan of the region's triangles, vertices or features per tile (71,000 tiles for the Ruhr)
    seg_of = dict(group_positions(seg_key)) if outlines is not None and len(outlines.segments) else {}
    for k, pos in group_positions(tri_key):
        tris = mesh.triangles[pos]
        used = np.unique(tris)
        feats = np.unique(mesh.feature[used])
        sub = table.iloc[feats].reset_index(drop=True)
        cols, props = _metadata_columns(sub, columns)
        args = (
            enu[used],
            mesh.normals[used],
            np.searchsorted(used, tris),
            np.searchsorted(feats, mesh.feature[used]),
            colours[mesh.feature[used]],
        )
        kw: dict = {
            "class_id": class_id,
            "columns": cols,
            "class_properties": props,
            "unlit": unlit,
            "double_sided": unlit,
        }
        if outlines is not None and len(outlines.segments):
            segs = outlines.segments[seg_of.get(k, np.zeros(0, dtype=np.int64))]
            lused, linv = np.unique(segs, return_inverse=True)
            kw["outline_enu"] = line_enu[lused]
            kw["outline_segments"] = linv.reshape(-1, 2)
            kw["outline_srgb"] = PARCEL_OUTLINE
        name = f"tiles/{int(k // 100000)}_{int(k % 100000)}.glb"
        _feature_tile_cached(ctx, out_dir / name, args, kw)
        tiles.append((int(k // 100000), int(k % 100000), name, enu[used].min(axis=0), enu[used].max(axis=0)))
        files.append(name)
    # the root tileset.json is the caller's to list; the external tilesets below it are listed here
    for ts_name, doc in grid_tilesets(tiles, ctx.frame.tile_transform(), ctx.build_id).items():
        write_json(out_dir / ts_name, doc)
        if ts_name != "tileset.json":
            files.append(ts_name)
    return "tileset.json", files


# ---- parcels --------------------------------------------------------------------------------------


def build_parcels(
    ctx: BuildContext, previous: list[LayerResult], surf: Surfaces, dsm_new: np.ndarray
) -> LayerResult:
    from pipeline.sources.rasters import bilinear
    from pipeline.stages.overlays import grz_colours
    from pipeline.stages.overlays.mesh import draped, draped_outlines
    from pipeline.stages.overlays.ndvi import classify_landcover
    from pipeline.stages.overlays.parcels import parcel_overlay
    from pipeline.styles.palettes import LAND_USE_COLOURS, LAND_USE_PROPERTY, parcels_style
    from pipeline.tiles.tileset import write_json

    cfg = ctx.cfg
    lay = cfg.layers.overlays
    warnings: list[str] = []
    if not cfg.sources.cadastre:
        raise InputError("the parcel overlay needs the cadastre (sources.cadastre)")
    buildings, bsource = read_buildings(ctx, previous)
    # the surface becomes the nDSM in place (the caller keeps no reference: one region grid less)
    ndsm = dsm_new
    ndsm -= surf.dtm
    if "height" not in buildings:
        buildings = buildings.assign(height=roof_heights(buildings, ndsm, surf.grid))
        warnings.append("buildings layer output not found: heights for GFZ/volume from the nDSM (p75)")
    landcover = None
    if surf.ndvi is not None:
        landcover = classify_landcover(surf.ndvi, ndsm, lay.ndvi_threshold, lay.tree_min_height_m)
    else:
        warnings.append("no NDVI: sealed/green/tree shares not computed")
    # one task per tile of the partition grid, each reading its own parcels (overlays_tiles)
    ov = parcel_rows(
        parcel_source(ctx),
        lay.partition_m,
        buildings,
        surf.grid,
        landcover,
        ndsm,
        lay.floor_height_m,
        executor(ctx),
        ctx.progress,
        window=task_window(ctx),
    )
    if ov is None:
        warnings.append("the cadastre has no parcels (Flurstueck layer): parcel overlay is empty")
        ov = parcel_overlay(read_parcels_for(ctx), buildings, floor_height_m=lay.floor_height_m)
    for c in ov.columns:
        if ov[c].dtype.kind == "f":
            ov[c] = ov[c].round(4)
    land_use = parcel_land_use_for(ctx, ov.geometry.to_numpy(), warnings)
    colours = grz_colours(ov["grz"].to_numpy())
    # the column is there in any case (the QGIS style reads it): NULL where the cadastre has no land use
    ov.insert(
        1, LAND_USE_PROPERTY, pd.Series(land_use if land_use is not None else [None] * len(ov), dtype=object)
    )
    if land_use is not None:
        for value, rgba in LAND_USE_COLOURS.items():
            colours[land_use == value] = rgba
    out = ctx.release_dir / "overlays"
    files = write_vector(ov, out / "parcels.gpkg", "parcels", geojson=out / "parcels.geojson")
    files.append(copy_style("parcels.qml", out / "parcels.qml"))
    embed_styles(out / "parcels.gpkg", {"parcels": (STYLES / "parcels.qml").read_text(encoding="utf-8")})
    rel = [f.relative_to(ctx.release_dir).as_posix() for f in files]
    tileset = None
    if len(ov):
        mesh = draped(
            ov.geometry.to_numpy(),
            lambda x, y: bilinear(surf.dtm, surf.grid.transform, x, y),
            lay.drape_offset_m,
        )
        outlines = None
        if lay.outlines:
            outlines = draped_outlines(
                ov.geometry.to_numpy(),
                lambda x, y: bilinear(surf.dtm, surf.grid.transform, x, y),
                lay.drape_offset_m + OUTLINE_LIFT_M,
            )
        if len(mesh.triangles):
            cols = [
                c
                for c in [
                    "flstkennz",
                    LAND_USE_PROPERTY,
                    "grz",
                    "gfz_est",
                    "built_area_m2",
                    "parcel_area_m2",
                    "sealed_share",
                    "green_share",
                    "tree_share",
                    "tree_height_mean_m",
                ]
                if c in ov
            ]
            _ts, tfiles = write_feature_tiles(
                ctx,
                out / "parcels",
                mesh,
                ov,
                colours,
                class_id="parcel",
                columns=cols,
                height_crs=cfg.crs.compound,
                unlit=True,
                outlines=outlines,
            )
            write_json(out / "parcels" / "style.json", parcels_style())
            tileset = "overlays/parcels/tileset.json"
            rel += [f"overlays/parcels/{f}" for f in tfiles] + ["overlays/parcels/style.json", tileset]
    stats = {
        "parcels": len(ov),
        "buildings_source": bsource,
        "grz_mean": _r(ov["grz"].mean()) if len(ov) else None,
        "land_use": None
        if land_use is None
        else {k: int((land_use == k).sum()) for k in [*LAND_USE_COLOURS, ""] if (land_use == k).any()},
        "green_share_mean": _r(ov["green_share"].mean()) if "green_share" in ov and len(ov) else None,
        "sealed_share_mean": _r(ov["sealed_share"].mean()) if "sealed_share" in ov and len(ov) else None,
    }
    return LayerResult(
        name="parcels",
        kind="overlay",
        access=lay.access,
        tileset=tileset,
        files=rel,
        stats=stats,
        warnings=warnings,
    )


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


# ---- change ---------------------------------------------------------------------------------------


def build_change(ctx: BuildContext, previous: list[LayerResult], surf: Surfaces) -> LayerResult:
    from pipeline.sources.rasters import bilinear
    from pipeline.stages.change import (
        CLASS_COLOURS,
        unknown_areas,
        unregistered_structures,
    )
    from pipeline.stages.overlays.mesh import MeshParts, prisms

    cfg = ctx.cfg
    lay = cfg.layers.change
    old_ep, new_ep = cfg.sources.aerial[-2].epoch, cfg.sources.aerial[-1].epoch
    dsm_old = surface(ctx, len(cfg.sources.aerial) - 2, surf.grid)
    dsm_new = surface(ctx, len(cfg.sources.aerial) - 1, surf.grid)
    unk = unknown_areas(
        dsm_old,
        dsm_new,
        surf.grid.transform,
        lay.unknown_min_area_m2,
        (old_ep, new_ep),
        crs=cfg.crs.horizontal,
    )
    # the surfaces become the nDSMs in place (no other reference to them: two region grids less)
    ndsm_old, ndsm_new = dsm_old, dsm_new
    ndsm_old -= surf.dtm
    ndsm_new -= surf.dtm
    del dsm_old, dsm_new
    buildings, bsource = read_buildings(ctx, previous)
    t = surf.grid.transform
    ch = building_rows(
        buildings,
        cfg.layers.overlays.partition_m,
        surf.grid,
        ndsm_old,
        ndsm_new,
        lay,
        executor(ctx),
        ctx.progress,
        window=task_window(ctx),
    )
    bc = gpd.GeoDataFrame(
        pd.concat([buildings[["oid"]].reset_index(drop=True), ch.reset_index(drop=True)], axis=1),
        geometry=buildings.geometry.reset_index(drop=True),
        crs=buildings.crs,
    )
    bc["epoch_old"] = old_ep
    bc["epoch_new"] = new_ep
    for c in ("h_old", "h_new", "dh"):
        bc[c] = bc[c].round(3)
    unreg = unregistered_structures(
        buildings,
        ndsm_old,
        ndsm_new,
        t,
        lay,
        ndvi=surf.ndvi,
        ndvi_threshold=cfg.layers.overlays.ndvi_threshold,
        crs=cfg.crs.horizontal,
        registered=registered_outlines(ctx),
    )
    warnings = []
    if surf.ndvi is None:
        warnings.append("no NDVI: trees are not masked out of the unregistered structures")
    out = ctx.release_dir / "change"
    files: list[Path] = []
    files += write_vector(
        bc, out / "change.gpkg", "buildings_change", geojson=out / "buildings_change.geojson"
    )
    files += write_vector(
        unreg, out / "change.gpkg", "unregistered_structures", geojson=out / "unregistered_structures.geojson"
    )
    files += write_vector(unk, out / "change.gpkg", "unknown_areas", geojson=out / "unknown_areas.geojson")
    names = ("buildings_change", "unregistered_structures", "unknown_areas")
    for name in names:
        files.append(copy_style(f"{name}.qml", out / f"{name}.qml"))
    embed_styles(out / "change.gpkg", {n: (STYLES / f"{n}.qml").read_text(encoding="utf-8") for n in names})
    rel = sorted({f.relative_to(ctx.release_dir).as_posix() for f in files})

    # 3D: buildings as prisms coloured by change class + unregistered structures in magenta
    geoms = list(bc.geometry.to_numpy()) + list(unreg.geometry.to_numpy())
    tops = np.concatenate(
        [np.fmax(bc["h_old"].to_numpy(), bc["h_new"].to_numpy()), unreg["height_p75"].to_numpy(dtype=float)]
    )
    tops = np.where(np.isfinite(tops) & (tops > 0.5), tops, 3.0)
    garr = np.array(geoms, dtype=object)
    tileset = None
    if len(garr):
        cx = shapely.get_x(shapely.centroid(garr))
        cy = shapely.get_y(shapely.centroid(garr))
        base = bilinear(surf.dtm, t, cx, cy)
        base = np.where(np.isfinite(base), base, np.nanmedian(surf.dtm))
        mesh: MeshParts = prisms(garr, base, base + tops)
        table = pd.DataFrame(
            {
                "id": list(bc["oid"].astype(str)) + list(unreg["uid"].astype(str)),
                "change_class": list(bc["change_class"]) + ["unregistered"] * len(unreg),
                "dh": np.concatenate([bc["dh"].to_numpy(float), np.full(len(unreg), np.nan)]),
                "h_old": np.concatenate([bc["h_old"].to_numpy(float), unreg["h_old"].to_numpy(float)]),
                "h_new": np.concatenate([bc["h_new"].to_numpy(float), unreg["height_p75"].to_numpy(float)]),
                "confidence": np.concatenate(
                    [bc["confidence"].to_numpy(float), unreg["confidence"].to_numpy(float)]
                ),
            }
        )
        colours = np.array([CLASS_COLOURS[c] for c in table["change_class"]], dtype=np.uint8)
        if len(mesh.triangles):
            _ts, tfiles = write_feature_tiles(
                ctx,
                out,
                mesh,
                table,
                colours,
                class_id="change",
                columns=list(table.columns),
                height_crs=cfg.crs.compound,
                unlit=False,
            )
            tileset = "change/tileset.json"
            rel += [f"change/{f}" for f in tfiles] + [tileset]
            # the viewer's legend and colours: the same palette the tiles carry (never multiplied on it)
            from pipeline.styles.palettes import change_style
            from pipeline.tiles.tileset import write_json

            write_json(out / "style.json", change_style())
            rel.append("change/style.json")
    counts = {str(k): int(v) for k, v in bc["change_class"].value_counts().items()}
    stats = {
        "epochs": [old_ep, new_ep],
        "buildings": len(bc),
        "buildings_source": bsource,
        "classes": {k: counts[k] for k in sorted(counts)},
        "unregistered_structures": len(unreg),
        "unknown_areas": len(unk),
        "unknown_area_m2": round(float(unk["area_m2"].sum()), 1) if len(unk) else 0.0,
    }
    return LayerResult(
        name="change",
        kind="change",
        access=lay.access,
        tileset=tileset,
        style="change/style.json" if tileset else None,
        files=rel,
        stats=stats,
        warnings=warnings,
    )


# ---- entry ----------------------------------------------------------------------------------------


def point_raster_calls(ctx: BuildContext) -> list[CachedCall]:
    """The point products of this layer (`_point_targets` of every epoch it reads, one per point file),
    [] when the layer will not run: the buildings layer makes them in the decode of each file it does for
    its own (`pipeline.orchestrate.point_products`), so this layer finds them in the build cache."""
    cfg = ctx.cfg
    if not cfg.sources.cadastre or not cfg.sources.aerial:
        return []
    calls: list[CachedCall] = []
    for e in _epochs_read(cfg, cfg.layers.overlays.enabled, cfg.layers.change.enabled):
        calls += _epoch_calls(ctx, e)[1]
    return calls


def _epochs_read(cfg: TwinConfig, parcels: bool, change: bool) -> list[int]:
    """Indices of the aerial epochs whose surfaces the parcel overlay and the change detection read."""
    n = len(cfg.sources.aerial)
    epochs: list[int] = []
    if parcels:
        epochs.append(n - 1)
    if change and n >= 2:
        epochs += [n - 2, n - 1]
    return sorted(set(epochs))


def prefetch_inputs(ctx: BuildContext, parcels: bool, change: bool) -> None:
    """The point-file rasters of every epoch and the NDVI windows of every grid the parcel overlay and
    the change detection read, computed into the build cache as one batch of tasks: the workers decode
    the epochs' point files (each once for all its rasters) and warp the orthophoto side by side instead
    of one layer's inputs after the other's (a 1 km delivery is one file per epoch)."""
    cfg = ctx.cfg
    grids: list[float] = []
    if parcels:
        grids.append(cfg.layers.overlays.raster_res_m)
    if change and len(cfg.sources.aerial) >= 2:
        grids.append(cfg.layers.change.raster_res_m)
    calls: list[CachedCall] = []
    for e in _epochs_read(cfg, parcels, change):
        calls += _epoch_calls(ctx, e)[1]
    if grids:  # every grid the build reads the NDVI on, from one read of each orthophoto tile
        calls += ndvi_calls(ctx, ndvi_grids(ctx)) or []
    fill_once(ctx, calls, "overlay inputs")


def build_overlay_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    cfg: TwinConfig = ctx.cfg
    results: list[LayerResult] = []
    want_parcels = cfg.layers.overlays.enabled
    want_change = cfg.layers.change.enabled
    if not (want_parcels or want_change):
        return results
    if not cfg.sources.cadastre:
        ctx.warn("overlays: no cadastre configured; parcel overlay and change detection skipped")
        return results
    if not cfg.sources.aerial:
        ctx.warn("overlays: no aerial point cloud configured; parcel overlay and change detection skipped")
        return results
    with ctx.stage("overlays.inputs"):
        prefetch_inputs(ctx, want_parcels, want_change)
    if want_parcels:
        t0 = time.perf_counter()
        with ctx.stage("overlays.parcels"):
            surf = analysis_grid(ctx, cfg.layers.overlays.raster_res_m)
            res = build_parcels(ctx, previous, surf, surface(ctx, len(cfg.sources.aerial) - 1, surf.grid))
        res.seconds = time.perf_counter() - t0
        results.append(res)
    if want_change:
        if len(cfg.sources.aerial) < 2:
            ctx.warn(
                "change detection needs two aerial epochs (sources.aerial); only "
                f"{cfg.sources.aerial[0].epoch} is configured: change layer skipped"
            )
            return results
        t0 = time.perf_counter()
        with ctx.stage("overlays.change"):
            surf = analysis_grid(ctx, cfg.layers.change.raster_res_m)
            res = build_change(ctx, previous + results, surf)
        res.seconds = time.perf_counter() - t0
        results.append(res)
    return results
