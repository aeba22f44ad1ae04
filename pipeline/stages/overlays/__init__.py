"""Planning overlays per parcel (GRZ, GFZ/volume estimates, sealed/green/tree shares) and their meshes."""

from __future__ import annotations

import numpy as np

from pipeline.styles.palettes import GRZ, GRZ_NO_VALUE

# GRZ classes shared by the 3D colours, the QML style and the report: the one palette in
# pipeline.styles.palettes.GRZ, as (upper bound, RGBA sRGB, label)
GRZ_CLASSES: list[tuple[float, tuple[int, int, int, int], str]] = list(GRZ)
NO_VALUE_COLOUR = GRZ_NO_VALUE


def grz_colours(grz: np.ndarray) -> np.ndarray:
    """(N,4) uint8 sRGB colours of GRZ values (grey for NaN)."""
    g = np.asarray(grz, dtype=np.float64)
    uppers = np.array([c[0] for c in GRZ_CLASSES])
    cols = np.array([c[1] for c in GRZ_CLASSES], dtype=np.uint8)
    k = np.searchsorted(uppers, np.nan_to_num(g, nan=0.0), side="right")
    out = cols[np.minimum(k, len(cols) - 1)]
    out[~np.isfinite(g)] = NO_VALUE_COLOUR
    return out
