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
def _last_row_with_tan_at_least(tan_elev, value, strict):  # pragma: no cover
    """Largest row index whose tan(elevation) >= value (> value when `strict`); tan_elev decreases with
    the row; -1 if none."""
    lo, hi = 0, tan_elev.size  # rows [0, lo) pass
    while lo < hi:
        mid = (lo + hi) // 2
        if tan_elev[mid] > value or (not strict and tan_elev[mid] == value):
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True)
def _unfilled(parent, slot):  # pragma: no cover
    """Largest unfilled slot <= `slot` (slot = row + 1; slot 0: none), with path halving."""
    while parent[slot] != slot:
        parent[slot] = parent[parent[slot]]
        slot = parent[slot]
    return slot


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
    # union-find over rows: each painted row links to the next row above it, so painting a range skips
    # what is painted already (crowns near the camera cover the same rows for many samples)
    parent = np.empty(height + 1, dtype=np.int64)
    for c in range(width):
        sb = math.sin(bearings[c])
        cb = math.cos(bearings[c])
        filled[:] = False
        for k in range(height + 1):
            parent[k] = k
        for j in range(ns):
            r = _unfilled(parent, height) - 1  # lowest row not painted yet
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
                above = _last_row_with_tan_at_least(tan_elev, (slab_hi[cell] - z) / d, True)
                r_bot = _last_row_with_tan_at_least(tan_elev, (slab_lo[cell] - z) / d, False)
                rr = _unfilled(parent, min(r_bot, r) + 1) - 1
                while rr > above:
                    filled[rr] = True
                    parent[rr + 1] = rr
                    for b in range(3):
                        v = slab_rgb[cell, b] * (1.0 - fade) + horizon_rgb[b] * fade
                        out[rr, c, b] = np.uint8(min(255.0, max(0.0, math.floor(v + 0.5))))
                    rr = _unfilled(parent, rr) - 1
                r = _unfilled(parent, height) - 1
            slope = (top[cell] - z) / d
            k = kind[cell]
            lab = label[cell]
            while r >= 0 and tan_elev[r] <= slope:
                filled[r] = True
                parent[r + 1] = r
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
                r = _unfilled(parent, r) - 1
        for rr in range(height):
            if not filled[rr]:
                for b in range(3):
                    out[rr, c, b] = np.uint8(sky_rgb[rr, b])
            if nadir[rr]:
                for b in range(3):
                    out[rr, c, b] = np.uint8(vehicle_rgb[b])
