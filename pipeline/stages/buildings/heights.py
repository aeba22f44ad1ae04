"""Per-footprint roof and base heights from a classified point cloud (pure functions, no Dask).

Roof: a percentile (default p75) of the non-ground first/only returns inside the footprint shrunk by
`shrink_m` (keeps wall and neighbour points out). Base: a low percentile (p10) of the ground points in a
ring `ground_ring_m` wide just outside the footprint. Both are joined with a numba grid-index
point-in-polygon kernel; `collect_samples_reference` is the shapely/numpy version the tests compare with.

Work splits by point-cloud tile: `collect_samples` gives, per polygon, the Z samples of one tile (CSR);
samples of several tiles are merged with `merge_samples`; `summarise` turns them into statistics.
`footprint_heights` does all three for one point set (tests, change detection).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely

from pipeline.stages.buildings import _kernels as K

# Class codes per scheme: (roof candidates = non-ground, ground)
DEFAULT_CLASSES: dict[str, dict[str, tuple[int, ...]]] = {
    "adv": {"roof": (20, 1), "ground": (2,)},
    "asprs": {"roof": (6, 1), "ground": (2,)},
}


@dataclass(frozen=True)
class HeightParams:
    roof_percentile: float = 75.0
    stats_percentiles: tuple[float, ...] = (50.0, 70.0, 90.0, 99.0)
    ground_percentile: float = 10.0
    shrink_m: float = 0.5
    ground_ring_m: float = 3.0
    min_points: int = 5
    roof_classes: tuple[int, ...] = (20, 1)
    ground_classes: tuple[int, ...] = (2,)
    first_returns_only: bool = True
    grid_cell_m: float = 2.0
    # "percentile": roof_percentile of the roof points; "mean": their mean, an estimate of the
    # area-weighted mean height of the roof surface (the AdV / Geobasis NRW LoD1 roof)
    roof_statistic: str = "percentile"

    @property
    def percentiles(self) -> tuple[float, ...]:
        """All roof percentiles computed: the roof percentile first, then the statistics."""
        return (self.roof_percentile, *self.stats_percentiles)

    @staticmethod
    def stat_name(p: float) -> str:
        return f"p{p:g}".replace(".", "_")


@dataclass
class PolygonSet:
    """Polygons flattened to edges (even-odd rule: holes and multi-parts need no special case)."""

    ex0: np.ndarray
    ey0: np.ndarray
    ex1: np.ndarray
    ey1: np.ndarray
    eptr: np.ndarray  # (n+1,) edge offsets per polygon
    bbox: np.ndarray  # (n, 4) xmin, ymin, xmax, ymax (NaN row for empty polygons)

    def __len__(self) -> int:
        return len(self.eptr) - 1

    @classmethod
    def from_geoms(cls, geoms: np.ndarray) -> PolygonSet:
        geoms = np.asarray(geoms, dtype=object)
        n = len(geoms)
        parts, part_geom = shapely.get_parts(geoms, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
        same = coord_ring[:-1] == coord_ring[1:]
        a = np.flatnonzero(same)
        edge_geom = part_geom[ring_part[coord_ring[a]]]
        order = np.argsort(edge_geom, kind="stable")  # already sorted, kept for safety
        a = a[order]
        edge_geom = edge_geom[order]
        eptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(eptr, edge_geom + 1, 1)
        np.cumsum(eptr, out=eptr)
        bbox = shapely.bounds(geoms).astype(np.float64)
        return cls(
            np.ascontiguousarray(coords[a, 0]),
            np.ascontiguousarray(coords[a, 1]),
            np.ascontiguousarray(coords[a + 1, 0]),
            np.ascontiguousarray(coords[a + 1, 1]),
            eptr,
            np.nan_to_num(bbox, nan=0.0),
        )

    def subset(self, idx: np.ndarray) -> PolygonSet:
        starts, ends = self.eptr[idx], self.eptr[idx + 1]
        lens = ends - starts
        sel = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        eptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return PolygonSet(self.ex0[sel], self.ey0[sel], self.ex1[sel], self.ey1[sel], eptr, self.bbox[idx])


@dataclass
class FootprintZones:
    """The two zones of every footprint: shrunk roof zone and ground ring, plus their areas."""

    roof: PolygonSet
    ring: PolygonSet
    roof_area: np.ndarray
    roof_geoms: np.ndarray = field(repr=False)
    ring_geoms: np.ndarray = field(repr=False)

    def subset(self, idx: np.ndarray, with_geoms: bool = True) -> FootprintZones:
        """Zones of some footprints; without geometries the object is small to ship to a worker."""
        none = np.empty(0, dtype=object)
        return FootprintZones(
            self.roof.subset(idx),
            self.ring.subset(idx),
            self.roof_area[idx],
            self.roof_geoms[idx] if with_geoms else none,
            self.ring_geoms[idx] if with_geoms else none,
        )


def footprint_zones(geoms: np.ndarray, params: HeightParams) -> FootprintZones:
    """Shrunk roof zones (falling back to the footprint when shrinking empties it) and ground rings."""
    geoms = np.asarray(geoms, dtype=object)
    roof = shapely.buffer(geoms, -params.shrink_m, join_style="mitre") if params.shrink_m > 0 else geoms
    empty = shapely.is_empty(roof) | (shapely.area(roof) < 1.0)
    roof = np.where(empty, geoms, roof)
    outer = shapely.buffer(geoms, params.ground_ring_m, join_style="mitre", quad_segs=2)
    ring = shapely.difference(outer, geoms)
    return FootprintZones(
        PolygonSet.from_geoms(roof), PolygonSet.from_geoms(ring), shapely.area(roof), roof, ring
    )


@dataclass
class Samples:
    """Per polygon Z samples (CSR) of roof candidates and ground points."""

    roof_ptr: np.ndarray
    roof_z: np.ndarray
    ground_ptr: np.ndarray
    ground_z: np.ndarray

    def take(self, idx: np.ndarray) -> Samples:
        return Samples(
            *_csr_take(self.roof_ptr, self.roof_z, idx), *_csr_take(self.ground_ptr, self.ground_z, idx)
        )


def _csr_take(ptr: np.ndarray, vals: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lens = ptr[idx + 1] - ptr[idx]
    out_ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    sel = np.repeat(ptr[idx] - out_ptr[:-1], lens) + np.arange(out_ptr[-1])
    return out_ptr, vals[sel]


def _lut(codes: tuple[int, ...]) -> np.ndarray:
    lut = np.zeros(256, dtype=bool)
    lut[np.asarray(codes, dtype=np.int64)] = True
    return lut


def select_points(points: dict[str, np.ndarray], params: HeightParams) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (roof candidates, ground) from classification and return number."""
    cls = np.asarray(points["classification"])
    roof = _lut(params.roof_classes)[cls]
    if params.first_returns_only and "return_number" in points:
        roof &= np.asarray(points["return_number"]) <= 1
    ground = _lut(params.ground_classes)[cls]
    return roof, ground


def collect_in_footprints(x, y, z, mask, polys: PolygonSet, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, values) of `z` for the `mask`ed points inside each polygon of `polys` (grid-accelerated)."""
    if len(polys) == 0 or x.size == 0:
        return np.zeros(len(polys) + 1, dtype=np.int64), np.zeros(0, dtype=np.float64)
    xs, ys, zs, start, x0, y0, nx, ny = K.select_sorted(x, y, z, mask, cell)
    return K.collect_in_polygons(
        xs,
        ys,
        zs,
        start,
        x0,
        y0,
        cell,
        nx,
        ny,
        polys.ex0,
        polys.ey0,
        polys.ex1,
        polys.ey1,
        polys.eptr,
        polys.bbox,
    )


def collect_samples(points: dict[str, np.ndarray], zones: FootprintZones, params: HeightParams) -> Samples:
    """Z samples of one point set (x, y, z, classification[, return_number]) for every footprint (numba)."""
    roof_m, ground_m = select_points(points, params)
    x = np.ascontiguousarray(points["x"], dtype=np.float64)
    y = np.ascontiguousarray(points["y"], dtype=np.float64)
    z = np.ascontiguousarray(points["z"], dtype=np.float64)
    rp, rz = collect_in_footprints(x, y, z, roof_m, zones.roof, params.grid_cell_m)
    gp, gz = collect_in_footprints(x, y, z, ground_m, zones.ring, params.grid_cell_m)
    return Samples(rp, rz, gp, gz)


class _ZoneGather:
    """The samples of one zone set (roof zones or ground rings) gathered over the chunks of a point file,
    each with its point's position and index in the file, so that `result` can put every polygon's
    samples in the order `collect_in_footprints` gives for the whole file at once: by cell of the grid
    over all masked points (`_kernels.select_sorted`), then by point index."""

    def __init__(self, polys: PolygonSet, cell: float) -> None:
        self.polys, self.cell = polys, cell
        self.lo = np.array([np.inf, np.inf])
        self.hi = np.array([-np.inf, -np.inf])
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, mask: np.ndarray, start: int) -> None:
        if not mask.any():
            return
        mx, my = x[mask], y[mask]
        self.lo = np.minimum(self.lo, [mx.min(), my.min()])
        self.hi = np.maximum(self.hi, [mx.max(), my.max()])
        local = np.arange(x.size, dtype=np.float64)  # collected instead of z: exact up to 2**53
        ptr, vals = collect_in_footprints(x, y, local, mask, self.polys, self.cell)
        i = vals.astype(np.int64)
        owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        self.parts.append((owner, i + start, x[i], y[i], z[i]))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.polys)
        if not self.parts:
            return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.float64)
        owner, index, x, y, z = (np.concatenate(c) for c in zip(*self.parts, strict=True))
        x0, y0 = self.lo
        nx = int((self.hi[0] - x0) / self.cell) + 1  # the grid of `select_sorted` over all masked points
        cell = ((y - y0) / self.cell).astype(np.int64) * nx + ((x - x0) / self.cell).astype(np.int64)
        order = np.lexsort((index, cell, owner))
        ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]).astype(np.int64)
        return ptr, z[order]


class SampleGather:
    """`collect_samples_chunked` one chunk at a time: `add` the chunks of a point set in order, then
    `samples()`."""

    def __init__(self, zones: FootprintZones, params: HeightParams) -> None:
        self.params = params
        self.roof = _ZoneGather(zones.roof, params.grid_cell_m)
        self.ring = _ZoneGather(zones.ring, params.grid_cell_m)
        self.start = 0

    def add(self, pts: dict[str, np.ndarray]) -> None:
        roof_m, ground_m = select_points(pts, self.params)
        x = np.ascontiguousarray(pts["x"], dtype=np.float64)
        y = np.ascontiguousarray(pts["y"], dtype=np.float64)
        z = np.ascontiguousarray(pts["z"], dtype=np.float64)
        self.roof.add(x, y, z, roof_m, self.start)
        self.ring.add(x, y, z, ground_m, self.start)
        self.start += x.size

    def samples(self) -> Samples:
        return Samples(*self.roof.result(), *self.ring.result())


def collect_samples_chunked(
    chunks: Iterable[dict[str, np.ndarray]], zones: FootprintZones, params: HeightParams
) -> Samples:
    """`collect_samples` of a point set given in chunks (in file order): the same samples in the same
    order as for the whole set at once (so means add up to the bit), with memory for one chunk plus the
    samples."""
    gather = SampleGather(zones, params)
    for pts in chunks:
        gather.add(pts)
    return gather.samples()


def collect_samples_reference(
    points: dict[str, np.ndarray], zones: FootprintZones, params: HeightParams
) -> Samples:
    """Reference: shapely.contains_xy per polygon on its bbox candidates (slow; tests only)."""
    roof_m, ground_m = select_points(points, params)
    x = np.asarray(points["x"], dtype=np.float64)
    y = np.asarray(points["y"], dtype=np.float64)
    z = np.asarray(points["z"], dtype=np.float64)

    def one(mask: np.ndarray, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px, py, pz = x[mask], y[mask], z[mask]
        vals, lens = [], []
        for g in geoms:
            b = shapely.bounds(g)
            c = (px >= b[0]) & (px <= b[2]) & (py >= b[1]) & (py <= b[3])
            inside = np.zeros(px.size, dtype=bool)
            inside[c] = shapely.contains_xy(g, px[c], py[c])
            vals.append(pz[inside])
            lens.append(int(inside.sum()))
        ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return ptr, np.concatenate(vals) if vals else np.zeros(0)

    return Samples(*one(roof_m, zones.roof_geoms), *one(ground_m, zones.ring_geoms))


def merge_samples(ids: list[np.ndarray], parts: list[Samples], n: int) -> Samples:
    """Merge tile samples: `ids[t][k]` is the global footprint index of polygon k of part t."""

    def merge(ptrs: list[np.ndarray], vals: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        owner = np.concatenate(
            [np.repeat(i, np.diff(p)) for i, p in zip(ids, ptrs, strict=True)] or [np.zeros(0, np.int64)]
        ).astype(np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0)
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=n)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), v[order]

    rp, rz = merge([p.roof_ptr for p in parts], [p.roof_z for p in parts])
    gp, gz = merge([p.ground_ptr for p in parts], [p.ground_z for p in parts])
    return Samples(rp, rz, gp, gz)


def grouped_mean(ptr: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Mean of each CSR group (NaN for empty groups)."""
    n = np.diff(ptr)
    owner = np.repeat(np.arange(len(n)), n)
    sums = np.bincount(owner, weights=np.asarray(vals, dtype=np.float64), minlength=len(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.maximum(n, 1), np.nan)


def summarise(samples: Samples, roof_area: np.ndarray, params: HeightParams) -> dict[str, np.ndarray]:
    """Per footprint: roof percentile + statistics, counts, density, ground percentile."""
    qs = np.asarray(params.percentiles, dtype=np.float64)
    rp = K.grouped_percentiles(samples.roof_ptr, samples.roof_z.astype(np.float64), qs)
    gp = K.grouped_percentiles(
        samples.ground_ptr, samples.ground_z.astype(np.float64), np.array([params.ground_percentile])
    )
    n = np.diff(samples.roof_ptr)
    ng = np.diff(samples.ground_ptr)
    out: dict[str, np.ndarray] = {"roof_sample": rp[:, 0]}
    if params.roof_statistic == "mean":
        out["roof_sample"] = grouped_mean(samples.roof_ptr, samples.roof_z)
    for k, p in enumerate(params.stats_percentiles):
        out[HeightParams.stat_name(p)] = rp[:, k + 1]
    out["roof_percentile"] = rp[:, 0]  # per-epoch comparisons use it whatever the LoD1 statistic
    out["n_points"] = n.astype(np.int64)
    out["density"] = np.where(roof_area > 0, n / np.maximum(roof_area, 1e-9), 0.0)
    out["ground_sample"] = gp[:, 0]
    out["n_ground"] = ng.astype(np.int64)
    return out


def footprint_heights(
    footprints: Any, points: dict[str, np.ndarray], params: HeightParams | None = None
) -> pd.DataFrame:
    """Point statistics of every footprint for one point set.

    `footprints`: GeoDataFrame/GeoSeries/array of (Multi)Polygons in the points' CRS. `points`: dict with
    x, y, z, classification and optionally return_number (numpy arrays). Returns a DataFrame indexed like
    the input: roof_sample (the roof percentile), p50.., n_points, density, ground_sample, n_ground.
    """
    params = params or HeightParams()
    geoms = np.asarray(getattr(footprints, "geometry", footprints), dtype=object)
    zones = footprint_zones(geoms, params)
    stats = summarise(collect_samples(points, zones, params), zones.roof_area, params)
    index = getattr(footprints, "index", None)
    return pd.DataFrame(stats, index=index)


HEIGHT_FIELDS = ("x", "y", "z", "classification", "return_number")


class ToWorking:
    """Chunks of one point file into the working CRS: Z times `z_factor`, then, with `to_working` (file
    CRS as WKT, CrsConfig), x, y, z transformed (horizontal and heights, exact PROJ operations, geoid
    grids as configured). Rebinds the chunk's x/y/z, never changes its arrays."""

    def __init__(self, path: str, z_factor: float = 1.0, to_working: Any = None) -> None:
        self.path, self.z_factor = path, z_factor
        self.transform = _transformer(path, *to_working) if to_working is not None else None

    def __call__(self, pts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.z_factor != 1.0:
            pts["z"] = pts["z"] * self.z_factor
        if self.transform is not None:
            pts["x"], pts["y"], pts["z"] = _transform_points(
                self.path, self.transform, pts["x"], pts["y"], pts["z"]
            )
        return pts


def iter_points(
    path: str,
    z_factor: float = 1.0,
    to_working: Any = None,
    fields: tuple[str, ...] = HEIGHT_FIELDS,
    chunk_points: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """`fields` of one point file in chunks of `chunk_points` points (the one point reader: memory one
    chunk, whatever the file), in the working CRS (`ToWorking`)."""
    from pipeline.sources.pointcloud import reader

    working = ToWorking(path, z_factor, to_working)
    for pts in reader.iter_points(path, fields, chunk_points or reader.MAX_CHUNK_POINTS):
        yield working(pts)


def read_points(path: str, z_factor: float = 1.0, to_working: Any = None) -> dict[str, np.ndarray]:
    """x, y, z, classification, return_number of a whole point file (tests, small files; the stages
    iterate in chunks with `iter_points`)."""
    parts = list(iter_points(path, z_factor, to_working))
    return {k: np.concatenate([p[k] for p in parts]) for k in HEIGHT_FIELDS}


def _transformer(path: str, src_wkt: str, crs_cfg: Any) -> Any:
    from pyproj import CRS

    from pipeline.crs import make_transformer, working_crs

    return make_transformer(CRS.from_wkt(src_wkt), working_crs(crs_cfg), crs_cfg, path=path)


def _transform_points(path: str, t: Any, x: np.ndarray, y: np.ndarray, z: np.ndarray):
    from pipeline.errors import CrsError

    x, y, z = (np.asarray(v, dtype=np.float64) for v in t.transform(x, y, z))
    if x.size and not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(z).all()):
        raise CrsError("points could not be transformed into the working CRS (outside a grid?)", path=path)
    return x, y, z


class HeightSampler:
    """The height statistics of one point-cloud tile as a point product (`stages.point_products`):
    statistics of the footprints entirely covered by this tile (`complete`) and raw samples of the
    others (to be merged with the neighbouring tiles' samples). Memory: one chunk plus the samples;
    the statistics do not depend on the chunk size."""

    fields = HEIGHT_FIELDS

    def __init__(
        self,
        path: str,
        zones: FootprintZones,
        complete: np.ndarray,
        params: HeightParams,
        z_factor: float = 1.0,
        to_working: Any = None,
    ) -> None:
        self.zones, self.complete, self.params = zones, complete, params
        self.working = ToWorking(path, z_factor, to_working)
        self.gather = SampleGather(zones, params)

    def add(self, pts: dict[str, np.ndarray]) -> None:
        self.gather.add(self.working(pts))

    def result(self) -> tuple[dict[str, np.ndarray], Samples]:
        s = self.gather.samples()
        done = np.flatnonzero(self.complete)
        rest = np.flatnonzero(~self.complete)
        stats = summarise(s.take(done), self.zones.roof_area[done], self.params)
        return stats, s.take(rest)


def tile_stats(
    path: str,
    zones: FootprintZones,
    complete: np.ndarray,
    params: HeightParams,
    z_factor: float = 1.0,
    to_working: Any = None,
    chunk_points: int | None = None,
) -> tuple[dict[str, np.ndarray], Samples]:
    """`HeightSampler` of one point-cloud tile alone, read in chunks of `chunk_points` points."""
    from pipeline.stages.point_products import point_product

    return point_product(path, HeightSampler, (zones, complete, params, z_factor, to_working), chunk_points)
