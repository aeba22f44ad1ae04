"""Point-cloud tiling: the task graph around the stages in pipeline/stages/points/tiling.py.

Plan (header scan, CRS, extent, units) -> decode units to spill files (parallel) -> plan bins (keys only)
-> bins to tiles (parallel) -> tiles above the bins -> tileset.json -> atomic rename into place.

Only paths, offsets and small records travel between processes; every worker reads its own byte ranges.
The tasks run on one `concurrent.futures.Executor` (pipeline.orchestrate.executor: the local process pool,
a Dask cluster's executor) or in this process; the output is byte-identical on all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config.sizes import parse_size
from pipeline.crs import ECEF, GEOGRAPHIC_3D, ProjectFrame
from pipeline.errors import ConfigError, InputError, NoSpaceError
from pipeline.fsutil import UnsafeDeleteError, remove_owned
from pipeline.orchestrate.executor import Executor, call, dask_executor, dask_workers, map_ordered
from pipeline.orchestrate.points_inputs import make_staging, present_extra_dims, scan_inputs
from pipeline.point_attributes import check_optional
from pipeline.sources.pointcloud.crs import FileCrs, resolve_file_crs
from pipeline.sources.pointcloud.header import PointFileInfo, plan_units
from pipeline.stages.points.classes import enum_schema
from pipeline.stages.points.spill import CubeSpec, RecordLayout, cube_for
from pipeline.stages.points.tiling import (
    BinResult,
    DecodeJob,
    FileJob,
    TileJob,
    TileRecord,
    area_of_interest,
    decode_to_spill,
    ecef_transformer_for,
    plan_bins,
    process_bin,
    process_upper,
    warm_upper_kernels,
    with_lattice,
)

if TYPE_CHECKING:  # the pipeline layer's types (imported there: `twin points` needs no config model)
    from pipeline.config.model import CrsConfig, PointsLayer, RasterSource
    from pipeline.model import BuildContext, InputFile, LayerResult

Progress = Callable[[str, int, int], None]  # (phase, done, total)

BYTES_PER_BIN_POINT = 160  # peak bytes per point while a bin is processed (records, keys, sort, copies)
WORKER_BASE_BYTES = 350 * 2**20  # interpreter + numpy/numba/dask per worker process
MIN_BIN_POINTS = 500_000  # keeps tiles above the bins internal (see docs/pointcloud.md)


@dataclass(frozen=True)
class PointTilingOptions:
    crs: str | None = None
    format: str = "1.1"  # "1.1" glb | "1.0" pnts
    jobs: int | None = None
    memory: str | int = "1.5GB"  # budget of the point bins over all workers (process overhead comes on top)
    meshopt: bool = True  # EXT_meshopt_compression (1.1; ignored for 1.0/pnts)
    implicit: bool = False
    # "adv" | "asprs" | "auto" (inferred from the codes present and the file names: see
    # stages.points.classes.infer_class_scheme)
    class_scheme: str = "auto"
    unknown_classes: str = "error"
    orthophoto: str | tuple[str, ...] | None = None  # one raster or the tiles of a tiled delivery
    ortho_bands: tuple[tuple[str, int], ...] = ()
    # LAS extra dimensions to keep: None = every one any input has (the default), () = none
    extra_dimensions: tuple[str, ...] | None = None
    # opt-in attributes of pipeline.point_attributes (e.g. "scan_angle"; off by default)
    attributes: tuple[str, ...] = ()
    max_points_per_tile: int = 60_000
    max_bin_points: int | None = None  # None: from the memory budget (tests and tuning only)
    assume_ellipsoidal: bool = False
    z_unit: str | None = None
    overwrite: bool = False
    # an empty or unreadable input file in a multi-file run: "stop" (error, exit 2) or "skip" (warning)
    on_bad_file: str = "stop"
    # points outside their file's header bounds: "use-real" (widen the file's bounds to its data, note it;
    # the run decodes again) or "error" (refuse the file as corrupt)
    outside_header_bounds: str = "use-real"
    tileset_version: str | None = None
    crs_cfg: CrsConfig | None = None  # project CRS settings (pipeline); standalone: derived
    frame: ProjectFrame | None = None  # fixed project frame (pipeline); standalone: centre of the inputs
    # incremental builds (pipeline): content-addressed cache of decode units and bins (None: no caching)
    cache: Any = None  # pipeline.orchestrate.cache.Cache
    input_sha256: tuple[tuple[str, str], ...] = ()  # (resolved path, sha256) of every input file
    ortho_sha256: tuple[str, ...] = ()  # sha256 of the orthophoto files used for colour
    # also write COPC files + a .vpc from the same decode (stages.points.copc_records.CopcOptions)
    copc: Any = None


@dataclass
class TilingSummary:
    points_in: int = 0
    points_out: int = 0
    tiles: int = 0
    depth: int = 0
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    files: int = 0
    bins: int = 0
    checksum: int = 0
    out_dir: str = ""
    tileset: str = "tileset.json"
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    # point accounting: the header counts of every file given, and why a file's points were not tiled
    # (an identical copy of another input, or skipped as unreadable); points_header - points_in is the sum
    # of the points of the files listed here
    points_header: int = 0
    not_tiled: list[dict[str, Any]] = field(default_factory=list)
    # the class scheme used and how it was chosen ("given" or what `auto` inferred it from)
    class_scheme: str = ""
    class_scheme_reason: str = ""
    # the LAS extra dimensions kept (metadata properties `x_<name>`), and those of the inputs left out
    extra_dimensions: list[str] = field(default_factory=list)
    extra_dimensions_dropped: list[str] = field(default_factory=list)
    copc: Any = None  # orchestrate.points_copc.CopcSummary when COPC files were written

    @property
    def points_per_second(self) -> float:
        return self.points_in / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "points_in": self.points_in,
            "points_out": self.points_out,
            "tiles": self.tiles,
            "depth": self.depth,
            "seconds": round(self.seconds, 3),
            "points_per_second": round(self.points_per_second),
            "peak_rss_bytes": self.peak_rss_bytes,
            "files": self.files,
            "bins": self.bins,
            "checksum": f"{self.checksum:016x}",
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "points_header": self.points_header,
            "not_tiled": self.not_tiled,
            "class_scheme": self.class_scheme,
            "class_scheme_reason": self.class_scheme_reason,
            "extra_dimensions": self.extra_dimensions,
            "extra_dimensions_dropped": self.extra_dimensions_dropped,
            "notes": self.notes,
        } | ({"copc": self.copc.to_json()} if self.copc is not None else {})


# ---- memory monitor ---------------------------------------------------------------------------------


class PeakRss:
    """Samples the RSS of this process and all its children (LocalCluster workers) in a thread."""

    def __init__(self, interval: float = 0.1):
        self.peak = 0
        self.interval = interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_info().rss
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.sample()


# ---- planning -----------------------------------------------------------------------------------------


def _crs_aois(infos: list[PointFileInfo], fcs: list[FileCrs]) -> dict[str, Any]:
    """Per source CRS (WKT): the area of interest covering all its files (one transformer per CRS)."""
    boxes: dict[str, list] = {}
    for info, fc in zip(infos, fcs, strict=True):
        boxes.setdefault(fc.crs.to_wkt(), []).append((info.mins, info.maxs))
    return {wkt: area_of_interest(wkt, b) for wkt, b in sorted(boxes.items())}


def _standalone_frame(
    infos: list[PointFileInfo], fcs: list[FileCrs], cfg: CrsConfig, aois: dict[str, Any] | None = None
) -> ProjectFrame:
    """Frame origin = centre of the inputs' extent, snapped to 0.001 degree, on the ellipsoid."""
    from pipeline.crs import plain_transformer

    lons, lats, weights = [], [], []
    to_geo = plain_transformer(ECEF, GEOGRAPHIC_3D)
    for info, fc in zip(infos, fcs, strict=True):
        wkt = fc.crs.to_wkt()
        t = ecef_transformer_for(wkt, cfg, info.path, (aois or {}).get(wkt))  # reused: extent, lattice
        cx = (info.mins[0] + info.maxs[0]) / 2
        cy = (info.mins[1] + info.maxs[1]) / 2
        cz = (info.mins[2] + info.maxs[2]) / 2 * fc.z_factor
        lon, lat, _h = to_geo.transform(*t.transform(cx, cy, cz))
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise InputError("cannot locate the file's centre (CRS transformation failed)", path=info.path)
        lons.append(lon)
        lats.append(lat)
        weights.append(info.count)
    w = np.asarray(weights, dtype=np.float64)
    lon = round(float(np.average(lons, weights=w)), 3)
    lat = round(float(np.average(lats, weights=w)), 3)
    x, y, z = plain_transformer(GEOGRAPHIC_3D, ECEF).transform(lon, lat, 0.0)
    return ProjectFrame((float(x), float(y), float(z)), lon, lat)


def _enu_extent(
    infos: list[PointFileInfo],
    fcs: list[FileCrs],
    frame: ProjectFrame,
    cfg: CrsConfig,
    aois: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for info, fc in zip(infos, fcs, strict=True):
        wkt = fc.crs.to_wkt()
        t = ecef_transformer_for(wkt, cfg, info.path, (aois or {}).get(wkt))
        g = [np.linspace(info.mins[i], info.maxs[i], 9 if i < 2 else 2) for i in range(3)]
        X, Y, Z = np.meshgrid(*g, indexing="ij")
        ex, ey, ez = t.transform(X.ravel(), Y.ravel(), Z.ravel() * fc.z_factor)
        enu = frame.ecef_to_enu(np.asarray(ex), np.asarray(ey), np.asarray(ez))
        if not np.all(np.isfinite(enu)):
            raise InputError(
                "the file's extent cannot be transformed (outside the CRS's / geoid grid's coverage)",
                path=info.path,
            )
        lo = np.minimum(lo, enu.min(axis=0))
        hi = np.maximum(hi, enu.max(axis=0))
    return lo, hi


def _enu_extent_cached(
    infos: list[PointFileInfo],
    fcs: list[FileCrs],
    frame: ProjectFrame,
    cfg: CrsConfig,
    cache: Any,
    aois: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`_enu_extent`, per file memoised in the build cache by header bounds + CRS + frame (incremental
    builds then need no PROJ transformer in this process: creating one with a geoid grid takes ~1 s)."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for info, fc in zip(infos, fcs, strict=True):
        key = [
            "points-extent-v1",
            [float(v) for v in info.mins],
            [float(v) for v in info.maxs],
            fc.crs.to_wkt(),
            fc.z_factor,
            frame.to_json(),
            cfg,
        ]
        if cache is None:
            flo, fhi = _enu_extent([info], [fc], frame, cfg, aois)
        else:
            flo, fhi = cache.call(key, _enu_extent, [info], [fc], frame, cfg, aois)
        _check_position_range(info, flo, fhi, frame)
        lo = np.minimum(lo, flo)
        hi = np.maximum(hi, fhi)
    return lo, hi


# positions are int32 millimetres relative to the frame origin: +-2,147.48 km; a margin of 1 km covers the
# padding of the extent and a header box whose sampled extent is a little smaller than its true one
MAX_POSITION_MM = 2**31 - 1 - 1_000_000


def _check_position_range(info: PointFileInfo, lo: np.ndarray, hi: np.ndarray, frame: ProjectFrame) -> None:
    """Refuse a file whose points lie too far from the frame origin for integer-millimetre positions
    (they would wrap around and land hundreds of km away)."""
    far = float(max(np.max(np.abs(lo)), np.max(np.abs(hi)))) * 1000.0
    if not far <= MAX_POSITION_MM:
        raise InputError(
            f"the file lies up to {far / 1e6:,.0f} km from the frame origin (lon {frame.lon:.3f}, lat "
            f"{frame.lat:.3f}; standalone: the centre of all inputs, in a build: crs.frame_origin); point "
            f"positions are stored as 32-bit millimetres and reach only {MAX_POSITION_MM / 1e6:,.0f} km: "
            "tile inputs that lie farther apart (other regions, other continents) in separate runs",
            path=info.path,
        )


def _lattice_of(fj: FileJob, frame: ProjectFrame, cfg: CrsConfig) -> Any:
    return with_lattice(fj, frame, cfg).lattice


def _with_lattice_cached(fj: FileJob, frame: ProjectFrame, cfg: CrsConfig, cache: Any) -> FileJob:
    """`with_lattice`, memoised in the build cache by header bounds + CRS + frame: an incremental build
    creates no PROJ transformer (about a second with a geoid grid) for files whose bounds are unchanged."""
    if cache is None:
        return with_lattice(fj, frame, cfg)
    info = fj.info
    key = [
        "points-lattice-v1",
        [float(v) for v in info.mins],
        [float(v) for v in info.maxs],
        fj.crs_wkt,
        fj.z_factor,
        frame.to_json(),
        cfg,
    ]
    lat = cache.call(key, _lattice_of, fj, frame, cfg)
    return fj if lat is None else dataclasses.replace(fj, lattice=lat)


@dataclass
class _Plan:
    infos: list[PointFileInfo]
    file_jobs: list[FileJob]
    frame: ProjectFrame
    crs_cfg: CrsConfig
    layout: RecordLayout
    cube: CubeSpec
    notes: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # input path -> why it was left out


def plan_tiling(
    inputs: list[Path],
    opts: PointTilingOptions,
    infos: list[PointFileInfo] | None = None,
    skipped: dict[str, str] | None = None,
) -> _Plan:
    """Header-only planning: scan (unless `infos` are given, with the files the scan `skipped`), CRS per
    file, frame, extent, cube, record layout."""
    skipped = dict(skipped or {})
    if infos is None:
        infos = scan_inputs(inputs, opts.on_bad_file, skipped)
    if opts.crs_cfg is None:  # standalone runs have no project config: no vertical CRS of the project
        from pipeline.config.model import CrsConfig

        cfg = CrsConfig(vertical=None, assume_ellipsoidal_heights=opts.assume_ellipsoidal)
    else:
        cfg = opts.crs_cfg
    if opts.assume_ellipsoidal and not cfg.assume_ellipsoidal_heights:
        cfg = cfg.model_copy(update={"assume_ellipsoidal_heights": True})
    fcs = [resolve_file_crs(i, opts.crs, cfg, opts.z_unit) for i in infos]
    notes = [f"{i.path.name}: {fc.note}" for i, fc in zip(infos, fcs, strict=True) if fc.note]
    for i in infos:
        for d in i.duplicates:
            notes.append(
                f"{Path(d).name}: identical to {i.path.name} (same sha256): tiled once, its "
                f"{i.count:,} points not counted twice"
            )
    for path, why in sorted(skipped.items()):
        notes.append(f"{Path(path).name}: skipped (--on-bad-tile skip): {why}")
    aois = _crs_aois(infos, fcs)  # transformers with an area of interest: same values, 8x faster to create
    frame = opts.frame or _standalone_frame(infos, fcs, cfg, aois)
    lo, hi = _enu_extent_cached(infos, fcs, frame, cfg, opts.cache, aois)
    pad = 1.0
    lo_mm = np.floor((lo - pad) * 1000).astype(np.int64)
    hi_mm = np.ceil((hi + pad) * 1000).astype(np.int64)
    cube = cube_for(lo_mm, hi_mm)
    ortho_nir = False
    if opts.orthophoto:
        import rasterio

        first = opts.orthophoto if isinstance(opts.orthophoto, str) else opts.orthophoto[0]
        try:
            with rasterio.open(first) as src:
                ortho_nir = src.count >= dict(opts.ortho_bands).get("nir", 4)
        except Exception as e:
            raise InputError(f"cannot open orthophoto: {e}", path=first) from e
    needs_ortho = [not i.has_rgb and i.kind != "e57" for i in infos]
    use_ortho = bool(opts.orthophoto) and any(needs_ortho)
    try:
        optional = check_optional(opts.attributes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    extra = present_extra_dims(infos, opts.extra_dimensions)
    missing = [d for d in (opts.extra_dimensions or ()) if d not in extra]
    if missing:
        notes.append(f"extra dimensions not found in any input: {missing}")
    layout = RecordLayout(
        has_rgb=any(i.has_rgb for i in infos) or use_ortho,
        has_gps=any(i.has_gps for i in infos),
        has_nir=any(i.has_nir for i in infos) or (use_ortho and ortho_nir),
        extra_dims=extra,
        optional=optional,
    )
    file_jobs = [
        _with_lattice_cached(
            FileJob(
                info,
                fc.crs.to_wkt(),
                fc.z_factor,
                opts.orthophoto if (use_ortho and need) else None,
                tuple(opts.ortho_bands),
                aoi=aois.get(fc.crs.to_wkt()),
            ),
            frame,
            cfg,
            opts.cache,
        )
        for info, fc, need in zip(infos, fcs, needs_ortho, strict=True)
    ]
    return _Plan(infos, file_jobs, frame, cfg, layout, cube, notes, skipped)


# ---- execution ----------------------------------------------------------------------------------------


def _resolve_class_scheme(
    opts: PointTilingOptions, plan: _Plan, codes: list[int], summary: TilingSummary
) -> str:
    """The class scheme of the run (`auto`: inferred from all the codes decoded and the file names, then
    the codes checked against it, as a given scheme's are while decoding); recorded in the summary, with
    the extra dimensions kept and left out."""
    from pipeline.stages.points.classes import check_classes, infer_class_scheme

    if opts.class_scheme == "auto":
        scheme, reason = infer_class_scheme(codes, [i.path.name for i in plan.infos])
        check_classes(
            np.asarray(codes, dtype=np.int64),
            scheme,
            opts.unknown_classes == "keep",
            path=", ".join(i.path.name for i in plan.infos[:3]) + (" ..." if len(plan.infos) > 3 else ""),
            record=f"class scheme inferred as {scheme.upper()}: {reason}",
        )
        reason = f"auto: {reason}"
    else:
        scheme, reason = opts.class_scheme, "given"
    summary.class_scheme, summary.class_scheme_reason = scheme, reason
    summary.extra_dimensions = list(plan.layout.extra_dims)
    summary.extra_dimensions_dropped = sorted(
        {d for i in plan.infos for d in i.extra_dims} - set(plan.layout.extra_dims)
    )
    return scheme


def release_worker_buffers() -> bool:
    """Give back the point stages' reusable buffers (run on the long-lived workers of a Dask cluster when a
    point layer is done: the next stages run on the same workers; in-process runs call it directly)."""
    from pipeline.stages.points import arena

    arena.release()
    return True


def _geometric_error_fn(cube: CubeSpec):
    return lambda depth: cube.spacing_m(depth)


def _run_tiling(
    plan: _Plan,
    staging: Path,
    opts: PointTilingOptions,
    executor: Executor | None,
    workers: int,
    progress,
    replan: bool = True,
    attempt: int = 0,
) -> TilingSummary:
    from pipeline.tiles.implicit import build_tree, tree_depth, write_explicit, write_implicit
    from pipeline.tiles.points_glb import PointSchema

    summary = TilingSummary(files=len(plan.infos), notes=list(plan.notes))
    t0 = time.perf_counter()
    work = staging / (".work" if attempt == 0 else f".work{attempt}")
    spill = work / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    from pipeline.orchestrate.points_copc import copc_side

    side = copc_side(opts.copc, work, opts.crs)  # the decode tasks write the COPC records too
    units = plan_units(plan.infos)
    summary.points_in = sum(i.count for i in plan.infos)
    summary.points_header = summary.points_in
    for i in plan.infos:
        for d in i.duplicates:
            summary.points_header += i.count
            summary.not_tiled.append(
                {"file": d, "header_points": i.count, "reason": f"identical to {i.path} (same sha256)"}
            )
    for path, why in sorted(plan.skipped.items()):
        summary.not_tiled.append({"file": path, "header_points": None, "reason": f"skipped: {why}"})
    djob = DecodeJob(
        plan.frame,
        plan.crs_cfg,
        plan.layout,
        opts.class_scheme,
        opts.unknown_classes == "keep",
        str(spill),
        plan.cube,
        "report" if opts.outside_header_bounds == "use-real" else "error",
        side,
    )

    if executor is None:
        # in-process runs load the kernels of the bin planning and the upper tiles while decoding; with
        # workers, those steps run on a worker (this process never loads numba: no CPU taken from them)
        threading.Thread(target=warm_upper_kernels, daemon=True).start()

    unit_keys: dict[str, str] = {}  # spill rec path -> content key of its decode unit (for bin keys)
    if opts.cache is not None:
        from pipeline.orchestrate.points_cache import decode_cached, decode_key_parts

        shas = dict(opts.input_sha256)
        items = []
        for u in units:
            fj = plan.file_jobs[u.file_index]
            kp = decode_key_parts(fj, u, djob, shas[str(fj.info.path)], opts.ortho_sha256)
            items.append((fj, u, djob, opts.cache, kp))
        parts = map_ordered(executor, decode_cached, items, name="decode", progress=progress)
        for it, p in zip(items, parts, strict=True):
            unit_keys[p.rec_path] = opts.cache.key(it[4])
    else:
        parts = map_ordered(
            executor,
            decode_to_spill,
            [(plan.file_jobs[u.file_index], u, djob) for u in units],
            name="decode",
            progress=progress,
        )
    summary.phases["decode"] = time.perf_counter() - t0
    if replan:
        _replan_if_needed(plan, units, parts)
    codes = sorted({c for p in parts for c in p.class_codes})
    scheme = _resolve_class_scheme(opts, plan, codes, summary)
    t1 = time.perf_counter()
    budget = parse_size(opts.memory) if isinstance(opts.memory, str) else int(opts.memory)
    per_worker = budget / workers - WORKER_BASE_BYTES
    max_bin = max(MIN_BIN_POINTS, int(per_worker / BYTES_PER_BIN_POINT))
    # at least ~4 bins per worker when the input allows it: keeps the workers busy until the end
    max_bin = min(max_bin, max(MIN_BIN_POINTS, summary.points_in // (4 * workers)))
    if opts.max_bin_points:
        max_bin = opts.max_bin_points
    bins = call(
        executor, plan_bins, parts, plan.cube, plan.layout.dtype, max_bin, min(plan.cube.S, plan.cube.tmax)
    )
    summary.bins = len(bins)
    schema = PointSchema(
        class_scheme=scheme,
        class_enum=enum_schema(scheme, codes if opts.unknown_classes == "keep" else None),
        has_rgb=plan.layout.has_rgb,
        has_gps=plan.layout.has_gps,
        has_nir=plan.layout.has_nir,
        extra_dims=plan.layout.extra_dims,
        optional=plan.layout.optional,
    )
    tjob = TileJob(
        plan.cube,
        plan.layout,
        str(staging),
        opts.format,
        opts.max_points_per_tile,
        schema,
        opts.meshopt and opts.format == "1.1",
    )
    # biggest bins first: better packing of the workers
    order = sorted(range(len(bins)), key=lambda i: (-bins[i].count, i))
    if opts.cache is not None:
        from pipeline.orchestrate.points_cache import bin_key_parts, process_bin_cached

        res_sorted: list[BinResult] = map_ordered(
            executor,
            process_bin_cached,
            [(bins[i], tjob, opts.cache, bin_key_parts(bins[i], tjob, unit_keys)) for i in order],
            name="tile",
            progress=progress,
        )
    else:
        # a spill file is deleted as soon as the last bin reading it is done: its pages are freed while
        # the other bins run (spatially sorted inputs free most of them early), not all at the end
        refs: dict[str, int] = {}
        for bn in bins:
            for path, _a, _b in bn.ranges:
                refs[path] = refs.get(path, 0) + 1

        def release_spill(k: int) -> None:
            for path, _a, _b in bins[order[k]].ranges:
                refs[path] -= 1
                if refs[path] == 0:
                    with contextlib.suppress(OSError):
                        os.remove(path)

        res_sorted = map_ordered(
            executor,
            process_bin,
            [(bins[i], tjob, str(work)) for i in order],
            name="tile",
            progress=progress,
            on_done=release_spill,
        )
    by_bin = dict(zip(order, res_sorted, strict=True))
    results: list[BinResult] = [by_bin[k] for k in range(len(bins))]
    summary.phases["tile"] = time.perf_counter() - t1
    if side is not None:
        from pipeline.orchestrate.points_copc import write_layer_copc

        t3 = time.perf_counter()
        # threads compressing a file's nodes: here `jobs`; on workers those left idle by fewer files
        threads = max(1, opts.jobs or 1) if executor is None else max(1, workers // max(1, len(plan.infos)))
        summary.copc = write_layer_copc(
            plan, djob, units, staging, opts.copc, scheme, executor, progress, threads
        )
        summary.phases["copc"] = time.perf_counter() - t3
    t2 = time.perf_counter()
    # the spill files are done with: free their pages while the upper tiles and the tileset are written
    dropper = threading.Thread(target=shutil.rmtree, args=(spill,), kwargs={"ignore_errors": True})
    dropper.start()
    tiles: list[TileRecord] = [t for r in results for t in r.tiles]
    tiles += call(executor, process_upper, results, tjob)
    tiles.sort(key=lambda t: (t.depth, t.ix, t.iy, t.iz))
    summary.tiles = len(tiles)
    summary.points_out = sum(t.count for t in tiles)
    summary.checksum = int(sum(t.checksum for t in tiles) % (1 << 64))
    if summary.points_out != summary.points_in:
        raise RuntimeError(f"tiling lost points: {summary.points_in} in, {summary.points_out} out")
    root = build_tree(tiles)
    summary.depth = tree_depth(root)
    spacing = _geometric_error_fn(plan.cube)
    transform = plan.frame.tile_transform()
    if opts.implicit:
        write_implicit(
            root,
            staging,
            cube_lo_m=np.asarray(plan.cube.origin, np.float64) / 1000.0,
            cube_size_m=plan.cube.size_m,
            spacing=spacing,
            transform=transform,
            version="1.1" if opts.format == "1.1" else "1.0",
            content_ext="glb" if opts.format == "1.1" else "pnts",
            tileset_version=opts.tileset_version,
        )
    else:
        write_explicit(
            root,
            staging,
            spacing=spacing,
            transform=transform,
            version="1.1" if opts.format == "1.1" else "1.0",
            tileset_version=opts.tileset_version,
        )
    dropper.join()
    shutil.rmtree(work, ignore_errors=True)
    summary.phases["upper+tileset"] = time.perf_counter() - t2
    return summary


class _Replan(Exception):
    """The decode found files whose headers do not describe their data (points outside the header bounds,
    RGB zero everywhere): plan again with corrected file descriptions."""

    def __init__(self, infos: list[PointFileInfo], notes: list[str]):
        super().__init__("replan")
        self.infos = infos
        self.notes = notes


def _replan_if_needed(plan: _Plan, units: list, parts: list) -> None:
    """Corrections of the file descriptions from what the decode saw: a file whose units report points
    outside its header bounds gets its real bounds; a file whose RGB is 0 in every point has no colour
    (otherwise it would come out black). Raises `_Replan` when anything changed."""
    by_file: dict[int, list] = {}
    for u, p in zip(units, parts, strict=True):
        by_file.setdefault(u.file_index, []).append(p)
    infos = list(plan.infos)
    notes: list[str] = []
    for fi, ps in sorted(by_file.items()):
        info = infos[fi]
        out = [p.outside for p in ps if p.outside is not None]
        if out:
            sc, of = np.asarray(info.scales), np.asarray(info.offsets)
            rmin = np.min([o[:3] for o in out], axis=0) * sc + of
            rmax = np.max([o[3:] for o in out], axis=0) * sc + of
            lo, hi = np.minimum(rmin, rmax), np.maximum(rmin, rmax)  # (negative scales)
            mins = (
                float(min(info.mins[0], lo[0])),
                float(min(info.mins[1], lo[1])),
                float(min(info.mins[2], lo[2])),
            )
            maxs = (
                float(max(info.maxs[0], hi[0])),
                float(max(info.maxs[1], hi[1])),
                float(max(info.maxs[2], hi[2])),
            )
            axes = [
                f"{'xyz'[k]} {mins[k]:.3f}..{maxs[k]:.3f} (header {info.mins[k]:.3f}..{info.maxs[k]:.3f})"
                for k in range(3)
                if mins[k] < info.mins[k] or maxs[k] > info.maxs[k]
            ]
            notes.append(
                f"{info.path.name}: points lie outside the header bounds, tiled with the real bounds: "
                + "; ".join(axes)
            )
            info = dataclasses.replace(info, mins=mins, maxs=maxs)
        if info.has_rgb and ps and all(p.rgb_max == 0 for p in ps):
            notes.append(f"{info.path.name}: RGB is 0 in every point: treated as no colour (not black)")
            info = dataclasses.replace(info, has_rgb=False)
        infos[fi] = info
    if notes:
        raise _Replan(infos, notes)


def _write_invariants(staging: Path, summary: TilingSummary, plan: _Plan) -> None:
    from pipeline.tiles.tileset import write_json

    write_json(
        staging / "pointcloud.json",
        {
            "points": summary.points_out,
            "checksum": f"{summary.checksum:016x}",
            "tiles": summary.tiles,
            "depth": summary.depth,
            "frame": plan.frame.to_json(),
            "cube": {"origin_mm": list(plan.cube.origin), "log2_size_mm": plan.cube.R},
        },
    )


# `--overwrite` replaces only an earlier output of this command: a folder holding the run summary it
# writes (`pointcloud.json`) and a tileset. Anything else (a user's folder, a delivery) is refused.
OUTPUT_MARKER = "pointcloud.json"


def _check_replaceable(out_dir: Path, overwrite: bool) -> None:
    """Raise unless `out_dir` is missing, empty, or (with `overwrite`) an earlier `twin points` output."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UnsafeDeleteError("--out exists and is not a folder; nothing was written", path=out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise InputError("output directory exists and is not empty (use --overwrite)", path=out_dir)
    if not ((out_dir / OUTPUT_MARKER).is_file() and (out_dir / "tileset.json").is_file()):
        raise UnsafeDeleteError(
            "--overwrite replaces only an earlier `twin points` output (pointcloud.json + tileset.json); "
            "this folder is something else and was left untouched: choose an empty or new --out",
            path=out_dir,
        )


def _publish(staging: Path, out_dir: Path, overwrite: bool) -> None:
    _check_replaceable(out_dir, overwrite)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        remove_owned(old, marker=OUTPUT_MARKER)
    else:
        os.replace(staging, out_dir)


def _run_attempts(
    inputs: list[Path],
    plan: _Plan,
    staging: Path,
    opts: PointTilingOptions,
    executor: Executor | None,
    workers: int,
    progress,
) -> tuple[TilingSummary, _Plan]:
    """`_run_tiling`, run again with corrected file descriptions when the decode found headers that do not
    describe their data (`_Replan`), or without a file whose data is unreadable when bad files are skipped
    (`on_bad_file="skip"`). Valid inputs run once. Each further attempt works in a fresh `.work<n>` folder:
    tasks of an abandoned attempt that are still running can never write into it."""
    notes: list[str] = []
    run_opts, replan, attempt = opts, True, 0
    while True:
        try:
            summary = _run_tiling(plan, staging, run_opts, executor, workers, progress, replan, attempt)
            summary.notes[:0] = notes
            return summary, plan
        except _Replan as r:  # once more, corrected; a second pass must not find anything to correct
            notes += r.notes
            infos = r.infos
            run_opts, replan = dataclasses.replace(opts, outside_header_bounds="error"), False
        except InputError as e:
            if opts.on_bad_file != "skip" or len(plan.infos) < 2:
                raise
            bad = [i for i in plan.infos if str(i.path) in str(e)]
            if len(bad) != 1:
                raise
            plan.skipped[str(bad[0].path)] = e.message.replace(f"{bad[0].path}: ", "", 1)
            infos = [i for i in plan.infos if i.path != bad[0].path]
        shutil.rmtree(staging / (".work" if attempt == 0 else f".work{attempt}"), ignore_errors=True)
        attempt += 1
        plan = plan_tiling(inputs, run_opts, infos=infos, skipped=plan.skipped)


def _no_space(e: BaseException) -> bool:
    """Disk full, quota exceeded or a file-size limit (also when it happened in a worker)."""
    import errno

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def tile_pointcloud(
    inputs: list[Path],
    out_dir: Path,
    opts: PointTilingOptions,
    executor: Executor | None = None,
    progress: Progress | None = None,
    *,
    workers: int | None = None,
) -> TilingSummary:
    """Tile point-cloud files into a 3D Tiles tileset in `out_dir` (written atomically: nothing on error).

    The tasks run on `executor` (`pipeline.orchestrate.executor`: a `LocalPool`, a Dask client's
    `dask_executor`, or None: in this process); `workers` (the executor's number of processes; default
    `opts.jobs`, else 1) sizes the bins to the memory budget. The output never depends on either."""
    if workers is None:
        workers = (opts.jobs or 1) if executor is not None else 1
    out_dir = Path(out_dir).resolve()
    t0 = time.perf_counter()
    with PeakRss() as mon:
        staging = None
        try:
            _check_replaceable(out_dir, opts.overwrite)
            if opts.format not in ("1.1", "1.0"):
                raise InputError(f"unknown output format {opts.format!r} (1.1 or 1.0)")
            plan = plan_tiling(inputs, opts)
            staging = make_staging(out_dir)
            summary, plan = _run_attempts(inputs, plan, staging, opts, executor, workers, progress)
            _write_invariants(staging, summary, plan)
            _publish(staging, out_dir, opts.overwrite)
        except BaseException as e:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if _no_space(e):
                raise NoSpaceError(
                    f"no space left while tiling ({e}); the temporary folder was removed and nothing was "
                    "published: free space (the run needs about the input's decoded size plus the tiles) "
                    "or choose another --out",
                    path=out_dir,
                ) from e
            raise
        finally:
            if executor is None:
                release_worker_buffers()
    summary.seconds = time.perf_counter() - t0
    summary.peak_rss_bytes = mon.peak
    summary.out_dir = str(out_dir)
    return summary


# ---- pipeline layer --------------------------------------------------------------------------------------


def _cache_options(ctx: BuildContext, files: list[InputFile], with_ortho: bool) -> dict[str, Any]:
    """Incremental builds: the content cache and the input hashes that key decode units and bins."""
    from pipeline.orchestrate.cache import build_cache

    ortho = ctx.inputs_for("orthophoto") if with_ortho else []
    return {
        "cache": build_cache(ctx),  # the build's cache (`--force`: entries of earlier builds are misses)
        "input_sha256": tuple(sorted((str(f.path.resolve()), f.sha256) for f in files)),
        "ortho_sha256": tuple(sorted(f.sha256 for f in ortho)),
    }


def build_pointcloud_layer(
    ctx: BuildContext,
    *,
    name: str,
    files: list[InputFile],
    layer: PointsLayer,
    crs_override: str | None,
    class_scheme: str,
    orthophoto: RasterSource | None,
    out_subdir: str,
    copc: Any = None,
) -> LayerResult:
    """Tile one point layer of the build into ctx.release_dir / out_subdir (tileset.json at its root);
    with `copc` (`points_copc.layer_copc_options`) its COPC files and .vpc from the same pass."""
    from pipeline.model import LayerResult

    t0 = time.perf_counter()
    ortho_path: str | tuple[str, ...] | None = None
    bands: tuple[tuple[str, int], ...] = ()
    if orthophoto is not None and layer.colour_from_orthophoto:
        import glob

        matches = sorted(glob.glob(str(ctx.cfg.raw_dir / orthophoto.path)))
        if len(matches) == 1:
            ortho_path = matches[0]
        elif len(matches) > 1:
            ortho_path = tuple(matches)
        bands = tuple(sorted(orthophoto.bands.items()))
    # runtime.memory is per worker; the tiler's budget is the total over all workers
    workers = dask_workers(ctx.client) if ctx.client is not None else 1
    total_memory = parse_size(ctx.cfg.runtime.memory) * workers
    opts = PointTilingOptions(
        crs=crs_override,
        format=layer.format,
        memory=total_memory,
        meshopt=layer.meshopt,
        implicit=layer.implicit,
        class_scheme=class_scheme,
        unknown_classes=layer.unknown_classes,
        orthophoto=ortho_path,
        ortho_bands=bands,
        extra_dimensions=layer.extra_dimension_names,
        attributes=tuple(layer.attributes),
        max_points_per_tile=layer.max_points_per_tile,
        tileset_version=ctx.build_id,
        crs_cfg=ctx.cfg.crs,
        frame=ctx.frame,
        copc=copc,
        **_cache_options(ctx, files, orthophoto is not None and layer.colour_from_orthophoto),
    )
    executor = dask_executor(ctx.client) if ctx.client is not None else None
    with ctx.stage(f"points:{name}"):
        try:
            summary = tile_pointcloud(
                [f.path for f in files],
                ctx.release_dir / out_subdir,
                opts,
                executor,
                ctx.progress,
                workers=workers,
            )
        finally:
            if ctx.client is not None:  # the cluster's workers go on with other stages
                with contextlib.suppress(Exception):
                    ctx.client.run(release_worker_buffers)
    for n in summary.notes:
        ctx.warn(f"{name}: {n}")
    from pipeline.orchestrate.points_copc import add_layer_copc
    from pipeline.viewer.classes import class_stats

    result = LayerResult(
        name=name,
        kind="pointcloud",
        access=layer.access,
        tileset=f"{out_subdir}/tileset.json",
        stats={
            "points_in": summary.points_in,
            "points_out": summary.points_out,
            "tiles": summary.tiles,
            "depth": summary.depth,
            "checksum": f"{summary.checksum:016x}",
            "bins": summary.bins,
            "points_per_second": round(summary.points_per_second),
            "peak_rss_bytes": summary.peak_rss_bytes,
            # header counts of all the layer's files, and why a file's points are not in the tiles
            "points_header": summary.points_header,
            "not_tiled": [{**t, "file": _raw_relative(ctx, t["file"])} for t in summary.not_tiled],
            # the scheme and the classes present with their point counts (viewer legend, report)
            **class_stats(ctx.release_dir, f"{out_subdir}/tileset.json", summary.class_scheme),
            "class_scheme_reason": summary.class_scheme_reason,
            # LAS extra dimensions kept (properties `x_<name>`) and those of the inputs left out
            "extra_dimensions": summary.extra_dimensions,
            "extra_dimensions_dropped": summary.extra_dimensions_dropped,
            # the display range of the viewer's intensity style (the data keep the delivered values)
            **_intensity_stats(ctx.release_dir / out_subdir),
        },
        warnings=list(summary.notes),
        seconds=time.perf_counter() - t0,
    )
    add_layer_copc(ctx, result, summary.copc, out_subdir)
    return result


def _intensity_stats(layer_dir: Path) -> dict[str, Any]:
    """`intensity`: {min, max} for the viewer's intensity style: the 1st and 99th percentiles of the
    intensity of the points in the root and level-1 tiles (glb; a spatially even sample of the layer), so
    a 12-bit scanner's 0..4095 is shown with full contrast although the tiles keep the delivered values.
    Empty when the tiles have no readable intensity (pnts, no tiles)."""
    from pipeline.tiles.gltf import read_glb

    vals = []
    for p in sorted((layer_dir / "content").glob("[01]/*.glb")):
        js, binary = read_glb(p.read_bytes())
        if "EXT_meshopt_compression" in js.get("extensionsUsed", []):
            from pipeline.tiles.points_glb import decode_meshopt_views

            js, binary = decode_meshopt_views(js, binary)
        attrs = js["meshes"][0]["primitives"][0]["attributes"]
        if "_INTENSITY" in attrs:  # uint16, interleaved: gather the column (the last row may be short)
            acc = js["accessors"][attrs["_INTENSITY"]]
            view = js["bufferViews"][acc["bufferView"]]
            start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
            rows = start + np.arange(int(acc["count"]), dtype=np.int64) * view.get("byteStride", 2)
            buf = np.frombuffer(binary, np.uint8)
            vals.append(buf[rows].astype(np.int64) | (buf[rows + 1].astype(np.int64) << 8))
    if not vals or not sum(len(v) for v in vals):
        return {}
    lo, hi = np.percentile(np.concatenate(vals), [1.0, 99.0])
    return {"intensity": {"min": int(lo), "max": int(max(hi, lo + 1))}}


def _raw_relative(ctx: BuildContext, path: str) -> str:
    try:
        return Path(path).resolve().relative_to(Path(ctx.cfg.raw_dir).resolve()).as_posix()
    except ValueError:
        return Path(path).name


# the validation reader lives with the formats (pipeline.tiles.points_reader); re-exported for callers
from pipeline.tiles.points_reader import (  # noqa: E402
    pointcloud_invariants,
    tile_positions_mm,
)

__all__ = [
    "PointTilingOptions",
    "TilingSummary",
    "build_pointcloud_layer",
    "plan_tiling",
    "pointcloud_invariants",
    "tile_pointcloud",
    "tile_positions_mm",
]
