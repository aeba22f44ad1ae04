"""numba kernel of `solids.check_solid` (one small solid per call: numpy's per-call overhead on rings of
a few vertices cost more than the arithmetic). Sums run in the order of the vertex ids of the rings,
as `np.bincount` in the numpy version did."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def solid_checks(V, idx, lens, ring_poly, ring_outer, npoly):
    """Per polygon: Newell vector of its outer ring (outer), net Newell vector over its rings (net),
    largest distance of its vertices from their mean plane along the unit outer normal (dev). Per ring:
    fewer than 3 vertices or a repeated vertex (bad_ring). Directed edges (a -> b, ids): the number of
    edges not used exactly once or whose opposite is not used exactly once, and the first of them in
    (a, b) order with both counts (edge: a, b, count, opposite count). The signed volume."""
    nr = lens.shape[0]
    nv = V.shape[0] + 1
    start = np.zeros(nr + 1, dtype=np.int64)
    for r in range(nr):
        start[r + 1] = start[r] + lens[r]
    n = start[nr]
    outer = np.zeros((npoly, 3))
    net = np.zeros((npoly, 3))
    bad_ring = np.zeros(nr, dtype=np.bool_)
    keys = np.empty(n, dtype=np.int64)
    for r in range(nr):
        s, e = start[r], start[r + 1]
        t0 = t1 = t2 = 0.0
        for t in range(s, e):
            a = idx[t]
            b = idx[s] if t + 1 == e else idx[t + 1]
            keys[t] = a * nv + b
            t0 += (V[a, 1] - V[b, 1]) * (V[a, 2] + V[b, 2])
            t1 += (V[a, 2] - V[b, 2]) * (V[a, 0] + V[b, 0])
            t2 += (V[a, 0] - V[b, 0]) * (V[a, 1] + V[b, 1])
            for u in range(s, t):
                if idx[u] == a:
                    bad_ring[r] = True
        if e - s < 3:
            bad_ring[r] = True
        p = ring_poly[r]
        if ring_outer[r]:
            outer[p, 0], outer[p, 1], outer[p, 2] = t0, t1, t2
        net[p, 0] += t0
        net[p, 1] += t1
        net[p, 2] += t2
    # planarity: distance of every vertex to the plane of its polygon (unit outer normal)
    norm = np.sqrt(outer[:, 0] ** 2 + outer[:, 1] ** 2 + outer[:, 2] ** 2)
    d = np.empty(n)
    total = np.zeros(npoly)
    count = np.zeros(npoly)
    for r in range(nr):
        p = ring_poly[r]
        m = max(norm[p], 1e-300)
        for t in range(start[r], start[r + 1]):
            a = idx[t]
            d[t] = V[a, 0] * (outer[p, 0] / m) + V[a, 1] * (outer[p, 1] / m) + V[a, 2] * (outer[p, 2] / m)
            total[p] += d[t]
            count[p] += 1.0
    dev = np.zeros(npoly)
    for r in range(nr):
        p = ring_poly[r]
        mean = total[p] / max(count[p], 1.0)
        for t in range(start[r], start[r + 1]):
            dev[p] = max(dev[p], abs(d[t] - mean))
    # closed, 2-manifold, consistently oriented: every directed edge once, its opposite once
    ks = np.sort(keys)
    n_bad = 0
    first = np.zeros(4, dtype=np.int64)
    i = 0
    while i < n:
        j = i
        while j < n and ks[j] == ks[i]:
            j += 1
        ce = j - i
        rev = (ks[i] % nv) * nv + ks[i] // nv
        lo = np.searchsorted(ks, rev)
        hi = np.searchsorted(ks, rev, side="right")
        crev = hi - lo
        if ce != 1 or crev != 1:
            if n_bad == 0:
                first[0], first[1], first[2], first[3] = ks[i] // nv, ks[i] % nv, ce, crev
            n_bad += 1
        i = j
    # outward: the volume (divergence theorem over the planar polygons) is positive
    c0 = np.zeros(3)
    if V.shape[0]:
        for k in range(3):
            c0[k] = V[:, k].sum() / V.shape[0]
    vol = 0.0
    r = 0
    for p in range(npoly):
        while r < nr and ring_poly[r] < p:
            r += 1
        if r == nr or ring_poly[r] != p or start[r] == start[r + 1]:
            continue  # no rings, or an empty first ring (reported as a bad ring)
        a = idx[start[r]]
        vol += (
            net[p, 0] / 2.0 * (V[a, 0] - c0[0])
            + net[p, 1] / 2.0 * (V[a, 1] - c0[1])
            + net[p, 2] / 2.0 * (V[a, 2] - c0[2])
        )
    return outer, net, norm, dev, bad_ring, n_bad, first, vol / 3.0
