"""Header-only scan of point-cloud files (LAS 1.0-1.4, LAZ, COPC, E57) and the work units they split into.

The scan reads headers, VLRs and (for LAZ/COPC) the chunk table, never the points. It refuses broken files
early with a message naming the file: empty or truncated files, unreadable chunk tables, non-finite header
values. The result (`PointFileInfo`) is small and picklable; the decode tasks receive it with a `WorkUnit`
(file + point range + byte range) and read the bytes themselves.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import InputError

# a decode task covers about this many points (whole LAZ chunks); fixed, so the partition of the work
# (and therefore the output bytes) never depends on the number of workers
POINTS_PER_UNIT = 500_000

_RGB_FORMATS = {2, 3, 5, 7, 8, 10}
_GPS_FORMATS = {1, 3, 4, 5, 6, 7, 8, 9, 10}
_NIR_FORMATS = {8, 10}


@dataclass(frozen=True)
class PointFileInfo:
    """Everything the planner and the decoders need to know about one input file."""

    path: Path
    kind: str  # "las" | "laz" | "e57"
    count: int
    mins: tuple[float, float, float]  # header bounds in the file's CRS units
    maxs: tuple[float, float, float]
    crs_wkt: str | None  # from the file (WKT VLR or GeoTIFF keys); None = the file has none
    has_rgb: bool
    has_gps: bool
    has_nir: bool
    extra_dims: tuple[str, ...] = ()
    version: str = ""
    point_format: int = -1
    point_size: int = 0
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offsets: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset_to_points: int = 0
    laszip_vlr: bytes | None = None
    # LAZ: (points, bytes) per chunk and the absolute byte offset of the first chunk
    chunk_table: tuple[tuple[int, int], ...] = ()
    first_chunk_offset: int = 0
    # E57: points per scan
    scans: tuple[int, ...] = ()
    crs_error: str | None = None  # the file's CRS record exists but cannot be read (e.g. empty WKT)
    # numpy dtype of one raw point record (with extra bytes): decoders need no laspy to read points
    record_dtype: np.dtype | None = field(default=None, compare=False)


@dataclass(frozen=True)
class WorkUnit:
    """One decode task: a contiguous point range of one file (whole LAZ chunks)."""

    file_index: int
    start: int  # first point index in the file
    count: int
    byte_start: int = 0
    byte_len: int = 0
    chunks: tuple[tuple[int, int], ...] = ()
    scan: int = -1  # E57 scan index
    unit_index: int = 0  # global, deterministic order of units
    tags: dict = field(default_factory=dict, compare=False)


def _finite(vals) -> bool:
    return all(math.isfinite(float(v)) for v in vals)


def scan_file(path: Path) -> PointFileInfo:
    path = Path(path)
    if not path.is_file():
        raise InputError("input file not found", path=path)
    size = path.stat().st_size
    if size == 0:
        raise InputError("file is empty (0 bytes)", path=path)
    suffix = path.suffix.lower()
    if suffix == ".e57":
        from pipeline.sources.pointcloud.e57 import scan_e57

        return scan_e57(path)
    if suffix not in (".las", ".laz"):
        raise InputError(f"unsupported point-cloud format {suffix!r} (LAS, LAZ, COPC or E57)", path=path)
    return _scan_las(path, size)


def _scan_las(path: Path, size: int) -> PointFileInfo:
    import laspy

    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"LASF":
        raise InputError("not a LAS/LAZ file (no LASF signature)", path=path)
    try:
        with laspy.open(path) as reader:
            h = reader.header
            laz_vlr = None
            for v in h.vlrs:
                if v.user_id == "laszip encoded":
                    laz_vlr = v.record_data
    except Exception as e:  # laspy raises a variety of errors on broken headers
        raise InputError(f"cannot read LAS header: {e}", path=path) from e
    count = int(h.point_count)
    if count == 0:
        raise InputError("file holds no points", path=path)
    pf = h.point_format
    scales = tuple(float(s) for s in h.scales)
    offsets = tuple(float(o) for o in h.offsets)
    mins = tuple(float(v) for v in h.mins)
    maxs = tuple(float(v) for v in h.maxs)
    if not (_finite(scales) and _finite(offsets) and _finite(mins) and _finite(maxs)):
        raise InputError("header scale/offset/bounds contain NaN or infinity", path=path)
    if any(s == 0 for s in scales):
        raise InputError("header scale factor is 0", path=path)
    if any(lo > hi for lo, hi in zip(mins, maxs, strict=True)):
        raise InputError(f"header bounds are inverted (min {mins} > max {maxs})", path=path)
    crs_wkt, crs_error = None, None
    try:
        crs = h.parse_crs()
        if crs is not None:
            crs_wkt = crs.to_wkt()
    except Exception as e:
        crs_error = str(e) or type(e).__name__
    extra = tuple(pf.extra_dimension_names)
    common = dict(
        path=path,
        count=count,
        mins=mins,
        maxs=maxs,
        crs_wkt=crs_wkt,
        has_rgb=pf.id in _RGB_FORMATS,
        has_gps=pf.id in _GPS_FORMATS,
        has_nir=pf.id in _NIR_FORMATS,
        extra_dims=extra,
        version=str(h.version),
        point_format=int(pf.id),
        point_size=int(pf.size),
        record_dtype=pf.dtype(),
        scales=scales,
        offsets=offsets,
        offset_to_points=int(h.offset_to_point_data),
        crs_error=crs_error,
    )
    if laz_vlr is None:
        need = h.offset_to_point_data + count * pf.size
        if size < need:
            raise InputError(
                f"file is truncated: {size} bytes, the header announces {count} points needing {need}",
                path=path,
            )
        return PointFileInfo(kind="las", **common)
    table, first = _read_chunk_table(path, size, int(h.offset_to_point_data), laz_vlr, count)
    return PointFileInfo(
        kind="laz", laszip_vlr=laz_vlr, chunk_table=table, first_chunk_offset=first, **common
    )


def _read_chunk_table(
    path: Path, size: int, start: int, vlr: bytes, count: int
) -> tuple[tuple[tuple[int, int], ...], int]:
    import lazrs

    try:
        lv = lazrs.LazVlr(vlr)
    except Exception as e:
        raise InputError(f"corrupt LAZ: unreadable laszip VLR ({e})", path=path) from e
    with path.open("rb") as f:
        f.seek(start)
        raw = f.read(8)
        if len(raw) < 8:
            raise InputError("LAZ file is truncated before its point data", path=path)
        (table_offset,) = struct.unpack("<q", raw)
        if table_offset <= start or table_offset + 8 > size:
            raise InputError(
                f"LAZ file is truncated or corrupt: chunk table offset {table_offset} is outside the file "
                f"({size} bytes)",
                path=path,
            )
        f.seek(start)
        try:
            table = lazrs.read_chunk_table(f, lv)
        except Exception as e:
            raise InputError(
                f"LAZ file is truncated or corrupt: unreadable chunk table ({e})", path=path
            ) from e
    if table is None:
        raise InputError("LAZ file has no chunk table (not supported; re-compress with laszip)", path=path)
    fixed = lv.chunk_size()
    out: list[tuple[int, int]] = []
    remaining = count
    for n, nbytes in table:
        n = int(n)
        if not lv.uses_variable_size_chunks():
            n = min(int(fixed), remaining)
        out.append((n, int(nbytes)))
        remaining -= n
    total_pts = sum(n for n, _ in out)
    total_bytes = sum(b for _, b in out)
    first = start + 8
    if total_pts != count:
        raise InputError(
            f"corrupt LAZ: chunk table holds {total_pts} points, the header announces {count}", path=path
        )
    if first + total_bytes > size:
        raise InputError(
            f"LAZ file is truncated: chunks need {first + total_bytes} bytes, the file has {size}", path=path
        )
    return tuple(out), first


def _unit_count(points: int, points_per_unit: int, most: int) -> int:
    """How many units a file splits into: about `points_per_unit` points each, an even number when more
    than one (two workers then get the same share of each file: no unit left over to run alone)."""
    n = max(1, round(points / points_per_unit))
    if n > 1 and n % 2:
        n += 1
    return max(1, min(n, most))


def plan_units(infos: list[PointFileInfo], points_per_unit: int = POINTS_PER_UNIT) -> list[WorkUnit]:
    """Split every file into decode units of about `points_per_unit` points (whole chunks for LAZ)."""
    units: list[WorkUnit] = []
    for fi, info in enumerate(infos):
        if info.kind == "laz":
            # as many units as `points_per_unit` asks for, with the chunks shared out evenly: equal units
            # keep the workers finishing together (a short last unit would idle one of them at the end)
            if not info.chunk_table:
                continue
            counts = np.array([n for n, _b in info.chunk_table], dtype=np.int64)
            cum = np.concatenate([[0], np.cumsum(counts)])
            n_units = _unit_count(int(cum[-1]), points_per_unit, len(counts))
            targets = np.arange(1, n_units) * (int(cum[-1]) / n_units)
            cuts = np.unique(np.clip(np.searchsorted(cum, targets), 1, len(counts)))
            bounds = [0, *(int(c) for c in cuts if c < len(counts)), len(counts)]
            start, byte = 0, info.first_chunk_offset
            for a, b in itertools.pairwise(bounds):
                chunks = tuple(info.chunk_table[a:b])
                pts = sum(n for n, _b in chunks)
                nbytes = sum(b_ for _n, b_ in chunks)
                units.append(WorkUnit(fi, start, pts, byte, nbytes, chunks))
                start += pts
                byte += nbytes
        elif info.kind == "las":
            n_units = _unit_count(info.count, points_per_unit, info.count)
            edges = [info.count * k // n_units for k in range(n_units + 1)]
            for s, e in itertools.pairwise(edges):
                if e > s:
                    units.append(
                        WorkUnit(
                            fi,
                            s,
                            e - s,
                            info.offset_to_points + s * info.point_size,
                            (e - s) * info.point_size,
                        )
                    )
        else:  # e57: one unit per scan (row ranges would need pye57 support for partial reads)
            start = 0
            for si, n in enumerate(info.scans):
                if n:
                    units.append(WorkUnit(fi, start, n, scan=si))
                start += n
    return [
        WorkUnit(u.file_index, u.start, u.count, u.byte_start, u.byte_len, u.chunks, u.scan, i)
        for i, u in enumerate(units)
    ]


def extent_of(infos: list[PointFileInfo]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.min([i.mins for i in infos], axis=0)
    hi = np.max([i.maxs for i in infos], axis=0)
    return lo, hi
