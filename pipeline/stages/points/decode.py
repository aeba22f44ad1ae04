"""Point tiling, stage 1: `decode_to_spill` decodes one work unit: decode -> check classes -> colour ->
lattice reprojection to ENU mm -> sort by Morton prefix -> spill file (and, with COPC, the unit's LAS
records). A pure function of paths and a small job description (`FileJob`, `DecodeJob`); no Dask in here.
Stages 2-4: pipeline.stages.points.tiling. The kernels (numba) are imported by the functions that run them:
the main process of a run with workers plans and submits the tasks without loading numba.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import InputError
from pipeline.frame import ProjectFrame
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit
from pipeline.sources.pointcloud.las import Column, Rgb16, materialize
from pipeline.stages.points.classes import check_classes
from pipeline.stages.points.colour import sample_orthophoto, srgb8_shift
from pipeline.stages.points.lattice import lattice_for
from pipeline.stages.points.spill import INDEX_STEP, CubeSpec, RecordLayout, SpillPart

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig


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


@dataclass(frozen=True)
class DecodeJob:
    frame: ProjectFrame
    # the CRS settings as CrsConfig JSON: a worker parses it (imports pydantic) only when it must build a
    # lattice itself (the planner normally did) or write COPC records
    crs_cfg: str
    layout: RecordLayout
    class_scheme: str
    keep_unknown: bool
    spill_dir: str
    cube: CubeSpec
    # points outside their file's header bounds (`PointTilingOptions.outside_header_bounds`): "error"
    # (refuse the file) or "use-real" (the unit returns its real extent instead of a spill file; the planner
    # widens the file's bounds and runs again)
    outside_bounds: str = "error"
    # also write the units' COPC records (stages.points.copc_records.CopcOptions; None: no COPC output)
    copc: Any = None

    def crs_config(self) -> CrsConfig:
        return _crs_config(self.crs_cfg)


@functools.lru_cache(maxsize=8)
def _crs_config(js: str) -> CrsConfig:
    from pipeline.config.model import CrsConfig

    return CrsConfig.model_validate_json(js)


# ---- 1. decode --------------------------------------------------------------------------------------


def _outside_bounds(info: PointFileInfo, raw_min, raw_max, unit: WorkUnit) -> str | None:
    """Why a unit's integer coordinates lie outside the header bounds (corrupt data), or None."""
    if unit.count == 0:
        return None
    for axis in range(3):
        s, o = info.scales[axis], info.offsets[axis]
        lo, hi = int(raw_min[axis]) * s + o, int(raw_max[axis]) * s + o
        tol = abs(s) + 1e-9 * max(abs(info.mins[axis]), abs(info.maxs[axis]), 1.0)
        if lo < info.mins[axis] - tol or hi > info.maxs[axis] + tol:
            return (
                f"points lie outside the header bounds on {'xyz'[axis]} ({lo:.3f}..{hi:.3f} vs header "
                f"{info.mins[axis]:.3f}..{info.maxs[axis]:.3f}): corrupt data or a wrong header"
            )
    return None


def decode_to_spill(fj: FileJob, unit: WorkUnit, job: DecodeJob) -> SpillPart:
    """Stage 1 for one unit: decode, check and reproject it (keys, extents and checks from one fused kernel
    pass), sort it and write its spill file; returns the spill part (path, count, class codes), never the
    points."""
    from pipeline.sources.pointcloud.reader import decode_unit
    from pipeline.stages.points import kernels as K

    cube, info = job.cube, fj.info
    org = np.asarray(cube.origin, np.int64)
    record = f"points {unit.start}..{unit.start + unit.count - 1}"
    # LAS: views of the raw records (key "_raw"); bit-field columns are computed by the spill packer; the
    # backend decodes exactly unit.count points (or raises)
    d = decode_unit(info, unit, job.layout.extra_dims)
    ix, iy, iz = materialize(d["X"]), materialize(d["Y"]), materialize(d["Z"])  # never lazy: no copies
    raw = materialize(d["_raw"]) if "_raw" in d else None
    n = unit.count
    lat = fj.lattice
    if lat is None:
        lat = lattice_for(
            fj.crs_wkt, job.crs_config(), job.frame, info.mins, info.maxs, fj.z_factor, str(info.path), fj.aoi
        )
    xyz, keys, bad, raw_min, raw_max, lo, hi = K.lattice_to_enu_keys(
        ix, iy, iz, info.scales, info.offsets, fj.z_factor, lat, org, cube.R - cube.S
    )
    outside = _outside_bounds(info, raw_min, raw_max, unit)
    if job.outside_bounds == "use-real" and (bad or outside):  # the planner widens the file's bounds, reruns
        raw_ext = tuple(int(v) for v in (*raw_min, *raw_max))
        return SpillPart(0, "", (), outside=raw_ext)
    if outside:
        raise InputError(outside, path=info.path, record=record)
    codes = np.flatnonzero(np.bincount(materialize(d["classification"]), minlength=256))
    check_classes(codes, job.class_scheme, job.keep_unknown, path=info.path, record=record)
    if bad:
        raise InputError(f"{bad} points lie outside the header bounds", path=info.path)
    if n and (np.any(lo < org) or np.any(hi >= org + (1 << cube.R))):
        raise InputError(
            "points fall outside the planned extent (header bounds too small?)", path=info.path, record=record
        )
    # the columns of the record layout's attributes (pipeline.point_attributes); a file without one leaves
    # it 0 in the spill record
    cols: dict[str, Column] = {}
    rgb_max = -1  # largest raw colour channel value (-1: no RGB read)
    for a in job.layout.attributes:
        if a.name != "rgb":
            if a.from_las is not None:
                if raw is not None:
                    cols[a.name] = a.from_las(raw, info.point_format)
            elif a.name in d:
                cols[a.name] = d[a.name]
        elif info.has_rgb:  # 8-bit sRGB, converted by the spill packer
            red, green, blue = materialize(d["red"]), materialize(d["green"]), materialize(d["blue"])
            rgb_max = max((int(c.max()) for c in (red, green, blue) if len(c)), default=0)
            cols["rgb"] = Rgb16(red, green, blue, srgb8_shift(rgb_max))
        elif fj.orthophoto:
            xs = ix * info.scales[0] + info.offsets[0]
            ys = iy * info.scales[1] + info.offsets[1]
            smp = sample_orthophoto(fj.orthophoto, xs, ys, fj.crs_wkt, dict(fj.ortho_bands))
            cols["rgb"] = smp["rgb"]
            if job.layout.has_nir and "nir" in smp and "nir" not in d:
                cols["nir"] = smp["nir"]
    order = K.sort_order(keys, 3 * cube.S)  # stable: ties keep file order
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
            index = keys[order[::INDEX_STEP]]  # the sparse index after the records (see spill.py)
            _allocate(f.fileno(), n * dtype.itemsize + index.nbytes)  # zero-filled: unfilled fields stay 0
            _pack_spill(f.fileno(), n, dtype, order, xyz, cols)
            os.pwrite(f.fileno(), index.tobytes(), n * dtype.itemsize)
    if job.copc is not None:  # the same decoded columns as the COPC records (file order)
        from pipeline.stages.points.copc_records import write_unit

        write_unit(job.copc, fj, unit, job.layout, job.crs_config(), (ix, iy, iz), cols)
    return SpillPart(n, str(rec_path), tuple(int(c) for c in codes), rgb_max=rgb_max)


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


def _pack_spill(fd: int, n: int, dtype: np.dtype, order, xyz, cols) -> None:
    """Write the records into the spill file through a shared mapping. It is never closed explicitly but
    unmapped with its last view: a view may outlive the packing, in a traceback when packing fails or in a
    frame a sampling profiler (Dask's worker profiler) still holds, and closing it then raises `BufferError:
    cannot close exported pointers exist` instead of the result. Nothing waits for the unmapping: the
    written pages are in the page cache, and readers of the file see them at once."""
    import mmap

    from pipeline.stages.points.kernels import pack_records

    pack_records(order, xyz, cols, np.frombuffer(mmap.mmap(fd, n * dtype.itemsize), dtype=dtype, count=n))
