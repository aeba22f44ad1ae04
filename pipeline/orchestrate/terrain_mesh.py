"""Terrain layer by chunks, with per-tile reuse.

    build_terrain_mesh(ctx) -> (LayerResult, TerrainCounts)

1. Plan (this process): the quadtree of the district (`plan_terrain`) cut into chunks at the chunk level
   (`pipeline.stages.terrain.chunks`).
2. Chunks (tasks, memoised in the build cache): per chunk, the DGM window is read once -> vertex heights
   and errors of its tiles + its level-c cells; the orthophoto window is read once -> textures of its
   tiles + the chunk tile's pixels. Keys: the sha256 of the DGM (resp. orthophoto) tiles the window
   touches, the config and the chunk, so a changed DGM tile recomputes only the chunks it touches, and a
   changed DGM tile never re-reads the orthophoto.
3. Upper levels (this process): vertex heights, error bounds and textures of the tiles above the chunk
   level from the chunks' summaries; skirt depths from the errors.
4. Tiles (tasks): mesh + geoid + GLB of every tile whose content key (its vertex heights, skirt,
   texture bytes, CRS config, frame) differs from the previous release's; every other GLB is hard-linked.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine

from pipeline.errors import InputError
from pipeline.model import BuildContext, LayerResult
from pipeline.sources.rasters import Grid, RasterInfo, TileIndex, native_resolution


@dataclass
class TerrainCounts:
    """What this build computed vs reused (for logs, tests and benchmarks; not part of the release)."""

    chunks: int = 0
    mesh_chunks_built: int = 0
    texture_chunks_built: int = 0
    tiles: int = 0
    tiles_built: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per phase


def _dgm_chunk(infos: list[RasterInfo], layout: Any, cx: int, cy: int, crs: str) -> Any:
    from rasterio.enums import Resampling

    from pipeline.stages.terrain.chunks import mesh_chunk
    from pipeline.stages.terrain.texture import read_window

    b = layout.window_bounds(cx, cy)
    n = layout.side + 2 * layout.factor
    res = layout.plan.res
    grid = Grid(Affine(res, 0, b[0], 0, -res, b[3]), n, n, crs)
    data, valid = read_window(infos, grid, [1], Resampling.bilinear)
    heights = np.where(valid, data[0].astype(np.float32), np.float32(np.nan))
    return mesh_chunk(layout, cx, cy, heights)


def _window_of(fine: np.ndarray, layout: Any, cx: int, cy: int) -> np.ndarray:
    """A chunk window cut from the whole model of the root square (NaN outside it)."""
    n = layout.side + 2 * layout.factor
    r0, c0 = layout.window_origin(cx, cy)
    out = np.full((n, n), np.nan, dtype=np.float32)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + n, fine.shape[0]), min(c0 + n, fine.shape[1])
    out[rs - r0 : re - r0, cs - c0 : ce - c0] = fine[rs:re, cs:ce]
    return out


def _meta(lo: np.ndarray, hi: np.ndarray, vertices: int, triangles: int) -> tuple:
    return (lo, hi, vertices, triangles)


def build_terrain_mesh(ctx: BuildContext) -> tuple[LayerResult, TerrainCounts]:
    from pipeline.orchestrate.cache import (
        CachedCall,
        build_cache,
        content_key,
        input_sha256,
        run_cached,
    )
    from pipeline.orchestrate.reuse import record_outputs, reuse_files
    from pipeline.orchestrate.terrain import (
        _ground_resolution,
        delivery_infos,
        dgm_height_crs,
        ground_model,
        las_bounds,
        run_tasks,
    )
    from pipeline.sources.rasters import delivery_bounds, orthophoto_bands
    from pipeline.stages.imagery import ortho_scale
    from pipeline.stages.terrain import plan_terrain, terrain_tile
    from pipeline.stages.terrain.chunks import (
        chunk_layout,
        edge_skirts,
        mesh_chunk,
        upper_errors,
        upper_levels,
    )
    from pipeline.stages.terrain.texture import chunk_textures, upper_textures
    from pipeline.tiles.terrain_glb import TerrainTileNode, terrain_tilesets
    from pipeline.tiles.tileset import write_atomic, write_json

    cfg = ctx.cfg
    lay = cfg.layers.terrain
    crs = cfg.crs.horizontal
    out = ctx.release_dir / "terrain"
    warnings: list[str] = []
    counts = TerrainCounts()
    infos: list[RasterInfo] = []
    if cfg.sources.dgm:
        infos = delivery_infos(ctx, "dgm")
        bounds = delivery_bounds(infos, crs)
        res = lay.resolution_m or native_resolution(infos)
        height_crs, source = dgm_height_crs(cfg, infos), "dgm"
    else:
        ep = cfg.sources.aerial[-1] if cfg.sources.aerial else None
        if ep is None:
            raise InputError("terrain needs sources.dgm or an aerial point cloud (ground points)")
        ep_files = [i.path for i in ctx.inputs_for(f"aerial:{ep.epoch}")]
        bounds = las_bounds(ep_files, cfg.crs, ep.crs)
        res = _ground_resolution(ep_files, bounds, lay.resolution_m or lay.ground_res_m, crs)
        warnings.append(
            f"no DGM configured: terrain from rasterised ground points of epoch {ep.epoch} "
            f"({res:.3g} CRS units per cell)"
        )
        height_crs, source = cfg.crs.compound, f"ground points {ep.epoch}"
    plan = plan_terrain(bounds, res, lay.tile_cells)
    layout = chunk_layout(plan)
    c, tc = layout.level, lay.tile_cells
    chunk_ids = [(cx, cy) for cy in range(layout.count) for cx in range(layout.count)]
    counts.chunks = len(chunk_ids)
    cache = build_cache(ctx)

    # ---- 2. chunks: orthophoto textures and (DGM) vertex heights + errors, one batch of tasks
    ortho = None
    tcalls: list[CachedCall] = []
    tids: list[tuple[int, int]] = []
    if lay.texture_from_orthophoto and cfg.sources.orthophoto:
        ortho = delivery_infos(ctx, "orthophoto")
        bands = orthophoto_bands(cfg.sources.orthophoto.bands)
        rgb = [bands["red"], bands["green"], bands["blue"]]
        scale = ortho_scale(ortho)
        depth = plan.levels - 1 - c
        kw = {
            "depth": depth,
            "texture_px": lay.texture_px,
            "rgb_bands": rgb,
            "scale": scale,
            "fmt": lay.texture_format,
            "quality": lay.texture_quality,
            "subsampling": lay.texture_subsampling,
        }
        ortho_index = TileIndex(ortho, crs)
        for cx, cy in chunk_ids:
            b = layout.chunk_bounds(cx, cy)
            touched = ortho_index.overlapping(b)
            if not touched:
                continue
            key = [
                "terrain-texture-chunk-v1",
                b,
                depth,
                lay.texture_px,
                rgb,
                scale,
                lay.texture_format,
                lay.texture_quality,
                lay.texture_subsampling,
                [input_sha256(ctx, i.path) for i in touched],
                cfg.sources.orthophoto,
                crs,
            ]
            tcalls.append((key, chunk_textures, (touched, b, crs), kw))
            tids.append((cx, cy))
    elif lay.texture_from_orthophoto:
        warnings.append("no orthophoto configured: terrain is untextured")
    mcalls: list[CachedCall] = []
    if cfg.sources.dgm:
        dgm_index = TileIndex(infos, crs)
        for cx, cy in chunk_ids:
            touched = dgm_index.overlapping(layout.window_bounds(cx, cy))
            if not touched:
                continue
            key = [
                "terrain-dgm-chunk-v1",
                layout,
                cx,
                cy,
                [input_sha256(ctx, i.path) for i in touched],
                cfg.sources.dgm,
                crs,
            ]
            mcalls.append((key, _dgm_chunk, (touched, layout, cx, cy, crs), {}))
    counts.mesh_chunks_built = sum(1 for kp, *_ in mcalls if cache.get(cache.key(kp)) is None)
    counts.texture_chunks_built = sum(1 for kp, *_ in tcalls if cache.get(cache.key(kp)) is None)
    t0 = time.perf_counter()
    done = run_cached(ctx, tcalls + mcalls, "terrain-chunk")
    counts.seconds["chunks"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    tex_chunks, chunks = done[: len(tcalls)], done[len(tcalls) :]
    if not cfg.sources.dgm:
        n = tc * 2 ** (plan.levels - 1)
        root_bounds = (plan.x0, plan.y1 - n * res, plan.x0 + n * res, plan.y1)
        fine, _grid, _hc, _src = ground_model(ctx, res, root_bounds)
        chunks = [mesh_chunk(layout, cx, cy, _window_of(fine, layout, cx, cy)) for cx, cy in chunk_ids]
        counts.mesh_chunks_built = len(chunks)
        del fine
    verts: dict[tuple[int, int, int], np.ndarray] = {}
    errs = [np.zeros((2**level, 2**level)) for level in range(plan.levels)]
    cells: dict[tuple[int, int], np.ndarray] = {}
    for ch in chunks:
        verts.update(ch.vertices)
        cells[(ch.cx, ch.cy)] = ch.cells
        for level, e in ch.errors.items():
            k = 2 ** (level - c)
            errs[level][ch.cy * k : (ch.cy + 1) * k, ch.cx * k : (ch.cx + 1) * k] = e
    if not any(np.isfinite(a).any() for a in cells.values()):
        raise InputError("the terrain model has no valid height inside the district")

    # ---- 3. upper levels: heights, error bounds, skirts, textures from the chunks' summaries
    if c > 0:
        upper = upper_levels(layout, cells)
        verts.update(upper)
        for level, e in enumerate(upper_errors(layout, verts, errs[c])):
            errs[level] = e
    skirts = edge_skirts(verts, plan.levels, tc)
    textures: dict[tuple[int, int, int], bytes] = {}
    if ortho is not None:
        summaries = {}
        for (cx, cy), t in zip(tids, tex_chunks, strict=True):
            summaries[(cx, cy)] = (t.rgb, t.valid)
            for (d, i, j), img in t.images.items():
                k = 2**d
                textures[(c + d, cx * k + i, cy * k + j)] = img
        textures.update(
            upper_textures(
                c, summaries, lay.texture_px, lay.texture_format, lay.texture_quality, lay.texture_subsampling
            )
        )

    counts.seconds["upper"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()

    # ---- 4. tiles: reuse by content key, build the rest
    tiles = sorted((k for k, v in verts.items() if np.isfinite(v).any()), key=lambda t: (t[0], t[2], t[1]))
    keys: dict[tuple[int, int, int], str] = {}
    common = content_key(
        "terrain-glb-v1", lay.texture_format, lay.mesh_encoding, height_crs, cfg.crs, ctx.frame
    )
    for level, tx, ty in tiles:
        tex = textures.get((level, tx, ty)) if ortho is not None else None
        keys[(level, tx, ty)] = cache.key(
            [
                common,
                level,
                tx,
                ty,
                plan.tile_bounds(level, tx, ty),
                verts[(level, tx, ty)],
                float(skirts[level][ty, tx]),
                hashlib.sha256(tex).hexdigest() if tex is not None else None,
            ]
        )
    rel = {t: f"tiles/{t[0]}/{t[1]}/{t[2]}.glb" for t in tiles}
    metas: dict[tuple[int, int, int], tuple] = {}
    for t in tiles:
        hit, m = cache.load(keys[t])
        if hit:
            metas[t] = m
    # a tile without mesh (all triangles on no-data) is known from its metadata and has no file
    wanted = {f"terrain/{rel[t]}": keys[t] for t in tiles if t in metas and metas[t] is not None}
    stale_rel = set(reuse_files(ctx, wanted))
    build = [t for t in tiles if t not in metas or f"terrain/{rel[t]}" in stale_rel]
    calls = []
    for level, tx, ty in build:
        calls.append(
            (
                (level, tx, ty, verts[(level, tx, ty)], plan.tile_bounds(level, tx, ty)),
                {
                    "source_crs": height_crs,
                    "crs_cfg": cfg.crs,
                    "frame": ctx.frame,
                    "texture_format": lay.texture_format,
                    "mesh_encoding": lay.mesh_encoding,
                    "skirt": float(skirts[level][ty, tx]),
                    "texture": textures.get((level, tx, ty)) if ortho is not None else None,
                },
            )
        )
    counts.seconds["keys"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    built = run_tasks(ctx, terrain_tile, calls, "terrain-tile")
    counts.seconds["tiles"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    written: dict[str, str] = {}
    for t, content in zip(build, built, strict=True):
        if content.glb is None:
            m = None
        else:
            write_atomic(out / rel[t], content.glb)
            written[f"terrain/{rel[t]}"] = keys[t]
            m = _meta(content.lo, content.hi, content.vertices, content.triangles)
        metas[t] = cache.call_key(keys[t], _identity, m)
    record_outputs(ctx, written)
    counts.tiles = sum(1 for t in tiles if metas[t] is not None)
    counts.tiles_built = len(written)

    by_key = {t: m for t, m in metas.items() if m is not None}
    files = [f"terrain/{rel[t]}" for t in sorted(by_key)]

    def node(level: int, tx: int, ty: int) -> TerrainTileNode | None:
        m = by_key.get((level, tx, ty))
        children = []
        if level + 1 < plan.levels:
            for dy in (0, 1):
                for dx in (0, 1):
                    ch = node(level + 1, 2 * tx + dx, 2 * ty + dy)
                    if ch is not None:
                        children.append(ch)
        if m is None and not children:
            return None
        los = [ch.lo for ch in children] + ([m[0]] if m else [])
        his = [ch.hi for ch in children] + ([m[1]] if m else [])
        b = plan.tile_bounds(level, tx, ty)
        texel = (b[2] - b[0]) / lay.texture_px
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
            f"tiles/{level}/{tx}/{ty}.glb" if m else None,
            children,
        )

    root = node(0, 0, 0)
    if root is None:
        raise InputError("terrain: no tile has valid heights")
    for name, doc in terrain_tilesets(root, ctx.frame.tile_transform(), ctx.build_id).items():
        write_json(out / name, doc)
        files.append(f"terrain/{name}")
    counts.seconds["write"] = round(time.perf_counter() - t0, 3)
    result = LayerResult(
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
            "vertices": int(sum(m[2] for m in by_key.values())),
            "triangles": int(sum(m[3] for m in by_key.values())),
            "textured": ortho is not None,
            "root_geometric_error": round(root.geometric_error, 3),
        },
        warnings=warnings,
    )
    return result, counts


def _identity(x: Any) -> Any:
    return x
