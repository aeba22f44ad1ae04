"""Kernels of the street space measurement (numba); `pipeline.stages.street_space` holds the pure-numpy
reference (`measure_segment`) that the tests compare them with.

* `corridor_points`, `pack_by_cell`: the read task's selection of a chunk's points near the street axes
  and their records sorted (stably) by the orchestration's cells (`orchestrate.street_space.spill_points`);
* `bin_points`: the points of a tile binned into square cells of a point grid (one counting sort, stable:
  within a cell the points keep their input order);
* `gather_segment`: the points inside one segment's measuring rectangle, in the segment's frame (s along,
  d across), cell by cell (cells in row-major order, points in input order within a cell: an order that
  depends only on the points and the segment, never on how the region was tiled);
* `ground_profile`: the plane fit of the ground points (its along-street slope) and the median height of
  the ground per lateral bin;
* `window_median`: the median of the `w` bins before or after every bin edge;
* `clearance`, `free_sidewalk`: the carriageway's and a sidewalk's plane fit and the points above them.

The plane fits solve the normal equations of centred sums (numpy's `lstsq` in the reference): the two
agree to floating-point rounding (about 1e-12 m); a degenerate fit (rank < 3) is reported, and the caller
falls back to `lstsq` as the reference does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# class flags of a point (a class may carry several; "other" is none of them)
GROUND = 1
BUILDING = 2
IGNORED = 4
# a point cell against the corridor of the street axes (`orchestrate.street_space.corridor_cells`): wholly
# outside, wholly inside, or touched by its outline (its points are tested one by one)
OUTSIDE, INSIDE, OUTLINE = 0, 1, 2


@njit(cache=True, nogil=True)
def cell_columns(v: np.ndarray, origin: float, cell: float) -> np.ndarray:
    """floor((v - origin) / cell) as int64 (the one formula every grid of the stage uses)."""
    out = np.empty(len(v), dtype=np.int64)
    for i in range(len(v)):
        out[i] = int(np.floor((v[i] - origin) / cell))
    return out


@njit(cache=True, nogil=True)
def corridor_points(
    X: np.ndarray,
    Y: np.ndarray,
    scale_x: float,
    offset_x: float,
    scale_y: float,
    offset_y: float,
    x0: float,
    y0: float,
    cell: float,
    ncol: int,
    nrow: int,
    per_cell: int,
    wanted: np.ndarray,
    col0: int,
    row0: int,
    side: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(indices, cells, on_outline, strays) of a chunk's points near the corridor, in input order: those
    whose point cell (of `cell` m from (x0, y0), of the coordinates `X * scale + offset` as the point
    reader computes them) lies in the grid of ncol x nrow point cells, in a `wanted` cell of `per_cell` x
    `per_cell` point cells (id row * (ncol // per_cell) + column) and not OUTSIDE the corridor by `side`,
    the classes of the point cells from (col0, row0) on (a window of the grid: a point of a wanted cell
    beyond it is not decided, only counted: `strays`). `on_outline`: it still needs the point test."""
    n = len(X)
    srow, scol = side.shape
    cells_x = ncol // per_cell
    idx = np.empty(n, dtype=np.int64)
    cells = np.empty(n, dtype=np.int64)
    outline = np.empty(n, dtype=np.bool_)
    k = 0
    strays = 0
    for i in range(n):
        c = int(np.floor((X[i] * scale_x + offset_x - x0) / cell))
        if c < 0 or c >= ncol:
            continue
        r = int(np.floor((Y[i] * scale_y + offset_y - y0) / cell))
        if r < 0 or r >= nrow:
            continue
        g = (r // per_cell) * cells_x + c // per_cell
        if not wanted[g]:
            continue
        if c < col0 or c >= col0 + scol or r < row0 or r >= row0 + srow:
            strays += 1
            continue
        s = side[r - row0, c - col0]
        if s == OUTSIDE:
            continue
        idx[k] = i
        cells[k] = g
        outline[k] = s == OUTLINE
        k += 1
    return idx[:k], cells[:k], outline[:k], strays


@njit(cache=True, nogil=True)
def pack_by_cell(
    idx: np.ndarray,
    cells: np.ndarray,
    ncells: int,
    X: np.ndarray,
    Y: np.ndarray,
    Z: np.ndarray,
    cls: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_z: np.ndarray,
    out_c: np.ndarray,
) -> np.ndarray:
    """The points `idx` (cell ids `cells`, 0..ncells-1) written to the `out_*` columns sorted (stably) by
    cell; returns the points per cell."""
    count = np.zeros(ncells, dtype=np.int64)
    for j in range(len(idx)):
        count[cells[j]] += 1
    fill = np.zeros(ncells, dtype=np.int64)
    for g in range(1, ncells):
        fill[g] = fill[g - 1] + count[g - 1]
    for j in range(len(idx)):
        i = idx[j]
        at = fill[cells[j]]
        fill[cells[j]] = at + 1
        out_x[at] = X[i]
        out_y[at] = Y[i]
        out_z[at] = Z[i]
        out_c[at] = cls[i]
    return count


@njit(cache=True, nogil=True)
def bin_points(col: np.ndarray, row: np.ndarray, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the point indices sorted (stably) by cell `row * nx + col` (0 <= col < nx,
    0 <= row < ny), and where each cell's run starts (nx * ny + 1 entries)."""
    n = len(col)
    starts = np.zeros(nx * ny + 1, dtype=np.int64)
    for i in range(n):
        starts[row[i] * nx + col[i] + 1] += 1
    for k in range(nx * ny):
        starts[k + 1] += starts[k]
    fill = starts[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = row[i] * nx + col[i]
        order[fill[k]] = i
        fill[k] += 1
    return order, starts


@njit(cache=True, nogil=True)
def gather_segment(
    order: np.ndarray,
    starts: np.ndarray,
    gx0: float,
    gy0: float,
    cell: float,
    cx0: int,
    cy0: int,
    nx: int,
    ny: int,
    x: np.ndarray,
    y: np.ndarray,
    sx: float,
    sy: float,
    ux: float,
    uy: float,
    length: float,
    half_width: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, s, d) of the points with 0 <= s < length and |d| < half_width in the frame of the
    segment from (sx, sy) along (ux, uy); the grid's cell (c, r) covers gx0 + (cx0 + c) * cell .. + cell
    (and likewise in y). Cells in row-major order, points in `order`'s order within a cell."""
    # the rectangle's bounding box in grid cells (clipped to the grid)
    xs0 = xs1 = sx
    ys0 = ys1 = sy
    for a in (0.0, 1.0):
        for b in (-1.0, 1.0):
            px = sx + a * length * ux - b * half_width * uy
            py = sy + a * length * uy + b * half_width * ux
            xs0, xs1 = min(xs0, px), max(xs1, px)
            ys0, ys1 = min(ys0, py), max(ys1, py)
    c0 = max(0, int(np.floor((xs0 - gx0) / cell)) - cx0 - 1)
    c1 = min(nx - 1, int(np.floor((xs1 - gx0) / cell)) - cx0 + 1)
    r0 = max(0, int(np.floor((ys0 - gy0) / cell)) - cy0 - 1)
    r1 = min(ny - 1, int(np.floor((ys1 - gy0) / cell)) - cy0 + 1)
    total = 0
    for r in range(r0, r1 + 1):
        if c0 <= c1:
            total += starts[r * nx + c1 + 1] - starts[r * nx + c0]
    idx = np.empty(max(total, 0), dtype=np.int64)
    s_out = np.empty(max(total, 0), dtype=np.float64)
    d_out = np.empty(max(total, 0), dtype=np.float64)
    reach = 0.7072 * cell + 1e-6  # half a cell's diagonal: no cell farther than this holds a point inside
    n = 0
    for r in range(r0, r1 + 1):
        ccy = gy0 + (cy0 + r + 0.5) * cell - sy
        for c in range(c0, c1 + 1):
            ccx = gx0 + (cx0 + c + 0.5) * cell - sx
            cs = ccx * ux + ccy * uy
            cd = -ccx * uy + ccy * ux
            if cs < -reach or cs > length + reach or abs(cd) > half_width + reach:
                continue
            k = r * nx + c
            for j in range(starts[k], starts[k + 1]):
                i = order[j]
                dx = x[i] - sx
                dy = y[i] - sy
                s = dx * ux + dy * uy
                d = -dx * uy + dy * ux
                if s >= 0 and s < length and abs(d) < half_width:
                    idx[n] = i
                    s_out[n] = s
                    d_out[n] = d
                    n += 1
    return idx[:n], s_out[:n], d_out[:n]


@njit(cache=True, nogil=True)
def plane_fit(
    s: np.ndarray, d: np.ndarray, z: np.ndarray, use: np.ndarray
) -> tuple[float, float, float, int, bool]:
    """Least-squares plane z = c0 + c1 * s + c2 * d through the points where `use`: (c0, c1, c2, count,
    solved); not solved when fewer than 3 points or the points are (nearly) collinear."""
    n = 0
    ms = md = mz = 0.0
    for i in range(len(s)):
        if use[i]:
            n += 1
            ms += s[i]
            md += d[i]
            mz += z[i]
    if n < 3:
        return 0.0, 0.0, 0.0, n, False
    ms /= n
    md /= n
    mz /= n
    sss = sdd = ssd = ssz = sdz = 0.0
    for i in range(len(s)):
        if use[i]:
            a = s[i] - ms
            b = d[i] - md
            c = z[i] - mz
            sss += a * a
            sdd += b * b
            ssd += a * b
            ssz += a * c
            sdz += b * c
    det = sss * sdd - ssd * ssd
    if not det > 1e-9 * sss * sdd or sss <= 0.0 or sdd <= 0.0:
        return 0.0, 0.0, 0.0, n, False
    c1 = (ssz * sdd - sdz * ssd) / det
    c2 = (sdz * sss - ssz * ssd) / det
    return mz - c1 * ms - c2 * md, c1, c2, n, True


@njit(cache=True, nogil=True)
def ground_profile(
    s: np.ndarray,
    d: np.ndarray,
    z: np.ndarray,
    flags: np.ndarray,
    along: float,
    half_width: float,
    bin_m: float,
    nbins: int,
    min_count: int,
) -> np.ndarray:
    """Median of the ground heights minus `along * s` per lateral bin (`int((d + half_width) / bin_m)`,
    clipped to 0..nbins-1); NaN where a bin has fewer than `min_count` ground points."""
    count = np.zeros(nbins + 1, dtype=np.int64)
    for i in range(len(s)):
        if flags[i] & GROUND:
            b = min(max(int((d[i] + half_width) / bin_m), 0), nbins - 1)
            count[b + 1] += 1
    for k in range(nbins):
        count[k + 1] += count[k]
    fill = count[:-1].copy()
    vals = np.empty(count[nbins], dtype=np.float64)
    for i in range(len(s)):
        if flags[i] & GROUND:
            b = min(max(int((d[i] + half_width) / bin_m), 0), nbins - 1)
            vals[fill[b]] = z[i] - along * s[i]
            fill[b] += 1
    out = np.full(nbins, np.nan)
    for k in range(nbins):
        c = count[k + 1] - count[k]
        if c >= min_count and c > 0:
            out[k] = _median_inplace(vals[count[k] : count[k + 1]])
    return out


@njit(cache=True, nogil=True)
def _median_inplace(v: np.ndarray) -> float:
    """Median of `v` (no NaN; reordered): the middle value, or the mean of the two middle values, as
    numpy's median computes it ((lo + hi) / 2). Quickselect: linear in the count."""
    c = len(v)
    if c <= 16:
        _sort_small(v)
        return (v[(c - 1) // 2] + v[c // 2]) / 2
    h = c // 2
    lo, hi = 0, c - 1
    while lo < hi:  # Hoare's selection of the h-th smallest into v[h]
        mid = (lo + hi) // 2
        pivot = max(min(v[lo], v[mid]), min(max(v[lo], v[mid]), v[hi]))  # median of three
        i, j = lo, hi
        while i <= j:
            while v[i] < pivot:
                i += 1
            while v[j] > pivot:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if h <= j:
            hi = j
        elif h >= i:
            lo = i
        else:
            break
    if c % 2:
        return (v[h] + v[h]) / 2
    below = v[0]
    for k in range(1, h):
        below = max(below, v[k])
    return (below + v[h]) / 2


@njit(cache=True, nogil=True)
def _sort_small(v: np.ndarray) -> None:
    """Sort `v` in place (insertion sort for the few values of a bin, numpy's sort beyond 32)."""
    n = len(v)
    if n > 32:
        v.sort()
        return
    for i in range(1, n):
        a = v[i]
        j = i - 1
        while j >= 0 and v[j] > a:
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = a


@njit(cache=True, nogil=True)
def window_median(m: np.ndarray, w: int, after: bool, min_valid: float) -> np.ndarray:
    """Per bin edge j (0..len(m)): the median of the non-NaN values among the `w` bins after (j..j+w-1)
    or before (j-w..j-1) it, NaN where fewer than `min_valid` of them have a value."""
    n = len(m)
    out = np.full(n + 1, np.nan)
    buf = np.empty(w, dtype=np.float64)
    for j in range(n + 1):
        lo = j if after else j - w
        c = 0
        for k in range(lo, lo + w):
            if k >= 0 and k < n and not np.isnan(m[k]):
                buf[c] = m[k]
                c += 1
        if c >= min_valid and c > 0:
            v = buf[:c]
            _sort_small(v)
            out[j] = (v[(c - 1) // 2] + v[c // 2]) / 2
    return out


@njit(cache=True, nogil=True)
def clearance(
    s: np.ndarray,
    d: np.ndarray,
    z: np.ndarray,
    flags: np.ndarray,
    lo: float,
    hi: float,
    margin: float,
    min_overhead: float,
) -> tuple[float, float, int, bool]:
    """(lowest height above the carriageway's plane of the non-ground points at least `min_overhead`
    above it, between lo - margin and hi + margin across (NaN: none), their count, carriageway ground
    points, solved); the plane is fitted to the ground points with lo < d < hi."""
    use = np.empty(len(s), dtype=np.bool_)
    for i in range(len(s)):
        use[i] = (flags[i] & GROUND) != 0 and d[i] > lo and d[i] < hi
    c0, c1, c2, n, ok = plane_fit(s, d, z, use)
    if not ok:
        return np.nan, 0.0, n, False
    low, count = overhead(s, d, z, flags, lo, hi, margin, min_overhead, c0, c1, c2)
    return low, count, n, True


@njit(cache=True, nogil=True)
def overhead(
    s: np.ndarray,
    d: np.ndarray,
    z: np.ndarray,
    flags: np.ndarray,
    lo: float,
    hi: float,
    margin: float,
    min_overhead: float,
    c0: float,
    c1: float,
    c2: float,
) -> tuple[float, float]:
    """(lowest height above the plane c0 + c1 * s + c2 * d of the non-ground points at least
    `min_overhead` above it between lo - margin and hi + margin across (NaN: none), their count)."""
    low = np.inf
    count = 0
    for i in range(len(s)):
        if flags[i] == 0 and d[i] > lo - margin and d[i] < hi + margin:
            h = z[i] - (c0 + c1 * s[i] + c2 * d[i])
            if h >= min_overhead:
                count += 1
                low = min(low, h)
    return (low if count else np.nan), float(count)


@njit(cache=True, nogil=True)
def sidewalk_plane(
    s: np.ndarray, dd: np.ndarray, z: np.ndarray, flags: np.ndarray, a: float, b: float
) -> tuple[float, float, float, int, bool]:
    """Plane fit of the ground points with a < dd < b (`plane_fit`'s result)."""
    use = np.empty(len(s), dtype=np.bool_)
    for i in range(len(s)):
        use[i] = (flags[i] & GROUND) != 0 and dd[i] > a and dd[i] < b
    return plane_fit(s, dd, z, use)


@njit(cache=True, nogil=True)
def free_sidewalk(
    s: np.ndarray,
    dd: np.ndarray,
    z: np.ndarray,
    flags: np.ndarray,
    a: float,
    b: float,
    length: float,
    c0: float,
    c1: float,
    c2: float,
    obstacle_min: float,
    obstacle_max: float,
    slice_m: float,
    nslice: int,
    bin_m: float,
    nbin: int,
) -> int:
    """Bins of the longest unobstructed run across the sidewalk a < dd < b, the smallest over the
    `nslice` slices along: obstacles are the non-ground, non-ignored points obstacle_min..obstacle_max
    above the plane c0 + c1 * s + c2 * dd."""
    occ = np.zeros((nslice, nbin), dtype=np.bool_)
    for i in range(len(s)):
        if not (flags[i] == 0 or flags[i] & BUILDING):  # neither "other" nor building
            continue
        if not (dd[i] > a and dd[i] < b and s[i] >= 0 and s[i] <= length):
            continue
        h = z[i] - (c0 + c1 * s[i] + c2 * dd[i])
        if h >= obstacle_min and h <= obstacle_max:
            si = min(max(int(s[i] / slice_m), 0), nslice - 1)
            bi = min(max(int((dd[i] - a) / bin_m), 0), nbin - 1)
            occ[si, bi] = True
    best = nbin
    for r in range(nslice):
        run = 0
        longest = 0
        for k in range(nbin):
            if occ[r, k]:
                run = 0
            else:
                run += 1
                longest = max(longest, run)
        best = min(best, longest)
    return best
