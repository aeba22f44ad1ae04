"""LoD2 roofs for many footprints: roof points per footprint (numba grid join) -> `roofs.fit_roof` ->
one row of roof attributes per footprint (pure functions, no Dask).

`collect_roof_points(points, geoms, params)` gives, per footprint, the indices of its roof candidate
points (non-ground first/only returns inside the footprint shrunk by `shrink_m`), with the same
point-in-polygon kernel as the LoD1 heights (`_kernels.collect_in_polygons`, here over point indices);
`reconstruct_roofs(x, y, z, ptr, geoms, params)` fits every footprint and returns `RoofTable`.
`tile_roof_points(path, wkb, ...)` gathers one point-cloud tile's roof points, `tile_roofs` fits them
(the orchestrator's tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.stages.buildings.heights import PolygonSet, collect_in_footprints, select_points
from pipeline.stages.buildings.roofs import Plane, RoofFit, RoofParams, fit_roof

# attribute columns of a RoofTable (and of buildings.gpkg / the tiles), with their descriptions
ROOF_COLUMNS = {
    "roof_type": "reconstructed roof shape: flat | shed | gable | hip | half_hip | mansard | pyramid | "
    "multi ('' = LoD1)",
    "roof_type_code": "AdV roofType code of roof_type (1000 flat, 2100 shed, 3100 gable, 3200 hip, "
    "3300 half_hip, 3400 mansard, 3500 pyramid, 5000 multi)",
    "roof_planes": "number of roof planes",
    "roof_slope_mean": "point-weighted mean slope of the roof planes [degrees]",
    "roof_slope_max": "steepest roof plane [degrees]",
    "roof_azimuth_main": "downhill azimuth of the largest sloped plane, clockwise from north [degrees]",
    "roof_planes_summary": "per plane 'slope/azimuth' in degrees, largest first, ';'-separated",
    "eave_height": "lowest roof edge (model) in the working height system [m]",
    "ridge_height": "highest roof point (model) in the working height system [m]",
    "roof_rmse": "RMSE of the roof model over its inlier points [m]",
    "roof_mean_height": "plan-area-weighted mean height of the LoD2 roof (the AdV LoD1 roof) in the "
    "working height system [m]",
    "roof_n_points": "roof points the model was fitted to",
    "roof_n_vegetation": "roof candidate points dropped as vegetation (orthophoto NDVI above the "
    "threshold) before the fit",
    "lod2_fallback_reason": "why the building keeps its LoD1 solid ('' = LoD2)",
    "lod_source": "reconstructed | official | lod1_fallback",
}


@dataclass(frozen=True)
class NdviFilter:
    """Vegetation among the roof points from the orthophoto: points whose pixel has NDVI above
    `threshold` are dropped before the fit, unless at least `green_roof_share` of the footprint's
    roof points are green (a green roof, not a crown over the roof)."""

    paths: tuple[str, ...]
    red_band: int = 1
    nir_band: int = 4
    threshold: float = 0.3
    green_roof_share: float = 0.6
    work_crs: str | None = None
    raster_crs: str | None = None


@dataclass(frozen=True)
class ReconstructParams:
    shrink_m: float = 0.3  # keeps wall and neighbour points out, loses less of the eaves than LoD1's 0.5
    roof: RoofParams = field(default_factory=RoofParams)
    # vegetation: only points of single-return pulses are roof candidates (a roof stops the pulse, a
    # tree crown over the roof splits it; green roofs stay, which an NDVI threshold would remove)
    single_returns: bool = True
    ndvi: NdviFilter | None = None  # vegetation points dropped by the orthophoto's NDVI (tile_roofs)


@dataclass
class RoofTable:
    """Per footprint: the fit (planes for the solids) and the attribute columns (ROOF_COLUMNS)."""

    fits: list[RoofFit]
    columns: dict[str, np.ndarray]


def collect_roof_points(
    points: dict[str, np.ndarray],
    geoms: np.ndarray,
    shrink_m: float,
    height_params: Any,
    single_returns: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, point index) of the roof candidates inside every footprint shrunk by shrink_m (the
    footprint itself when shrinking empties it). `height_params`: a HeightParams (roof classes,
    first returns); `single_returns`: only points of pulses with one return (when the points carry
    `number_of_returns`)."""
    geoms = np.asarray(geoms, dtype=object)
    zone = shapely.buffer(geoms, -shrink_m, join_style="mitre") if shrink_m > 0 else geoms
    empty = shapely.is_empty(zone) | (shapely.area(zone) < 1.0)
    zone = np.where(empty, geoms, zone)
    polys = PolygonSet.from_geoms(zone)
    roof_m, _ground = select_points(points, height_params)
    if single_returns and "number_of_returns" in points:
        roof_m &= np.asarray(points["number_of_returns"]) <= 1
    x = np.ascontiguousarray(points["x"], dtype=np.float64)
    y = np.ascontiguousarray(points["y"], dtype=np.float64)
    if len(polys) == 0 or x.size == 0:
        return np.zeros(len(polys) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    index = np.arange(x.size, dtype=np.float64)  # collected instead of z: exact up to 2**53
    ptr, vals = collect_in_footprints(x, y, index, roof_m, polys, float(height_params.grid_cell_m))
    idx = vals.astype(np.int64)
    # points of one footprint in input order (deterministic whatever the grid)
    owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    order = np.lexsort((idx, owner))
    return ptr.astype(np.int64), idx[order]


def drop_vegetation(
    ptr: np.ndarray, idx: np.ndarray, ndvi: np.ndarray, threshold: float, green_roof_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The roof points (CSR ptr, idx) without the green ones (`ndvi` per point > threshold; NaN is not
    green), except in footprints where at least `green_roof_share` of the points are green (a green
    roof keeps its points). Returns (ptr, idx, points dropped per footprint)."""
    n = len(ptr) - 1
    counts = np.diff(ptr)
    owner = np.repeat(np.arange(n), counts)
    with np.errstate(invalid="ignore"):
        green = np.asarray(ndvi, dtype=np.float64) > threshold
    share = np.bincount(owner, weights=green, minlength=n) / np.maximum(counts, 1)
    drop = green & (share[owner] < green_roof_share)
    dropped = np.bincount(owner[drop], minlength=n).astype(np.int64)
    new_ptr = np.concatenate([[0], np.cumsum(counts - dropped)]).astype(np.int64)
    return new_ptr, idx[~drop], dropped


def _summary(fit: RoofFit) -> dict[str, Any]:
    planes: list[Plane] = sorted(fit.planes, key=lambda pl: -pl.n_points)
    n = np.array([pl.n_points for pl in planes], dtype=np.float64)
    slopes = np.array([pl.slope_deg for pl in planes], dtype=np.float64)
    sloped = [pl for pl in planes if pl.slope_deg >= 5.0]
    return {
        "roof_type": fit.roof_type if not fit.fallback else "",
        "roof_type_code": fit.roof_type_code if not fit.fallback else "",
        "roof_planes": len(planes) if not fit.fallback else 0,
        "roof_slope_mean": float((slopes * n).sum() / n.sum())
        if n.sum() > 0 and not fit.fallback
        else np.nan,
        "roof_slope_max": float(slopes.max()) if slopes.size and not fit.fallback else np.nan,
        "roof_azimuth_main": float(sloped[0].azimuth_deg) if sloped and not fit.fallback else np.nan,
        "roof_planes_summary": ""
        if fit.fallback
        else ";".join(
            f"{pl.slope_deg:.1f}/{'' if np.isnan(pl.azimuth_deg) else f'{pl.azimuth_deg:.0f}'}"
            for pl in planes
        ),
        "eave_height": fit.eave_height if not fit.fallback else np.nan,
        "ridge_height": fit.ridge_height if not fit.fallback else np.nan,
        "roof_rmse": fit.rmse if not fit.fallback else np.nan,
        "roof_mean_height": np.nan,  # from the roof partition (lod2_roofs)
        "roof_n_points": fit.n_points,
        "roof_n_vegetation": 0,  # set by tile_roofs (NDVI filter)
        "lod2_fallback_reason": fit.fallback,
        "lod_source": "lod1_fallback" if fit.fallback else "reconstructed",
    }


INT_COLUMNS = ("roof_planes", "roof_n_points", "roof_n_vegetation")
STR_COLUMNS = (
    "roof_type",
    "roof_type_code",
    "roof_planes_summary",
    "lod2_fallback_reason",
    "lod_source",
)


def roof_columns(fits: list[RoofFit]) -> dict[str, np.ndarray]:
    rows = [_summary(f) for f in fits]
    out: dict[str, np.ndarray] = {}
    for key in ROOF_COLUMNS:
        vals = [r[key] for r in rows]
        if key in INT_COLUMNS:
            out[key] = np.asarray(vals, dtype=np.int64).reshape(-1)
        elif key in STR_COLUMNS:
            out[key] = np.asarray(vals, dtype=object).reshape(-1)
        else:
            out[key] = np.asarray(vals, dtype=np.float64).reshape(-1)
    return out


def reconstruct_roofs(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    ptr: np.ndarray,
    idx: np.ndarray,
    geoms: np.ndarray,
    params: ReconstructParams,
) -> RoofTable:
    """Fit every footprint's roof; `ptr`/`idx` from `collect_roof_points`."""
    fits = []
    for k, g in enumerate(np.asarray(geoms, dtype=object)):
        sel = idx[ptr[k] : ptr[k + 1]]
        fits.append(fit_roof(x[sel], y[sel], z[sel], g, params.roof))
    return RoofTable(fits, roof_columns(fits))


def lod2_roofs(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    ptr: np.ndarray,
    idx: np.ndarray,
    geoms: np.ndarray,
    params: ReconstructParams,
    base: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], list[bytes], np.ndarray, list[bytes]]:
    """Fit every footprint and build its LoD2 roof partition and solid, checked under val3dity's
    rules. The solid stands on the footprint's final `base` where it is known (finite): a roof whose
    lowest point is less than `solids.MIN_WALL_M` above it keeps the LoD1 box (`roof_below_base`);
    elsewhere it is checked over a provisional base 3 m under the lowest roof point (walls only get
    longer with the real base). Returns the roof columns, the packed partitions (b"" where the building
    keeps its LoD1 solid), the lowest roof height per footprint and the blobs for the tile writers:
    the packed solid (`solids.pack_solid`) where it was built over the final base, else the partition."""
    from pipeline.stages.buildings.solids import (
        MIN_WALL_M,
        SolidError,
        build_solid,
        check_solid,
        lowest_roof,
        pack_partition,
        pack_solid,
        roof_mean_height,
        roof_partition,
    )

    table = reconstruct_roofs(x, y, z, ptr, idx, geoms, params)
    cols = table.columns
    blobs: list[bytes] = []
    solids: list[bytes] = []
    low = np.full(len(table.fits), np.nan)
    bases = np.full(len(table.fits), np.nan) if base is None else np.asarray(base, dtype=np.float64)
    for k, (fit, g) in enumerate(zip(table.fits, np.asarray(geoms, dtype=object), strict=True)):
        if fit.fallback:
            blobs.append(b"")
            solids.append(b"")
            continue
        reason = ""
        final = bool(np.isfinite(bases[k]))
        solid = None
        try:
            part = roof_partition(fit, g)
            low[k] = lowest_roof(part)
            if final and low[k] < bases[k] + MIN_WALL_M:
                reason = "roof_below_base"
            else:
                # rings=False: the walls are trapezoids (build_solid refuses crossed ones), the roof
                # and ground rings GEOS-valid faces; the tests check the rings too
                solid = build_solid(part, bases[k] if final else low[k] - 3.0)
                errors = check_solid(solid, rings=False)
                if errors:
                    reason = f"invalid_solid: {errors[0]}"
        except SolidError as e:
            reason = f"invalid_solid: {e}"
        if reason:
            blobs.append(b"")
            solids.append(b"")
            cols["lod2_fallback_reason"][k] = reason
            cols["lod_source"][k] = "lod1_fallback"
            low[k] = np.nan
        else:
            blobs.append(pack_partition(part))
            solids.append(pack_solid(solid) if final and solid is not None else blobs[-1])
            cols["roof_mean_height"][k] = roof_mean_height(part)
    return cols, blobs, low, solids


ROOF_FIELDS = ("x", "y", "z", "classification", "return_number", "number_of_returns")


class RoofPointGatherer:
    """The roof points of every footprint of one point-cloud tile as a point product
    (`stages.point_products`), fed the tile's chunks in file order; `result()` is `tile_roof_points`'s:
    (x, y, z, ptr, idx, points dropped per footprint), x/y/z holding only the roof points gathered
    (memory: one chunk plus those), ptr/idx indexing them per footprint in file order within each
    footprint (the same as for the whole file at once), without the vegetation points (`params.ndvi`).
    Needs no base height: it can run before the heights are known (`tile_roofs` fits them)."""

    fields = ROOF_FIELDS

    def __init__(
        self,
        path: str,
        geoms: np.ndarray,
        height_params: Any,
        params: ReconstructParams,
        z_factor: float = 1.0,
        to_working: Any = None,
    ) -> None:
        from pipeline.stages.buildings.heights import ToWorking

        self.geoms = np.asarray(geoms, dtype=object)
        self.height_params, self.params = height_params, params
        self.working = ToWorking(path, z_factor, to_working)
        self.owners: list[np.ndarray] = []
        self.order: list[np.ndarray] = []
        self.xyz: list[np.ndarray] = []
        self.start = 0

    def add(self, pts: dict[str, np.ndarray]) -> None:
        pts = self.working(pts)
        ptr, idx = collect_roof_points(
            pts, self.geoms, self.params.shrink_m, self.height_params, self.params.single_returns
        )
        self.owners.append(np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)))
        self.order.append(idx + self.start)
        self.xyz.append(np.column_stack([pts["x"][idx], pts["y"][idx], pts["z"][idx]]))
        self.start += len(pts["x"])

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z, ptr, idx) of the roof points gathered, vegetation included."""
        owner = np.concatenate(self.owners) if self.owners else np.zeros(0, np.int64)
        gidx = np.concatenate(self.order) if self.order else np.zeros(0, np.int64)
        pos = np.concatenate(self.xyz) if self.xyz else np.zeros((0, 3))
        sort = np.lexsort((gidx, owner))
        pos = pos[sort]
        ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(self.geoms)))]).astype(np.int64)
        idx = np.arange(len(pos), dtype=np.int64)
        return pos[:, 0].copy(), pos[:, 1].copy(), pos[:, 2].copy(), ptr, idx

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x, y, z, ptr, idx = self.points()
        dropped = np.zeros(len(self.geoms), dtype=np.int64)
        if self.params.ndvi is not None:
            from pipeline.stages.buildings.rasters import ndvi_at_points

            f = self.params.ndvi
            nd = ndvi_at_points(
                x[idx], y[idx], [Path(p) for p in f.paths], f.red_band, f.nir_band, f.work_crs, f.raster_crs
            )
            ptr, idx, dropped = drop_vegetation(ptr, idx, nd, f.threshold, f.green_roof_share)
        return x, y, z, ptr, idx, dropped


def gather_roof_points(
    path: str,
    geoms: np.ndarray,
    height_params: Any,
    params: ReconstructParams,
    z_factor: float = 1.0,
    to_working: Any = None,
    chunk_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`RoofPointGatherer.points` of one point file read in chunks of `chunk_points` points."""
    from pipeline.stages.point_products import feed_points

    g = RoofPointGatherer(path, geoms, height_params, params, z_factor, to_working)
    feed_points(path, [g], chunk_points)
    return g.points()


def roof_points_of(
    path: str,
    wkb: list[bytes],
    height_params: Any,
    params: ReconstructParams,
    z_factor: float = 1.0,
    to_working: Any = None,
) -> RoofPointGatherer:
    """The `RoofPointGatherer` of the footprints given as WKB (the task arguments)."""
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    return RoofPointGatherer(path, geoms, height_params, params, z_factor, to_working)


def tile_roof_points(
    path: str,
    wkb: list[bytes],
    height_params: Any,
    params: ReconstructParams,
    z_factor: float = 1.0,
    to_working: Any = None,
    chunk_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`RoofPointGatherer` of one point-cloud tile alone, read in chunks of `chunk_points` points."""
    from pipeline.stages.point_products import point_product

    args = (wkb, height_params, params, z_factor, to_working)
    return point_product(path, roof_points_of, args, chunk_points)


def tile_roofs(
    points: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    wkb: list[bytes],
    complete: np.ndarray,
    params: ReconstructParams,
    base: np.ndarray | None = None,
) -> tuple[
    dict[str, np.ndarray],
    list[bytes],
    np.ndarray,
    tuple[np.ndarray, np.ndarray],
    np.ndarray,
    list[bytes],
]:
    """One point-cloud tile from its roof points (`tile_roof_points`): LoD2 roofs of the footprints it
    covers alone (`complete`; see `lod2_roofs`), for the others their roof points (CSR ptr, (n, 3) xyz)
    to merge with the neighbouring tiles' points, per footprint the points dropped as vegetation, and
    the blobs for the tile writers (`lod2_roofs`; `base`: the footprints' final base heights)."""
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    x, y, z, ptr, idx, dropped = points
    done = np.flatnonzero(complete)
    rest = np.flatnonzero(~np.asarray(complete, dtype=bool))
    dptr, didx = _csr_take(ptr, idx, done)
    cols, blobs, low, solids = lod2_roofs(
        x, y, z, dptr, didx, geoms[done], params, None if base is None else np.asarray(base)[done]
    )
    cols["roof_n_vegetation"] = dropped[done]
    rptr, ridx = _csr_take(ptr, idx, rest)
    return cols, blobs, low, (rptr, np.column_stack([x[ridx], y[ridx], z[ridx]])), dropped, solids


def _csr_take(ptr: np.ndarray, vals: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lens = ptr[sel + 1] - ptr[sel]
    out = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    take = np.repeat(ptr[sel] - out[:-1], lens) + np.arange(out[-1])
    return out, vals[take]
