"""Points -> grids: per-cell statistics of point heights (DSM, ground model) and gap filling.

Pure numpy: one pass of index arithmetic and `ufunc.at`/`bincount` reductions, no per-point Python.
Streaming callers combine chunks with `combine` (max/min are associative; mean keeps sum and count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.sources.rasters import Grid

Stat = Literal["max", "min", "mean"]


@dataclass
class CellAccumulator:
    """Running per-cell reduction of point heights on a grid."""

    grid: Grid
    stat: Stat
    value: np.ndarray  # (rows, cols) float64: running max/min or sum
    count: np.ndarray  # (rows, cols) int64

    @classmethod
    def empty(cls, grid: Grid, stat: Stat) -> CellAccumulator:
        fill = {"max": -np.inf, "min": np.inf, "mean": 0.0}[stat]
        shape = (grid.height, grid.width)
        return cls(grid, stat, np.full(shape, fill), np.zeros(shape, dtype=np.int64))

    def add(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        row, col, ok = self.grid.index(x, y)
        flat = (row[ok] * self.grid.width + col[ok]).astype(np.int64)
        zz = np.asarray(z, np.float64)[ok]
        n = self.grid.width * self.grid.height
        self.count += np.bincount(flat, minlength=n).reshape(self.count.shape)
        v = self.value.reshape(-1)
        if self.stat == "max":
            np.maximum.at(v, flat, zz)
        elif self.stat == "min":
            np.minimum.at(v, flat, zz)
        else:
            v += np.bincount(flat, weights=zz, minlength=n)

    def result(self) -> np.ndarray:
        """float32 grid, NaN where no point fell."""
        if self.stat == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                out = self.value / self.count
        else:
            out = self.value.copy()
        out[self.count == 0] = np.nan
        return out.astype(np.float32)


def cell_stat(grid: Grid, x: np.ndarray, y: np.ndarray, z: np.ndarray, stat: Stat = "max") -> np.ndarray:
    acc = CellAccumulator.empty(grid, stat)
    acc.add(x, y, z)
    return acc.result()


def cell_stat_reference(
    grid: Grid, x: np.ndarray, y: np.ndarray, z: np.ndarray, stat: Stat = "max"
) -> np.ndarray:
    """Slow per-point reference of `cell_stat` (tests only)."""
    out = np.full((grid.height, grid.width), np.nan)
    cnt = np.zeros((grid.height, grid.width))
    for xi, yi, zi in zip(x, y, z, strict=True):
        rows, cols, ok = grid.index(np.array([xi]), np.array([yi]))
        if not ok[0]:
            continue
        r, c = int(rows[0]), int(cols[0])
        if np.isnan(out[r, c]):
            out[r, c] = zi
        elif stat == "max":
            out[r, c] = max(out[r, c], zi)
        elif stat == "min":
            out[r, c] = min(out[r, c], zi)
        else:
            out[r, c] += zi
        cnt[r, c] += 1
    if stat == "mean":
        out = out / np.where(cnt > 0, cnt, np.nan)
    return out.astype(np.float32)


# cells of one strip of `fill_gaps` (its temporaries are about 90 bytes per cell: ~90 MB)
FILL_STRIP_CELLS = 2**20


def fill_gaps(
    a: np.ndarray, max_cells: int = 2, iterations: int | None = None, strip_cells: int = FILL_STRIP_CELLS
) -> np.ndarray:
    """Fill NaN cells from their valid 8-neighbours (mean), growing at most `max_cells` cells inward.

    Small gaps between points get values; larger holes (real missing data) stay NaN beyond `max_cells`
    from their rim. `max_cells <= 0` returns a copy.

    Runs in strips of rows of about `strip_cells` cells, each read from `a` with `max_cells` rows of
    margin (a cell's result depends only on the cells within `max_cells` of it): memory is the result and
    one strip's temporaries, and the result equals one pass over the whole grid for any strip size.
    """
    out = np.array(a, dtype=np.float32, copy=True)
    steps = max(max_cells if iterations is None else iterations, 0)
    rows = max(1, strip_cells // max(out.shape[1], 1)) if out.ndim == 2 else out.shape[0]
    if steps == 0 or out.size == 0 or rows + 2 * steps >= out.shape[0]:
        return _fill_gaps_strip(out, steps)
    src = np.asarray(a, dtype=np.float32)  # the unfilled cells the strips read their margins from
    h = out.shape[0]
    for s0 in range(0, h, rows):
        s1 = min(s0 + rows, h)
        m0, m1 = max(s0 - steps, 0), min(s1 + steps, h)
        part = _fill_gaps_strip(np.array(src[m0:m1], copy=True), steps)
        out[s0:s1] = part[s0 - m0 : s1 - m0]
    return out


def _fill_gaps_strip(out: np.ndarray, steps: int) -> np.ndarray:
    """`steps` rounds of neighbour filling of `out` in place (float32); returns it."""
    for _ in range(steps):
        nan = np.isnan(out)
        if not nan.any() or nan.all():
            break
        p = np.pad(out, 1, constant_values=np.nan)
        stack = np.stack(
            [
                p[1 + dy : 1 + dy + out.shape[0], 1 + dx : 1 + dx + out.shape[1]]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
                if dy or dx
            ]
        )
        ok = np.isfinite(stack)
        cnt = ok.sum(axis=0)
        sm = np.where(ok, stack, 0).sum(axis=0)
        take = nan & (cnt > 0)
        out[take] = (sm[take] / cnt[take]).astype(np.float32)
    return out


def fill_all(a: np.ndarray) -> np.ndarray:
    """Fill every NaN cell (ground model without a DGM: ground under buildings is interpolated)."""
    out = np.array(a, dtype=np.float32, copy=True)
    if np.isnan(out).all():
        return out
    while np.isnan(out).any():
        out = fill_gaps(out, iterations=max(out.shape))
    return out


def rasterise_point_files(
    files: list,
    grid: Grid,
    *,
    stat: Stat,
    crs_cfg,
    crs_override: str | None = None,
    include_classes: tuple[int, ...] | None = None,
    exclude_classes: tuple[int, ...] = (),
    chunk_size: int = 2_000_000,
) -> CellAccumulator:
    """Stream point files (LAS/LAZ/COPC/E57, the one point reader) chunk by chunk into a per-cell
    statistic on `grid`; memory: one chunk of `chunk_size` points.

    The file's CRS and Z unit are resolved like everywhere else (`sources.pointcloud.crs.resolve_file_crs`:
    `crs_override` wins, a file without CRS is refused); points are brought into the working compound CRS
    (horizontal + normal heights) when the file is in another CRS.
    """
    target = RasterTarget(grid, stat, include_classes, tuple(exclude_classes))
    return rasterise_point_files_multi(
        files, [target], crs_cfg=crs_cfg, crs_override=crs_override, chunk_size=chunk_size
    )[0]


@dataclass(frozen=True)
class RasterTarget:
    """One per-cell statistic to compute from a pass over point files (`rasterise_point_files_multi`)."""

    grid: Grid
    stat: Stat
    include_classes: tuple[int, ...] | None = None
    exclude_classes: tuple[int, ...] = ()


def rasterise_point_files_multi(
    files: list,
    targets: list[RasterTarget],
    *,
    crs_cfg,
    crs_override: str | None = None,
    chunk_size: int = 2_000_000,
) -> list[CellAccumulator]:
    """`rasterise_point_files` for several grids / statistics / class filters in one decoding pass
    (decompressing the points costs far more than binning them): one accumulator per target, each equal
    to its own `rasterise_point_files` call."""
    from pipeline.stages.point_products import feed_points

    accs = [CellAccumulator.empty(t.grid, t.stat) for t in targets]
    for f in files:
        feed_points(f, [FileRasters(f, targets, crs_cfg, crs_override, accs)], chunk_size)
    return accs


class FileRasters:
    """The per-cell statistics of `targets` over the points of one file, as a point product
    (`stages.point_products`): `result()` is one accumulator per target (`accs`: running ones to add
    this file's points to). The file's CRS and Z unit are resolved like everywhere else
    (`sources.pointcloud.crs.resolve_file_crs`: `crs_override` wins, a file without CRS is refused);
    points are brought into the working compound CRS when the file is in another CRS. A file whose
    extent misses every grid needs no point (`fields` is empty)."""

    def __init__(
        self,
        path: str,
        targets: list[RasterTarget],
        crs_cfg,
        crs_override: str | None = None,
        accs: list[CellAccumulator] | None = None,
    ) -> None:
        from pipeline.crs import make_transformer, same_crs, working_crs
        from pipeline.sources.pointcloud.crs import resolve_file_crs
        from pipeline.sources.pointcloud.reader import read_header

        self.targets = targets
        self.accs = accs if accs is not None else [CellAccumulator.empty(t.grid, t.stat) for t in targets]
        info = read_header(path)
        self.fc = resolve_file_crs(info, crs_override, crs_cfg)
        work = working_crs(crs_cfg)
        self.tr = (
            None if same_crs(self.fc.crs, work) else make_transformer(self.fc.crs, work, crs_cfg, path=path)
        )
        self.live = [
            k
            for k, t in enumerate(targets)
            if self.tr is not None
            or not (
                info.maxs[0] < t.grid.bounds[0]
                or info.mins[0] > t.grid.bounds[2]
                or info.maxs[1] < t.grid.bounds[1]
                or info.mins[1] > t.grid.bounds[3]
            )
        ]
        self.fields: tuple[str, ...] = ("x", "y", "z", "classification") if self.live else ()

    def add(self, pts: dict[str, np.ndarray]) -> None:
        cls = pts["classification"]
        for k in self.live:
            t = self.targets[k]
            keep = np.ones(len(cls), dtype=bool)
            if t.include_classes is not None:
                keep &= np.isin(cls, t.include_classes)
            if t.exclude_classes:
                keep &= ~np.isin(cls, t.exclude_classes)
            x, y, z = pts["x"][keep], pts["y"][keep], pts["z"][keep]
            if self.fc.z_factor != 1.0:
                z = z * self.fc.z_factor
            if self.tr is not None:
                x, y, z = self.tr.transform(x, y, z)
            self.accs[k].add(x, y, z)

    def result(self) -> list[CellAccumulator]:
        return self.accs
