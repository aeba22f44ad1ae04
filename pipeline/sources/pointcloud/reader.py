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
  (`X * scale + offset`, as laspy computes them). Memory: one chunk plus at most one LAZ chunk, whatever
  the file size. `read_points` is the explicit "whole file in RAM" call (tests, small files).
- `chunk_points_for(budget)`: the chunk size a task with a memory budget reads with.

Backends (in the style of laspy's `LazBackend`): `lazrs` decodes LAS (plain reads) and LAZ/COPC (lazrs'
sequential decoder: one core per worker, fork-safe); `pye57` decodes E57 scans (one scan at a time:
pye57 reads scans whole). A backend whose library is missing says so when a file needs it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.point_attributes import ATTRIBUTES
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit, scan_file

# the largest chunk `chunk_points_for` hands out (also the chunk size when no budget is given)
MAX_CHUNK_POINTS = 2_000_000
# bytes one point of a chunk may hold while a stage works on it: the raw record (<= 67 bytes for LAS 1.4
# with NIR), x/y/z as float64 (24) and the stage's masks and selections; a chunk takes 1/8 of the budget
_BYTES_PER_POINT = 128
_BUDGET_SHARE = 8

# columns `iter_points` can give: scaled coordinates, the raw integers, and the LAS fields as
# `decode_unit` names them (a field the file lacks is refused, never filled)
COORDINATES = ("x", "y", "z")
# the lazrs layer (LAZ formats 6-10) of each field beyond XY, returns and Z (always decompressed)
_LAYER_OF = {a.name: a.las_layer for a in ATTRIBUTES if a.las_layer} | dict.fromkeys(
    ("red", "green", "blue"), "RGB"
)
_ALWAYS = frozenset({"x", "y", "z", "X", "Y", "Z", "return_number", "number_of_returns"})


class PointBackend:
    """Decodes the points of one kind of file (the header scan is shared: `header.scan_file`)."""

    name = ""
    kinds: tuple[str, ...] = ()  # `PointFileInfo.kind` values this backend decodes
    module = ""  # the Python module it needs

    def is_available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec(self.module) is not None

    def decode(
        self,
        info: PointFileInfo,
        unit: WorkUnit,
        extra_dims: tuple[str, ...] = (),
        out: np.ndarray | None = None,
        lazy: bool = False,
        layers: tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray]:
        """The unit's columns (`las.decode_unit`'s names); `layers`: LAZ layers needed (None: all)."""
        raise NotImplementedError

    def chunk_units(self, info: PointFileInfo, max_points: int) -> list[WorkUnit]:
        """Consecutive units covering the file in order, each at most `max_points` points where the
        format allows (whole LAZ chunks: at least one; E57: one scan)."""
        raise NotImplementedError


class LazrsBackend(PointBackend):
    """LAS (plain reads) and LAZ / COPC (lazrs, sequential decoder)."""

    name = "lazrs"
    kinds = ("las", "laz")
    module = "lazrs"

    def decode(self, info, unit, extra_dims=(), out=None, lazy=False, layers=None):
        from pipeline.sources.pointcloud.las import decode_unit as las_decode_unit

        return las_decode_unit(info, unit, extra_dims, out, lazy=lazy, layers=layers)

    def chunk_units(self, info: PointFileInfo, max_points: int) -> list[WorkUnit]:
        units: list[WorkUnit] = []
        if info.kind == "las":
            for s in range(0, info.count, max_points):
                n = min(max_points, info.count - s)
                b = info.offset_to_points + s * info.point_size
                units.append(WorkUnit(0, s, n, b, n * info.point_size))
            return units
        start, byte = 0, info.first_chunk_offset
        group: list[tuple[int, int]] = []
        for chunk in [*info.chunk_table, None]:
            pts = sum(n for n, _b in group)
            if group and (chunk is None or pts + chunk[0] > max_points):
                nbytes = sum(b for _n, b in group)
                units.append(WorkUnit(0, start, pts, byte, nbytes, tuple(group)))
                start, byte, group = start + pts, byte + nbytes, []
            if chunk is not None:
                group.append(chunk)
        return units


class Pye57Backend(PointBackend):
    """E57 scans (pye57; one scan per unit)."""

    name = "pye57"
    kinds = ("e57",)
    module = "pye57"

    def decode(self, info, unit, extra_dims=(), out=None, lazy=False, layers=None):
        from pipeline.sources.pointcloud.e57 import decode_e57_unit

        return decode_e57_unit(info, unit)

    def chunk_units(self, info: PointFileInfo, max_points: int) -> list[WorkUnit]:
        starts = [0, *itertools.accumulate(info.scans)]
        return [WorkUnit(0, starts[i], n, scan=i) for i, n in enumerate(info.scans) if n]


BACKENDS: tuple[PointBackend, ...] = (LazrsBackend(), Pye57Backend())


def backend_for(info: PointFileInfo) -> PointBackend:
    """The backend that decodes `info`'s kind of file (InputError when its library is missing)."""
    for b in BACKENDS:
        if info.kind in b.kinds:
            if not b.is_available():
                raise InputError(
                    f"reading {info.kind.upper()} files needs the Python package {b.module!r} "
                    f"(pip install {b.module})",
                    path=info.path,
                )
            return b
    raise InputError(f"no point reader for files of kind {info.kind!r}", path=info.path)


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
    info: PointFileInfo,
    unit: WorkUnit,
    extra_dims: tuple[str, ...] = (),
    out: np.ndarray | None = None,
    lazy: bool = False,
) -> dict[str, np.ndarray]:
    """The points of one work unit: raw integer X/Y/Z and the LAS fields (see `las.decode_unit`)."""
    return backend_for(info).decode(info, unit, extra_dims, out, lazy)


def chunk_points_for(budget_bytes: int) -> int:
    """Points per chunk for a task with a memory budget of `budget_bytes` (an eighth of it for the chunk;
    at least 65,536, at most MAX_CHUNK_POINTS)."""
    return int(min(MAX_CHUNK_POINTS, max(1 << 16, budget_bytes // (_BUDGET_SHARE * _BYTES_PER_POINT))))


def _columns(
    info: PointFileInfo, cols: dict[str, np.ndarray], fields: Sequence[str]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in fields:
        if f in COORDINATES:
            axis = COORDINATES.index(f)
            raw = cols[f.upper()]
            out[f] = (raw * np.float64(info.scales[axis])) + np.float64(info.offsets[axis])
        elif f in cols and not f.startswith("_"):
            out[f] = np.array(cols[f])  # a copy: the raw records are not kept alive
        else:
            raise InputError(f"the file has no point field {f!r}", path=info.path)
    return out


def iter_points(
    info: PointFileInfo | str | Path,
    fields: Sequence[str] = ("x", "y", "z", "classification"),
    chunk_points: int = MAX_CHUNK_POINTS,
) -> Iterator[dict[str, np.ndarray]]:
    """The file's points in order, `chunk_points` at a time (the last chunk shorter), as `fields`
    columns: x/y/z scaled (float64), X/Y/Z raw, or LAS field names (`decode_unit`'s)."""
    if not isinstance(info, PointFileInfo):
        info = read_header(info)
    if chunk_points < 1:
        raise ValueError("chunk_points must be at least 1")
    backend = backend_for(info)
    layers = _layers(fields)
    pending: list[dict[str, np.ndarray]] = []
    held = 0
    for unit in backend.chunk_units(info, chunk_points):
        cols = backend.decode(info, unit, layers=layers)
        n = len(cols["X"])
        if n != unit.count:
            raise InputError(
                f"expected {unit.count} points from points {unit.start}.., decoded {n}", path=info.path
            )
        part = _columns(info, cols, fields)
        del cols
        pending.append(part)
        held += n
        while held >= chunk_points:
            chunk, pending, held = _split(pending, chunk_points, held)
            yield chunk
    if held:
        yield _split(pending, held, held)[0]


def _layers(fields: Sequence[str]) -> tuple[str, ...] | None:
    """The LAZ layers `fields` need (None: a field of unknown layer, decompress everything)."""
    out: list[str] = []
    for f in fields:
        if f in _ALWAYS:
            continue
        if f not in _LAYER_OF:
            return None
        if _LAYER_OF[f] not in out:
            out.append(_LAYER_OF[f])
    return tuple(out)


def _split(
    parts: list[dict[str, np.ndarray]], n: int, held: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], int]:
    """The first `n` points of the pending parts, and what is left."""
    if len(parts) == 1 and len(next(iter(parts[0].values()), ())) == n:
        return parts[0], [], held - n
    head: list[dict[str, np.ndarray]] = []
    rest: list[dict[str, np.ndarray]] = []
    need = n
    for p in parts:
        m = len(next(iter(p.values())))
        if need >= m:
            head.append(p)
            need -= m
        elif need > 0:
            head.append({k: v[:need] for k, v in p.items()})
            rest.append({k: v[need:] for k, v in p.items()})
            need = 0
        else:
            rest.append(p)
    chunk = head[0] if len(head) == 1 else {k: np.concatenate([h[k] for h in head]) for k in head[0]}
    return chunk, rest, held - n


def read_points(
    info: PointFileInfo | str | Path, fields: Sequence[str] = ("x", "y", "z", "classification")
) -> dict[str, np.ndarray]:
    """Every point of the file at once (memory: the whole file; `iter_points` is the bounded way)."""
    parts = list(iter_points(info, fields, MAX_CHUNK_POINTS))
    if not parts:
        return {f: np.zeros(0) for f in fields}
    return parts[0] if len(parts) == 1 else {f: np.concatenate([p[f] for p in parts]) for f in fields}
