"""numba kernels of the roof fitting (pipeline.stages.buildings.roofs).

The reference versions are numpy: `nearest_other_reference` here, and the numpy shape fits in
`roof_shapes.py` (`RoofParams(backend="numpy")`), which the tests compare these kernels with.

Shape kinds (the design rows of the linear models in the footprint's local frame u, v):

| kind | row | `val`, `val2` |
|---|---|---|
| FLAT | 1 | - |
| SHED | 1, u, v | - |
| SYM_U / SYM_V | 1, -abs(v - val) / 1, -abs(u - val) | ridge offset |
| ASYM_U / ASYM_V | 1, -max(v - val, 0), -max(val - v, 0) (u for V) | ridge offset |
| HIPEND | 1, -max(abs(v), val2 (abs(u) - val)) | ridge half length, hip slope / side slope |
| MANSARD | 1, -abs(v), -max(abs(v) - val, 0) | distance of the slope break from the ridge |

HIPEND covers hip (the hip planes reach the eave at the ends), half-hip (they stop above it) and
pyramid (ridge length 0). A grid search runs over rows (val, val2) of a (m, 2) array.

Least squares go through the normal equations (at most 3 unknowns, coordinates centred on the
footprint) solved by Gaussian elimination with partial pivoting; a column without information (pivot
below 1e-12 of the diagonal) gets coefficient 0, the least-squares solution a pseudo-inverse gives.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FLAT, SHED, SYM_U, SYM_V, ASYM_U, ASYM_V, HIPEND, MANSARD = range(8)


@njit(cache=True, nogil=True, inline="always")
def _cols(kind, u, v, val, val2):
    """Columns 1 and 2 of the design row (column 0 is the constant 1; unused columns are 0)."""
    if kind == SHED:
        return u, v
    if kind == SYM_U:
        return -abs(v - val), 0.0
    if kind == SYM_V:
        return -abs(u - val), 0.0
    if kind == ASYM_U:
        return -max(v - val, 0.0), -max(val - v, 0.0)
    if kind == ASYM_V:
        return -max(u - val, 0.0), -max(val - u, 0.0)
    if kind == HIPEND:
        return -max(abs(v), val2 * (abs(u) - val)), 0.0
    if kind == MANSARD:
        return -abs(v), -max(abs(v) - val, 0.0)
    return 0.0, 0.0


@njit(cache=True, nogil=True)
def _ncols(kind):
    if kind == FLAT:
        return 1
    if kind in (SHED, ASYM_U, ASYM_V, MANSARD):
        return 3
    return 2


@njit(cache=True, nogil=True)
def _solve(A, b, k, beta):
    """Solve the k x k system A beta = b (A, b overwritten); dependent columns get 0."""
    scale = 0.0
    for i in range(k):
        scale = max(scale, abs(A[i, i]))
    tol = 1e-12 * max(scale, 1e-300)
    piv = np.empty(k, dtype=np.int64)
    used = np.zeros(k, dtype=np.bool_)
    for c in range(k):
        # partial pivoting over unused rows
        best, br = 0.0, -1
        for r in range(k):
            if not used[r] and abs(A[r, c]) > best:
                best, br = abs(A[r, c]), r
        if br < 0 or best <= tol:
            piv[c] = -1
            continue
        used[br] = True
        piv[c] = br
        for r in range(k):
            if r != br and A[r, c] != 0.0:
                f = A[r, c] / A[br, c]
                for cc in range(c, k):
                    A[r, cc] -= f * A[br, cc]
                b[r] -= f * b[br]
    for c in range(k):
        beta[c] = 0.0 if piv[c] < 0 else b[piv[c]] / A[piv[c], c]
    for c in range(k, 3):
        beta[c] = 0.0


@njit(cache=True, nogil=True)
def lstsq_shape(u, v, z, mask, kind, val, val2, beta):
    """Least squares of one shape over the points where mask is set; beta (3,) receives the result."""
    k = _ncols(kind)
    a00 = a01 = a02 = a11 = a12 = a22 = b0 = b1 = b2 = 0.0
    for i in range(z.shape[0]):
        if not mask[i]:
            continue
        c1, c2 = _cols(kind, u[i], v[i], val, val2)
        zi = z[i]
        a00 += 1.0
        a01 += c1
        a02 += c2
        a11 += c1 * c1
        a12 += c1 * c2
        a22 += c2 * c2
        b0 += zi
        b1 += c1 * zi
        b2 += c2 * zi
    A = np.empty((3, 3))
    A[0, 0], A[0, 1], A[0, 2] = a00, a01, a02
    A[1, 0], A[1, 1], A[1, 2] = a01, a11, a12
    A[2, 0], A[2, 1], A[2, 2] = a02, a12, a22
    b = np.empty(3)
    b[0], b[1], b[2] = b0, b1, b2
    _solve(A, b, k, beta)


@njit(cache=True, nogil=True)
def residuals(u, v, z, kind, val, val2, beta, r):
    for i in range(z.shape[0]):
        c1, c2 = _cols(kind, u[i], v[i], val, val2)
        r[i] = z[i] - (beta[0] + beta[1] * c1 + beta[2] * c2)


@njit(cache=True, nogil=True)
def robust_fit(u, v, z, kind, val, val2, inlier_m, beta, r, w):
    """Iteratively trimmed least squares (4 rounds: points beyond max(3 MAD sigmas, inlier_m) left
    out); beta, r (residuals of all points) and w (inlier mask) are outputs. The numpy twin is
    `roof_shapes.robust_lstsq`."""
    n = z.shape[0]
    k = _ncols(kind)
    for i in range(n):
        w[i] = True
    for i in range(3):
        beta[i] = 0.0
    new = np.empty(n, dtype=np.bool_)
    for _ in range(4):
        m = 0
        for i in range(n):
            m += w[i]
        if m < k + 1:
            break
        lstsq_shape(u, v, z, w, kind, val, val2, beta)
        residuals(u, v, z, kind, val, val2, beta, r)
        rw = np.empty(m)
        j = 0
        for i in range(n):
            if w[i]:
                rw[j] = r[i]
                j += 1
        med = np.median(rw)
        for i in range(m):
            rw[i] = abs(rw[i] - med)
        thr = max(3.0 * np.median(rw) * 1.4826, inlier_m)
        same = True
        for i in range(n):
            new[i] = abs(r[i]) <= thr
            if new[i] != w[i]:
                same = False
        if same:
            break
        for i in range(n):
            w[i] = new[i]
    residuals(u, v, z, kind, val, val2, beta, r)


@njit(cache=True, nogil=True)
def _cost(u, v, z, mask, kind, val, val2, c2, beta):
    lstsq_shape(u, v, z, mask, kind, val, val2, beta)
    cost = 0.0
    for i in range(z.shape[0]):
        c1, c2_ = _cols(kind, u[i], v[i], val, val2)
        d = z[i] - (beta[0] + beta[1] * c1 + beta[2] * c2_)
        cost += min(d * d, c2)
    return cost


@njit(cache=True, nogil=True)
def _screen(u, v, z, mask, kind, values, c2, stride):
    """The row (index) of the grid `values` (m, 2) with the lowest truncated cost: every `stride`-th value first, then the
    values between the best coarse value's neighbours (the cost is smooth in the ridge position);
    stride 1 screens the whole grid (`roof_shapes.grid_fit`)."""
    beta = np.zeros(3)
    m = values.shape[0]
    best_t, best_cost = 0, np.inf
    for t in range(0, m, stride):
        cost = _cost(u, v, z, mask, kind, values[t, 0], values[t, 1], c2, beta)
        if cost < best_cost - 1e-12:
            best_t, best_cost = t, cost
    if stride > 1:
        lo, hi = max(best_t - stride + 1, 0), min(best_t + stride - 1, m - 1)
        coarse = best_t
        for t in range(lo, hi + 1):
            if t % stride == 0 and t != coarse:
                continue
            if t == coarse:
                continue
            cost = _cost(u, v, z, mask, kind, values[t, 0], values[t, 1], c2, beta)
            if cost < best_cost - 1e-12 or (abs(cost - best_cost) <= 1e-12 and t < best_t):
                best_t, best_cost = t, cost
    return best_t


@njit(cache=True, nogil=True)
def grid_fit(u, v, z, kind, values, inlier_m, c2, beta, r, w, stride=1):
    """Screen the grid of `values` (m, 2: val, val2 per row) with plain least squares (truncated
    cost), fit the best robustly, screen again on its inliers and fit the winner robustly
    (`roof_shapes.grid_fit` is the numpy twin). Returns the chosen row."""
    n = z.shape[0]
    allm = np.ones(n, dtype=np.bool_)
    t = _screen(u, v, z, allm, kind, values, c2, stride)
    robust_fit(u, v, z, kind, values[t, 0], values[t, 1], inlier_m, beta, r, w)
    if values.shape[0] > 1:
        m = 0
        for i in range(n):
            m += w[i]
        if m > 3:
            t = _screen(u, v, z, w, kind, values, c2, stride)
    robust_fit(u, v, z, kind, values[t, 0], values[t, 1], inlier_m, beta, r, w)
    return t


@njit(cache=True, nogil=True)
def eval_shape(kind, val, val2, beta, u, v):
    out = np.empty(u.shape[0])
    for i in range(u.shape[0]):
        c1, c2 = _cols(kind, u[i], v[i], val, val2)
        out[i] = beta[0] + beta[1] * c1 + beta[2] * c2
    return out


@njit(cache=True, nogil=True, inline="always")
def _triple_plane(x, y, z, i0, i1, i2):
    """(a, b, c, ok) of the plane z = a x + b y + c through three points (Cramer's rule)."""
    x0, y0, z0 = x[i0], y[i0], z[i0]
    x1, y1, z1 = x[i1], y[i1], z[i1]
    x2, y2, z2 = x[i2], y[i2], z[i2]
    det = x0 * (y1 - y2) - y0 * (x1 - x2) + (x1 * y2 - x2 * y1)
    if abs(det) <= 1e-6:
        return 0.0, 0.0, 0.0, False
    a = (z0 * (y1 - y2) - y0 * (z1 - z2) + (z1 * y2 - z2 * y1)) / det
    b = (x0 * (z1 - z2) - z0 * (x1 - x2) + (x1 * z2 - x2 * z1)) / det
    c = (x0 * (y1 * z2 - y2 * z1) - y0 * (x1 * z2 - x2 * z1) + z0 * (x1 * y2 - x2 * y1)) / det
    return a, b, c, True


@njit(cache=True, nogil=True)
def _count(x, y, z, free, step, a, b, c, tol, beat):
    """Points of free[::step] within tol of the plane; stops early (returns <= beat) once the count
    can no longer exceed `beat` (-1: count all)."""
    nf = free.shape[0]
    cnt = 0
    left = (nf + step - 1) // step
    for j in range(0, nf, step):
        left -= 1
        q = free[j]
        if abs(a * x[q] + b * y[q] + c - z[q]) < tol:
            cnt += 1
        elif beat >= 0 and cnt + left <= beat:
            return cnt
    return cnt


@njit(cache=True, nogil=True)
def ransac_best(x, y, z, free, tri, tol, max_grad, sub, keep):
    """One round of sequential RANSAC: the plane through each sampled triple (indices into free) that
    is not steeper than max_grad, scored by the number of free points within tol; returns (a, b, c,
    count) of the first best (count -1 when no triple qualified).

    With more than 2 `sub` free points, every triple is first scored on an even subset of about `sub`
    points and only the `keep` best are counted on all (preemptive RANSAC); `sub` 0 counts every
    triple on all points, as the numpy reference `roof_segments.ransac_planes_reference` does."""
    nf = free.shape[0]
    nt = tri.shape[0]
    step = 1
    if sub > 0 and nf > 2 * sub:
        step = nf // sub
    ta = np.empty(nt)
    tb = np.empty(nt)
    tc = np.empty(nt)
    score = np.full(nt, -1, dtype=np.int64)
    for t in range(nt):
        a, b, c, ok = _triple_plane(x, y, z, free[tri[t, 0]], free[tri[t, 1]], free[tri[t, 2]])
        if not ok or np.hypot(a, b) >= max_grad:
            continue
        ta[t], tb[t], tc[t] = a, b, c
        score[t] = _count(x, y, z, free, step, a, b, c, tol, -1) if step > 1 else 0
    if step > 1:
        order = np.argsort(-score, kind="mergesort")  # stable: ties keep the draw order
        cand = order[: min(keep, nt)]
        cand = np.sort(cand)
    else:
        cand = np.arange(nt)
    best = -1
    ba = bb = bc = 0.0
    for t in cand:
        if score[t] < 0:
            continue
        cnt = _count(x, y, z, free, 1, ta[t], tb[t], tc[t], tol, best)
        if cnt > best:
            best = cnt
            ba, bb, bc = ta[t], tb[t], tc[t]
    return ba, bb, bc, best


@njit(cache=True, nogil=True)
def nearest_other(u, v, su, sv, own):
    """For every point (u, v) the index into (su, sv) of its nearest point, skipping index own[i]
    (the point itself when it is one of them, else -1); ties go to the lowest index. A grid of cells
    about two points wide is searched ring by ring until no closer point can remain."""
    n = u.shape[0]
    m = su.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    if m == 0:
        return out
    x0, x1, y0, y1 = su.min(), su.max(), sv.min(), sv.max()
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    cell = max(np.sqrt(2.0 * area / m), 1e-3)
    nx = int((x1 - x0) / cell) + 1
    ny = int((y1 - y0) / cell) + 1
    cnt = np.zeros(nx * ny + 1, dtype=np.int64)
    cj = np.empty(m, dtype=np.int64)
    for j in range(m):
        cx = min(int((su[j] - x0) / cell), nx - 1)
        cy = min(int((sv[j] - y0) / cell), ny - 1)
        cj[j] = cy * nx + cx
        cnt[cj[j] + 1] += 1
    for c in range(nx * ny):
        cnt[c + 1] += cnt[c]
    order = np.empty(m, dtype=np.int64)
    fill = cnt[:-1].copy()
    for j in range(m):  # stable: indices ascend within a cell
        order[fill[cj[j]]] = j
        fill[cj[j]] += 1
    for i in range(n):
        qx = min(max(int((u[i] - x0) / cell), -1), nx)  # may lie just outside the grid
        qy = min(max(int((v[i] - y0) / cell), -1), ny)
        best = np.inf
        bj = -1
        ring = 0
        while True:
            for gy in range(qy - ring, qy + ring + 1):
                if gy < 0 or gy >= ny:
                    continue
                edge_row = gy == qy - ring or gy == qy + ring
                step = 1 if edge_row else 2 * ring
                gx = qx - ring
                while gx <= qx + ring:
                    if 0 <= gx < nx:
                        c = gy * nx + gx
                        for k in range(cnt[c], cnt[c + 1]):
                            j = order[k]
                            if j == own[i]:
                                continue
                            du = u[i] - su[j]
                            dv = v[i] - sv[j]
                            d = du * du + dv * dv
                            if d < best or (d == best and j < bj):
                                best = d
                                bj = j
                    if step == 0:
                        break
                    gx += step
            # every point not yet visited lies at least `ring * cell` away from the query
            if bj >= 0 and (ring * cell) ** 2 >= best:
                break
            if qx - ring < 0 and qy - ring < 0 and qx + ring >= nx and qy + ring >= ny:
                break
            ring += 1
        out[i] = bj
    return out


def nearest_other_reference(u, v, su, sv, own):
    d = (u[:, None] - su[None, :]) ** 2 + (v[:, None] - sv[None, :]) ** 2
    rows = np.flatnonzero(own >= 0)
    d[rows, own[rows]] = np.inf
    return np.argmin(d, axis=1)
