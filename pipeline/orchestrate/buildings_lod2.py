"""LoD2 roofs for the buildings layer: one task per point-cloud tile of the newest epoch
(`stages.buildings.reconstruct.tile_roofs`: roof points -> roof fit -> roof partition checked as a solid);
footprints on tile edges get their points merged here and are fitted in this process.

`reconstruct_lod2(ctx, geoms, epoch, height_params, base, spill)` returns `Lod2Result`: the roof
attribute columns (`reconstruct.ROOF_COLUMNS`) and one packed roof partition and solid per footprint
(b"" = LoD1 box), which `write_tiles` and `write_cityjson` hand to their tile tasks. The packed roofs are
not kept in this process: they go to spill files under `spill` (`orchestrate.blobs.BlobStore`) as the
tasks return them. A building whose lowest roof point is less than `solids.MIN_WALL_M` above its final
base keeps its LoD1 box (`roof_below_base`).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.model import BuildContext
from pipeline.orchestrate.blobs import BlobStore
from pipeline.stages.buildings.reconstruct import (
    ROOF_COLUMNS,
    NdviFilter,
    ReconstructParams,
    lod2_roofs,
    roof_points_of,
    tile_roofs,
)
from pipeline.stages.buildings.roofs import RoofParams
from pipeline.stages.buildings.solids import MIN_WALL_M
from pipeline.stages.point_products import point_product

if TYPE_CHECKING:
    from pipeline.orchestrate.cache import CachedCall


@dataclass
class Lod2Result:
    columns: dict[str, np.ndarray]
    partitions: BlobStore
    # per building what the tile and CityJSON writers take: the packed solid over its final base
    # (built once, by the LoD2 task), a packed partition, or b"" (LoD1 box)
    solids: BlobStore

    def stats(self) -> dict[str, Any]:
        src = self.columns["lod_source"]
        types = self.columns["roof_type"]
        reasons = [r.split(":")[0] for r in self.columns["lod2_fallback_reason"] if r]
        return {
            "lod2": int(self.partitions.nonempty().sum()),
            "lod1_fallback": int(np.sum(src == "lod1_fallback")),
            "roof_types": {str(t): int(np.sum(types == t)) for t in sorted(set(types.tolist())) if t},
            "fallback_reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
            "vegetation_points_dropped": int(self.columns["roof_n_vegetation"].sum()),
        }


def reconstruct_params(layer: Any, ndvi: NdviFilter | None = None) -> ReconstructParams:
    return ReconstructParams(
        shrink_m=layer.lod2_shrink_m,
        roof=RoofParams(min_points=layer.lod2_min_points, max_rmse_m=layer.lod2_max_rmse_m),
        single_returns=layer.lod2_single_returns,
        ndvi=ndvi,
    )


def ndvi_filter(ctx: BuildContext, quiet: bool = False) -> tuple[NdviFilter | None, list[Any]]:
    """The vegetation filter of the roof points when `lod2_ndvi_filter` is on and the orthophoto has a
    near-infrared band (else None, with the reason as a warning when an orthophoto is configured), and
    the orthophoto's tiles (`RasterInfo`: a task's key names the tiles its points can lie in)."""
    cfg = ctx.cfg
    layer = cfg.layers.buildings
    if not layer.lod2_ndvi_filter or cfg.sources.orthophoto is None:
        return None, []
    inputs = ctx.inputs_for("orthophoto")
    if not inputs:
        return None, []
    from pipeline.sources.rasters import orthophoto_bands, scan_rasters

    bands = orthophoto_bands(cfg.sources.orthophoto.bands)
    infos = scan_rasters(
        [i.path for i in inputs], working_crs=cfg.crs.horizontal, crs_override=cfg.sources.orthophoto.crs
    )
    if max(i.count for i in infos) < bands["nir"]:
        if not quiet:
            ctx.warn(
                "buildings: the orthophoto has no near-infrared band: LoD2 roof points not filtered by NDVI"
            )
        return None, []
    f = NdviFilter(
        paths=tuple(str(i.path) for i in inputs),
        red_band=bands["red"],
        nir_band=bands["nir"],
        threshold=layer.ndvi_threshold,
        green_roof_share=layer.lod2_green_roof_share,
        work_crs=cfg.crs.horizontal,
        raster_crs=cfg.sources.orthophoto.crs,
    )
    return f, infos


def _empty_columns(n: int) -> dict[str, np.ndarray]:
    from pipeline.stages.buildings.reconstruct import INT_COLUMNS, STR_COLUMNS

    out: dict[str, np.ndarray] = {}
    for key in ROOF_COLUMNS:
        if key in INT_COLUMNS:
            out[key] = np.zeros(n, dtype=np.int64)
        elif key in STR_COLUMNS:
            out[key] = np.full(n, "", dtype=object)
        else:
            out[key] = np.full(n, np.nan)
    out["lod_source"][:] = "lod1_fallback"
    out["lod2_fallback_reason"][:] = "no_points"
    return out


@dataclass
class RoofPointJobs:
    """The LoD2 tasks of one epoch's point-cloud tiles: per tile the footprints it touches (`idx`), their
    WKB and which of them it covers alone (`complete`), and the cached call gathering their roof points
    (`reconstruct.RoofPointGatherer`); how many tiles touch each footprint."""

    jobs: list[tuple[np.ndarray, list[bytes], np.ndarray]]
    points: list[CachedCall]
    ntouch: np.ndarray


def roof_point_jobs(
    ctx: BuildContext,
    geoms: np.ndarray,
    epoch: Any,
    height_params: Any,
    params: ReconstructParams,
    ndvi_tiles: list[Any],
) -> RoofPointJobs:
    from pipeline.orchestrate.buildings import _point_files
    from pipeline.orchestrate.cache import input_sha256

    n = len(geoms)
    files = _point_files(ctx, epoch) if epoch is not None else []
    jobs: list[tuple[np.ndarray, list[bytes], np.ndarray]] = []
    calls: list[CachedCall] = []
    ntouch = np.zeros(n, dtype=np.int64)
    if not (n and files):
        return RoofPointJobs(jobs, calls, ntouch)
    fb = np.array([f[1] for f in files], dtype=np.float64).reshape(-1, 4)
    tree = shapely.STRtree(shapely.box(fb[:, 0], fb[:, 1], fb[:, 2], fb[:, 3]))
    qi, fi = tree.query(np.asarray(geoms, dtype=object), predicate="intersects")
    order = np.lexsort((qi, fi))
    qi, fi = qi[order], fi[order]
    ntouch = np.bincount(qi, minlength=n)
    bounds = np.searchsorted(fi, np.arange(len(files) + 1))
    wkb = shapely.to_wkb(np.asarray(geoms, dtype=object))
    # each tile read in chunks sized by the worker's memory budget (the roofs do not depend on it)
    from pipeline.config.sizes import parse_size
    from pipeline.sources.pointcloud.reader import chunk_points_for

    chunk = {"chunk_points": chunk_points_for(parse_size(ctx.cfg.runtime.memory))}
    from pipeline.sources.rasters import TileIndex

    ndvi_index = TileIndex(ndvi_tiles, ctx.cfg.crs.horizontal)
    for k, (path, box, zf, to_working) in enumerate(files):
        idx = qi[bounds[k] : bounds[k + 1]]
        if idx.size == 0:
            continue
        w = [bytes(b) for b in wkb[idx]]
        file_params = params
        touch = ndvi_index.covering(box)
        if params.ndvi is not None:  # only the orthophoto tiles its points can lie in: named in the key
            ndvi = dataclasses.replace(params.ndvi, paths=tuple(str(i.path) for i in touch))
            file_params = dataclasses.replace(params, ndvi=ndvi)
        args = (path, w, height_params, file_params, zf, to_working)
        jobs.append((idx, w, ntouch[idx] == 1))
        calls.append(
            (
                [
                    "buildings-lod2-points-v2",
                    input_sha256(ctx, path),
                    [input_sha256(ctx, i.path) for i in touch],
                    *args[1:],
                ],
                point_product,
                (path, roof_points_of, args[1:]),
                chunk,
            )
        )
    return RoofPointJobs(jobs, calls, ntouch)


def _fit_tile(
    cache: Any,
    points_key: str,
    points_call: CachedCall,
    wkb: list[bytes],
    complete: np.ndarray,
    params: ReconstructParams,
    base: np.ndarray,
) -> Any:
    """Task: one tile's roofs (`reconstruct.tile_roofs`) from its roof points in the build cache
    (gathered again if they are not there)."""
    _kp, fn, args, kwargs = points_call
    points = cache.call_key(points_key, fn, *args, **kwargs)
    return tile_roofs(points, wkb, complete, params, base)


def roof_point_calls(
    ctx: BuildContext, geoms: np.ndarray, epoch: Any, height_params: Any
) -> list[CachedCall]:
    """The cached calls (point products) of the roof points of `geoms` (the footprints
    `reconstruct_lod2` will fit) of every tile of `epoch`: they need no heights, so they are made beside
    the height tasks (`orchestrate.point_products.fill_once`) and `reconstruct_lod2` then only fits."""
    ndvi, ndvi_tiles = ndvi_filter(ctx, quiet=True)
    params = reconstruct_params(ctx.cfg.layers.buildings, ndvi)
    return roof_point_jobs(ctx, geoms, epoch, height_params, params, ndvi_tiles).points


def reconstruct_lod2(
    ctx: BuildContext,
    geoms: np.ndarray,
    epoch: Any,
    height_params: Any,
    base: np.ndarray,
    spill: Path,
    oids: np.ndarray | None = None,
) -> Lod2Result:
    """`spill`: a folder of this build for the packed roofs and solids (`BlobStore` files)."""
    from pipeline.orchestrate.cache import build_cache, run_cached

    layer = ctx.cfg.layers.buildings
    ndvi, ndvi_tiles = ndvi_filter(ctx)
    params = reconstruct_params(layer, ndvi)
    n = len(geoms)
    vegetation = np.zeros(n, dtype=np.int64)
    cols = _empty_columns(n)
    folder = Path(tempfile.mkdtemp(prefix="lod2-", dir=spill))
    parts = BlobStore(folder / "partitions.bin", n)
    solids = BlobStore(folder / "solids.bin", n)
    low = np.full(n, np.nan)
    base = np.asarray(base, dtype=np.float64)
    rp = roof_point_jobs(ctx, geoms, epoch, height_params, params, ndvi_tiles)
    ntouch = rp.ntouch
    if rp.jobs:
        jobs = rp.jobs
        # the edge footprints' points by task (concatenated in task order, whatever order they arrive in)
        edge_ids: dict[int, np.ndarray] = {}
        edge_xyz: dict[int, np.ndarray] = {}

        def take(j: int, result: Any) -> None:  # one tile's roofs, as it arrives: the packed ones spilled
            idx, _wkb, complete = jobs[j]
            c, blobs, lo, (rptr, rxyz), veg, sol = result
            np.add.at(vegetation, idx, veg)
            done = idx[complete]
            for key, v in c.items():
                cols[key][done] = v
            for i, b, sb in zip(done.tolist(), blobs, sol, strict=True):
                parts[i] = b
                solids[i] = sb
            low[done] = lo
            rest = idx[~complete]
            edge_ids[j] = np.repeat(rest, np.diff(rptr))
            edge_xyz[j] = rxyz

        # one task per tile: its roof points from the build cache (`roof_point_calls`), then the fit
        cache = build_cache(ctx)
        calls: list[CachedCall] = []
        for (idx, wkb, complete), pcall in zip(jobs, rp.points, strict=True):
            pkey = cache.key(pcall[0])
            b = base[idx]
            calls.append(
                (
                    ["buildings-lod2-tile-v3", pkey, complete, params, b],
                    _fit_tile,
                    (cache, pkey, pcall, wkb, complete, params, b),
                    {},
                )
            )
        run_cached(ctx, calls, "lod2-tiles", on_result=take)
        multi = np.flatnonzero(ntouch > 1)
        if multi.size:  # footprints on tile edges: their points from every tile, fitted here
            owner = np.concatenate([edge_ids[j] for j in sorted(edge_ids)] or [np.zeros(0, dtype=np.int64)])
            xyz = np.concatenate([edge_xyz[j] for j in sorted(edge_xyz)] or [np.zeros((0, 3))])
            o = np.argsort(owner, kind="stable")
            owner, xyz = owner[o], xyz[o]
            starts = np.searchsorted(owner, multi)
            ends = np.searchsorted(owner, multi, side="right")
            sel = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
            mptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
            c, blobs, lo, sol = lod2_roofs(
                xyz[sel, 0],
                xyz[sel, 1],
                xyz[sel, 2],
                mptr,
                np.arange(mptr[-1]),
                np.asarray(geoms)[multi],
                params,
                base[multi],
            )
            for key, v in c.items():
                cols[key][multi] = v
            for i, b, sb in zip(multi.tolist(), blobs, sol, strict=True):
                parts[i] = b
                solids[i] = sb
            low[multi] = lo
    cols["roof_n_vegetation"] = vegetation
    if layer.lod2_source == "official":
        if oids is None:
            raise ValueError("reconstruct_lod2: lod2_source official needs the footprints' oids")
        _official(ctx, geoms, oids, cols, parts, solids, low, base)
    # the final base: the roof must stand MIN_WALL_M above it
    below = np.flatnonzero(np.isfinite(low) & (low < base + MIN_WALL_M))
    for i in below.tolist():
        parts[i] = b""
        solids[i] = b""
        cols["lod2_fallback_reason"][i] = "roof_below_base"
        cols["lod_source"][i] = "lod1_fallback"
    return Lod2Result(cols, parts, solids)


def _official(
    ctx: BuildContext,
    geoms: np.ndarray,
    oids: np.ndarray,
    cols: dict[str, np.ndarray],
    parts: BlobStore,
    solids: BlobStore,
    low: np.ndarray,
    base: np.ndarray,
) -> None:
    """Buildings joined to the official LoD2 model take its roof (in place: columns, partitions,
    lowest roof points)."""
    import geopandas as gpd

    from pipeline.sources.cadastre.citygml import read_lod2
    from pipeline.stages.buildings.lod2 import join_lod2
    from pipeline.stages.buildings.solids import (
        SolidError,
        build_solid,
        check_solid,
        lowest_roof,
        official_partition,
        official_roof_columns,
        pack_partition,
        pack_solid,
        roof_mean_height,
    )

    files = [i.path for i in ctx.inputs_for("reference")]
    if not files:
        ctx.warn("layers.buildings.lod2_source official but sources.reference_citygml has no files")
        return
    layer = ctx.cfg.layers.buildings
    model = read_lod2(files, crs_cfg=ctx.cfg.crs)
    fp = gpd.GeoDataFrame({"oid": oids}, geometry=list(geoms), crs=model.objects.crs)
    joined = join_lod2(fp, model.buildings, layer.lod2_join_min_iou)
    roofs = model.surfaces[model.surfaces["semantic"].to_numpy() == "roof"]
    by_building = {k: list(g.geometry) for k, g in roofs.groupby("building_oid", sort=True)}
    types = dict(zip(model.buildings["oid"], model.buildings["roof_type"], strict=True))
    for i, lod2_oid in enumerate(joined["lod2_oid"].tolist()):
        if not lod2_oid or lod2_oid not in by_building:
            continue
        polys = by_building[lod2_oid]
        try:
            part = official_partition(polys, geoms[i])
            lo = lowest_roof(part)
            final = bool(np.isfinite(base[i]) and lo >= base[i] + MIN_WALL_M)
            solid = build_solid(part, base[i] if final else lo - 3.0)
            if check_solid(solid, rings=False):
                continue  # keeps the reconstruction
        except SolidError:
            continue
        row = official_roof_columns(polys, types.get(lod2_oid))
        for key, v in row.items():
            cols[key][i] = v
        cols["roof_mean_height"][i] = roof_mean_height(part)
        cols["lod2_fallback_reason"][i] = ""
        cols["lod_source"][i] = "official"
        parts[i] = pack_partition(part)
        solids[i] = pack_solid(solid) if final else parts[i]
        low[i] = lo


def add_roof_columns(bt: Any, lod2: Lod2Result) -> Any:
    """The buildings table with the roof columns (before the geometry column)."""
    out = bt.copy()
    for key in ROOF_COLUMNS:
        v = lod2.columns[key]
        out[key] = [str(s) for s in v] if v.dtype == object else v
    return out


def lod2_units(
    ctx: BuildContext, geoms: np.ndarray, parts: Any
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The units `reconstruct_lod2_parts` fits first: every Bauteil with a roof of its own clipped to its
    host building, and the rest of each footprint (`parts.split_units`). Returns (units, host building
    per Bauteil (-1: none or no roof of its own), Bauteil geometries, Bauteile with a roof of their own,
    the Bauteile in no footprint)."""
    from pipeline.stages.buildings.parts import assign_parts, roof_parts, split_units

    geoms = np.asarray(geoms, dtype=object)
    pgeoms = np.asarray(parts.geometry.values, dtype=object)
    keys = parts["gfkzshh"].to_numpy() if "gfkzshh" in parts else np.full(len(parts), "", dtype=object)
    with_roof = roof_parts(keys, ctx.cfg.layers.buildings.lod2_part_bauarten)
    host = assign_parts(geoms, pgeoms)
    outside = np.flatnonzero(host < 0)
    host[~with_roof] = -1  # a Bauteil without a roof of its own stays under its building's roof
    return split_units(geoms, pgeoms, host), host, pgeoms, with_roof, outside


def reconstruct_lod2_parts(
    ctx: BuildContext,
    geoms: np.ndarray,
    oids: np.ndarray,
    parts: Any,
    epoch: Any,
    height_params: Any,
    base: np.ndarray,
    spill: Path,
) -> tuple[Lod2Result, Any]:
    """LoD2 roofs per building part (`layers.buildings.lod2_parts`): the footprints split into units
    (`stages.buildings.parts`: every Bauteil clipped to its host building, and the rest), one roof fit
    per unit, the units' roofs merged into the building's roof (`solids.merge_partitions`) and checked
    as one solid over the building's base. Only Bauteile whose bauart is in `lod2_part_bauarten` become
    units; a part unit with too few roof points joins the rest of its footprint, a rest with too few
    joins a part (`parts.join_parts`; the building is split again and refitted). A building with a unit still without a roof keeps its LoD1 box
    (`part_without_roof: <reason>`). Returns the buildings' Lod2Result and the units' table (layer
    `building_parts`: building oid, part oid ('' = the rest of the footprint), part function key,
    the unit's roof columns, unit footprint)."""
    import geopandas as gpd

    from pipeline.stages.buildings.parts import Units, join_parts, split_units, units_to_join
    from pipeline.stages.buildings.solids import (
        SolidError,
        build_solid,
        check_solid,
        lowest_roof,
        merge_partitions,
        pack_partition,
        pack_solid,
        roof_mean_height,
        unpack_partition,
    )

    geoms = np.asarray(geoms, dtype=object)
    units, host, pgeoms, with_roof, outside = lod2_units(ctx, geoms, parts)
    for j in outside.tolist():
        ctx.warn(f"buildings: Bauteil {parts['oid'].iloc[j]} lies in no building footprint: left out")
    res = reconstruct_lod2(ctx, units.geoms, epoch, height_params, base[units.building], spill)
    # a unit with too few (or no) roof points joins its neighbours (a part the rest of the footprint,
    # the rest a part): those buildings are split again and refitted
    failed = units_to_join(res.columns["lod2_fallback_reason"], units, len(geoms))
    joined = int(failed.sum())
    if joined:
        host, absorb = join_parts(host, units, failed, np.zeros(len(geoms), dtype=bool))
        redo = np.unique(units.building[failed])
        sub = np.full(len(geoms), -1, dtype=np.int64)
        sub[redo] = np.arange(redo.size)
        sub_host = np.where(host >= 0, sub[np.maximum(host, 0)], -1)
        again = split_units(geoms[redo], pgeoms, sub_host, absorb=absorb[redo])
        res2 = reconstruct_lod2(ctx, again.geoms, epoch, height_params, base[redo][again.building], spill)
        keep = np.flatnonzero(~np.isin(units.building, redo))
        ub = np.concatenate([units.building[keep], redo[again.building]])
        order = np.argsort(ub, kind="stable")
        units = Units(
            np.concatenate([units.geoms[keep], again.geoms])[order],
            ub[order],
            np.concatenate([units.part[keep], again.part])[order],
        )
        src = [(res, int(k)) for k in keep] + [(res2, k) for k in range(len(res2.partitions))]
        folder = Path(tempfile.mkdtemp(prefix="units-", dir=spill))
        res = Lod2Result(
            {k: np.concatenate([v[keep], res2.columns[k]])[order] for k, v in res.columns.items()},
            BlobStore.of(
                folder / "partitions.bin", (src[o][0].partitions[src[o][1]] for o in order), len(order)
            ),
            BlobStore.of(folder / "solids.bin", (src[o][0].solids[src[o][1]] for o in order), len(order)),
        )
    n = len(geoms)
    cols = _empty_columns(n)
    folder = Path(tempfile.mkdtemp(prefix="buildings-", dir=spill))
    out_parts = BlobStore(folder / "partitions.bin", n)
    out_solids = BlobStore(folder / "solids.bin", n)
    starts = np.searchsorted(units.building, np.arange(n))
    ends = np.searchsorted(units.building, np.arange(n), side="right")
    for i in range(n):
        u = np.arange(starts[i], ends[i])
        if u.size == 1:  # no parts: the unit is the building
            k = int(u[0])
            for key in cols:
                cols[key][i] = res.columns[key][k]
            out_parts[i], out_solids[i] = res.partitions[k], res.solids[k]
            continue
        big = int(u[np.argmax(shapely.area(units.geoms[u]))])
        for key in cols:
            cols[key][i] = res.columns[key][big]
        missing = [int(k) for k in u if not res.partitions.lengths[k]]
        if missing:
            cols["lod2_fallback_reason"][i] = (
                f"part_without_roof: {res.columns['lod2_fallback_reason'][missing[0]]}"
            )
            cols["lod_source"][i] = "lod1_fallback"
            continue
        try:
            merged = merge_partitions([unpack_partition(res.partitions[int(k)]) for k in u])
            if lowest_roof(merged) < base[i] + MIN_WALL_M:
                raise SolidError("roof below the base")
            solid = build_solid(merged, float(base[i]))
            errors = check_solid(solid, rings=False)
            if errors:
                raise SolidError(errors[0])
        except SolidError as e:
            cols["lod2_fallback_reason"][i] = f"invalid_solid: {e}"
            cols["lod_source"][i] = "lod1_fallback"
            continue
        types = sorted({str(res.columns["roof_type"][k]) for k in u})
        cols["roof_type"][i] = types[0] if len(types) == 1 else "multi"
        cols["roof_type_code"][i] = res.columns["roof_type_code"][big] if len(types) == 1 else "5000"
        cols["roof_planes"][i] = int(sum(res.columns["roof_planes"][k] for k in u))
        cols["roof_planes_summary"][i] = ";".join(str(res.columns["roof_planes_summary"][k]) for k in u)
        cols["eave_height"][i] = float(np.min(res.columns["eave_height"][u]))
        cols["ridge_height"][i] = float(np.max(res.columns["ridge_height"][u]))
        cols["roof_rmse"][i] = float(np.max(res.columns["roof_rmse"][u]))
        cols["roof_n_points"][i] = int(np.sum(res.columns["roof_n_points"][u]))
        cols["roof_n_vegetation"][i] = int(np.sum(res.columns["roof_n_vegetation"][u]))
        cols["roof_mean_height"][i] = roof_mean_height(merged)
        cols["lod2_fallback_reason"][i] = ""
        cols["lod_source"][i] = "reconstructed"
        out_parts[i], out_solids[i] = pack_partition(merged), pack_solid(solid)
    has_parts = np.bincount(units.building, minlength=n) > 1
    rows = np.flatnonzero(has_parts[units.building])
    pidx = units.part[rows]
    table: dict[str, Any] = {
        "building_oid": [str(oids[b]) for b in units.building[rows]],
        "part_oid": [str(parts["oid"].iloc[j]) if j >= 0 else "" for j in pidx],
        "part_gfkzshh": [
            str(parts["gfkzshh"].iloc[j] or "") if j >= 0 and "gfkzshh" in parts else "" for j in pidx
        ],
    }
    for key in ROOF_COLUMNS:
        v = res.columns[key][rows]
        table[key] = [str(s) for s in v] if v.dtype == object else v
    units_gdf = gpd.GeoDataFrame(table, geometry=list(units.geoms[rows]), crs=parts.crs)
    units_gdf.attrs["bauteile_with_roof"] = int(with_roof.sum())
    units_gdf.attrs["parts_joined"] = joined
    return Lod2Result(cols, out_parts, out_solids), units_gdf
