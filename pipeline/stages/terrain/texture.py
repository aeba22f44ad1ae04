"""Orthophoto textures of the terrain tiles of one chunk: the window read once, area-averaged to the
finest level's texels, then halved level by level (2x2 means) up to the chunk tile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from pipeline.sources.rasters import Bounds, Grid, RasterInfo, read_grid
from pipeline.stages.terrain.chunks import area_weights, halve_texture, texture_image


@dataclass
class TextureChunk:
    """Encoded textures of a chunk's tiles and the chunk tile's pixels (for the levels above)."""

    images: dict[tuple[int, int, int], bytes]  # (levels below the chunk tile, i, j) -> JPEG/PNG
    rgb: np.ndarray  # (3, px, px) uint8 of the chunk tile
    valid: np.ndarray  # (px, px) bool: orthophoto present


def leaf_texels(
    infos: Sequence[RasterInfo],
    bounds: Bounds,
    crs: str,
    px: int,
    rgb_bands: Sequence[int],
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """((3, px, px) uint8, (px, px) valid) of the square `bounds`; invalid = no orthophoto (pixels 0).

    Texels coarser than the source pixels: the window is read once at the source resolution (plain reads
    when the tiles lie on that lattice) and each texel is the area-weighted mean of the pixels it covers
    (GDAL's `average`, without the warper); texels as fine as the source or finer: bilinear warp."""
    from pipeline.stages.imagery import to_uint8
    from pipeline.stages.terrain._texture_kernels import area_resample_u8

    size = bounds[2] - bounds[0]
    texel = size / px
    src_res = min(min(i.res) for i in infos)
    bands = list(rgb_bands)
    if texel <= src_res * (1 + 1e-9):
        grid = Grid(Affine(texel, 0, bounds[0], 0, -texel, bounds[3]), px, px, crs)
        data = read_grid(infos, grid, bands=bands, resampling=Resampling.bilinear).data
        valid = np.isfinite(data).all(axis=0)
        return np.where(valid[None], to_uint8(data, scale), np.uint8(0)), valid
    n = max(px, round(size / src_res))
    res = size / n
    grid = Grid(Affine(res, 0, bounds[0], 0, -res, bounds[3]), n, n, crs)
    src, ok = read_window(infos, grid, bands, Resampling.bilinear)
    idx, w = area_weights(n, 0.0, n / px, px)
    return area_resample_u8(src, ok, idx, w, float(scale))


def chunk_textures(
    infos: Sequence[RasterInfo],
    bounds: Bounds,
    crs: str,
    *,
    depth: int,
    texture_px: int,
    rgb_bands: Sequence[int],
    scale: float,
    fmt: str,
    quality: int = 85,
    subsampling: str = "4:4:4",
) -> TextureChunk:
    """Textures of the chunk tile (`bounds`) and its tiles `depth` levels down (texture_px each)."""
    from pipeline.stages.imagery import encode_image

    rgb, valid = leaf_texels(infos, bounds, crs, texture_px * 2**depth, rgb_bands, scale)
    images: dict[tuple[int, int, int], bytes] = {}
    for d in range(depth, -1, -1):
        if d < depth:
            rgb, valid = halve_texture(rgb, valid)
        k = 2**d
        for j in range(k):
            for i in range(k):
                sl = np.s_[j * texture_px : (j + 1) * texture_px, i * texture_px : (i + 1) * texture_px]
                img = texture_image(rgb[(slice(None), *sl)], valid[sl])
                images[(d, i, j)] = encode_image(img, fmt, quality=quality, subsampling=subsampling)
    return TextureChunk(images, rgb, valid)


def upper_textures(
    level_c: int,
    chunks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
    texture_px: int,
    fmt: str,
    quality: int = 85,
    subsampling: str = "4:4:4",
) -> dict[tuple[int, int, int], bytes]:
    """Textures of the tiles above the chunk level from the chunk tiles' pixels (missing = no data)."""
    from pipeline.stages.imagery import encode_image as _encode

    def encode_image(img: np.ndarray, fmt: str) -> bytes:
        return _encode(img, fmt, quality=quality, subsampling=subsampling)

    out: dict[tuple[int, int, int], bytes] = {}
    cur = chunks
    empty = (np.zeros((3, texture_px, texture_px), np.uint8), np.zeros((texture_px, texture_px), bool))
    for level in range(level_c - 1, -1, -1):
        nxt: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for ty in range(2**level):
            for tx in range(2**level):
                kids = [[cur.get((2 * tx + dx, 2 * ty + dy), empty) for dx in (0, 1)] for dy in (0, 1)]
                if not any(k[1].any() for row in kids for k in row):
                    nxt[(tx, ty)] = empty
                    out[(level, tx, ty)] = encode_image(texture_image(*empty), fmt)
                    continue
                rgb = np.concatenate([np.concatenate([k[0] for k in row], axis=2) for row in kids], axis=1)
                val = np.concatenate([np.concatenate([k[1] for k in row], axis=1) for row in kids], axis=0)
                nxt[(tx, ty)] = halve_texture(rgb, val)
                out[(level, tx, ty)] = encode_image(texture_image(*nxt[(tx, ty)]), fmt)
        cur = nxt
    return out


def read_aligned(
    infos: Sequence[RasterInfo], grid: Grid, bands: Sequence[int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """`read_grid` without the warper when every tile lies on `grid`'s lattice (same horizontal CRS,
    same pixel size, whole-pixel offsets): plain window reads copied into place, first tile in path
    order wins. Returns (values in the tiles' dtype, 0 where invalid; valid (h, w): inside a tile, not
    nodata, finite). None when a tile is not on the lattice (the caller warps instead)."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    from pipeline.crs import parse_crs
    from pipeline.errors import InputError
    from pipeline.sources.rasters import _horizontal_epsg

    want = _horizontal_epsg(parse_crs(grid.crs))
    t = grid.transform
    res = t.a
    plan = []
    for info in infos:
        if info.reproject or info.horizontal_epsg != want:
            return None
        if abs(info.res[0] - res) > 1e-9 * res or abs(info.res[1] - res) > 1e-9 * res:
            return None
        ox = (info.bounds[0] - t.c) / res  # tile's first column in grid pixels
        oy = (t.f - info.bounds[3]) / res
        if abs(ox - round(ox)) > 1e-6 or abs(oy - round(oy)) > 1e-6:
            return None
        plan.append((info, round(ox), round(oy)))
    dtypes = {np.dtype(i.dtype) for i in infos}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    out = np.zeros((len(bands), grid.height, grid.width), dtype=dtype)
    filled = np.zeros((grid.height, grid.width), dtype=bool)
    for info, ox, oy in plan:
        w = round((info.bounds[2] - info.bounds[0]) / res)
        h = round((info.bounds[3] - info.bounds[1]) / res)
        c0, r0 = max(0, ox), max(0, oy)
        c1, r1 = min(grid.width, ox + w), min(grid.height, oy + h)
        if c1 <= c0 or r1 <= r0:
            continue
        if max(bands) > info.count:
            raise InputError(f"raster has {info.count} bands, band {max(bands)} requested", path=info.path)
        try:
            with rasterio.open(info.path) as ds:
                src = ds.read(list(bands), window=Window(c0 - ox, r0 - oy, c1 - c0, r1 - r0), masked=False)
        except RasterioError as e:
            raise InputError(f"cannot read raster: {e}", path=info.path) from e
        take = ~filled[r0:r1, c0:c1]
        if info.nodata is not None:
            take &= ~(src.astype(np.float32) == np.float32(info.nodata)).any(axis=0)
        if src.dtype.kind == "f":
            take &= np.isfinite(src).all(axis=0)
        if take.all():
            out[:, r0:r1, c0:c1] = src
        else:
            np.copyto(out[:, r0:r1, c0:c1], src.astype(dtype, copy=False), where=take[None])
        filled[r0:r1, c0:c1] |= take
    return out, filled


def read_window(
    infos: Sequence[RasterInfo], grid: Grid, bands: Sequence[int], resampling: Resampling
) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of `grid`: `read_aligned` when the tiles are on the grid's lattice, else
    `read_grid` (warped; float32, NaN where invalid)."""
    a = read_aligned(infos, grid, bands)
    if a is not None:
        return a
    data = read_grid(infos, grid, bands=list(bands), resampling=resampling).data
    return data, np.isfinite(data).all(axis=0)
