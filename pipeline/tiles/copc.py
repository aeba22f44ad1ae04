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

Octree (`copc_octree`, which says how points are chosen per node): the root cube is centred on the
points' bounds, its half size half their largest extent, so the COPC `spacing` at the root is cube size /
128. Chunks are compressed by lazrs' parallel encoder and written in node order.

Knows nothing about the pipeline: it takes LAS records (`record_dtype`), scales, offsets and a WKT.

Threads, not the executor seam (`orchestrate.executor.map_ordered`): `write_copc` is itself one task of a
run (one per input file, mapped on the run's executor by `orchestrate.points_copc`), and a task cannot
hand work to the executor it runs on. With fewer files than workers the idle ones become `threads`: lazrs
compresses `threads` nodes at a time in this process (their records are the only memory held; the same
bytes for any number of threads). Measured: a 100,000-record node compresses in 28 ms CPU; another
process would add a 2.8 ms pickle on each side plus the pipe copies, for no gain over a thread.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.recfunctions import repack_fields

from pipeline.tiles.copc_octree import GRID_BITS, MAX_NODE_POINTS, build_octree, morton_of

HEADER_SIZE = 375
VLR_HEADER = 54
EVLR_HEADER = 60
COPC_INFO_SIZE = 160
BLOCK = 1 << 20  # records per block in the statistics passes (bounded memory)


@dataclass(frozen=True)
class CopcSchema:
    """Which optional LAS fields a COPC file carries (the point layer's attribute schema)."""

    has_rgb: bool = False
    has_nir: bool = False
    extra_dims: tuple[str, ...] = ()  # float32 extra bytes, in this order

    @property
    def point_format(self) -> int:
        return 8 if self.has_nir else 7 if self.has_rgb else 6


def record_dtype(schema: CopcSchema) -> np.dtype:
    """Structured dtype of one LAS 1.4 record of the schema's point format (laspy's field names: X, Y, Z,
    intensity, bit_fields, classification_flags, ..., gps_time, red, green, blue, nir), extra bytes
    included."""
    import laspy

    fields = laspy.PointFormat(schema.point_format).dtype().descr
    return np.dtype(fields + [(name, "<f4") for name in schema.extra_dims])


@dataclass
class CopcResult:
    points: int
    nodes: int
    bytes: int
    mins: tuple[float, float, float]
    maxs: tuple[float, float, float]
    checksum: int = 0  # `copc_check.copc_checksum` of the points
    classes: dict[int, int] = field(default_factory=dict)  # class code -> points


# ---- byte layout --------------------------------------------------------------------------------------


def _vlr(user_id: str, record_id: int, description: str, data: bytes, extended: bool = False) -> bytes:
    """A VLR (record length uint16) or, `extended`, an EVLR (uint64)."""
    if not extended and len(data) > 0xFFFF:
        raise ValueError(f"VLR {user_id}/{record_id} too long ({len(data)} bytes)")
    length = "Q" if extended else "H"
    head = struct.pack(f"<H16sH{length}32s", 0, user_id.encode(), record_id, len(data), description.encode())
    return head + data


def _extra_bytes_vlr(names: tuple[str, ...]) -> bytes:
    """Float32 extra dimensions (data type 9), each declaring (options bit 0) the no-data value the decoder
    maps no-data to (`pipeline.point_attributes.EXTRA_NO_DATA`; a double for floats); min, max, scale and
    offset unused (options bits 1-4 clear); the description is the name."""
    from pipeline.point_attributes import EXTRA_NO_DATA

    texts = [name.encode("ascii", "replace") for name in names]
    return b"".join(struct.pack("<2xBB32s4xd16x96x32s", 9, 1, t, EXTRA_NO_DATA, t) for t in texts)


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


# LAS 1.4 header: signature, file source id, global encoding, GUID, version, system id, software, creation
# day/year, header size, offset to points, VLR count, point format (bit 7: compressed), record length,
# legacy counts (0 for formats 6-10), scales, offsets, max/min x y z, waveform start, first EVLR, EVLR
# count, point count, points by return 1-15
_HEADER = struct.Struct("<4sHH16sBB32s32sHHHIIBH6I3d3d6dQQIQ15Q")
assert _HEADER.size == HEADER_SIZE


# ---- writer -------------------------------------------------------------------------------------------


def _drop_pages(records: np.ndarray) -> None:
    """Release the pages of a read-only np.memmap already read (they stay in the page cache, outside this
    process's memory): a file of 20 M records is read several times without being held in memory."""
    mm = getattr(records, "_mmap", None)
    if mm is not None and getattr(records, "mode", "") == "r" and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _stats(records: np.ndarray, has_gps: bool):
    """Raw integer min/max per axis, points by return (1..15), GPS time range, checksum, points per class:
    in blocks."""
    from pipeline.tiles.copc_check import copc_checksum

    lo = np.full(3, np.iinfo(np.int64).max, np.int64)
    hi = np.full(3, np.iinfo(np.int64).min, np.int64)
    by_return = np.zeros(16, np.int64)
    classes = np.zeros(256, np.int64)
    checksum = 0
    gmin, gmax = (np.inf, -np.inf) if has_gps else (0.0, 0.0)
    for s in range(0, len(records), BLOCK):
        blk = records[s : s + BLOCK]
        for a, f in enumerate(("X", "Y", "Z")):
            col = blk[f]
            lo[a] = min(lo[a], int(col.min()))
            hi[a] = max(hi[a], int(col.max()))
        by_return += np.bincount(blk["bit_fields"] & 0x0F, minlength=16)
        classes += np.bincount(blk["classification"], minlength=256)
        checksum += copc_checksum(blk["X"], blk["Y"], blk["Z"], blk["classification"])
        if has_gps:
            g = blk["gps_time"]
            gmin, gmax = min(gmin, float(g.min())), max(gmax, float(g.max()))
        _drop_pages(records)
    present = {int(c): int(classes[c]) for c in np.flatnonzero(classes)}
    return lo, hi, by_return[1:], gmin, gmax, checksum % (1 << 64), present


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
    lo, hi, by_return, gps_min, gps_max, checksum, classes = _stats(records, has_gps)
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
        morton_of(
            blk["X"],
            blk["Y"],
            blk["Z"],
            header.scales,
            header.offsets,
            center,
            halfsize,
            morton[s : s + BLOCK],
        )
        _drop_pages(records)
    tree = build_octree(morton, max_node_points)
    del morton

    pf = schema.point_format
    n_extra = 4 * len(schema.extra_dims)
    laz_vlr = lazrs.LazVlr.new_for_compression(pf, n_extra, True)
    vlrs_after_info = _vlr("LASF_Projection", 2112, "OGC WKT", header.wkt.encode("utf-8") + b"\0")
    vlrs_after_info += _vlr("laszip encoded", 22204, "lazrs", bytes(laz_vlr.record_data()))
    n_vlrs = 3 + bool(schema.extra_dims)
    if schema.extra_dims:
        vlrs_after_info += _vlr("LASF_Spec", 4, "extra bytes", _extra_bytes_vlr(schema.extra_dims))
    offset_to_points = HEADER_SIZE + VLR_HEADER + COPC_INFO_SIZE + len(vlrs_after_info)

    tmp = path.with_name(path.name + ".part")
    gathered = 0
    # the records as opaque items of their size: numpy gathers those 6-7x faster than structured records
    # (a field-by-field copy; 47 M mobile records: 5.9 s of the file's 31 s CPU)
    items = records.view(np.dtype((np.void, records.dtype.itemsize)))

    def node_points(i: int) -> memoryview:
        nonlocal gathered
        s, c = int(tree.starts[i]), int(tree.counts[i])
        pts = items[tree.index[s : s + c]].view(records.dtype)
        gathered += c
        if gathered > BLOCK:
            _drop_pages(records)
            gathered = 0
        return (repack_fields(pts[list(dtype.names or ())]) if repack else pts).data.cast("B")

    m = len(tree.keys)
    try:
        with tmp.open("w+b") as f:
            f.write(b"\0" * offset_to_points)  # header + VLRs, written at the end
            # one LAZ chunk per node, `threads` nodes compressed at a time (lazrs' parallel encoder; the
            # chunks are written in node order, so the bytes do not depend on the number of threads)
            laz = lazrs.ParLasZipCompressor(f, laz_vlr)
            laz.reserve_offset_to_chunk_table()
            step = max(threads, 1)
            for b0 in range(0, m, step):
                laz.compress_chunks([node_points(i) for i in range(b0, min(b0 + step, m))])
            laz.done()  # the chunk table, and its offset before the first chunk
            evlr_start = f.tell()
            f.seek(offset_to_points)
            sizes = np.array(lazrs.read_chunk_table(f, laz_vlr), np.int64).reshape(-1, 2)[:, 1]
            entries = np.zeros(m, [("key", "<i4", 4), ("offset", "<u8"), ("size", "<i4"), ("count", "<i4")])
            entries["key"], entries["size"], entries["count"] = tree.keys, sizes, tree.counts
            entries["offset"] = offset_to_points + 8 + np.cumsum(sizes) - sizes
            hier = entries.tobytes()
            f.seek(evlr_start)
            f.write(_vlr("copc", 1000, "EPT hierarchy", hier, extended=True))
            size = f.tell()
            f.seek(0)
            ident = (b"LASF", header.file_source_id, (header.global_encoding_gps & 1) | 0x10, b"", 1, 4)
            names = (b"RuhrTwin", b"RuhrTwin COPC writer", header.creation_day, header.creation_year)
            layout = (HEADER_SIZE, offset_to_points, n_vlrs, pf | 0x80, dtype.itemsize, 0, 0, 0, 0, 0, 0)
            box = (maxs[0], mins[0], maxs[1], mins[1], maxs[2], mins[2])
            counts = (0, evlr_start, 1, n, *(int(v) for v in by_return))
            f.write(_HEADER.pack(*ident, *names, *layout, *header.scales, *header.offsets, *box, *counts))
            # COPC info: centre, half size, spacing, hierarchy root page, GPS time range, 11 reserved
            info = (*center, halfsize, spacing, evlr_start + EVLR_HEADER, len(hier), gps_min, gps_max)
            f.write(_vlr("copc", 1, "copc info", struct.pack("<5d2Q2d88x", *info)))
            f.write(vlrs_after_info)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return CopcResult(
        points=n,
        nodes=m,
        bytes=size,
        mins=(float(mins[0]), float(mins[1]), float(mins[2])),
        maxs=(float(maxs[0]), float(maxs[1]), float(maxs[2])),
        checksum=checksum,
        classes=classes,
    )
