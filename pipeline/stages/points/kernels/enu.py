"""Point kernel: trilinear interpolation of an exact PROJ lattice (source CRS -> project ENU), straight from
the file's integer coordinates to integer millimetres, fused with the checks and keys of a decode unit."""

from __future__ import annotations

import numba as nb
import numpy as np

from pipeline.stages.points.kernels.keys import _morton


@nb.njit(cache=True, nogil=True)
def _lattice_keys_kernel(
    ix, iy, iz, scale, offset, zf, lo, step, values, tol, origin, kshift, out, keys, ext
):
    """Trilinear interpolation of the lattice straight from the file's integer coordinates to integer ENU
    millimetres (out), fused with the checks and keys of a decode unit: the number of points outside the
    lattice (returned), the raw integer min/max (ext[0:3], ext[3:6]), the ENU min/max (ext[6:9], ext[9:12])
    and Morton keys of (xyz - origin) >> kshift (meaningful for points in the cube [origin, origin + 2^21 <<
    kshift): the caller checks the ENU extent)."""
    bad = 0
    n = ix.shape[0]
    big = np.int64(1) << 62
    r0, r1, r2 = big, big, big
    R0, R1, R2 = -big, -big, -big
    e0, e1, e2 = big, big, big
    E0, E1, E2 = -big, -big, -big
    nx, ny, nz = values.shape[0], values.shape[1], values.shape[2]
    # the 8 corner values of the current lattice cell (points in file order stay in one 50 m cell for
    # long runs): reloaded only when the cell changes
    corner = np.empty((3, 8), dtype=values.dtype)
    pcx, pcy, pcz = -1, -1, -1
    for i in range(n):
        xi = np.int64(ix[i])
        yi = np.int64(iy[i])
        zi = np.int64(iz[i])
        r0 = min(r0, xi)
        r1 = min(r1, yi)
        r2 = min(r2, zi)
        R0 = max(R0, xi)
        R1 = max(R1, yi)
        R2 = max(R2, zi)
        sx = xi * scale[0] + offset[0]
        sy = yi * scale[1] + offset[1]
        sz = (zi * scale[2] + offset[2]) * zf
        fx = (sx - lo[0]) / step[0]
        fy = (sy - lo[1]) / step[1]
        fz = (sz - lo[2]) / step[2]
        if fx < -tol or fy < -tol or fz < -tol or fx > nx - 1 + tol or fy > ny - 1 + tol or fz > nz - 1 + tol:
            bad += 1
        cx = min(max(int(np.floor(fx)), 0), nx - 2)
        cy = min(max(int(np.floor(fy)), 0), ny - 2)
        cz = min(max(int(np.floor(fz)), 0), nz - 2)
        if cx != pcx or cy != pcy or cz != pcz:
            for j in range(8):  # corner j = (cx + bit 0, cy + bit 1, cz + bit 2)
                for k in range(3):
                    corner[k, j] = values[cx + (j & 1), cy + ((j >> 1) & 1), cz + (j >> 2), k]
            pcx, pcy, pcz = cx, cy, cz
        tx = fx - cx
        ty = fy - cy
        tz = fz - cz
        for k in range(3):
            c00 = corner[k, 0] + (corner[k, 1] - corner[k, 0]) * tx
            c10 = corner[k, 2] + (corner[k, 3] - corner[k, 2]) * tx
            c01 = corner[k, 4] + (corner[k, 5] - corner[k, 4]) * tx
            c11 = corner[k, 6] + (corner[k, 7] - corner[k, 6]) * tx
            c0 = c00 + (c10 - c00) * ty
            c1 = c01 + (c11 - c01) * ty
            v = c0 + (c1 - c0) * tz
            out[i, k] = np.int32(np.floor(v * 1000.0 + 0.5))
        a = np.int64(out[i, 0])
        b = np.int64(out[i, 1])
        c = np.int64(out[i, 2])
        e0 = min(e0, a)
        e1 = min(e1, b)
        e2 = min(e2, c)
        E0 = max(E0, a)
        E1 = max(E1, b)
        E2 = max(E2, c)
        keys[i] = _morton((a - origin[0]) >> kshift, (b - origin[1]) >> kshift, (c - origin[2]) >> kshift)
    ext[0], ext[1], ext[2], ext[3], ext[4], ext[5] = r0, r1, r2, R0, R1, R2
    ext[6], ext[7], ext[8], ext[9], ext[10], ext[11] = e0, e1, e2, E0, E1, E2
    return bad


def lattice_to_enu_keys(ix, iy, iz, scale, offset, zf, lattice, origin_mm, key_shift):
    """ENU millimetres from the lattice + their Morton keys, in one pass, with the unit's extents.

    Returns (xyz int32 (N,3), keys uint64 (N,) (meaningful only when enu_min and enu_max lie in the cube
    [origin_mm, origin_mm + 2^21 << key_shift)), bad, raw_min (3,), raw_max (3,), enu_min (3,), enu_max
    (3,)); the extents are int64 (empty input: +-2^62)."""
    n = len(ix)
    out = np.empty((n, 3), dtype=np.int32)
    keys = np.empty(n, dtype=np.uint64)
    ext = np.empty(12, dtype=np.int64)
    origin = np.asarray(origin_mm, np.int64)
    bad = _lattice_keys_kernel(
        ix,
        iy,
        iz,
        np.asarray(scale, np.float64),
        np.asarray(offset, np.float64),
        float(zf),
        lattice.lo,
        lattice.step,
        lattice.values,
        1e-6,
        origin,
        np.int64(key_shift),
        out,
        keys,
        ext,
    )
    return out, keys, int(bad), *ext.reshape(4, 3)
