"""Orthophoto -> XYZ PNG pyramid: plan keys per tile, reuse unchanged tiles, build the rest on the workers.

    build_xyz_pyramid(ctx, infos, rgb, lonlat_bounds, zmin, zmax) -> XyzResult

Plan (here, cheap): the tiles of every zoom, a content key per tile and which tiles a previous release
already holds under that key. The key of a finest-zoom tile is made of the (name, sha256) of the source
tiles that overlap it (in mosaic order) and the warp parameters; the key of a coarser tile is made of its
children's keys. One changed DOP tile therefore changes the keys of the finest tiles it touches and of their
ancestors only; every other tile is hard-linked from the previous release (`reuse_files`).

Execute (Dask, one task per subtree): pass 1 warps the finest zoom in blocks (`warp_rgba`) and builds
`SUBTREE_LEVELS` coarser zooms inside each subtree by 2 x 2 downsampling (`downsample_rgba`); pass 2, 3, ...
build the next zooms from the tiles the previous pass wrote (decoded from the staging folder), so a task
holds at most `2**SUBTREE_LEVELS` squared tiles whatever the region's size. Workers write their tiles
straight into the staging folder (shared with the client, as for the point layer).

Finest-zoom tiles that turn out empty (key but no pixel, e.g. the corner of a source's bounding box) are
remembered per warp block in the build cache (`paths.cache`), so an unchanged block is not warped again
just to learn that it has nothing to write.
"""

from __future__ import annotations

import concurrent.futures
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.model import BuildContext
from pipeline.orchestrate.executor import build_executor, map_ordered
from pipeline.sources.rasters import RasterInfo

SUBTREE_LEVELS = 3  # a task covers 8 x 8 tiles of its finest zoom and 3 coarser zooms above them
MAX_WARP_SRC_PX = 2048  # a warp block reads at most about this many source pixels per side
MAX_WARP_BLOCK_TILES = 2  # tiles per side of a warp block (a changed source re-warps whole blocks)
METHOD = "xyz-pyramid-v1"  # bump when the pixels change for the same inputs

Tile = tuple[int, int, int]  # (z, x, y)


@dataclass
class XyzResult:
    files: list[str]  # release-relative paths, sorted by zoom, x, y
    built: int  # tiles written by this build
    reused: int  # tiles hard-linked from a previous release
    warp_blocks: int  # finest-zoom blocks warped by this build
    stats: dict[str, Any] = field(default_factory=dict)


def tile_rel(z: int, x: int, y: int) -> str:
    return f"imagery/xyz/{z}/{x}/{y}.png"


def warp_block_tiles(infos: Sequence[RasterInfo], zmax: int, lat: float) -> int:
    """Tiles per side of a warp block (power of two, 1..MAX_WARP_BLOCK_TILES): the largest whose source window stays within
    `MAX_WARP_SRC_PX` (2 at 10 and 20 cm in the Ruhr), so a block's memory does not grow with the
    delivery's resolution."""
    import math

    from pipeline.stages.imagery import ORIGIN

    tile_ground_m = 2 * ORIGIN / 2**zmax * math.cos(math.radians(lat))
    src_res = min(min(i.res) for i in infos)
    w = MAX_WARP_BLOCK_TILES
    while w > 1 and w * tile_ground_m / src_res > MAX_WARP_SRC_PX:
        w //= 2
    return w


def source_boxes_mercator(infos: Sequence[RasterInfo]) -> list[tuple[float, float, float, float]]:
    """Bounding box of every source tile in web-mercator metres (densified edges: a safe over-estimate)."""
    from pyproj import CRS

    from pipeline.stages.imagery import _transformer

    out: list[tuple[float, float, float, float]] = []
    for i in infos:
        crs = CRS(i.crs)
        if crs.is_compound:
            crs = crs.sub_crs_list[0]
        t = _transformer(crs.to_wkt(), "EPSG:3857")
        x0, y0, x1, y1 = t.transform_bounds(*i.bounds, densify_pts=21)
        out.append((float(x0), float(y0), float(x1), float(y1)))
    return out


def finest_tile_sources(
    boxes: Sequence[tuple[float, float, float, float]],
    zmax: int,
    tiles: set[tuple[int, int]],
    margin_m: float,
) -> dict[tuple[int, int], list[int]]:
    """Indices (mosaic order) of the sources whose box, grown by `margin_m`, overlaps each tile of `zmax`."""
    from pipeline.stages.imagery import ORIGIN

    size = 2 * ORIGIN / 2**zmax
    out: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, (xmin, ymin, xmax, ymax) in enumerate(boxes):
        x0 = int((xmin - margin_m + ORIGIN) // size)
        x1 = int((xmax + margin_m + ORIGIN) // size)
        y0 = int((ORIGIN - (ymax + margin_m)) // size)
        y1 = int((ORIGIN - (ymin - margin_m)) // size)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                if (x, y) in tiles:
                    out[(x, y)].append(k)
    return out


def reaches(
    box: tuple[float, float, float, float], window: tuple[int, int, int, int], zmax: int, margin: float
) -> bool:
    """Whether a source's web-mercator `box`, grown by `margin`, may reach the tiles (x0, y0) ..
    (x0+nx-1, y0+ny-1) of zoom `zmax` in `window` (x0, y0, nx, ny)."""
    from pipeline.stages.imagery import ORIGIN

    size = 2 * ORIGIN / 2**zmax
    x0, y0, nx, ny = window
    return (
        box[0] < -ORIGIN + (x0 + nx) * size + margin
        and box[2] > -ORIGIN + x0 * size - margin
        and box[1] < ORIGIN - y0 * size + margin
        and box[3] > ORIGIN - (y0 + ny) * size - margin
    )


def block_sources(
    boxes: Sequence[tuple[float, float, float, float]],
    windows: dict[tuple[int, int], tuple[int, int, int, int]],
    zmax: int,
    margin_m: float,
) -> dict[tuple[int, int], list[int]]:
    """Indices (mosaic order) of the sources that `reaches` each warp block's window of `zmax` tiles.

    Only the sources listed for a tile of the window (`finest_tile_sources` with a margin one tile wider)
    are tested: a region's plan tests each block against a few sources, not against every source of the
    delivery (123,000 blocks x 4,422 DOP tiles for the Ruhr at zoom 18)."""
    from pipeline.stages.imagery import ORIGIN

    size = 2 * ORIGIN / 2**zmax
    tiles = {
        (x0 + dx, y0 + dy) for x0, y0, nx, ny in windows.values() for dx in range(nx) for dy in range(ny)
    }
    near = finest_tile_sources(boxes, zmax, tiles, margin_m + size)
    out: dict[tuple[int, int], list[int]] = {}
    for b, (x0, y0, nx, ny) in windows.items():
        cand = sorted({k for dx in range(nx) for dy in range(ny) for k in near.get((x0 + dx, y0 + dy), ())})
        out[b] = [k for k in cand if reaches(boxes[k], (x0, y0, nx, ny), zmax, margin_m)]
    return out


# ---- worker task ------------------------------------------------------------------------------------


def _subtree_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the stale tiles of one subtree (root tile and `leaf_z`), write them into the staging folder.

    Finest-zoom pixels come from `warp_rgba` for the blocks in `warp_blocks`, every other tile that is not
    stale from its file in the staging folder (reused or written by an earlier pass), absent file = empty.
    Returns the tiles written and, per warped block, its tiles that have pixels."""
    import numpy as np
    from rasterio.enums import Resampling

    from pipeline.stages.imagery import (
        decode_rgba_png,
        downsample_rgba,
        encode_rgba_png,
        warp_rgba,
    )
    from pipeline.tiles.tileset import write_atomic

    release = Path(spec["release_dir"])
    stale: set[Tile] = {tuple(t) for t in spec["stale"]}
    zmax: int = spec["zmax"]
    leaf_z: int = spec["leaf_z"]
    region: set[tuple[int, int]] = {tuple(t) for t in spec["region_leaf"]}
    memo: dict[Tile, np.ndarray | None] = {}
    warp_nonempty: dict[str, list[tuple[int, int]]] = {}
    if spec["warp_blocks"]:
        rs = Resampling[spec["resampling"]]
        for (bx, by), (x0, y0, nx, ny), src in spec["warp_blocks"]:
            block_infos = [spec["infos"][k] for k in src]
            block = warp_rgba(
                block_infos, zmax, x0, y0, nx, ny, spec["rgb"], spec["scale"], rs, kernel=spec["kernel"]
            )
            nonempty = []
            for dx in range(nx):
                for dy in range(ny):
                    xy = (x0 + dx, y0 + dy)
                    if xy not in region:
                        continue
                    px = block[dy * 256 : (dy + 1) * 256, dx * 256 : (dx + 1) * 256]
                    if px[..., 3].any():
                        memo[(zmax, *xy)] = px.copy()
                        nonempty.append(xy)
                    else:
                        memo[(zmax, *xy)] = None
            warp_nonempty[f"{bx},{by}"] = sorted(nonempty)

    def pixels(t: Tile) -> np.ndarray | None:
        if t in memo:
            return memo[t]
        z, x, y = t
        px: np.ndarray | None
        if t not in stale or z == leaf_z:
            p = release / tile_rel(z, x, y)
            px = decode_rgba_png(p.read_bytes()) if p.is_file() else None
        else:
            kids = [(z + 1, 2 * x + dx, 2 * y + dy) for dy in (0, 1) for dx in (0, 1)]
            px = downsample_rgba([pixels(k) for k in kids])
        memo[t] = px
        return px

    written: list[Tile] = []
    for tile in sorted(stale, key=lambda t: (-t[0], t[1], t[2])):  # finest first: children before parents
        rgba = pixels(tile)
        if rgba is not None:
            write_atomic(release / tile_rel(*tile), encode_rgba_png(rgba))
            written.append(tile)
    return {"written": written, "warp_nonempty": warp_nonempty}


# ---- plan + run -------------------------------------------------------------------------------------


def build_xyz_pyramid(
    ctx: BuildContext,
    infos: Sequence[RasterInfo],
    rgb: Sequence[int],
    lonlat_bounds: tuple[float, float, float, float],
    zmin: int,
    zmax: int,
) -> XyzResult:
    import math

    from pipeline.orchestrate.cache import build_cache, content_key, input_sha256
    from pipeline.orchestrate.reuse import record_outputs, reuse_files
    from pipeline.orchestrate.terrain import run_tasks
    from pipeline.release.manifest import pipeline_fingerprint
    from pipeline.stages.imagery import ORIGIN, kernel_applies, ortho_scale, tiles_for, xyz_resampling

    cfg = ctx.cfg
    lat = (lonlat_bounds[1] + lonlat_bounds[3]) / 2
    scale = ortho_scale(infos)
    resampling = xyz_resampling(infos, zmax)
    kernel = kernel_applies(infos, scale, resampling)
    # a warp block never spans two subtrees of the first pass
    w = min(warp_block_tiles(infos, zmax, lat), 2 ** min(SUBTREE_LEVELS, zmax - zmin))
    params = content_key(
        pipeline_fingerprint(),
        METHOD,
        list(rgb),
        scale,
        resampling.name,
        w,
        cfg.sources.orthophoto,
        cfg.crs.horizontal,
    )
    # ---- tiles and keys
    leaf = set(tiles_for(lonlat_bounds, zmax))
    boxes = source_boxes_mercator(infos)
    src_res_merc = min(min(i.res) for i in infos) / math.cos(math.radians(lat))
    margin = 4 * src_res_merc + 2 * ORIGIN / 2**zmax / 256
    sources = finest_tile_sources(boxes, zmax, leaf, margin)
    src_ids = [(Path(i.path).name, input_sha256(ctx, i.path)) for i in infos]
    keys: dict[Tile, str | None] = {}
    for x, y in leaf:
        idx = sources.get((x, y))
        keys[(zmax, x, y)] = content_key(params, zmax, x, y, [src_ids[k] for k in idx]) if idx else None
    levels: dict[int, set[tuple[int, int]]] = {zmax: leaf}
    for z in range(zmax - 1, zmin - 1, -1):
        levels[z] = {(x // 2, y // 2) for x, y in levels[z + 1]}

    # ---- warp blocks: w x w aligned tiles, each clipped to the rectangle of its tiles with a source
    cache = build_cache(ctx)
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for x, y in sorted(leaf):
        if keys[(zmax, x, y)] is not None:
            blocks[(x - x % w, y - y % w)].append((x, y))
    windows: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for b, ts in blocks.items():
        xs = [t[0] for t in ts]
        ys = [t[1] for t in ts]
        windows[b] = (min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)
        # the window shapes the warp (GDAL's approximate transformer): it is part of its tiles' keys
        for t in ts:
            keys[(zmax, *t)] = content_key(keys[(zmax, *t)], windows[b])
    for z in range(zmax - 1, zmin - 1, -1):
        for x, y in levels[z]:
            kids = [keys.get((z + 1, 2 * x + dx, 2 * y + dy)) for dy in (0, 1) for dx in (0, 1)]
            keys[(z, x, y)] = content_key(params, z, x, y, kids) if any(kids) else None

    # ---- what is known to be empty: no source, or a warp block the cache remembers
    block_keys = {
        b: cache.key(["imagery-warp-block", params, sorted((t, keys[(zmax, *t)]) for t in ts)])
        for b, ts in blocks.items()
    }
    empty: set[Tile] = {t for t, k in keys.items() if k is None}
    for b, ts in blocks.items():
        hit, nonempty = cache.load(block_keys[b])
        if hit:
            ne = {(int(v[0]), int(v[1])) for v in nonempty}
            empty.update((zmax, x, y) for x, y in ts if (x, y) not in ne)
    for z in range(zmax - 1, zmin - 1, -1):
        for x, y in levels[z]:
            kid_tiles = [(z + 1, 2 * x + dx, 2 * y + dy) for dy in (0, 1) for dx in (0, 1)]
            if all(k in empty or k not in keys for k in kid_tiles):
                empty.add((z, x, y))
    wanted = {tile_rel(*t): k for t, k in keys.items() if t not in empty and k is not None}
    stale_rel = set(reuse_files(ctx, wanted))
    stale = {t for t in keys if t not in empty and tile_rel(*t) in stale_rel}

    # ---- passes: finest zoom + SUBTREE_LEVELS above it, then the next SUBTREE_LEVELS, ...
    warp_blocks = sorted({(x - x % w, y - y % w) for z, x, y in stale if z == zmax})
    src_of_block = block_sources(boxes, {b: windows[b] for b in warp_blocks}, zmax, margin)

    built: set[Tile] = set()
    warped = 0
    leaf_z = zmax
    pass_no = 0
    while True:
        root_z = max(zmin, leaf_z - SUBTREE_LEVELS)
        lo = leaf_z if pass_no == 0 else leaf_z - 1
        groups: dict[tuple[int, int], list[Tile]] = defaultdict(list)
        for st in stale:
            if root_z <= st[0] <= lo:
                d = st[0] - root_z
                groups[(st[1] >> d, st[2] >> d)].append(st)
        blocks_of: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        if pass_no == 0:  # subtrees with a block to warp but no stale tile of their own cannot occur
            d = zmax - root_z
            for b in warp_blocks:  # sorted: each subtree's blocks in the order of `warp_blocks`
                groups.setdefault((b[0] >> d, b[1] >> d), [])
                blocks_of[(b[0] >> d, b[1] >> d)].append(b)
        calls: list[tuple[tuple, dict]] = []
        for (rx, ry), group in sorted(groups.items()):
            spec: dict[str, Any] = {
                "release_dir": str(ctx.release_dir),
                "stale": sorted(group),
                "zmax": zmax,
                "leaf_z": leaf_z,
                "region_leaf": [],
                "warp_blocks": [],
            }
            if pass_no == 0:
                mine = blocks_of.get((rx, ry), [])
                # sources of each block (mosaic order kept): a block opens only the tiles it needs
                block_src = {b: src_of_block[b] for b in mine}
                used = sorted({k for ks in block_src.values() for k in ks})
                pos = {k: n for n, k in enumerate(used)}
                use = [infos[k] for k in used]
                spec.update(
                    warp_blocks=[(b, windows[b], [pos[k] for k in block_src[b]]) for b in mine],
                    infos=use,
                    rgb=list(rgb),
                    scale=scale,
                    resampling=resampling.name,
                    kernel=kernel,
                    region_leaf=sorted(t for b in mine for t in blocks[b]),
                )
                warped += len(mine)
            calls.append(((spec,), {}))
        results = run_tasks(ctx, _subtree_task, calls, f"imagery-xyz-{pass_no}", min_parallel=2, per_task=1)
        for res in results:
            written = [tuple(t) for t in res["written"]]
            built.update(written)
            record_outputs(ctx, {tile_rel(*t): wanted[tile_rel(*t)] for t in written})
            for b, ne in res["warp_nonempty"].items():
                bx, by = (int(v) for v in b.split(","))
                cache.call_key(block_keys[(bx, by)], list, ne)
        if root_z == zmin:
            break
        leaf_z = root_z
        pass_no += 1
    present = [t for t in keys if t not in empty and (t in built or t not in stale)]
    files = [tile_rel(*t) for t in sorted(present)]
    return XyzResult(
        files=files,
        built=len(built),
        reused=len(present) - len(built),
        warp_blocks=warped,
        stats={"xyz_tiles": len(files), "warp_block_tiles": w, "resampling": resampling.name},
    )


COG_DIR = "imagery/cog"
VRT_REL = "imagery/orthophoto.vrt"


def tile_cog_grids(infos: Sequence[RasterInfo], grid: Any) -> list[tuple[str, Any, int, int]]:
    """Per source tile: (release path of its COG, its grid: the cells of `grid` under the tile, column and
    row of that grid in `grid`). COGs are named after the source tile, which must be unique."""
    from affine import Affine
    from rasterio.warp import transform_bounds

    from pipeline.crs import parse_crs
    from pipeline.errors import InputError
    from pipeline.sources.rasters import Grid

    out = []
    seen: dict[str, Path] = {}
    target = parse_crs(grid.crs)
    for i in infos:
        stem = Path(i.path).stem
        if stem in seen:
            raise InputError(
                f"two orthophoto tiles are named {stem!r} ({seen[stem]}): per-tile COGs need unique names",
                path=i.path,
            )
        seen[stem] = Path(i.path)
        b = i.bounds
        if i.reproject or _epsg(i.crs) != _epsg(target):
            b = transform_bounds(i.crs, target, *b, densify_pts=21)
        g = Grid.from_bounds(b, grid.res, grid.crs)
        col = round((g.transform.c - grid.transform.c) / grid.res)
        row = round((grid.transform.f - g.transform.f) / grid.res)
        # clip to the mosaic grid (a reprojected tile's box may reach past the delivery's bounds)
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + g.width, grid.width), min(row + g.height, grid.height)
        g = Grid(grid.transform * Affine.translation(c0, r0), max(1, c1 - c0), max(1, r1 - r0), grid.crs)
        out.append((f"{COG_DIR}/{stem}.tif", g, c0, r0))
    return out


def _epsg(crs: Any) -> int | None:
    """EPSG code of the horizontal part of `crs`."""
    from pyproj import CRS

    c = CRS(crs)
    if c.is_compound:
        c = c.sub_crs_list[0]
    return c.to_epsg()


def build_orthophoto_outputs(
    ctx: BuildContext,
    infos: Sequence[RasterInfo],
    rgb: Sequence[int],
    lonlat_bounds: tuple[float, float, float, float],
    zmin: int,
    zmax: int,
    cog_grid: Any,
) -> XyzResult:
    """The XYZ pyramid, one COG per orthophoto tile (`write_cog` on the cells of `cog_grid` under it, all
    bands) and a VRT mosaic of them (`orthophoto.vrt`, first tile in path order on top, as `read_grid`).
    A tile's COG is keyed by that tile's content only: one changed DOP tile rebuilds one COG. COGs are
    built on the workers while the pyramid runs beside them."""
    from pipeline.errors import InputError
    from pipeline.orchestrate.cache import content_key, input_sha256
    from pipeline.orchestrate.reuse import record_outputs, reuse_files
    from pipeline.release.manifest import pipeline_fingerprint
    from pipeline.stages.imagery import COG_OPTIONS, write_cog
    from pipeline.tiles.tileset import write_atomic
    from pipeline.tiles.vrt import mosaic_vrt

    bands = infos[0].count
    for i in infos:
        if i.count != bands:
            raise InputError(f"orthophoto tile has {i.count} bands, the first tile {bands}", path=i.path)
    cogs = tile_cog_grids(infos, cog_grid)
    keys = {
        rel: content_key(
            pipeline_fingerprint(),
            "imagery-cog-tile",
            COG_OPTIONS,
            (Path(i.path).name, input_sha256(ctx, i.path)),
            g,
            ctx.cfg.sources.orthophoto,
        )
        for i, (rel, g, _c, _r) in zip(infos, cogs, strict=True)
    }
    stale = set(reuse_files(ctx, keys))
    todo = [(i, rel, g) for i, (rel, g, _c, _r) in zip(infos, cogs, strict=True) if rel in stale]
    cog_items = [([i], g, ctx.release_dir / rel) for i, rel, g in todo]
    executor = build_executor(ctx.client)
    if executor is None:
        map_ordered(None, write_cog, cog_items, name="imagery-cog")
        xyz = build_xyz_pyramid(ctx, infos, rgb, lonlat_bounds, zmin, zmax)
    else:  # the COG tiles run on the workers while this process plans the XYZ pyramid
        with concurrent.futures.ThreadPoolExecutor(1) as waiter:
            cogs_done = waiter.submit(map_ordered, executor, write_cog, cog_items, name="imagery-cog")
            xyz = build_xyz_pyramid(ctx, infos, rgb, lonlat_bounds, zmin, zmax)
            cogs_done.result()
    record_outputs(ctx, {rel: keys[rel] for _i, rel, _g in todo})
    # the mosaic: last tile first, so the first in path order is drawn last (on top)
    srcs = [(Path(rel).relative_to("imagery").as_posix(), c, r, g.width, g.height) for rel, g, c, r in cogs]
    from pipeline.crs import parse_crs

    vrt = mosaic_vrt(
        cog_grid.width,
        cog_grid.height,
        cog_grid.transform,
        parse_crs(cog_grid.crs).to_wkt(),
        bands,
        list(reversed(srcs)),
    )
    write_atomic(ctx.release_dir / VRT_REL, vrt)
    xyz.files += [*sorted(keys), VRT_REL]
    xyz.stats["cogs_built"] = len(todo)
    return xyz
