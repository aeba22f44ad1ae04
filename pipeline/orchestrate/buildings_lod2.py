"""LoD2 roofs for the buildings layer: one task per point-cloud tile of the newest epoch
(`stages.buildings.reconstruct.tile_roofs`: roof points -> roof fit -> roof partition checked as a solid);
footprints on tile edges get their points merged here and are fitted in this process.

`reconstruct_lod2(ctx, geoms, epoch, height_params, base)` returns `Lod2Result`: the roof attribute
columns (`reconstruct.ROOF_COLUMNS`) and one packed roof partition per footprint (b"" = LoD1 box), which
`write_tiles` hands to the tile writers. A building whose lowest roof point is less than
`solids.MIN_WALL_M` above its final base keeps its LoD1 box (`roof_below_base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from pipeline.orchestrate.context import BuildContext
from pipeline.stages.buildings.reconstruct import ROOF_COLUMNS, ReconstructParams, lod2_roofs, tile_roofs
from pipeline.stages.buildings.roofs import RoofParams

MIN_WALL_M = 0.5  # lowest roof point above the base: less and the building keeps its LoD1 box


@dataclass
class Lod2Result:
    columns: dict[str, np.ndarray]
    partitions: list[bytes]

    def stats(self) -> dict[str, Any]:
        src = self.columns["lod_source"]
        types = self.columns["roof_type"]
        reasons = [r.split(":")[0] for r in self.columns["lod2_fallback_reason"] if r]
        return {
            "lod2": int(sum(1 for p in self.partitions if p)),
            "lod1_fallback": int(np.sum(src == "lod1_fallback")),
            "roof_types": {str(t): int(np.sum(types == t)) for t in sorted(set(types.tolist())) if t},
            "fallback_reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
        }


def reconstruct_params(layer: Any) -> ReconstructParams:
    return ReconstructParams(
        shrink_m=layer.lod2_shrink_m,
        roof=RoofParams(min_points=layer.lod2_min_points, max_rmse_m=layer.lod2_max_rmse_m),
        single_returns=layer.lod2_single_returns,
    )


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


def reconstruct_lod2(
    ctx: BuildContext,
    geoms: np.ndarray,
    epoch: Any,
    height_params: Any,
    base: np.ndarray,
    oids: np.ndarray | None = None,
) -> Lod2Result:
    from pipeline.orchestrate.buildings import _point_files
    from pipeline.orchestrate.cache import input_sha256, run_cached

    layer = ctx.cfg.layers.buildings
    params = reconstruct_params(layer)
    n = len(geoms)
    cols = _empty_columns(n)
    parts: list[bytes] = [b""] * n
    low = np.full(n, np.nan)
    files = _point_files(ctx, epoch) if epoch is not None else []
    if n and files:
        fb = np.array([f[1] for f in files], dtype=np.float64).reshape(-1, 4)
        tree = shapely.STRtree(shapely.box(fb[:, 0], fb[:, 1], fb[:, 2], fb[:, 3]))
        qi, fi = tree.query(np.asarray(geoms, dtype=object), predicate="intersects")
        order = np.lexsort((qi, fi))
        qi, fi = qi[order], fi[order]
        ntouch = np.bincount(qi, minlength=n)
        bounds = np.searchsorted(fi, np.arange(len(files) + 1))
        wkb = shapely.to_wkb(np.asarray(geoms, dtype=object))
        jobs = []
        for k, (path, _b, zf, to_working) in enumerate(files):
            idx = qi[bounds[k] : bounds[k + 1]]
            if idx.size == 0:
                continue
            args = (
                path,
                [bytes(w) for w in wkb[idx]],
                ntouch[idx] == 1,
                height_params,
                params,
                zf,
                to_working,
            )
            jobs.append((idx, args))
        # each tile read in chunks sized by the worker's memory budget (the roofs do not depend on it)
        from pipeline.config.sizes import parse_size
        from pipeline.sources.pointcloud.reader import chunk_points_for

        chunk = {"chunk_points": chunk_points_for(parse_size(ctx.cfg.runtime.memory))}
        results = run_cached(
            ctx,
            [
                (["buildings-lod2-tile-v1", input_sha256(ctx, a[0]), *a[1:]], tile_roofs, a, chunk)
                for _idx, a in jobs
            ],
            "lod2-tiles",
        )
        edge_ids: list[np.ndarray] = []
        edge_xyz: list[np.ndarray] = []
        for (idx, args), (c, blobs, lo, (rptr, rxyz)) in zip(jobs, results, strict=True):
            done = idx[args[2]]
            for key, v in c.items():
                cols[key][done] = v
            for i, b in zip(done.tolist(), blobs, strict=True):
                parts[i] = b
            low[done] = lo
            rest = idx[~args[2]]
            edge_ids.append(np.repeat(rest, np.diff(rptr)))
            edge_xyz.append(rxyz)
        multi = np.flatnonzero(ntouch > 1)
        if multi.size:  # footprints on tile edges: their points from every tile, fitted here
            owner = np.concatenate(edge_ids) if edge_ids else np.zeros(0, dtype=np.int64)
            xyz = np.concatenate(edge_xyz) if edge_xyz else np.zeros((0, 3))
            o = np.argsort(owner, kind="stable")
            owner, xyz = owner[o], xyz[o]
            starts = np.searchsorted(owner, multi)
            ends = np.searchsorted(owner, multi, side="right")
            sel = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
            mptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
            c, blobs, lo = lod2_roofs(
                xyz[sel, 0],
                xyz[sel, 1],
                xyz[sel, 2],
                mptr,
                np.arange(mptr[-1]),
                np.asarray(geoms)[multi],
                params,
            )
            for key, v in c.items():
                cols[key][multi] = v
            for i, b in zip(multi.tolist(), blobs, strict=True):
                parts[i] = b
            low[multi] = lo
    if layer.lod2_source == "official":
        if oids is None:
            raise ValueError("reconstruct_lod2: lod2_source official needs the footprints' oids")
        _official(ctx, geoms, oids, cols, parts, low)
    # the final base: the roof must stand MIN_WALL_M above it
    below = np.flatnonzero(np.isfinite(low) & (low < np.asarray(base, dtype=np.float64) + MIN_WALL_M))
    for i in below.tolist():
        parts[i] = b""
        cols["lod2_fallback_reason"][i] = "roof_below_base"
        cols["lod_source"][i] = "lod1_fallback"
    return Lod2Result(cols, parts)


def _official(
    ctx: BuildContext,
    geoms: np.ndarray,
    oids: np.ndarray,
    cols: dict[str, np.ndarray],
    parts: list[bytes],
    low: np.ndarray,
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
            if check_solid(build_solid(part, lo - 3.0), rings=False):
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
        low[i] = lo


def add_roof_columns(bt: Any, lod2: Lod2Result) -> Any:
    """The buildings table with the roof columns (before the geometry column)."""
    out = bt.copy()
    for key in ROOF_COLUMNS:
        v = lod2.columns[key]
        out[key] = [str(s) for s in v] if v.dtype == object else v
    return out
