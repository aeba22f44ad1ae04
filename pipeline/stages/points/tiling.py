"""Point tiling, stages 2-4 (stage 1, the decode: pipeline.stages.points.decode). Each is a pure function of
paths + a small job description; no Dask in here.

2. `plan_bins`        octree nodes holding at most `max_bin_points` points (searches in the spill files).
3. `process_bin`      one bin: full-depth keys, sort, nested min-hash levels, write the bin's tiles; points
                      that belong to tiles above the bin go to a small "upper" file.
4. `process_upper`    resolves the levels of the bins' minimum points across bins and writes the tiles
                      above the bins.

The kernels (numba) are imported by the functions that run them (see `decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.point_attributes import record_fields
from pipeline.stages.points.spill import GRID_BITS, CubeSpec, SpillPart, SpillSearch, read_ranges
from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8, PointSchema, glb_pieces, vertex_dtype


@dataclass(frozen=True)
class TileJob:
    cube: CubeSpec
    out_dir: str  # staging directory (content goes to out_dir/content/...)
    fmt: str  # "1.1" (glb) | "1.0" (pnts)
    max_points: int
    schema: PointSchema  # the attributes of the spill records and tiles
    meshopt: bool = False


@dataclass(frozen=True)
class TileRecord:
    depth: int
    ix: int
    iy: int
    iz: int
    count: int
    lo_mm: tuple[int, int, int]
    hi_mm: tuple[int, int, int]
    checksum: int
    uri: str  # relative to out_dir


@dataclass(frozen=True)
class BinResult:
    depth: int
    prefix: int
    tiles: list[TileRecord]
    upper_path: str | None = None  # the points of the tiles above the bin (see `process_upper`)
    upper_count: int = 0


# ---- 2. bins ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinSpec:
    depth: int
    prefix: int  # Morton prefix at `depth`
    count: int
    ranges: tuple[tuple[str, int, int], ...]  # (rec_path, first, last) per spill part


def plan_bins(
    parts: list[SpillPart], cube: CubeSpec, dtype: np.dtype, max_bin_points: int, max_depth: int
) -> list[BinSpec]:
    """Split the octree top-down until every node holds at most `max_bin_points` (or depth limit)."""
    search = [SpillSearch(p.rec_path, dtype, p.count, cube) for p in parts if p.count]
    out: list[BinSpec] = []

    def visit(depth: int, prefix: int, bounds: list[tuple[int, int]]) -> None:
        total = sum(b - a for a, b in bounds)
        if total == 0:
            return
        if total <= max_bin_points or depth >= max_depth:
            ranges = tuple((s.path, a, b) for s, (a, b) in zip(search, bounds, strict=True) if b > a)
            out.append(BinSpec(depth, prefix, total, ranges))
            return
        for child in range(prefix << 3, (prefix << 3) + 8):
            sub = [s.node_range(depth + 1, child, a, b) for s, (a, b) in zip(search, bounds, strict=True)]
            visit(depth + 1, child, sub)

    visit(0, 0, [(0, s.count) for s in search])
    return out


# ---- 3. bins -> tiles ---------------------------------------------------------------------------------


VERTEX_BATCH = 131_072  # points per tile_vertices call (at most one tile more; ~4 MB of vertices)


def write_tiles(
    job: TileJob, rec: np.ndarray, perm: np.ndarray, level: np.ndarray, starts: np.ndarray
) -> list[TileRecord]:
    """Encode and write tiles: the points rec[perm] at their tile depths `level`, a tile from each of
    `starts` to the next (the last to the end); glb (1.1) or pnts with a batch table (1.0)."""
    from pipeline.stages.points import kernels as K
    from pipeline.tiles.pnts import encode_pnts

    ends = np.append(starts[1:], len(perm))
    stride = vertex_dtype(job.schema.attributes).itemsize
    out = []
    # tiles in batches of about VERTEX_BATCH points: the vertex buffer (a few MB) is still in the CPU cache
    # when the files are written, and stays small (one buffer for the whole bin was ~30 MB per worker)
    t0 = 0
    while t0 < len(starts):
        t1 = t0 + 1
        while t1 < len(starts) and ends[t1] - starts[t0] <= VERTEX_BATCH:
            t1 += 1
        s0, e1 = int(starts[t0]), int(ends[t1 - 1])
        batch = (rec, perm[s0:e1], starts[t0:t1] - s0, ends[t0:t1] - s0)
        if job.fmt == "1.1":
            vbuf = np.empty((e1 - s0, stride), np.uint8)
            lo, step, qmax, gbase, checksum = tile_vertices(job.schema, *batch, vbuf)
        else:  # pnts: positions on the tile's grid (z up) and the records in tile order
            q = np.empty((e1 - s0, 3), np.uint16)
            lo, step, qmax, gbase, checksum = K.tile_grid(*batch, q)
            rows = take_rows(rec, perm[s0:e1])
        for i in range(t1 - t0):
            s, e = int(starts[t0 + i]) - s0, int(ends[t0 + i]) - s0
            rec_t, path = _place_tile(job, int(level[s0 + s]), e - s, lo[i], step[i], qmax[i], checksum[i])
            if job.fmt == "1.1":
                args = (lo[i], int(step[i]), qmax[i], float(gbase[i]))
                with open(path, "wb") as f:  # the GLB's pieces, never assembled in memory
                    f.writelines(glb_pieces(vbuf[s:e], job.schema, *args, meshopt=job.meshopt))
            else:
                path.write_bytes(encode_pnts(lo[i], int(step[i]), q[s:e], rows[s:e], job.schema))
            out.append(rec_t)
        t0 = t1
    return out


def tile_vertices(schema: PointSchema, rec: np.ndarray, perm, starts, ends, vbuf: np.ndarray):
    """The interleaved glTF vertices (`points_glb.vertex_dtype`) of the tiles rec[perm[starts[t]:ends[t]]]
    into `vbuf` (N, stride) uint8 (padding 0): positions and GPS times by `K.tile_grid`, then one typed
    gather per attribute (colours through the sRGB -> linear table). Returns per tile lo, step, qmax, GPS
    base time and checksum (`K.tile_grid`)."""
    from pipeline.stages.points import kernels as K

    vbuf.fill(0)
    vert = vbuf.view(vertex_dtype(schema.attributes))[:, 0]
    gout = vert["_GPS_TIME"] if any(a.name == "gps_time" for a in schema.attributes) else None
    res = K.tile_grid(rec, perm, starts, ends, vert["POSITION"], yup=True, gout=gout)
    for a in schema.attributes:
        if a.name != "gps_time":
            K.gather(rec[a.name], perm, vert[a.attr], SRGB8_TO_LINEAR8 if a.name == "rgb" else None)
    return res


def take_rows(rec: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """rec[perm] for structured records, taken as whole rows (7x faster than numpy's structured take,
    which copies field by field)."""
    return np.take(rec.view(np.dtype((np.void, rec.dtype.itemsize))), perm).view(rec.dtype)


def _place_tile(job: TileJob, depth: int, count: int, lo_mm, step, qmax, checksum) -> tuple[TileRecord, Path]:
    """The record of a tile (index from its lowest corner; `K.tile_grid`'s bounds) and its content path
    (directory created)."""
    sh = job.cube.R - depth
    org = np.asarray(job.cube.origin, np.int64)
    ix, iy, iz = (int(v) for v in ((np.asarray(lo_mm, np.int64) - org) >> sh))
    uri = f"content/{depth}/{ix}_{iy}_{iz}.{'glb' if job.fmt == '1.1' else 'pnts'}"
    path = Path(job.out_dir) / uri
    path.parent.mkdir(parents=True, exist_ok=True)
    hi_mm = lo_mm + qmax * step
    lo = (int(lo_mm[0]), int(lo_mm[1]), int(lo_mm[2]))
    hi = (int(hi_mm[0]), int(hi_mm[1]), int(hi_mm[2]))
    return TileRecord(depth, ix, iy, iz, count, lo, hi, int(checksum), uri), path


def _upper_dtype(dtype: np.dtype) -> np.dtype:
    """A row of an upper file: a point's record, its key, hash and level."""
    return np.dtype([("rec", dtype), ("key", "<u8"), ("hash", "<u8"), ("level", "i1")])


def process_bin(spec: BinSpec, job: TileJob, work_dir: str) -> BinResult:
    """Stage 3 for one bin: writes its tiles and the upper file; returns only small records."""
    from pipeline.stages.points import kernels as K

    cube = job.cube
    dtype = np.dtype(record_fields(job.schema.attributes))
    rec = read_ranges(spec.ranges, dtype)
    org = np.asarray(cube.origin, np.int64)
    # keys and hashes straight from the record fields (one pass, no position copies)
    keys, hashes = K.keys_and_hashes(rec["x"], rec["y"], rec["z"], org, cube.key_shift)
    D, b = cube.D, spec.depth
    # keys of one bin share their top 3*b bits: sort the relative part (at most 63 bits: D <= MAX_KEY_DEPTH)
    rel_bits = 3 * (D - b)
    np.bitwise_and(keys, np.uint64((1 << rel_bits) - 1), out=keys)
    order = K.sort_order(keys, rel_bits)
    keys, hashes = keys[order], hashes[order]
    level = K.select_levels(keys, hashes, D, b, GRID_BITS, cube.tmax, job.max_points)
    # one order by level (stable: keeps key order): the tiles become contiguous slices; the keys were made
    # relative to the bin: the bin's prefix is restored for the tiles and upper file
    prefix = spec.prefix << rel_bits
    perm, keys, hashes_u, level_s, tile_starts, n_upper = K.order_by_level(
        order, keys, hashes, level, prefix, D, b
    )
    del order, hashes, level
    tiles = write_tiles(job, rec, perm[n_upper:], level_s[n_upper:], tile_starts - n_upper)
    if not n_upper:
        return BinResult(spec.depth, spec.prefix, tiles)
    up = np.empty(n_upper, dtype=_upper_dtype(dtype))
    up["rec"] = take_rows(rec, perm[:n_upper])
    up["key"] = keys[:n_upper]
    up["hash"] = hashes_u
    up["level"] = level_s[:n_upper]
    path = Path(work_dir) / f"upper_{spec.depth}_{spec.prefix}.bin"
    up.tofile(path)
    return BinResult(spec.depth, spec.prefix, tiles, str(path), n_upper)


def process_upper(results: list[BinResult], job: TileJob) -> list[TileRecord]:
    """Stage 4: the tiles above the bins (small: a few thousand points per bin)."""
    from pipeline.stages.points import kernels as K

    D, g = job.cube.D, GRID_BITS
    with_upper = [r for r in sorted(results, key=lambda r: (r.depth, r.prefix)) if r.upper_path]
    if not with_upper:
        return []
    up = read_ranges(
        tuple((r.upper_path, 0, r.upper_count) for r in with_upper if r.upper_path),
        _upper_dtype(np.dtype(record_fields(job.schema.attributes))),
    )
    level = up["level"].copy()
    # a bin's min-hash point (lowest key among equal hashes) may be the min of a coarser cell spanning
    # several bins. A bin deeper than the grid is one cell of level depth - g, won by that point: it is the
    # first of the bin's upper rows by (hash, key)
    counts = np.array([r.upper_count for r in with_upper])
    by_hash = np.lexsort((up["key"], up["hash"], np.repeat(np.arange(len(counts)), counts)))
    md = np.array([r.depth for r in with_upper], np.int64)
    mi = by_hash[np.cumsum(counts) - counts][md > g]  # bins deeper than the grid
    md = md[md > g]
    mk, mh = up["key"][mi], up["hash"][mi]
    for t in range(int(md.max(initial=g)) - g):
        members = np.flatnonzero(md > t + g)  # the bins inside one cell of depth t + g
        cell = mk[members] >> np.uint64(3 * (D - t - g))
        order = np.lexsort((mk[members], mh[members], cell))
        first = np.ones(len(order), dtype=bool)
        first[1:] = cell[order][1:] != cell[order][:-1]
        won = mi[members[order[first]]]
        level[won] = np.minimum(level[won], t)
    order = np.lexsort((up["key"], level))
    perm, _keys, _hashes, level_s, starts, _n = K.order_by_level(
        order, up["key"][order], up["hash"][order], level[order], 0, D, 0
    )
    return write_tiles(job, up["rec"], perm, level_s, starts)
