"""numba kernel of the terrain textures: area-average resampling of an orthophoto window to the finest
level's texels (the pure-numpy reference is `chunks.area_resample` + rounding, compared in the tests)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def area_resample_u8(
    src: np.ndarray, ok: np.ndarray, idx: np.ndarray, w: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """(bands, n, n) source values (any numeric dtype) + (n, n) valid -> ((bands, p, p) uint8, (p, p)
    valid).

    Separable: destination row/column j takes source rows/columns idx[j, k] with weights w[j, k] (the
    area they share, `chunks.area_weights`). A texel is the weighted mean of the valid source pixels under
    it, times `scale`, rounded half away from zero and
    clipped to 0..255; texels without a valid pixel are 0 and invalid. Sums in float64, fixed order."""
    nb, n, _ = src.shape
    p, kk = idx.shape
    out = np.zeros((nb, p, p), dtype=np.uint8)
    valid = np.zeros((p, p), dtype=np.bool_)
    okf = np.empty(n, dtype=np.float64)
    tmp = np.empty((nb, n), dtype=np.float64)  # one destination row, all source columns
    tmpw = np.empty(n, dtype=np.float64)
    den = np.empty(p, dtype=np.float64)
    for j in range(p):
        tmp[:] = 0.0
        tmpw[:] = 0.0
        for k in range(kk):
            wt = w[j, k]
            if wt <= 0.0:
                continue
            r = idx[j, k]
            for c in range(n):
                okf[c] = 1.0 if ok[r, c] else 0.0
                tmpw[c] += wt * okf[c]
            for b in range(nb):
                for c in range(n):
                    if okf[c] > 0.0:
                        tmp[b, c] += wt * src[b, r, c]
        for i in range(p):
            d = 0.0
            for k in range(kk):
                d += w[i, k] * tmpw[idx[i, k]]
            den[i] = d
            valid[j, i] = d > 1e-9
        for b in range(nb):
            for i in range(p):
                if not valid[j, i]:
                    continue
                s = 0.0
                for k in range(kk):
                    s += w[i, k] * tmp[b, idx[i, k]]
                v = np.floor(s / den[i] * scale + 0.5)
                out[b, j, i] = np.uint8(min(max(v, 0.0), 255.0))
    return out, valid
