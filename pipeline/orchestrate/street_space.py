"""Street space from the mobile scans -> `street_space/street_space.gpkg` (+ `street_space.qml`).

Axes (`layers.street_space.axes`):
* `cadastre`: the centrelines of the cadastre's street areas: the land-use areas (ALKIS tatsächliche
  Nutzung, `sources.cadastre.landuse_layer`, default `NutzungFlurstueck`) whose use
  (`sources.cadastre.landuse_column`, default `nutzart`) is one of `layers.street_space.street_uses`
  (default Straßenverkehr, Weg), merged and skeletonised (`pipeline.stages.street_space.centrelines`);
* `tracks`: the scan tracks of the panorama list (`sources.mobile.panoramas`, tracks as the panoramas
  layer splits them: `track_id` column or time gaps), ordered by time;
* `auto` (default): the cadastre's when it has street areas near the scans, else the tracks (the layer's
  manifest stats say which: `axes`).
Each axis is cut into `segment_m` pieces from its start. Points: the mobile scans (`sources.mobile.points`),
read in chunks; only points within `max_half_width_m` of an axis are kept. Points and panorama list must
be in the same CRS (`sources.mobile.crs`, else the working CRS); the cadastre is read into that CRS. The
measurement is `pipeline.stages.street_space`; the layer is internal by default
(`layers.street_space.access`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from pipeline.config.model import StreetSpaceLayer
from pipeline.crs import horizontal_of, parse_crs, working_crs
from pipeline.errors import ConfigError, InputError
from pipeline.model import BuildContext, LayerResult
from pipeline.stages.street_space import (
    RESULT_COLUMNS,
    Segments,
    StreetSpaceParams,
    centrelines,
    cut_axes,
    judge,
    measure_street_space,
    status,
)

OUT_DIR = "street_space"
OUT_FILE = f"{OUT_DIR}/street_space.gpkg"
LAYER = "street_space"
CHUNK_POINTS = 2_000_000


def params_of(lay: StreetSpaceLayer) -> StreetSpaceParams:
    return StreetSpaceParams(
        segment_m=lay.segment_m,
        max_half_width_m=lay.max_half_width_m,
        bin_m=lay.bin_m,
        min_bin_points=lay.min_bin_points,
        kerb_window_m=lay.kerb_window_m,
        window_coverage=lay.window_coverage,
        kerb_min_m=lay.kerb_min_m,
        kerb_max_m=lay.kerb_max_m,
        edge_step_m=lay.edge_step_m,
        coverage_gap_m=lay.coverage_gap_m,
        fallback_half_width_m=lay.fallback_half_width_m,
        min_overhead_m=lay.min_overhead_m,
        clearance_margin_m=lay.clearance_margin_m,
        obstacle_min_m=lay.obstacle_min_m,
        obstacle_max_m=lay.obstacle_max_m,
        slice_m=lay.slice_m,
        vehicle_width_m=lay.vehicle_width_m,
        vehicle_height_m=lay.vehicle_height_m,
        ground_classes=tuple(lay.ground_classes),
        building_classes=tuple(lay.building_classes),
        ignored_classes=tuple(lay.ignored_classes),
    )


def track_axes(files: list[Path], gap_seconds: float) -> list[np.ndarray]:
    """Polylines (n, 2) of the recording tracks, each in time order, sorted by track id."""
    from pipeline.orchestrate.panoramas import concat_tables, read_panorama_csv

    table = concat_tables([read_panorama_csv(f) for f in files], gap_seconds)
    ids = np.array(table.track_id or [], dtype=object)
    axes = []
    for tid in sorted(set(ids.tolist())):
        sel = np.flatnonzero(ids == tid)
        sel = sel[np.argsort(table.time[sel], kind="stable")]
        xy = np.column_stack([table.x[sel], table.y[sel]])
        keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 1e-6])
        if keep.sum() >= 2:
            axes.append(xy[keep])
    return axes


def street_areas(
    files: list[Path],
    fmt: str,
    layer: str | None,
    column: str,
    uses: list[str],
    crs: str | None,
    target_crs: Any,
) -> gpd.GeoDataFrame | None:
    """The cadastre's land-use areas of street use (`uses`), or None when the cadastre has no land-use
    layer (and none was asked for). NAS files are not read for land use (ConfigError when asked for)."""
    if fmt != "alkis_gpkg":
        if layer:
            raise ConfigError(
                f"sources.cadastre.landuse_layer: land use is read from ALKIS GeoPackages only, not {fmt!r}"
            )
        return None
    from pipeline.sources.cadastre.gpkg import read_land_use

    frames = []
    for f in sorted(files):
        if f.suffix.lower() != ".gpkg":
            continue
        lu = read_land_use(f, layer, column, crs, target_crs)
        if lu is not None:
            frames.append(lu)
    if not frames:
        return None
    import pandas as pd

    lu = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    wanted = {u.casefold() for u in uses}
    keep = np.array([v is not None and v.casefold() in wanted for v in lu["nutzart"]], dtype=bool)
    return lu[keep & ~lu.geometry.is_empty.to_numpy()].reset_index(drop=True)


def read_corridor_points(
    files: list[Path], corridor: shapely.Geometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z, classification of the points inside `corridor`, read in chunks (memory: the corridor's
    points only)."""
    from pipeline.sources.pointcloud.reader import iter_points

    shapely.prepare(corridor)
    xs, ys, zs, cs = [], [], [], []
    for f in files:
        for pts in iter_points(f, ("x", "y", "z", "classification"), CHUNK_POINTS):
            inside = shapely.contains_xy(corridor, pts["x"], pts["y"])
            if inside.any():
                xs.append(pts["x"][inside])
                ys.append(pts["y"][inside])
                zs.append(pts["z"][inside])
                cs.append(pts["classification"][inside])
    if not xs:
        empty = np.zeros(0)
        return empty, empty, empty, np.zeros(0, dtype=np.uint8)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(zs), np.concatenate(cs)


def segments_frame(
    seg: Segments, res: dict[str, np.ndarray], p: StreetSpaceParams, crs: Any
) -> gpd.GeoDataFrame:
    """One polygon per segment: the carriageway between the kerbs (or +-fallback beside the axis)."""
    left = np.where(np.isfinite(res["kerb_left_m"]), res["kerb_left_m"], p.fallback_half_width_m)
    right = np.where(np.isfinite(res["kerb_right_m"]), res["kerb_right_m"], -p.fallback_half_width_m)
    x1 = seg.x0 + seg.ux * seg.length
    y1 = seg.y0 + seg.uy * seg.length
    nx, ny = -seg.uy, seg.ux
    ring = np.stack(
        [
            np.column_stack([seg.x0 + nx * right, seg.y0 + ny * right]),
            np.column_stack([x1 + nx * right, y1 + ny * right]),
            np.column_stack([x1 + nx * left, y1 + ny * left]),
            np.column_stack([seg.x0 + nx * left, seg.y0 + ny * left]),
        ],
        axis=1,
    )
    geoms = shapely.polygons(np.round(ring, 3))
    judged, passable, reason = judge(res, p)
    free = np.fmin(res["free_sidewalk_left_m"], res["free_sidewalk_right_m"])

    def r2(a: np.ndarray) -> np.ndarray:
        return np.round(a, 2)

    return gpd.GeoDataFrame(
        {
            "axis_id": seg.axis.astype(np.int32),
            "station_m": r2(seg.station),
            "length_m": r2(seg.length),
            "carriageway_width_m": r2(res["carriageway_width_m"]),
            "sidewalk_left_width_m": r2(res["sidewalk_left_width_m"]),
            "sidewalk_right_width_m": r2(res["sidewalk_right_width_m"]),
            "min_clearance_m": r2(res["min_clearance_m"]),
            "free_sidewalk_left_m": r2(res["free_sidewalk_left_m"]),
            "free_sidewalk_right_m": r2(res["free_sidewalk_right_m"]),
            "free_sidewalk_width_m": r2(free),
            "judged": judged,
            "passable": passable,
            "status": status(judged, res, p),
            "reason": reason,
            "ground_points": res["ground_points"].astype(np.int64),
            "overhead_points": np.nan_to_num(res["overhead_points"]).astype(np.int64),
        },
        geometry=geoms,
        crs=crs,
    )


def build_street_space_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """Layer builder hook of `twin build` (no-op without mobile scans and a panorama list)."""
    from pipeline.styles import palettes as P
    from pipeline.styles.gpkg import write_layer, write_styles
    from pipeline.styles.qml import categorized

    cfg = ctx.cfg
    lay = cfg.layers.street_space
    mobile = cfg.sources.mobile
    if not lay.enabled or mobile is None or not mobile.points:
        return []
    cad = cfg.sources.cadastre
    if lay.axes == "cadastre" and cad is None:
        raise ConfigError("layers.street_space.axes: cadastre needs sources.cadastre")
    if lay.axes == "tracks" and not mobile.panoramas:
        raise ConfigError("layers.street_space.axes: tracks needs sources.mobile.panoramas")
    if not mobile.panoramas and cad is None:
        return []
    t0 = time.perf_counter()
    p = params_of(lay)
    warnings: list[str] = []
    crs = horizontal_of(parse_crs(mobile.crs) if mobile.crs else working_crs(cfg.crs))
    with ctx.stage("street_space"):
        pano_files = [i.path for i in ctx.inputs if i.role == "panoramas"]
        point_files = sorted(i.path for i in ctx.inputs if i.role == "mobile")
        tracks = track_axes(pano_files, mobile.track_gap_seconds) if pano_files else []
        axes, source = tracks, "tracks"
        if lay.axes != "tracks" and cad is not None:
            cad_files = [i.path for i in ctx.inputs if i.role.split(":")[0] == "cadastre"]
            areas = street_areas(
                cad_files,
                cad.format,
                cad.landuse_layer,
                cad.landuse_column,
                lay.street_uses,
                cad.crs,
                crs,
            )
            if tracks and areas is not None and len(areas):
                # auto: only street areas the scans reach count (a cadastre larger than the survey)
                reach = shapely.union_all(
                    [shapely.buffer(shapely.LineString(a), p.max_half_width_m) for a in tracks]
                )
                areas = areas[areas.intersects(reach)]
            if areas is not None and len(areas):
                axes, source = centrelines(shapely.union_all(areas.geometry.values)), "cadastre"
            elif lay.axes == "cadastre":
                raise InputError(
                    "layers.street_space.axes is cadastre, but the cadastre has no land-use areas of "
                    f"{lay.street_uses} (sources.cadastre.landuse_layer / landuse_column, "
                    "layers.street_space.street_uses)",
                    path=cad_files[0] if cad_files else None,
                )
            elif tracks:
                warnings.append(
                    "street_space: the cadastre has no street-use land-use areas near the scans; "
                    "axes from the scan tracks"
                )
        seg = cut_axes(axes, p.segment_m)
        corridor = (
            shapely.union_all(
                [shapely.buffer(shapely.LineString(a), p.max_half_width_m + p.segment_m) for a in axes]
            )
            if axes
            else shapely.Polygon()
        )
        x, y, z, c = read_corridor_points(point_files, corridor)
        res = measure_street_space(seg, x, y, z, c, p)
        gdf = segments_frame(seg, res, p, crs)
        out = ctx.release_dir / OUT_FILE
        write_layer(gdf, out, LAYER, "MultiPolygon")
        qml = write_styles(
            out,
            {
                LAYER: categorized(
                    "street space: can the vehicle pass?", P.STREET_SPACE_PROPERTY, P.STREET_SPACE
                )
            },
        )
        if len(gdf) and not gdf["judged"].any():
            warnings.append("street_space: no segment has kerbs on both sides; nothing could be judged")
    cw = res["carriageway_width_m"]
    stats: dict[str, Any] = {
        "segments": len(seg),
        "axes": source,
        "axis_lines": len(axes),
        "tracks": len(tracks),
        "points": len(x),
        "judged": int(gdf["judged"].sum()),
        "passable": int(gdf["passable"].sum()),
        "vehicle": [p.vehicle_width_m, p.vehicle_height_m],
    }
    if np.isfinite(cw).any():
        stats["carriageway_width_m"] = [round(float(np.nanmin(cw)), 2), round(float(np.nanmax(cw)), 2)]
    for col in RESULT_COLUMNS:
        stats.setdefault("measured", {})[col] = int(np.isfinite(res[col]).sum())
    return [
        LayerResult(
            name="street_space",
            kind="overlay",
            access=lay.access,
            files=[OUT_FILE, *(str(q.relative_to(ctx.release_dir)) for q in qml)],
            stats=stats,
            warnings=warnings,
            seconds=time.perf_counter() - t0,
        )
    ]
