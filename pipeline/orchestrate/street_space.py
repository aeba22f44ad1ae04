"""Street space from the mobile scans -> `street_space/street_space.gpkg` (+ `street_space.qml`).

Axes (`layers.street_space.axes`):
* `cadastre`: the centrelines of the cadastre's street areas: the land-use areas (ALKIS tatsächliche
  Nutzung, `sources.cadastre.landuse_layer`, default `NutzungFlurstueck`) whose use
  (`sources.cadastre.landuse_column`, default `nutzart`) is one of `layers.street_space.street_uses`
  (default Straßenverkehr, Weg), merged and skeletonised (`pipeline.stages.street_space.centrelines`);
* `tracks`: the scan tracks of the panorama list (`sources.mobile.panoramas`, tracks as the panoramas
  layer splits them: `track_id` column or time gaps), ordered by time;
* `auto` (default): the cadastre's when it has street areas near the scans, else the tracks (the layer's
  manifest stats say which: `axes`).
Each axis is cut into `segment_m` pieces from its start. Points: the mobile scans (`sources.mobile.points`).
Points and panorama list must be in the same CRS (`sources.mobile.crs`, else the working CRS); the cadastre
is read into that CRS. The measurement is `pipeline.stages.street_space`; the layer is internal by default
(`layers.street_space.access`).

Work in independent tasks on the build's executor (`orchestrate.executor`), memory bounded by
`runtime.memory` whatever the region's size:
1. one task per point file, or per READ_TASK_POINTS of a larger one (`spill_points`): its points in chunks
   (`reader.iter_points`), only those within `max_half_width_m` (+ `segment_m`) of an axis (tested one by
   one only in the point cells the corridor's outline crosses: `corridor_cells`) and in a `CELL_M` cell
   some segment reaches, each chunk written to a spill file sorted (stably) by cell. A task gets the
   corridor of its file's header bounds only (`corridor_window`); the tasks of a file whose points lie
   beyond them run again with the whole grid;
2. one task per tile of cells (`measure_tile`): the segments whose middle lies in the tile, from the spilled
   points of the cells their rectangles reach, cell by cell in the order of the spill files. The cells of
   the measurement's point grid (`stages.street_space.POINT_CELL_M`) nest in the `CELL_M` cells (both
   counted from `grid_origin`), so a segment sees the points of every point cell it reaches in their input
   order, exactly as from one read of everything: the result does not depend on the tiling; the tile size
   is the largest whose every task's points fit the worker's budget (exact counts from step 1).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from pipeline.config.model import StreetSpaceLayer
from pipeline.config.sizes import parse_size
from pipeline.crs import horizontal_of, parse_crs, working_crs
from pipeline.errors import ConfigError, InputError
from pipeline.model import BuildContext, LayerResult
from pipeline.orchestrate.executor import (
    Executor,
    Progress,
    build_executor,
    dask_workers,
    map_ordered,
)
from pipeline.stages._street_space_kernels import INSIDE, OUTLINE, OUTSIDE, cell_columns
from pipeline.stages.street_space import (
    POINT_CELL_M,
    RESULT_COLUMNS,
    Segments,
    StreetSpaceParams,
    centrelines,
    cut_axes,
    grid_origin,
    judge,
    measure_street_space,
    reach_boxes,
    status,
)

OUT_DIR = "street_space"
OUT_FILE = f"{OUT_DIR}/street_space.gpkg"
LAYER = "street_space"


def params_of(lay: StreetSpaceLayer) -> StreetSpaceParams:
    return StreetSpaceParams(
        segment_m=lay.segment_m,
        max_half_width_m=lay.max_half_width_m,
        bin_m=lay.bin_m,
        min_bin_points=lay.min_bin_points,
        kerb_window_m=lay.kerb_window_m,
        window_coverage=lay.window_coverage,
        kerb_min_m=lay.kerb_min_m,
        kerb_max_m=lay.kerb_max_m,
        edge_step_m=lay.edge_step_m,
        coverage_gap_m=lay.coverage_gap_m,
        fallback_half_width_m=lay.fallback_half_width_m,
        min_overhead_m=lay.min_overhead_m,
        clearance_margin_m=lay.clearance_margin_m,
        obstacle_min_m=lay.obstacle_min_m,
        obstacle_max_m=lay.obstacle_max_m,
        slice_m=lay.slice_m,
        vehicle_width_m=lay.vehicle_width_m,
        vehicle_height_m=lay.vehicle_height_m,
        ground_classes=tuple(lay.ground_classes),
        building_classes=tuple(lay.building_classes),
        ignored_classes=tuple(lay.ignored_classes),
    )


def track_axes(files: list[Path], gap_seconds: float) -> list[np.ndarray]:
    """Polylines (n, 2) of the recording tracks, each in time order, sorted by track id."""
    from pipeline.orchestrate.panoramas import concat_tables, read_panorama_csv, track_groups

    table = concat_tables([read_panorama_csv(f) for f in files], gap_seconds)
    axes = []
    for sel in track_groups(table.track_id or []).values():
        sel = sel[np.argsort(table.time[sel], kind="stable")]
        xy = np.column_stack([table.x[sel], table.y[sel]])
        keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 1e-6])
        if keep.sum() >= 2:
            axes.append(xy[keep])
    return axes


def street_areas(
    files: list[Path],
    fmt: str,
    layer: str | None,
    column: str,
    uses: list[str],
    crs: str | None,
    target_crs: Any,
) -> gpd.GeoDataFrame | None:
    """The cadastre's land-use areas of street use (`uses`), or None when the cadastre has no land-use
    layer (and none was asked for). NAS files are not read for land use (ConfigError when asked for)."""
    if fmt != "alkis_gpkg":
        if layer:
            raise ConfigError(
                f"sources.cadastre.landuse_layer: land use is read from ALKIS GeoPackages only, not {fmt!r}"
            )
        return None
    from pipeline.sources.cadastre.gpkg import read_land_use

    frames = []
    for f in sorted(files):
        if f.suffix.lower() != ".gpkg":
            continue
        lu = read_land_use(f, layer, column, crs, target_crs)
        if lu is not None:
            frames.append(lu)
    if not frames:
        return None
    import pandas as pd

    lu = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    wanted = {u.casefold() for u in uses}
    keep = np.array([v is not None and v.casefold() in wanted for v in lu["nutzart"]], dtype=bool)
    return lu[keep & ~lu.geometry.is_empty.to_numpy()].reset_index(drop=True)


# the spill grid's cell (the unit of reading back: CELL_POINT_CELLS point cells of the measurement) and
# the bytes a tile task holds per point: the spilled record (13), the scaled coordinates and class (25),
# the measurement's point grid (8 + 2 x 8 while it is built) and its flags, with room for the pieces
CELL_POINT_CELLS = 20
CELL_M = POINT_CELL_M * CELL_POINT_CELLS
TILE_BYTES_PER_POINT = 128
# the most points one read task decodes (a file of more is read by several tasks, on every worker)
READ_TASK_POINTS = 8_000_000
# a spilled return: the file's raw integer coordinates (x = X * scale + offset, as the reader computes
# them: the same float64s come back) and its class (13 bytes)
SPILL_DTYPE = np.dtype([("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("c", "u1")])


@dataclass(frozen=True)
class SpillRun:
    """One spill file (one chunk of one point file): its path, the file's scales and offsets, the cells it
    holds and the record offset where each cell starts (with the end appended)."""

    path: str
    scales: tuple[float, float, float]
    offsets: tuple[float, float, float]
    cells: np.ndarray
    starts: np.ndarray


@dataclass(frozen=True)
class CellGrid:
    """Square cells of CELL_POINT_CELLS x CELL_POINT_CELLS point cells (POINT_CELL_M) from (x0, y0), nx x
    ny of them; cell id = row * nx + column. A point's cell is that of its point cell (never computed
    apart: a point cell lies in exactly one cell)."""

    x0: float
    y0: float
    nx: int
    ny: int

    @classmethod
    def around(cls, boxes: np.ndarray, origin: tuple[float, float]) -> CellGrid:
        x0, y0 = origin
        grid = cls(x0, y0, 1, 1)
        c, r = grid.col_row(boxes[:, 2], boxes[:, 3])
        return cls(x0, y0, int(c.max()) + 1, int(r.max()) + 1)

    def col_row(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return (
            cell_columns(x, self.x0, POINT_CELL_M) // CELL_POINT_CELLS,
            cell_columns(y, self.y0, POINT_CELL_M) // CELL_POINT_CELLS,
        )


def _box_cells(grid: CellGrid, box: np.ndarray) -> tuple[int, int, int, int]:
    """(c0, r0, c1, r1) inclusive cell range of a box, clipped to the grid."""
    c0, r0 = grid.col_row(np.array([box[0]]), np.array([box[1]]))
    c1, r1 = grid.col_row(np.array([box[2]]), np.array([box[3]]))
    return (
        max(0, int(c0[0])),
        max(0, int(r0[0])),
        min(grid.nx - 1, int(c1[0])),
        min(grid.ny - 1, int(r1[0])),
    )


def needed_cells(grid: CellGrid, boxes: np.ndarray) -> np.ndarray:
    """Sorted ids of the cells some segment's box reaches."""
    need = np.zeros((grid.ny, grid.nx), dtype=bool)
    for b in boxes:
        c0, r0, c1, r1 = _box_cells(grid, b)
        need[r0 : r1 + 1, c0 : c1 + 1] = True
    return np.flatnonzero(need.ravel())


def corridor_cells(
    grid: CellGrid, corridor: shapely.Geometry, window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """(rows, columns) of the grid's point cells (POINT_CELL_M) in `window` (first column, first row,
    columns, rows; None: the whole grid): OUTSIDE, INSIDE or OUTLINE of `corridor`. A cell whose box
    (grown by 1 mm, more than any rounding of a point's cell) the outline does not touch lies wholly on
    one side of it: its centre says which."""
    c0, r0, ncol, nrow = window or (0, 0, grid.nx * CELL_POINT_CELLS, grid.ny * CELL_POINT_CELLS)
    xs = grid.x0 + (c0 + np.arange(ncol)) * POINT_CELL_M
    ys = grid.y0 + (r0 + np.arange(nrow)) * POINT_CELL_M
    cx, cy = np.meshgrid(xs, ys)
    out = np.where(
        shapely.contains_xy(corridor, cx + POINT_CELL_M / 2, cy + POINT_CELL_M / 2), INSIDE, OUTSIDE
    ).astype(np.uint8)
    pad = 1e-3
    boxes = shapely.box(
        cx.ravel() - pad, cy.ravel() - pad, cx.ravel() + POINT_CELL_M + pad, cy.ravel() + POINT_CELL_M + pad
    )
    # the outline as its straight pieces (a query per piece touches only the cells near it)
    parts = shapely.get_parts(corridor)
    rings = shapely.get_parts(shapely.get_rings(parts[shapely.get_type_id(parts) == 3]))
    ends = [np.stack([c[:-1], c[1:]], axis=1) for c in map(shapely.get_coordinates, rings)]
    if ends and len(boxes):
        pieces = shapely.linestrings(np.concatenate(ends))
        _piece, cell = shapely.STRtree(boxes).query(pieces, predicate="intersects")
        out.ravel()[np.unique(cell)] = OUTLINE
    return out


@dataclass(frozen=True)
class CorridorWindow:
    """What a read task needs of the corridor: its point cells' classes (`corridor_cells`) from column
    `col0`, row `row0` on, and the corridor clipped to one cell beyond them (the exact test of the
    returns in OUTLINE cells). A file's window covers its header bounds; a read task's memory does not
    grow with the region."""

    col0: int
    row0: int
    side: np.ndarray
    corridor: shapely.Geometry


def corridor_window(
    grid: CellGrid,
    corridor: shapely.Geometry,
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> CorridorWindow:
    """The corridor's window over the point cells that `bounds` (mins, maxs of a file's header) reach, one
    cell more on every side, within the grid (None: the whole grid, the corridor as it is)."""
    ncol, nrow = grid.nx * CELL_POINT_CELLS, grid.ny * CELL_POINT_CELLS
    if bounds is None:
        return CorridorWindow(0, 0, corridor_cells(grid, corridor), corridor)
    (xmin, ymin, *_), (xmax, ymax, *_) = bounds
    c0, r0 = (
        max(0, int(np.floor((v - o) / POINT_CELL_M)) - 1) for v, o in ((xmin, grid.x0), (ymin, grid.y0))
    )
    c1 = min(ncol - 1, int(np.floor((xmax - grid.x0) / POINT_CELL_M)) + 1)
    r1 = min(nrow - 1, int(np.floor((ymax - grid.y0) / POINT_CELL_M)) + 1)
    if c0 > c1 or r0 > r1:  # the file lies beside the region: its window is empty
        return CorridorWindow(0, 0, np.zeros((0, 0), dtype=np.uint8), shapely.Polygon())
    clip = shapely.box(
        grid.x0 + (c0 - 1) * POINT_CELL_M,
        grid.y0 + (r0 - 1) * POINT_CELL_M,
        grid.x0 + (c1 + 2) * POINT_CELL_M,
        grid.y0 + (r1 + 2) * POINT_CELL_M,
    )
    near = shapely.intersection(corridor, clip)
    return CorridorWindow(c0, r0, corridor_cells(grid, near, (c0, r0, c1 - c0 + 1, r1 - r0 + 1)), near)


def spill_points(
    path: Path,
    file_no: int,
    points: tuple[int, int],
    grid: CellGrid,
    cells: np.ndarray,
    window: CorridorWindow,
    spill_dir: str,
    chunk_points: int,
) -> tuple[list[SpillRun], int]:
    """Task: the file's points `points` (start, stop: the reader's units that start in it) inside the
    corridor (`window`) and in `cells`, chunk by chunk, each chunk written to `spill_dir` as SPILL_DTYPE
    records sorted (stably) by cell. Returns the spill runs and the number of points of `cells` that lie
    beyond the window (then the runs miss them: the caller reads the range again with the whole grid).
    Memory: one chunk."""
    from pipeline.sources.pointcloud.reader import iter_points, read_header
    from pipeline.stages._street_space_kernels import corridor_points, pack_by_cell

    info = read_header(path)
    corridor = window.corridor
    shapely.prepare(corridor)
    wanted = np.zeros(grid.nx * grid.ny, dtype=bool)
    wanted[cells] = True
    ncol, nrow = grid.nx * CELL_POINT_CELLS, grid.ny * CELL_POINT_CELLS
    (sx, sy, _sz), (ox, oy, _oz) = info.scales, info.offsets
    runs: list[SpillRun] = []
    strays = 0
    fields = ("X", "Y", "Z", "classification")
    for k, pts in enumerate(iter_points(info, fields, chunk_points, points=points)):
        X, Y = pts["X"], pts["Y"]
        keep, cell, outline, beyond = corridor_points(
            X, Y, sx, ox, sy, oy, grid.x0, grid.y0, POINT_CELL_M, ncol, nrow, CELL_POINT_CELLS, wanted,
            window.col0, window.row0, window.side,
        )  # fmt: skip
        strays += beyond
        test = np.flatnonzero(outline)
        if len(test):
            # the reader's own coordinates of the points in the outline's cells: `X * scale + offset`
            at = keep[test]
            inside = np.ones(len(keep), dtype=bool)
            inside[test] = shapely.contains_xy(
                corridor, X[at] * np.float64(sx) + np.float64(ox), Y[at] * np.float64(sy) + np.float64(oy)
            )
            keep, cell = keep[inside], cell[inside]
        if len(keep):
            rec = np.empty(len(keep), dtype=SPILL_DTYPE)
            count = pack_by_cell(
                keep, cell, grid.nx * grid.ny, X, Y, pts["Z"], pts["classification"], *(rec[f] for f in "XYZc")
            )  # fmt: skip
            present = np.flatnonzero(count)
            starts = np.concatenate([[0], np.cumsum(count[present])])
            out = str(Path(spill_dir) / f"{file_no:06d}_{points[0]:012d}_{k:06d}.npy")
            np.save(out, rec)
            runs.append(SpillRun(out, info.scales, info.offsets, present, starts))
            del rec
    return runs, strays


def measure_tile(
    pieces: list[tuple[SpillRun, list[tuple[int, int]]]],
    seg: Segments,
    p: StreetSpaceParams,
    origin: tuple[float, float],
) -> dict[str, np.ndarray]:
    """Task: the measurements of `seg` from the spilled records `pieces` ((spill file, record ranges), in
    the order of the spill files: the points of every cell in input order) on the region's point grid
    from `origin`."""
    total = sum(b - a for _run, ranges in pieces for a, b in ranges)
    x, y, z = (np.empty(total) for _ in range(3))
    c = np.empty(total, dtype=np.uint8)
    at = 0
    for run, ranges in pieces:
        rec = np.load(run.path, mmap_mode="r")
        for a, b in ranges:
            part = rec[a:b]
            n = b - a
            # `X * scale + offset` (float64), the reader's own arithmetic, straight into the columns
            for axis, (f, col) in enumerate(zip("XYZ", (x, y, z), strict=True)):
                out = col[at : at + n]
                np.multiply(part[f], np.float64(run.scales[axis]), out=out)
                out += np.float64(run.offsets[axis])
            c[at : at + n] = part["c"]
            at += n
        del rec
    return measure_street_space(seg, x, y, z, c, p, origin=origin)


def tile_plan(
    grid: CellGrid,
    boxes: np.ndarray,
    counts: np.ndarray,
    mid_cells: tuple[np.ndarray, np.ndarray],
    max_points: int,
    workers: int,
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Tiles of k x k cells, each: (indices of the segments whose middle lies in it, the cell range
    their boxes reach). k is the largest power of two for which every tile reaches at most `max_points`
    points (the exact per-cell `counts`) and there are at least two tiles per worker; else k = 1."""
    col, row = mid_cells
    csum = np.zeros((grid.ny + 1, grid.nx + 1), dtype=np.int64)
    csum[1:, 1:] = counts.reshape(grid.ny, grid.nx).cumsum(0).cumsum(1)
    k = 1
    while k < max(grid.nx, grid.ny):
        k *= 2
    while True:
        tid = (row // k) * ((grid.nx + k - 1) // k) + col // k
        order = np.argsort(tid, kind="stable")
        ends = np.flatnonzero(np.diff(tid[order])) + 1
        tiles = []
        worst = 0
        for idx in np.split(order, ends):
            lo, hi = boxes[idx].min(axis=0), boxes[idx].max(axis=0)
            c0, r0, c1, r1 = _box_cells(grid, np.array([lo[0], lo[1], hi[2], hi[3]]))
            n = int(csum[r1 + 1, c1 + 1] - csum[r0, c1 + 1] - csum[r1 + 1, c0] + csum[r0, c0])
            worst = max(worst, n)
            tiles.append((np.sort(idx), (c0, r0, c1, r1)))
        if k == 1 or (worst <= max_points and len(tiles) >= 2 * workers):
            return tiles
        k //= 2


def measure_from_files(
    seg: Segments,
    axes: list[np.ndarray],
    point_files: list[Path],
    p: StreetSpaceParams,
    *,
    work_dir: Path,
    budget: int,
    executor: Executor | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], int, int]:
    """Measurements of every segment through per-file spill tasks and per-tile measuring tasks on
    `executor` (module docstring), each task within `budget` bytes; spill files in a temporary folder
    under `work_dir`, removed at the end. Returns (results, points used, tiles)."""
    import shutil
    import tempfile

    from pipeline.sources.pointcloud.reader import chunk_points_for, read_header

    out = {k: np.full(len(seg), np.nan) for k in RESULT_COLUMNS}
    if not len(seg) or not point_files:
        return out, 0, 0
    corridor = shapely.union_all(
        [shapely.buffer(shapely.LineString(a), p.max_half_width_m + p.segment_m) for a in axes]
    )
    boxes = reach_boxes(seg, p.max_half_width_m)
    origin = grid_origin(seg, p)
    grid = CellGrid.around(boxes, origin)
    cells = needed_cells(grid, boxes)
    # (file, file number, point range, header bounds): a file of many points is read by several tasks
    reads = []
    for i, f in enumerate(point_files):
        info = read_header(f)
        for start in range(0, max(info.count, 1), READ_TASK_POINTS):
            reads.append((f, i, (start, min(info.count, start + READ_TASK_POINTS)), (info.mins, info.maxs)))

    work_dir.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix=".street_space-spill-", dir=work_dir))
    chunk = chunk_points_for(budget)

    @functools.lru_cache(maxsize=1)  # the read tasks of a file are submitted one after the other
    def window_of(file_no: int, bounds: Any) -> CorridorWindow:
        return corridor_window(grid, corridor, bounds)

    def read(j: int, window: CorridorWindow | None = None) -> tuple[Any, ...]:
        f, i, points, bounds = reads[j]
        return (f, i, points, grid, cells, window or window_of(i, bounds), str(spill), chunk)

    try:
        # arguments made as the tasks are submitted, a few at a time: the windows of a few files in memory
        results = map_ordered(
            executor if len(reads) > 1 else None,
            spill_points,
            (read(j) for j in range(len(reads))),
            name="street-space-read",
            total=len(reads),
            progress=progress,
            window=2 * workers,
        )
        # a file whose points lie beyond its header's bounds: those read tasks again, with the whole grid
        again = [j for j, (_runs, strays) in enumerate(results) if strays]
        if again:
            whole = corridor_window(grid, corridor)
            for j in again:
                for run in results[j][0]:
                    Path(run.path).unlink()
            redone = map_ordered(
                executor if len(again) > 1 else None,
                spill_points,
                [read(j, whole) for j in again],
                name="street-space-read",
                progress=progress,
            )
            for j, res in zip(again, redone, strict=True):
                results[j] = res
        flat = [r for file_runs, _strays in results for r in file_runs]
        counts = np.zeros(grid.nx * grid.ny, dtype=np.int64)
        for run in flat:
            counts[run.cells] += np.diff(run.starts)
        mx = seg.x0 + seg.ux * seg.length / 2
        my = seg.y0 + seg.uy * seg.length / 2
        col, row = grid.col_row(mx, my)
        tiles = tile_plan(grid, boxes, counts, (col, row), budget // TILE_BYTES_PER_POINT, workers)
        items = []
        for idx, (c0, r0, c1, r1) in tiles:
            want = np.zeros(grid.nx * grid.ny, dtype=bool)
            want.reshape(grid.ny, grid.nx)[r0 : r1 + 1, c0 : c1 + 1] = True
            pieces = []
            for run in flat:
                sel = np.flatnonzero(want[run.cells])
                if len(sel):
                    pieces.append((run, [(int(run.starts[j]), int(run.starts[j + 1])) for j in sel]))
            items.append((pieces, seg.take(idx), p, origin))
        results = map_ordered(
            executor if len(items) > 1 else None,
            measure_tile,
            items,
            name="street-space-tiles",
            progress=progress,
        )
        for (idx, _cells), res in zip(tiles, results, strict=True):
            for key in RESULT_COLUMNS:
                out[key][idx] = res[key]
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return out, int(counts.sum()), len(tiles)


def segments_frame(
    seg: Segments, res: dict[str, np.ndarray], p: StreetSpaceParams, crs: Any
) -> gpd.GeoDataFrame:
    """One polygon per segment: the carriageway between the kerbs (or +-fallback beside the axis)."""
    left = np.where(np.isfinite(res["kerb_left_m"]), res["kerb_left_m"], p.fallback_half_width_m)
    right = np.where(np.isfinite(res["kerb_right_m"]), res["kerb_right_m"], -p.fallback_half_width_m)
    x1 = seg.x0 + seg.ux * seg.length
    y1 = seg.y0 + seg.uy * seg.length
    nx, ny = -seg.uy, seg.ux
    ring = np.stack(
        [
            np.column_stack([seg.x0 + nx * right, seg.y0 + ny * right]),
            np.column_stack([x1 + nx * right, y1 + ny * right]),
            np.column_stack([x1 + nx * left, y1 + ny * left]),
            np.column_stack([seg.x0 + nx * left, seg.y0 + ny * left]),
        ],
        axis=1,
    )
    geoms = shapely.polygons(np.round(ring, 3))
    judged, passable, reason = judge(res, p)
    free = np.fmin(res["free_sidewalk_left_m"], res["free_sidewalk_right_m"])

    def r2(a: np.ndarray) -> np.ndarray:
        return np.round(a, 2)

    return gpd.GeoDataFrame(
        {
            "axis_id": seg.axis.astype(np.int32),
            "station_m": r2(seg.station),
            "length_m": r2(seg.length),
            "carriageway_width_m": r2(res["carriageway_width_m"]),
            "sidewalk_left_width_m": r2(res["sidewalk_left_width_m"]),
            "sidewalk_right_width_m": r2(res["sidewalk_right_width_m"]),
            "min_clearance_m": r2(res["min_clearance_m"]),
            "free_sidewalk_left_m": r2(res["free_sidewalk_left_m"]),
            "free_sidewalk_right_m": r2(res["free_sidewalk_right_m"]),
            "free_sidewalk_width_m": r2(free),
            "judged": judged,
            "passable": passable,
            "status": status(judged, res, p),
            "reason": reason,
            "ground_points": res["ground_points"].astype(np.int64),
            "overhead_points": np.nan_to_num(res["overhead_points"]).astype(np.int64),
        },
        geometry=geoms,
        crs=crs,
    )


def build_street_space_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """Layer builder hook of `twin build` (no-op without mobile scans and a panorama list)."""
    from pipeline.styles import palettes as P
    from pipeline.styles.gpkg import write_layer, write_styles
    from pipeline.styles.qml import categorized

    cfg = ctx.cfg
    lay = cfg.layers.street_space
    mobile = cfg.sources.mobile
    if not lay.enabled or mobile is None or not mobile.points:
        return []
    cad = cfg.sources.cadastre
    if lay.axes == "cadastre" and cad is None:
        raise ConfigError("layers.street_space.axes: cadastre needs sources.cadastre")
    if lay.axes == "tracks" and not mobile.panoramas:
        raise ConfigError("layers.street_space.axes: tracks needs sources.mobile.panoramas")
    if not mobile.panoramas and cad is None:
        return []
    t0 = time.perf_counter()
    p = params_of(lay)
    warnings: list[str] = []
    crs = horizontal_of(parse_crs(mobile.crs) if mobile.crs else working_crs(cfg.crs))
    with ctx.stage("street_space"):
        pano_files = [i.path for i in ctx.inputs if i.role == "panoramas"]
        point_files = sorted(i.path for i in ctx.inputs if i.role == "mobile")
        tracks = track_axes(pano_files, mobile.track_gap_seconds) if pano_files else []
        axes, source = tracks, "tracks"
        if lay.axes != "tracks" and cad is not None:
            cad_files = [i.path for i in ctx.inputs if i.role.split(":")[0] == "cadastre"]
            areas = street_areas(
                cad_files,
                cad.format,
                cad.landuse_layer,
                cad.landuse_column,
                lay.street_uses,
                cad.crs,
                crs,
            )
            if tracks and areas is not None and len(areas):
                # auto: only street areas the scans reach count (a cadastre larger than the survey)
                reach = shapely.union_all(
                    [shapely.buffer(shapely.LineString(a), p.max_half_width_m) for a in tracks]
                )
                areas = areas[areas.intersects(reach)]
            if areas is not None and len(areas):
                axes, source = centrelines(shapely.union_all(areas.geometry.values)), "cadastre"
            elif lay.axes == "cadastre":
                raise InputError(
                    "layers.street_space.axes is cadastre, but the cadastre has no land-use areas of "
                    f"{lay.street_uses} (sources.cadastre.landuse_layer / landuse_column, "
                    "layers.street_space.street_uses)",
                    path=cad_files[0] if cad_files else None,
                )
            elif tracks:
                warnings.append(
                    "street_space: the cadastre has no street-use land-use areas near the scans; "
                    "axes from the scan tracks"
                )
        seg = cut_axes(axes, p.segment_m)
        res, npoints, ntiles = measure_from_files(
            seg,
            axes,
            point_files,
            p,
            work_dir=ctx.release_dir,
            budget=parse_size(cfg.runtime.memory),
            executor=build_executor(ctx.client),
            workers=dask_workers(ctx.client) if ctx.client is not None else 1,
            progress=ctx.progress,
        )
        gdf = segments_frame(seg, res, p, crs)
        out = ctx.release_dir / OUT_FILE
        write_layer(gdf, out, LAYER, "MultiPolygon")
        qml = write_styles(
            out,
            {
                LAYER: categorized(
                    "street space: can the vehicle pass?", P.STREET_SPACE_PROPERTY, P.STREET_SPACE
                )
            },
        )
        if len(gdf) and not gdf["judged"].any():
            warnings.append("street_space: no segment has kerbs on both sides; nothing could be judged")
    cw = res["carriageway_width_m"]
    stats: dict[str, Any] = {
        "segments": len(seg),
        "axes": source,
        "axis_lines": len(axes),
        "tracks": len(tracks),
        "points": npoints,
        "tiles": ntiles,
        "judged": int(gdf["judged"].sum()),
        "passable": int(gdf["passable"].sum()),
        "vehicle": [p.vehicle_width_m, p.vehicle_height_m],
    }
    if np.isfinite(cw).any():
        stats["carriageway_width_m"] = [round(float(np.nanmin(cw)), 2), round(float(np.nanmax(cw)), 2)]
    for col in RESULT_COLUMNS:
        stats.setdefault("measured", {})[col] = int(np.isfinite(res[col]).sum())
    return [
        LayerResult(
            name="street_space",
            kind="overlay",
            access=lay.access,
            files=[OUT_FILE, *(str(q.relative_to(ctx.release_dir)) for q in qml)],
            stats=stats,
            warnings=warnings,
            seconds=time.perf_counter() - t0,
        )
    ]
