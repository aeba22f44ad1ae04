"""Terrain and imagery layers: DGM -> textured LOD mesh tileset; orthophoto -> XYZ pyramid + COG.

    build_terrain_layers(ctx, previous) -> [terrain, imagery]

Plan (cheap, in this process): scan the rasters, build the finest terrain grid of the root square and the
per-level vertex grids and errors. Execute (Dask, one task per tile): mesh + geoid + texture + GLB, and
one task per XYZ zoom level. Files are written here, in a stable order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.model import TwinConfig
from pipeline.crs import linear_unit_factor, parse_crs, resolve_source_crs
from pipeline.errors import CrsError, InputError
from pipeline.model import BuildContext, LayerResult
from pipeline.orchestrate.executor import build_executor, dask_workers, map_ordered
from pipeline.sources.rasters import (
    Grid,
    RasterInfo,
    delivery_bounds,
    native_resolution,
    orthophoto_bands,
    read_grid,
    scan_rasters,
)
from pipeline.tiles.tileset import write_atomic, write_json


def _run_batch(fn: Callable[..., Any], calls: Sequence[tuple[tuple, dict]]) -> list:
    return [fn(*a, **kw) for a, kw in calls]


def run_tasks(
    ctx: BuildContext,
    fn: Callable[..., Any],
    calls: Sequence[tuple[tuple, dict]],
    name: str,
    *,
    min_parallel: int = 16,
    per_task: int = 8,
) -> list:
    """Run `fn(*args, **kwargs)` per call; results in call order.

    With a Dask client and enough calls, calls are batched (`per_task` per task, at least two tasks per
    worker) so task overhead and per-process set-up (imports, PROJ grids) stay small against the work.
    Small jobs run in this process."""
    if ctx.client is None or len(calls) < min_parallel:
        return _run_batch(fn, calls)
    workers = dask_workers(ctx.client)
    size = max(1, min(per_task, -(-len(calls) // (2 * workers))))
    batches = [(fn, list(calls[i : i + size])) for i in range(0, len(calls), size)]
    parts = map_ordered(build_executor(ctx.client), _run_batch, batches, name=name)
    return [r for part in parts for r in part]


# ---- sources -------------------------------------------------------------------------------------


def dgm_infos(cfg: TwinConfig, files: Sequence[Path]) -> list[RasterInfo]:
    src = cfg.sources.dgm
    assert src is not None
    return scan_rasters(
        files,
        working_crs=cfg.crs.horizontal,
        crs_override=src.crs,
        resolution=src.resolution,
        on_mismatch=src.on_mismatch,
    )


def ortho_infos(cfg: TwinConfig, files: Sequence[Path]) -> list[RasterInfo]:
    src = cfg.sources.orthophoto
    assert src is not None
    return scan_rasters(
        files,
        working_crs=cfg.crs.horizontal,
        crs_override=src.crs,
        resolution=src.resolution,
        on_mismatch=src.on_mismatch,
        min_bands=3,
    )


def delivery_infos(ctx: BuildContext, role: str) -> list[RasterInfo]:
    """`dgm_infos` ("dgm") or `ortho_infos` ("orthophoto") of this build's files of `role`, read once a build:
    the terrain, the imagery and the overlays each asked for them again, and the overlays several times
    (~4,400 headers at ~1 ms each per scan for the Ruhr)."""
    memo = getattr(ctx, "_twin_raster_infos", None)
    if memo is not None and role in memo:
        return list(memo[role])
    scan = dgm_infos if role == "dgm" else ortho_infos
    infos = scan(ctx.cfg, [i.path for i in ctx.inputs_for(role)])
    if memo is not None:
        memo[role] = infos
    return list(infos)


def dgm_height_crs(cfg: TwinConfig, infos: Sequence[RasterInfo]) -> str:
    """Compound CRS of the DGM heights (horizontal working CRS + the tiles' vertical datum)."""
    crs_set = set()
    for i in infos:
        c = resolve_source_crs(i.crs, cfg.sources.dgm.crs if cfg.sources.dgm else None, cfg.crs, path=i.path)
        sub = [s for s in (c.sub_crs_list or []) if s.is_vertical]
        crs_set.add(sub[0].to_authority()[1] if sub and sub[0].to_authority() else None)
    if len(crs_set) > 1:
        raise CrsError(
            f"DGM tiles use different vertical datums {sorted(map(str, crs_set))}", path=infos[0].path
        )
    v = crs_set.pop()
    if v is None:
        return cfg.crs.horizontal  # ellipsoidal heights accepted by the config
    return f"{cfg.crs.horizontal}+{v}"


def ground_model(ctx: BuildContext, plan_res: float, bounds=None) -> tuple[np.ndarray, Grid, str, str]:
    """The terrain model on a grid: DGM if configured, else rasterised ground points of the newest epoch.

    Returns (heights (rows, cols) float32 NaN = none, grid, height CRS, source description).
    """
    cfg = ctx.cfg
    if cfg.sources.dgm:
        infos = delivery_infos(ctx, "dgm")
        b = bounds or delivery_bounds(infos, cfg.crs.horizontal)
        grid = Grid.from_bounds(b, plan_res, cfg.crs.horizontal)
        r = read_grid(infos, grid, bands=[1])
        return r.data[0], grid, dgm_height_crs(cfg, infos), "dgm"
    from pipeline.stages.terrain import z_unit_m
    from pipeline.stages.terrain.rasterise import fill_all, rasterise_point_files

    if not cfg.sources.aerial:
        raise InputError("terrain needs sources.dgm or an aerial point cloud (ground points)")
    ep = cfg.sources.aerial[-1]
    files = [i.path for i in ctx.inputs_for(f"aerial:{ep.epoch}")]
    b = bounds or las_bounds(files, cfg.crs, ep.crs)
    grid = Grid.from_bounds(b, plan_res, cfg.crs.horizontal)
    acc = rasterise_point_files(
        files, grid, stat="mean", crs_cfg=cfg.crs, crs_override=ep.crs, include_classes=(2,)
    )
    # the rasteriser yields metres (each file's Z unit applied); the terrain's heights are in the units of
    # its height CRS, like a DGM's cells (`stages.terrain.normal_to_enu` scales them to metres once)
    heights = fill_all(acc.result()) / np.float32(z_unit_m(cfg.crs.compound))
    return heights, grid, cfg.crs.compound, f"ground points {ep.epoch}"


def las_bounds(
    files: Sequence[Path], crs_cfg: Any = None, override: str | None = None
) -> tuple[float, float, float, float]:
    """xy bounds of point files from their headers; with `crs_cfg`, in the working CRS (files in another
    CRS, e.g. UTM 33 tiles in a UTM 32 project, have their extent transformed)."""
    from pipeline.sources.pointcloud.reader import read_header

    lo = np.array([np.inf, np.inf])
    hi = -lo
    work = None
    if crs_cfg is not None:
        from pipeline.crs import horizontal_of, working_crs

        work = horizontal_of(working_crs(crs_cfg))
    for f in files:
        info = read_header(f)
        b = (*info.mins[:2], *info.maxs[:2])
        if work is not None:
            b = _bounds_in(f, b, work, crs_cfg, override)
        lo = np.minimum(lo, b[:2])
        hi = np.maximum(hi, b[2:])
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def _bounds_in(f: Path, b: tuple, work: Any, crs_cfg: Any, override: str | None) -> tuple:
    from pyproj import Transformer

    from pipeline.crs import horizontal_of
    from pipeline.sources.pointcloud.crs import resolve_file_crs
    from pipeline.sources.pointcloud.reader import read_header

    h = horizontal_of(resolve_file_crs(read_header(f), override, crs_cfg).crs)
    if h.equals(work) or h.to_2d().equals(work.to_2d()):
        return b
    x0, y0, x1, y1 = b
    out = Transformer.from_crs(h, work, always_xy=True).transform_bounds(x0, y0, x1, y1, densify_pts=21)
    if not np.all(np.isfinite(out)):
        raise InputError(f"the file's extent cannot be transformed from {h.name} to {work.name}", path=f)
    return tuple(float(v) for v in out)


def _ground_resolution(files: Sequence[Path], bounds, res_m: float, horizontal_crs: str) -> float:
    """Cell size (in the CRS's units) for a terrain rasterised from ground points.

    The configured size is in metres (converted for e.g. feet CRSs) and coarsened where the survey is too
    sparse to put about four points in a cell; otherwise most cells would be interpolated and the mesh
    would carry millions of triangles of nothing.
    """
    from pipeline.sources.pointcloud.reader import read_header

    unit = linear_unit_factor(parse_crs(horizontal_crs))  # metres per CRS unit
    res = res_m / unit
    count = sum(read_header(f).count for f in files)
    area = max((bounds[2] - bounds[0]) * (bounds[3] - bounds[1]), 1e-9)
    if count:
        res = max(res, float(np.sqrt(4.0 * area / count)))
    return float(res)


# ---- terrain -------------------------------------------------------------------------------------


def build_terrain(ctx: BuildContext) -> LayerResult:
    """The terrain layer, chunk by chunk with per-tile reuse (pipeline.orchestrate.terrain_mesh)."""
    from dataclasses import asdict

    from pipeline.orchestrate.terrain_mesh import build_terrain_mesh

    result, counts = build_terrain_mesh(ctx)
    ctx.log.event("terrain_mesh", **asdict(counts))
    return result


def build_terrain_reference(ctx: BuildContext) -> LayerResult:
    """The whole-raster terrain build (every level from the full model, every texture warped from the
    orthophoto): the baseline `bench terrain` compares the chunked build with (no test calls it)."""
    from pipeline.stages.terrain import level_errors, level_vertex_heights, plan_terrain, terrain_tile
    from pipeline.tiles.terrain_glb import TerrainTileNode, terrain_tilesets

    cfg = ctx.cfg
    lay = cfg.layers.terrain
    out = ctx.release_dir / "terrain"
    warnings: list[str] = []
    if cfg.sources.dgm:
        infos = delivery_infos(ctx, "dgm")
        bounds = delivery_bounds(infos, cfg.crs.horizontal)
        res = lay.resolution_m or native_resolution(infos)
    else:
        ep = cfg.sources.aerial[-1] if cfg.sources.aerial else None
        if ep is None:
            raise InputError("terrain needs sources.dgm or an aerial point cloud (ground points)")
        ep_files = [i.path for i in ctx.inputs_for(f"aerial:{ep.epoch}")]
        bounds = las_bounds(ep_files, cfg.crs, ep.crs)
        res = _ground_resolution(ep_files, bounds, lay.resolution_m or lay.ground_res_m, cfg.crs.horizontal)
        warnings.append(
            f"no DGM configured: terrain from rasterised ground points of epoch {ep.epoch} "
            f"({res:.3g} CRS units per cell)"
        )
    plan = plan_terrain(bounds, res, lay.tile_cells)
    n = lay.tile_cells * 2 ** (plan.levels - 1)
    root_bounds = (plan.x0, plan.y1 - n * res, plan.x0 + n * res, plan.y1)
    fine, _grid, height_crs, source = ground_model(ctx, res, root_bounds)
    if not np.isfinite(fine).any():
        raise InputError("the terrain model has no valid height inside the district")
    verts = level_vertex_heights(plan, fine)
    errs = level_errors(plan, verts, fine)

    ortho = None
    rgb: list[int] = [1, 2, 3]
    if lay.texture_from_orthophoto and cfg.sources.orthophoto:
        ortho = delivery_infos(ctx, "orthophoto")
        bands = orthophoto_bands(cfg.sources.orthophoto.bands)
        rgb = [bands["red"], bands["green"], bands["blue"]]
    elif lay.texture_from_orthophoto:
        warnings.append("no orthophoto configured: terrain is untextured")

    calls = []
    tc = lay.tile_cells
    for level in range(plan.levels):
        k = 2**level
        v = verts[level]
        # skirts hide cracks against coarser neighbours: as deep as the coarser level's largest error
        skirt = round(max(0.5, 2.0 * float(errs[max(level - 1, 0)].max())), 2) if level > 0 else 0.0
        for ty in range(k):
            for tx in range(k):
                sl = v[ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1]
                if not np.isfinite(sl).any():
                    continue
                calls.append(
                    (
                        (level, tx, ty, np.ascontiguousarray(sl), plan.tile_bounds(level, tx, ty)),
                        {
                            "source_crs": height_crs,
                            "crs_cfg": cfg.crs,
                            "frame": ctx.frame,
                            "ortho": ortho,
                            "rgb_bands": rgb,
                            "texture_px": lay.texture_px,
                            "texture_format": lay.texture_format,
                            "texture_quality": lay.texture_quality,
                            "texture_subsampling": lay.texture_subsampling,
                            "mesh_encoding": lay.mesh_encoding,
                            "skirt": skirt,
                        },
                    )
                )
    contents = run_tasks(ctx, terrain_tile, calls, "terrain-tile")
    by_key = {(c.level, c.tx, c.ty): c for c in contents if c.glb is not None}
    files: list[str] = []
    for (level, tx, ty), c in sorted(by_key.items()):
        rel = f"tiles/{level}/{tx}/{ty}.glb"
        write_atomic(out / rel, c.glb)
        files.append(f"terrain/{rel}")

    def node(level: int, tx: int, ty: int) -> TerrainTileNode | None:
        c = by_key.get((level, tx, ty))
        children = []
        if level + 1 < plan.levels:
            for dy in (0, 1):
                for dx in (0, 1):
                    ch = node(level + 1, 2 * tx + dx, 2 * ty + dy)
                    if ch is not None:
                        children.append(ch)
        if c is None and not children:
            return None
        los = [ch.lo for ch in children] + ([c.lo] if c else [])
        his = [ch.hi for ch in children] + ([c.hi] if c else [])
        texel = plan.tile_bounds(level, tx, ty)[2] - plan.tile_bounds(level, tx, ty)[0]
        texel /= lay.texture_px
        ge = 0.0
        if children:
            ge = max(float(errs[level][ty, tx]), 2 * texel, *(ch.geometric_error * 1.0001 for ch in children))
        return TerrainTileNode(
            level,
            tx,
            ty,
            np.min(los, axis=0),
            np.max(his, axis=0),
            ge,
            f"tiles/{level}/{tx}/{ty}.glb" if c else None,
            children,
        )

    root = node(0, 0, 0)
    if root is None:
        raise InputError("terrain: no tile has valid heights")
    for name, doc in terrain_tilesets(root, ctx.frame.tile_transform(), ctx.build_id).items():
        write_json(out / name, doc)
        files.append(f"terrain/{name}")
    return LayerResult(
        name="terrain",
        kind="terrain",
        access=lay.access,
        tileset="terrain/tileset.json",
        files=files,
        stats={
            "source": source,
            "height_crs": height_crs,
            "levels": plan.levels,
            "tiles": len(by_key),
            "resolution_m": res,
            "vertices": int(sum(c.vertices for c in by_key.values())),
            "triangles": int(sum(c.triangles for c in by_key.values())),
            "textured": ortho is not None,
            "root_geometric_error": round(root.geometric_error, 3),
        },
        warnings=warnings,
    )


# ---- imagery -------------------------------------------------------------------------------------


def build_imagery(ctx: BuildContext) -> LayerResult:
    from rasterio.warp import transform_bounds

    from pipeline.orchestrate.imagery import build_orthophoto_outputs
    from pipeline.stages.imagery import zoom_range

    cfg = ctx.cfg
    lay = cfg.layers.terrain
    assert cfg.sources.orthophoto is not None
    out = ctx.release_dir / "imagery"
    infos = delivery_infos(ctx, "orthophoto")
    bands = orthophoto_bands(cfg.sources.orthophoto.bands)
    rgb = [bands["red"], bands["green"], bands["blue"]]
    bounds = delivery_bounds(infos, cfg.crs.horizontal)
    ll = transform_bounds(parse_crs(cfg.crs.horizontal).to_wkt(), "EPSG:4326", *bounds, densify_pts=21)
    zmin, zmax = zoom_range(ll, lay.imagery_min_res_m, lay.imagery_min_zoom, lay.imagery_max_zoom)
    # COGs of all bands at the native resolution (RGBI for QGIS: NDVI, false colour) + VRT mosaic, XYZ
    # pyramid (finest zoom warped in blocks, coarser zooms by 2x2 downsampling); unchanged tiles reused
    res = native_resolution(infos)
    grid = Grid.from_bounds(bounds, res, cfg.crs.horizontal)
    xyz = build_orthophoto_outputs(ctx, infos, rgb, ll, zmin, zmax, grid)
    files = list(xyz.files)
    # counts of this build only (the layer's stats must not depend on what a previous release held)
    ctx.log.event("imagery_xyz", built=xyz.built, reused=xyz.reused, warp_blocks=xyz.warp_blocks)
    count = xyz.stats["xyz_tiles"]
    meta = {
        "name": "orthophoto",
        "format": "xyz",
        "tiles": "xyz/{z}/{x}/{y}.png",
        "tileSize": 256,
        "scheme": "xyz",
        "crs": "EPSG:3857",
        "bounds": [round(v, 7) for v in ll],
        "minzoom": zmin,
        "maxzoom": zmax,
        # all bands at native resolution: one COG per orthophoto tile, mosaicked by a VRT (QGIS opens it)
        "mosaic": "orthophoto.vrt",
        "cog_tiles": "cog/{tile}.tif",
        "cog_crs": cfg.crs.horizontal,
        "cog_bands": list(bands),
        "resolution_m": res,
    }
    write_atomic(out / "imagery.json", json.dumps(meta, indent=1, sort_keys=True).encode())
    files.append("imagery/imagery.json")
    return LayerResult(
        name="imagery",
        kind="imagery",
        access=cfg.layers.terrain.access,
        files=files,
        stats={
            "xyz_tiles": count,
            "minzoom": zmin,
            "maxzoom": zmax,
            "cog_size": [grid.width, grid.height],
        },
    )


def build_terrain_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    cfg = ctx.cfg
    results: list[LayerResult] = []
    if not cfg.layers.terrain.enabled:
        return results
    import time

    if cfg.sources.dgm or cfg.sources.aerial:
        t0 = time.perf_counter()
        with ctx.stage("terrain.mesh"):
            res = build_terrain(ctx)
        res.seconds = time.perf_counter() - t0
        results.append(res)
    else:
        ctx.warn("terrain: neither a DGM nor aerial ground points configured; terrain layer skipped")
    if cfg.sources.orthophoto:
        t0 = time.perf_counter()
        with ctx.stage("terrain.imagery"):
            res = build_imagery(ctx)
        res.seconds = time.perf_counter() - t0
        results.append(res)
    else:
        ctx.warn("imagery: no orthophoto configured; imagery layer skipped")
    return results
