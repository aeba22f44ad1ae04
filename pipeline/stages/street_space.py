"""Street space from mobile-mapping scans: per segment of a street axis, the carriageway and sidewalk
widths, the lowest overhead clearance above the carriageway and the free sidewalk width.

Pure numpy on plain arrays (no Dask, no I/O); docs/overlays.md, "Street space", describes the method:

* the axis is cut into straight pieces of `segment_m` (10 m); every point is expressed in the piece's
  frame: `s` along (0..length), `d` across (+ left of the direction of travel);
* kerbs: the lateral profile of the ground points (median height per `bin_m` bin) is searched outwards
  from the axis for the first rise of `kerb_min_m`..`kerb_max_m` between the `kerb_window_m` windows on
  either side of a bin edge (a local difference, so the terrain's cross slope does not count);
* a sidewalk ends where its profile steps again (up or down by `edge_step_m`: a wall foot, a garden,
  a lower parking area), where the ground coverage ends (a facade stops the scanner's rays) or where
  building points stand;
* clearance: the lowest non-ground point between the kerbs at least `min_overhead_m` above the
  carriageway (a plane fitted to the carriageway's ground points); lower returns are vehicles and people;
* obstacles: non-ground points `obstacle_min_m`..`obstacle_max_m` above the sidewalk; the free width is the
  longest unobstructed run across the sidewalk, the smallest over the segment's `slice_m` slices.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import shapely

from pipeline.stages import _street_space_kernels as K

# the measurement's point grid (m) and the snap of its origin (a multiple of it: the orchestration's
# partitioning cells are multiples of the point cells, counted from the same origin)
POINT_CELL_M = 2.5
GRID_SNAP_M = 50.0


@dataclass(frozen=True)
class StreetSpaceParams:
    segment_m: float = 10.0
    max_half_width_m: float = 20.0
    bin_m: float = 0.05
    min_bin_points: int = 3
    kerb_window_m: float = 0.3
    window_coverage: float = 0.8  # share of a window's bins that must have ground (else: no step there)
    kerb_min_m: float = 0.06
    kerb_max_m: float = 0.25
    edge_step_m: float = 0.06
    coverage_gap_m: float = 0.3
    fallback_half_width_m: float = 3.0
    min_overhead_m: float = 2.0
    clearance_margin_m: float = 0.025
    obstacle_min_m: float = 0.3
    obstacle_max_m: float = 2.5
    slice_m: float = 1.0
    vehicle_width_m: float = 2.55
    vehicle_height_m: float = 4.0
    ground_classes: tuple[int, ...] = (2,)
    building_classes: tuple[int, ...] = (6,)
    ignored_classes: tuple[int, ...] = (7, 18)


@dataclass
class Segments:
    """Straight pieces of axes: start (x0, y0), unit direction (ux, uy), length, axis id, start station."""

    x0: np.ndarray
    y0: np.ndarray
    ux: np.ndarray
    uy: np.ndarray
    length: np.ndarray
    axis: np.ndarray
    station: np.ndarray

    def __len__(self) -> int:
        return len(self.x0)

    def take(self, idx: np.ndarray) -> Segments:
        """The segments at `idx`, in that order."""
        return Segments(*(np.asarray(getattr(self, f.name))[idx] for f in fields(self)))


RESULT_COLUMNS = (
    "carriageway_width_m",
    "kerb_left_m",
    "kerb_right_m",
    "sidewalk_left_width_m",
    "sidewalk_right_width_m",
    "min_clearance_m",
    "free_sidewalk_left_m",
    "free_sidewalk_right_m",
    "ground_points",
    "overhead_points",
)


def centrelines(
    areas: shapely.Geometry, spacing_m: float = 0.5, corner_m: float = 1.0, simplify_m: float = 0.05
) -> list[np.ndarray]:
    """Centrelines (n, 2) of street areas (polygons, e.g. the cadastre's parcels of street use): the
    medial axis of their union, from the Voronoi diagram of the outlines sampled every `spacing_m`.

    The Voronoi edges that lie wholly inside the area form the medial axis. Its spurs (the branches into
    the convex corners of the outline: a street's end, a kink of a parcel boundary) are pruned: a branch
    whose free end comes within `corner_m` of the outline is dropped, until none is left. A street's end
    (after its corner spurs are gone, the axis stops half a width before it) is then extended along the
    axis' last direction to the outline. Lines run between junctions and free ends; sorted (by their
    first point) for determinism."""
    out: list[np.ndarray] = []
    merged = shapely.union_all(areas)
    for poly in shapely.get_parts(merged):
        if not isinstance(poly, shapely.Polygon) or poly.is_empty or poly.area <= 0:
            continue
        poly = shapely.set_precision(poly, 0.001)
        ring_pts = shapely.get_coordinates(shapely.segmentize(shapely.boundary(poly), spacing_m))
        ring_pts = np.unique(np.round(ring_pts, 3), axis=0)
        if len(ring_pts) < 4:
            continue
        edges = shapely.get_parts(
            shapely.voronoi_polygons(shapely.multipoints(ring_pts), only_edges=True, tolerance=0.0)
        )
        shapely.prepare(poly)
        inside = edges[shapely.contains_properly(poly, edges)]
        if not len(inside):
            continue
        boundary = shapely.boundary(poly)
        lines = list(shapely.get_parts(shapely.line_merge(shapely.multilinestrings(inside))))
        while True:  # prune spurs until none is left
            ends: dict[tuple[float, float], int] = {}
            for ln in lines:
                c = shapely.get_coordinates(ln)
                for pt in (tuple(np.round(c[0], 6)), tuple(np.round(c[-1], 6))):
                    ends[pt] = ends.get(pt, 0) + 1
            keep = []
            dropped = False
            for ln in lines:
                c = shapely.get_coordinates(ln)
                a, b = tuple(np.round(c[0], 6)), tuple(np.round(c[-1], 6))
                free_a, free_b = ends[a] == 1, ends[b] == 1
                if free_a != free_b:  # a branch: one free end, one junction
                    free = c[0] if free_a else c[-1]
                    if shapely.distance(boundary, shapely.Point(free)) < corner_m:
                        dropped = True
                        continue
                keep.append(ln)
            if not keep:  # every branch ran into a corner (a square, a plaza): the area has no axis
                lines = []
                break
            lines = list(shapely.get_parts(shapely.line_merge(shapely.multilinestrings(keep))))
            if not dropped:
                break
        ends = {}
        for ln in lines:
            c = shapely.get_coordinates(ln)
            for pt in (tuple(np.round(c[0], 6)), tuple(np.round(c[-1], 6))):
                ends[pt] = ends.get(pt, 0) + 1
        for ln in lines:
            c = shapely.get_coordinates(shapely.simplify(ln, simplify_m))
            if len(c) < 2:
                continue
            if ends[tuple(np.round(shapely.get_coordinates(ln)[0], 6))] == 1:
                c = np.vstack([_extend_to(boundary, c[0], c[0] - c[1]), c])
            if ends[tuple(np.round(shapely.get_coordinates(ln)[-1], 6))] == 1:
                c = np.vstack([c, _extend_to(boundary, c[-1], c[-1] - c[-2])])
            out.append(np.round(c, 3))
    out.sort(key=lambda c: (float(c[0, 0]), float(c[0, 1]), len(c)))
    return out


def _extend_to(boundary: shapely.Geometry, end: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The point where the ray from `end` along `direction` first meets `boundary` (`end` if it does not
    within twice the distance from `end` to the boundary plus 1 m)."""
    n = float(np.hypot(*direction))
    if n == 0:
        return end
    reach = 2.0 * shapely.distance(boundary, shapely.Point(end)) + 1.0
    ray = shapely.LineString([end, end + direction / n * reach])
    hit = shapely.get_coordinates(shapely.intersection(ray, boundary))
    if not len(hit):
        return end
    return hit[np.argmin(np.hypot(*(hit - end).T))]


def cut_axes(axes: list[np.ndarray], segment_m: float, min_length_m: float = 2.0) -> Segments:
    """Cut each axis (an (n, 2) polyline) into pieces of `segment_m` from its start (the last piece is
    shorter; pieces shorter than `min_length_m` are dropped). Stations are measured along the polyline."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("x0", "y0", "x1", "y1", "axis", "station")}
    for aid, xy in enumerate(axes):
        xy = np.asarray(xy, dtype=np.float64)
        if len(xy) < 2:
            continue
        seg_len = np.hypot(*np.diff(xy, axis=0).T)
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        total = cum[-1]
        if total < min_length_m:
            continue
        st = np.arange(0.0, total, segment_m)
        ends = np.minimum(st + segment_m, total)
        keep = ends - st >= min_length_m
        st, ends = st[keep], ends[keep]
        x = np.interp(np.concatenate([st, ends]), cum, xy[:, 0])
        y = np.interp(np.concatenate([st, ends]), cum, xy[:, 1])
        n = len(st)
        cols["x0"].append(x[:n])
        cols["y0"].append(y[:n])
        cols["x1"].append(x[n:])
        cols["y1"].append(y[n:])
        cols["axis"].append(np.full(n, aid, dtype=np.int64))
        cols["station"].append(st)
    if not cols["x0"]:
        e = np.zeros(0)
        return Segments(e, e, e, e, e, np.zeros(0, dtype=np.int64), e)
    x0, y0, x1, y1 = (np.concatenate(cols[k]) for k in ("x0", "y0", "x1", "y1"))
    length = np.hypot(x1 - x0, y1 - y0)
    return Segments(
        x0,
        y0,
        (x1 - x0) / length,
        (y1 - y0) / length,
        length,
        np.concatenate(cols["axis"]),
        np.concatenate(cols["station"]),
    )


def _bin_medians(b: np.ndarray, z: np.ndarray, nbins: int, min_count: int) -> np.ndarray:
    """Median of `z` per bin index `b` (0..nbins-1); NaN where a bin has fewer than `min_count` values."""
    out = np.full(nbins, np.nan)
    if not len(b):
        return out
    order = np.lexsort((z, b))
    bs, zs = b[order], z[order]
    starts = np.flatnonzero(np.concatenate([[True], bs[1:] != bs[:-1]]))
    counts = np.diff(np.concatenate([starts, [len(bs)]]))
    lo = zs[starts + (counts - 1) // 2]
    hi = zs[starts + counts // 2]
    med = (lo + hi) / 2
    ok = counts >= min_count
    out[bs[starts[ok]]] = med[ok]
    return out


def _window_median(m: np.ndarray, w: int, after: bool, coverage: float = 0.5) -> np.ndarray:
    """Per bin edge j (between bins j-1 and j): the median of the `w` bins after (j..j+w-1) or before
    (j-w..j-1) it, NaN where less than `coverage` of them have a value."""
    n = len(m)
    pad = np.concatenate([np.full(w, np.nan), m, np.full(w, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, w)  # win[i] = pad[i:i+w] = m[i-w : i]
    j = np.arange(n + 1)
    rows = win[j + w] if after else win[j]
    valid = np.sum(~np.isnan(rows), axis=1)
    out = np.full(n + 1, np.nan)
    good = valid >= max(1.0, coverage * w)
    if good.any():
        out[good] = np.nanmedian(rows[good], axis=1)
    return out


def _first_step(up: np.ndarray, edges: np.ndarray, lo: float, hi: float, w: int) -> int | None:
    """Index (into `edges`, ordered outwards) of the first rise within [lo, hi], refined to the middle
    of the plateau around the largest rise within the following two windows. (The difference of the
    window medians on either side of a sharp step stays at the step's full height while the step lies
    within half a window of the edge: the step is the plateau's middle, not its noisiest edge.)"""
    hit = np.flatnonzero((up >= lo) & (up <= hi))
    if not len(hit):
        return None
    k = int(hit[0])
    span = up[k : k + 2 * w]
    span = np.where(np.isnan(span) | (span > hi), -np.inf, span)
    top = int(np.argmax(span))
    good = span >= 0.75 * span[top]
    a = top
    while a > 0 and good[a - 1]:
        a -= 1
    b = top
    while b < len(span) - 1 and good[b + 1]:
        b += 1
    return k + (a + b) // 2


def _longest_free(occ: np.ndarray) -> np.ndarray:
    """Longest run of False per row of a boolean (rows, bins) array, in bins."""
    rows, n = occ.shape
    if n == 0:
        return np.zeros(rows, dtype=np.int64)
    idx = np.broadcast_to(np.arange(n), occ.shape)
    last = np.maximum.accumulate(np.where(occ, idx, -1), axis=1)
    run = np.where(occ, 0, idx - last)
    return run.max(axis=1)


def measure_segment(
    s: np.ndarray,
    d: np.ndarray,
    z: np.ndarray,
    cls: np.ndarray,
    length: float,
    p: StreetSpaceParams,
) -> dict[str, float]:
    """Measurements of one segment from its points in the segment frame (s along, d across, + left): the
    pure-numpy reference of `measure_street_space`'s kernels (`_street_space_kernels`)."""
    res = dict.fromkeys(RESULT_COLUMNS, float("nan"))
    H = p.max_half_width_m
    nb = round(2 * H / p.bin_m)
    w = max(1, round(p.kerb_window_m / p.bin_m))
    ground = np.isin(cls, p.ground_classes)
    building = np.isin(cls, p.building_classes)
    other = ~ground & ~building & ~np.isin(cls, p.ignored_classes)
    gb = np.clip(((d[ground] + H) / p.bin_m).astype(np.int64), 0, nb - 1)
    res["ground_points"] = float(ground.sum())
    # the along-street slope would smear every bin's median: remove it (a plane fit, cross slope kept)
    along = 0.0
    if ground.sum() >= 3:
        A = np.column_stack([np.ones(ground.sum()), s[ground], d[ground]])
        along = float(np.linalg.lstsq(A, z[ground], rcond=None)[0][1])
    m = _bin_medians(gb, z[ground] - along * s[ground], nb, p.min_bin_points)
    after = _window_median(m, w, after=True, coverage=p.window_coverage)
    before = _window_median(m, w, after=False, coverage=p.window_coverage)
    kerb, outer = _kerbs(m, after - before, d[building], p)
    _widths(res, kerb, outer)
    kl, kr = kerb.get("left"), kerb.get("right")
    # clearance above the carriageway
    c_hi = kl if kl is not None else p.fallback_half_width_m
    c_lo = kr if kr is not None else -p.fallback_half_width_m
    on_cw = ground & (d > c_lo) & (d < c_hi)
    if on_cw.sum() >= 3:
        A = np.column_stack([np.ones(on_cw.sum()), s[on_cw], d[on_cw]])
        coef, *_ = np.linalg.lstsq(A, z[on_cw], rcond=None)
        # the kerb line is known to a bin: returns up to `clearance_margin_m` beyond it count as above
        # the carriageway's edge (a crown's lowest part over the road is usually right there)
        over = other & (d > c_lo - p.clearance_margin_m) & (d < c_hi + p.clearance_margin_m)
        h = z[over] - (coef[0] + coef[1] * s[over] + coef[2] * d[over])
        h = h[h >= p.min_overhead_m]
        res["overhead_points"] = float(len(h))
        if len(h):
            res["min_clearance_m"] = float(h.min())
    # free sidewalk width
    nslice = max(1, int(np.ceil(length / p.slice_m - 1e-9)))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        if side not in kerb or side not in outer:
            continue
        a, b = sign * kerb[side], outer[side]
        dd = d * sign
        walk = ground & (dd > a) & (dd < b)
        if walk.sum() < 3:
            continue
        A = np.column_stack([np.ones(walk.sum()), s[walk], dd[walk]])
        coef, *_ = np.linalg.lstsq(A, z[walk], rcond=None)
        cand = other | building
        cand &= (dd > a) & (dd < b) & (s >= 0) & (s <= length)
        h = z[cand] - (coef[0] + coef[1] * s[cand] + coef[2] * dd[cand])
        obst = (h >= p.obstacle_min_m) & (h <= p.obstacle_max_m)
        nbin = max(1, round((b - a) / p.bin_m))
        occ = np.zeros((nslice, nbin), dtype=bool)
        si = np.clip((s[cand][obst] / p.slice_m).astype(np.int64), 0, nslice - 1)
        bi = np.clip(((dd[cand][obst] - a) / p.bin_m).astype(np.int64), 0, nbin - 1)
        occ[si, bi] = True
        free = _longest_free(occ).min() * p.bin_m
        res[f"free_sidewalk_{side}_m"] = float(min(free, b - a))
    return res


def _kerbs(
    m: np.ndarray, up: np.ndarray, building_d: np.ndarray, p: StreetSpaceParams
) -> tuple[dict[str, float], dict[str, float]]:
    """(kerb offset per side, signed offset where the sidewalk ends per side) from the ground profile
    `m` (median per bin), the rise `up` at every bin edge (towards +d) and the building points' d."""
    H = p.max_half_width_m
    nb = len(m)
    w = max(1, round(p.kerb_window_m / p.bin_m))
    edges = -H + np.arange(nb + 1) * p.bin_m
    centre = nb // 2

    def outwards(edge: int, sign: float) -> np.ndarray:
        return np.arange(edge, nb + 1) if sign > 0 else np.arange(edge, -1, -1)

    def first_kerb(edge: int, sign: float) -> tuple[int, float] | None:
        """(edge index, +1 rise / -1 drop) of the first kerb-high step from `edge` outwards."""
        idx = outwards(edge, sign)
        rise = sign * up[idx]
        k_up = _first_step(rise, edges[idx], p.kerb_min_m, p.kerb_max_m, w)
        k_down = _first_step(-rise, edges[idx], p.kerb_min_m, p.kerb_max_m, w)
        if k_up is not None and (k_down is None or k_up <= k_down):
            return int(idx[k_up]), 1.0
        if k_down is not None:
            return int(idx[k_down]), -1.0
        return None

    # kerb edges (indices into `edges`): the carriageway is the low stretch between a rise on either side.
    # An axis on a raised part (a street parcel's centreline on a kerb extension) first meets a drop: the
    # carriageway lies beyond the nearest drop that a rise follows, and that drop is its kerb on the
    # axis' side.
    kerb_edge: dict[str, int] = {}
    first = {side: first_kerb(centre, sign) for side, sign in (("left", 1.0), ("right", -1.0))}
    if not all(f is not None and f[1] > 0 for f in first.values()):
        drops = sorted(
            (abs(float(edges[f[0]])), f[0], sign)
            for f, sign in zip(first.values(), (1.0, -1.0), strict=True)
            if f is not None and f[1] < 0
        )
        for _dist, edge, sign in drops:
            start = int(np.clip(edge + sign * (w + 1), 0, nb))
            across = first_kerb(start, sign)
            if across is not None and across[1] > 0:
                near, far = ("right", "left") if sign > 0 else ("left", "right")
                kerb_edge = {near: edge, far: across[0]}
                break
    if not kerb_edge:
        for side, f in first.items():
            if f is not None and f[1] > 0:
                kerb_edge[side] = f[0]
    kerb: dict[str, float] = {}
    outer: dict[str, float] = {}  # signed (side direction) offset where the sidewalk ends
    for side, sign in (("left", 1.0), ("right", -1.0)):
        if side not in kerb_edge:
            continue
        kerb[side] = float(edges[kerb_edge[side]])
        # sidewalk: from one window past the kerb outwards to the next step, coverage gap or facade
        beyond = outwards(kerb_edge[side], sign)[w + 1 :]
        if not len(beyond):
            continue
        step = np.abs(up[beyond])
        step = np.where(np.isnan(step), 0.0, step)
        # bins outwards of each edge: the bin on the outer side of edge j is j (left) or j-1 (right)
        outer_bin = beyond if sign > 0 else beyond - 1
        inside = (outer_bin >= 0) & (outer_bin < nb)
        covered = np.where(inside, ~np.isnan(m[np.clip(outer_bin, 0, nb - 1)]), False)
        gap_bins = max(1, round(p.coverage_gap_m / p.bin_m))
        # a gap starts at an edge when the next gap_bins bins outwards have no ground
        run = np.lib.stride_tricks.sliding_window_view(
            np.concatenate([~covered, np.ones(gap_bins, bool)]), gap_bins
        )
        gap_start = run[: len(covered)].all(axis=1)
        stop = np.nan
        e = _first_step(step, beyond, p.edge_step_m, np.inf, w)
        if e is not None:
            stop = float(sign * edges[beyond[e]])
        if gap_start.any():
            stop = float(np.nanmin([stop, sign * edges[beyond[np.argmax(gap_start)]]]))
        bd = building_d * sign
        facade = bd[bd > sign * kerb[side]]
        if len(facade):
            stop = float(np.nanmin([stop, facade.min()]))
        if np.isfinite(stop):
            outer[side] = stop
    return kerb, outer


def _widths(res: dict[str, float], kerb: dict[str, float], outer: dict[str, float]) -> None:
    """Kerb offsets, carriageway and sidewalk widths into `res`."""
    kl, kr = kerb.get("left"), kerb.get("right")
    res["kerb_left_m"] = kl if kl is not None else float("nan")
    res["kerb_right_m"] = kr if kr is not None else float("nan")
    if kl is not None and kr is not None:
        res["carriageway_width_m"] = kl - kr
    for side in ("left", "right"):
        if side in kerb and side in outer:
            res[f"sidewalk_{side}_width_m"] = outer[side] - (1.0 if side == "left" else -1.0) * kerb[side]


class _PointGrid:
    """Point indices binned into square cells of `cell_m` (one sort, no geometry objects: 16 bytes per
    point while it is built, 8 after). `query` returns the indices of the points in the cells a box
    touches, in ascending order."""

    def __init__(self, x: np.ndarray, y: np.ndarray, cell_m: float):
        self.cell = cell_m
        self.x0, self.y0 = float(x.min()), float(y.min())
        ix = ((x - self.x0) / cell_m).astype(np.int64)
        iy = ((y - self.y0) / cell_m).astype(np.int64)
        self.nx, self.ny = int(ix.max()) + 1, int(iy.max()) + 1
        key = iy * self.nx + ix
        del ix, iy
        self.order = np.argsort(key, kind="stable")
        self.starts = np.searchsorted(key[self.order], np.arange(self.nx * self.ny + 1))

    def query(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        ix0 = max(0, int((xmin - self.x0) // self.cell))
        ix1 = min(self.nx - 1, int((xmax - self.x0) // self.cell))
        iy0 = max(0, int((ymin - self.y0) // self.cell))
        iy1 = min(self.ny - 1, int((ymax - self.y0) // self.cell))
        if ix0 > ix1 or iy0 > iy1:
            return np.zeros(0, dtype=np.int64)
        rows = np.arange(iy0, iy1 + 1) * self.nx
        parts = [self.order[self.starts[r + ix0] : self.starts[r + ix1 + 1]] for r in rows]
        return np.sort(np.concatenate(parts))


def measure_street_space_reference(
    seg: Segments,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    cls: np.ndarray,
    p: StreetSpaceParams,
) -> dict[str, np.ndarray]:
    """`measure_street_space` in pure numpy, one segment after the other (`measure_segment`): the
    reference the tests compare the kernels with (equal to floating-point rounding of the plane fits)."""
    out = {k: np.full(len(seg), np.nan) for k in RESULT_COLUMNS}
    if not len(seg) or not len(x):
        return out
    H = p.max_half_width_m
    grid = _PointGrid(x, y, max(2.0, H / 2))
    for i in range(len(seg)):
        L = float(seg.length[i])
        ux, uy = seg.ux[i], seg.uy[i]
        corners = np.array(
            [
                (seg.x0[i] + a * L * ux - b * H * uy, seg.y0[i] + a * L * uy + b * H * ux)
                for a in (0.0, 1.0)
                for b in (-1.0, 1.0)
            ]
        )
        near = grid.query(*corners.min(axis=0), *corners.max(axis=0))
        if not len(near):
            continue
        dx, dy = x[near] - seg.x0[i], y[near] - seg.y0[i]
        s = dx * seg.ux[i] + dy * seg.uy[i]
        d = -dx * seg.uy[i] + dy * seg.ux[i]
        keep = (s >= 0) & (s < L) & (np.abs(d) < p.max_half_width_m)
        sel = near[keep]
        r = measure_segment(s[keep], d[keep], z[sel], cls[sel], L, p)
        for k, v in r.items():
            out[k][i] = v
    return out


def reach_boxes(seg: Segments, half_width: float, pad: float = 1.0) -> np.ndarray:
    """(n, 4) bounding boxes of the segments' measuring rectangles (0..length along, +-half_width
    across), padded by `pad` m: every point a segment measures lies inside its box."""
    L = seg.length
    xs = np.stack([seg.x0 + a * L * seg.ux - b * half_width * seg.uy for a in (0, 1) for b in (-1, 1)])
    ys = np.stack([seg.y0 + a * L * seg.uy + b * half_width * seg.ux for a in (0, 1) for b in (-1, 1)])
    return np.column_stack([xs.min(0) - pad, ys.min(0) - pad, xs.max(0) + pad, ys.max(0) + pad])


def grid_origin(seg: Segments, p: StreetSpaceParams) -> tuple[float, float]:
    """South-west corner of the point grid of a region's segments: their reach (`reach_boxes`) snapped
    down to GRID_SNAP_M. Every cell of the measurement (POINT_CELL_M) and of the orchestration's
    partitioning (a multiple of it) is counted from here, with `_street_space_kernels.cell_columns`."""
    boxes = reach_boxes(seg, p.max_half_width_m)
    return (
        float(np.floor(boxes[:, 0].min() / GRID_SNAP_M) * GRID_SNAP_M),
        float(np.floor(boxes[:, 1].min() / GRID_SNAP_M) * GRID_SNAP_M),
    )


def class_flags(cls: np.ndarray, p: StreetSpaceParams) -> np.ndarray:
    """GROUND / BUILDING / IGNORED flags (`_street_space_kernels`) of every point's class."""
    lut = np.zeros(256, dtype=np.uint8)
    for flag, classes in (
        (K.GROUND, p.ground_classes),
        (K.BUILDING, p.building_classes),
        (K.IGNORED, p.ignored_classes),
    ):
        for c in classes:
            if 0 <= c < 256:
                lut[c] |= flag
    return lut[np.asarray(cls, dtype=np.uint8)]


def _lstsq_plane(s: np.ndarray, d: np.ndarray, z: np.ndarray, use: np.ndarray) -> np.ndarray:
    """numpy's least-squares plane (c0, c1, c2) through the points where `use` (degenerate fits)."""
    A = np.column_stack([np.ones(int(use.sum())), s[use], d[use]])
    return np.linalg.lstsq(A, z[use], rcond=None)[0]


def _measure_segment_fast(
    s: np.ndarray, d: np.ndarray, z: np.ndarray, flags: np.ndarray, length: float, p: StreetSpaceParams
) -> dict[str, float]:
    """`measure_segment` with the kernels: the points' class `flags` instead of their classes."""
    res = dict.fromkeys(RESULT_COLUMNS, float("nan"))
    H = p.max_half_width_m
    nb = round(2 * H / p.bin_m)
    w = max(1, round(p.kerb_window_m / p.bin_m))
    ground = (flags & K.GROUND) != 0
    res["ground_points"] = float(ground.sum())
    along = 0.0
    if res["ground_points"] >= 3:
        _c0, along, _c2, _n, ok = K.plane_fit(s, d, z, ground)
        if not ok:
            along = float(_lstsq_plane(s, d, z, ground)[1])
    m = K.ground_profile(s, d, z, flags, along, H, p.bin_m, nb, p.min_bin_points)
    valid = max(1.0, p.window_coverage * w)
    up = K.window_median(m, w, True, valid) - K.window_median(m, w, False, valid)
    kerb, outer = _kerbs(m, up, d[(flags & K.BUILDING) != 0], p)
    _widths(res, kerb, outer)
    kl, kr = kerb.get("left"), kerb.get("right")
    c_hi = kl if kl is not None else p.fallback_half_width_m
    c_lo = kr if kr is not None else -p.fallback_half_width_m
    margin = p.clearance_margin_m
    low, count, n, ok = K.clearance(s, d, z, flags, c_lo, c_hi, margin, p.min_overhead_m)
    if n >= 3:
        if not ok:
            coef = _lstsq_plane(s, d, z, ground & (d > c_lo) & (d < c_hi))
            low, count = K.overhead(s, d, z, flags, c_lo, c_hi, margin, p.min_overhead_m, *coef)
        res["overhead_points"] = count
        if count:
            res["min_clearance_m"] = low
    nslice = max(1, int(np.ceil(length / p.slice_m - 1e-9)))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        if side not in kerb or side not in outer:
            continue
        a, b = sign * kerb[side], outer[side]
        dd = d * sign
        c0, c1, c2, n, ok = K.sidewalk_plane(s, dd, z, flags, a, b)
        if n < 3:
            continue
        if not ok:
            c0, c1, c2 = _lstsq_plane(s, dd, z, ground & (dd > a) & (dd < b))
        nbin = max(1, round((b - a) / p.bin_m))
        free = (
            K.free_sidewalk(
                s,
                dd,
                z,
                flags,
                a,
                b,
                length,
                c0,
                c1,
                c2,
                p.obstacle_min_m,
                p.obstacle_max_m,
                p.slice_m,
                nslice,
                p.bin_m,
                nbin,
            )
            * p.bin_m
        )
        res[f"free_sidewalk_{side}_m"] = float(min(free, b - a))
    return res


def measure_street_space(
    seg: Segments,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    cls: np.ndarray,
    p: StreetSpaceParams,
    origin: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Measurements of every segment (columns of RESULT_COLUMNS, NaN = not measured; a segment without
    points in its rectangle has 0 ground points and nothing else).

    The points are binned once into the POINT_CELL_M grid from `origin` (default: `grid_origin` of
    `seg`); each segment takes the points of the cells its rectangle reaches, cell by cell in row-major
    order and in input order within a cell. Pass the region's `origin` when measuring part of it: as long
    as the points of every cell a segment reaches come in their input order, the result does not depend
    on which other points or segments are given."""
    out = {k: np.full(len(seg), np.nan) for k in RESULT_COLUMNS}
    if not len(seg):
        return out
    H = p.max_half_width_m
    gx0, gy0 = origin if origin is not None else grid_origin(seg, p)
    col = K.cell_columns(np.asarray(x, dtype=np.float64), gx0, POINT_CELL_M)
    row = K.cell_columns(np.asarray(y, dtype=np.float64), gy0, POINT_CELL_M)
    cx0 = int(col.min()) if len(col) else 0
    cy0 = int(row.min()) if len(row) else 0
    nx = int(col.max()) - cx0 + 1 if len(col) else 1
    ny = int(row.max()) - cy0 + 1 if len(row) else 1
    col -= cx0
    row -= cy0
    order, starts = K.bin_points(col, row, nx, ny)
    del col, row
    flags = class_flags(cls, p)
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for i in range(len(seg)):
        L = float(seg.length[i])
        idx, s, d = K.gather_segment(
            order,
            starts,
            gx0,
            gy0,
            POINT_CELL_M,
            cx0,
            cy0,
            nx,
            ny,
            xs,
            ys,
            float(seg.x0[i]),
            float(seg.y0[i]),
            float(seg.ux[i]),
            float(seg.uy[i]),
            L,
            H,
        )
        r = _measure_segment_fast(s, d, np.asarray(z, dtype=np.float64)[idx], flags[idx], L, p)
        for k, v in r.items():
            out[k][i] = v
    return out


def judge(res: dict[str, np.ndarray], p: StreetSpaceParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(judged, passable, reason) for the configured vehicle. A segment without a measured carriageway
    width cannot be judged; a missing clearance means nothing overhead (below the scanner's reach)."""
    cw = res["carriageway_width_m"]
    cl = res["min_clearance_m"]
    judged = np.isfinite(cw)
    narrow = judged & (cw < p.vehicle_width_m)
    low = np.isfinite(cl) & (cl < p.vehicle_height_m)
    passable = judged & ~narrow & ~low
    reason = np.full(len(cw), "", dtype=object)
    for i in np.flatnonzero(~passable):
        parts = []
        if not judged[i] and not res["ground_points"][i] > 0:  # 0 or NaN: no point came near
            parts.append("no ground points of the mobile scans in this segment")
        elif not judged[i]:
            parts.append("carriageway width not measured (no kerb found on both sides)")
        if narrow[i]:
            parts.append(f"carriageway {cw[i]:.2f} m < vehicle width {p.vehicle_width_m:.2f} m")
        if low[i]:
            parts.append(f"clearance {cl[i]:.2f} m < vehicle height {p.vehicle_height_m:.2f} m")
        reason[i] = "; ".join(parts)
    return judged, passable, reason


def status(judged: np.ndarray, res: dict[str, np.ndarray], p: StreetSpaceParams) -> np.ndarray:
    """Category for the map: passable / too_narrow / too_low / too_narrow_and_low / not_judged."""
    cw, cl = res["carriageway_width_m"], res["min_clearance_m"]
    narrow = np.isfinite(cw) & (cw < p.vehicle_width_m)
    low = np.isfinite(cl) & (cl < p.vehicle_height_m)
    out = np.where(narrow & low, "too_narrow_and_low", np.where(narrow, "too_narrow", "passable"))
    out = np.where(~narrow & low, "too_low", out)
    return np.where(judged | low, out, "not_judged").astype(object)
