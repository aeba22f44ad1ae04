"""Orthophoto -> web-mercator XYZ tile pyramid (PNG) + Cloud Optimized GeoTIFF, for the viewer and QGIS.

XYZ tiles follow the OSM/Google scheme (EPSG:3857, 256 px, y from the north). The finest zoom is the first
whose ground resolution at the district's latitude reaches `min_res_m` (about 0.3 m/px, zoom 18 in the
Ruhr), the coarsest the first whose single tile holds the whole district.

Pyramid method (`pipeline/orchestrate/imagery.py` runs it): the finest zoom is warped from the source tiles
in blocks of `warp_block_tiles` x `warp_block_tiles` tiles at once (`warp_rgba`, one GDAL warp per source
tile and block), every coarser tile is the 2 x 2 box mean of its four children (`downsample_rgba`, exact
integer arithmetic weighted by alpha), so nothing above the finest zoom reads the sources again.
`xyz_tile` (one warp per tile straight from the sources, at every zoom) is the slow reference.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from pipeline.sources.rasters import Bounds, Grid, RasterInfo, read_grid

WEB_MERCATOR = "EPSG:3857"
ORIGIN = 20037508.342789244  # half the web-mercator world width in metres
TILE_PX = 256
PNG_LEVEL = (
    1  # zlib level of XYZ tiles (Sub filter): as small as Pillow at level 6 on orthophotos, ~15x faster
)


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
    rgb: np.ndarray,
    fmt: str = "png",
    alpha: np.ndarray | None = None,
    quality: int = 85,
    png_level: int = 6,
    subsampling: str = "4:4:4",
) -> bytes:
    """(3, H, W) uint8 -> PNG/JPEG/WebP bytes (deterministic: no metadata, fixed settings). `quality`:
    JPEG/WebP quality (1-100); `subsampling`: JPEG chroma subsampling ("4:4:4" or "4:2:0")."""
    from PIL import Image

    arr = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    if alpha is not None and fmt == "png":
        arr = np.concatenate([arr, alpha[..., None].astype(np.uint8)], axis=-1)
        img = Image.fromarray(arr, "RGBA")
    else:
        img = Image.fromarray(arr, "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        sub = {"4:4:4": 0, "4:2:0": 2}[subsampling]
        img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False, subsampling=sub)
    elif fmt == "webp":  # lossy WebP (glTF: EXT_texture_webp)
        img.save(buf, "WEBP", quality=quality, method=4, exact=False)
    else:
        img.save(buf, "PNG", optimize=False, compress_level=png_level)
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
    quality: int = 85,
    subsampling: str = "4:4:4",
) -> bytes:
    """Orthophoto clip of `bounds` as a px x px image (no data -> neutral grey)."""
    res = (bounds[2] - bounds[0]) / px
    src_res = min(min(i.res) for i in infos)
    grid = Grid(Affine(res, 0, bounds[0], 0, -res, bounds[3]), px, px, crs)
    rs = Resampling.average if res > 1.5 * src_res else Resampling.bilinear
    r = read_grid(infos, grid, bands=list(rgb_bands), resampling=rs)
    data = np.where(np.isfinite(r.data), r.data, 128.0)
    return encode_image(to_uint8(data, ortho_scale(infos)), fmt, quality=quality, subsampling=subsampling)


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


COG_OPTIONS = {"compress": "DEFLATE", "predictor": 2, "level": 1}  # horizontal differencing: ~20 % smaller


def _on_grid(info: RasterInfo, grid: Grid, bands: int) -> tuple[int, int] | None:
    """(column, row) of the tile's top-left pixel in `grid` when its pixels are the grid's cells as they
    are (same CRS, resolution and alignment, 8 bit, no nodata value, all bands): copied, not warped."""
    if info.reproject or info.dtype != "uint8" or info.nodata is not None or info.count != bands:
        return None
    if not (
        abs(info.res[0] - grid.res) <= 1e-9 * grid.res and abs(info.res[1] - grid.res) <= 1e-9 * grid.res
    ):
        return None
    t = grid.transform
    col = (info.bounds[0] - t.c) / grid.res
    row = (t.f - info.bounds[3]) / grid.res
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(col), round(row)


def write_cog(
    infos: Sequence[RasterInfo], grid: Grid, path: Path, block: int = 2048, own_overviews: bool = True
) -> None:
    """Mosaic all bands of the tiles onto `grid` as a Cloud Optimized GeoTIFF (uint8, DEFLATE with
    horizontal predictor, internal overviews, nodata 0: valid zeros become 1).

    Through an uncompressed temporary tiled GeoTIFF beside `path`, `block` rows (or a block) at a time, so
    memory stays at one block. Tiles that sit on the grid as they are (the usual DOP delivery) are copied
    window by window; otherwise every block is warped from the tiles (`read_grid`, nearest).

    `own_overviews`: the overviews come from `_overview_vrt` (the same bytes, a fraction of the CPU);
    False lets the COG driver compute them (the reference the tests compare with)."""
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
    }
    offsets = [_on_grid(i, grid, bands) for i in infos]
    try:
        with rasterio.open(src_tmp, "w", **profile) as ds:
            if bands >= 3:
                ds.colorinterp = [
                    rasterio.enums.ColorInterp.red,
                    rasterio.enums.ColorInterp.green,
                    rasterio.enums.ColorInterp.blue,
                ] + [rasterio.enums.ColorInterp.undefined] * (bands - 3)
            if all(o is not None for o in offsets):
                # last to first: where tiles overlap, the first in path order is written last and wins
                for info, off in reversed(list(zip(infos, offsets, strict=True))):
                    assert off is not None
                    _copy_tile(info, off, grid, ds, block)
            else:
                t = grid.transform
                for r0 in range(0, grid.height, block):
                    for c0 in range(0, grid.width, block):
                        h = min(block, grid.height - r0)
                        w = min(block, grid.width - c0)
                        sub = Grid(t * Affine.translation(c0, r0), w, h, grid.crs)
                        r = read_grid(infos, sub, resampling=Resampling.nearest)
                        data = np.where(r.valid[None], np.maximum(to_uint8(r.data, scale), 1), 0)
                        ds.write(data.astype(np.uint8), window=Window(c0, r0, w, h))
        sizes = cog_overview_sizes(grid.width, grid.height)
        if own_overviews and _own_overviews_apply(grid.width, grid.height, sizes):
            vrt = _overview_vrt(src_tmp, sizes, bands, block)
            with rasterio.open(vrt) as src:
                rio_copy(
                    src, str(tmp), driver="COG", blocksize=256, overviews="FORCE_USE_EXISTING", **COG_OPTIONS
                )
        else:
            with rasterio.open(src_tmp) as src:
                rio_copy(
                    src, str(tmp), driver="COG", blocksize=256, overview_resampling="average", **COG_OPTIONS
                )
        tmp.replace(path)
    finally:
        for p in [src_tmp, tmp, _vrt_path(src_tmp)] + [_level_path(src_tmp, k) for k in range(1, 64)]:
            p.unlink(missing_ok=True)


COG_BLOCK = 256
MAX_ODD_LEVEL_PX = 4096 * 4096  # an odd-sized level is halved by GDAL in one read: at most this many pixels


def cog_overview_sizes(width: int, height: int, block: int = COG_BLOCK) -> list[tuple[int, int]]:
    """(width, height) of the overviews GDAL's COG driver makes: halved (rounded down) until both sides fit
    in one block."""
    out = []
    w, h = width, height
    while w > block or h > block:
        w, h = w // 2, h // 2
        out.append((w, h))
    return out


def _own_overviews_apply(width: int, height: int, sizes: list[tuple[int, int]]) -> bool:
    """Whether `_overview_vrt` can make the overviews: no empty level, and every level that is not an exact
    halving of the one below (odd sides) small enough to be read at once."""
    prev = (width, height)
    for w, h in sizes:
        if w < 1 or h < 1:
            return False
        if (2 * w, 2 * h) != prev and prev[0] * prev[1] > MAX_ODD_LEVEL_PX:
            return False
        prev = (w, h)
    return True


def _level_path(src_tmp: Path, k: int) -> Path:
    return src_tmp.with_name(f"{src_tmp.name}.ovr{k}.tif")


def _vrt_path(src_tmp: Path) -> Path:
    return src_tmp.with_name(f"{src_tmp.name}.vrt")


def _overview_vrt(src_tmp: Path, sizes: list[tuple[int, int]], bands: int, rows: int) -> Path:
    """The overviews of the uncompressed GeoTIFF `src_tmp` (nodata 0) as GDAL's COG driver computes them
    (`average`, each level from the one below), as uncompressed files beside it, and a VRT of `src_tmp`
    that lists them as its overviews (for the COG driver's `OVERVIEWS=FORCE_USE_EXISTING`).

    An exact halving (even sides) is the numba kernel `halve_nodata0`, `rows` source rows at a time (the
    same values as GDAL's average: tests); a level below odd sides is GDAL's own average read of the whole
    level below (non-integer ratio). Both are far cheaper than the driver's own overview pass, which
    writes the levels compressed to a temporary file and compresses them again."""
    import re
    from xml.sax.saxutils import escape

    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    from pipeline.stages._imagery_kernels import halve_nodata0

    rows -= rows % 2
    files: list[Path] = []
    prev = src_tmp
    for k, (w, h) in enumerate(sizes, start=1):
        f = _level_path(src_tmp, k)
        with rasterio.open(prev) as src:
            profile = {
                "driver": "GTiff",
                "width": w,
                "height": h,
                "count": bands,
                "dtype": "uint8",
                "nodata": 0,
                "tiled": True,
                "blockxsize": COG_BLOCK,
                "blockysize": COG_BLOCK,
                "crs": src.crs,
                "transform": src.transform * Affine.scale(src.width / w, src.height / h),
            }
            with rasterio.open(f, "w", **profile) as dst:
                if (src.width, src.height) == (2 * w, 2 * h):
                    for r0 in range(0, src.height, rows):
                        n = min(rows, src.height - r0)
                        data = src.read(window=Window(0, r0, src.width, n))
                        out = np.empty((bands, n // 2, w), dtype=np.uint8)
                        halve_nodata0(data, out)
                        dst.write(out, window=Window(0, r0 // 2, w, n // 2))
                else:
                    dst.write(src.read(out_shape=(bands, h, w), resampling=Resampling.average))
        files.append(f)
        prev = f
    vrt = _vrt_path(src_tmp)
    with rasterio.open(src_tmp) as src:
        rio_copy(src, str(vrt), driver="VRT")
    text = vrt.read_text()
    parts = re.split(r"(</VRTRasterBand>)", text)
    out_parts = []
    band = 0
    for part in parts:
        if part == "</VRTRasterBand>":
            band += 1
            for f in files:
                out_parts.append(
                    f'  <Overview><SourceFilename relativeToVRT="0">{escape(str(f))}</SourceFilename>'
                    f"<SourceBand>{band}</SourceBand></Overview>\n  "
                )
        out_parts.append(part)
    vrt.write_text("".join(out_parts))
    return vrt


def _copy_tile(info: RasterInfo, off: tuple[int, int], grid: Grid, ds: Any, rows: int) -> None:
    """Copy one on-grid tile into the open dataset `ds` at (column, row) `off`, `rows` rows at a time."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    from pipeline.errors import InputError

    col, row = off
    try:
        with rasterio.open(info.path) as src:
            c0, c1 = max(0, -col), min(src.width, grid.width - col)
            for r in range(max(0, -row), min(src.height, grid.height - row), rows):
                n = min(rows, src.height - r, grid.height - row - r)
                data = src.read(window=Window(c0, r, c1 - c0, n), masked=False)
                np.maximum(data, 1, out=data)
                ds.write(data, window=Window(col + c0, row + r, c1 - c0, n))
    except RasterioError as e:
        raise InputError(f"cannot read raster: {e}", path=info.path) from e


def ortho_scale(infos: Sequence[RasterInfo]) -> float:
    """uint8 deliveries as they are; 16-bit ones scaled from 0..65535 (one factor for every tile)."""
    return 1.0 if all(i.dtype == "uint8" for i in infos) else 255.0 / 65535.0


# ---- fast pyramid kernels ---------------------------------------------------------------------------


def xyz_resampling(infos: Sequence[RasterInfo], zoom: int) -> Resampling:
    """Resampling of the warp to `zoom`: average when a tile pixel spans > 1.5 source pixels, else bilinear
    (the rule of `xyz_tile`)."""
    res = 2 * ORIGIN / (TILE_PX * 2**zoom)
    src_res = min(min(i.res) for i in infos)
    return Resampling.average if res > 1.5 * src_res else Resampling.bilinear


def warp_rgba(
    infos: Sequence[RasterInfo],
    zoom: int,
    x0: int,
    y0: int,
    nx: int,
    ny: int,
    rgb_bands: Sequence[int],
    scale: float,
    resampling: Resampling,
    kernel: bool | None = None,
) -> np.ndarray:
    """The block of `nx` x `ny` XYZ tiles from tile (`x0`, `y0`) of `zoom`, warped from the sources at once:
    (ny*256, nx*256, 4) uint8 RGBA, alpha 255 where every RGB band has data, else 0 (and RGB 0).

    `kernel`: whether the numba area-average kernel applies (`kernel_applies`; computed when None)."""
    size = 2 * ORIGIN / 2**zoom
    res = size / TILE_PX
    xmin = -ORIGIN + x0 * size
    ymax = ORIGIN - y0 * size
    grid = Grid(Affine(res, 0, xmin, 0, -res, ymax), nx * TILE_PX, ny * TILE_PX, WEB_MERCATOR)
    if kernel is None:
        kernel = kernel_applies(infos, scale, resampling)
    if kernel:
        return _warp_rgba_u8(infos, grid, rgb_bands, resampling)
    r = read_grid(infos, grid, bands=list(rgb_bands), resampling=resampling)
    valid = r.valid
    out = np.empty((grid.height, grid.width, 4), dtype=np.uint8)
    out[..., :3] = np.moveaxis(to_uint8(r.data, scale), 0, -1)
    out[..., :3][~valid] = 0
    out[..., 3] = np.where(valid, 255, 0)
    return out


def kernel_applies(infos: Sequence[RasterInfo], scale: float, resampling: Resampling) -> bool:
    """The numba kernel serves `average` warps of north-up 8-bit sources without a nodata value (the DOP
    as delivered); anything else goes through GDAL (`read_grid`)."""
    return (
        resampling == Resampling.average
        and scale == 1.0
        and all(i.dtype == "uint8" and i.nodata is None and north_up(i) for i in infos)
    )


def north_up(info: RasterInfo) -> bool:
    """True for a raster without rotation terms (every DOP delivery; checked from the header)."""
    import rasterio

    with rasterio.open(info.path) as ds:
        t = ds.transform
    return t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0


@functools.lru_cache(maxsize=16)
def _transformer(src: str, dst_wkt: str) -> Any:
    """PROJ transformer (building one costs milliseconds: one per CRS pair and process)."""
    from pyproj import Transformer

    return Transformer.from_crs(src, dst_wkt, always_xy=True)


LATTICE_STEP = 32  # pixels between exact (PROJ) corner coordinates of the warp; divides TILE_PX


def corner_lattice(grid: Grid, src_crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in `src_crs` of every pixel corner of `grid` ((h+1, w+1) each): exact (PROJ) every
    `LATTICE_STEP` pixels, bilinear in between (GDAL's approximate transformer does the same; the
    web-mercator -> UTM warp is smooth: well under 0.01 px off across one step)."""
    from pipeline.stages._imagery_kernels import refine_lattice

    st = LATTICE_STEP
    if grid.width % st or grid.height % st:
        raise ValueError(f"grid {grid.width} x {grid.height} is not a multiple of {st} pixels")
    t = grid.transform
    cols = np.arange(0, grid.width + 1, st)
    rows = np.arange(0, grid.height + 1, st)
    gx, gy = np.meshgrid(t.c + cols * t.a, t.f + rows * t.e)
    ex, ey = _transformer(grid.crs, src_crs.to_wkt()).transform(gx, gy)
    return refine_lattice(np.asarray(ex, dtype=np.float64), st), refine_lattice(
        np.asarray(ey, dtype=np.float64), st
    )


def _warp_rgba_u8(
    infos: Sequence[RasterInfo], grid: Grid, rgb_bands: Sequence[int], resampling: Resampling
) -> np.ndarray:
    """`warp_rgba` for north-up 8-bit sources without a nodata value (every pixel has data), `average`
    resampling: the numba area-average kernel (`_imagery_kernels`, GDAL's `average` rule) on a summed-area
    table of each source window. Mosaic as `read_grid`: the first tile in path order wins."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    from pipeline.errors import InputError
    from pipeline.stages._imagery_kernels import box_average_bands, summed_area_bands

    h, w = grid.height, grid.width
    out = np.zeros((h, w, 4), dtype=np.uint8)
    filled = np.zeros((h, w), dtype=bool)
    idx = list(rgb_bands)
    lattices: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per source CRS (one in a delivery)
    for info in infos:
        crs = info.crs.sub_crs_list[0] if info.crs.is_compound else info.crs
        if max(idx) > info.count:
            raise InputError(f"raster has {info.count} bands, band {max(idx)} requested", path=info.path)
        wkt = crs.to_wkt()
        if wkt not in lattices:
            lattices[wkt] = corner_lattice(grid, crs)
        ex, ey = lattices[wkt]
        try:
            with rasterio.open(info.path) as ds:
                st = ds.transform
                xs = ((ex[0, 0] - st.c) / st.a, (ex.min() - st.c) / st.a, (ex.max() - st.c) / st.a)
                ys = ((ey.min() - st.f) / st.e, (ey.max() - st.f) / st.e)
                pad = 2
                c0 = max(int(np.floor(min(xs))) - pad, 0)
                r0 = max(int(np.floor(min(ys))) - pad, 0)
                c1 = min(int(np.ceil(max(xs))) + pad, ds.width)
                r1 = min(int(np.ceil(max(ys))) + pad, ds.height)
                if c1 <= c0 or r1 <= r0:
                    continue
                src = ds.read(idx, window=Window(c0, r0, c1 - c0, r1 - r0), masked=False)
        except RasterioError as e:
            raise InputError(f"cannot read raster: {e}", path=info.path) from e
        geo = np.array([st.c + c0 * st.a, st.a, st.f + r0 * st.e, st.e], dtype=np.float64)
        box_average_bands(summed_area_bands(src), ex, ey, geo, filled, out)
    out[..., 3] = np.where(filled, 255, 0)
    return out


def downsample_rgba(children: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Parent tile from its four children (NW, NE, SW, SE; None = no tile), see
    `downsample_rgba_reference`; the numba kernel `downsample_quad`. None when nothing has data."""
    from pipeline.stages._imagery_kernels import downsample_quad

    if all(c is None for c in children):
        return None
    quad = np.zeros((2 * TILE_PX, 2 * TILE_PX, 4), dtype=np.uint8)
    for i, c in enumerate(children):
        if c is not None:
            r, col = divmod(i, 2)
            quad[r * TILE_PX : (r + 1) * TILE_PX, col * TILE_PX : (col + 1) * TILE_PX] = c
    out = np.empty((TILE_PX, TILE_PX, 4), dtype=np.uint8)
    return out if downsample_quad(quad, out) else None


def downsample_rgba_reference(children: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Parent tile from its four children (NW, NE, SW, SE; None = no tile): the mean of each 2 x 2 pixel
    block, colour weighted by alpha, alpha the plain mean (half-up integer rounding: exact, deterministic).
    None when no child has a pixel with data."""
    if all(c is None for c in children):
        return None
    quad = np.zeros((2 * TILE_PX, 2 * TILE_PX, 4), dtype=np.uint32)
    for i, c in enumerate(children):
        if c is not None:
            r, col = divmod(i, 2)
            quad[r * TILE_PX : (r + 1) * TILE_PX, col * TILE_PX : (col + 1) * TILE_PX] = c
    a = quad[..., 3]
    ca = quad[..., :3] * a[..., None]
    sum_ca = ca[0::2, 0::2] + ca[0::2, 1::2] + ca[1::2, 0::2] + ca[1::2, 1::2]
    sum_a = a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]
    if not sum_a.any():
        return None
    out = np.empty((TILE_PX, TILE_PX, 4), dtype=np.uint8)
    den = np.maximum(sum_a, 1)[..., None]
    out[..., :3] = np.where(sum_a[..., None] > 0, (sum_ca + den // 2) // den, 0)
    out[..., 3] = (sum_a + 2) // 4
    return out


def encode_rgba_png(rgba: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """(256, 256, 4) uint8 -> PNG bytes (`pipeline.tiles.png`: deterministic, fixed zlib level). A tile
    without transparent pixels is written as RGB (a quarter fewer bytes to compress, the same pixels)."""
    from pipeline.tiles.png import encode_png

    if bool((rgba[..., 3] == 255).all()):
        return encode_png(rgba[..., :3], level)
    return encode_png(rgba, level)


def decode_rgba_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 4) uint8 RGBA (lossless: the pixels `encode_rgba_png` was given)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGBA"))
