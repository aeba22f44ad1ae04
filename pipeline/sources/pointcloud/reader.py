"""The one point reader: LAS, LAZ, COPC and E57 behind one small backend interface.

Every stage that reads points goes through here (the tiler, the building heights and roofs, the terrain
and surface rasters, street space, input verification):

- `read_header(path)`: the one header read (`header.scan_file`: header, VLRs, chunk table, CRS record,
  never the points), cached per file, size and modification time, so the planners, the CRS resolution and
  the stages that read the same file in one process share one scan.
- `decode_unit(info, unit, ...)`: the points of one work unit (`header.plan_units`) as LAS-named columns;
  the tiler's path (raw integer X/Y/Z, views of the raw records).
- `iter_points(info, fields, chunk_points)`: bounded-memory iteration over a whole file in chunks of
  exactly `chunk_points` points (the last one shorter), with x/y/z scaled to the file's CRS units
  (`X * scale + offset`, as laspy computes them). Memory: under four chunks (a LAZ chunk or E57 scan
  larger than a chunk counts whole), whatever the file size.
- `chunk_points_for(budget)`: the chunk size a task with a memory budget reads with.

Backends (in the style of laspy's `LazBackend`): `lazrs` decodes LAS (plain reads) and LAZ/COPC (lazrs'
sequential decoder: one core per worker, fork-safe); `pye57` decodes E57 scans (one scan at a time:
pye57 reads scans whole). A backend whose library is missing says so when a file needs it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.point_attributes import ATTRIBUTES
from pipeline.sources.pointcloud import e57, las
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit, chunk_units, scan_file

# the largest chunk `chunk_points_for` hands out (also the chunk size when no budget is given)
MAX_CHUNK_POINTS = 2_000_000
# bytes one point of a chunk may hold while a stage works on it: the raw record (<= 67 bytes for LAS 1.4
# with NIR), x/y/z as float64 (24) and the stage's masks and selections; a chunk takes 1/8 of the budget
_BYTES_PER_POINT = 128
_BUDGET_SHARE = 8

# columns `iter_points` can give: scaled coordinates, the raw integers, and the LAS fields as
# `decode_unit` names them (a field the file lacks is refused, never filled)
COORDINATES = ("x", "y", "z")
# the lazrs layer (LAZ formats 6-10) of each field beyond the coordinates (XY and Z: always decompressed)
_LAYER_OF = {a.name: a.las_layer for a in ATTRIBUTES if a.las_layer} | dict.fromkeys(
    ("red", "green", "blue"), "RGB"
)


@dataclass(frozen=True)
class PointBackend:
    """Decodes the points of some kinds of file (the header scan is shared: `header.scan_file`; the split
    into units too: `header.chunk_units`)."""

    name: str  # also the Python module it needs
    # (info, unit, extra_dims, layers) -> the unit's columns (`las.decode_unit`'s names, bit fields not yet
    # computed), exactly `unit.count` points (else InputError); `layers`: LAZ layers needed (None: all)
    decode: Callable[..., dict[str, Any]]

    def is_available(self) -> bool:
        return importlib.util.find_spec(self.name) is not None


_LAZRS = PointBackend("lazrs", las.decode_unit)  # LAS plain reads, LAZ / COPC sequential
# the backend of each `PointFileInfo.kind` (`scan_file` makes no other kinds)
BACKENDS = {"las": _LAZRS, "laz": _LAZRS, "e57": PointBackend("pye57", e57.decode_e57_unit)}


def backend_for(info: PointFileInfo) -> PointBackend:
    """The backend that decodes `info`'s kind of file (InputError when its library is missing)."""
    b = BACKENDS[info.kind]
    if not b.is_available():
        raise InputError(
            f"reading {info.kind.upper()} files needs the Python package {b.name!r} (pip install {b.name})",
            path=info.path,
        )
    return b


@functools.lru_cache(maxsize=256)
def _scan_cached(path: Path, size: int, mtime_ns: int) -> PointFileInfo:
    return scan_file(path)


def read_header(path: str | Path) -> PointFileInfo:
    """The file's header facts (`PointFileInfo`), scanned once per process while the file is unchanged."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return scan_file(p)  # raises the InputError naming the file
    return _scan_cached(p, st.st_size, st.st_mtime_ns)


def decode_unit(
    info: PointFileInfo, unit: WorkUnit, extra_dims: tuple[str, ...] = ()
) -> dict[str, las.Column]:
    """The points of one work unit: raw integer X/Y/Z and the LAS fields (see `las.decode_unit`)."""
    return backend_for(info).decode(info, unit, extra_dims)


def chunk_points_for(budget_bytes: int) -> int:
    """Points per chunk for a task with a memory budget of `budget_bytes` (an eighth of it for the chunk;
    at least 65,536, at most MAX_CHUNK_POINTS)."""
    return int(min(MAX_CHUNK_POINTS, max(1 << 16, budget_bytes // (_BUDGET_SHARE * _BYTES_PER_POINT))))


def _columns(info: PointFileInfo, cols: dict[str, Any], fields: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in fields:
        if f in COORDINATES:
            axis = COORDINATES.index(f)
            out[f] = cols[f.upper()] * np.float64(info.scales[axis]) + np.float64(info.offsets[axis])
        elif f in cols and not f.startswith("_"):
            out[f] = np.array(las.materialize(cols[f]))  # a copy: the raw records are not kept alive
        else:
            raise InputError(f"the file has no point field {f!r}", path=info.path)
    return out


def iter_points(
    info: PointFileInfo | str | Path,
    fields: Sequence[str] = ("x", "y", "z", "classification"),
    chunk_points: int = MAX_CHUNK_POINTS,
    points: tuple[int, int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The file's points in order, `chunk_points` at a time (the last chunk shorter), as `fields`
    columns: x/y/z scaled (float64), X/Y/Z raw, or LAS field names (`decode_unit`'s). `points` (start,
    stop): only the units (`header.chunk_units(info, chunk_points)`) whose first point lies in start..stop-1, so
    that ranges splitting a file give each point once."""
    if not isinstance(info, PointFileInfo):
        info = read_header(info)
    if chunk_points < 1:
        raise ValueError("chunk_points must be at least 1")
    backend = backend_for(info)
    layers = _layers(fields)
    pending: list[dict[str, np.ndarray]] = []  # decoded, not yet handed out: less than a chunk
    held = 0
    for unit in chunk_units(info, chunk_points):
        if points is not None and not points[0] <= unit.start < points[1]:
            continue
        pending.append(_columns(info, backend.decode(info, unit, layers=layers), fields))
        held += unit.count
        if held >= chunk_points:
            both = _concat(pending)
            whole = held - held % chunk_points
            for s in range(0, whole, chunk_points):
                yield {f: v[s : s + chunk_points] for f, v in both.items()}
            pending = [{f: v[whole:].copy() for f, v in both.items()}] if whole < held else []
            held -= whole
    if held:
        yield _concat(pending)


def _layers(fields: Sequence[str]) -> tuple[str, ...] | None:
    """The LAZ layers `fields` need, in order (None: a field of unknown layer, decompress everything)."""
    rest = [f for f in fields if f.lower() not in COORDINATES]
    return tuple(dict.fromkeys(_LAYER_OF[f] for f in rest)) if _LAYER_OF.keys() >= set(rest) else None


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return parts[0] if len(parts) == 1 else {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}
