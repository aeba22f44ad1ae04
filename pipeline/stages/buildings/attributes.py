"""From point statistics to the published building attributes: roof/base/height with fallbacks,
floors estimate and quality flags.

quality (one value): ok | vegetation_suspected | fallback_floors | fallback_default
flags (all that apply, '|'-joined): too_few_points, vegetation_suspected, fallback_floors,
fallback_default, base_from_dgm, base_guessed, clamped_height
base_source: ring | dgm | guessed
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class AttributeParams:
    min_points: int = 5
    min_ground_points: int = 3
    floor_height_m: float = 3.0
    default_height_m: float = 9.0
    ndvi_threshold: float = 0.3
    min_height_m: float = 1.0


def finalize_heights(
    stats: pd.DataFrame,
    anzahlgs: np.ndarray,
    ndvi: np.ndarray | None,
    dgm_low: np.ndarray | None,
    params: AttributeParams,
) -> pd.DataFrame:
    """Per building: roof_height, base_height, height, base_source, floors_estimate, floors_is_estimate,
    quality, flags. `stats` comes from heights.summarise (roof_sample, n_points, ground_sample, n_ground)."""
    n = len(stats)
    flags: list[list[str]] = [[] for _ in range(n)]
    roof_s = stats["roof_sample"].to_numpy(dtype=np.float64)
    npts = stats["n_points"].to_numpy()
    ground = stats["ground_sample"].to_numpy(dtype=np.float64)
    ng = stats["n_ground"].to_numpy()
    floors_in = np.asarray(anzahlgs, dtype=np.float64)
    has_pts = (npts >= params.min_points) & np.isfinite(roof_s)

    base = np.where(ng >= params.min_ground_points, ground, np.nan)
    source = np.where(np.isfinite(base), "ring", "").astype(object)
    if dgm_low is not None:
        use = ~np.isfinite(base) & np.isfinite(dgm_low)
        base[use] = dgm_low[use]
        source[use] = "dgm"
    missing = ~np.isfinite(base)
    if missing.any():
        known = base[~missing]
        guess = float(np.median(known)) if known.size else 0.0
        base[missing] = guess
        source[missing] = "guessed"

    height = np.where(has_pts, roof_s - base, np.nan)
    clamped = has_pts & (height < params.min_height_m)
    height[clamped] = params.min_height_m
    with_floors = ~has_pts & np.isfinite(floors_in) & (floors_in > 0)
    height[with_floors] = floors_in[with_floors] * params.floor_height_m
    default = ~has_pts & ~with_floors
    height[default] = params.default_height_m
    roof = base + height

    ndvi_arr = np.zeros(n) if ndvi is None else np.nan_to_num(np.asarray(ndvi, dtype=np.float64), nan=0.0)
    veg = has_pts & (ndvi_arr > params.ndvi_threshold)
    quality = np.full(n, "ok", dtype=object)
    quality[veg] = "vegetation_suspected"
    quality[with_floors] = "fallback_floors"
    quality[default] = "fallback_default"

    floors_known = np.isfinite(floors_in) & (floors_in > 0)
    floors = np.where(
        floors_known, floors_in, np.maximum(1.0, np.round(height / params.floor_height_m))
    ).astype(np.int32)

    for i in np.flatnonzero(~has_pts):
        flags[i].append("too_few_points")
    for i in np.flatnonzero(veg):
        flags[i].append("vegetation_suspected")
    for i in np.flatnonzero(with_floors):
        flags[i].append("fallback_floors")
    for i in np.flatnonzero(default):
        flags[i].append("fallback_default")
    for i in np.flatnonzero(source == "dgm"):
        flags[i].append("base_from_dgm")
    for i in np.flatnonzero(source == "guessed"):
        flags[i].append("base_guessed")
    for i in np.flatnonzero(clamped):
        flags[i].append("clamped_height")

    return pd.DataFrame(
        {
            "roof_height": roof,
            "base_height": base,
            "height": height,
            "base_source": source.astype(str),
            "floors_estimate": floors,
            "floors_is_estimate": ~floors_known,
            "quality": quality.astype(str),
            "flags": ["|".join(f) for f in flags],
        },
        index=stats.index,
    )
