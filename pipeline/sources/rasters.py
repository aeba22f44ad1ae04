"""Orthophoto (DOP, RGBI) and terrain model (DGM) rasters: scan, check, mosaic onto a target grid.

A raster delivery is a set of GeoTIFF/JPEG2000 tiles. `scan_rasters` reads only headers and checks every
tile (CRS present, same CRS and resolution as the working grid, band count). `read_grid` mosaics the tiles
onto any target grid (transform + shape + CRS) through GDAL's warper (`WarpedVRT`): tiles in another CRS or
resolution are reprojected onto it, memory is bounded by the target grid, never by the delivery.

Policy for mismatching tiles (`RasterSource.on_mismatch`): "reproject" (default) or "error", which refuses
with a message naming the file, what it is and what was expected. A tile without CRS is always refused
unless the source configures `crs:`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from pipeline.crs import check_area_of_use, parse_crs
from pipeline.errors import CrsError, InputError

Bounds = tuple[float, float, float, float]
MismatchPolicy = Literal["reproject", "error"]

# default band order of an RGBI orthophoto (1-based, overridable by RasterSource.bands)
ORTHO_BANDS = {"red": 1, "green": 2, "blue": 3, "nir": 4}


@dataclass(frozen=True)
class RasterInfo:
    """Header facts of one raster tile."""

    path: Path
    crs: CRS
    bounds: Bounds  # in `crs`
    res: tuple[float, float]
    count: int
    dtype: str
    nodata: float | None
    reproject: bool = False  # True: not on the working grid; warped on read

    @functools.cached_property
    def horizontal_epsg(self) -> int | None:
        """EPSG code of the horizontal CRS, worked out once per tile (PROJ takes ~40 us: the tile selection
        of a region's chunks asks it of every tile for every chunk)."""
        return _horizontal_epsg(self.crs)


@dataclass(frozen=True)
class Grid:
    """A target raster grid: north-up transform, shape, CRS."""

    transform: Affine
    width: int
    height: int
    crs: str

    @property
    def res(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> Bounds:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    @classmethod
    def from_bounds(cls, bounds: Bounds, res: float, crs: str, snap: bool = True) -> Grid:
        """Grid covering `bounds` with square cells of `res`; snapped to multiples of `res` by default."""
        xmin, ymin, xmax, ymax = bounds
        if snap:
            xmin = math.floor(xmin / res + 1e-9) * res
            ymin = math.floor(ymin / res + 1e-9) * res
            xmax = math.ceil(xmax / res - 1e-9) * res
            ymax = math.ceil(ymax / res - 1e-9) * res
        w = max(1, round((xmax - xmin) / res))
        h = max(1, round((ymax - ymin) / res))
        return cls(Affine(res, 0.0, xmin, 0.0, -res, ymax), w, h, crs)

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) arrays of cell-centre x and y."""
        t = self.transform
        xs = t.c + t.a * (np.arange(self.width) + 0.5)
        ys = t.f + t.e * (np.arange(self.height) + 0.5)
        return np.meshgrid(xs, ys)

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, col of points and a mask of points inside the grid."""
        t = self.transform
        col = np.floor((np.asarray(x) - t.c) / t.a).astype(np.int64)
        row = np.floor((np.asarray(y) - t.f) / t.e).astype(np.int64)
        ok = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        return row, col, ok


@dataclass
class Raster:
    """Bands on a grid as float32 with NaN where there is no data."""

    data: np.ndarray  # (bands, rows, cols) float32
    grid: Grid
    band_names: tuple[str, ...] = field(default_factory=tuple)

    def band(self, name: str) -> np.ndarray:
        try:
            return self.data[self.band_names.index(name)]
        except ValueError:
            raise KeyError(f"raster has no band {name!r} (bands: {self.band_names})") from None

    @property
    def valid(self) -> np.ndarray:
        return np.all(np.isfinite(self.data), axis=0)

    def sample(self, x: np.ndarray, y: np.ndarray, band: int = 0) -> np.ndarray:
        """Bilinear interpolation between cell centres (NaN where a needed cell has no data)."""
        return bilinear(self.data[band], self.grid.transform, x, y)


def bilinear(a: np.ndarray, transform: Affine, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a 2-D array at points (cell values sit at cell centres).

    Points up to half a cell outside the outermost centres clamp to the edge cells.
    """
    fx = (np.asarray(x, np.float64) - transform.c) / transform.a - 0.5
    fy = (np.asarray(y, np.float64) - transform.f) / transform.e - 0.5
    h, w = a.shape
    outside = (fx < -0.5) | (fx > w - 0.5) | (fy < -0.5) | (fy > h - 0.5)
    fx = np.clip(fx, 0, w - 1)
    fy = np.clip(fy, 0, h - 1)
    x0 = np.minimum(np.floor(fx).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(fy).astype(np.int64), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    tx = fx - x0
    ty = fy - y0
    v = (
        a[y0, x0] * (1 - tx) * (1 - ty)
        + a[y0, x1] * tx * (1 - ty)
        + a[y1, x0] * (1 - tx) * ty
        + a[y1, x1] * tx * ty
    )
    return np.where(outside, np.nan, v)


def _horizontal_crs(crs: CRS) -> CRS:
    sub = crs.sub_crs_list
    return next((s for s in sub if not s.is_vertical), crs) if sub else crs


def _horizontal_epsg(crs: CRS) -> int | None:
    return _horizontal_crs(crs).to_epsg()


def scan_rasters(
    files: Sequence[Path],
    *,
    working_crs: str,
    crs_override: str | None = None,
    resolution: float | None = None,
    on_mismatch: MismatchPolicy = "reproject",
    min_bands: int = 1,
) -> list[RasterInfo]:
    """Read and check the headers of a raster delivery.

    Every tile must carry a CRS (or the source a `crs:` override). Tiles whose horizontal CRS differs from
    `working_crs`, or whose resolution differs from `resolution` (default: the finest resolution of the
    delivery), are flagged for reprojection, or refused when `on_mismatch="error"`.
    """
    if not files:
        raise InputError("no raster files given")
    want = parse_crs(working_crs)
    want_epsg = _horizontal_epsg(want)
    infos: list[RasterInfo] = []
    for f in sorted(Path(p) for p in files):
        try:
            with rasterio.open(f) as ds:
                if crs_override:
                    crs = parse_crs(crs_override, path=f)
                elif ds.crs is None:
                    raise CrsError(
                        "raster has no CRS (no GeoTIFF keys / .prj); give the file one, or in `twin build` "
                        "set the source's `crs:` in the config",
                        path=f,
                    )
                else:
                    crs = CRS.from_user_input(ds.crs.to_wkt())
                if ds.count < min_bands:
                    raise InputError(f"raster has {ds.count} band(s), at least {min_bands} needed", path=f)
                if abs(ds.transform.b) > 1e-12 or abs(ds.transform.d) > 1e-12 or ds.transform.e >= 0:
                    raise InputError(
                        "raster is rotated or not north-up; only north-up grids are supported", path=f
                    )
                info = RasterInfo(
                    path=f,
                    crs=crs,
                    bounds=tuple(ds.bounds),
                    res=(float(ds.res[0]), float(ds.res[1])),
                    count=ds.count,
                    dtype=ds.dtypes[0],
                    nodata=ds.nodata,
                )
        except RasterioError as e:
            raise InputError(f"cannot read raster: {e}", path=f) from e
        check_area_of_use(crs, info.bounds, path=f)
        infos.append(info)

    same_crs = [i for i in infos if i.horizontal_epsg == want_epsg]
    target_res = resolution or (min(min(i.res) for i in same_crs) if same_crs else None)
    out: list[RasterInfo] = []
    for info in infos:
        if info.horizontal_epsg != want_epsg:
            problem = f"CRS {info.crs.name} (EPSG:{info.horizontal_epsg}) instead of {working_crs}"
            if on_mismatch == "error":
                raise CrsError(
                    f"raster is not on the working grid: {problem}; set the source's "
                    "`on_mismatch: reproject` to warp it, or deliver it in the working CRS",
                    path=info.path,
                )
        elif target_res is not None and not _close(info.res, target_res):
            problem = f"resolution {info.res[0]:g} x {info.res[1]:g} m instead of {target_res:g} m"
            if on_mismatch == "error":
                raise InputError(
                    f"raster is not on the working grid: {problem}; set the source's "
                    "`on_mismatch: reproject` to resample it, or set `resolution:`",
                    path=info.path,
                )
        else:
            problem = ""
        out.append(replace(info, reproject=bool(problem)))
    return out


def overlapping(infos: Sequence[RasterInfo], bounds: Bounds, crs: str) -> list[RasterInfo]:
    """The tiles whose extent overlaps `bounds` (in `crs`), in delivery order; tiles in another horizontal
    CRS: all of them (never missed)."""
    return _near(infos, crs, bounds, _apart_overlapping)


def covering(infos: Sequence[RasterInfo], bounds: Bounds, crs: str) -> list[RasterInfo]:
    """The tiles that can hold a point inside `bounds` (closed, in `crs`) by GDAL's pixel convention (a
    tile holds west <= x < east, south < y <= north: a point on the line between two tiles belongs to one),
    in delivery order; tiles in another horizontal CRS: all of them. What a sampler of points inside
    `bounds` needs, and so all that a cache key of its result must name."""
    return _near(infos, crs, bounds, _apart_covering)


def _apart_overlapping(t: Bounds, b: Bounds) -> bool:
    return t[0] >= b[2] or t[2] <= b[0] or t[1] >= b[3] or t[3] <= b[1]


def _apart_covering(t: Bounds, b: Bounds) -> bool:
    return t[0] > b[2] or t[2] <= b[0] or t[1] >= b[3] or t[3] < b[1]


def _near(
    infos: Sequence[RasterInfo], crs: str, bounds: Bounds, apart: Callable[[Bounds, Bounds], bool]
) -> list[RasterInfo]:
    """The tiles whose bounds are not `apart` from `bounds`, and every tile in another horizontal CRS than
    `crs` (its bounds do not compare); `crs` is parsed once, not per tile."""
    want = _horizontal_epsg(parse_crs(crs))
    return [i for i in infos if not apart(i.bounds, bounds) or i.horizontal_epsg != want]


class TileIndex:
    """`overlapping` and `covering` for many boxes over one delivery: the tiles in `crs` bucketed on a grid
    of cells as wide as the widest tile, so a box tests the tiles of the cells it touches only (and every
    tile in another horizontal CRS), not the whole delivery. Same tiles in the same (delivery) order as
    the functions; what the terrain needs for the 65,536 chunks of a Ruhr-sized region."""

    def __init__(self, infos: Sequence[RasterInfo], crs: str) -> None:
        self.infos = list(infos)
        want = _horizontal_epsg(parse_crs(crs))
        self.other = [n for n, i in enumerate(self.infos) if i.horizontal_epsg != want]
        same = [n for n, i in enumerate(self.infos) if i.horizontal_epsg == want]
        widths = [max(b[2] - b[0], b[3] - b[1]) for b in (self.infos[n].bounds for n in same)]
        self.cell = max([w for w in widths if math.isfinite(w) and w > 0], default=1.0)
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.loose: list[int] = []  # tiles with bounds that do not bucket (not finite): tested always
        for n in same:
            span = self._span(self.infos[n].bounds)
            if span is None:
                self.loose.append(n)
                continue
            for cx in range(span[0], span[2] + 1):
                for cy in range(span[1], span[3] + 1):
                    self.cells.setdefault((cx, cy), []).append(n)

    def _span(self, b: Bounds) -> tuple[int, int, int, int] | None:
        if not all(math.isfinite(v) for v in b):
            return None
        c = self.cell
        return math.floor(b[0] / c), math.floor(b[1] / c), math.floor(b[2] / c), math.floor(b[3] / c)

    def overlapping(self, bounds: Bounds) -> list[RasterInfo]:
        return self._near(bounds, _apart_overlapping)

    def covering(self, bounds: Bounds) -> list[RasterInfo]:
        return self._near(bounds, _apart_covering)

    def _near(self, bounds: Bounds, apart: Callable[[Bounds, Bounds], bool]) -> list[RasterInfo]:
        # a tile within `bounds` or on its edge shares a cell with it: cells of both by floor(x / cell)
        span = self._span(bounds)
        ncells = 0 if span is None else (span[2] - span[0] + 1) * (span[3] - span[1] + 1)
        if span is None or span[2] < span[0] or span[3] < span[1] or ncells > len(self.cells):
            cand = set(range(len(self.infos))) - set(self.other)
        else:
            cand = set(self.loose)
            for cx in range(span[0], span[2] + 1):
                for cy in range(span[1], span[3] + 1):
                    cand.update(self.cells.get((cx, cy), ()))
        hit = [n for n in cand if not apart(self.infos[n].bounds, bounds)]
        return [self.infos[n] for n in sorted(hit + self.other)]


def in_crs(info: RasterInfo, crs: str) -> bool:
    """Whether the tile's horizontal CRS is that of `crs` (its bounds compare with `crs` coordinates)."""
    return info.horizontal_epsg == _horizontal_epsg(parse_crs(crs))


def _close(res: tuple[float, float], target: float) -> bool:
    return abs(res[0] - target) <= 1e-6 * max(target, 1) and abs(res[1] - target) <= 1e-6 * max(target, 1)


def delivery_bounds(infos: Sequence[RasterInfo], crs: str) -> Bounds:
    """Union of the tiles' bounds in `crs`."""
    bs = []
    want = _horizontal_epsg(parse_crs(crs))
    for i in infos:
        b = i.bounds
        if i.horizontal_epsg != want:
            b = transform_bounds(i.crs, crs, *b, densify_pts=21)
        bs.append(b)
    a = np.array(bs)
    return (float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 2].max()), float(a[:, 3].max()))


def native_resolution(infos: Sequence[RasterInfo]) -> float:
    """Finest resolution among the tiles that are on the working grid (else among all tiles)."""
    on = [i for i in infos if not i.reproject] or list(infos)
    return float(min(min(i.res) for i in on))


def read_grid(
    infos: Sequence[RasterInfo],
    grid: Grid,
    *,
    bands: Sequence[int] | None = None,
    band_names: Sequence[str] | None = None,
    resampling: Resampling = Resampling.bilinear,
) -> Raster:
    """Mosaic the tiles onto `grid` (first tile in path order wins where tiles overlap).

    Each tile is warped through a `WarpedVRT` straight onto the target grid, so tiles in another CRS or
    resolution are reprojected on the fly and memory stays bounded by the grid.
    """
    from rasterio.warp import reproject
    from rasterio.windows import Window, from_bounds

    idx = list(bands) if bands else list(range(1, infos[0].count + 1))
    out = np.full((len(idx), grid.height, grid.width), np.nan, dtype=np.float32)
    filled = np.zeros((grid.height, grid.width), dtype=bool)
    gb = grid.bounds
    dst_crs = rasterio.crs.CRS.from_user_input(grid.crs)
    for info in infos:
        # horizontal part only: heights are converted by our own transformers, never by the warper
        src_crs = rasterio.crs.CRS.from_wkt(_horizontal_crs(info.crs).to_wkt())
        same = info.horizontal_epsg == _horizontal_epsg(parse_crs(grid.crs))
        need = gb if same else transform_bounds(dst_crs, src_crs, *gb, densify_pts=21)
        tb = info.bounds
        if tb[0] >= need[2] or tb[2] <= need[0] or tb[1] >= need[3] or tb[3] <= need[1]:
            continue
        if max(idx) > info.count:
            raise InputError(f"raster has {info.count} bands, band {max(idx)} requested", path=info.path)
        try:
            with rasterio.open(info.path) as ds:
                # plain band values (never GDAL masks: a 4th RGBI band is often tagged as alpha)
                w = from_bounds(*need, transform=ds.transform)
                pad = 2
                c0 = max(int(np.floor(w.col_off)) - pad, 0)
                r0 = max(int(np.floor(w.row_off)) - pad, 0)
                c1 = min(int(np.ceil(w.col_off + w.width)) + pad, ds.width)
                r1 = min(int(np.ceil(w.row_off + w.height)) + pad, ds.height)
                if c1 <= c0 or r1 <= r0:
                    continue
                win = Window(c0, r0, c1 - c0, r1 - r0)
                src = ds.read(idx, window=win, masked=False).astype(np.float32)
                src_t = ds.window_transform(win)
        except RasterioError as e:
            raise InputError(f"cannot read raster: {e}", path=info.path) from e
        if info.nodata is not None:
            src[src == np.float32(info.nodata)] = np.nan
        dst = np.full((len(idx), grid.height, grid.width), np.nan, dtype=np.float32)
        reproject(
            src,
            dst,
            src_transform=src_t,
            src_crs=src_crs,
            src_nodata=np.nan,
            dst_transform=grid.transform,
            dst_crs=dst_crs,
            dst_nodata=np.nan,
            init_dest_nodata=True,
            resampling=resampling,
        )
        take = np.all(np.isfinite(dst), axis=0) & ~filled
        out[:, take] = dst[:, take]
        filled |= take
    names = tuple(band_names) if band_names else tuple(f"b{i}" for i in idx)
    return Raster(out, grid, names)


def tile_cells(info: RasterInfo, grid: Grid) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1): the cells of `grid` the tile's extent touches, None when none."""
    b = info.bounds
    if info.horizontal_epsg != _horizontal_epsg(parse_crs(grid.crs)):
        src_crs = rasterio.crs.CRS.from_wkt(_horizontal_crs(info.crs).to_wkt())
        b = transform_bounds(src_crs, rasterio.crs.CRS.from_user_input(grid.crs), *b, densify_pts=21)
    t = grid.transform
    c0 = max(math.floor((b[0] - t.c) / t.a + 1e-9), 0)
    c1 = min(math.ceil((b[2] - t.c) / t.a - 1e-9), grid.width)
    r0 = max(math.floor((t.f - b[3]) / -t.e + 1e-9), 0)
    r1 = min(math.ceil((t.f - b[1]) / -t.e - 1e-9), grid.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, r1, c0, c1


def sub_grid(grid: Grid, row0: int, row1: int, col0: int, col1: int) -> Grid:
    """The cells [row0:row1, col0:col1] of `grid` as a grid of their own (same cell edges)."""
    t = grid.transform
    return Grid(
        Affine(t.a, 0.0, t.c + col0 * t.a, 0.0, t.e, t.f + row0 * t.e), col1 - col0, row1 - row0, grid.crs
    )


def read_tile_cells(
    info: RasterInfo,
    grid: Grid,
    *,
    bands: Sequence[int],
    resampling: Resampling = Resampling.bilinear,
    max_source_pixels: int = 2**23,
) -> tuple[int, int, np.ndarray]:
    """One tile warped onto the cells of `grid` it touches: (row0, col0, (bands, rows, cols)), NaN where
    the tile has no data. Equals that window of `read_grid([info], grid)`, with memory bounded by the tile
    instead of the grid: the cells are warped in strips of rows whose source rows hold at most
    `max_source_pixels` pixels per band (each strip reads only its own rows of the file).

    The warp runs on the touched cells plus a margin of two cells, and the margin is dropped: GDAL's
    average resampling fills the cells just beyond a tile's edge from its border pixels when the
    destination reaches there (a whole-grid warp does not), so only the touched cells are the tile's."""
    cells = tile_cells(info, grid)
    if cells is None:
        return 0, 0, np.zeros((len(bands), 0, 0), dtype=np.float32)
    r0, r1, c0, c1 = cells
    m = 2
    w0, w1 = max(c0 - m, 0), min(c1 + m, grid.width)
    h0, h1 = max(r0 - m, 0), min(r1 + m, grid.height)
    # source pixels under one row of cells: (source pixels per cell side)^2 x the window's cells
    per_cell = max(1.0, grid.res / min(abs(info.res[0]), abs(info.res[1])))
    if info.horizontal_epsg != _horizontal_epsg(parse_crs(grid.crs)):
        tb = info.bounds
        per_cell = max(1.0, (tb[2] - tb[0]) / abs(info.res[0]) / max(c1 - c0, 1))
    rows_per_strip = max(1, int(max_source_pixels // (per_cell * per_cell * (w1 - w0))))
    out = np.full((len(bands), r1 - r0, c1 - c0), np.nan, dtype=np.float32)
    # strips cover the touched rows; each warps its rows plus the margin rows at the window's ends
    for s0 in range(r0, r1, rows_per_strip):
        s1 = min(s0 + rows_per_strip, r1)
        a0 = h0 if s0 == r0 else s0
        a1 = h1 if s1 == r1 else s1
        data = read_grid([info], sub_grid(grid, a0, a1, w0, w1), bands=bands, resampling=resampling).data
        out[:, s0 - r0 : s1 - r0] = data[:, s0 - a0 : s1 - a0, c0 - w0 : c1 - w0]
    return r0, c0, out


def orthophoto_bands(configured: dict[str, int] | None) -> dict[str, int]:
    """Band indices of an RGBI orthophoto: configured ones over the RGBI default."""
    return {**ORTHO_BANDS, **(configured or {})}


# ------------------------------------------------------------------------------- plausibility facts


def _spikes(a: np.ndarray, valid: np.ndarray, spike_m: float) -> int:
    """Inner cells (all but the border rows/columns) more than `spike_m` above, or below, every one of
    their valid 4-neighbours (cells without a valid neighbour are not counted)."""
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0
    c = a[1:-1, 1:-1]
    vc = valid[1:-1, 1:-1]
    up = np.ones_like(vc)
    down = np.ones_like(vc)
    any_nb = np.zeros_like(vc)
    for rows, cols in (
        (slice(None, -2), slice(1, -1)),
        (slice(2, None), slice(1, -1)),
        (slice(1, -1), slice(None, -2)),
        (slice(1, -1), slice(2, None)),
    ):
        v, ok = a[rows, cols], valid[rows, cols]
        with np.errstate(invalid="ignore", over="ignore"):
            d = c - v
        up &= ~ok | (d > spike_m)
        down &= ~ok | (d < -spike_m)
        any_nb |= ok
    return int(np.count_nonzero(vc & any_nb & (up | down)))


def raster_facts(
    path: str | Path,
    *,
    role: str,
    bands_needed: int = 1,
    height_range: tuple[float, float] = (-500.0, 9000.0),
    spike_m: float = 200.0,
    working_crs: str | None = None,
    crs_override: str | None = None,
    strip_rows: int = 512,
) -> dict:
    """Plausibility facts of one raster tile, read in strips of rows (memory bounded by a strip).

    `role` "dgm": band 1 is a height: valid cells (not nodata, finite), min/max, cells outside
    `height_range`, spikes (`_spikes`), terrain area (valid cells x cell area). Other roles (orthophoto):
    whether any pixel has data and whether every pixel is 0 in every band (a black tile); reading stops
    at the first strip with a non-black valid pixel. Nodata is the band's declared nodata value (or NaN),
    never GDAL's masks (a 4th RGBI band is often tagged as alpha)."""
    from rasterio.windows import Window

    p = Path(path)
    lo, hi = height_range
    try:
        with rasterio.open(p) as ds:
            facts: dict = {
                "kind": "raster",
                "role": role,
                "bands": ds.count,
                "bands_needed": bands_needed,
                "cells": ds.width * ds.height,
                "res": [abs(ds.res[0]), abs(ds.res[1])],
                "bounds_xy": None,
            }
            file_crs = parse_crs(crs_override, path=p) if crs_override else ds.crs
            if file_crs is not None:
                b = tuple(ds.bounds)
                if working_crs is not None:
                    want = rasterio.crs.CRS.from_wkt(_horizontal_crs(parse_crs(working_crs)).to_wkt())
                    src = rasterio.crs.CRS.from_wkt(
                        _horizontal_crs(CRS.from_user_input(file_crs.to_wkt())).to_wkt()
                    )
                    if src != want:
                        b = transform_bounds(src, want, *b, densify_pts=21)
                facts["bounds_xy"] = [float(v) for v in b]
            if ds.count < bands_needed:
                return facts | {"valid": None}
            nodata = ds.nodata
            if role == "dgm":
                valid_n = out_n = spikes = 0
                vmin, vmax = math.inf, -math.inf
                for r0 in range(0, ds.height, strip_rows):
                    n = min(strip_rows, ds.height - r0)
                    top, bottom = max(r0 - 1, 0), min(r0 + n + 1, ds.height)
                    raw = ds.read(1, window=Window(0, top, ds.width, bottom - top))
                    a = raw.astype(np.float64)
                    ok = np.isfinite(a)
                    if nodata is not None:
                        ok &= raw != raw.dtype.type(nodata)
                    # rows r0-1 .. r0+n and a column either side; missing halo rows stay invalid
                    pa = np.full((n + 2, ds.width + 2), np.nan)
                    pok = np.zeros((n + 2, ds.width + 2), dtype=bool)
                    off = top - (r0 - 1)
                    pa[off : off + (bottom - top), 1:-1] = a
                    pok[off : off + (bottom - top), 1:-1] = ok
                    vals = pa[1:-1, 1:-1][pok[1:-1, 1:-1]]
                    valid_n += int(vals.size)
                    if vals.size:
                        vmin = min(vmin, float(vals.min()))
                        vmax = max(vmax, float(vals.max()))
                        out_n += int(np.count_nonzero((vals < lo) | (vals > hi)))
                    spikes += _spikes(pa, pok, spike_m)
                facts |= {
                    "valid": valid_n,
                    "min": vmin if valid_n else None,
                    "max": vmax if valid_n else None,
                    "out_of_range": out_n,
                    "spikes": spikes,
                    "area_m2": valid_n * facts["res"][0] * facts["res"][1],
                }
            else:
                idx = list(range(1, min(ds.count, max(bands_needed, 1)) + 1))
                valid_n = 0
                black = True
                for r0 in range(0, ds.height, strip_rows):
                    n = min(strip_rows, ds.height - r0)
                    a = ds.read(idx, window=Window(0, r0, ds.width, n)).astype(np.float64)
                    ok = np.all(np.isfinite(a), axis=0)
                    if nodata is not None:
                        ok &= ~np.all(a == nodata, axis=0)
                    valid_n += int(np.count_nonzero(ok))
                    if ok.any() and np.any(a[:, ok] != 0):
                        black = False
                        break
                facts |= {"valid": valid_n, "black": bool(valid_n and black)}
            return facts
    except RasterioError as e:
        raise InputError(f"cannot read raster: {e}", path=p) from e
