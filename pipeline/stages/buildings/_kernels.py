"""numba kernels of the building-height stage (numpy/shapely references live in heights.py).

- `select_sorted`: the selected points (mask) counting-sorted into square cells (CSR cell offsets),
  copied into cell order in the same pass.
- `collect_in_polygons`: for every polygon (edges flattened, even-odd rule so holes and multi-part
  polygons just work), the Z of every point inside it, as CSR arrays. Candidates come from the grid
  cells overlapping the polygon's bounding box; each candidate is tested with a crossing-number scan.
- `grouped_percentiles`: linear-interpolated percentiles (numpy's default method) per CSR group.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _cell_range(lo, x0, cell, n):
    a = int(np.floor((lo - x0) / cell))
    return min(max(a, 0), n - 1)


@njit(cache=True, nogil=True)
def collect_in_polygons(x, y, z, start, x0, y0, cell, nx, ny, ex0, ey0, ex1, ey1, eptr, bbox):
    """CSR (ptr, values) of the z of points inside each polygon (even-odd over all its edges).

    x, y, z must be sorted by grid cell (from `select_sorted`): candidates are then read sequentially,
    which matters more than anything else for speed."""
    npoly = eptr.shape[0] - 1
    ub = np.zeros(npoly + 1, dtype=np.int64)
    for k in range(npoly):
        if eptr[k + 1] == eptr[k]:
            continue
        cx0 = _cell_range(bbox[k, 0], x0, cell, nx)
        cx1 = _cell_range(bbox[k, 2], x0, cell, nx)
        cy0 = _cell_range(bbox[k, 1], y0, cell, ny)
        cy1 = _cell_range(bbox[k, 3], y0, cell, ny)
        s = 0
        for cy in range(cy0, cy1 + 1):
            s += start[cy * nx + cx1 + 1] - start[cy * nx + cx0]
        ub[k + 1] = s
    for k in range(npoly):
        ub[k + 1] += ub[k]
    vals = np.empty(ub[npoly], dtype=z.dtype)
    cnt = np.zeros(npoly, dtype=np.int64)
    for k in range(npoly):
        e0 = eptr[k]
        e1 = eptr[k + 1]
        if e1 == e0:
            continue
        bx0, by0, bx1, by1 = bbox[k, 0], bbox[k, 1], bbox[k, 2], bbox[k, 3]
        cx0 = _cell_range(bx0, x0, cell, nx)
        cx1 = _cell_range(bx1, x0, cell, nx)
        cy0 = _cell_range(by0, y0, cell, ny)
        cy1 = _cell_range(by1, y0, cell, ny)
        base = ub[k]
        c = 0
        for cy in range(cy0, cy1 + 1):
            # cells of one row are contiguous in the CSR: one run of points
            j0 = start[cy * nx + cx0]
            j1 = start[cy * nx + cx1 + 1]
            for i in range(j0, j1):
                px = x[i]
                py = y[i]
                if px < bx0 or px > bx1 or py < by0 or py > by1:
                    continue
                inside = False
                for e in range(e0, e1):
                    ya = ey0[e]
                    yb = ey1[e]
                    if (ya > py) != (yb > py):
                        xa = ex0[e]
                        if px < (ex1[e] - xa) * (py - ya) / (yb - ya) + xa:
                            inside = not inside
                if inside:
                    vals[base + c] = z[i]
                    c += 1
        cnt[k] = c
    ptr = np.zeros(npoly + 1, dtype=np.int64)
    for k in range(npoly):
        ptr[k + 1] = ptr[k] + cnt[k]
    out = np.empty(ptr[npoly], dtype=z.dtype)
    for k in range(npoly):
        out[ptr[k] : ptr[k + 1]] = vals[ub[k] : ub[k] + cnt[k]]
    return ptr, out


@njit(cache=True, nogil=True)
def grouped_percentiles(ptr, vals, qs):
    """(ngroups, len(qs)) percentiles (linear interpolation, like np.percentile); NaN for empty groups."""
    ng = ptr.shape[0] - 1
    out = np.full((ng, qs.shape[0]), np.nan)
    for g in range(ng):
        n = ptr[g + 1] - ptr[g]
        if n == 0:
            continue
        a = np.sort(vals[ptr[g] : ptr[g + 1]].astype(np.float64))
        for k in range(qs.shape[0]):
            h = (n - 1) * qs[k] / 100.0
            lo = int(np.floor(h))
            if lo >= n - 1:
                out[g, k] = a[n - 1]
            else:
                out[g, k] = a[lo] + (h - lo) * (a[lo + 1] - a[lo])
    return out


@njit(cache=True, nogil=True)
def select_sorted(x, y, z, mask, cell):
    """The points where `mask` is set, counting-sorted into `cell`-sized grid cells, in one pass each for
    bounds, counts and placement (no intermediate copies). Returns xs, ys, zs, start, x0, y0, nx, ny."""
    n = x.shape[0]
    x0 = np.inf
    y0 = np.inf
    x1 = -np.inf
    y1 = -np.inf
    k = 0
    for i in range(n):
        if mask[i]:
            k += 1
            if x[i] < x0:
                x0 = x[i]
            if x[i] > x1:
                x1 = x[i]
            if y[i] < y0:
                y0 = y[i]
            if y[i] > y1:
                y1 = y[i]
    if k == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(2, dtype=np.int64), 0.0, 0.0, 1, 1
    nx = int((x1 - x0) / cell) + 1
    ny = int((y1 - y0) / cell) + 1
    start = np.zeros(nx * ny + 1, dtype=np.int64)
    for i in range(n):
        if mask[i]:
            c = int((y[i] - y0) / cell) * nx + int((x[i] - x0) / cell)
            start[c + 1] += 1
    for c in range(nx * ny):
        start[c + 1] += start[c]
    pos = start[:-1].copy()
    xs = np.empty(k)
    ys = np.empty(k)
    zs = np.empty(k)
    for i in range(n):
        if mask[i]:
            c = int((y[i] - y0) / cell) * nx + int((x[i] - x0) / cell)
            p = pos[c]
            xs[p] = x[i]
            ys[p] = y[i]
            zs[p] = z[i]
            pos[c] = p + 1
    return xs, ys, zs, start, x0, y0, nx, ny
