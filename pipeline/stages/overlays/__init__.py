"""Planning overlays per parcel (GRZ, GFZ/volume estimates, sealed/green/tree shares) and their meshes."""

from __future__ import annotations

import numpy as np

# GRZ classes shared by the 3D colours, the QML style (pipeline/styles/parcels.qml) and the report:
# (upper bound, RGBA sRGB, label)
GRZ_CLASSES: list[tuple[float, tuple[int, int, int, int], str]] = [
    (0.2, (26, 150, 65, 255), "GRZ < 0.2"),
    (0.4, (166, 217, 106, 255), "0.2 - 0.4"),
    (0.6, (253, 174, 97, 255), "0.4 - 0.6"),
    (0.8, (215, 25, 28, 255), "0.6 - 0.8"),
    (float("inf"), (120, 0, 20, 255), "GRZ >= 0.8"),
]
NO_VALUE_COLOUR = (170, 170, 170, 255)


def grz_colours(grz: np.ndarray) -> np.ndarray:
    """(N,4) uint8 sRGB colours of GRZ values (grey for NaN)."""
    g = np.asarray(grz, dtype=np.float64)
    uppers = np.array([c[0] for c in GRZ_CLASSES])
    cols = np.array([c[1] for c in GRZ_CLASSES], dtype=np.uint8)
    k = np.searchsorted(uppers, np.nan_to_num(g, nan=0.0), side="right")
    out = cols[np.minimum(k, len(cols) - 1)]
    out[~np.isfinite(g)] = NO_VALUE_COLOUR
    return out
