"""Point-cloud tiling, planning: what a run will do, from the file headers alone.

Options of a run (`PointTilingOptions`), then `plan_tiling`: header scan (`scan_inputs`), CRS per file, the
project frame (standalone: the centre of the inputs), the extent in the frame, the cube, the record layout
and one `FileJob` per file with its reprojection lattice; `replan_if_needed`: the corrections a decode
found; `max_bin_points`: the bin size the memory budget allows. Running the plan:
pipeline.orchestrate.points_run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config.sizes import parse_size
from pipeline.crs import ECEF, GEOGRAPHIC_3D, ProjectFrame
from pipeline.errors import ConfigError, InputError
from pipeline.point_attributes import check_optional
from pipeline.sources.pointcloud.crs import FileCrs, resolve_file_crs
from pipeline.sources.pointcloud.header import PointFileInfo
from pipeline.sources.pointcloud.reader import read_header
from pipeline.stages.points.decode import FileJob
from pipeline.stages.points.lattice import area_of_interest, ecef_transformer_for, shipped_lattice
from pipeline.stages.points.spill import CubeSpec, RecordLayout, cube_for

if TYPE_CHECKING:  # the pipeline layer's types (imported there: `twin points` needs no config model)
    from pipeline.config.model import CrsConfig


BYTES_PER_BIN_POINT = 160  # peak bytes per point while a bin is processed (records, keys, sort, copies)
WORKER_BASE_BYTES = 350 * 2**20  # interpreter + numpy/numba/dask per worker process
MIN_BIN_POINTS = 500_000  # keeps tiles above the bins internal (see docs/pointcloud.md)


@dataclass(frozen=True)
class PointTilingOptions:
    crs: str | None = None
    format: str = "1.1"  # "1.1" glb | "1.0" pnts
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
    ortho_sha256: tuple[tuple[str, str], ...] = ()  # (path, sha256) of the orthophoto tiles (colour)
    # also write COPC files + a .vpc from the same decode (stages.points.copc_records.CopcOptions)
    copc: Any = None


# ---- inputs -------------------------------------------------------------------------------------------


def scan_inputs(inputs: list[Path], on_bad_file: str, skipped: dict[str, str]) -> list[PointFileInfo]:
    """Header scan of the inputs, in the order that numbers them (file_index).

    A file whose content is identical to an earlier one (same size and sha256: the same delivery under two
    names) is scanned once; the kept file lists the others in `duplicates` (they are noted, not tiled
    twice). With `on_bad_file="skip"` an empty or unreadable file is left out (`skipped` receives its path
    and why); by default its error stops the run."""
    if not inputs:
        raise InputError("no input files")
    paths = sorted({Path(p).resolve() for p in inputs})
    copies = identical_files(paths)
    is_copy = {c for cs in copies.values() for c in cs}
    infos: list[PointFileInfo] = []
    for p in paths:
        if p in is_copy:
            continue
        try:
            info = read_header(p)
        except InputError as e:
            if on_bad_file != "skip":
                raise
            skipped[str(p)] = e.message
            continue
        same = tuple(str(d) for d in copies.get(p, ()))
        infos.append(dataclasses.replace(info, duplicates=same) if same else info)
    if not infos:
        raise InputError(f"no readable input files ({len(paths)} given, all skipped as bad)")
    return infos


def identical_files(paths: list[Path]) -> dict[Path, list[Path]]:
    """Files with identical content: {original: [copies]} (the first of `paths`, sorted, is the original).
    Only files of equal size are hashed (sha256), so distinct deliveries cost one stat each."""
    from pipeline.release.manifest import sha256_file

    by_size: dict[int, list[Path]] = {}
    for p in paths:
        with contextlib.suppress(OSError):
            by_size.setdefault(p.stat().st_size, []).append(p)
    same: dict[tuple[int, str], list[Path]] = {}
    for size, group in by_size.items():
        for p in group if len(group) > 1 and size else ():
            same.setdefault((size, sha256_file(p)), []).append(p)
    return {g[0]: g[1:] for g in same.values() if len(g) > 1}


# ---- planning -----------------------------------------------------------------------------------------


def _standalone_frame(
    infos: list[PointFileInfo], fcs: list[FileCrs], cfg: CrsConfig, aois: dict[str, Any]
) -> ProjectFrame:
    """Frame origin = centre of the inputs' extent, snapped to 0.001 degree, on the ellipsoid."""
    from pipeline.crs import plain_transformer

    lons, lats = [], []
    to_geo = plain_transformer(ECEF, GEOGRAPHIC_3D)
    for info, fc in zip(infos, fcs, strict=True):
        wkt = fc.crs.to_wkt()
        t = ecef_transformer_for(wkt, cfg, info.path, aois[wkt])  # reused: extent, lattice
        cx, cy, cz = ((lo + hi) / 2 for lo, hi in zip(info.mins, info.maxs, strict=True))
        lon, lat, _h = to_geo.transform(*t.transform(cx, cy, cz * fc.z_factor))
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise InputError("cannot locate the file's centre (CRS transformation failed)", path=info.path)
        lons.append(lon)
        lats.append(lat)
    w = np.asarray([i.count for i in infos], dtype=np.float64)
    lon = round(float(np.average(lons, weights=w)), 3)
    lat = round(float(np.average(lats, weights=w)), 3)
    x, y, z = plain_transformer(GEOGRAPHIC_3D, ECEF).transform(lon, lat, 0.0)
    return ProjectFrame((float(x), float(y), float(z)), lon, lat)


def _file_extent(
    info: PointFileInfo, fc: FileCrs, frame: ProjectFrame, cfg: CrsConfig, aoi: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The file's header box in the frame (ENU metres): min and max of a 9 x 9 x 2 sample of it."""
    t = ecef_transformer_for(fc.crs.to_wkt(), cfg, info.path, aoi)
    g = [np.linspace(info.mins[i], info.maxs[i], 9 if i < 2 else 2) for i in range(3)]
    X, Y, Z = np.meshgrid(*g, indexing="ij")
    ex, ey, ez = t.transform(X.ravel(), Y.ravel(), Z.ravel() * fc.z_factor)
    enu = frame.ecef_to_enu(np.asarray(ex), np.asarray(ey), np.asarray(ez))
    if not np.all(np.isfinite(enu)):
        raise InputError(
            "the file's extent cannot be transformed (outside the CRS's / geoid grid's coverage)",
            path=info.path,
        )
    return enu.min(axis=0), enu.max(axis=0)


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


@dataclass
class Plan:
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
) -> Plan:
    """Header-only planning: scan (unless `infos` are given, with the files the scan `skipped`), CRS per
    file, frame, extent, cube, record layout."""
    skipped = dict(skipped or {})
    if infos is None:
        infos = scan_inputs(inputs, opts.on_bad_file, skipped)
    from pipeline.config.model import CrsConfig

    # standalone runs have no project config: no vertical CRS of the project
    cfg = opts.crs_cfg or CrsConfig(vertical=None)
    if opts.assume_ellipsoidal and not cfg.assume_ellipsoidal_heights:
        cfg = cfg.model_copy(update={"assume_ellipsoidal_heights": True})
    fcs = [resolve_file_crs(i, opts.crs, cfg, opts.z_unit) for i in infos]
    wkts = [fc.crs.to_wkt() for fc in fcs]
    notes = [f"{i.path.name}: {fc.note}" for i, fc in zip(infos, fcs, strict=True) if fc.note]
    notes += [
        f"{Path(d).name}: identical to {i.path.name} (same sha256): tiled once, its {i.count:,} points not "
        "counted twice"
        for i in infos
        for d in i.duplicates
    ]
    notes += [f"{Path(p).name}: skipped (--on-bad-tile skip): {why}" for p, why in sorted(skipped.items())]
    # per source CRS, the area of interest of all its files: transformers with one give the same values
    # and are 8x faster to create
    boxes: dict[str, list] = {}
    for info, wkt in zip(infos, wkts, strict=True):
        boxes.setdefault(wkt, []).append((info.mins, info.maxs))
    aois = {wkt: area_of_interest(wkt, b) for wkt, b in sorted(boxes.items())}
    frame = opts.frame or _standalone_frame(infos, fcs, cfg, aois)

    def memo(tag: str, info: PointFileInfo, fc: FileCrs, wkt: str, fn: Any, *args: Any) -> Any:
        """`fn(*args)`, memoised in the build cache (when given) by what a file's extent and lattice depend
        on: header bounds, CRS, z factor, frame, CRS settings (incremental builds then need no PROJ
        transformer in this process: creating one with a geoid grid takes ~1 s)."""
        if opts.cache is None:
            return fn(*args)
        bounds = [[float(v) for v in info.mins], [float(v) for v in info.maxs]]
        return opts.cache.call([tag, *bounds, wkt, fc.z_factor, frame.to_json(), cfg], fn, *args)

    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for info, fc, wkt in zip(infos, fcs, wkts, strict=True):
        flo, fhi = memo("points-extent-v1", info, fc, wkt, _file_extent, info, fc, frame, cfg, aois[wkt])
        _check_position_range(info, flo, fhi, frame)
        lo, hi = np.minimum(lo, flo), np.maximum(hi, fhi)
    pad = 1.0
    cube = cube_for(np.floor((lo - pad) * 1000).astype(np.int64), np.ceil((hi + pad) * 1000).astype(np.int64))
    ortho_all = (opts.orthophoto,) if isinstance(opts.orthophoto, str) else tuple(opts.orthophoto or ())
    needs_ortho = [not i.has_rgb and i.kind != "e57" for i in infos]
    use_ortho = bool(ortho_all) and any(needs_ortho)
    tiles: list = []
    if use_ortho:  # rasterio (GDAL) is loaded only by a run that colours points from an orthophoto
        from pipeline.sources.rasters import TileIndex, scan_rasters

        tiles = scan_rasters([Path(p) for p in ortho_all], working_crs=wkts[0])
    ortho_nir = bool(tiles) and all(t.count >= dict(opts.ortho_bands).get("nir", 4) for t in tiles)
    try:
        optional = check_optional(opts.attributes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    have = dict.fromkeys(d for i in infos for d in i.extra_dims)  # in the order of first appearance
    wanted = tuple(have) if opts.extra_dimensions is None else opts.extra_dimensions
    missing = [d for d in wanted if d not in have]
    if missing:
        notes.append(f"extra dimensions not found in any input: {missing}")
    layout = RecordLayout(
        has_rgb=any(i.has_rgb for i in infos) or use_ortho,
        has_gps=any(i.has_gps for i in infos),
        has_nir=any(i.has_nir for i in infos) or (use_ortho and ortho_nir),
        extra_dims=tuple(d for d in wanted if d in have),
        optional=optional,
    )
    file_jobs = []
    indexes: dict[str, Any] = {}  # the orthophoto tiles indexed once per source CRS, not scanned per file
    for info, fc, wkt, need in zip(infos, fcs, wkts, needs_ortho, strict=True):
        ortho = None
        if use_ortho and need:  # the tiles its points can lie in (a file outside all: black, from the first)
            box = (info.mins[0], info.mins[1], info.maxs[0], info.maxs[1])
            if wkt not in indexes:
                indexes[wkt] = TileIndex(tiles, wkt)
            ortho = tuple(str(t.path) for t in indexes[wkt].covering(box)) or ortho_all[:1]
        fj = FileJob(info, wkt, fc.z_factor, ortho, tuple(opts.ortho_bands), aoi=aois[wkt])
        lattice = memo("points-lattice-v1", info, fc, wkt, shipped_lattice, fj, frame, cfg)
        file_jobs.append(fj if lattice is None else dataclasses.replace(fj, lattice=lattice))
    return Plan(infos, file_jobs, frame, cfg, layout, cube, notes, skipped)


class Replan(Exception):
    """The decode found files whose headers do not describe their data (points outside the header bounds,
    RGB zero everywhere): plan again with corrected file descriptions (`args`: the infos, the notes)."""


def replan_if_needed(plan: Plan, units: list, parts: list) -> None:
    """Corrections of the file descriptions from what the decode saw: a file whose units report points
    outside its header bounds gets its real bounds; a file whose RGB is 0 in every point has no colour
    (otherwise it would come out black). Raises `Replan` when anything changed."""
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
            lo = np.minimum(info.mins, np.minimum(rmin, rmax))  # (negative scales)
            hi = np.maximum(info.maxs, np.maximum(rmin, rmax))
            mins = (float(lo[0]), float(lo[1]), float(lo[2]))
            maxs = (float(hi[0]), float(hi[1]), float(hi[2]))
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
        raise Replan(infos, notes)


def max_bin_points(opts: PointTilingOptions, workers: int, points: int) -> int:
    """Points per bin: what one worker's share of the memory budget holds, at least ~4 bins per worker
    when the input allows it (keeps the workers busy until the end); one worker alone (`--jobs 1`, in
    process) takes bins of MIN_BIN_POINTS: nothing waits for its last bin, and a bin's buffers come on top
    of everything that process holds (numba, the plan), so small bins keep its peak low (Autzen: 399 ->
    258 MB, CPU no higher; docs/pointcloud.md). `opts.max_bin_points` overrides."""
    if opts.max_bin_points:
        return opts.max_bin_points
    if workers == 1:
        return MIN_BIN_POINTS
    per_worker = parse_size(opts.memory) / workers - WORKER_BASE_BYTES
    max_bin = max(MIN_BIN_POINTS, int(per_worker / BYTES_PER_BIN_POINT))
    return min(max_bin, max(MIN_BIN_POINTS, points // (4 * workers)))
