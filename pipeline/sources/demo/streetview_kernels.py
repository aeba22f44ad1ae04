"""numba kernel of the panorama renderer (`streetview.Scene.render`; `Scene.render_numpy` is its
pure-numpy reference, compared by the tests).

One column per azimuth: march outwards along the column's ray over the height field. At each sample the
rows whose ray passes below the solid top (terrain, car, building) or through the floating slab (tree
crown) of the sample's cell and that are not painted yet get that surface's colour; the column is done
when every row is painted (the rest is sky). This is "the first sample inside a solid along each pixel's
ray", which the reference computes pixel by pixel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

KIND_BUILDING = 1


@njit(cache=True)
def _first_row_at_or_below(tan_elev, value):  # pragma: no cover
    """Largest row index whose tan(elevation) >= value (tan_elev decreases with the row), -1 if none."""
    lo, hi = 0, tan_elev.size  # rows [0, lo) have tan >= value
    while lo < hi:
        mid = (lo + hi) // 2
        if tan_elev[mid] >= value:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True)
def render_columns_nb(  # pragma: no cover (compiled; the numpy reference is tested against it)
    top,  # (h*w,) float64 absolute top of the solid part (terrain, car, building) per cell
    kind,  # (h*w,) uint8 kind of the solid part
    rgb,  # (h*w, 3) float64 colour of the solid part's top surface
    label,  # (h*w,) int32 structure index + 1
    slab_lo,  # (h*w,) float64 floating slab (tree crown) bottom, +inf if none
    slab_hi,  # (h*w,) float64 its top, -inf if none
    slab_rgb,  # (h*w, 3) float64
    eave,  # (n,) absolute eave height per label
    base,  # (n,) absolute base height per label
    facade,  # (n, 3) facade colour per label
    x0,
    y1,
    w,
    h,
    res,
    x,
    y,
    z,
    bearings,  # (width,) radians
    dist,  # (ns,) march distances
    tan_elev,  # (height,) tan of each row's elevation (decreasing)
    nadir,  # (height,) bool: the vehicle's roof
    sky_rgb,  # (height, 3)
    horizon_rgb,  # (3,)
    vehicle_rgb,  # (3,)
    cos_a,
    sin_a,
    window_factor,
    out,  # (height, width, 3) uint8
):
    width = bearings.size
    height = tan_elev.size
    ns = dist.size
    col_rgb = np.empty(3)
    filled = np.zeros(height, dtype=np.bool_)
    for c in range(width):
        sb = math.sin(bearings[c])
        cb = math.cos(bearings[c])
        filled[:] = False
        r = height - 1  # lowest row not painted yet (rows below it are all painted)
        for j in range(ns):
            if r < 0:
                break
            d = dist[j]
            sx = x + sb * d
            sy = y + cb * d
            ci = min(max(int((sx - x0) / res), 0), w - 1)
            ri = min(max(int((y1 - sy) / res), 0), h - 1)
            cell = ri * w + ci
            fade = min(0.35, d / 600.0)
            # floating slab: the rows whose ray lies inside [lo, hi] at this distance
            if slab_hi[cell] >= slab_lo[cell]:
                r_top = _first_row_at_or_below(tan_elev, (slab_hi[cell] - z) / d)
                r_bot = _first_row_at_or_below(tan_elev, (slab_lo[cell] - z) / d)
                for rr in range(min(r_bot, r), r_top, -1):
                    if rr < 0 or filled[rr] or tan_elev[rr] > (slab_hi[cell] - z) / d:
                        continue
                    filled[rr] = True
                    for b in range(3):
                        v = slab_rgb[cell, b] * (1.0 - fade) + horizon_rgb[b] * fade
                        out[rr, c, b] = np.uint8(min(255.0, max(0.0, math.floor(v + 0.5))))
            slope = (top[cell] - z) / d
            k = kind[cell]
            lab = label[cell]
            while r >= 0 and (filled[r] or tan_elev[r] <= slope):
                if filled[r]:
                    r -= 1
                    continue
                filled[r] = True
                zhit = z + d * tan_elev[r]
                if k == KIND_BUILDING and zhit < eave[lab]:
                    rel = (zhit - base[lab]) % 3.0
                    along = (sx * cos_a + sy * sin_a) + (-sx * sin_a + sy * cos_a)
                    f = 1.0
                    if rel > 1.0 and rel < 2.3 and (along % 2.6) < 1.4:
                        f = window_factor
                    for b in range(3):
                        col_rgb[b] = facade[lab, b] * f
                else:
                    for b in range(3):
                        col_rgb[b] = rgb[cell, b]
                for b in range(3):
                    v = col_rgb[b] * (1.0 - fade) + horizon_rgb[b] * fade
                    out[r, c, b] = np.uint8(min(255.0, max(0.0, math.floor(v + 0.5))))
                r -= 1
        for rr in range(height):
            if not filled[rr]:
                for b in range(3):
                    out[rr, c, b] = np.uint8(sky_rgb[rr, b])
            if nadir[rr]:
                for b in range(3):
                    out[rr, c, b] = np.uint8(vehicle_rgb[b])
