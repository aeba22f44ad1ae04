"""Official LoD2 buildings joined to the cadastre footprints, and the LoD1 roof taken from them.

`join_lod2` matches every footprint to at most one LoD2 building: first by id (the ALKIS object id is the
building's gml:id in the AdV CityGML profile; an id with a version suffix matches on its 16-character
ALKIS identifier), then, for the rest, by footprint overlap (intersection over union >= `min_iou`,
one-to-one, the best pairs first). `lod1_roofs_from_lod2` sets the LoD1 roof of the matched buildings to
the area-weighted mean height of their LoD2 roof surfaces (the AdV / Geobasis NRW LoD1 definition);
`lod1_roofs_from` does the same from any LoD2 roof (e.g. the reconstructed one).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

ALKIS_ID_LEN = 16

JOIN_COLUMNS = (
    "lod2_oid",
    "lod2_match",
    "lod2_iou",
    "lod2_roof_mean_z",
    "lod2_measured_height",
    "lod2_roof_type",
)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def join_lod2(footprints: gpd.GeoDataFrame, lod2: gpd.GeoDataFrame, min_iou: float = 0.5) -> pd.DataFrame:
    """Per footprint (index-aligned): lod2_oid ('' unmatched), lod2_match ('id' | 'overlap' | ''),
    lod2_iou, lod2_roof_mean_z, lod2_measured_height, lod2_roof_type. `lod2`: buildings of
    `read_lod2(...).buildings` (columns oid, roof_mean_z, measured_height, roof_type, geometry)."""
    n = len(footprints)
    match = np.full(n, -1, dtype=np.int64)
    how = np.full(n, "", dtype=object)
    fa = np.asarray(footprints.geometry.values, dtype=object)
    la = np.asarray(lod2.geometry.values, dtype=object)
    if n and len(lod2):
        l_ids = [str(v) for v in lod2["oid"]]
        exact = {v: i for i, v in sorted(enumerate(l_ids), reverse=True)}
        short = {
            v[:ALKIS_ID_LEN]: i for i, v in sorted(enumerate(l_ids), reverse=True) if len(v) >= ALKIS_ID_LEN
        }
        used = np.zeros(len(lod2), dtype=bool)
        for i, oid in enumerate(footprints["oid"]):
            s = str(oid) if oid is not None else ""
            j = exact.get(s)
            if j is None and len(s) >= ALKIS_ID_LEN:
                j = short.get(s[:ALKIS_ID_LEN])
            if j is not None and not used[j]:
                match[i], how[i], used[j] = j, "id", True
        rest = np.flatnonzero(match < 0)
        if rest.size and (~used).any():
            free = np.flatnonzero(~used)
            tree = shapely.STRtree(la[free])
            qi, li = tree.query(fa[rest], predicate="intersects")
            if qi.size:
                fi, lj = rest[qi], free[li]
                iou = _iou(fa[fi], la[lj])
                order = np.lexsort((lj, fi, -iou))
                taken_f: set[int] = set()
                for k in order:
                    if iou[k] < min_iou:
                        break
                    f, j = int(fi[k]), int(lj[k])
                    if f in taken_f or used[j]:
                        continue
                    match[f], how[f], used[j] = j, "overlap", True
                    taken_f.add(f)
    ok = match >= 0
    m = np.where(ok, match, 0)
    iou_all = np.zeros(n)
    if ok.any():
        iou_all[ok] = _iou(fa[ok], la[m[ok]])

    def col(name: str, fill: str | float) -> np.ndarray:
        if not len(lod2):
            return np.full(n, fill, dtype=object if isinstance(fill, str) else np.float64)
        v = lod2[name].to_numpy()[m]
        if isinstance(fill, str):
            return np.where(ok, [str(x) if x is not None else "" for x in v], fill).astype(object)
        return np.where(ok, v.astype(np.float64), fill)

    return pd.DataFrame(
        {
            "lod2_oid": col("oid", ""),
            "lod2_match": how,
            "lod2_iou": np.round(iou_all, 4),
            "lod2_roof_mean_z": col("roof_mean_z", np.nan),
            "lod2_measured_height": col("measured_height", np.nan),
            "lod2_roof_type": col("roof_type", ""),
        },
        index=footprints.index,
    )


def lod1_roofs_from_lod2(final: pd.DataFrame, joined: pd.DataFrame, floor_height_m: float) -> pd.DataFrame:
    """`final` (attributes.finalize_heights) with the LoD1 roof of every matched building set to its
    official LoD2 mean roof height (flag `roof_from_lod2`), see `lod1_roofs_from`."""
    roof = joined["lod2_roof_mean_z"].to_numpy(dtype=np.float64)
    return lod1_roofs_from(final, roof, np.full(len(roof), "roof_from_lod2", dtype=object), floor_height_m)


def lod1_roofs_from(
    final: pd.DataFrame, roof_mean_z: np.ndarray, flag: np.ndarray, floor_height_m: float
) -> pd.DataFrame:
    """`final` (attributes.finalize_heights) with the LoD1 roof of every building with a finite
    `roof_mean_z` above its base set to it (the mean height of its LoD2 roof); height and estimated
    floors re-derived from the base, `flag[i]` added to its flags; fallbacks become `ok`."""
    out = final.copy()
    roof = np.asarray(roof_mean_z, dtype=np.float64)
    use = np.isfinite(roof) & (roof > out["base_height"].to_numpy(dtype=np.float64))
    if not use.any():
        return out
    base = out["base_height"].to_numpy(dtype=np.float64)
    height = out["height"].to_numpy(dtype=np.float64).copy()
    height[use] = roof[use] - base[use]
    roof_h = out["roof_height"].to_numpy(dtype=np.float64).copy()
    roof_h[use] = roof[use]
    out["roof_height"] = roof_h
    out["height"] = height
    est = out["floors_is_estimate"].to_numpy(dtype=bool)
    floors = out["floors_estimate"].to_numpy().copy()
    redo = use & est
    floors[redo] = np.maximum(1.0, np.round(height[redo] / floor_height_m)).astype(floors.dtype)
    out["floors_estimate"] = floors
    quality = out["quality"].to_numpy(dtype=object).copy()
    fb = use & np.isin(quality, ["fallback_floors", "fallback_default"])
    quality[fb] = "ok"
    out["quality"] = quality
    drop = {"fallback_floors", "fallback_default", "too_few_points", "clamped_height"}
    flags = out["flags"].to_numpy(dtype=object).copy()
    for i in np.flatnonzero(use):
        f = [x for x in str(flags[i]).split("|") if x and x not in drop]
        flags[i] = "|".join([*f, str(flag[i])])
    out["flags"] = flags
    return out
