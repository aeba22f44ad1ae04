"""COPC files and a virtual point cloud (.vpc) for a point layer, for QGIS (which cannot draw 3D Tiles
point clouds).

One COPC file per input file (`<layer>/copc/<input name>.copc.laz`) and `<layer>/<layer>.vpc` over them.
The input files are read again, one decode unit (about 0.5 M points, whole LAZ chunks) at a time, with the
project's point reader (`pipeline.sources.pointcloud`), planned by the tiler's own planner
(`plan_tiling`: the same files, CRS per file, attribute layout and orthophoto), so the COPC files carry
the same points and attribute schema as the 3D Tiles layer:

- attributes: intensity, classification, return number, number of returns, point source id, GPS time,
  colour, NIR, the configured extra dimensions (float32 extra bytes); other LAS fields (scan angle, user
  data, flags) are 0, as they are absent from the tiles;
- colour: the tiles' 8-bit sRGB (16-bit LAS colours reduced per decode unit by the tiler's rule, or
  sampled from the orthophoto for files without colour), stored as LAS 16-bit (value x 257); a file whose
  colour is zero everywhere has none (point format 6), as in the tiles;
- positions: in the build, the project's working CRS (`crs.horizontal` + `crs.vertical`, the CRS of every
  GeoPackage and raster of the release): a file already in it keeps its integer coordinates, scale and
  offset exactly; any other is transformed by PROJ (the project's exact transformer, geoid grids as for
  the tiles) to 1 mm. Standalone (`twin points --copc`), each file keeps its own coordinates and CRS label
  (or `--crs`).

Not yet the same pass as the tiler (the files are decoded a second time, after the tiles: about the
lazrs decode time again plus the octree and LAZ compression); see docs/pointcloud.md.

Memory: a file's records go to a temporary memory-mapped file beside the output, the octree needs about
35 bytes per point of the file, compression one node at a time.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import CrsError, InputError, ValidationError
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit, plan_units
from pipeline.styles.pointcloud_qml import pointcloud_qml
from pipeline.tiles.copc import CopcResult, CopcSchema, HeaderInfo, record_dtype, write_copc
from pipeline.tiles.vpc import VpcItem, pdal_schema, write_vpc

if TYPE_CHECKING:
    from pyproj import CRS

    from pipeline.config.model import PointsLayer, RasterSource
    from pipeline.orchestrate.context import BuildContext, InputFile, LayerResult
    from pipeline.orchestrate.points import PointTilingOptions
    from pipeline.stages.points.tiling import FileJob

Progress = Callable[[str, int, int], None]

COPC_DIR = "copc"
TRANSFORMED_SCALE = 0.001  # 1 mm (in the target CRS's unit) for transformed positions


@dataclass
class CopcSummary:
    files: list[str] = field(default_factory=list)  # relative to the layer folder
    vpc: str = ""
    points: int = 0
    nodes: int = 0
    bytes: int = 0
    checksum: str = ""  # see copc_checksum
    crs: str = ""  # name of the CRS of the files
    transformed: int = 0  # files whose positions were transformed into the target CRS
    classes: dict[int, int] = field(default_factory=dict)  # class code -> points
    style: str = ""  # QGIS style of the .vpc (relative to the layer folder)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "vpc": self.vpc,
            "points": self.points,
            "nodes": self.nodes,
            "bytes": self.bytes,
            "checksum": self.checksum,
            "crs": self.crs,
            "transformed": self.transformed,
            "classes": {str(c): k for c, k in sorted(self.classes.items())},
            "style": self.style,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


# ---- checksum ---------------------------------------------------------------------------------------------


def copc_checksum(X: np.ndarray, Y: np.ndarray, Z: np.ndarray, classification: np.ndarray) -> int:
    """Order-independent checksum of points (raw integer coordinates as stored + class): the sum mod 2^64
    of a 64-bit hash per point. Equal for two files iff (with overwhelming probability) they hold the same
    multiset of (X, Y, Z, class)."""
    from pipeline.tiles.copc import _mix64

    u = np.uint64
    v = X.astype(np.int64).view(u) * u(0x9E3779B97F4A7C15)
    v += Y.astype(np.int64).view(u) * u(0xC2B2AE3D27D4EB4F)
    v += Z.astype(np.int64).view(u) * u(0x165667B19E3779F9)
    v += classification.astype(u) * u(0x27D4EB2F165667C5)
    return int(_mix64(v).sum(dtype=u))


def copc_invariants(vpc_path: str | Path) -> dict[str, Any]:
    """Points and checksum over every COPC file of a .vpc, read back through laspy's COPC reader (every
    node of the hierarchy); the checksum adds per file, so it equals the layer's `copc.checksum`."""
    import json

    import laspy

    vpc_path = Path(vpc_path)
    doc = json.loads(vpc_path.read_text())
    total, checksum = 0, 0
    for f in doc["features"]:
        href = f["assets"]["data"]["href"]
        with laspy.CopcReader.open(vpc_path.parent / href) as r:
            pts = r.query()
        n = len(pts)
        if n != f["properties"]["pc:count"]:
            raise InputError(f"{href}: {n} points read, the .vpc says {f['properties']['pc:count']}")
        total += n
        checksum += copc_checksum(pts.X, pts.Y, pts.Z, np.asarray(pts.classification))
    return {"points": total, "checksum": f"{checksum % (1 << 64):016x}", "files": len(doc["features"])}


# ---- per file ---------------------------------------------------------------------------------------------


def copc_names(infos: list[PointFileInfo]) -> list[str]:
    """`<input name without .las/.laz/.copc/.e57>.copc.laz`, numbered when two inputs share a name."""
    stems = []
    for i in infos:
        name = i.path.name
        for ext in (".copc.laz", ".laz", ".las", ".e57"):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
                break
        stems.append(name)
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.append(f"{s}.copc.laz" if stems.count(s) == 1 else f"{s}-{k + 1}.copc.laz")
    return out


def _las_header_fields(info: PointFileInfo) -> dict[str, int]:
    """File source id, GPS time bit, creation day/year of a LAS/LAZ input (0 for E57)."""
    if info.kind == "e57":
        return {"file_source_id": 0, "gps": 0, "day": 0, "year": 0}
    with info.path.open("rb") as f:
        head = f.read(94)
    src, enc = struct.unpack_from("<HH", head, 4)
    day, year = struct.unpack_from("<HH", head, 90)
    return {"file_source_id": src, "gps": enc & 1, "day": day, "year": year}


@dataclass(frozen=True)
class _Placement:
    """How a file's positions become the COPC's: raw copy (transformer None) or PROJ to the target."""

    scales: tuple[float, float, float]
    offsets: tuple[float, float, float]
    wkt: str
    transformer: Any = None
    z_factor: float = 1.0


def _placement(
    fj: FileJob, fc_crs: CRS, target: CRS | None, crs_cfg: Any, override: str | None
) -> _Placement:
    from pyproj import CRS

    from pipeline.crs import make_transformer, same_crs

    info = fj.info
    if target is None:  # standalone: the file's own coordinates and label (or --crs)
        if override:
            wkt = CRS.from_user_input(override).to_wkt()
        elif info.crs_wkt:
            wkt = CRS.from_wkt(info.crs_wkt).to_wkt()
        else:
            wkt = fc_crs.to_wkt()
        return _Placement(info.scales, info.offsets, wkt)
    if same_crs(fc_crs, target) and abs(fj.z_factor - 1.0) < 1e-12:
        return _Placement(info.scales, info.offsets, target.to_wkt())
    t = make_transformer(fc_crs, target, crs_cfg, path=info.path)
    # offsets: the transformed header box's corner, rounded down to 1 km (ints stay well inside int32)
    xs = np.array([info.mins[0], info.maxs[0]] * 4)
    ys = np.array([info.mins[1], info.mins[1], info.maxs[1], info.maxs[1]] * 2)
    zs = np.array([info.mins[2]] * 4 + [info.maxs[2]] * 4) * fj.z_factor
    tx, ty, tz = t.transform(xs, ys, zs)
    if not np.all(np.isfinite([tx, ty, tz])):
        raise CrsError(f"the file's bounds cannot be transformed into {target.name}", path=info.path)
    off = tuple(float(np.floor(min(v) / 1000.0) * 1000.0) for v in (tx, ty, tz))
    return _Placement((TRANSFORMED_SCALE,) * 3, off, target.to_wkt(), t, fj.z_factor)  # type: ignore[arg-type]


def _copc_scheme(scheme: str, classes, names: list[str]) -> str:
    """The class scheme of the style (`auto`: inferred as the tiles' is, from the codes and file names)."""
    if scheme != "auto":
        return scheme
    from pipeline.stages.points.classes import infer_class_scheme

    return infer_class_scheme([int(c) for c in classes], list(names))[0]


def _decode(info: PointFileInfo, unit: WorkUnit, extra_dims: tuple[str, ...]) -> dict[str, np.ndarray]:
    if info.kind == "e57":
        from pipeline.sources.pointcloud.e57 import decode_e57_unit

        return decode_e57_unit(info, unit)
    from pipeline.sources.pointcloud.las import decode_unit

    return decode_unit(info, unit, extra_dims)


def _positions(d: dict, info: PointFileInfo, pl: _Placement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if pl.transformer is None:
        return d["X"], d["Y"], d["Z"]
    xs = d["X"] * info.scales[0] + info.offsets[0]
    ys = d["Y"] * info.scales[1] + info.offsets[1]
    zs = (d["Z"] * info.scales[2] + info.offsets[2]) * pl.z_factor
    tx, ty, tz = pl.transformer.transform(xs, ys, zs)
    out = []
    for v, o in zip((tx, ty, tz), pl.offsets, strict=True):
        q = np.round((np.asarray(v) - o) / TRANSFORMED_SCALE)
        if not np.all(np.isfinite(q)) or np.abs(q).max(initial=0) >= 2**31:
            raise CrsError("points cannot be transformed into the target CRS at 1 mm", path=info.path)
        out.append(q.astype(np.int32))
    return out[0], out[1], out[2]


def _fill_unit(
    rec: np.ndarray,
    d: dict,
    info: PointFileInfo,
    fj: FileJob,
    pl: _Placement,
    schema: CopcSchema,
    ortho: tuple[Any, dict] | None,
    scan_fields: tuple[str, ...] = (),
) -> int:
    """Fill a unit's COPC records from its decoded columns; returns the unit's largest raw colour value."""
    from pipeline.stages.points.colour import sample_orthophoto, to_srgb8

    rec["X"], rec["Y"], rec["Z"] = _positions(d, info, pl)
    rec["intensity"] = d["intensity"]
    ret = np.minimum(np.asarray(d["return_number"], np.uint8), 15)
    nret = np.minimum(np.asarray(d["number_of_returns"], np.uint8), 15)
    rec["bit_fields"] = ret | (nret << np.uint8(4))
    rec["classification"] = d["classification"]
    rec["point_source_id"] = d["point_source_id"]
    if "scan_angle" in scan_fields and "_raw" in d:  # opt-in attribute of the tiles: LAS 1.4 scan angle
        raw = d["_raw"]
        if info.point_format >= 6:
            rec["scan_angle"] = raw["scan_angle"]
        else:  # whole degrees -> 0.006 degree steps
            rec["scan_angle"] = np.round(raw["scan_angle_rank"].astype(np.float64) / 0.006).astype(np.int16)
    if "gps_time" in d:
        rec["gps_time"] = d["gps_time"]
    rgb_max = 0
    if schema.has_rgb:
        rgb8 = None
        if ortho is None and "red" in d:
            rgb_max = int(max(d["red"].max(initial=0), d["green"].max(initial=0), d["blue"].max(initial=0)))
            rgb8 = to_srgb8(d["red"], d["green"], d["blue"])
        elif ortho is not None:
            xs = d["X"] * info.scales[0] + info.offsets[0]
            ys = d["Y"] * info.scales[1] + info.offsets[1]
            smp = sample_orthophoto(ortho[0], xs, ys, fj.crs_wkt, ortho[1])
            rgb8 = smp["rgb"]
            if schema.has_nir and "nir" in smp:
                rec["nir"] = smp["nir"]
        if rgb8 is not None:
            rgb16 = rgb8.astype(np.uint16) * np.uint16(257)
            rec["red"], rec["green"], rec["blue"] = rgb16[:, 0], rgb16[:, 1], rgb16[:, 2]
    if schema.has_nir and "nir" in d:
        rec["nir"] = d["nir"]
    for name in schema.extra_dims:
        if "x_" + name in d:
            rec[name] = d["x_" + name]
    return rgb_max


@dataclass(frozen=True)
class FileCopc:
    """What one input file's COPC task returns (small, picklable)."""

    result: CopcResult
    schema: CopcSchema  # the file's (no colour when its colour is zero everywhere and there is no orthophoto)
    checksum: int  # copc_checksum of its points
    wkt: str  # CRS of its positions
    transformed: bool  # positions transformed into the target CRS (else the input's integers)
    classes: dict[int, int]  # class code -> points


def write_file_copc(
    fj: FileJob,
    fc_crs: CRS,
    dest: Path,
    layer_schema: CopcSchema,
    has_gps: bool,
    target: CRS | None,
    crs_cfg: Any,
    override: str | None,
    scratch_dir: Path,
    orthophoto: tuple[Any, dict] | None = None,
    max_node_points: int | None = None,
    optional: tuple[str, ...] = (),
    threads: int = 1,
) -> FileCopc:
    """One input file -> one COPC file (a task: runs on a worker of the build's cluster as well).

    `orthophoto` (raster path(s), band map): colours files without colour, and files whose colour is
    zero everywhere, as the tiler does. `optional`: the opt-in attributes of the tiles (`scan_angle`)."""
    info = fj.info
    pl = _placement(fj, fc_crs, target, crs_cfg, override)
    units = plan_units([info])
    n = sum(u.count for u in units)
    dtype = record_dtype(layer_schema)
    scratch = scratch_dir / (dest.name + ".records")

    classes = np.zeros(256, np.int64)

    def decode_all(ortho: tuple[Any, dict] | None) -> tuple[int, int]:
        """Decode the file unit by unit into the scratch file (plain writes: no dirty mapped pages)."""
        rgb_max, checksum = 0, 0
        classes[:] = 0
        with scratch.open("wb") as f:
            for u in units:
                d = _decode(info, u, layer_schema.extra_dims)
                if len(d["X"]) != u.count:
                    raise InputError(f"expected {u.count} points, decoded {len(d['X'])}", path=info.path)
                rec = np.zeros(u.count, dtype)
                rgb_max = max(rgb_max, _fill_unit(rec, d, info, fj, pl, layer_schema, ortho, optional))
                checksum += copc_checksum(rec["X"], rec["Y"], rec["Z"], rec["classification"])
                classes[:] += np.bincount(rec["classification"], minlength=256)
                f.write(rec.data.cast("B"))
        return rgb_max, checksum

    try:
        rgb_max, checksum = decode_all(orthophoto if (not info.has_rgb and orthophoto) else None)
        schema = layer_schema
        if info.has_rgb and rgb_max == 0 and layer_schema.has_rgb:
            # colour zero everywhere (mobile mapping without colourisation): the tiler treats the file as
            # one without colour, so the orthophoto colours it when there is one; else it has none
            if orthophoto is None:
                import dataclasses

                schema = dataclasses.replace(layer_schema, has_rgb=False, has_nir=False)
            else:
                decode_all(orthophoto)
        recs = np.memmap(scratch, dtype=dtype, mode="r", shape=(n,))
        hdr = _las_header_fields(info)
        header = HeaderInfo(
            scales=pl.scales,
            offsets=pl.offsets,
            wkt=pl.wkt,
            file_source_id=hdr["file_source_id"],
            global_encoding_gps=hdr["gps"],
            creation_day=hdr["day"],
            creation_year=hdr["year"],
        )
        kw = {} if max_node_points is None else {"max_node_points": max_node_points}
        res = write_copc(dest, recs, header, schema, has_gps=has_gps, threads=threads, **kw)
        del recs
    finally:
        scratch.unlink(missing_ok=True)
    present = {int(c): int(classes[c]) for c in np.flatnonzero(classes)}
    return FileCopc(res, schema, checksum % (1 << 64), pl.wkt, pl.transformer is not None, present)


def _run_files(jobs: list[tuple], executor: concurrent.futures.Executor | None, progress: Progress | None):
    """write_file_copc(*job) for every job, results in job order."""
    total = len(jobs)
    if executor is None:
        out = []
        for i, job in enumerate(jobs):
            out.append(write_file_copc(*job))
            if progress:
                progress("copc", i + 1, total)
        return out
    futures = [executor.submit(write_file_copc, *job) for job in jobs]
    try:
        for i, _f in enumerate(concurrent.futures.as_completed(futures)):
            if progress:
                progress("copc", i + 1, total)
        return [f.result() for f in futures]
    finally:
        for f in futures:
            f.cancel()


def _datetime(hdr: dict[str, int]) -> str:
    import datetime as dt

    if hdr["year"] > 0 and 1 <= hdr["day"] <= 366:
        d = dt.date(hdr["year"], 1, 1) + dt.timedelta(days=hdr["day"] - 1)
        return f"{d.isoformat()}T00:00:00Z"
    return "1970-01-01T00:00:00Z"  # unknown (the header has no creation date)


def write_layer_copc(
    inputs: list[Path],
    layer_dir: Path,
    opts: PointTilingOptions,
    *,
    vpc_name: str,
    target_crs: str | None,
    progress: Progress | None = None,
    max_node_points: int | None = None,
    executor: concurrent.futures.Executor | None = None,
) -> CopcSummary:
    """Write `layer_dir/copc/*.copc.laz` (one per input file) and `layer_dir/<vpc_name>.vpc`.

    `opts` are the point layer's tiling options (CRS override, orthophoto, extra dimensions, frame...);
    `target_crs`: the CRS of the COPC positions (the build's working CRS), None = each file's own.
    The files are written into a temporary folder in `layer_dir` and renamed into place at the end.
    `executor` (e.g. a Dask client's): one task per input file; None = one file after the other here.
    The output does not depend on it."""
    from pyproj import CRS

    from pipeline.orchestrate.points import plan_tiling
    from pipeline.sources.pointcloud.crs import resolve_file_crs

    t0 = time.perf_counter()
    layer_dir = Path(layer_dir)
    plan = plan_tiling(list(inputs), opts)
    layout = plan.layout
    schema = CopcSchema(has_rgb=layout.has_rgb, has_nir=layout.has_nir, extra_dims=tuple(layout.extra_dims))
    target = CRS.from_user_input(target_crs) if target_crs else None
    names = copc_names(plan.infos)
    final_dir = layer_dir / COPC_DIR
    if final_dir.exists():
        raise InputError("a COPC folder exists already (not written by this run)", path=final_dir)
    tmp_dir = layer_dir / f".{COPC_DIR}.tmp-{os.getpid()}"
    tmp_dir.mkdir(parents=True)
    summary = CopcSummary()
    items: list[VpcItem] = []
    checksum = 0
    crs_names = set()
    ortho = (opts.orthophoto, dict(opts.ortho_bands)) if opts.orthophoto else None
    try:
        jobs = []
        for fj, name in zip(plan.file_jobs, names, strict=True):
            fc = resolve_file_crs(fj.info, opts.crs, plan.crs_cfg, opts.z_unit)
            jobs.append(
                (
                    fj,
                    fc.crs,
                    tmp_dir / name,
                    schema,
                    layout.has_gps,
                    target,
                    plan.crs_cfg,
                    opts.crs,
                    tmp_dir,
                    ortho,
                    max_node_points,
                    tuple(getattr(opts, "attributes", ())),
                    # in this process: `jobs` threads compress the nodes; one per task on a cluster
                    max(1, opts.jobs or 1) if executor is None else 1,
                )
            )
        done = _run_files(jobs, executor, progress)
        for fj, name, fr in zip(plan.file_jobs, names, done, strict=True):
            checksum += fr.checksum
            for c, cnt in fr.classes.items():
                summary.classes[c] = summary.classes.get(c, 0) + cnt
            summary.points += fr.result.points
            summary.nodes += fr.result.nodes
            summary.bytes += fr.result.bytes
            summary.transformed += fr.transformed
            crs_names.add(CRS.from_wkt(fr.wkt).name)
            items.append(
                VpcItem(
                    href=f"./{COPC_DIR}/{name}",
                    count=fr.result.points,
                    mins=fr.result.mins,
                    maxs=fr.result.maxs,
                    wkt2=fr.wkt,
                    schema=pdal_schema(fr.schema, layout.has_gps),
                    datetime=_datetime(_las_header_fields(fj.info)),
                )
            )
            summary.files.append(f"{COPC_DIR}/{name}")
        # the layer's style, applied by QGIS when it opens the .vpc or a .copc.laz (same name, .qml)
        qml = pointcloud_qml(_copc_scheme(opts.class_scheme, summary.classes, names), sorted(summary.classes))
        for name in names:
            (tmp_dir / (name[: -len(".laz")] + ".qml")).write_text(qml, encoding="utf-8")
            summary.files.append(f"{COPC_DIR}/{name[: -len('.laz')]}.qml")
        os.replace(tmp_dir, final_dir)
        tmp_dir = final_dir
        write_vpc(layer_dir / f"{vpc_name}.vpc", items)
        (layer_dir / f"{vpc_name}.qml").write_text(qml, encoding="utf-8")
        summary.style = f"{vpc_name}.qml"
    except BaseException:
        if tmp_dir != final_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if len(crs_names) > 1:
        summary.notes.append(f"the COPC files are in {len(crs_names)} CRSs: {sorted(crs_names)}")
    summary.vpc = f"{vpc_name}.vpc"
    summary.checksum = f"{checksum % (1 << 64):016x}"
    summary.crs = " / ".join(sorted(crs_names))
    summary.seconds = time.perf_counter() - t0
    return summary


# ---- pipeline layer --------------------------------------------------------------------------------------


def _layer_options(
    ctx: BuildContext,
    layer: PointsLayer,
    crs_override: str | None,
    class_scheme: str,
    orthophoto: RasterSource | None,
) -> PointTilingOptions:
    """The point layer's tiling options as `build_pointcloud_layer` sets them (CRS, orthophoto colour,
    extra dimensions, project frame): the inputs are read the same way."""
    import dataclasses
    import glob

    from pipeline.orchestrate.points import PointTilingOptions

    ortho_path: str | tuple[str, ...] | None = None
    bands: tuple[tuple[str, int], ...] = ()
    if orthophoto is not None and layer.colour_from_orthophoto:
        matches = sorted(glob.glob(str(ctx.cfg.raw_dir / orthophoto.path)))
        ortho_path = matches[0] if len(matches) == 1 else tuple(matches) if matches else None
        bands = tuple(sorted(orthophoto.bands.items()))
    # opt-in attributes of the layer (`attributes:`), when this version of the tiler has them
    optin: dict[str, Any] = {}
    if hasattr(layer, "attributes") and "attributes" in {
        f.name for f in dataclasses.fields(PointTilingOptions)
    }:
        optin["attributes"] = tuple(layer.attributes)
    return PointTilingOptions(
        **optin,
        crs=crs_override,
        class_scheme=class_scheme,
        unknown_classes=layer.unknown_classes,
        orthophoto=ortho_path,
        ortho_bands=bands,
        extra_dimensions=layer.extra_dimension_names,
        crs_cfg=ctx.cfg.crs,
        frame=ctx.frame,
    )


def _executor(client: Any) -> concurrent.futures.Executor | None:
    """The build's cluster as an executor (a Dask client's `get_executor`), None without one."""
    if client is None:
        return None
    if isinstance(client, concurrent.futures.Executor):
        return client
    get = getattr(client, "get_executor", None)
    return get() if get is not None else None


def add_layer_copc(
    ctx: BuildContext,
    result: LayerResult,
    *,
    files: list[InputFile],
    layer: PointsLayer,
    crs_override: str | None,
    class_scheme: str,
    orthophoto: RasterSource | None,
    out_subdir: str,
) -> LayerResult:
    """After the layer's tiles: its COPC files and .vpc (when the layer's `copc` is on), listed in the
    layer's files, with `stats.copc` (points, checksum, files, ...)."""
    if not getattr(layer, "copc", False):
        return result
    from pipeline.crs import working_crs

    t0 = time.perf_counter()
    opts = _layer_options(ctx, layer, crs_override, class_scheme, orthophoto)
    with ctx.stage(f"points:{result.name}:copc"):
        summary = write_layer_copc(
            [f.path for f in files],
            ctx.release_dir / out_subdir,
            opts,
            vpc_name=result.name,
            target_crs=working_crs(ctx.cfg.crs).to_wkt(),
            progress=ctx.progress,
            executor=_executor(ctx.client),
        )
    for n in summary.notes:
        ctx.warn(f"{result.name}: {n}")
    tiled = result.stats.get("points_out")
    if tiled is not None and tiled != summary.points:
        raise ValidationError(
            f"{result.name}: the COPC files hold {summary.points} points, the tiles {tiled} (internal error)"
        )
    result.files.extend(f"{out_subdir}/{f}" for f in [*summary.files, summary.vpc, summary.style])
    result.stats["copc"] = {k: v for k, v in summary.to_json().items() if k != "seconds"}
    result.warnings.extend(summary.notes)
    result.seconds += time.perf_counter() - t0
    return result


def with_copc(build_layer: Callable[..., LayerResult]) -> Callable[..., LayerResult]:
    """`build_pointcloud_layer` followed by `add_layer_copc` (the build's hook: same arguments)."""

    def run(ctx: BuildContext, **kw: Any) -> LayerResult:
        result = build_layer(ctx, **kw)
        keys = ("files", "layer", "crs_override", "class_scheme", "orthophoto", "out_subdir")
        return add_layer_copc(ctx, result, **{k: kw[k] for k in keys})

    return run
