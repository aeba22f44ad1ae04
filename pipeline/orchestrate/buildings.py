"""Buildings layer: cadastre footprints + point-cloud heights -> LoD1 3D Tiles + GeoPackage.

Plan (cheap, in this process): read and repair the footprints, read the point-cloud headers, assign every
footprint to the point-cloud tiles its ground ring touches. Execute (Dask when `ctx.client` is set): one
task per point-cloud tile and epoch computes the statistics of the footprints that tile covers alone and
returns raw samples of those on a tile edge (merged here); one task per building tile writes its GLB/b3dm.

Memory of this process: the per-building tables (footprints, heights, attributes); the LoD2 roofs and
solids go to a spill file as the tasks return them (`orchestrate.blobs`), the tile and CityJSON tasks are
fed a few at a time (`map_ordered(window=...)`) and read their roofs from the spill themselves, and the
GeoPackage's roof faces are made in batches and written from WKB.

Outputs in `<release>/buildings/`: tileset.json (+ tileset_<L>_<X>_<Y>.json external subtrees),
tiles/<L>/<X>_<Y>.glb|.b3dm, style.json, buildings.gpkg (layer `buildings`), rejected.csv and, when
`sources.reference_citygml` is set, reference_comparison.csv.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.config.model import BuildingsLayer, TwinConfig
from pipeline.errors import ConfigError, CrsError
from pipeline.model import BuildContext, LayerResult
from pipeline.orchestrate.blobs import BlobRef, BlobStore
from pipeline.orchestrate.executor import build_executor, dask_workers, map_ordered
from pipeline.sources.cadastre import (
    FootprintFilter,
    FootprintTable,
    Rejected,
    function_code,
    function_group,
    read_footprints,
    read_parcels,
    read_reference_citygml,
)
from pipeline.sources.cadastre.structures import apply_structure_rules
from pipeline.stages.buildings.attributes import AttributeParams, finalize_heights
from pipeline.stages.buildings.content import write_building_tile
from pipeline.stages.buildings.heights import (
    FootprintZones,
    HeightParams,
    HeightSampler,
    Samples,
    footprint_zones,
    merge_samples,
    summarise,
)
from pipeline.stages.buildings.tiling import QuadNode, build_quadtree, tileset_tree
from pipeline.stages.point_products import point_product
from pipeline.tiles.tileset import asset, box_from_bounds, schema_errors, write_atomic, write_json

if TYPE_CHECKING:
    from pipeline.orchestrate.cache import CachedCall

OUT = "buildings"

DESCRIPTIONS = {
    "oid": "ALKIS object id",
    "flstkennz": "key of the parcel containing the building's representative point",
    "funktion": "ALKIS building function (text)",
    "gfkzshh": "ALKIS building function key",
    "funktion_code": "ALKIS building function code (0 = unknown)",
    "funktion_gruppe": "function group used by the default style",
    "roof_height": "roof height in the working height system (crs.vertical) [m]",
    "base_height": "base (ground) height in the working height system (crs.vertical) [m]",
    "height": "roof_height - base_height [m]",
    "n_points": "roof points used",
    "density": "roof points per m2",
    "survey_epoch": "epoch of the point cloud the height comes from",
    "floors_estimate": "floors above ground",
    "floors_is_estimate": "true when floors_estimate = height / floor height (not from ALKIS)",
    "quality": "ok | vegetation_suspected | fallback_floors | fallback_default",
    "flags": "all quality flags, '|'-separated",
    "base_source": "ring (ground points) | dgm | guessed",
    "repair": "footprint geometry repaired: made_valid | parts_removed (slivers) | '' (as delivered)",
}


def height_params(layer: BuildingsLayer, scheme: str, scale: float = 1.0) -> HeightParams:
    """`scale`: map units per metre on the ground (`crs.map_units_per_metre`): shrink and ring widths are
    metres on the ground, so heights do not depend on the working CRS (UTM 33 at 7 degrees E stretches
    distances by 0.4 %)."""
    if scheme not in layer.roof_classes or scheme not in layer.ground_classes:
        from pipeline.errors import ConfigError

        raise ConfigError(f"layers.buildings: no roof/ground classes configured for class scheme {scheme!r}")
    return HeightParams(
        roof_percentile=layer.roof_percentile,
        stats_percentiles=tuple(layer.stats_percentiles),
        ground_percentile=layer.ground_percentile,
        shrink_m=layer.shrink_m * scale,
        ground_ring_m=layer.ground_ring_m * scale,
        min_points=layer.min_points,
        roof_classes=tuple(layer.roof_classes[scheme]),
        ground_classes=tuple(layer.ground_classes[scheme]),
        first_returns_only=layer.first_returns_only,
        roof_statistic=layer.roof_statistic,
    )


# ------------------------------------------------------------------------------------------ inputs


def parts_enabled(layer: BuildingsLayer) -> bool:
    return layer.lod2_parts and layer.lod == 2 and layer.lod2_source == "points"


def split_bauteile(table: FootprintTable) -> tuple[FootprintTable, gpd.GeoDataFrame]:
    """The Bauteil records (gebnutzbez "Bauteil") out of the footprint table: (buildings, parts)."""
    g = table.gdf
    is_part = np.array([str(v or "").strip().lower() == "bauteil" for v in g["gebnutzbez"]], dtype=bool)
    rest = g[~is_part].reset_index(drop=True)
    return FootprintTable(rest, table.rejected), g[is_part].reset_index(drop=True)


def read_cadastre(cfg: TwinConfig, files: list[Path]) -> tuple[FootprintTable, gpd.GeoDataFrame]:
    src = cfg.sources.cadastre
    if src is None:
        raise ConfigError("the buildings layer needs sources.cadastre")
    layer = cfg.layers.buildings
    flt = FootprintFilter(
        skip_bauteil=layer.skip_bauteil,
        keep_bauarten=tuple(layer.lod2_part_bauarten) if parts_enabled(layer) else (),
        skip_underground=layer.skip_underground,
        min_area_m2=layer.min_area_m2,
    )
    fmt = "nas" if src.format == "nas" else ("generic" if src.format == "generic" else "alkis_gpkg")
    work = cfg.crs.horizontal  # footprints and parcels are transformed into the working CRS
    table = read_footprints(
        files,
        fmt,
        flt=flt,
        layer=src.layer,
        columns=dict(src.columns),
        crs=src.crs,
        target_crs=work,
        crs_cfg=cfg.crs,
    )
    table = apply_structure_rules(table, layer.non_building_functions)
    parcels = read_parcels(files, fmt, layer=src.parcel_layer, crs=src.crs, target_crs=work)
    return table, parcels


def parcel_keys(footprints: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame) -> np.ndarray:
    """flstkennz of the parcel containing each footprint's representative point ('' when none)."""
    keys = np.full(len(footprints), "", dtype=object)
    if len(parcels) == 0 or len(footprints) == 0:
        return keys
    pts = shapely.point_on_surface(np.asarray(footprints.geometry.values, dtype=object))
    pg = np.asarray(parcels.geometry.values, dtype=object)
    tree = shapely.STRtree(pg)
    qi, pi = tree.query(pts, predicate="within")
    order = np.lexsort((pi, qi))  # deterministic: lowest parcel index wins on overlaps
    qi, pi = qi[order], pi[order]
    first = np.ones(len(qi), dtype=bool)
    first[1:] = qi[1:] != qi[:-1]
    pkeys = parcels["flstkennz"].to_numpy()
    keys[qi[first]] = [k if k is not None else "" for k in pkeys[pi[first]]]
    return keys


PointFile = tuple[str, tuple[float, float, float, float], float, Any]


def _point_files(ctx: BuildContext, epoch: Any) -> list[PointFile]:
    """(path, xy bounds in the working CRS, z factor, transform) of one epoch's point files. Files in
    another CRS than the working CRS (e.g. UTM 33 tiles in a UTM 32 project, or ellipsoidal heights in a
    project with normal heights) carry (their CRS as WKT, the CRS config): the height task transforms
    their points into the working CRS."""
    from pipeline.crs import same_crs, working_crs
    from pipeline.sources.pointcloud.crs import resolve_file_crs
    from pipeline.sources.pointcloud.reader import read_header

    work = working_crs(ctx.cfg.crs)
    out: list[PointFile] = []
    for inp in ctx.inputs_for(f"aerial:{epoch.epoch}"):
        info = read_header(inp.path)
        fc = resolve_file_crs(info, epoch.crs, ctx.cfg.crs)
        bounds = (info.mins[0], info.mins[1], info.maxs[0], info.maxs[1])
        if same_crs(fc.crs, work):
            out.append((str(inp.path), bounds, fc.z_factor, None))
            continue
        from pyproj import Transformer

        from pipeline.crs import horizontal_of

        t = Transformer.from_crs(horizontal_of(fc.crs), horizontal_of(work), always_xy=True)
        wb = t.transform_bounds(*bounds, densify_pts=21)
        if not all(np.isfinite(wb)):
            raise CrsError(
                f"the file's extent cannot be transformed from {fc.crs.name} to the working CRS {work.name}",
                path=inp.path,
            )
        wb4 = (float(wb[0]), float(wb[1]), float(wb[2]), float(wb[3]))
        out.append((str(inp.path), wb4, fc.z_factor, (fc.crs.to_wkt(), ctx.cfg.crs)))
    return out


# ------------------------------------------------------------------------------------------ heights


@dataclass
class EpochPlan:
    """The height tasks of one epoch: one cached call per point-cloud tile (`tile_stats`) with the
    footprints it touches (`jobs`: their indices), and how many tiles touch each footprint."""

    zones: FootprintZones
    params: HeightParams
    jobs: list[tuple[np.ndarray, tuple[Any, ...]]]
    calls: list[CachedCall]
    ntouch: np.ndarray


def epoch_plan(
    ctx: BuildContext, files: list[PointFile], zones: FootprintZones, params: HeightParams
) -> EpochPlan:
    """The tasks of one epoch's point statistics (one per point-cloud tile; `epoch_stats` assembles
    their results)."""
    n = len(zones.roof_area)
    ring_bbox = zones.ring.bbox
    fb = np.array([f[1] for f in files], dtype=np.float64).reshape(-1, 4)
    # which files can hold points of each footprint's zones (ring bbox overlaps file bounds)
    qi = fi = np.zeros(0, dtype=np.int64)
    if files and n:
        tree = shapely.STRtree(shapely.box(fb[:, 0], fb[:, 1], fb[:, 2], fb[:, 3]))
        qi, fi = tree.query(shapely.box(ring_bbox[:, 0], ring_bbox[:, 1], ring_bbox[:, 2], ring_bbox[:, 3]))
        order = np.lexsort((qi, fi))
        qi, fi = qi[order], fi[order]
    ntouch = np.bincount(qi, minlength=n)
    bounds = np.searchsorted(fi, np.arange(len(files) + 1))
    from pipeline.orchestrate.cache import input_sha256

    jobs: list[tuple[np.ndarray, tuple[Any, ...]]] = []
    for k, (path, _b, zf, to_working) in enumerate(files):
        idx = qi[bounds[k] : bounds[k + 1]]
        if idx.size == 0:
            continue
        args = (path, zones.subset(idx, with_geoms=False), ntouch[idx] == 1, params, zf)
        jobs.append((idx, args if to_working is None else (*args, to_working)))
    # incremental: one tile's statistics are cached by the LAZ sha256 + the zones of its footprints; the
    # tile is read in chunks sized by the worker's memory budget (the statistics do not depend on it)
    from pipeline.config.sizes import parse_size
    from pipeline.sources.pointcloud.reader import chunk_points_for

    chunk = {"chunk_points": chunk_points_for(parse_size(ctx.cfg.runtime.memory))}
    calls: list[CachedCall] = [
        (
            ["buildings-tile-stats-v2", input_sha256(ctx, args[0]), *args[1:]],
            point_product,
            (args[0], HeightSampler, args[1:]),
            chunk,
        )
        for _idx, args in jobs
    ]
    return EpochPlan(zones, params, jobs, calls, ntouch)


def epoch_stats(plan: EpochPlan, results: list[Any]) -> pd.DataFrame:
    """Point statistics of every footprint for one epoch from the results of its `plan.calls`:
    footprints on tile edges get the samples of every tile they touch merged here."""
    zones, params, ntouch = plan.zones, plan.params, plan.ntouch
    n = len(zones.roof_area)
    cols: dict[str, np.ndarray] = {}
    part_ids: list[np.ndarray] = []
    parts: list[Samples] = []
    for (idx, args), (stats, rest) in zip(plan.jobs, results, strict=True):
        complete = args[2]
        done = idx[complete]
        for key, v in stats.items():
            if key not in cols:
                cols[key] = np.full(n, np.nan) if v.dtype.kind == "f" else np.zeros(n, dtype=v.dtype)
            cols[key][done] = v
        part_ids.append(idx[~complete])
        parts.append(rest)
    multi = np.flatnonzero(ntouch > 1)
    if multi.size:
        merged = merge_samples(part_ids, parts, n).take(multi)
        stats = summarise(merged, zones.roof_area[multi], params)
        for key, v in stats.items():
            if key not in cols:
                cols[key] = np.full(n, np.nan) if v.dtype.kind == "f" else np.zeros(n, dtype=v.dtype)
            cols[key][multi] = v
    if not cols:  # no point file touches any footprint
        empty = summarise(
            Samples(np.zeros(n + 1, np.int64), np.zeros(0), np.zeros(n + 1, np.int64), np.zeros(0)),
            zones.roof_area,
            params,
        )
        cols = empty
    return pd.DataFrame(cols)


@dataclass
class RasterStats:
    """One per-footprint raster statistic: a cached call per raster tile (a changed tile recomputes only
    the part of the footprints it touches) and how the tiles' results are joined, in tile order."""

    calls: list[CachedCall]
    join: Callable[[list[Any]], np.ndarray]


def _footprints_by_tile(
    infos: list[Any], geoms: np.ndarray, crs: str
) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """Each raster tile with the footprints whose extent touches it (all of them for a tile in another
    CRS: never one missed) and the WKB of those footprints (for the tile's key)."""
    from pipeline.sources.rasters import in_crs

    tree = shapely.STRtree(geoms)  # queried by extent: a superset of what the tile's pixels cover
    wkb = shapely.to_wkb(geoms)
    out = []
    for info in infos:
        sub = np.sort(tree.query(shapely.box(*info.bounds))) if in_crs(info, crs) else np.arange(len(geoms))
        out.append((info, sub, wkb[sub]))
    return out


def _wkb_key(wkb: np.ndarray) -> str:
    return hashlib.sha256(b"".join(wkb.tolist())).hexdigest()


def raster_stats(ctx: BuildContext, footprints: np.ndarray) -> dict[str, RasterStats]:
    """The per-footprint raster statistics where the rasters are configured: "ndvi" (mean NDVI of the
    orthophoto) and "dgm" (a low percentile of the DGM), one cached task per raster tile."""
    from pipeline.orchestrate.cache import input_sha256
    from pipeline.sources.rasters import scan_rasters
    from pipeline.stages.buildings.rasters import low_of_parts, mean_of_sums, ndvi_sums, terrain_part

    cfg = ctx.cfg
    crs = cfg.crs.horizontal
    geoms = np.asarray(footprints, dtype=object)
    n = len(geoms)
    out: dict[str, RasterStats] = {}
    ortho = cfg.sources.orthophoto
    paths = [i.path for i in ctx.inputs_for("orthophoto")]
    if ortho is not None and paths:
        from pipeline.sources.rasters import orthophoto_bands

        bands = orthophoto_bands(ortho.bands)
        tiles = _footprints_by_tile(scan_rasters(paths, working_crs=crs, crs_override=ortho.crs), geoms, crs)
        calls: list[CachedCall] = []
        for info, sub, wkb in tiles:
            key = [
                "buildings-ndvi-tile-v1",
                input_sha256(ctx, info.path),
                _wkb_key(wkb),
                bands,
                ortho,
                cfg.crs,
            ]
            args = (geoms[sub], info.path, bands["red"], bands["nir"], 1.0, crs, ortho.crs)
            calls.append((key, ndvi_sums, args, {}))

        def join_ndvi(parts: list[Any], tiles: list[Any] = tiles) -> np.ndarray:
            return mean_of_sums(n, [(t[1][i], s, c) for t, (i, s, c) in zip(tiles, parts, strict=True)])

        out["ndvi"] = RasterStats(calls, join_ndvi)
    dgm = cfg.sources.dgm
    paths = [i.path for i in ctx.inputs_for("dgm")]
    if dgm is not None and paths:
        pct = cfg.layers.buildings.ground_percentile
        tiles = _footprints_by_tile(scan_rasters(paths, working_crs=crs, crs_override=dgm.crs), geoms, crs)
        ntouch = np.bincount(np.concatenate([t[1] for t in tiles]), minlength=n)
        calls = []
        for info, sub, wkb in tiles:
            complete = ntouch[sub] == 1  # no other tile can cover it: its percentile is made in the task
            key = [
                "buildings-dgm-tile-v1",
                input_sha256(ctx, info.path),
                _wkb_key(wkb),
                complete,
                pct,
                dgm,
                cfg.crs,
            ]
            calls.append((key, terrain_part, (geoms[sub], info.path, complete, pct, 1.0, crs, dgm.crs), {}))

        def join_dgm(parts: list[Any], tiles: list[Any] = tiles) -> np.ndarray:
            mapped = [(t[1][d], lo, t[1][i], v) for t, (d, lo, i, v) in zip(tiles, parts, strict=True)]
            return low_of_parts(n, mapped, pct)

        out["dgm"] = RasterStats(calls, join_dgm)
    return out


def building_table(
    fp: gpd.GeoDataFrame,
    flst: np.ndarray,
    newest: pd.DataFrame,
    epoch_name: str,
    final: pd.DataFrame,
    ndvi: np.ndarray | None,
    per_epoch: dict[str, pd.DataFrame],
    params: HeightParams,
) -> gpd.GeoDataFrame:
    """The published attribute table (GeoPackage layer `buildings`), sorted by oid."""
    codes = np.array([function_code(c) for c in fp["gfkzshh"]], dtype=np.uint16)
    has_pts = final["quality"].isin(["ok", "vegetation_suspected"]).to_numpy()
    data: dict[str, Any] = {
        "oid": fp["oid"].to_numpy(dtype=object),
        "flstkennz": flst,
        "funktion": [t or "" for t in fp["funktion"]],
        "gfkzshh": [t or "" for t in fp["gfkzshh"]],
        "funktion_code": codes,
        "funktion_gruppe": [function_group(int(c), t) for c, t in zip(codes, fp["funktion"], strict=True)],
        "roof_height": final["roof_height"].to_numpy(),
        "base_height": final["base_height"].to_numpy(),
        "height": final["height"].to_numpy(),
    }
    for p in params.stats_percentiles:
        name = HeightParams.stat_name(p)
        data[name] = newest[name].to_numpy()
    data["n_points"] = newest["n_points"].to_numpy().astype(np.int64)
    data["density"] = np.round(newest["density"].to_numpy(), 4)
    data["survey_epoch"] = np.where(has_pts, epoch_name, "").astype(object)
    data["floors_estimate"] = final["floors_estimate"].to_numpy().astype(np.int32)
    data["floors_is_estimate"] = final["floors_is_estimate"].to_numpy().astype(bool)
    data["quality"] = final["quality"].to_numpy(dtype=object)
    data["flags"] = final["flags"].to_numpy(dtype=object)
    data["base_source"] = final["base_source"].to_numpy(dtype=object)
    data["repair"] = fp["repair"].to_numpy(dtype=object) if "repair" in fp else np.full(len(fp), "", object)
    data["ndvi"] = np.full(len(fp), np.nan) if ndvi is None else np.round(ndvi, 4)
    data["area"] = np.round(shapely.area(np.asarray(fp.geometry.values, dtype=object)), 3)
    data["anzahlgs"] = fp["anzahlgs"].to_numpy(dtype=np.float64)
    rname = HeightParams.stat_name(params.roof_percentile)
    for ep, st in per_epoch.items():
        data[f"roof_{rname}_{ep}"] = st["roof_percentile"].to_numpy()
        data[f"n_points_{ep}"] = st["n_points"].to_numpy().astype(np.int64)
    return gpd.GeoDataFrame(data, geometry=fp.geometry.values, crs=fp.crs)


GLB_COLUMNS = (
    "oid",
    "flstkennz",
    "funktion",
    "gfkzshh",
    "funktion_code",
    "funktion_gruppe",
    "roof_height",
    "base_height",
    "height",
)
GLB_TAIL = (
    "n_points",
    "density",
    "survey_epoch",
    "floors_estimate",
    "floors_is_estimate",
    "quality",
    "flags",
    "base_source",
)


def glb_columns(bt: gpd.GeoDataFrame, params: HeightParams) -> dict[str, np.ndarray]:
    """The property-table columns of the GLBs as arrays (extracted once, indexed per tile)."""
    from pipeline.stages.buildings.reconstruct import ROOF_COLUMNS

    cols = [*GLB_COLUMNS, *(HeightParams.stat_name(p) for p in params.stats_percentiles), *GLB_TAIL]
    cols += [c for c in ROOF_COLUMNS if c in bt.columns]  # LoD2 roof attributes
    return {c: bt[c].to_numpy() for c in cols}


def glb_table(columns: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c, arr in columns.items():
        v = arr[idx]
        if v.dtype == object:
            out[c] = [str(s) for s in v]
        elif c == "n_points":
            out[c] = v.astype(np.uint32)
        elif c == "floors_estimate":
            out[c] = v.astype(np.int16)
        elif c in ("roof_planes", "roof_n_points"):
            out[c] = v.astype(np.uint32)
        else:
            out[c] = v
    return out


# ------------------------------------------------------------------------------------------ outputs


def roof_faces_layer(
    oids: np.ndarray, partitions: BlobStore, batch: int = 4096
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The `roof_faces` layer: one row per face of every LoD2 roof (solids.roof_faces), 3D polygons, as
    (columns, WKB geometries). Made `batch` buildings at a time from the spill: the faces never exist all
    at once as shapely polygons, only as WKB."""
    from pipeline.stages.buildings.solids import roof_faces

    has = np.flatnonzero(partitions.nonempty())
    parts_cols: list[dict[str, np.ndarray]] = []
    parts_wkb: list[np.ndarray] = []
    for k in range(0, max(len(has), 1), batch):
        idx = has[k : k + batch]
        cols, geoms = roof_faces(oids[idx], partitions.take(idx))
        for c in ("plane_a", "plane_b"):
            cols[c] = np.round(cols[c], 9)
        for c in ("plane_c", "slope", "azimuth", "area", "mean_height"):
            cols[c] = np.round(cols[c], 3)
        parts_cols.append(cols)
        parts_wkb.append(shapely.to_wkb(geoms))
    out = {c: np.concatenate([p[c] for p in parts_cols]) for c in parts_cols[0]}
    return out, np.concatenate(parts_wkb)


def write_gpkg(
    path: Path,
    gdf: gpd.GeoDataFrame,
    faces: tuple[dict[str, np.ndarray], np.ndarray] | None = None,
    parts: gpd.GeoDataFrame | None = None,
) -> None:
    """GeoPackage layer `buildings` (MultiPolygon and CRS declared even when empty, fixed timestamp so
    rebuilds are byte-identical: pipeline.styles.gpkg) with its QGIS style (colour by function group)
    embedded as default and as `buildings.qml` beside it; LoD2 tables also get the roof-type and
    model-source styles as further named styles, `faces` (roof_faces_layer: columns, WKB; in the CRS of
    `gdf`) as layer `roof_faces` and
    `parts` (buildings_lod2.reconstruct_lod2_parts) as layer `building_parts`."""
    from pipeline.styles.gpkg import embed_styles, write_layer, write_layer_wkb
    from pipeline.styles.qml import STYLES_DIR, single

    qml = (STYLES_DIR / "buildings_function.qml").read_text(encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp.{path.name}")
    tmp.unlink(missing_ok=True)
    write_layer(gdf, tmp, "buildings", "MultiPolygon")
    if faces is not None:
        write_layer_wkb(tmp, "roof_faces", "MultiPolygon Z", faces[1], faces[0], gdf.crs)
    if parts is not None:  # building parts (lod2_parts): one row per reconstruction unit
        write_layer(parts, tmp, "building_parts", "MultiPolygon")
    extra = {}
    if "roof_type" in gdf.columns:  # LoD2: by roof type and by model source as further named styles
        extra = {
            f"buildings by {what}": (STYLES_DIR / f"buildings_{name}.qml").read_text(encoding="utf-8")
            for name, what in (("roof_type", "roof type"), ("lod_source", "model source"))
        }
    styles = {"buildings": qml}
    if faces is not None:
        styles["roof_faces"] = single("RuhrTwin LoD2 roof faces", (196, 78, 52, 255), (90, 40, 30, 255))
    if parts is not None:
        styles["building_parts"] = single("RuhrTwin building parts", (120, 130, 200, 255), (40, 40, 90, 255))
    embed_styles(tmp, styles, extra={"buildings": extra})
    tmp.replace(path)
    write_atomic(path.with_suffix(".qml"), qml.encode("utf-8"))
    for layer, text in styles.items():  # every layer's style also beside the file
        if layer != "buildings":
            write_atomic(path.with_name(f"{layer}.qml"), text.encode("utf-8"))


def write_lod2_styles(out_dir: Path) -> list[str]:
    """The LoD2 styles beside the default one (function): 3D Tiles style JSON and QGIS style by roof type
    and by model source, from pipeline.styles.palettes; returns the file names written."""
    from pipeline.styles.palettes import lod_source_style, roof_type_style
    from pipeline.styles.qml import STYLES_DIR

    out = []
    for name, style in (("roof_type", roof_type_style()), ("lod_source", lod_source_style())):
        write_json(out_dir / f"style_{name}.json", style)
        qml = (STYLES_DIR / f"buildings_{name}.qml").read_bytes()
        write_atomic(out_dir / f"buildings_{name}.qml", qml)
        out += [f"style_{name}.json", f"buildings_{name}.qml"]
    return out


def write_rejected(path: Path, rejected: list[Rejected], raw_dir: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "id", "reason"])
    rows = []
    for r in rejected:
        try:
            f = Path(r.file).resolve().relative_to(raw_dir.resolve()).as_posix()
        except ValueError:
            f = r.file
        rows.append((f, r.id, r.reason))
    w.writerows(sorted(rows))
    write_atomic(path, buf.getvalue().encode("utf-8"))


def building_tile_key(cache: Any, args: tuple, kw: dict[str, Any]) -> str:
    """Cache key of one building tile: its footprints, heights, attribute table, frame, CRS and options."""
    wkb, *rest = args
    return cache.key(["buildings-tile-v1", [bytes(w) for w in wkb], *rest, sorted(kw.items())])


def write_building_tile_cached(
    cache: Any, key: str, path: str, packed: bytes, **kw: Any
) -> tuple[list[float], list[float], int]:
    """`write_building_tile` through the content cache (key: the tile's footprints, heights, attribute
    table, frame, CRS settings and options); the tile file is hard-linked from the cache entry.
    `packed`: the pickled arguments after `path` (one bytes object, cheap to hash for the Dask key); the
    LoD2 roofs may be a `BlobRef` into the build's spill, read here."""
    import json
    import pickle

    def build(tmp: Path) -> None:
        args: list[Any] = [a.load() if isinstance(a, BlobRef) else a for a in pickle.loads(packed)]
        lo, hi, nt = write_building_tile(str(tmp / "tile"), *args, **kw)
        (tmp / "meta.json").write_text(json.dumps({"lo": lo, "hi": hi, "triangles": nt}))

    entry = cache.materialize(key, build, {"tile": path})
    meta = json.loads((entry / "meta.json").read_text())
    return meta["lo"], meta["hi"], int(meta["triangles"])


def write_tiles(
    ctx: BuildContext,
    bt: gpd.GeoDataFrame,
    layer: BuildingsLayer,
    params: HeightParams,
    out_dir: Path,
    lod2: BlobStore | None = None,
) -> tuple[int, int]:
    """Quadtree, one content file per leaf, tileset.json (+ externals). Returns (tiles, triangles).
    `lod2`: packed LoD2 solids per building (b"" = LoD1 box), see orchestrate.buildings_lod2; read from
    the spill one tile at a time (here for the tile's cache key, by the task for its content), and at
    most `4 x workers` tile tasks are submitted at a time, so this process never holds all tiles' data."""
    geoms = np.asarray(bt.geometry.values, dtype=object)
    rep = shapely.point_on_surface(geoms)
    root = build_quadtree(
        shapely.get_x(rep),
        shapely.get_y(rep),
        max_features=layer.max_features_per_tile,
        max_leaf_m=layer.max_leaf_m,
    )
    leaves = [leaf for leaf in root.leaves() if len(leaf.indices)]
    ext = "glb" if layer.format == "1.1" else "b3dm"
    wkb = shapely.to_wkb(geoms)
    base = bt["base_height"].to_numpy()
    roof = bt["roof_height"].to_numpy()

    def rel(node: QuadNode) -> str:
        return f"tiles/{node.level}/{node.x}_{node.y}.{ext}"

    columns = glb_columns(bt, params)

    def tile_args(k: int, blobs: Any) -> tuple[Any, ...]:
        """The arguments of leaf k's tile after its path (its LoD2 roofs as given: bytes or a BlobRef)."""
        m = leaves[k].indices
        return (
            list(wkb[m]),
            base[m],
            roof[m],
            glb_table(columns, m),
            ctx.frame,
            ctx.cfg.crs,
            *([blobs] if lod2 is not None else []),
        )

    from pipeline.stages.buildings.reconstruct import ROOF_COLUMNS

    descriptions = {**DESCRIPTIONS, **ROOF_COLUMNS} if lod2 is not None else DESCRIPTIONS
    kw: dict[str, Any] = {"profile": layer.format, "floor": layer.floor, "descriptions": descriptions}
    # incremental: a tile is cached by its features' content; unchanged tiles are hard-linked, not rewritten
    from pipeline.orchestrate.cache import build_cache

    cache = build_cache(ctx)
    results: list[Any] = [None] * len(leaves)
    keys: list[str] = []
    misses = []
    for k, leaf in enumerate(leaves):  # one tile's arguments at a time (the LoD2 roofs read from the spill)
        targs = tile_args(k, lod2.take(leaf.indices) if lod2 is not None else None)
        keys.append(building_tile_key(cache, targs, kw))
        if cache.get(keys[k]) is not None:  # unchanged tile: hard link here, no task
            results[k] = write_building_tile_cached(
                cache, keys[k], str(out_dir / rel(leaf)), pickle.dumps(targs, protocol=5), **kw
            )
        else:
            misses.append(k)
    executor = build_executor(ctx.client) if len(misses) > 1 else None
    tile = functools.partial(write_building_tile_cached, **kw)

    def item(j: int) -> tuple[Any, ...]:  # made when submitted: the task reads its LoD2 roofs itself
        k = misses[j]
        blobs = lod2.ref(leaves[k].indices) if lod2 is not None else None
        return (cache, keys[k], str(out_dir / rel(leaves[k])), pickle.dumps(tile_args(k, blobs), protocol=5))

    window = 4 * dask_workers(ctx.client) if ctx.client is not None else None
    items = (item(i) for i in range(len(misses)))
    done = map_ordered(executor, tile, items, name="buildings-tiles", total=len(misses), window=window)
    for i, r in zip(misses, done, strict=True):
        results[i] = r
    tris = 0
    for leaf, (lo, hi, nt) in zip(leaves, results, strict=True):
        leaf.lo, leaf.hi = np.array(lo), np.array(hi)
        tris += nt
    a = asset(layer.format, ctx.build_id)
    main, externals = tileset_tree(
        root,
        rel,
        ge_factor=layer.ge_factor,
        external_every=layer.external_every if root.count() > 1000 else 0,
        external_uri=lambda n: f"tileset_{n.level}_{n.x}_{n.y}.json",
        asset=a,
        transform=ctx.frame.tile_transform(),
    )
    for name, ts in externals.items():
        write_json(out_dir / name, ts)
    write_json(out_dir / "tileset.json", main)
    errs = schema_errors(main)
    if errs:
        from pipeline.errors import ValidationError

        raise ValidationError(f"buildings tileset.json invalid: {errs[:3]}", path=out_dir / "tileset.json")
    return len(leaves), tris


def reference_comparison(ctx: BuildContext, bt: gpd.GeoDataFrame, out_dir: Path) -> dict[str, Any] | None:
    files = [i.path for i in ctx.inputs_for("reference")]
    if not ctx.cfg.sources.reference_citygml:
        return None
    if not files:
        ctx.warn(f"sources.reference_citygml: no files match {ctx.cfg.sources.reference_citygml!r}")
        return None
    from pipeline.stages.buildings.reference import compare_with_reference

    ref = read_reference_citygml(files, crs_cfg=ctx.cfg.crs)
    table, stats = compare_with_reference(bt, ref.gdf)
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.3f", lineterminator="\n")
    write_atomic(out_dir / "reference_comparison.csv", buf.getvalue().encode("utf-8"))
    return stats


def official_lod2_roofs(
    ctx: BuildContext, fp: gpd.GeoDataFrame, final: pd.DataFrame, warnings: list[str]
) -> pd.DataFrame:
    """LoD1 roofs from the official LoD2 model (sources.reference_citygml): area-weighted mean roof
    height of the joined LoD2 building (by id, else overlap); the others keep the point statistic."""
    from pipeline.sources.cadastre.citygml import read_lod2
    from pipeline.stages.buildings.lod2 import join_lod2, lod1_roofs_from_lod2

    files = [i.path for i in ctx.inputs_for("reference")]
    if not files:
        warnings.append(
            "buildings: lod1_roof_source official_lod2 but sources.reference_citygml has no files"
        )
        return final
    layer = ctx.cfg.layers.buildings
    model = read_lod2(files, crs_cfg=ctx.cfg.crs)
    joined = join_lod2(fp, model.buildings, layer.lod2_join_min_iou)
    return lod1_roofs_from_lod2(final, joined, layer.floor_height_m)


def lod1_roofs_from_lod2_roofs(final: pd.DataFrame, lod2: Any, floor_height_m: float) -> pd.DataFrame:
    """LoD1 roofs of the buildings with an LoD2 solid: the mean height of that roof (flag
    `roof_from_reconstruction`, or `roof_from_lod2` for an official roof); the others keep theirs."""
    from pipeline.stages.buildings.lod2 import lod1_roofs_from

    has = lod2.partitions.nonempty()
    roof = np.where(has, lod2.columns["roof_mean_height"], np.nan)
    src = lod2.columns["lod_source"]
    flag = np.where(src == "official", "roof_from_lod2", "roof_from_reconstruction").astype(object)
    return lod1_roofs_from(final, roof, flag, floor_height_m)


# ------------------------------------------------------------------------------------------ layer


def _map_scale(cfg: TwinConfig, fp: gpd.GeoDataFrame) -> float:
    """Map units per ground metre at the centre of the footprints (one value per district: it varies by
    a few millionths over kilometres)."""
    if not len(fp):
        return 1.0
    from pipeline.crs import map_units_per_metre, working_crs

    b = fp.total_bounds
    return map_units_per_metre(working_crs(cfg.crs), (b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


def build_buildings(ctx: BuildContext) -> LayerResult:
    """The buildings layer; the LoD2 roofs and solids are spilled to a hidden folder in the release
    (`orchestrate.blobs`), removed when the layer is done."""
    import tempfile

    ctx.release_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".buildings-spill-", dir=ctx.release_dir) as spill:
        return _build_buildings(ctx, Path(spill))


def _build_buildings(ctx: BuildContext, spill: Path) -> LayerResult:
    t0 = time.perf_counter()
    cfg = ctx.cfg
    layer = cfg.layers.buildings
    out_dir = ctx.release_dir / OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    files = [i.path for i in ctx.inputs_for("cadastre")]
    with ctx.stage("buildings:cadastre"):
        table, parcels = read_cadastre(cfg, files)
        parts_gdf = None
        if parts_enabled(layer):  # Bauteile: units of the LoD2 reconstruction, not buildings
            table, parts_gdf = split_bauteile(table)
        fp = table.gdf
        geoms = np.asarray(fp.geometry.values, dtype=object)
        flst = parcel_keys(fp, parcels)

    epochs = list(cfg.sources.aerial)
    if not epochs:
        warnings.append("buildings: no aerial point cloud configured; all heights are fallbacks")
    newest = epochs[-1] if epochs else None
    per_epoch: dict[str, pd.DataFrame] = {}
    newest_stats: pd.DataFrame | None = None
    scale = _map_scale(cfg, fp)
    from pipeline.orchestrate.class_schemes import class_scheme

    schemes = {ep.epoch: class_scheme(ctx, ep.epoch) for ep in epochs}  # `auto`: inferred from the files
    newest_params = height_params(layer, schemes[newest.epoch][0] if newest else "adv", scale)
    zones_cache: dict[tuple, FootprintZones] = {}
    plans: dict[str, EpochPlan] = {}
    for ep in epochs:
        if ep is not newest and not layer.per_epoch_stats:
            continue
        params = height_params(layer, schemes[ep.epoch][0], scale)
        zkey = (params.shrink_m, params.ground_ring_m)
        if zkey not in zones_cache:
            zones_cache[zkey] = footprint_zones(geoms, params)
        plans[ep.epoch] = epoch_plan(ctx, _point_files(ctx, ep), zones_cache[zkey], params)
    rstats = raster_stats(ctx, geoms)
    prefetch: list[CachedCall] = []
    if layer.lod == 2 and newest is not None:  # the LoD2 roof points need no heights: gathered meanwhile
        from pipeline.orchestrate.buildings_lod2 import lod2_units, roof_point_calls

        units = geoms
        if parts_gdf is not None and len(parts_gdf):
            units = lod2_units(ctx, geoms, parts_gdf)[0].geoms
        prefetch = roof_point_calls(ctx, units, newest, newest_params)
    # the overlays' surface and density rasters come from the same files: made in the same decodes
    from pipeline.orchestrate.overlays import point_raster_calls

    prefetch += point_raster_calls(ctx)
    # every epoch's tile tasks, the raster statistics, the LoD2 roof points and the overlays' rasters at
    # once, each point file decoded once for all of them (`orchestrate.point_products`): the workers read
    # the epochs' tiles side by side (one tile per epoch would otherwise keep one worker busy at a time)
    from pipeline.orchestrate.cache import run_cached
    from pipeline.orchestrate.point_products import fill_once

    with ctx.stage("buildings:heights"):
        calls = [c for p in plans.values() for c in p.calls] + [c for r in rstats.values() for c in r.calls]
        fill_once(ctx, prefetch + calls, "tile-stats")
        results = run_cached(ctx, calls, "tile-stats")
    pos = 0
    for epoch, plan in plans.items():
        st = epoch_stats(plan, results[pos : pos + len(plan.calls)])
        pos += len(plan.calls)
        if layer.per_epoch_stats:
            per_epoch[epoch] = st
        if newest is not None and epoch == newest.epoch:
            newest_stats = st
    rasters: dict[str, np.ndarray] = {}
    for name, r in rstats.items():
        rasters[name] = r.join(results[pos : pos + len(r.calls)])
        pos += len(r.calls)
    ndvi, dgm = rasters.get("ndvi"), rasters.get("dgm")
    if newest_stats is None:
        zones = footprint_zones(geoms, newest_params)
        n = len(geoms)
        newest_stats = pd.DataFrame(
            summarise(
                Samples(np.zeros(n + 1, np.int64), np.zeros(0), np.zeros(n + 1, np.int64), np.zeros(0)),
                zones.roof_area,
                newest_params,
            )
        )

    final = finalize_heights(
        newest_stats,
        fp["anzahlgs"].to_numpy(dtype=np.float64),
        ndvi,
        dgm,
        AttributeParams(
            min_points=layer.min_points,
            min_ground_points=layer.min_ground_points,
            floor_height_m=layer.floor_height_m,
            default_height_m=layer.default_height_m,
            ndvi_threshold=layer.ndvi_threshold,
        ),
    )
    if layer.lod1_roof_source == "official_lod2":
        final = official_lod2_roofs(ctx, fp, final, warnings)
    lod2 = None
    units_gdf = None
    if layer.lod == 2:  # LoD2 roofs from the newest epoch (pipeline.orchestrate.buildings_lod2)
        from pipeline.orchestrate.buildings_lod2 import reconstruct_lod2

        with ctx.stage("buildings:lod2"):
            if parts_gdf is not None and len(parts_gdf):
                from pipeline.orchestrate.buildings_lod2 import reconstruct_lod2_parts

                lod2, units_gdf = reconstruct_lod2_parts(
                    ctx,
                    geoms,
                    fp["oid"].to_numpy(),
                    parts_gdf,
                    newest,
                    newest_params,
                    final["base_height"].to_numpy(dtype=np.float64),
                    spill,
                )
            else:
                lod2 = reconstruct_lod2(
                    ctx,
                    geoms,
                    newest,
                    newest_params,
                    final["base_height"].to_numpy(),
                    spill,
                    oids=fp["oid"].to_numpy(),
                )
        if layer.lod1_roof_source == "lod2":  # LoD1 roof = mean height of the LoD2 roof (AdV definition)
            final = lod1_roofs_from_lod2_roofs(final, lod2, layer.floor_height_m)
    bt = building_table(
        fp, flst, newest_stats, newest.epoch if newest else "", final, ndvi, per_epoch, newest_params
    )
    if lod2 is not None:
        from pipeline.orchestrate.buildings_lod2 import add_roof_columns

        bt = add_roof_columns(bt, lod2)
    with ctx.stage("buildings:gpkg"):
        write_gpkg(
            out_dir / "buildings.gpkg",
            bt,
            roof_faces_layer(bt["oid"].to_numpy(dtype=object), lod2.partitions) if lod2 is not None else None,
            units_gdf,
        )
    write_rejected(out_dir / "rejected.csv", table.rejected, cfg.raw_dir)
    from pipeline.styles import buildings_style

    write_json(out_dir / "style.json", buildings_style())
    extra_styles = write_lod2_styles(out_dir) if lod2 is not None else []

    with ctx.stage("buildings:tiles"):
        if len(bt):
            ntiles, ntris = write_tiles(
                ctx, bt, layer, newest_params, out_dir, lod2.solids if lod2 is not None else None
            )
        else:  # nothing to show: an empty but valid tileset keeps the release consistent
            ntiles, ntris = 0, 0
            empty = {
                "asset": asset(layer.format, ctx.build_id),
                "geometricError": 0.0,
                "root": {
                    "boundingVolume": {"box": box_from_bounds([0, 0, 0], [1, 1, 1])},
                    "geometricError": 0.0,
                    "refine": "ADD",
                    "transform": ctx.frame.tile_transform(),
                },
            }
            write_json(out_dir / "tileset.json", empty)
    cj_files: list[str] = []
    cj_stats = None
    if layer.cityjson and len(bt):  # CityJSON 2.0, one CityJSONSeq per tile (orchestrate.buildings_cityjson)
        from pipeline.orchestrate.buildings_cityjson import write_cityjson

        with ctx.stage("buildings:cityjson"):
            cj_files, cj_stats = write_cityjson(
                ctx, bt, layer, lod2.solids if lod2 is not None else None, out_dir
            )
    ref_stats = reference_comparison(ctx, bt, out_dir)

    files_out = [f"{OUT}/buildings.gpkg", f"{OUT}/buildings.qml", f"{OUT}/rejected.csv", f"{OUT}/style.json"]
    files_out += [f"{OUT}/{f}" for f in extra_styles]
    if lod2 is not None:
        files_out.append(f"{OUT}/roof_faces.qml")
    if units_gdf is not None:
        files_out.append(f"{OUT}/building_parts.qml")
    if ref_stats is not None:
        files_out.append(f"{OUT}/reference_comparison.csv")
    files_out += [f"{OUT}/{f}" for f in cj_files]
    q = bt["quality"].value_counts()
    with_pts = bt["n_points"].to_numpy()[bt["quality"].isin(["ok", "vegetation_suspected"]).to_numpy()]
    stats: dict[str, Any] = {
        "buildings": len(bt),
        "tiles": ntiles,
        "triangles": ntris,
        "rejected": len(table.rejected),
        "median_points": float(np.median(with_pts)) if with_pts.size else 0.0,
        "quality": {k: int(v) for k, v in sorted(q.items())},
        "survey_epoch": newest.epoch if newest else None,
        "epochs": sorted(per_epoch),
        "format": layer.format,
        "lod": layer.lod,
    }
    if any(why != "given" for _s, why in schemes.values()):  # stated where the scheme was inferred
        stats["class_schemes"] = {e: {"scheme": s, "reason": why} for e, (s, why) in schemes.items()}
    if lod2 is not None:
        stats["lod2"] = lod2.stats()
    if units_gdf is not None:
        stats["building_parts"] = {
            "bauteile": len(parts_gdf) if parts_gdf is not None else 0,
            "bauteile_with_roof": int(units_gdf.attrs.get("bauteile_with_roof", 0)),
            "parts_joined": int(units_gdf.attrs.get("parts_joined", 0)),
            "units": len(units_gdf),
            "buildings_with_parts": int(units_gdf["building_oid"].nunique()),
        }
    if cj_stats is not None:
        stats["cityjson"] = cj_stats
    if ref_stats is not None:
        stats["reference"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in ref_stats.items()}
    if table.rejected:
        warnings.append(f"buildings: {len(table.rejected)} cadastre records skipped (see {OUT}/rejected.csv)")
    return LayerResult(
        name="buildings",
        kind="buildings",
        access=layer.access,
        tileset=f"{OUT}/tileset.json",
        style=f"{OUT}/style.json",
        files=files_out,
        stats=stats,
        warnings=warnings,
        seconds=time.perf_counter() - t0,
    )


def build_buildings_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """Entry point called by pipeline.orchestrate.build (after the point-cloud layers)."""
    layer = ctx.cfg.layers.buildings
    if not layer.enabled:
        return []
    if ctx.cfg.sources.cadastre is None:
        ctx.warn("buildings layer skipped: sources.cadastre is not configured")
        return []
    if not ctx.inputs_for("cadastre"):
        ctx.warn("buildings layer skipped: no cadastre files found")
        return []
    with ctx.stage("buildings"):
        return [build_buildings(ctx)]
