"""Orthophoto -> web-mercator XYZ tile pyramid (PNG) + Cloud Optimized GeoTIFF, for the viewer and QGIS.

XYZ tiles follow the OSM/Google scheme (EPSG:3857, 256 px, y from the north). Each tile is warped straight
from the source tiles (`read_grid`), so memory stays at one tile. The finest zoom is the first whose
ground resolution at the district's latitude reaches `min_res_m` (about 0.3 m/px, zoom 18 in the Ruhr),
the coarsest the first whose single tile holds the whole district.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from pipeline.sources.rasters import Bounds, Grid, RasterInfo, read_grid

WEB_MERCATOR = "EPSG:3857"
ORIGIN = 20037508.342789244  # half the web-mercator world width in metres
TILE_PX = 256


def mercator_res(zoom: int, lat_deg: float) -> float:
    """Ground metres per pixel of an XYZ tile at `lat_deg`."""
    return 2 * ORIGIN / (TILE_PX * 2**zoom) * math.cos(math.radians(lat_deg))


def zoom_range(
    lonlat_bounds: Bounds, min_res_m: float, zmin: int | None = None, zmax: int | None = None
) -> tuple[int, int]:
    west, south, east, north = lonlat_bounds
    lat = (south + north) / 2
    if zmax is None:
        zmax = max(0, round(math.log2(2 * ORIGIN * math.cos(math.radians(lat)) / (TILE_PX * min_res_m))))
    if zmin is None:
        zmin = zmax
        while zmin > 0:
            x0, y0 = lonlat_to_tile(west, north, zmin)
            x1, y1 = lonlat_to_tile(east, south, zmin)
            if x0 == x1 and y0 == y1:
                break
            zmin -= 1
    return min(zmin, zmax), zmax


def lonlat_to_tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    n = 2**zoom
    x = int((lon + 180.0) / 360.0 * n)
    lr = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(lr)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tile_bounds_mercator(zoom: int, x: int, y: int) -> Bounds:
    size = 2 * ORIGIN / 2**zoom
    return (-ORIGIN + x * size, ORIGIN - (y + 1) * size, -ORIGIN + (x + 1) * size, ORIGIN - y * size)


def tiles_for(lonlat_bounds: Bounds, zoom: int) -> list[tuple[int, int]]:
    west, south, east, north = lonlat_bounds
    x0, y0 = lonlat_to_tile(west, north, zoom)
    x1, y1 = lonlat_to_tile(east, south, zoom)
    return [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def encode_image(
    rgb: np.ndarray, fmt: str = "png", alpha: np.ndarray | None = None, quality: int = 85
) -> bytes:
    """(3, H, W) uint8 -> PNG/JPEG bytes (deterministic: no metadata, fixed settings)."""
    from PIL import Image

    arr = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    if alpha is not None and fmt == "png":
        arr = np.concatenate([arr, alpha[..., None].astype(np.uint8)], axis=-1)
        img = Image.fromarray(arr, "RGBA")
    else:
        img = Image.fromarray(arr, "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False, subsampling=0)
    else:
        img.save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def to_uint8(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Float bands (NaN = no data) -> uint8; values > 255 (16-bit orthophotos) are scaled by `scale`."""
    v = np.nan_to_num(values, nan=0.0)
    if scale is None:
        scale = 1.0 if np.nanmax(values, initial=0) <= 255 else 255.0 / 65535.0
    return np.clip(np.round(v * scale), 0, 255).astype(np.uint8)


def texture_for_bounds(
    infos: Sequence[RasterInfo],
    bounds: Bounds,
    crs: str,
    px: int,
    rgb_bands: Sequence[int],
    fmt: str = "jpeg",
) -> bytes:
    """Orthophoto clip of `bounds` as a px x px image (no data -> neutral grey)."""
    res = (bounds[2] - bounds[0]) / px
    src_res = min(min(i.res) for i in infos)
    grid = Grid(Affine(res, 0, bounds[0], 0, -res, bounds[3]), px, px, crs)
    rs = Resampling.average if res > 1.5 * src_res else Resampling.bilinear
    r = read_grid(infos, grid, bands=list(rgb_bands), resampling=rs)
    data = np.where(np.isfinite(r.data), r.data, 128.0)
    return encode_image(to_uint8(data, ortho_scale(infos)), fmt)


def xyz_tile(
    infos: Sequence[RasterInfo], zoom: int, x: int, y: int, rgb_bands: Sequence[int]
) -> bytes | None:
    """One 256 px web-mercator PNG tile (transparent where there is no orthophoto); None if empty."""
    xmin, _ymin, xmax, ymax = tile_bounds_mercator(zoom, x, y)
    res = (xmax - xmin) / TILE_PX
    grid = Grid(Affine(res, 0, xmin, 0, -res, ymax), TILE_PX, TILE_PX, WEB_MERCATOR)
    src_res = min(min(i.res) for i in infos)
    rs = Resampling.average if res > 1.5 * src_res else Resampling.bilinear
    r = read_grid(infos, grid, bands=list(rgb_bands), resampling=rs)
    valid = r.valid
    if not valid.any():
        return None
    return encode_image(
        to_uint8(r.data, ortho_scale(infos)), "png", alpha=np.where(valid, 255, 0).astype(np.uint8)
    )


def write_cog(infos: Sequence[RasterInfo], grid: Grid, path: Path, block: int = 2048) -> None:
    """Mosaic all bands of the tiles onto `grid` as a Cloud Optimized GeoTIFF (uint8, DEFLATE, internal
    overviews, nodata 0: valid zeros become 1).

    Block by block through a temporary tiled GeoTIFF beside `path`, so memory stays at one block."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    path.parent.mkdir(parents=True, exist_ok=True)
    bands = infos[0].count
    scale = ortho_scale(infos)
    src_tmp = path.with_name(f".{path.name}.src.tif")
    tmp = path.with_name(f".{path.name}.tmp")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": bands,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "DEFLATE",
    }
    try:
        with rasterio.open(src_tmp, "w", **profile) as ds:
            if bands >= 3:
                ds.colorinterp = [
                    rasterio.enums.ColorInterp.red,
                    rasterio.enums.ColorInterp.green,
                    rasterio.enums.ColorInterp.blue,
                ] + [rasterio.enums.ColorInterp.undefined] * (bands - 3)
            t = grid.transform
            for r0 in range(0, grid.height, block):
                for c0 in range(0, grid.width, block):
                    h = min(block, grid.height - r0)
                    w = min(block, grid.width - c0)
                    sub = Grid(t * Affine.translation(c0, r0), w, h, grid.crs)
                    r = read_grid(infos, sub, resampling=Resampling.nearest)
                    data = np.where(r.valid[None], np.maximum(to_uint8(r.data, scale), 1), 0).astype(np.uint8)
                    ds.write(data, window=Window(c0, r0, w, h))
        with rasterio.open(src_tmp) as src:
            rio_copy(
                src, str(tmp), driver="COG", compress="DEFLATE", blocksize=256, overview_resampling="average"
            )
        tmp.replace(path)
    finally:
        src_tmp.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def ortho_scale(infos: Sequence[RasterInfo]) -> float:
    """uint8 deliveries as they are; 16-bit ones scaled from 0..65535 (one factor for every tile)."""
    return 1.0 if all(i.dtype == "uint8" for i in infos) else 255.0 / 65535.0
