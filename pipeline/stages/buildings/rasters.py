"""Per-footprint raster statistics: mean NDVI from the RGBI orthophoto (vegetation over the roof) and
the DGM terrain height under the footprint (base-height fallback); NDVI under single points
(`ndvi_at_points`: vegetation among the LoD2 roof points).

Each raster tile is read once (decimated to `resolution_m`), the footprints touching it are burnt in with
their index, and values are accumulated per footprint with bincount: no per-pixel Python. The build runs
one task per raster tile (`ndvi_sums`, `terrain_part`) and joins the parts (`mean_of_sums`,
`low_of_parts`): a changed tile recomputes only its part, and no task reads more than one tile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

from pipeline.errors import InputError


def _tile_zonal(
    path: Path,
    geoms: np.ndarray,
    bands: tuple[int, ...],
    resolution_m: float,
    fn,
    work_crs: str | None = None,
    raster_crs: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(footprint indices, pixel values) of footprints intersecting one raster tile. Footprints are in
    `work_crs`; a tile in another horizontal CRS (its own, or `raster_crs` when the source overrides it)
    gets the footprints transformed into its CRS (values are read as delivered, never resampled twice)."""
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"cannot open raster: {e}", path=path) from e
    with ds:
        tile_crs = raster_crs or (ds.crs.to_wkt() if ds.crs is not None else None)
        if work_crs is not None and tile_crs is not None:
            geoms = _to_raster_crs(geoms, work_crs, tile_crs, path)
        b = ds.bounds
        bbox = shapely.bounds(geoms)
        hit = np.flatnonzero(
            (bbox[:, 0] < b.right) & (bbox[:, 2] > b.left) & (bbox[:, 1] < b.top) & (bbox[:, 3] > b.bottom)
        )
        if hit.size == 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        lo = bbox[hit].min(axis=0)
        hi = bbox[hit].max(axis=0)
        win = (
            from_bounds(
                max(lo[0], b.left), max(lo[1], b.bottom), min(hi[2], b.right), min(hi[3], b.top), ds.transform
            )
            .round_offsets()
            .round_lengths()
        )
        win = win.intersection(rasterio.windows.Window(0, 0, ds.width, ds.height))
        scale = max(1, round(resolution_m / abs(ds.transform.a)))
        h = max(1, int(win.height) // scale)
        w = max(1, int(win.width) // scale)
        data = ds.read(
            list(bands), window=win, out_shape=(len(bands), h, w), resampling=Resampling.average, masked=True
        )
        tr = ds.window_transform(win) @ rasterio.Affine.scale(win.width / w, win.height / h)
    burn = rasterio.features.rasterize(
        ((g, int(i) + 1) for i, g in zip(hit, geoms[hit], strict=True)),
        out_shape=(h, w),
        transform=tr,
        fill=0,
        dtype="int32",
        all_touched=True,
    )
    vals, ok = fn(data)
    sel = (burn > 0) & ok
    return burn[sel].astype(np.int64) - 1, vals[sel].astype(np.float64), hit


def _same_horizontal(work_crs: str, tile_crs: str) -> bool:
    from pyproj import CRS

    from pipeline.crs import horizontal_of

    src, dst = horizontal_of(CRS.from_user_input(work_crs)), horizontal_of(CRS.from_user_input(tile_crs))
    return bool(src.equals(dst) or src.to_2d().equals(dst.to_2d()))


def _to_raster_crs(geoms: np.ndarray, work_crs: str, tile_crs: str, path: Path) -> np.ndarray:
    from pyproj import CRS, Transformer

    from pipeline.crs import horizontal_of

    if _same_horizontal(work_crs, tile_crs):
        return geoms
    src, dst = horizontal_of(CRS.from_user_input(work_crs)), horizontal_of(CRS.from_user_input(tile_crs))
    t = Transformer.from_crs(src, dst, always_xy=True)
    out = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(shapely.bounds(out)).all():
        raise InputError(f"footprints cannot be transformed into the raster's CRS {dst.name}", path=path)
    return out


def _ndvi(bands: tuple[int, int]):
    def fn(data):
        red = data[0].astype(np.float64)
        nir = data[1].astype(np.float64)
        s = nir + red
        ok = ~np.ma.getmaskarray(data[0]) & ~np.ma.getmaskarray(data[1]) & (s.filled(0) > 0)
        ndvi = np.where(ok, (nir.filled(0) - red.filled(0)) / np.where(s.filled(0) > 0, s.filled(1), 1), 0.0)
        return ndvi, ok

    return fn


def _height(data):
    ok = ~np.ma.getmaskarray(data[0])
    return data[0].filled(np.nan).astype(np.float64), ok & np.isfinite(data[0].filled(np.nan))


def ndvi_sums(
    geoms: np.ndarray,
    path: Path,
    red_band: int = 1,
    nir_band: int = 4,
    resolution_m: float = 1.0,
    work_crs: str | None = None,
    raster_crs: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One orthophoto tile's part of `mean_ndvi`: (indices of the footprints it covers, their NDVI sums,
    their pixel counts). A task of its own per tile: a changed tile recomputes only its part."""
    geoms = np.asarray(geoms, dtype=object)
    idx, v, _ = _tile_zonal(
        Path(path),
        geoms,
        (red_band, nir_band),
        resolution_m,
        _ndvi((red_band, nir_band)),
        work_crs,
        raster_crs,
    )
    s = np.bincount(idx, weights=v, minlength=len(geoms))
    c = np.bincount(idx, minlength=len(geoms))
    hit = np.flatnonzero(c)
    return hit, s[hit], c[hit].astype(np.float64)


def mean_of_sums(n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Mean NDVI of `n` footprints from the tiles' `ndvi_sums` (footprint indices mapped to the `n`),
    added up in tile order; NaN where no tile covers a footprint."""
    s = np.zeros(n)
    c = np.zeros(n)
    for idx, ps, pc in parts:
        s[idx] += ps
        c[idx] += pc
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def mean_ndvi(
    geoms: np.ndarray,
    paths: list[Path],
    red_band: int = 1,
    nir_band: int = 4,
    resolution_m: float = 1.0,
    work_crs: str | None = None,
    raster_crs: str | None = None,
) -> np.ndarray:
    """Mean NDVI over each footprint (NaN where no orthophoto pixel covers it)."""
    args = (red_band, nir_band, resolution_m, work_crs, raster_crs)
    return mean_of_sums(len(geoms), [ndvi_sums(geoms, Path(p), *args) for p in paths])


def ndvi_at_points(
    x: np.ndarray,
    y: np.ndarray,
    paths: list[Path],
    red_band: int = 1,
    nir_band: int = 4,
    work_crs: str | None = None,
    raster_crs: str | None = None,
    resolution_m: float = 0.5,
) -> np.ndarray:
    """NDVI of the orthophoto under every point (x, y in `work_crs`; NaN where no tile covers it or a
    band has no data). Each tile is read once over the points' bounding box, averaged to about
    `resolution_m` (memory: a 1 km tile of a 10 cm DOP is 2,000 x 2,000 cells, not 10,000 x 10,000);
    the first tile that covers a point wins."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if x.size == 0:
        return out
    for p in paths:
        todo = np.flatnonzero(np.isnan(out))
        if todo.size == 0:
            break
        try:
            ds = rasterio.open(p)
        except rasterio.errors.RasterioIOError as e:
            raise InputError(f"cannot open raster: {e}", path=p) from e
        with ds:
            tile_crs = raster_crs or (ds.crs.to_wkt() if ds.crs is not None else None)
            px, py = x[todo], y[todo]
            if work_crs is not None and tile_crs is not None and not _same_horizontal(work_crs, tile_crs):
                # shapely's stubs type points() of arrays as Point | array
                pts = _to_raster_crs(shapely.points(px, py), work_crs, tile_crs, Path(p))  # type: ignore[arg-type]
                px, py = shapely.get_x(pts), shapely.get_y(pts)
            b = ds.bounds
            inside = (px >= b.left) & (px < b.right) & (py > b.bottom) & (py <= b.top)
            if not inside.any():
                continue
            todo, px, py = todo[inside], px[inside], py[inside]
            scale = max(1, round(resolution_m / abs(ds.transform.a)))
            col, row = ~ds.transform * (px, py)
            col = np.clip(np.floor(col).astype(np.int64), 0, ds.width - 1) // scale * scale
            row = np.clip(np.floor(row).astype(np.int64), 0, ds.height - 1) // scale * scale
            c0, r0 = int(col.min()), int(row.min())
            w = min(int(col.max()) + scale, ds.width) - c0
            h = min(int(row.max()) + scale, ds.height) - r0
            shape = (2, max(1, -(-h // scale)), max(1, -(-w // scale)))
            data = ds.read(
                [red_band, nir_band],
                window=rasterio.windows.Window(c0, r0, w, h),
                out_shape=shape,
                resampling=Resampling.average,
                masked=True,
            )
        r = np.minimum((row - r0) // scale, shape[1] - 1)
        c = np.minimum((col - c0) // scale, shape[2] - 1)
        vals, ok = _ndvi((red_band, nir_band))(data[:, r, c][:, None, :])
        good = ok[0]
        out[todo[good]] = vals[0, good]
    return out


def terrain_part(
    geoms: np.ndarray,
    path: Path,
    complete: np.ndarray,
    percentile: float = 10.0,
    resolution_m: float = 1.0,
    work_crs: str | None = None,
    raster_crs: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One DGM tile's part of `terrain_low`: the low percentile of the footprints no other tile can
    cover (`complete`: reduced here, so a region's cells never meet in one process), and the cells of
    the others: (footprint indices, their lows, footprint indices, heights) for `low_of_parts`."""
    from pipeline.stages.buildings._kernels import grouped_percentiles

    geoms = np.asarray(geoms, dtype=object)
    idx, v, _ = _tile_zonal(Path(path), geoms, (1,), resolution_m, _height, work_crs, raster_crs)
    whole = np.asarray(complete, dtype=bool)[idx]
    n = len(geoms)
    low = np.full(n, np.nan)
    owner, vals = idx[whole], v[whole]
    order = np.argsort(owner, kind="stable")
    ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]).astype(np.int64)
    if owner.size:
        low = grouped_percentiles(ptr, vals[order], np.array([percentile], dtype=np.float64))[:, 0]
    done = np.flatnonzero(np.asarray(complete, dtype=bool) & np.isfinite(low))
    return done, low[done], idx[~whole], v[~whole]


def low_of_parts(
    n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], percentile: float = 10.0
) -> np.ndarray:
    """`terrain_low` of `n` footprints from the tiles' `terrain_part`s (indices mapped to the `n`): the
    cells of footprints on several tiles joined in tile order."""
    from pipeline.stages.buildings._kernels import grouped_percentiles

    low = np.full(n, np.nan)
    for done, done_low, _i, _v in parts:
        low[done] = done_low
    owner = np.concatenate([p[2] for p in parts] or [np.zeros(0, np.int64)]).astype(np.int64)
    v = np.concatenate([p[3] for p in parts] or [np.zeros(0)])
    if owner.size:
        order = np.argsort(owner, kind="stable")
        ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]).astype(np.int64)
        edge = np.unique(owner)
        low[edge] = grouped_percentiles(ptr, v[order], np.array([percentile], dtype=np.float64))[edge, 0]
    return low


def terrain_low(
    geoms: np.ndarray,
    paths: list[Path],
    percentile: float = 10.0,
    resolution_m: float = 1.0,
    work_crs: str | None = None,
    raster_crs: str | None = None,
) -> np.ndarray:
    """A low percentile of the DGM cells touching each footprint (NaN where no DGM covers it)."""
    none = np.zeros(len(geoms), dtype=bool)  # not known which tiles a footprint is on: joined here
    args = (percentile, resolution_m, work_crs, raster_crs)
    return low_of_parts(len(geoms), [terrain_part(geoms, Path(p), none, *args) for p in paths], percentile)
