"""Street space from the mobile scans (pipeline.stages.street_space, pipeline.orchestrate.street_space).

Crafted cross-sections with known kerbs, branches and obstacles, and the demo district against its truth
(truth/street_space.csv): widths within 0.2 m, clearances within 0.1 m.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sqlite3
from types import SimpleNamespace

import geopandas as gpd
import laspy
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.config.model import TwinConfig
from pipeline.errors import ConfigError, InputError
from pipeline.orchestrate.street_space import (
    OUT_FILE,
    build_street_space_layers,
    measure_from_files,
    params_of,
    segments_frame,
    street_areas,
    track_axes,
)
from pipeline.stages import _street_space_kernels as K
from pipeline.stages.street_space import (
    StreetSpaceParams,
    _bin_medians,
    _longest_free,
    _PointGrid,
    _window_median,
    centrelines,
    class_flags,
    cut_axes,
    judge,
    measure_street_space,
    measure_street_space_reference,
)

KERB = 0.12


def _street(
    rng: np.random.Generator,
    left_kerb: float,
    right_kerb: float,
    left_edge: float,
    right_edge: float,
    length: float = 30.0,
    angle: float = 0.4,
) -> dict[str, np.ndarray]:
    """Ground of a straight street (axis from the origin along `angle`), a 2 % slope along and 1 % across,
    sidewalks KERB higher, facades at the edges; returned in world coordinates with local s, d."""
    n = int(length * (left_edge - right_edge) * 400)
    s = rng.uniform(0, length, n)
    d = rng.uniform(right_edge, left_edge, n)
    z = 50.0 + 0.02 * s + 0.01 * d + np.where((d > left_kerb) | (d < right_kerb), KERB, 0.0)
    z += rng.normal(0, 0.005, n)
    cls = np.full(n, 2, dtype=np.uint8)
    # facades: building points on the edges
    fs = rng.uniform(0, length, 4000)
    fd = np.where(rng.random(4000) < 0.5, left_edge + 0.01, right_edge - 0.01)
    fz = 50.0 + 0.02 * fs + rng.uniform(0.2, 8.0, 4000)
    return {
        "s": np.concatenate([s, fs]),
        "d": np.concatenate([d, fd]),
        "z": np.concatenate([z, fz]),
        "cls": np.concatenate([cls, np.full(4000, 6, dtype=np.uint8)]),
        "angle": np.array(angle),
    }


def _add(street: dict[str, np.ndarray], s: np.ndarray, d: np.ndarray, h: np.ndarray, cls: int) -> None:
    """Points `h` above the carriageway's plane (the street's ground model without the kerb)."""
    street["s"] = np.concatenate([street["s"], s])
    street["d"] = np.concatenate([street["d"], d])
    street["z"] = np.concatenate([street["z"], 50.0 + 0.02 * s + 0.01 * d + h])
    street["cls"] = np.concatenate([street["cls"], np.full(len(s), cls, dtype=np.uint8)])


def _measure(street: dict[str, np.ndarray], p: StreetSpaceParams, length: float = 30.0):
    a = float(street["angle"])
    ux, uy = np.cos(a), np.sin(a)
    x = 362000.0 + street["s"] * ux - street["d"] * uy
    y = 5716000.0 + street["s"] * uy + street["d"] * ux
    axis = np.array([[362000.0, 5716000.0], [362000.0 + length * ux, 5716000.0 + length * uy]])
    seg = cut_axes([axis], p.segment_m)
    return seg, measure_street_space(seg, x, y, street["z"], street["cls"], p)


def test_crafted_street_widths_clearance_obstacles():
    rng = np.random.default_rng(1)
    st = _street(rng, left_kerb=3.0, right_kerb=-2.5, left_edge=5.0, right_edge=-4.5)
    # a branch 3.5 m over the carriageway in the second segment, a person (1.6 m) in the first
    k = 3000
    branch_h = rng.uniform(3.5, 4.2, k)
    branch_h[0] = 3.5
    _add(st, rng.uniform(12, 16, k), rng.uniform(-1, 1, k), branch_h, 5)
    _add(st, rng.uniform(4, 4.5, 200), rng.uniform(0, 0.4, 200), rng.uniform(0.2, 1.6, 200), 1)
    # an obstacle (a bin, a bollard) on the left sidewalk in the third segment: free 3.8 .. 5.0
    _add(st, rng.uniform(22, 23, 500), rng.uniform(3.0, 3.8, 500), KERB + rng.uniform(0.5, 1.0, 500), 1)
    p = StreetSpaceParams()
    seg, res = _measure(st, p)
    assert len(seg) == 3
    np.testing.assert_allclose(res["carriageway_width_m"], 5.5, atol=0.1)
    np.testing.assert_allclose(res["kerb_left_m"], 3.0, atol=0.06)
    np.testing.assert_allclose(res["kerb_right_m"], -2.5, atol=0.06)
    np.testing.assert_allclose(res["sidewalk_left_width_m"], 2.0, atol=0.1)
    np.testing.assert_allclose(res["sidewalk_right_width_m"], 2.0, atol=0.1)
    assert np.isnan(res["min_clearance_m"][0])  # the person is below min_overhead_m
    assert res["min_clearance_m"][1] == pytest.approx(3.5, abs=0.02)
    assert np.isnan(res["min_clearance_m"][2])
    assert res["free_sidewalk_left_m"][2] == pytest.approx(1.2, abs=0.1)
    np.testing.assert_allclose(res["free_sidewalk_left_m"][:2], 2.0, atol=0.1)
    judged, passable, reason = judge(res, p)
    assert judged.all()
    assert passable.tolist() == [True, False, True]
    assert "clearance 3.50 m < vehicle height 4.00 m" in reason[1]
    # a lower vehicle passes under the branch
    _, passable_low, _ = judge(res, StreetSpaceParams(vehicle_height_m=3.2))
    assert passable_low.all()


def test_crafted_narrow_street_not_passable_and_no_kerb_not_judged():
    rng = np.random.default_rng(2)
    st = _street(rng, left_kerb=1.0, right_kerb=-1.4, left_edge=3.0, right_edge=-3.0, length=12.0, angle=-1.2)
    p = StreetSpaceParams()
    _seg, res = _measure(st, p, 12.0)
    assert res["carriageway_width_m"][0] == pytest.approx(2.4, abs=0.1)
    judged, passable, reason = judge(res, p)
    assert judged[0] and not passable[0] and "carriageway 2.4" in reason[0]
    # a plaza without kerbs: nothing judged, and said so
    flat = _street(rng, left_kerb=99, right_kerb=-99, left_edge=6.0, right_edge=-6.0, length=12.0)
    _seg, res = _measure(flat, p, 12.0)
    judged, passable, reason = judge(res, p)
    assert not judged[0] and not passable[0] and "no kerb" in reason[0]


def test_axis_on_a_kerb_extension_finds_the_carriageway_beside_it():
    """A street parcel's centreline runs on a kerb extension (raised, like the sidewalk) that leaves
    2.3 m of carriageway on one side: the carriageway is found beyond the drop, not given up."""
    rng = np.random.default_rng(4)
    # carriageway from -3.0 to -0.7 (the extension covers -0.7 .. +3.0 and joins the left sidewalk)
    st = _street(rng, left_kerb=-0.7, right_kerb=-3.0, left_edge=5.0, right_edge=-5.0, length=12.0)
    p = StreetSpaceParams()
    _seg, res = _measure(st, p, 12.0)
    assert res["carriageway_width_m"][0] == pytest.approx(2.3, abs=0.06)
    assert res["kerb_left_m"][0] == pytest.approx(-0.7, abs=0.03)
    assert res["kerb_right_m"][0] == pytest.approx(-3.0, abs=0.03)
    assert res["sidewalk_left_width_m"][0] == pytest.approx(5.7, abs=0.06)  # extension + sidewalk
    assert res["sidewalk_right_width_m"][0] == pytest.approx(2.0, abs=0.06)
    judged, passable, reason = judge(res, p)
    assert judged[0] and not passable[0] and "carriageway 2.3" in reason[0]
    # the same street measured from its mirrored axis (direction reversed): the same carriageway
    mirrored = dict(st, d=-st["d"])
    _seg, res = _measure(mirrored, p, 12.0)
    assert res["carriageway_width_m"][0] == pytest.approx(2.3, abs=0.06)


def test_centrelines_of_street_areas():
    """A cross, a T and a dead end, clipped like a district edge: the medial axis without its spurs,
    extended to the street ends."""
    main = shapely.box(0, 0, 200, 16)  # centreline y = 8
    cross = shapely.box(90, -60, 102, 100)  # x = 96
    t_street = shapely.box(150, 16, 160, 60)  # x = 155, from the main street northwards
    lines = centrelines(shapely.union_all([main, cross, t_street]))
    again = centrelines(shapely.union_all([t_street, cross, main]))  # order-independent
    assert len(again) == len(lines) and all(np.array_equal(a, b) for a, b in zip(lines, again, strict=True))
    geoms = [shapely.LineString(c) for c in lines]
    allx = shapely.union_all(geoms)
    for ref in (
        shapely.LineString([(0, 8), (200, 8)]),
        shapely.LineString([(96, -60), (96, 100)]),
        shapely.LineString([(155, 8), (155, 60)]),
    ):
        # every stretch of the reference away from junctions lies on an axis (within 5 cm)
        for f in np.linspace(0.0, 1.0, 41):
            pt = ref.interpolate(f, normalized=True)
            if min(pt.distance(shapely.Point(96, 8)), pt.distance(shapely.Point(155, 8))) < 12:
                continue
            assert pt.distance(allx) < 0.05, (ref, f)
    # no spur: every axis point is at least 4 m (near half the narrowest street) from the outline
    outline = shapely.boundary(shapely.union_all([main, cross, t_street]))
    inner = [c[1:-1] for c in lines if len(c) > 2]
    for c in inner:
        assert (shapely.distance(outline, shapely.points(c)) > 4.0).all()
    # the free ends reach the street ends (the district edge)
    ends = np.array([c[i] for c in lines for i in (0, -1)])
    for end in ((0, 8), (200, 8), (96, -60), (96, 100), (155, 60)):
        assert np.hypot(*(ends - np.array(end)).T).min() < 0.05, end
    assert centrelines(shapely.Polygon()) == []


def test_point_grid_finds_every_point_of_a_box():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(362000, 362300, 20000), rng.uniform(5716000, 5716100, 20000)
    grid = _PointGrid(x, y, 10.0)
    for _ in range(50):
        x0, y0 = rng.uniform(361990, 362300), rng.uniform(5715990, 5716100)
        box = (x0, y0, x0 + rng.uniform(0, 60), y0 + rng.uniform(0, 60))
        got = grid.query(*box)
        inside = np.flatnonzero((x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3]))
        assert np.all(np.diff(got) > 0) and np.isin(inside, got).all()
        # only the cells the box touches: nothing farther than a cell from it
        assert (x[got] > box[0] - 10.0).all() and (x[got] < box[2] + 10.0).all()
    assert len(grid.query(0, 0, 1, 1)) == 0


def test_longest_free_and_cut_axes():
    occ = np.array([[0, 0, 1, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=bool)
    assert _longest_free(occ).tolist() == [3, 0, 7]
    seg = cut_axes([np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 15.0]])], 10.0)
    assert seg.station.tolist() == [0.0, 10.0, 20.0]
    np.testing.assert_allclose(seg.length, [10.0, 10.0, 5.0])
    np.testing.assert_allclose(seg.x0, [0.0, 10.0, 10.0])
    np.testing.assert_allclose(seg.y0, [0.0, 0.0, 10.0])


def test_kernels_equal_the_numpy_reference():
    """The numba kernels give the numpy reference's values: medians bit for bit, plane fits to rounding."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        m = rng.normal(0, 0.1, 200)
        m[rng.random(200) < rng.uniform(0, 0.9)] = np.nan
        w = int(rng.integers(1, 9))
        cov = float(rng.uniform(0.2, 1.0))
        for after in (True, False):
            np.testing.assert_array_equal(
                K.window_median(m, w, after, max(1.0, cov * w)), _window_median(m, w, after, cov)
            )
    n = 5000
    s, d = rng.uniform(0, 10, n), rng.uniform(-20, 20, n)
    z = 50 + 0.03 * s - 0.01 * d + rng.normal(0, 0.02, n)
    cls = rng.choice(np.array([1, 2, 6, 7], dtype=np.uint8), n)
    p = StreetSpaceParams(bin_m=0.5)  # 80 bins: a few points each
    flags = class_flags(cls, p)
    ground = cls == 2
    assert ((flags & K.GROUND) != 0).tolist() == ground.tolist()
    assert ((flags & K.BUILDING) != 0).tolist() == (cls == 6).tolist()
    assert (flags == 0).tolist() == (cls == 1).tolist()
    c0, c1, c2, count, ok = K.plane_fit(s, d, z, ground)
    A = np.column_stack([np.ones(ground.sum()), s[ground], d[ground]])
    np.testing.assert_allclose([c0, c1, c2], np.linalg.lstsq(A, z[ground], rcond=None)[0], atol=1e-10)
    assert ok and count == ground.sum()
    # collinear ground (one lateral offset) is no plane: the caller falls back to lstsq
    assert not K.plane_fit(s, np.full(n, 1.5), z, ground)[4]
    nb = round(2 * p.max_half_width_m / p.bin_m)
    gb = np.clip(((d[ground] + 20) / p.bin_m).astype(np.int64), 0, nb - 1)
    for min_count in (1, 3, 40):
        np.testing.assert_array_equal(
            K.ground_profile(s, d, z, flags, c1, 20.0, p.bin_m, nb, min_count),
            _bin_medians(gb, z[ground] - c1 * s[ground], nb, min_count),
        )
    # the free run across a sidewalk: the kernel's occupancy against _longest_free of the same bins
    a, b, nslice, nbin = 2.0, 6.0, 10, 80
    free = K.free_sidewalk(s, d, z, flags, a, b, 10.0, c0, c1, c2, 0.01, 2.5, 1.0, nslice, 0.05, nbin)
    cand = ((flags == 0) | ((flags & K.BUILDING) != 0)) & (d > a) & (d < b)
    h = z[cand] - (c0 + c1 * s[cand] + c2 * d[cand])
    ob = (h >= 0.01) & (h <= 2.5)
    occ = np.zeros((nslice, nbin), dtype=bool)
    occ[
        np.clip((s[cand][ob] / 1.0).astype(int), 0, nslice - 1),
        np.clip(((d[cand][ob] - a) / 0.05).astype(int), 0, nbin - 1),
    ] = True
    assert free == _longest_free(occ).min() and 0 < free < nbin


def test_point_bins_and_segment_gather():
    """`bin_points` keeps the input order within a cell; `gather_segment` finds exactly the points of the
    rectangle, cell by cell (row-major) and in input order within a cell."""
    rng = np.random.default_rng(3)
    x, y = rng.uniform(100, 160, 30000), rng.uniform(200, 240, 30000)
    col, row = K.cell_columns(x, 100.0, 2.5), K.cell_columns(y, 200.0, 2.5)
    nx, ny = int(col.max()) + 1, int(row.max()) + 1
    order, starts = K.bin_points(col, row, nx, ny)
    key = row * nx + col
    np.testing.assert_array_equal(order, np.argsort(key, kind="stable"))
    for ang in (0.0, 0.7, 2.9, -1.3):
        ux, uy = np.cos(ang), np.sin(ang)
        idx, s, d = K.gather_segment(
            order, starts, 100.0, 200.0, 2.5, 0, 0, nx, ny, x, y, 130.0, 220.0, ux, uy, 10.0, 8.0
        )
        dx, dy = x - 130.0, y - 220.0
        s_all, d_all = dx * ux + dy * uy, -dx * uy + dy * ux
        inside = (s_all >= 0) & (s_all < 10.0) & (np.abs(d_all) < 8.0)
        expect = np.flatnonzero(inside)
        expect = expect[np.lexsort((expect, key[expect]))]
        np.testing.assert_array_equal(idx, expect)
        np.testing.assert_array_equal(s, s_all[expect])
        np.testing.assert_array_equal(d, d_all[expect])


def test_corridor_cells_decide_like_the_point_test():
    """A point cell classed wholly inside (outside) the corridor holds only points inside (outside) it,
    however close to the cell's edges; only outline cells need the point test."""
    from pipeline.orchestrate.street_space import INSIDE, OUTLINE, OUTSIDE, CellGrid, corridor_cells
    from pipeline.stages._street_space_kernels import cell_columns

    axes = [np.array([[1000.0, 1000.0], [1180.0, 1090.0]]), np.array([[1050.0, 1200.0], [1060.0, 1010.0]])]
    corridor = shapely.union_all([shapely.buffer(shapely.LineString(a), 30.0) for a in axes])
    grid = CellGrid(950.0, 950.0, 6, 6)
    cls = corridor_cells(grid, corridor)
    assert {INSIDE, OUTSIDE, OUTLINE} == set(np.unique(cls).tolist())
    rng = np.random.default_rng(7)
    # random points, and points on and a hair beside the cell edges
    x = np.concatenate([rng.uniform(950, 1250, 200_000), 950 + 2.5 * rng.integers(0, 120, 50_000) + 1e-9])
    y = np.concatenate([rng.uniform(950, 1250, 200_000), 950 + 2.5 * rng.integers(0, 120, 50_000) - 1e-9])
    col, row = cell_columns(x, grid.x0, 2.5), cell_columns(y, grid.y0, 2.5)
    ok = (col >= 0) & (col < cls.shape[1]) & (row >= 0) & (row < cls.shape[0])
    side = cls[row[ok], col[ok]]
    inside = shapely.contains_xy(corridor, x[ok], y[ok])
    assert inside[side == INSIDE].all() and not inside[side == OUTSIDE].any()
    assert (side == OUTLINE).mean() < 0.2


def test_corridor_points_and_pack_by_cell_equal_numpy():
    """The read task's kernels: the points of a chunk near the corridor (their point cell from the
    reader's `X * scale + offset`, not OUTSIDE, in a wanted cell) and their records sorted stably by cell,
    as numpy computes them from the float coordinates."""
    from pipeline.orchestrate.street_space import CELL_POINT_CELLS, INSIDE, OUTLINE, CellGrid, corridor_cells

    axes = [np.array([[1000.0, 1000.0], [1180.0, 1090.0]]), np.array([[1050.0, 1200.0], [1060.0, 1010.0]])]
    corridor = shapely.union_all([shapely.buffer(shapely.LineString(a), 30.0) for a in axes])
    grid = CellGrid(950.0, 950.0, 6, 6)
    side = corridor_cells(grid, corridor)
    wanted = np.zeros(grid.nx * grid.ny, dtype=bool)
    wanted[[0, 3, 7, 8, 9, 14, 20, 21, 28, 35]] = True
    rng = np.random.default_rng(11)
    n = 300_000
    scale, offset = (0.01, 0.01), (900.0, 940.001)
    # raw integers of points around (and beyond) the grid, some exactly on cell edges
    X = rng.integers(0, 40_000, n).astype(np.int32)
    Y = rng.integers(0, 35_000, n).astype(np.int32)
    X[:5000] = ((950.0 + 2.5 * rng.integers(0, 120, 5000) - offset[0]) / scale[0]).round().astype(np.int32)
    Z = rng.integers(-1000, 100_000, n).astype(np.int32)
    c = rng.integers(0, 20, n).astype(np.uint8)
    x, y = X * np.float64(scale[0]) + np.float64(offset[0]), Y * np.float64(scale[1]) + np.float64(offset[1])
    col, row = K.cell_columns(x, grid.x0, 2.5), K.cell_columns(y, grid.y0, 2.5)
    ok = (col >= 0) & (col < side.shape[1]) & (row >= 0) & (row < side.shape[0])
    expect = np.flatnonzero(ok)
    cell = (row[expect] // CELL_POINT_CELLS) * grid.nx + col[expect] // CELL_POINT_CELLS
    s = side[row[expect], col[expect]]
    near = (s != 0) & wanted[cell]
    expect, cell, s = expect[near], cell[near], s[near]
    nrow, ncol = side.shape
    so = [v for pair in zip(scale, offset, strict=True) for v in pair]
    args = (*so, grid.x0, grid.y0, 2.5, ncol, nrow, CELL_POINT_CELLS, wanted)
    idx, cells, outline, strays = K.corridor_points(X, Y, *args, 0, 0, side)
    np.testing.assert_array_equal(idx, expect)
    np.testing.assert_array_equal(cells, cell)
    np.testing.assert_array_equal(outline, s == OUTLINE)
    assert len(idx) > 1000 and outline.any() and (s == INSIDE).any() and strays == 0
    # a window of the classes: the points beyond it are counted, not decided; those within it as before
    mc, mr = int(np.median(col[expect])), int(np.median(row[expect]))  # a window about the kept points
    c0, r0, c1, r1 = max(mc - 6, 0), max(mr - 9, 0), min(mc + 5, ncol), min(mr + 4, nrow)
    in_window = (col[expect] >= c0) & (col[expect] < c1) & (row[expect] >= r0) & (row[expect] < r1)
    idx_w, cells_w, outline_w, strays = K.corridor_points(X, Y, *args, c0, r0, side[r0:r1, c0:c1])
    np.testing.assert_array_equal(idx_w, expect[in_window])
    np.testing.assert_array_equal(cells_w, cell[in_window])
    np.testing.assert_array_equal(outline_w, (s == OUTLINE)[in_window])
    wanted_pt = ok.copy()
    wanted_pt[ok] = wanted[(row[ok] // CELL_POINT_CELLS) * grid.nx + col[ok] // CELL_POINT_CELLS]
    beyond = ~((col >= c0) & (col < c1) & (row >= r0) & (row < r1))
    assert strays == int((wanted_pt & beyond).sum()) > 0 and 0 < len(idx_w) < len(idx)
    rec = np.empty(len(idx), dtype=[("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("c", "u1")])
    count = K.pack_by_cell(idx, cells, grid.nx * grid.ny, X, Y, Z, c, *(rec[f] for f in "XYZc"))
    np.testing.assert_array_equal(count, np.bincount(cells, minlength=grid.nx * grid.ny))
    order = idx[np.argsort(cells, kind="stable")]
    for f, v in zip("XYZc", (X, Y, Z, c), strict=True):
        np.testing.assert_array_equal(rec[f], v[order])


def test_corridor_window_is_the_whole_grids_part():
    """A file's window of the corridor (its header bounds, one cell more) classes its point cells as the
    whole grid does, and its clipped corridor decides every point in them as the whole corridor."""
    from pipeline.orchestrate.street_space import CellGrid, corridor_cells, corridor_window

    axes = [np.array([[1000.0, 1000.0], [1180.0, 1090.0]]), np.array([[1050.0, 1200.0], [1060.0, 1010.0]])]
    corridor = shapely.union_all([shapely.buffer(shapely.LineString(a), 30.0) for a in axes])
    grid = CellGrid(950.0, 950.0, 6, 6)
    whole = corridor_cells(grid, corridor)
    assert corridor_window(grid, corridor).side.shape == whole.shape == (120, 120)
    rng = np.random.default_rng(5)
    for mins, maxs in (
        ((1003.7, 1041.2, 0.0), (1099.99, 1160.0, 9.0)),
        ((900.0, 900.0, 0), (1400.0, 980.0, 0)),
    ):
        w = corridor_window(grid, corridor, (mins, maxs))
        rows, cols = w.side.shape
        c0, r0 = int((mins[0] - 950.0) // 2.5) - 1, int((mins[1] - 950.0) // 2.5) - 1
        assert (w.col0, w.row0) == (max(c0, 0), max(r0, 0)) and rows * cols < whole.size
        np.testing.assert_array_equal(w.side, whole[w.row0 : w.row0 + rows, w.col0 : w.col0 + cols])
        x = rng.uniform(950.0 + 2.5 * w.col0, 950.0 + 2.5 * (w.col0 + cols), 100_000)
        y = rng.uniform(950.0 + 2.5 * w.row0, 950.0 + 2.5 * (w.row0 + rows), 100_000)
        inside = shapely.contains_xy(corridor, x, y)
        assert inside.any() and not inside.all()
        np.testing.assert_array_equal(shapely.contains_xy(w.corridor, x, y), inside)
    beside = corridor_window(grid, corridor, ((2000.0, 2000.0, 0.0), (2100.0, 2100.0, 0.0)))
    assert beside.side.shape == (0, 0)


# ---- the demo district against its truth ---------------------------------------------------------


@pytest.fixture(scope="module")
def demo_street(tmp_path_factory):
    from pipeline.sources.demo.generate import generate_demo

    out = tmp_path_factory.mktemp("street") / "raw"
    # the demo's default mobile density (about 130 ground returns per m2 within 5 m of a track)
    generate_demo(out, size_m=200, tile_m=100, density=2, progress=False, panorama_images=0)
    return out


CADASTRE = "alkis/alkis_vereinfacht_demo.gpkg"


def _demo_axes(raw, source: str) -> list[np.ndarray]:
    if source == "tracks":
        return track_axes([raw / "mobile" / "panoramas.csv"], 30.0)
    areas = street_areas(
        [raw / CADASTRE], "alkis_gpkg", None, "nutzart", ["Straßenverkehr", "Weg"], None, "EPSG:25832"
    )
    assert areas is not None and len(areas) > 5
    return centrelines(shapely.union_all(areas.geometry.values))


def test_demo_cadastre_axes_are_the_street_centrelines(demo_street):
    """The centrelines of the demo's street parcels run on the streets' centrelines (the truth's
    stations) within 1 cm, except within 10 m of a junction (where the medial axis bends towards the
    junction's centre: those segments are junction segments anyway)."""
    axes = _demo_axes(demo_street, "cadastre")
    truth = pd.read_csv(demo_street / "truth" / "street_space.csv")
    junction = truth["junction"].astype(bool).to_numpy()
    near_junction = np.zeros(len(truth), dtype=bool)
    for _street, rows in truth.groupby("street").groups.items():
        idx = np.asarray(rows)
        js = truth["s"].to_numpy()[idx][junction[idx]]
        if len(js):
            near_junction[idx] = np.abs(truth["s"].to_numpy()[idx][:, None] - js[None, :]).min(axis=1) < 10.0
    t = truth[~near_junction]
    d = shapely.distance(
        shapely.union_all([shapely.LineString(a) for a in axes]), shapely.points(t["x"], t["y"])
    )
    assert len(t) >= 0.6 * len(truth) and t["street"].nunique() == truth["street"].nunique()
    assert d.max() < 0.01, np.sort(d)[-5:]


@pytest.mark.parametrize("source", ["tracks", "cadastre"])
def test_demo_widths_and_clearances_match_truth(demo_street, source, tmp_path):
    raw = demo_street
    p = StreetSpaceParams()
    axes = _demo_axes(raw, source)
    seg = cut_axes(axes, p.segment_m)
    files = sorted((raw / "mobile").glob("*.laz"))
    res, _n, _tiles = measure_from_files(seg, axes, files, p, work_dir=tmp_path, budget=2**31)
    gdf = segments_frame(seg, res, p, "EPSG:25832")
    truth = pd.read_csv(raw / "truth" / "street_space.csv")
    pts = shapely.points(truth["x"], truth["y"])
    # truth stations (on the centreline, 1.8 m beside the track) within 5 m of a segment's axis
    x1, y1 = seg.x0 + seg.ux * seg.length, seg.y0 + seg.uy * seg.length
    nx, ny = -seg.uy * 5.0, seg.ux * 5.0
    rings = np.stack(
        [
            np.column_stack([seg.x0 - nx, seg.y0 - ny]),
            np.column_stack([x1 - nx, y1 - ny]),
            np.column_stack([x1 + nx, y1 + ny]),
            np.column_stack([seg.x0 + nx, seg.y0 + ny]),
        ],
        axis=1,
    )
    seg_idx, tr_idx = shapely.STRtree(pts).query(shapely.polygons(rings), predicate="contains")
    width_err, clear_err = [], []
    compared_low = narrow_truth = narrow_found = compared = judged = 0
    for i in range(len(gdf)):
        t = truth.iloc[tr_idx[seg_idx == i]]
        if len(t) < 10 or t["junction"].any() or gdf["length_m"].iloc[i] < 10:
            continue
        g = gdf.iloc[i]
        if t["carriageway_width_m"].nunique() > 1:  # a segment across the end of a kerb extension
            continue
        narrow_truth += t["carriageway_width_m"].iloc[0] < p.vehicle_width_m
        narrow_found += g["status"] in ("too_narrow", "too_narrow_and_low")
        compared += 1
        judged += bool(g["judged"])
        # left / right are of the axis' direction; the truth's of the driving direction
        ts = t.sort_values("s")
        flip = (ts["x"].iloc[-1] - ts["x"].iloc[0]) * seg.ux[i] + (
            ts["y"].iloc[-1] - ts["y"].iloc[0]
        ) * seg.uy[i] < 0
        sides = ("right", "left") if flip else ("left", "right")
        for col, tcol in (
            ("carriageway_width_m", "carriageway_width_m"),
            ("sidewalk_left_width_m", f"sidewalk_{sides[0]}_width_m"),
            ("sidewalk_right_width_m", f"sidewalk_{sides[1]}_width_m"),
        ):
            width_err.append(abs(g[col] - t[tcol].iloc[0]))
        # clearance: compared where the truth's minimum does not lie in a slice cut by the segment's ends
        # (the truth's 0.5 m slices do not align with the segments). The minimum usually lies on the kerb
        # line (a street tree's crown edge reaching over the road): clearance_inner_m shows how steeply
        cl = t["clearance_m"].to_numpy()
        true_cl = np.nanmin(cl) if np.isfinite(cl).any() else np.nan
        if np.isnan(true_cl):
            assert np.isnan(g["min_clearance_m"]) or g["min_clearance_m"] > 4.5, (i, g["min_clearance_m"])
            continue
        robust = np.isfinite(cl[1:-1]).any() and abs(np.nanmin(cl[1:-1]) - true_cl) < 0.02
        if robust:
            clear_err.append(g["min_clearance_m"] - true_cl)
            compared_low += true_cl < 4.0
    width_err, clear_err = np.array(width_err), np.array(clear_err)
    print(
        f"{source}: {int(gdf['judged'].sum())}/{len(gdf)} segments judged, {judged}/{compared} outside "
        f"junctions; widths: n={len(width_err)} mean {width_err.mean():.3f} max {width_err.max():.3f}; "
        f"clearances: n={len(clear_err)} ({compared_low} below 4 m) mean {clear_err.mean():+.3f} "
        f"max |{np.abs(clear_err).max():.3f}|"
    )
    # at the default density every segment outside junctions is judged, most of all segments too
    assert judged == compared >= 45, (judged, compared)
    assert gdf["judged"].mean() >= 0.85, gdf["status"].value_counts()
    assert len(width_err) >= 3 * 45, len(width_err)
    assert np.nanmax(width_err) <= 0.2 + 1e-9, np.sort(width_err)[-5:]
    assert np.isfinite(width_err).all()
    assert len(clear_err) >= 15 and compared_low >= 10, (len(clear_err), compared_low)
    assert np.abs(clear_err).max() <= 0.1, np.sort(clear_err)[-5:]
    # low branches make segments impassable for the 4 m vehicle, and so do the kerb extensions (2.3 m)
    assert (gdf["status"] == "too_low").sum() >= 5
    assert narrow_truth >= 2 and narrow_found == narrow_truth, (narrow_truth, narrow_found)


@pytest.mark.parametrize("source", ["tracks", "cadastre"])
def test_partitioned_equals_one_piece(demo_street, source, tmp_path, monkeypatch):
    """Per-file spill tasks and per-tile measuring tasks give exactly what one read of every point and
    one measurement of all segments give, whatever the tiling (budget), the read tasks per file and the
    executor."""
    import pipeline.orchestrate.street_space as orchestrate
    from tests._points_reference import read_points

    raw = demo_street
    p = StreetSpaceParams()
    axes = _demo_axes(raw, source)
    seg = cut_axes(axes, p.segment_m)
    files = sorted((raw / "mobile").glob("*.laz"))
    assert len(files) == 4
    parts = [read_points(f) for f in files]
    x, y, z, c = (np.concatenate([q[k] for q in parts]) for k in ("x", "y", "z", "classification"))
    whole = measure_street_space(seg, x, y, z, c, p)
    corridor = shapely.union_all(
        [shapely.buffer(shapely.LineString(a), p.max_half_width_m + p.segment_m) for a in axes]
    )
    in_corridor = int(shapely.contains_xy(corridor, x, y).sum())
    tiles_seen = set()
    with concurrent.futures.ProcessPoolExecutor(2) as pool:  # (the build's workers are processes)
        for budget, executor, workers in ((1, None, 1), (2**31, pool, 2), (200 * 2**20, pool, 2)):
            # the last run reads every file in several tasks (of about 3 LAZ chunks)
            monkeypatch.setattr(orchestrate, "READ_TASK_POINTS", 150_000 if budget < 2**31 else 8_000_000)
            res, npoints, ntiles = measure_from_files(
                seg, axes, files, p, work_dir=tmp_path, budget=budget, executor=executor, workers=workers
            )
            tiles_seen.add(ntiles)
            assert npoints <= in_corridor and npoints > 0.9 * in_corridor
            for k in whole:
                np.testing.assert_array_equal(res[k], whole[k], err_msg=k)
    assert len(tiles_seen) >= 2 and max(tiles_seen) >= 9  # really partitioned, in different ways
    assert list(tmp_path.iterdir()) == []  # the spill files are gone


def test_points_beyond_the_header_bounds_are_read_again(demo_street, tmp_path):
    """A file whose header bounds are too small (its read tasks get the corridor of the header's extent
    only) is read again with the whole grid: the same measurements as from the honest files."""
    import shutil

    raw = demo_street
    p = StreetSpaceParams()
    axes = _demo_axes(raw, "tracks")
    seg = cut_axes(axes, p.segment_m)
    files = sorted((raw / "mobile").glob("*.laz"))
    honest, _n, _t = measure_from_files(seg, axes, files, p, work_dir=tmp_path / "a", budget=2**31)
    liars = []
    for f in files:
        liars.append(tmp_path / f.name)
        shutil.copy2(f, liars[-1])
    with laspy.open(liars[0]) as r:
        mins, maxs = r.header.mins, r.header.maxs
    # the header says the file ends 40 m short of its east edge (and 30 m of its north edge)
    _patch_header_bounds(liars[0], xmax=float(maxs[0]) - 40.0, ymax=float(maxs[1]) - 30.0)
    with laspy.open(liars[0]) as r:
        assert r.header.maxs[0] == maxs[0] - 40.0 and r.header.mins[0] == mins[0]
    got, npoints, _t = measure_from_files(seg, axes, liars, p, work_dir=tmp_path / "b", budget=2**31)
    assert npoints > 0
    for k in honest:
        np.testing.assert_array_equal(got[k], honest[k], err_msg=k)
    assert list((tmp_path / "b").iterdir()) == []


def _patch_header_bounds(path, xmax: float, ymax: float) -> None:
    """Overwrite a LAS header's max x (offset 179) and max y (195)."""
    import struct

    with open(path, "r+b") as f:
        f.seek(179)
        f.write(struct.pack("<d", xmax))
        f.seek(195)
        f.write(struct.pack("<d", ymax))


@pytest.mark.parametrize("source", ["tracks", "cadastre"])
def test_kernels_equal_the_reference_on_the_demo(demo_street, source):
    """Every segment of the demo measured by the kernels and by the pure-numpy reference: the same kerbs,
    widths and counts, clearances equal to the rounding of the plane fits (normal equations vs lstsq)."""
    from tests._points_reference import read_points

    p = StreetSpaceParams()
    axes = _demo_axes(demo_street, source)
    seg = cut_axes(axes, p.segment_m)
    parts = [read_points(f) for f in sorted((demo_street / "mobile").glob("*.laz"))]
    x, y, z, c = (np.concatenate([q[k] for q in parts]) for k in ("x", "y", "z", "classification"))
    fast = measure_street_space(seg, x, y, z, c, p)
    ref = measure_street_space_reference(seg, x, y, z, c, p)
    assert np.isfinite(fast["carriageway_width_m"]).sum() > 0.8 * len(seg)
    for k in ref:
        np.testing.assert_array_equal(np.isnan(fast[k]), np.isnan(ref[k]), err_msg=k)
        np.testing.assert_allclose(fast[k], ref[k], rtol=0, atol=1e-9, err_msg=k)


def test_build_layer_writes_styled_internal_gpkg(demo_street, tmp_path):
    raw = demo_street
    cfg = TwinConfig.model_validate(
        {
            "name": "t",
            "paths": {"raw": str(raw), "out": str(tmp_path / "out")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": {"mobile": {"points": "mobile/*.laz", "panoramas": "mobile/panoramas.csv"}},
        }
    )
    inputs = [SimpleNamespace(role="panoramas", path=raw / "mobile" / "panoramas.csv")]
    inputs += [SimpleNamespace(role="mobile", path=f) for f in sorted((raw / "mobile").glob("*.laz"))]
    ctx = SimpleNamespace(
        cfg=cfg,
        inputs=inputs,
        release_dir=tmp_path / "rel",
        stage=lambda name: contextlib.nullcontext(),
        client=None,
        progress=lambda *a: None,
    )
    (result,) = build_street_space_layers(ctx, [])
    assert result.access == "internal"
    assert result.stats["axes"] == "tracks"  # no cadastre configured
    gpkg = tmp_path / "rel" / OUT_FILE
    gdf = gpd.read_file(gpkg, layer="street_space")
    assert len(gdf) == result.stats["segments"] > 50
    for col in (
        "carriageway_width_m",
        "sidewalk_left_width_m",
        "sidewalk_right_width_m",
        "min_clearance_m",
        "free_sidewalk_width_m",
        "passable",
        "reason",
    ):
        assert col in gdf.columns
    assert set(gdf["status"]) <= {"passable", "too_low", "too_narrow", "too_narrow_and_low", "not_judged"}
    assert (gdf.loc[~gdf["passable"], "reason"].str.len() > 0).all()
    with sqlite3.connect(gpkg) as con:
        (qml,) = con.execute(
            "SELECT styleQML FROM layer_styles WHERE f_table_name = 'street_space'"
        ).fetchone()
    assert 'attr="status"' in qml and "too_low" in qml
    assert (gpkg.parent / "street_space.qml").is_file()
    assert params_of(cfg.layers.street_space) == StreetSpaceParams()


def _ctx(raw, tmp_path, street_space: dict, cadastre: str | None = CADASTRE):
    sources: dict = {"mobile": {"points": "mobile/*.laz", "panoramas": "mobile/panoramas.csv"}}
    if cadastre:
        sources["cadastre"] = {"path": cadastre}
    cfg = TwinConfig.model_validate(
        {
            "name": "t",
            "paths": {"raw": str(raw), "out": str(tmp_path / "out")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": sources,
            "layers": {"street_space": street_space},
        }
    )
    inputs = [SimpleNamespace(role="panoramas", path=raw / "mobile" / "panoramas.csv")]
    inputs += [SimpleNamespace(role="mobile", path=f) for f in sorted((raw / "mobile").glob("*.laz"))]
    if cadastre:
        inputs.append(SimpleNamespace(role="cadastre", path=raw / cadastre))
    return SimpleNamespace(
        cfg=cfg,
        inputs=inputs,
        release_dir=tmp_path / "rel",
        stage=lambda name: contextlib.nullcontext(),
        client=None,
        progress=lambda *a: None,
    )


def test_build_layer_axes_from_the_cadastre(demo_street, tmp_path):
    """`auto` takes the cadastre's street parcels when it has them; `cadastre` refuses a cadastre
    without land use, `auto` then falls back to the tracks and says so."""
    import pyogrio

    (result,) = build_street_space_layers(_ctx(demo_street, tmp_path, {}), [])
    assert result.stats["axes"] == "cadastre" and result.stats["axis_lines"] > result.stats["tracks"] == 4
    gdf = gpd.read_file(tmp_path / "rel" / OUT_FILE, layer="street_space")
    assert len(gdf) == result.stats["segments"] > 50
    assert gdf["judged"].mean() > 0.85
    assert {"too_narrow", "too_low"} <= set(gdf["status"])
    # a cadastre without a land-use layer
    bare = demo_street / "alkis" / "parcels_only.gpkg"
    pyogrio.write_dataframe(
        gpd.read_file(demo_street / CADASTRE, layer="Flurstueck"), bare, layer="Flurstueck"
    )
    try:
        with pytest.raises(InputError, match="no land-use areas"):
            build_street_space_layers(
                _ctx(demo_street, tmp_path, {"axes": "cadastre"}, "alkis/parcels_only.gpkg"), []
            )
        (result,) = build_street_space_layers(
            _ctx(demo_street, tmp_path / "b", {"street_uses": ["Weg"]}, CADASTRE), []
        )
        assert result.stats["axes"] == "tracks" and "axes from the scan tracks" in result.warnings[0]
    finally:
        bare.unlink()
    with pytest.raises(ConfigError, match=r"needs sources\.cadastre"):
        build_street_space_layers(_ctx(demo_street, tmp_path, {"axes": "cadastre"}, None), [])


def test_config_thresholds():
    cfg = TwinConfig.model_validate(
        {
            "name": "t",
            "paths": {"raw": "r", "out": "o"},
            "layers": {"street_space": {"vehicle_height_m": 3.0}},
        }
    )
    assert cfg.layers.street_space.vehicle_height_m == 3.0
    assert cfg.layers.street_space.access == "internal"
    with pytest.raises(ValueError):
        TwinConfig.model_validate(
            {"name": "t", "paths": {"raw": "r", "out": "o"}, "layers": {"street_space": {"bin_m": 0}}}
        )
    assert cfg.layers.street_space.axes == "auto"
    assert cfg.layers.street_space.street_uses == ["Straßenverkehr", "Weg"]
    with pytest.raises(ValueError):
        TwinConfig.model_validate(
            {"name": "t", "paths": {"raw": "r", "out": "o"}, "layers": {"street_space": {"axes": "osm"}}}
        )


def test_an_area_whose_axis_is_all_spurs_has_no_centreline():
    """A square street parcel (a plaza): every branch of its medial axis runs into a corner and is pruned.
    That left nothing to merge and the build failed with an internal error (the 4 km² demo's cadastre has
    such a parcel); now the area gives no centreline and the others keep theirs."""
    from pipeline.stages.street_space import centrelines

    assert centrelines(shapely.box(0, 0, 10, 10)) == []
    lines = centrelines(shapely.union_all([shapely.box(0, 0, 10, 10), shapely.box(20, 0, 120, 10)]))
    assert len(lines) == 1 and lines[0][:, 1].min() == lines[0][:, 1].max() == 5.0
