"""COPC 1.0 writer (Cloud Optimized Point Cloud, https://copc.io): a LAZ 1.4 file whose points are grouped
into the nodes of an octree, each node one LAZ chunk, located by a hierarchy EVLR.

Layout of a file written here (byte-identical for identical input):

    LAS 1.4 header (375 B; point format 6, 7 with RGB, 8 with RGB + NIR; bit 7 set: compressed)
    VLR copc/1        COPC info (160 B): octree cube, root spacing, hierarchy location, GPS time range
    VLR LASF_Projection/2112   OGC WKT of the CRS (global encoding bit 4 set)
    VLR laszip encoded/22204   LAZ items, variable-size chunks (one chunk per octree node)
    VLR LASF_Spec/4   extra bytes (float32 per extra dimension; only when there are any)
    [8 B offset of the chunk table][node chunks, breadth first: level, then x, y, z][LAZ chunk table]
    EVLR copc/1000    the hierarchy: one page, one 32 B entry per node (key, offset, size, point count)

Octree: the root cube is centred on the points' bounds, its half size half their largest extent. A node
holds one point per cell of a 128^3 grid over the node (the point whose position hash is smallest among
the points not taken by a coarser node), so the spacing at the root is cube size / 128 and halves at
every level (COPC `spacing`); a node whose remaining points are at most `max_node_points` keeps all of
them (a leaf). Every point is stored exactly once. The selection is numpy only (one stable sort per
level), no Python loop per point; chunks are compressed with lazrs' sequential encoder.

Knows nothing about the pipeline: it takes LAS records (`record_dtype`), scales, offsets and a WKT.

Threads, not the executor seam (`orchestrate.executor.map_ordered`): `write_copc` is itself one task of a
run (one per input file, mapped on the run's executor by `orchestrate.points_copc`), and a task cannot
hand work to the executor it runs on (a `LocalPool` worker has no handle on the pool; a Dask task would
have to secede from its worker). With fewer files than workers the idle ones become `threads` compressing
`threads` nodes at a time in this process (lazrs releases the GIL; the nodes' records are the only memory
held, and the chunks are written in node order: the same bytes for any number of threads). Measured: a
100,000-record node compresses in 28 ms CPU; moving it to another process would add a 2.8 ms pickle on
each side plus the pipe copies, for no gain over a thread. `tiles/` also sits below `orchestrate/` in the
import layers (docs/architecture.md).
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.tiles.copc_octree import GRID_BITS, MAX_NODE_POINTS, build_octree, fine_positions, morton_codes

HEADER_SIZE = 375
VLR_HEADER = 54
EVLR_HEADER = 60
COPC_INFO_SIZE = 160
BLOCK = 1 << 20  # records per block in the statistics passes (bounded memory)

# LAS 1.4 point data record formats 6 (base), 7 (+ RGB), 8 (+ RGB + NIR)
_BASE = [
    ("X", "<i4"),
    ("Y", "<i4"),
    ("Z", "<i4"),
    ("intensity", "<u2"),
    ("bit_fields", "u1"),  # return number (bits 0-3), number of returns (bits 4-7)
    ("classification_flags", "u1"),  # class flags, scanner channel, scan direction, edge of flight line
    ("classification", "u1"),
    ("user_data", "u1"),
    ("scan_angle", "<i2"),
    ("point_source_id", "<u2"),
    ("gps_time", "<f8"),
]
_RGB = [("red", "<u2"), ("green", "<u2"), ("blue", "<u2")]
_NIR = [("nir", "<u2")]


@dataclass(frozen=True)
class CopcSchema:
    """Which optional LAS fields a COPC file carries (the point layer's attribute schema)."""

    has_rgb: bool = False
    has_nir: bool = False
    extra_dims: tuple[str, ...] = ()  # float32 extra bytes, in this order

    @property
    def point_format(self) -> int:
        return 8 if self.has_nir else 7 if self.has_rgb else 6

    @property
    def dtype(self) -> np.dtype:
        return record_dtype(self)


def record_dtype(schema: CopcSchema) -> np.dtype:
    """Structured dtype of one LAS 1.4 record of the schema's point format, extra bytes included."""
    fields = list(_BASE)
    if schema.has_rgb or schema.has_nir:  # format 8 has RGB too
        fields += _RGB
    if schema.has_nir:
        fields += _NIR
    fields += [(name, "<f4") for name in schema.extra_dims]
    return np.dtype(fields)


@dataclass
class CopcResult:
    path: str
    points: int
    nodes: int
    depth: int  # deepest level with points
    bytes: int
    mins: tuple[float, float, float]
    maxs: tuple[float, float, float]
    spacing: float
    point_format: int
    levels: dict[int, int] = field(default_factory=dict)  # points per octree level


# ---- byte layout --------------------------------------------------------------------------------------


def _text(s: str, n: int) -> bytes:
    b = s.encode("ascii", "replace")[:n]
    return b + b"\0" * (n - len(b))


def _vlr(user_id: str, record_id: int, description: str, data: bytes, extended: bool = False) -> bytes:
    """A VLR (record length uint16) or, `extended`, an EVLR (uint64)."""
    if not extended and len(data) > 0xFFFF:
        raise ValueError(f"VLR {user_id}/{record_id} too long ({len(data)} bytes)")
    length = struct.pack("<HQ" if extended else "<HH", record_id, len(data))
    return struct.pack("<H", 0) + _text(user_id, 16) + length + _text(description, 32) + data


def _extra_bytes_vlr(names: tuple[str, ...]) -> bytes:
    """Float32 extra dimensions, each declaring the no-data value the decoder maps no-data to
    (`pipeline.point_attributes.EXTRA_NO_DATA`; options bit 0)."""
    from pipeline.point_attributes import EXTRA_NO_DATA

    out = b""
    for name in names:
        d = struct.pack("<2xBB", 9, 1) + _text(name, 32) + b"\0" * 4  # 9 = float, options: no_data
        d += struct.pack("<d", EXTRA_NO_DATA) + b"\0" * 16  # no_data (first element; a double for floats)
        d += b"\0" * (24 * 4)  # min, max, scale, offset (unused: options bits 1-4 clear)
        d += _text(name, 32)  # description
        assert len(d) == 192
        out += d
    return out


def _copc_info(center, halfsize, spacing, hier_offset, hier_size, gps_min, gps_max) -> bytes:
    d = struct.pack("<5d2Q2d", *center, halfsize, spacing, hier_offset, hier_size, gps_min, gps_max)
    return d + b"\0" * (8 * 11)


@dataclass(frozen=True)
class HeaderInfo:
    """Header fields the caller decides (taken from the input file, for deterministic output)."""

    scales: tuple[float, float, float]
    offsets: tuple[float, float, float]
    wkt: str
    file_source_id: int = 0
    global_encoding_gps: int = 0  # bit 0 of the input's global encoding (adjusted standard GPS time)
    creation_day: int = 0
    creation_year: int = 0
    system_identifier: str = "RuhrTwin"
    software: str = "RuhrTwin COPC writer"


def _header(
    h: HeaderInfo,
    pf: int,
    rec_size: int,
    offset_to_points: int,
    n_vlrs: int,
    count: int,
    by_return: np.ndarray,
    mins,
    maxs,
    evlr_start: int,
) -> bytes:
    b = b"LASF" + struct.pack("<HH", h.file_source_id, (h.global_encoding_gps & 1) | 0x10)
    b += b"\0" * 16  # GUID
    b += struct.pack("<BB", 1, 4) + _text(h.system_identifier, 32) + _text(h.software, 32)
    b += struct.pack("<HHHII", h.creation_day, h.creation_year, HEADER_SIZE, offset_to_points, n_vlrs)
    b += struct.pack("<BH", pf | 0x80, rec_size)
    b += struct.pack("<I5I", 0, 0, 0, 0, 0, 0)  # legacy counts: 0 for formats 6-10
    b += struct.pack("<3d", *h.scales) + struct.pack("<3d", *h.offsets)
    b += struct.pack("<6d", maxs[0], mins[0], maxs[1], mins[1], maxs[2], mins[2])
    b += struct.pack("<QQI", 0, evlr_start, 1)
    b += struct.pack("<Q", count) + struct.pack("<15Q", *(int(v) for v in by_return))
    assert len(b) == HEADER_SIZE
    return b


# ---- writer -------------------------------------------------------------------------------------------


def _drop_pages(records: np.ndarray) -> None:
    """Release the pages of a read-only np.memmap already read (they stay in the page cache, outside this
    process's memory): a file of 20 M records is read several times without being held in memory."""
    mm = getattr(records, "_mmap", None)
    if mm is not None and getattr(records, "mode", "") == "r" and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _stats(records: np.ndarray, has_gps: bool):
    """Raw integer min/max per axis, points by return (1..15), GPS time range: in blocks."""
    lo = np.full(3, np.iinfo(np.int64).max, np.int64)
    hi = np.full(3, np.iinfo(np.int64).min, np.int64)
    by_return = np.zeros(16, np.int64)
    gmin, gmax = np.inf, -np.inf
    for s in range(0, len(records), BLOCK):
        blk = records[s : s + BLOCK]
        for a, f in enumerate(("X", "Y", "Z")):
            col = blk[f]
            lo[a] = min(lo[a], int(col.min()))
            hi[a] = max(hi[a], int(col.max()))
        by_return += np.bincount(blk["bit_fields"] & 0x0F, minlength=16)
        if has_gps:
            g = blk["gps_time"]
            gmin, gmax = min(gmin, float(g.min())), max(gmax, float(g.max()))
        _drop_pages(records)
    if not has_gps:
        gmin = gmax = 0.0
    return lo, hi, by_return[1:], gmin, gmax


def write_copc(
    path: str | Path,
    records: np.ndarray,
    header: HeaderInfo,
    schema: CopcSchema,
    *,
    has_gps: bool = True,
    max_node_points: int = MAX_NODE_POINTS,
    threads: int = 1,
) -> CopcResult:
    """Write `records` (dtype `record_dtype(schema)` or one with more fields, which are left out; may be a
    np.memmap) as a COPC file at `path` (through `<path>.part`, renamed when complete). Memory: about 35
    bytes per point for the octree on top of the records, plus `threads` nodes' records at a time.
    `threads`: nodes compressed in parallel (the same bytes for any number)."""
    import lazrs

    path = Path(path)
    dtype = record_dtype(schema)
    repack = records.dtype != dtype
    if repack and not set(dtype.names or ()) <= set(records.dtype.names or ()):
        raise ValueError(f"records have dtype {records.dtype}, expected {dtype}")
    n = len(records)
    if n == 0:
        raise ValueError("a COPC file needs at least one point")
    lo, hi, by_return, gps_min, gps_max = _stats(records, has_gps)
    sc, of = np.asarray(header.scales), np.asarray(header.offsets)
    mins = lo * sc + of
    maxs = hi * sc + of
    center = tuple(float(v) for v in (mins + maxs) / 2.0)
    halfsize = float(max((maxs - mins).max() / 2.0, sc.max()))
    halfsize *= 1.0 + 1e-9  # the largest coordinate stays inside the cube
    spacing = 2.0 * halfsize / (1 << GRID_BITS)

    morton = np.empty(n, np.uint64)
    for s in range(0, n, BLOCK):
        blk = records[s : s + BLOCK]
        q = fine_positions(blk["X"], blk["Y"], blk["Z"], header.scales, header.offsets, center, halfsize)
        morton[s : s + BLOCK] = morton_codes(q)
        _drop_pages(records)
    del q
    tree = build_octree(morton, max_node_points)
    del morton

    pf = schema.point_format
    n_extra = 4 * len(schema.extra_dims)
    laz_vlr = lazrs.LazVlr.new_for_compression(pf, n_extra, True)
    vlrs_after_info = _vlr("LASF_Projection", 2112, "OGC WKT", header.wkt.encode("utf-8") + b"\0")
    vlrs_after_info += _vlr("laszip encoded", 22204, "lazrs", bytes(laz_vlr.record_data()))
    n_vlrs = 3
    if schema.extra_dims:
        vlrs_after_info += _vlr("LASF_Spec", 4, "extra bytes", _extra_bytes_vlr(schema.extra_dims))
        n_vlrs += 1
    offset_to_points = HEADER_SIZE + VLR_HEADER + COPC_INFO_SIZE + len(vlrs_after_info)

    tmp = path.with_name(path.name + ".part")
    entries = []
    chunk_table = []
    levels: dict[int, int] = {}
    try:
        with tmp.open("wb") as f:
            f.write(b"\0" * offset_to_points)  # header + VLRs, written at the end
            f.write(b"\0" * 8)  # offset of the chunk table
            pos = offset_to_points + 8
            gathered = 0

            def node_points(i: int) -> np.ndarray:
                nonlocal gathered
                s, c = int(tree.starts[i]), int(tree.counts[i])
                pts = records[tree.index[s : s + c]]
                gathered += c
                if gathered > BLOCK:
                    _drop_pages(records)
                    gathered = 0
                if repack:
                    sel = np.empty(c, dtype)
                    for name in dtype.names or ():
                        sel[name] = pts[name]
                    pts = sel
                return pts

            def compress(pts: np.ndarray) -> bytes:
                stream = bytes(lazrs.compress_points(laz_vlr, pts.data.cast("B"), False))
                (table_at,) = struct.unpack_from("<q", stream)
                return stream[8:table_at]

            # nodes are gathered here and compressed `threads` at a time (lazrs releases the GIL); the
            # chunks are written in node order, so the bytes do not depend on the number of threads
            step = max(threads, 1)
            pool = ThreadPoolExecutor(threads) if threads > 1 else None
            try:
                for b0 in range(0, len(tree.keys), step):
                    batch = range(b0, min(b0 + step, len(tree.keys)))
                    pts_list = [node_points(i) for i in batch]
                    chunks = list(pool.map(compress, pts_list)) if pool else [compress(p) for p in pts_list]
                    del pts_list
                    for i, chunk in zip(batch, chunks, strict=True):
                        c = int(tree.counts[i])
                        f.write(chunk)
                        key = tuple(int(v) for v in tree.keys[i])
                        entries.append(struct.pack("<4iQii", *key, pos, len(chunk), c))
                        chunk_table.append((c, len(chunk)))
                        levels[key[0]] = levels.get(key[0], 0) + c
                        pos += len(chunk)
            finally:
                if pool is not None:
                    pool.shutdown()
            table_offset = pos
            buf = io.BytesIO()
            lazrs.write_chunk_table(buf, chunk_table, laz_vlr)
            f.write(buf.getvalue())
            evlr_start = table_offset + len(buf.getvalue())
            hier = b"".join(entries)
            f.write(_vlr("copc", 1000, "EPT hierarchy", hier, extended=True))
            size = f.tell()
            f.seek(0)
            f.write(
                _header(
                    header, pf, dtype.itemsize, offset_to_points, n_vlrs, n, by_return, mins, maxs, evlr_start
                )
            )
            info = _copc_info(
                center, halfsize, spacing, evlr_start + EVLR_HEADER, len(hier), gps_min, gps_max
            )
            f.write(_vlr("copc", 1, "copc info", info))
            f.write(vlrs_after_info)
            f.write(struct.pack("<q", table_offset))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return CopcResult(
        path=str(path),
        points=n,
        nodes=len(tree.keys),
        depth=max(levels) if levels else 0,
        bytes=size,
        mins=(float(mins[0]), float(mins[1]), float(mins[2])),
        maxs=(float(maxs[0]), float(maxs[1]), float(maxs[2])),
        spacing=spacing,
        point_format=pf,
        levels=dict(sorted(levels.items())),
    )
