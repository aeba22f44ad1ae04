"""Outdated-model check: the survey's reconstruction against the official LoD2 model, per building.

Inputs: the buildings layer's table (one row per cadastral building with the roof reconstructed from the
NEWEST survey epoch: `eave_height`, `ridge_height`, `roof_height` (LoD1 roof), `lod2_fallback_reason`,
`roof_n_points`) and the official model's buildings (`read_lod2(...).buildings`: `roof_z_min`,
`roof_z_max`, `roof_mean_z`, `roof_type`, footprint). Join: `stages.buildings.lod2.join_lod2` (by ALKIS
id, then by footprint overlap >= `join_min_iou`).

Classes (`model_check` column), first rule that applies:

=========================  ==========================================================================
demolished_since_model     an official building with no cadastral footprint, or a joined building
                           whose footprint holds no roof in the survey (`lod2_fallback_reason`
                           `no_points` / `too_few_points`)
new_since_model            a cadastral building with a roof in the survey and no official building
unknown                    a cadastral building with neither an official building nor survey roof
                           points; an official building whose cadastral record the buildings layer
                           rejected (no footprint to look at)
footprint_differs          joined, footprint IoU < `footprint_min_iou`
roof_changed               joined; reconstructed eave or ridge differs from the official lowest /
                           highest roof point by more than `roof_dz_m`; for a building without a
                           reconstructed roof (LoD1 fallback: too noisy) its LoD1 roof lies more than
                           `roof_dz_m` outside the official roof's height range
consistent                 none of the above
=========================  ==========================================================================

Heights are compared in the working height system (the official model goes through the geoid like
every other source). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.stages.buildings.lod2 import join_lod2

CONSISTENT = "consistent"
ROOF_CHANGED = "roof_changed"
NEW = "new_since_model"
DEMOLISHED = "demolished_since_model"
FOOTPRINT = "footprint_differs"
UNKNOWN = "unknown"
CLASSES = (CONSISTENT, ROOF_CHANGED, NEW, DEMOLISHED, FOOTPRINT, UNKNOWN)
NO_ROOF_REASONS = ("no_points", "too_few_points")

BUILDING_COLUMNS = ("oid", "eave_height", "ridge_height", "roof_height", "lod2_fallback_reason")
OFFICIAL_COLUMNS = ("oid", "roof_z_min", "roof_z_max", "roof_mean_z", "roof_type", "measured_height")

COLUMNS = {
    "oid": "cadastral (ALKIS) id; '' for an official building without a cadastral footprint",
    "official_oid": "gml:id of the official LoD2 building ('' = none)",
    "model_check": "consistent | roof_changed | new_since_model | demolished_since_model | "
    "footprint_differs | unknown",
    "match": "how the official building was joined: id | overlap | ''",
    "iou": "footprint intersection over union (cadastre vs official)",
    "dz_eave": "reconstructed eave height - official lowest roof point [m]",
    "dz_ridge": "reconstructed ridge height - official highest roof point [m]",
    "dz_lod1": "LoD1 roof (survey) - official mean roof height [m] (informative)",
    "roof_type": "reconstructed roof type ('' = no LoD2 roof)",
    "official_roof_type": "AdV roofType code of the official building",
    "reason": "the rule that decided the class",
}


@dataclass(frozen=True)
class CheckParams:
    roof_dz_m: float = 1.0
    footprint_min_iou: float = 0.8
    join_min_iou: float = 0.5


def _require(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"model check: {what} lacks the columns {missing}")


def check_model(
    buildings: gpd.GeoDataFrame,
    official: gpd.GeoDataFrame,
    params: CheckParams | None = None,
    rejected_oids: set[str] | frozenset[str] = frozenset(),
) -> gpd.GeoDataFrame:
    """One row per cadastral building (in `buildings` order) and one per official building without a
    cadastral footprint (sorted by id), columns `COLUMNS`; geometry = cadastral footprint, else the
    official one. Both inputs in the same CRS. `rejected_oids`: cadastral records the buildings layer
    rejected (e.g. a geometry that could not be repaired): an official building with such an id is
    `unknown`, not demolished. Rows whose roof came from the official model (`lod_source` `official`)
    cannot be checked: InputError."""
    p = params or CheckParams()
    _require(buildings, BUILDING_COLUMNS, "the buildings table")
    _require(official, OFFICIAL_COLUMNS, "the official model")
    if "lod_source" in buildings.columns and (buildings["lod_source"] == "official").any():
        raise InputError(
            "model check: the buildings table holds roofs taken from the official model (lod_source "
            "'official', layers.buildings.lod2_source: official); the check needs the survey reconstruction"
        )
    if buildings.crs is not None and official.crs is not None and buildings.crs != official.crs:
        raise InputError(f"model check: CRS differ (buildings {buildings.crs}, official {official.crs})")
    b = buildings.reset_index(drop=True)
    o = official.reset_index(drop=True)
    j = join_lod2(b, o, p.join_min_iou)
    by_oid = {str(v): i for i, v in enumerate(o["oid"])}
    oi = np.array([by_oid.get(str(v), -1) for v in j["lod2_oid"]], dtype=np.int64)
    has = oi >= 0
    take = np.where(has, oi, 0)

    def ocol(name: str) -> np.ndarray:
        v = o[name].to_numpy(dtype=np.float64) if len(o) else np.zeros(1)
        return np.where(has, v[take] if len(o) else np.nan, np.nan)

    zmin, zmax, zmean = ocol("roof_z_min"), ocol("roof_z_max"), ocol("roof_mean_z")
    eave = b["eave_height"].to_numpy(dtype=np.float64)
    ridge = b["ridge_height"].to_numpy(dtype=np.float64)
    lod1 = b["roof_height"].to_numpy(dtype=np.float64).copy()
    if "flags" in b.columns:  # LoD1 roofs taken from the official model say nothing about the survey
        lod1[b["flags"].fillna("").astype(str).str.contains("roof_from_lod2").to_numpy()] = np.nan
    reason_fb = b["lod2_fallback_reason"].fillna("").astype(str).str.split(":").str[0].to_numpy()
    no_roof = np.isin(reason_fb, NO_ROOF_REASONS)
    lod2 = np.isfinite(eave) & np.isfinite(ridge)
    iou = j["lod2_iou"].to_numpy(dtype=np.float64)
    dz_eave = eave - zmin
    dz_ridge = ridge - zmax
    with np.errstate(invalid="ignore"):
        roof_diff = lod2 & ((np.abs(dz_eave) > p.roof_dz_m) | (np.abs(dz_ridge) > p.roof_dz_m))
        lod1_out = (~lod2) & ((lod1 > zmax + p.roof_dz_m) | (lod1 < zmin - p.roof_dz_m))
    n = len(b)
    cls = np.full(n, CONSISTENT, dtype=object)
    why = np.full(n, "", dtype=object)
    rules = [
        (has & no_roof, DEMOLISHED, "no roof points in the survey"),
        (~has & no_roof, UNKNOWN, "no official building, no roof points in the survey"),
        (~has & ~no_roof, NEW, "no official building"),
        (has & ~no_roof & (iou < p.footprint_min_iou), FOOTPRINT, f"footprint IoU < {p.footprint_min_iou}"),
        (has & ~no_roof & roof_diff, ROOF_CHANGED, f"|dz eave| or |dz ridge| > {p.roof_dz_m} m"),
        (
            has & ~no_roof & lod1_out,
            ROOF_CHANGED,
            f"LoD1 roof outside the official roof range ± {p.roof_dz_m} m",
        ),
    ]
    done = np.zeros(n, dtype=bool)
    for mask, c, r in rules:
        m = mask & ~done
        cls[m], why[m] = c, r
        done |= m
    if "repair" in b.columns:  # a repaired cadastral geometry explains many footprint differences
        rep = b["repair"].fillna("").astype(str).to_numpy()
        for i in np.flatnonzero((cls == FOOTPRINT) & (rep != "")):
            why[i] = f"{why[i]} (cadastral geometry repaired: {rep[i]})"
    rtype = b["roof_type"].fillna("").astype(str).to_numpy() if "roof_type" in b else np.full(n, "", object)
    ours = gpd.GeoDataFrame(
        {
            "oid": b["oid"].astype(str).to_numpy(),
            "official_oid": j["lod2_oid"].to_numpy(),
            "model_check": cls,
            "match": j["lod2_match"].to_numpy(),
            "iou": iou,
            "dz_eave": np.round(dz_eave, 3),
            "dz_ridge": np.round(dz_ridge, 3),
            "dz_lod1": np.round(lod1 - zmean, 3),
            "roof_type": rtype,
            "official_roof_type": j["lod2_roof_type"].to_numpy(),
            "reason": why,
        },
        geometry=b.geometry.to_numpy(),
        crs=buildings.crs,
    )
    used = set(j["lod2_oid"])
    extra = o[~o["oid"].astype(str).isin(used)].sort_values("oid", kind="stable")
    nx = len(extra)
    rejected = extra["oid"].astype(str).isin(set(rejected_oids)).to_numpy()
    gone = gpd.GeoDataFrame(
        {
            "oid": np.full(nx, "", dtype=object),
            "official_oid": extra["oid"].astype(str).to_numpy(),
            "model_check": np.where(rejected, UNKNOWN, DEMOLISHED).astype(object),
            "match": np.full(nx, "", dtype=object),
            "iou": np.zeros(nx),
            "dz_eave": np.full(nx, np.nan),
            "dz_ridge": np.full(nx, np.nan),
            "dz_lod1": np.full(nx, np.nan),
            "roof_type": np.full(nx, "", dtype=object),
            "official_roof_type": extra["roof_type"].fillna("").astype(str).to_numpy(),
            "reason": np.where(
                rejected, "cadastral record rejected by the buildings layer", "no cadastral footprint"
            ).astype(object),
        },
        geometry=extra.geometry.to_numpy(),
        crs=buildings.crs if buildings.crs is not None else official.crs,
    )
    out = pd.concat([ours, gone], ignore_index=True) if nx else ours
    return gpd.GeoDataFrame(out, geometry="geometry", crs=ours.crs)


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    """Buildings per class, every class listed (0 where none)."""
    vc = table["model_check"].value_counts()
    return {c: int(vc.get(c, 0)) for c in CLASSES}
