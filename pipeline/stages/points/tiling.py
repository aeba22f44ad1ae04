"""The point tiling stages. Each is a pure function of paths + a small job description; no Dask in here.

1. `decode_to_spill`  one work unit: decode -> check classes -> colour -> lattice reprojection to ENU mm ->
                      sort by Morton prefix -> spill file.
2. `plan_bins`        octree nodes holding at most `max_bin_points` points (binary searches in the spill files).
3. `process_bin`      one bin: full-depth keys, sort, nested min-hash levels, write the bin's tiles; points
                      that belong to tiles above the bin go to a small "upper" file.
4. `process_upper`    resolves the levels of the bins' minimum points across bins and writes the tiles
                      above the bins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import InputError, TwinError
from pipeline.frame import ProjectFrame
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit
from pipeline.sources.pointcloud.las import Column, materialize
from pipeline.stages.points.classes import check_classes
from pipeline.stages.points.colour import sample_orthophoto, srgb8_shift, to_srgb8

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig
    from pipeline.tiles.points_glb import PointSchema

from pipeline.stages.points.spill import (
    GRID_BITS,
    CubeSpec,
    RecordLayout,
    SpillPart,
    read_ranges,
)

# ---- job descriptions (small, picklable) --------------------------------------------------------------


class _LazyKernels:
    """`pipeline.stages.points.kernels`, imported on first use: the main process of a standalone run scans,
    plans and submits the decode tasks before it pays for importing numba (0.15-0.3 s on its critical path);
    the workers load the kernels while it plans."""

    def __getattr__(self, name: str):
        from pipeline.stages.points import kernels

        return getattr(kernels, name)


K = _LazyKernels()


@dataclass(frozen=True)
class FileJob:
    """Per-file decode settings."""

    info: PointFileInfo
    crs_wkt: str
    z_factor: float
    orthophoto: str | tuple[str, ...] | None = None  # one raster or the tiles of a tiled delivery
    ortho_bands: tuple[tuple[str, int], ...] = ()
    # the file's reprojection lattice, built once by the planner (None: the decode task builds it)
    lattice: object = field(default=None, compare=False)
    # (west, south, east, north) degrees covering the files of this CRS: narrows PROJ's operation search
    # (transformer creation 0.4 -> 0.05 s with a geoid grid); never changes a transformed value
    aoi: tuple[float, float, float, float] | None = field(default=None, compare=False)


MAX_SHIPPED_LATTICE_BYTES = 4 * 2**20  # larger lattices are rebuilt by each worker instead of pickled


@dataclass(frozen=True)
class DecodeJob:
    frame: ProjectFrame
    crs_cfg: CrsConfig | str  # a CrsConfig; its JSON after pickling (see __reduce__)
    layout: RecordLayout
    class_scheme: str
    keep_unknown: bool
    spill_dir: str
    cube: CubeSpec | None = None  # None while scanning bounds
    # points outside their file's header bounds: "error" (refuse the file) or "report" (the unit returns
    # its real extent instead of a spill file; the planner widens the file's bounds and runs again)
    outside_bounds: str = "error"
    # also write the units' COPC records (stages.points.copc_records.CopcRecords; None: no COPC output)
    copc: Any = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # the config travels as JSON: a worker only parses it (imports pydantic) when it must build a
        # lattice itself, which the planner normally did already
        cfg = self.crs_cfg if isinstance(self.crs_cfg, str) else self.crs_cfg.model_dump_json()
        return (
            DecodeJob,
            (
                self.frame,
                cfg,
                self.layout,
                self.class_scheme,
                self.keep_unknown,
                self.spill_dir,
                self.cube,
                self.outside_bounds,
                self.copc,
            ),
        )

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # a Dask task key derives from the job's content: the CRS settings as their JSON (a config object's
        # pickled state may carry caches that differ between processes)
        return self.__reduce__()[1]

    def crs_config(self) -> CrsConfig:
        return _crs_config(self.crs_cfg) if isinstance(self.crs_cfg, str) else self.crs_cfg


@functools.lru_cache(maxsize=8)
def _crs_config(js: str) -> CrsConfig:
    from pipeline.config.model import CrsConfig

    return CrsConfig.model_validate_json(js)


@dataclass(frozen=True)
class TileJob:
    cube: CubeSpec
    layout: RecordLayout
    out_dir: str  # staging directory (content goes to out_dir/content/...)
    fmt: str  # "1.1" (glb) | "1.0" (pnts)
    max_points: int
    schema: PointSchema
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


@dataclass
class BinResult:
    depth: int
    prefix: int
    tiles: list[TileRecord] = field(default_factory=list)
    upper_path: str | None = None
    upper_count: int = 0
    min_index: int = -1  # index of the bin's min-hash point in the upper file (-1: none/unneeded)
    min_key: int = 0
    min_hash: int = 0
    points: int = 0


# ---- 1. decode --------------------------------------------------------------------------------------

MADV_POPULATE_WRITE = 23  # <linux/mman.h>; Python 3.11's mmap module does not name it


@functools.lru_cache(maxsize=32)
def _transformer(crs_wkt: str, crs_cfg: CrsConfig, aoi: tuple[float, float, float, float] | None = None):
    from pyproj import CRS, Transformer

    from pipeline.crs import ECEF, make_transformer
    from pipeline.sources.pointcloud.crs import local_anchor

    crs = CRS.from_wkt(crs_wkt)
    anchor = local_anchor(crs)
    if anchor is not None:  # a local engineering frame: east-north-up about the anchor, exactly
        lon, lat, h = anchor
        return Transformer.from_pipeline(
            f"+proj=pipeline +step +inv +proj=topocentric +lon_0={lon!r} +lat_0={lat!r} +h_0={h!r} +ellps=WGS84"
        )
    return make_transformer(crs, ECEF, crs_cfg, area_of_interest=aoi)


@functools.lru_cache(maxsize=32)
def _lattice(
    crs_wkt: str,
    crs_cfg: CrsConfig,
    frame: ProjectFrame,
    mins,
    maxs,
    z_factor: float,
    path: str,
    aoi: tuple[float, float, float, float] | None = None,
):
    from pyproj import CRS

    from pipeline.stages.points.reproject import build_lattice

    return build_lattice(
        _transformer(crs_wkt, crs_cfg, aoi), frame, CRS.from_wkt(crs_wkt), mins, maxs, z_factor, path=path
    )


AOI_PAD_DEG = 0.05  # margin around the files' geographic bounds (lattice nodes reach beyond them)


def area_of_interest(
    crs_wkt: str, boxes: list[tuple[tuple, tuple]]
) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) degrees around the (mins, maxs) boxes given in the CRS, padded; None when
    it cannot be determined (then PROJ searches all candidate operations, as before)."""
    import math

    from pyproj import CRS, Transformer
    from pyproj.exceptions import ProjError

    try:
        crs = CRS.from_wkt(crs_wkt)
        h = crs.sub_crs_list[0] if crs.is_compound and crs.sub_crs_list else crs
        geo = h.geodetic_crs
        if geo is None:
            return None
        t = Transformer.from_crs(h, geo, always_xy=True)  # transform_bounds needs the CRSs, not a pipeline
        w, s, e, n = math.inf, math.inf, -math.inf, -math.inf
        for mins, maxs in boxes:
            b = t.transform_bounds(mins[0], mins[1], maxs[0], maxs[1], densify_pts=21)
            w, s, e, n = min(w, b[0]), min(s, b[1]), max(e, b[2]), max(n, b[3])
    except (ProjError, ValueError, IndexError):
        return None
    if not all(math.isfinite(v) for v in (w, s, e, n)) or w > e or s > n or e - w > 90:
        return None
    p = AOI_PAD_DEG
    return (max(w - p, -180.0), max(s - p, -90.0), min(e + p, 180.0), min(n + p, 90.0))


def ecef_transformer_for(crs_wkt: str, crs_cfg: CrsConfig, path=None, aoi=None):
    """The (cached) source -> ECEF transformer of a CRS: creating one costs PROJ 0.3-0.4 s (0.05 s with
    an area of interest)."""
    try:
        return _transformer(crs_wkt, crs_cfg, aoi)
    except TwinError as e:
        if e.path is None and path is not None:
            raise type(e)(e.message, path=path, record=e.record) from e
        raise


def with_lattice(fj: FileJob, frame: ProjectFrame, crs_cfg: CrsConfig) -> FileJob:
    """The file job carrying its lattice (built here once, not in every worker), unless it is large."""
    info = fj.info
    lat = _lattice(fj.crs_wkt, crs_cfg, frame, info.mins, info.maxs, fj.z_factor, str(info.path), fj.aoi)
    if lat.values.nbytes > MAX_SHIPPED_LATTICE_BYTES:
        return fj
    return dataclasses.replace(fj, lattice=lat)


def decode_fields(
    fj: FileJob,
    unit: WorkUnit,
    extra_dims: tuple[str, ...],
    out: np.ndarray | None = None,
    lazy: bool = False,
) -> Mapping[str, Column]:
    """Columns of a unit (LAS: views of the raw records, key "_raw", decoded into `out` when given;
    with `lazy`, bit-field columns are computed later by the spill packer)."""
    from pipeline.sources.pointcloud.reader import decode_unit

    return decode_unit(fj.info, unit, extra_dims, out, lazy=lazy)


def _within_bounds(info: PointFileInfo, raw_min, raw_max, unit: WorkUnit) -> bool:
    try:
        _check_bounds(info, raw_min, raw_max, unit)
    except InputError:
        return False
    return True


def _check_bounds(info: PointFileInfo, raw_min, raw_max, unit: WorkUnit) -> None:
    """Refuse units whose integer coordinates lie outside the header bounds (corrupt data)."""
    if unit.count == 0:
        return
    for axis in range(3):
        s, o = info.scales[axis], info.offsets[axis]
        lo, hi = int(raw_min[axis]) * s + o, int(raw_max[axis]) * s + o
        tol = abs(s) + 1e-9 * max(abs(info.mins[axis]), abs(info.maxs[axis]), 1.0)
        if lo < info.mins[axis] - tol or hi > info.maxs[axis] + tol:
            raise InputError(
                f"points lie outside the header bounds on {'xyz'[axis]} ({lo:.3f}..{hi:.3f} vs header "
                f"{info.mins[axis]:.3f}..{info.maxs[axis]:.3f}): corrupt data or a wrong header",
                path=info.path,
                record=f"points {unit.start}..{unit.start + unit.count - 1}",
            )


class OutsideHeaderBounds(Exception):
    """A unit's points lie outside its file's header bounds (raised only when the job reports them)."""

    def __init__(self, raw_min, raw_max):
        super().__init__("points outside the header bounds")
        self.raw = tuple(int(v) for v in raw_min) + tuple(int(v) for v in raw_max)


@dataclass
class _Decoded:
    xyz: np.ndarray  # (N,3) int32 ENU mm
    cols: dict[str, Column]  # attribute columns (record field names)
    keys: np.ndarray | None  # Morton keys at the requested shift (None: a point lies outside the cube)
    lo: np.ndarray  # (3,) int64 ENU mm extent
    hi: np.ndarray
    codes: tuple[int, ...]  # class codes present
    raw: np.ndarray | None = None  # the raw LAS records the columns may be views of
    rgb_max: int = -1  # largest raw colour channel value (-1: no RGB read)
    ints: tuple[np.ndarray, ...] = ()  # the decoded integer X, Y, Z (the file's scale and offset)


def _raw_buffer(info: PointFileInfo, unit: WorkUnit) -> np.ndarray:
    """The reused buffer a unit's raw LAS records are decoded into."""
    from pipeline import arena

    return arena.scratch("dec.raw", unit.count * max(info.point_size, 1), np.uint8)


def _decode(
    fj: FileJob,
    unit: WorkUnit,
    job: DecodeJob,
    key_origin,
    key_shift: int,
    scratch: bool = False,
) -> _Decoded:
    """Decode, check and reproject a unit; the keys, extents and checks come from one fused kernel pass.
    With `scratch`, the arrays live in this process's reused buffers (valid until the next decode)."""
    from pipeline import arena

    info = fj.info
    out = xyz_buf = keys_buf = None
    if scratch and info.kind != "e57":
        out = _raw_buffer(info, unit)
        xyz_buf = arena.scratch("dec.xyz", (unit.count, 3), np.int32)
        keys_buf = arena.scratch("dec.keys", unit.count, np.uint64)
    d = decode_fields(fj, unit, job.layout.extra_dims, out, lazy=scratch)
    ix, iy, iz = materialize(d["X"]), materialize(d["Y"]), materialize(d["Z"])  # never lazy: no copies
    raw = materialize(d["_raw"]) if "_raw" in d else None
    n = len(ix)
    if n != unit.count:
        raise InputError(f"expected {unit.count} points, decoded {n}", path=info.path)
    lat = fj.lattice
    if lat is None:
        lat = _lattice(
            fj.crs_wkt, job.crs_config(), job.frame, info.mins, info.maxs, fj.z_factor, str(info.path), fj.aoi
        )
    xyz, keys, bad, raw_min, raw_max, lo, hi = K.lattice_to_enu_keys(
        ix,
        iy,
        iz,
        info.scales,
        info.offsets,
        fj.z_factor,
        lat,
        key_origin,
        key_shift,
        out=xyz_buf,
        keys=keys_buf,
    )
    if job.outside_bounds == "report" and (bad or not _within_bounds(info, raw_min, raw_max, unit)):
        raise OutsideHeaderBounds(raw_min, raw_max)
    _check_bounds(info, raw_min, raw_max, unit)
    codes = np.flatnonzero(K.byte_histogram(d["classification"])) if n else np.empty(0, np.int64)
    check_classes(
        codes,
        job.class_scheme,
        job.keep_unknown,
        path=info.path,
        record=f"points {unit.start}..{unit.start + unit.count - 1}",
    )
    if bad:
        raise InputError(f"{bad} points lie outside the header bounds", path=info.path)
    # the columns of the record layout's attributes (pipeline.point_attributes); a file without one leaves
    # it 0 in the spill record
    cols: dict[str, Column] = {}
    rgb_max = -1
    for a in job.layout.attributes:
        if a.name != "rgb":
            if a.from_las is not None:
                if raw is not None:
                    cols[a.name] = a.from_las(raw, info.point_format)
            elif a.name in d:
                cols[a.name] = d[a.name]
        elif info.has_rgb and scratch:  # converted by the spill packer (same rule as to_srgb8)
            from pipeline.sources.pointcloud.las import Rgb16

            red, green, blue = materialize(d["red"]), materialize(d["green"]), materialize(d["blue"])
            rgb_max = int(K.rgb_max(red, green, blue))
            shift = srgb8_shift(rgb_max)
            cols["rgb"] = Rgb16(red, green, blue, shift)
        elif info.has_rgb:
            cols["rgb"] = to_srgb8(materialize(d["red"]), materialize(d["green"]), materialize(d["blue"]))
        elif fj.orthophoto:
            xs = ix * info.scales[0] + info.offsets[0]
            ys = iy * info.scales[1] + info.offsets[1]
            smp = sample_orthophoto(fj.orthophoto, xs, ys, fj.crs_wkt, dict(fj.ortho_bands))
            cols["rgb"] = smp["rgb"]
            if job.layout.has_nir and "nir" in smp and "nir" not in d:
                cols["nir"] = smp["nir"]
    ints = (ix, iy, iz)
    return _Decoded(xyz, cols, keys, lo, hi, tuple(int(c) for c in codes), raw, rgb_max, ints)


def _row_sources(
    dtype: np.dtype, xyz: np.ndarray, cols: dict[str, np.ndarray], raw: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The byte sources of the spill records for `K.pack_rows`: the positions, the raw LAS records (every
    column that is a plain view of a raw field is copied from there: no column copies) and one interleaved
    block of the other columns (computed ones such as colour and return numbers)."""
    from pipeline import arena

    n = len(xyz)
    fields = dtype.fields
    assert fields is not None
    sources = [(xyz.view(np.uint8).reshape(n, 12), np.array([[0, fields["x"][1], 12]], np.int64))]
    raw_spec, side = [], []
    if raw is not None and raw.flags.c_contiguous:
        base, rw = raw.ctypes.data, raw.dtype.itemsize
    else:
        base, rw = 0, -1
    for name, col in cols.items():
        fdt, off = fields[name][0], fields[name][1]
        a = col.ctypes.data if col.ndim == 1 else -1
        if col.ndim == 1 and col.strides[0] == rw and base <= a < base + rw and col.dtype == fdt:
            raw_spec.append((a - base, off, fdt.itemsize))
        else:
            side.append((fdt, off, col))
    if raw_spec and raw is not None:  # (a raw spec only with raw records)
        sources.append((raw.view(np.uint8).reshape(n, rw), np.array(raw_spec, np.int64)))
    if side:
        width = sum(f.itemsize for f, _o, _c in side)
        block = arena.scratch("dec.side", (n, width), np.uint8)
        spec, pos = [], 0
        for fdt, off, col in side:
            w = fdt.itemsize
            vals = np.ascontiguousarray(col, dtype=fdt.base).reshape(n, -1)
            block[:, pos : pos + w] = vals.view(np.uint8).reshape(n, w)
            spec.append((pos, off, w))
            pos += w
        sources.append((block, np.array(spec, np.int64)))
    return sources


def decode_to_spill(fj: FileJob, unit: WorkUnit, job: DecodeJob) -> SpillPart:
    """Stage 1 for one unit: returns the spill part (path + counts + bounds), never the points."""
    import mmap

    from pipeline import arena

    assert job.cube is not None
    arena.retire("bin.")  # this worker has moved on from binning: decode buffers reuse that memory
    cube = job.cube
    org = np.asarray(cube.origin, np.int64)
    try:
        r = _decode(fj, unit, job, org, cube.R - cube.S, scratch=True)
    except OutsideHeaderBounds as e:  # the planner widens the file's bounds to these and runs again
        return SpillPart(unit.unit_index, 0, "", (0, 0, 0), (0, 0, 0), (), outside=e.raw)
    xyz, cols, lo, hi = r.xyz, r.cols, r.lo, r.hi
    n = len(xyz)
    if n and (np.any(lo < org) or np.any(hi >= org + (1 << cube.R)) or r.keys is None):
        raise InputError(
            "points fall outside the planned extent (header bounds too small?)",
            path=fj.info.path,
            record=f"points {unit.start}..{unit.start + unit.count - 1}",
        )
    keys = r.keys if r.keys is not None else np.empty(0, np.uint64)
    order = K.sort_order(  # stable: ties keep file order
        keys, 3 * cube.S, alloc=lambda name, shape, dt: arena.scratch("dec." + name, shape, dt)
    )
    # the records are built in sorted order straight into the spill file's pages: measured faster than
    # packing them in a reused buffer and write()-ing it (24 vs 20 ms per unit alone, but the whole run was
    # 0.3 s slower: ext4 page-cache writes then slowed both phases)
    dtype = job.layout.dtype
    spill_dir = Path(job.spill_dir)
    # never its parents: the run created them, and a task of an abandoned attempt must not recreate a
    # folder the run has removed (it fails instead)
    spill_dir.mkdir(exist_ok=True)
    rec_path = spill_dir / f"u{unit.unit_index:06d}.rec"
    with open(rec_path, "wb+") as f:
        if n:
            _allocate(f.fileno(), n * dtype.itemsize)  # zero-filled: fields no input column fills stay 0
            with mmap.mmap(f.fileno(), n * dtype.itemsize) as mm:
                with contextlib.suppress(OSError, ValueError):  # Linux >= 5.14; else faulted page by page
                    mm.madvise(MADV_POPULATE_WRITE)  # all pages backed in one call: -3 ms per unit
                _pack_spill(mm, n, dtype, order, xyz, cols, r.raw)
    if job.copc is not None:  # the same decoded columns as the COPC records (file order)
        from pipeline.stages.points.copc_records import write_unit

        write_unit(job.copc, fj, unit, job.layout, job.crs_config(), r.ints, cols)
    return SpillPart(
        unit.unit_index,
        n,
        str(rec_path),
        (int(lo[0]), int(lo[1]), int(lo[2])),
        (int(hi[0]), int(hi[1]), int(hi[2])),
        r.codes,
        rgb_max=r.rgb_max,
    )


def _allocate(fd: int, nbytes: int) -> None:
    """Give the spill file its size with its disk blocks reserved: a full disk is an ENOSPC error here, not a
    SIGBUS killing the worker when a page of the mapping is first written."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        import errno

        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate
            raise
        os.ftruncate(fd, nbytes)


def _pack_spill(mm, n: int, dtype: np.dtype, order, xyz, cols, raw) -> None:
    """Write the records into the spill file's mapping. Every view of the mapping is local to this frame,
    so none outlives it, even when packing fails (an exception then reaches the caller as itself, instead of
    `BufferError: cannot close exported pointers exist` from closing a mapping a traceback still views)."""
    from pipeline import arena

    dst = np.frombuffer(mm, dtype=np.uint8).reshape(n, dtype.itemsize)
    try:
        fields = dtype.fields
        assert fields is not None
        typed = [(col, fields[name][1]) for name, col in cols.items()]
        if not K.pack_typed(order, xyz, fields["x"][1], typed, dst):  # other layouts (rare)
            from pipeline.sources.pointcloud.las import materialize

            plain = {name: materialize(col) for name, col in cols.items()}
            rin = arena.scratch("dec.rows", (n, dtype.itemsize), np.uint8)
            K.pack_rows(order, _row_sources(dtype, xyz, plain, raw), dst, scratch=rin)
    except BaseException as e:
        import traceback

        del dst
        # the frames below may still view the mapping: keep their traceback as text, drop the frames
        e.add_note("".join(traceback.format_tb(e.__traceback__)).rstrip())
        raise e.with_traceback(None)  # noqa: B904  (the same exception, re-raised)
    del dst


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
    from pipeline.stages.points.spill import node_range, open_positions

    pos = [(p, open_positions(p.rec_path, dtype, p.count)) for p in parts if p.count]
    out: list[BinSpec] = []

    def visit(depth: int, prefix: int, bounds: list[tuple[int, int]]) -> None:
        total = sum(b - a for a, b in bounds)
        if total == 0:
            return
        if total <= max_bin_points or depth >= max_depth:
            out.append(
                BinSpec(
                    depth,
                    prefix,
                    total,
                    tuple((p.rec_path, a, b) for (p, _x), (a, b) in zip(pos, bounds, strict=True) if b > a),
                )
            )
            return
        for c in range(8):
            child = (prefix << 3) | c
            visit(
                depth + 1,
                child,
                [
                    node_range(x, cube, depth + 1, child, a, b)
                    for (_p, x), (a, b) in zip(pos, bounds, strict=True)
                ],
            )

    visit(0, 0, [(0, p.count) for p, _ in pos])
    # drop the mappings now: `visit` is a closure cycle, and a worker that kept the spill files mapped
    # would keep their pages alive after they are deleted (freed only when it exits: 0.7 s at 100 M points)
    pos.clear()
    return out


# ---- 3. bins -> tiles ---------------------------------------------------------------------------------


def _tile_uri(depth: int, ix: int, iy: int, iz: int, fmt: str) -> str:
    ext = "glb" if fmt == "1.1" else "pnts"
    return f"content/{depth}/{ix}_{iy}_{iz}.{ext}"


def _vertex_plan(job: TileJob, dtype: np.dtype):
    """How `K.tile_vertices` fills the vertex layout of the tiles from the record fields."""
    from pipeline.tiles.points_glb import vertex_layout

    layout, stride = vertex_layout(job.schema)
    fields = dtype.fields
    assert fields is not None
    copies, rgb, gps_dst = [], None, -1
    for a in layout:
        if a.attr == "POSITION":
            continue
        if a.attr == "COLOR_0":
            rgb = (fields["rgb"][1], a.offset)
        elif a.attr == "_GPS_TIME":
            gps_dst = a.offset
        else:
            fdt, off = fields[a.field][0], fields[a.field][1]
            if fdt != np.dtype(a.ctype):
                raise TypeError(f"record field {a.field} is {fdt}, the vertex attribute {a.ctype}")
            copies.append((off, a.offset, fdt.itemsize))
    return np.array(copies, np.int64).reshape(-1, 3), rgb, gps_dst, stride


VERTEX_BATCH = 131_072  # points per tile_vertices call (at most one tile more; ~4 MB of vertices)


def write_tiles(
    job: TileJob, rec: np.ndarray, groups: list[tuple[int, int, int]], perm: np.ndarray | None = None
) -> list[TileRecord]:
    """Encode and write tiles. The points of the tiles are rec[perm] (rec itself when perm is None), and
    groups are (depth, start, end) slices of that order."""
    from pipeline import arena
    from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8, write_glb_from_vertices

    if not groups:
        return []
    starts = np.array([g[1] for g in groups], dtype=np.int64)
    ends = np.array([g[2] for g in groups], dtype=np.int64)
    if job.fmt != "1.1":
        return _write_pnts_tiles(job, rec if perm is None else K.take_rows(rec, perm), groups, starts, ends)
    if perm is None:
        perm = np.arange(len(rec), dtype=np.int64)
    copies, rgb, gps_dst, stride = _vertex_plan(job, rec.dtype)
    out = []
    # tiles in batches of about VERTEX_BATCH points: the vertex buffer (a few MB) is still in the CPU cache
    # when the files are written, and stays small (one buffer for the whole bin was ~30 MB per worker)
    t0 = 0
    while t0 < len(groups):
        t1 = t0 + 1
        while t1 < len(groups) and ends[t1] - starts[t0] <= VERTEX_BATCH:
            t1 += 1
        s0, e1 = int(starts[t0]), int(ends[t1 - 1])
        vbuf = arena.scratch("bin.vertices", (e1 - s0, stride), np.uint8)  # every byte is written
        lo, step, qmin, qmax, gbase, checksum = K.tile_vertices(
            rec, perm[s0:e1], starts[t0:t1] - s0, ends[t0:t1] - s0, copies, rgb, SRGB8_TO_LINEAR8, gps_dst,
            stride, vbuf,
        )  # fmt: skip
        for i, (depth, s, e) in enumerate(groups[t0:t1]):
            rec_t, path = _place_tile(job, depth, lo[i], e - s, lo[i] + qmin[i] * step[i], lo[i] + qmax[i] * step[i], checksum[i])  # fmt: skip
            write_glb_from_vertices(
                path, vbuf[s - s0 : e - s0], job.schema, lo[i], int(step[i]), qmin[i], qmax[i],
                float(gbase[i]), meshopt=job.meshopt,
            )  # fmt: skip
            out.append(rec_t)
        t0 = t1
    return out


def _place_tile(
    job: TileJob, depth: int, inside_mm, count: int, lo_mm, hi_mm, checksum
) -> tuple[TileRecord, Path]:
    """The record of a tile (index from any point inside it) and its content path (directory created)."""
    sh = job.cube.R - depth
    org = np.asarray(job.cube.origin, np.int64)
    ix, iy, iz = (int(v) for v in ((np.asarray(inside_mm, np.int64) - org) >> sh))
    uri = _tile_uri(depth, ix, iy, iz, job.fmt)
    path = Path(job.out_dir) / uri
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = TileRecord(
        depth,
        ix,
        iy,
        iz,
        count,
        (int(lo_mm[0]), int(lo_mm[1]), int(lo_mm[2])),
        (int(hi_mm[0]), int(hi_mm[1]), int(hi_mm[2])),
        int(checksum),
        uri,
    )
    return rec, path


def _write_pnts_tiles(job: TileJob, rec: np.ndarray, groups, starts, ends) -> list[TileRecord]:
    """3D Tiles 1.0 profile: pnts + batch table per tile (`rec` in output order)."""
    from pipeline.tiles.pnts import encode_pnts
    from pipeline.tiles.points_glb import quantized_tile

    q, lo, step, qmin, qmax, checksum = K.quantize_tiles(rec["x"], rec["y"], rec["z"], starts, ends)
    names = [n for n in rec.dtype.names or () if n not in ("x", "y", "z")]
    out = []
    for t, (depth, s, e) in enumerate(groups):
        qt = quantized_tile(lo[t], step[t], q[s:e], qmin[t], qmax[t])
        sl = rec[s:e]
        data = encode_pnts(qt, {name: sl[name] for name in names}, job.schema)
        tlo, thi = qt.bounds_mm
        rec_t, path = _place_tile(job, depth, lo[t], e - s, tlo, thi, checksum[t])
        with open(path, "wb") as f:
            f.write(data)
        out.append(rec_t)
    return out


def _group_slices(level: np.ndarray, keys: np.ndarray, D: int) -> list[tuple[int, int, int]]:
    """(depth, start, end) of the tiles of points sorted by (level, key)."""
    n = len(level)
    if n == 0:
        return []
    lv = level.astype(np.int64)
    tile = keys >> (np.uint64(3) * (np.uint64(D) - lv.astype(np.uint64)))
    brk = np.flatnonzero((lv[1:] != lv[:-1]) | (tile[1:] != tile[:-1])) + 1
    starts = np.concatenate([[0], brk])
    ends = np.concatenate([brk, [n]])
    return [(int(lv[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def process_bin(spec: BinSpec, job: TileJob, work_dir: str) -> BinResult:
    """Stage 3 for one bin: writes its tiles and the upper file; returns only small records."""
    from pipeline import arena

    arena.retire("dec.")  # this worker has finished decoding: binning buffers reuse that memory
    cube = job.cube
    dtype = job.layout.dtype
    rec = read_ranges(spec.ranges, dtype, out=arena.scratch("bin.rec", spec.count, dtype))
    n = len(rec)
    org = np.asarray(cube.origin, np.int64)
    # keys and hashes straight from the record fields (one pass, no position copies)
    keys, hashes = K.keys_and_hashes(
        rec["x"], rec["y"], rec["z"], org, cube.key_shift,
        keys=arena.scratch("bin.keys", n, np.uint64), hashes=arena.scratch("bin.hashes", n, np.uint64),
    )  # fmt: skip
    D, b = cube.D, spec.depth
    # keys of one bin share their top 3*b bits: sort the relative part
    rel_bits = 3 * (D - b)
    if rel_bits < 64:
        np.bitwise_and(keys, np.uint64((1 << rel_bits) - 1), out=keys)
    # every per-point array of the bin comes from the worker's reused buffers (fresh memory costs a page
    # fault per 4 KB on a VM: the first bin of a worker used to spend +0.15 s on them); arrays whose
    # lifetimes do not overlap share one: the sort's packed words -> the sorted keys, the unsorted keys ->
    # the tile-ordered keys, the unsorted hashes -> the level order
    share = {"keys_o": "sort.packed", "keys_l": "keys", "by_level": "hashes"}

    def alloc(name: str, shape, dtype) -> np.ndarray:
        return arena.scratch("bin." + share.get(name, name), shape, dtype)

    order = K.sort_order(keys, rel_bits, alloc=alloc)
    keys = np.take(keys, order, out=alloc("keys_o", n, np.uint64), mode="clip")  # clip: unbuffered
    hashes = np.take(hashes, order, out=alloc("hashes_o", n, np.uint64), mode="clip")
    level = K.select_levels(keys, hashes, D, b, GRID_BITS, cube.tmax, job.max_points, alloc=alloc)
    res = BinResult(spec.depth, spec.prefix, points=n)
    # one permutation: by level (stable: keeps key order), tiles become contiguous slices
    by_level = K.level_order(level, alloc=alloc)
    n_upper = int(np.count_nonzero(level < b))
    imin = int(np.argmin(hashes))  # first minimum = lowest key among equal hashes
    imin_pos = int(np.flatnonzero(by_level[:n_upper] == imin)[0]) if level[imin] < b else -1
    hashes_s = hashes[by_level[:n_upper]]
    # the keys were made relative to the bin: the bin's prefix is restored for the tiles and upper file
    prefix = spec.prefix << rel_bits if rel_bits < 64 else 0
    perm, keys, level_s, tile_starts = K.apply_level_order(
        order, by_level, keys, level, prefix, D, n_upper, alloc=alloc
    )
    del order, hashes, by_level
    bounds = [*tile_starts.tolist(), n]
    groups = [(int(level_s[a]), a - n_upper, e - n_upper) for a, e in itertools.pairwise(bounds)]
    res.tiles = write_tiles(job, rec, groups, perm[n_upper:])
    if n_upper:
        up_dtype = np.dtype([("rec", dtype), ("key", "<u8"), ("hash", "<u8"), ("level", "i1")])
        up = np.empty(n_upper, dtype=up_dtype)
        up["rec"] = K.take_rows(rec, perm[:n_upper])
        up["key"] = keys[:n_upper]
        up["hash"] = hashes_s
        up["level"] = level_s[:n_upper]
        path = Path(work_dir) / f"upper_{spec.depth}_{spec.prefix}.bin"
        up.tofile(path)
        res.upper_path = str(path)
        res.upper_count = n_upper
        if 0 <= imin_pos < n_upper:
            res.min_index = imin_pos
            res.min_key = int(keys[imin_pos])
            res.min_hash = int(hashes_s[imin_pos])
    return res


def warm_upper_kernels() -> None:
    """Load the numba kernels of bin planning, bins and upper tiles from their cache (about 0.2 s in a
    fresh process); in-process runs do this in a thread while the units decode."""
    K.warm_all()


def process_upper(results: list[BinResult], job: TileJob) -> list[TileRecord]:
    """Stage 4: the tiles above the bins (small: a few thousand points per bin)."""
    cube = job.cube
    D = cube.D
    g = GRID_BITS
    dtype = job.layout.dtype
    up_dtype = np.dtype([("rec", dtype), ("key", "<u8"), ("hash", "<u8"), ("level", "i1")])
    mins = []  # (bin depth, key, hash, global index)
    with_upper = [r for r in sorted(results, key=lambda r: (r.depth, r.prefix)) if r.upper_path]
    if not with_upper:
        return []
    # all upper files read straight into one array (a concatenate of structured arrays costs ~10 ms here)
    up = read_ranges(tuple((r.upper_path, 0, r.upper_count) for r in with_upper if r.upper_path), up_dtype)
    offset = 0
    for r in with_upper:
        if r.min_index >= 0 and r.depth - g > 0:
            mins.append((r.depth, r.min_key, r.min_hash, offset + r.min_index))
        offset += r.upper_count
    level = up["level"].copy()
    # a bin's min-hash point may be the min of a coarser cell spanning several bins
    if mins:
        md = np.array([m[0] for m in mins], dtype=np.int64)
        mk = np.array([m[1] for m in mins], dtype=np.uint64)
        mh = np.array([m[2] for m in mins], dtype=np.uint64)
        mi = np.array([m[3] for m in mins], dtype=np.int64)
        for t in range(0, int(md.max()) - g):
            c = t + g
            members = np.flatnonzero(md > c)
            if len(members) == 0:
                continue
            cell = mk[members] >> np.uint64(3 * (D - c))
            order = np.lexsort((mk[members], mh[members], cell))
            first = np.ones(len(order), dtype=bool)
            first[1:] = cell[order][1:] != cell[order][:-1]
            for w in members[order[first]]:
                gi = mi[w]
                if level[gi] > t:
                    level[gi] = t
    order = np.lexsort((up["key"], level))
    rows = K.take_rows(up, order)  # whole rows: a structured fancy index costs ~9 ms here
    keys = rows["key"]
    lv = level[order]
    # the records lead each row: their bytes, made contiguous
    recs = np.ascontiguousarray(rows.view(np.uint8).reshape(len(rows), -1)[:, : dtype.itemsize]).view(dtype)
    return write_tiles(job, recs.reshape(-1), _group_slices(lv, keys, D))


def remove_quietly(paths: list[str]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.remove(p)
