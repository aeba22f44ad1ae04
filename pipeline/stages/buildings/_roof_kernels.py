"""numba kernels of the roof fitting (pipeline.stages.buildings.roofs); `nearest_other_reference` is the
numpy version the tests compare with."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def nearest_other(u, v, su, sv, own):
    """For every point (u, v) the index into (su, sv) of its nearest point, skipping index own[i]
    (the point itself when it is one of them, else -1). Brute force O(n m): roofs hold ~1e3 points."""
    n = u.shape[0]
    m = su.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        best = np.inf
        bj = -1
        for j in range(m):
            if j == own[i]:
                continue
            du = u[i] - su[j]
            dv = v[i] - sv[j]
            d = du * du + dv * dv
            if d < best:
                best = d
                bj = j
        out[i] = bj
    return out


def nearest_other_reference(u, v, su, sv, own):
    d = (u[:, None] - su[None, :]) ** 2 + (v[:, None] - sv[None, :]) ** 2
    rows = np.flatnonzero(own >= 0)
    d[rows, own[rows]] = np.inf
    return np.argmin(d, axis=1)
