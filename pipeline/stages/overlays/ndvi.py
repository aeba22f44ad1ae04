"""NDVI from the orthophoto's red and near-infrared bands, and the land-cover split used by the overlays.

NDVI = (NIR - red) / (NIR + red). With the normalised surface model (nDSM = surface - terrain):

    code 0  no data       NDVI or nDSM unknown
    code 1  sealed        NDVI < threshold (roofs, paving, bare ground: everything not green)
    code 2  low green     NDVI >= threshold and nDSM < tree_min_height (lawn, shrubs, green roofs)
    code 3  tree canopy   NDVI >= threshold and nDSM >= tree_min_height

Green share = (2 + 3) / cells with data; sealed share = 1 / cells with data; tree share = 3 / cells with data.
A green cell with unknown nDSM counts as low green (trees need a measured height).
"""

from __future__ import annotations

import numpy as np

NODATA, SEALED, LOW_GREEN, TREE = 0, 1, 2, 3
LANDCOVER_NAMES = {NODATA: "no data", SEALED: "sealed", LOW_GREEN: "low green", TREE: "tree canopy"}


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """float32 NDVI in [-1, 1]; NaN where a band has no data or both are 0."""
    r = np.asarray(red, dtype=np.float32)
    n = np.asarray(nir, dtype=np.float32)
    s = n + r
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (n - r) / s
    out[~np.isfinite(out) | (s == 0)] = np.nan
    return out.astype(np.float32)


def classify_landcover(
    ndvi_values: np.ndarray, ndsm: np.ndarray | None, ndvi_threshold: float, tree_min_height_m: float
) -> np.ndarray:
    """uint8 land-cover codes (see module docstring)."""
    v = np.asarray(ndvi_values)
    ok = np.isfinite(v)
    green = ok & (v >= ndvi_threshold)
    out = np.zeros(v.shape, dtype=np.uint8)
    out[ok & ~green] = SEALED
    out[green] = LOW_GREEN
    if ndsm is not None:
        tall = np.isfinite(ndsm) & (ndsm >= tree_min_height_m)
        out[green & tall] = TREE
    return out
