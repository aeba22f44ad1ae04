"""COPC records from the tiler's decode pass: the LAS 1.4 records of a point layer's COPC files, written by
the same decode task that writes the tiles' spill file (`decode.decode_to_spill`), so every input is decoded
once for both outputs.

The COPC attribute schema is derived from the tiles' attribute table (`pipeline.point_attributes`): every
attribute of the run's record layout goes into the LAS 1.4 field of its name, or through its rule in
`LAS_FIELDS` (colour, return numbers, scan angle); extra dimensions become float32 extra bytes; an attribute
with neither is an error naming it. The values are the tiles' (the decoded columns the spill packer reads):

- colour: the tiles' 8-bit sRGB (LAS 16-bit colours reduced per decode unit, or the orthophoto's) x 257;
- scan angle (opt-in attribute, degrees): LAS 1.4 steps of 0.006 degrees;
- positions: the input's integer coordinates when its CRS is the target (the build's working CRS; standalone
  each file's own), else PROJ (`pipeline.crs.make_transformer`, the project's exact operation) to 1 mm.

A decode task writes its unit's records into the file's records file (`f<file>.rec`, at the unit's first
point: file order) and then a marker `f<file>.u<start>.done`; the COPC task of a file (`points_copc`) reads
the records file once every unit of the file has its marker.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import CrsError, TwinError
from pipeline.sources.pointcloud.crs import LOCAL_PREFIX
from pipeline.tiles.copc import CopcSchema, record_dtype

if TYPE_CHECKING:
    from pipeline.point_attributes import PointAttribute
    from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit
    from pipeline.stages.points.decode import FileJob
    from pipeline.stages.points.spill import RecordLayout

TRANSFORMED_SCALE = 0.001  # 1 mm (in the target CRS's unit) for transformed positions


@dataclass(frozen=True)
class CopcOptions:
    """A point run's COPC output (`PointTilingOptions.copc`): `copc/<input>.copc.laz` per input file and
    `<vpc_name>.vpc` over them, in the run's output folder. The run completes it (`dir`, `override`) for its
    decode tasks, which write the COPC records."""

    vpc_name: str
    target_crs: str | None = None  # CRS of the positions (WKT; the build's working CRS); None: each file's
    max_node_points: int | None = None  # None: the writer's default (tests use small nodes)
    dir: str = ""  # set by the run: where its decode tasks put the records
    override: str | None = None  # set by the run: standalone, the CRS label of files without one (`--crs`)


def records_path(dir_: str | Path, file_index: int) -> Path:
    return Path(dir_) / f"f{file_index:05d}.rec"


def marker_path(dir_: str | Path, file_index: int, start: int) -> Path:
    return Path(dir_) / f"f{file_index:05d}.u{start:012d}.done"


# ---- schema: derived from the attribute table ------------------------------------------------------------


def _rgb(rec: np.ndarray, col: Any) -> None:
    rgb16 = np.asarray(col, np.uint16) * np.uint16(257)
    rec["red"], rec["green"], rec["blue"] = rgb16[:, 0], rgb16[:, 1], rgb16[:, 2]


def _returns(rec: np.ndarray, col: Any, shift: int) -> None:
    rec["bit_fields"] |= np.minimum(np.asarray(col, np.uint8), 15) << np.uint8(shift)


def _scan_angle(rec: np.ndarray, col: Any) -> None:
    rec["scan_angle"] = np.round(np.asarray(col, np.float64) / 0.006).astype(np.int16)


# attributes of the table whose column is not a plain copy into the LAS 1.4 record field of its name
# (point formats 6-8); every other attribute is copied into the field of its name (intensity,
# classification, point source id, GPS time, NIR, user data, ...)
LAS_FIELDS: dict[str, Callable[[np.ndarray, Any], None]] = {
    "rgb": _rgb,
    "return_number": lambda rec, col: _returns(rec, col, 0),
    "number_of_returns": lambda rec, col: _returns(rec, col, 4),
    "scan_angle": _scan_angle,
}
LAS_RECORD_FIELDS = frozenset(record_dtype(CopcSchema(has_rgb=True, has_nir=True)).names or ())


def copc_schema(attrs: tuple[PointAttribute, ...]) -> CopcSchema:
    """The COPC schema of a record layout's attributes: colour, NIR, extra dimensions (float32)."""
    names = {a.name for a in attrs}
    unmapped = [
        a.name
        for a in attrs
        if a.when != "extra" and a.name not in LAS_FIELDS and a.name not in LAS_RECORD_FIELDS
    ]
    if unmapped:
        raise TwinError(f"point attribute(s) {unmapped} have no COPC field (stages/points/copc_records.py)")
    extra = tuple(a.name[2:] for a in attrs if a.when == "extra")  # extra_attribute: x_<name>
    return CopcSchema(has_rgb="rgb" in names or "nir" in names, has_nir="nir" in names, extra_dims=extra)


# ---- positions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """How a file's positions become the COPC's: raw copy (transformer None) or PROJ to the target."""

    scales: tuple[float, float, float]
    offsets: tuple[float, float, float]
    wkt: str
    transformer: Any = None
    z_factor: float = 1.0


@functools.cache
def placement(fj: FileJob, target_wkt: str | None, crs_cfg: Any, override: str | None) -> Placement:
    """The file's placement (memoised per process: PROJ creates a transformer in 0.05-0.4 s)."""
    from pyproj import CRS

    from pipeline.crs import make_transformer, same_crs

    info = fj.info
    fc_crs = CRS.from_wkt(fj.crs_wkt)
    if target_wkt is None:  # standalone: the file's own coordinates and label (or --crs)
        if not override:  # (a file without a CRS label needs --crs: `resolve_file_crs`)
            wkt = CRS.from_wkt(info.crs_wkt or fj.crs_wkt).to_wkt()
        elif override.startswith(LOCAL_PREFIX):  # a local frame: its east-north-up CRS about the anchor
            wkt = fc_crs.to_wkt()
        else:
            wkt = CRS.from_user_input(override).to_wkt()
        return Placement(info.scales, info.offsets, wkt)
    target = CRS.from_wkt(target_wkt)
    if same_crs(fc_crs, target) and abs(fj.z_factor - 1.0) < 1e-12:
        return Placement(info.scales, info.offsets, target.to_wkt())
    t = make_transformer(fc_crs, target, crs_cfg, path=info.path)
    # offsets: the transformed header box's corner, rounded down to 1 km (ints stay well inside int32)
    xs = np.array([info.mins[0], info.maxs[0]] * 4)
    ys = np.array([info.mins[1], info.mins[1], info.maxs[1], info.maxs[1]] * 2)
    zs = np.array([info.mins[2]] * 4 + [info.maxs[2]] * 4) * fj.z_factor
    tx, ty, tz = t.transform(xs, ys, zs)
    if not np.all(np.isfinite([tx, ty, tz])):
        raise CrsError(f"the file's bounds cannot be transformed into {target.name}", path=info.path)
    ox, oy, oz = (float(np.floor(min(v) / 1000.0) * 1000.0) for v in (tx, ty, tz))
    s = TRANSFORMED_SCALE
    return Placement((s, s, s), (ox, oy, oz), target.to_wkt(), t, fj.z_factor)


def _positions(ints, info: PointFileInfo, pl: Placement) -> tuple[np.ndarray, ...]:
    X, Y, Z = ints
    if pl.transformer is None:
        return X, Y, Z
    xs = X * info.scales[0] + info.offsets[0]
    ys = Y * info.scales[1] + info.offsets[1]
    zs = (Z * info.scales[2] + info.offsets[2]) * pl.z_factor
    tx, ty, tz = pl.transformer.transform(xs, ys, zs)
    out = []
    for v, o in zip((tx, ty, tz), pl.offsets, strict=True):
        q = np.round((np.asarray(v) - o) / TRANSFORMED_SCALE)
        if not np.all(np.isfinite(q)) or np.abs(q).max(initial=0) >= 2**31:
            raise CrsError("points cannot be transformed into the target CRS at 1 mm", path=info.path)
        out.append(q.astype(np.int32))
    return tuple(out)


# ---- the decode task's part --------------------------------------------------------------------------------


def unit_records(
    layout: RecordLayout, ints, cols: dict[str, Any], info: PointFileInfo, pl: Placement
) -> np.ndarray:
    """A unit's COPC records (dtype of the layout's schema) from its decoded integer positions and the
    tiles' attribute columns (`cols`: attribute name -> column; a column the file lacks stays 0)."""
    from pipeline.sources.pointcloud.las import materialize

    rec = np.zeros(len(ints[0]), record_dtype(copc_schema(layout.attributes)))
    rec["X"], rec["Y"], rec["Z"] = _positions(ints, info, pl)
    for a in layout.attributes:
        col = cols.get(a.name)
        if col is None:
            continue
        col = materialize(col)  # lazy bit-field / 16-bit colour columns of the spill packer
        if a.when == "extra":
            rec[a.name[2:]] = col
        elif a.name in LAS_FIELDS:
            LAS_FIELDS[a.name](rec, col)
        else:
            rec[a.name] = col
    return rec


def write_unit(
    side: CopcOptions, fj: FileJob, unit: WorkUnit, layout: RecordLayout, crs_cfg: Any, ints, cols
) -> None:
    """Write a decoded unit's COPC records at its place in the file's records file, then its marker."""
    pl = placement(fj, side.target_crs, crs_cfg, side.override)
    rec = unit_records(layout, ints, cols, fj.info, pl)
    # created by whichever unit comes first, never truncated: the units write their own ranges
    fd = os.open(records_path(side.dir, unit.file_index), os.O_WRONLY | os.O_CREAT, 0o644)
    with open(fd, "wb") as f:
        f.seek(unit.start * rec.dtype.itemsize)
        f.write(rec.data)
    marker_path(side.dir, unit.file_index, unit.start).write_text(str(unit.count))
