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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.errors import InputError

# a decode task covers about this many points (whole LAZ chunks); fixed, so the partition of the work
# (and therefore the output bytes) never depends on the number of workers
POINTS_PER_UNIT = 500_000

_EXTRA_BYTES = "VLR LASF_Spec/4 (Extra Bytes)"


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
    # (name, raw value) of the extra dimensions whose Extra Bytes record declares a no-data value
    extra_nodata: tuple[tuple[str, float], ...] = ()
    # (name, scale, offset) of the extra dimensions their Extra Bytes record scales (first element)
    extra_scales: tuple[tuple[str, float, float], ...] = ()
    point_format: int = -1
    point_size: int = 0
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offsets: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset_to_points: int = 0
    laszip_vlr: bytes | None = None
    # LAZ: (points, bytes) per chunk; the first chunk starts 8 bytes (the table's offset) after the header
    chunk_table: tuple[tuple[int, int], ...] = ()
    # E57: points per scan
    scans: tuple[int, ...] = ()
    crs_error: str | None = None  # the file's CRS record exists but cannot be read (e.g. empty WKT)
    # LAS header fields a COPC of the file keeps: file source id, GPS time bit (bit 0 of the global
    # encoding), creation day and year (E57: 0)
    las_header: tuple[int, int, int, int] = (0, 0, 0, 0)
    # numpy dtype of one raw point record (with extra bytes): decoders need no laspy to read points
    record_dtype: np.dtype | None = field(default=None, compare=False)
    # other input files with identical content (same sha256), left out of the run in favour of this one
    duplicates: tuple[str, ...] = field(default=(), compare=False)


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


def _extra_nodata(h) -> tuple[tuple[str, float], ...]:
    """(name, raw no-data value) of the Extra Bytes records with the no-data bit set (laspy: `no_data` is
    None without it; first element of array dimensions)."""
    out = []
    for st in (st for v in h.vlrs for st in getattr(v, "extra_bytes_structs", None) or ()):
        try:
            if st.no_data is not None:
                out.append((st.name.rstrip(b"\0").decode("ascii", "replace"), float(st.no_data[0])))
        except Exception:  # an undefined/odd data type: no no-data value to honour
            continue
    return tuple(out)


def _xyz(v) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


def _check_header_layout(path: Path, head: bytes, size: int) -> None:
    """The header's own numbers checked against the file's size before laspy reads it: a damaged header
    (a garbage VLR count, say) would otherwise have laspy loop over billions of records at growing
    memory instead of failing. The VLRs (54-byte record headers each) lie between the public header
    block and the point data; the extended VLRs (60 bytes each) inside the file."""
    if len(head) < 227:
        raise InputError(f"truncated LAS header: {size} bytes, LAS needs at least 227", path=path)
    major, minor = head[24], head[25]
    header_size, offset, n_vlrs = struct.unpack_from("<HII", head, 94)
    if (major, minor) not in {(1, m) for m in range(5)}:
        raise InputError(f"unsupported LAS version {major}.{minor} (1.0-1.4): damaged header?", path=path)
    if not 227 <= header_size <= offset <= size:
        raise InputError(
            f"damaged LAS header: header size {header_size}, point data at byte {offset}, file size {size}",
            path=path,
        )
    if n_vlrs * 54 > offset - header_size:
        raise InputError(
            f"damaged LAS header: {n_vlrs} VLRs announced, but only {offset - header_size} bytes lie "
            "between the header and the point data (54 bytes per VLR at least)",
            path=path,
        )
    if minor >= 4 and header_size >= 375 and len(head) >= 247:
        evlr_start, n_evlrs = struct.unpack_from("<QI", head, 235)
        if n_evlrs and evlr_start + n_evlrs * 60 > size:
            raise InputError(
                f"damaged LAS header: {n_evlrs} extended VLRs from byte {evlr_start} do not fit in the "
                f"file ({size} bytes)",
                path=path,
            )


def _scan_las(path: Path, size: int) -> PointFileInfo:
    import laspy

    with path.open("rb") as f:
        head = f.read(375)  # the public header block (LAS 1.4: 375 bytes)
    if head[:4] != b"LASF":
        raise InputError("not a LAS/LAZ file (no LASF signature)", path=path)
    _check_header_layout(path, head, size)
    try:
        with laspy.open(path) as reader:
            h = reader.header
    except laspy.errors.UnknownExtraType as e:
        raise InputError(
            f"malformed Extra Bytes VLR: a descriptor has data type {e}, LAS defines 0-30; the dimension "
            "cannot be read (re-export the file, or repair the VLR)",
            path=path,
            record=_EXTRA_BYTES,
        ) from e
    except Exception as e:  # laspy raises a variety of errors on broken headers
        raise InputError(f"cannot read LAS header: {e}", path=path) from e
    laz_vlr = None
    for v in h.vlrs:
        if v.user_id == "laszip encoded":
            laz_vlr = v.record_data
        elif (v.user_id, v.record_id) == ("LASF_Spec", 4) and not hasattr(v, "extra_bytes_structs"):
            # laspy keeps an Extra Bytes VLR it cannot parse as raw bytes and drops the dimensions
            raise InputError(
                f"malformed Extra Bytes VLR: {len(v.record_data)} bytes is not a whole number of 192-byte "
                "descriptors; the extra dimensions cannot be read (re-export the file, or repair the VLR)",
                path=path,
                record=_EXTRA_BYTES,
            )
    count = int(h.point_count)
    if count == 0:
        raise InputError("file holds no points", path=path)
    pf = h.point_format
    scales, offsets, mins, maxs = (_xyz(v) for v in (h.scales, h.offsets, h.mins, h.maxs))
    if not all(math.isfinite(v) for v in (*scales, *offsets, *mins, *maxs)):
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
    standard = set(pf.standard_dimension_names)
    table: tuple[tuple[int, int], ...] = ()
    if laz_vlr is None:
        need = h.offset_to_point_data + count * pf.size
        if size < need:
            raise InputError(
                f"file is truncated: {size} bytes, the header announces {count} points needing {need}",
                path=path,
            )
        # the point records end at the first EVLR (LAS 1.4) or waveform packet (1.3), else at the end
        starts = (h.start_of_first_evlr, h.start_of_waveform_data_packet_record)
        end = min([size, *(int(v) for v in starts if v > h.offset_to_point_data)])
        if end - need >= pf.size:
            raise InputError(
                f"the header announces {count} points, but the point data holds {(end - need) // pf.size} "
                f"more records ({end - h.offset_to_point_data} bytes of {pf.size}-byte records): a wrong "
                "point count in the header; they would be silently dropped (fix the header, e.g. "
                "`lasinfo -repair`, or re-export the file)",
                path=path,
            )
    else:
        table = _read_chunk_table(path, size, h, laz_vlr)
    return PointFileInfo(
        path=path,
        kind="las" if laz_vlr is None else "laz",
        count=count,
        mins=mins,
        maxs=maxs,
        crs_wkt=crs_wkt,
        has_rgb="red" in standard,
        has_gps="gps_time" in standard,
        has_nir="nir" in standard,
        extra_dims=tuple(pf.extra_dimension_names),
        extra_nodata=_extra_nodata(h),
        extra_scales=tuple(
            (d.name, float(d.scales[0]), float(d.offsets[0])) for d in pf.extra_dimensions if d.is_scaled
        ),
        point_format=int(pf.id),
        point_size=int(pf.size),
        scales=scales,
        offsets=offsets,
        offset_to_points=int(h.offset_to_point_data),
        laszip_vlr=laz_vlr,
        chunk_table=table,
        crs_error=crs_error,
        las_header=(struct.unpack_from("<H", head, 4)[0], head[6] & 1, *struct.unpack_from("<HH", head, 90)),
        record_dtype=pf.dtype(),
    )


def _read_chunk_table(path: Path, size: int, h, vlr: bytes) -> tuple[tuple[int, int], ...]:
    """The LAZ chunk table as (points, bytes) per chunk; refuses a table that does not fit the file or the
    header's point count."""
    import lazrs

    start, count, pf = int(h.offset_to_point_data), int(h.point_count), h.point_format
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
        if table_offset == -1 and size >= start + 16:  # LASzip's convention when the writer could not
            f.seek(size - 8)  # seek back (written to a pipe): the offset is in the last 8 bytes of the file
            (table_offset,) = struct.unpack("<q", f.read(8))
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
    fixed, variable = int(lv.chunk_size()), lv.uses_variable_size_chunks()
    if not variable and fixed > 0 and len(table) != -(-count // fixed):
        lo, hi = (len(table) - 1) * fixed + 1, len(table) * fixed
        raise InputError(
            f"the header announces {count} points, but the LAZ chunk table lists {len(table)} chunks of "
            f"{fixed} points ({lo}..{hi} points): a wrong point count in the header (points would be "
            "dropped or invented)",
            path=path,
        )
    # fixed-size chunks: the table holds no counts, every chunk but the last is full
    out = [
        (int(n) if variable else min(fixed, max(count - k * fixed, 0)), int(nbytes))
        for k, (n, nbytes) in enumerate(table)
    ]
    total_pts, total_bytes, first = sum(n for n, _ in out), sum(b for _, b in out), start + 8
    if total_pts != count:
        raise InputError(
            f"corrupt LAZ: chunk table holds {total_pts} points, the header announces {count}", path=path
        )
    if first + total_bytes > size:
        raise InputError(
            f"LAZ file is truncated: chunks need {first + total_bytes} bytes, the file has {size}", path=path
        )
    if pf.id >= 6 and not variable:
        # layered chunks (LAS 1.4 formats 6-10) store their point count after the first (raw) point: the
        # last chunk's tells whether the header's count ends where the data does
        last_n, last_b = out[-1]
        word = np.fromfile(path, "<u4", 1, offset=first + total_bytes - last_b + pf.size)
        stored = int(word[0]) if len(word) else 0  # none: the file ends inside the chunk's first point
        if 0 < stored <= fixed and stored != last_n:
            raise InputError(
                f"the header announces {count} points, but the LAZ data holds {count - last_n + stored} "
                f"(its last chunk has {stored} points, not {last_n}): a wrong point count in the header",
                path=path,
            )
    return tuple(out)


def _unit_count(points: int, points_per_unit: int, most: int) -> int:
    """How many units a file splits into: about `points_per_unit` points each, an even number when more
    than one (two workers then get the same share of each file: no unit left over to run alone)."""
    n = max(1, round(points / points_per_unit))
    if n > 1 and n % 2:
        n += 1
    return max(1, min(n, most))


def _units(info: PointFileInfo, file_index: int, cuts: list[int]) -> list[WorkUnit]:
    """The units between consecutive `cuts`: point indices for LAS, chunk indices for LAZ; E57: one unit
    per scan (row ranges would need pye57 support for partial reads)."""
    if info.kind == "e57":
        starts = [0, *itertools.accumulate(info.scans)]
        return [WorkUnit(file_index, starts[i], n, scan=i) for i, n in enumerate(info.scans) if n]
    if info.kind == "las":
        size, first = info.point_size, info.offset_to_points
        return [
            WorkUnit(file_index, a, b - a, first + a * size, (b - a) * size)
            for a, b in itertools.pairwise(cuts)
            if b > a
        ]
    table = info.chunk_table
    points = [0, *itertools.accumulate(n for n, _b in table)]
    byte = list(itertools.accumulate((b for _n, b in table), initial=info.offset_to_points + 8))
    return [
        WorkUnit(file_index, points[a], points[b] - points[a], byte[a], byte[b] - byte[a], tuple(table[a:b]))
        for a, b in itertools.pairwise(cuts)
        if b > a
    ]


def plan_units(infos: list[PointFileInfo], points_per_unit: int = POINTS_PER_UNIT) -> list[WorkUnit]:
    """Split every file into decode units of about `points_per_unit` points (whole chunks for LAZ)."""
    units: list[WorkUnit] = []
    for fi, info in enumerate(infos):
        cuts: list[int] = []
        if info.kind == "laz":
            # as many units as `points_per_unit` asks for, with the chunks shared out evenly: equal units
            # keep the workers finishing together (a short last unit would idle one of them at the end)
            cum = np.concatenate([[0], np.cumsum([n for n, _b in info.chunk_table], dtype=np.int64)])
            last = len(info.chunk_table)
            n_units = _unit_count(info.count, points_per_unit, last)  # the table holds `count` points
            targets = np.arange(1, n_units) * (info.count / n_units)
            inner = np.unique(np.clip(np.searchsorted(cum, targets), 1, last))
            cuts = [0, *(int(c) for c in inner if c < last), last]
        elif info.kind == "las":
            n_units = _unit_count(info.count, points_per_unit, info.count)
            cuts = [info.count * k // n_units for k in range(n_units + 1)]
        units += _units(info, fi, cuts)
    return [replace(u, unit_index=i) for i, u in enumerate(units)]


def chunk_units(info: PointFileInfo, max_points: int) -> list[WorkUnit]:
    """Consecutive units covering the file in order, each at most `max_points` points where the format
    allows (whole LAZ chunks: at least one; E57: one scan)."""
    if info.kind == "las":
        return _units(info, 0, [*range(0, info.count, max_points), info.count])
    cuts, held = [0], 0
    for i, (n, _b) in enumerate(info.chunk_table):
        if held and held + n > max_points:
            cuts.append(i)
            held = 0
        held += n
    return _units(info, 0, [*cuts, len(info.chunk_table)])
