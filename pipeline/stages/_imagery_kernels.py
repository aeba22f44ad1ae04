"""Area-average warp kernel of the XYZ pyramid's finest zoom (numba), with its pure-numpy reference.

A target pixel takes the mean of the source pixels under the bounding box of its footprint in source pixel
coordinates, each source pixel weighted by the area it shares with the box (GDAL's `average` resampling).
The area integral comes from a summed-area table: the integral of a piecewise-constant image is bilinear
inside each cell, so four bilinear look-ups of the table give it exactly.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def summed_area(band: np.ndarray) -> np.ndarray:
    """(H, W) -> (H+1, W+1) int64 table: entry [j, i] = sum of band[:j, :i] (exact)."""
    h, w = band.shape
    sat = np.empty((h + 1, w + 1), dtype=np.int64)
    summed_area_into(band, sat)
    return sat


@njit(cache=True, nogil=True)
def summed_area_into(band: np.ndarray, sat: np.ndarray) -> None:
    """`summed_area` of `band` written into `sat` ((H+1, W+1) int64, any prior content)."""
    h, w = band.shape
    sat[0, :] = 0
    for j in range(h):
        sat[j + 1, 0] = 0
        row = 0
        for i in range(w):
            row += band[j, i]
            sat[j + 1, i + 1] = sat[j, i + 1] + row


@njit(cache=True, nogil=True)
def refine_lattice(coarse: np.ndarray, step: int) -> np.ndarray:
    """Bilinear refinement of values known every `step` pixels ((m+1, n+1)) to every pixel ((m*step+1,
    n*step+1))."""
    m = coarse.shape[0] - 1
    n = coarse.shape[1] - 1
    out = np.empty((m * step + 1, n * step + 1), dtype=np.float64)
    for r in range(m * step + 1):
        kr = min(r // step, m - 1)
        fr = (r - kr * step) / step
        for c in range(n * step + 1):
            kc = min(c // step, n - 1)
            fc = (c - kc * step) / step
            top = coarse[kr, kc] * (1.0 - fc) + coarse[kr, kc + 1] * fc
            bottom = coarse[kr + 1, kc] * (1.0 - fc) + coarse[kr + 1, kc + 1] * fc
            out[r, c] = top * (1.0 - fr) + bottom * fr
    return out


def summed_area_reference(band: np.ndarray) -> np.ndarray:
    """numpy form of `summed_area` (tests)."""
    sat = np.zeros((band.shape[0] + 1, band.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = band.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
    return sat


@njit(cache=True, nogil=True, inline="always")
def _sat_at(sat: np.ndarray, x: float, y: float) -> float:
    i = min(int(x), sat.shape[1] - 2)
    j = min(int(y), sat.shape[0] - 2)
    fx = x - i
    fy = y - j
    top = sat[j, i] * (1.0 - fx) + sat[j, i + 1] * fx
    bottom = sat[j + 1, i] * (1.0 - fx) + sat[j + 1, i + 1] * fx
    return top * (1.0 - fy) + bottom * fy


@njit(cache=True, nogil=True, inline="always")
def _box(
    ex: np.ndarray, ey: np.ndarray, r: int, c: int, geo: np.ndarray, hs: int, ws: int
) -> tuple[float, float, float, float]:
    """Footprint box of target pixel (r, c) in source pixel coordinates, clipped to the (hs, ws) source.
    `geo` = (x origin, x pixel size, y origin, y pixel size) of the source window (north-up)."""
    x0 = np.inf
    x1 = -np.inf
    y0 = np.inf
    y1 = -np.inf
    for dr in range(2):
        for dc in range(2):
            x = (ex[r + dr, c + dc] - geo[0]) / geo[1]
            y = (ey[r + dr, c + dc] - geo[2]) / geo[3]
            x0 = min(x0, x)
            x1 = max(x1, x)
            y0 = min(y0, y)
            y1 = max(y1, y)
    return max(x0, 0.0), min(x1, float(ws)), max(y0, 0.0), min(y1, float(hs))


@njit(cache=True, nogil=True)
def covered(ex: np.ndarray, ey: np.ndarray, geo: np.ndarray, hs: int, ws: int, cov: np.ndarray) -> None:
    """Mark the target pixels whose footprint box (corner coordinates `ex`, `ey`: (h+1, w+1) in the source
    CRS) overlaps the (hs, ws) source window."""
    h, w = cov.shape
    for r in range(h):
        for c in range(w):
            x0, x1, y0, y1 = _box(ex, ey, r, c, geo, hs, ws)
            if x1 > x0 and y1 > y0:
                cov[r, c] = True


@njit(cache=True, nogil=True)
def box_average_band(
    sat: np.ndarray,
    ex: np.ndarray,
    ey: np.ndarray,
    geo: np.ndarray,
    take: np.ndarray,
    out: np.ndarray,
    band: int,
) -> None:
    """`out[r, c, band]` = area-weighted mean of the source under the footprint box of every target pixel
    in `take` (`sat`: summed-area table (H+1, W+1) of the source window band)."""
    h, w = take.shape
    hs = sat.shape[0] - 1
    ws = sat.shape[1] - 1
    for r in range(h):
        for c in range(w):
            if not take[r, c]:
                continue
            x0, x1, y0, y1 = _box(ex, ey, r, c, geo, hs, ws)
            if x1 <= x0 or y1 <= y0:
                continue
            total = _sat_at(sat, x1, y1) - _sat_at(sat, x0, y1) - _sat_at(sat, x1, y0) + _sat_at(sat, x0, y0)
            v = np.floor(total / ((x1 - x0) * (y1 - y0)) + 0.5)
            out[r, c, band] = np.uint8(min(max(v, 0.0), 255.0))


def summed_area_bands(src: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (B, H+1, W+1) int64: `summed_area` of every band (filled in place, band by band)."""
    nb, h, w = src.shape
    sat = np.empty((nb, h + 1, w + 1), dtype=np.int64)
    for b in range(nb):
        summed_area_into(src[b], sat[b])
    return sat


@njit(cache=True, nogil=True)
def box_average_bands(
    sats: np.ndarray, ex: np.ndarray, ey: np.ndarray, geo: np.ndarray, filled: np.ndarray, out: np.ndarray
) -> None:
    """`covered` + `box_average_band` for every band of `sats` ((B, H+1, W+1) summed-area tables) in one
    pass: each target pixel not yet `filled` whose footprint box overlaps the source window gets the
    area-weighted mean of every band (`out[r, c, b]`, the same arithmetic as `box_average_band`) and is
    marked filled. The footprint box is computed once per pixel instead of once per band and test."""
    h, w = filled.shape
    nb = sats.shape[0]
    hs = sats.shape[1] - 1
    ws = sats.shape[2] - 1
    for r in range(h):
        for c in range(w):
            if filled[r, c]:
                continue
            x0, x1, y0, y1 = _box(ex, ey, r, c, geo, hs, ws)
            if x1 <= x0 or y1 <= y0:
                continue
            area = (x1 - x0) * (y1 - y0)
            for b in range(nb):
                sat = sats[b]
                total = (
                    _sat_at(sat, x1, y1) - _sat_at(sat, x0, y1) - _sat_at(sat, x1, y0) + _sat_at(sat, x0, y0)
                )
                v = np.floor(total / area + 0.5)
                out[r, c, b] = np.uint8(min(max(v, 0.0), 255.0))
            filled[r, c] = True


@njit(cache=True, nogil=True)
def downsample_quad(quad: np.ndarray, out: np.ndarray) -> bool:
    """(2n, 2n, 4) uint8 RGBA -> (n, n, 4): 2 x 2 means, colour weighted by alpha, alpha the plain mean,
    half-up integer rounding (as `downsample_rgba`). Returns whether any pixel has alpha > 0."""
    n = out.shape[0]
    anything = False
    for r in range(n):
        for c in range(n):
            sa = 0
            s0 = 0
            s1 = 0
            s2 = 0
            for dr in range(2):
                for dc in range(2):
                    a = int(quad[2 * r + dr, 2 * c + dc, 3])
                    sa += a
                    s0 += a * quad[2 * r + dr, 2 * c + dc, 0]
                    s1 += a * quad[2 * r + dr, 2 * c + dc, 1]
                    s2 += a * quad[2 * r + dr, 2 * c + dc, 2]
            if sa > 0:
                half = sa // 2
                out[r, c, 0] = (s0 + half) // sa
                out[r, c, 1] = (s1 + half) // sa
                out[r, c, 2] = (s2 + half) // sa
                anything = True
            else:
                out[r, c, 0] = 0
                out[r, c, 1] = 0
                out[r, c, 2] = 0
            out[r, c, 3] = (sa + 2) // 4
    return anything


@njit(cache=True, nogil=True)
def halve_nodata0(src: np.ndarray, out: np.ndarray) -> None:
    """(bands, 2h, 2w) uint8 -> (bands, h, w): per band the mean of each 2 x 2 block over its non-zero
    pixels (0 = nodata), half-up integer rounding, 0 where all four are 0. GDAL's `average` overview of
    an exact halving with nodata 0 gives the same values (checked in the tests against GDAL's COG)."""
    nb, h, w = out.shape
    for b in range(nb):
        for r in range(h):
            for c in range(w):
                s = 0
                n = 0
                for dr in range(2):
                    for dc in range(2):
                        v = int(src[b, 2 * r + dr, 2 * c + dc])
                        if v != 0:
                            s += v
                            n += 1
                out[b, r, c] = (s + n // 2) // n if n > 0 else 0


def box_average_reference(
    src: np.ndarray, ex: np.ndarray, ey: np.ndarray, geo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pure-numpy reference of `covered` + `box_average_band` for one source window `src` (B, H, W):
    ((h, w, B) uint8, (h, w) covered), by explicit per-pixel area weights (slow: tests on small grids)."""
    bands, hs, ws = src.shape
    sx = (ex - geo[0]) / geo[1]
    sy = (ey - geo[2]) / geo[3]
    h, w = sx.shape[0] - 1, sx.shape[1] - 1
    out = np.zeros((h, w, bands), dtype=np.uint8)
    cov = np.zeros((h, w), dtype=bool)
    for r in range(h):
        for c in range(w):
            xs = [sx[r, c], sx[r, c + 1], sx[r + 1, c], sx[r + 1, c + 1]]
            ys = [sy[r, c], sy[r, c + 1], sy[r + 1, c], sy[r + 1, c + 1]]
            x0, x1 = max(min(xs), 0.0), min(max(xs), float(ws))
            y0, y1 = max(min(ys), 0.0), min(max(ys), float(hs))
            if x1 <= x0 or y1 <= y0:
                continue
            cov[r, c] = True
            i = np.arange(int(np.floor(x0)), int(np.ceil(x1)))
            j = np.arange(int(np.floor(y0)), int(np.ceil(y1)))
            wx = np.minimum(i + 1, x1) - np.maximum(i, x0)
            wy = np.minimum(j + 1, y1) - np.maximum(j, y0)
            wgt = np.outer(wy, wx)
            for b in range(bands):
                v = (src[b][np.ix_(j, i)] * wgt).sum() / wgt.sum()
                out[r, c, b] = np.uint8(min(max(np.floor(v + 0.5), 0), 255))
    return out, cov
