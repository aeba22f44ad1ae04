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
                           highest roof point by more than `roof_dz_m`; or (per roof plane, when the
                           reconstructed faces are given) the reconstructed roof lies more than
                           `roof_dz_m` above or below an official roof plane (median over samples
                           inside the plane, `plane_differences`); for a building without a
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
import shapely

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
    "planes_compared": "official roof planes compared with the reconstructed roof",
    "planes_changed": "of those, planes where the reconstructed roof differs by more than roof_dz_m",
    "dz_plane_max": "height difference (reconstructed - official) of the plane that differs most [m]",
    "roof_type": "reconstructed roof type ('' = no LoD2 roof)",
    "official_roof_type": "AdV roofType code of the official building",
    "reason": "the rule that decided the class",
}


PLANE_COLUMNS = {
    "official_oid": "gml:id of the official LoD2 building",
    "oid": "cadastral (ALKIS) id of the joined building",
    "polygon_id": "gml:id of the official roof polygon ('' when it has none)",
    "area": "plan area of the official roof polygon [m2]",
    "slope": "slope of the official roof plane [degrees]",
    "n_samples": "sample points inside the polygon where the reconstructed roof has a height",
    "dz": "median over the samples of reconstructed roof - official roof plane [m] (NaN: not compared)",
    "changed": "|dz| > roof_dz_m",
}


@dataclass(frozen=True)
class CheckParams:
    roof_dz_m: float = 1.0
    footprint_min_iou: float = 0.8
    join_min_iou: float = 0.5
    # per-plane comparison: official roof polygons smaller than this (plan area) are not compared
    # (dormer cheeks, chimneys); samples lie on a grid inside the polygon shrunk by plane_inset_m
    plane_min_area_m2: float = 4.0
    plane_inset_m: float = 0.3
    plane_min_samples: int = 3


def _plane_of(ring: np.ndarray) -> tuple[float, float, float, float]:
    """(a, b, c, slope) of z = a x + b y + c through a 3D ring (Newell normal, centroid of the
    vertices); a vertical ring gives NaN."""
    from pipeline.stages.buildings.solids import newell_normal

    n = newell_normal(ring)
    if abs(n[2]) < 1e-9 * max(float(np.linalg.norm(n)), 1e-300):
        return np.nan, np.nan, np.nan, np.nan
    x0, y0, z0 = ring[:-1].mean(axis=0) if len(ring) > 1 else ring[0]
    a, b = -n[0] / n[2], -n[1] / n[2]
    return a, b, z0 - a * x0 - b * y0, float(np.degrees(np.arctan(np.hypot(a, b))))


def _samples(poly2d, inset: float) -> np.ndarray:
    """(k, 2) sample points: a grid (about 64 cells, >= 0.5 m apart) inside the polygon shrunk by
    `inset`, plus its representative point."""
    inner = shapely.buffer(poly2d, -inset) if inset > 0 else poly2d
    if shapely.is_empty(inner) or shapely.area(inner) <= 0:
        inner = poly2d
    x0, y0, x1, y1 = shapely.bounds(inner)
    step = max(0.5, float(np.sqrt(shapely.area(inner) / 64.0)))
    gx, gy = np.meshgrid(np.arange(x0 + step / 2, x1, step), np.arange(y0 + step / 2, y1, step))
    gx, gy = gx.ravel(), gy.ravel()
    k = shapely.contains_xy(inner, gx, gy)
    rp = shapely.get_coordinates(shapely.point_on_surface(inner))
    return np.vstack([np.column_stack([gx[k], gy[k]]), rp])


def plane_differences(
    official_roofs: gpd.GeoDataFrame,
    faces: gpd.GeoDataFrame,
    pairs: dict[str, str],
    params: CheckParams | None = None,
) -> gpd.GeoDataFrame:
    """Per official roof polygon of a building joined to a reconstructed one: the median height
    difference between the reconstructed roof and the official roof plane over sample points inside
    the polygon (columns PLANE_COLUMNS; geometry = the official polygon). `official_roofs`: roof
    surfaces of `read_lod2(...).surfaces` (building_oid, polygon_id, Polygon Z); `faces`: reconstructed
    roof faces (oid, plane_a, plane_b, plane_c, plan polygon; the buildings layer's `roof_faces`);
    `pairs`: official building id -> cadastral oid. Pure and vectorised over the sample points."""
    p = params or CheckParams()
    r = official_roofs[official_roofs["building_oid"].astype(str).isin(set(pairs))]
    r = r.sort_values(["building_oid", "polygon_id"], kind="stable").reset_index(drop=True)
    n = len(r)
    geoms = np.asarray(r.geometry.values, dtype=object)
    plan = shapely.force_2d(geoms) if n else np.zeros(0, dtype=object)
    area = shapely.area(plan) if n else np.zeros(0)
    oid = np.array([pairs[str(b)] for b in r["building_oid"]], dtype=object)
    planes = np.array(
        [_plane_of(np.asarray(g.exterior.coords, dtype=np.float64)) for g in geoms], dtype=np.float64
    ).reshape(-1, 4)
    use = (area >= p.plane_min_area_m2) & np.isfinite(planes[:, 0])
    sx, sy, owner = [], [], []
    for i in np.flatnonzero(use):
        pts = _samples(plan[i], p.plane_inset_m)
        sx.append(pts[:, 0])
        sy.append(pts[:, 1])
        owner.append(np.full(len(pts), i, dtype=np.int64))
    dz = np.full(n, np.nan)
    ns = np.zeros(n, dtype=np.int64)
    if sx and len(faces):
        x, y, own = np.concatenate(sx), np.concatenate(sy), np.concatenate(owner)
        fgeo = shapely.force_2d(np.asarray(faces.geometry.values, dtype=object))
        foid = faces["oid"].astype(str).to_numpy()
        fa, fb, fc = (faces[k].to_numpy(dtype=np.float64) for k in ("plane_a", "plane_b", "plane_c"))
        pi, fi = shapely.STRtree(fgeo).query(shapely.points(x, y), predicate="intersects")
        ok = foid[fi] == oid[own[pi]]  # only the joined building's own faces
        pi, fi = pi[ok], fi[ok]
        order = np.lexsort((fi, pi))
        pi, fi = pi[order], fi[order]
        first = np.ones(len(pi), dtype=bool)
        first[1:] = pi[1:] != pi[:-1]  # a point on a shared edge: the first face
        pi, fi = pi[first], fi[first]
        ours = fa[fi] * x[pi] + fb[fi] * y[pi] + fc[fi]
        o = own[pi]
        off = planes[o, 0] * x[pi] + planes[o, 1] * y[pi] + planes[o, 2]
        d = ours - off
        srt = np.lexsort((d, o))
        o, d = o[srt], d[srt]
        starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]]) if o.size else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], o.size] if o.size else np.zeros(0, dtype=np.int64)
        for s0, e0 in zip(starts, ends, strict=True):
            ns[o[s0]] = e0 - s0
            if e0 - s0 >= p.plane_min_samples:
                dz[o[s0]] = float(np.median(d[s0:e0]))
    with np.errstate(invalid="ignore"):
        changed = np.abs(dz) > p.roof_dz_m
    return gpd.GeoDataFrame(
        {
            "official_oid": r["building_oid"].astype(str).to_numpy(dtype=object),
            "oid": oid,
            "polygon_id": r["polygon_id"].fillna("").astype(str).to_numpy(dtype=object)
            if "polygon_id" in r
            else np.full(n, "", dtype=object),
            "area": np.round(area, 3),
            "slope": np.round(planes[:, 3], 2),
            "n_samples": ns,
            "dz": np.round(dz, 3),
            "changed": changed,
        },
        geometry=geoms,
        crs=official_roofs.crs,
    )


def _require(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"model check: {what} lacks the columns {missing}")


def check_model(
    buildings: gpd.GeoDataFrame,
    official: gpd.GeoDataFrame,
    params: CheckParams | None = None,
    rejected_oids: set[str] | frozenset[str] = frozenset(),
    planes: pd.DataFrame | None = None,
) -> gpd.GeoDataFrame:
    """One row per cadastral building (in `buildings` order) and one per official building without a
    cadastral footprint (sorted by id), columns `COLUMNS`; geometry = cadastral footprint, else the
    official one. Both inputs in the same CRS. `rejected_oids`: cadastral records the buildings layer
    rejected (e.g. a geometry that could not be repaired): an official building with such an id is
    `unknown`, not demolished. Rows whose roof came from the official model (`lod_source` `official`)
    cannot be checked: InputError. `planes`: `plane_differences` of the joined buildings (see
    `joined_pairs`); without it the roofs are compared by eave and ridge only."""
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
    p_cmp = np.zeros(n, dtype=np.int64)
    p_chg = np.zeros(n, dtype=np.int64)
    p_max = np.full(n, np.nan)
    if planes is not None and len(planes):
        row = {str(v): i for i, v in enumerate(b["oid"])}
        ok = planes["dz"].notna().to_numpy()
        pl = planes[ok]
        ri = np.array([row.get(str(v), -1) for v in pl["oid"]], dtype=np.int64)
        dzp = pl["dz"].to_numpy(dtype=np.float64)
        keep = ri >= 0
        ri, dzp = ri[keep], dzp[keep]
        np.add.at(p_cmp, ri, 1)
        np.add.at(p_chg, ri, (np.abs(dzp) > p.roof_dz_m).astype(np.int64))
        for i, d in zip(ri.tolist(), dzp.tolist(), strict=True):
            if not np.isfinite(p_max[i]) or abs(d) > abs(p_max[i]):
                p_max[i] = d
    cls = np.full(n, CONSISTENT, dtype=object)
    why = np.full(n, "", dtype=object)
    rules = [
        (has & no_roof, DEMOLISHED, "no roof points in the survey"),
        (~has & no_roof, UNKNOWN, "no official building, no roof points in the survey"),
        (~has & ~no_roof, NEW, "no official building"),
        (has & ~no_roof & (iou < p.footprint_min_iou), FOOTPRINT, f"footprint IoU < {p.footprint_min_iou}"),
        (has & ~no_roof & roof_diff, ROOF_CHANGED, f"|dz eave| or |dz ridge| > {p.roof_dz_m} m"),
        (has & ~no_roof & lod2 & (p_chg > 0), ROOF_CHANGED, f"roof plane(s) off by > {p.roof_dz_m} m"),
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
    for i in np.flatnonzero((cls == ROOF_CHANGED) & (p_chg > 0)):
        why[i] = (
            f"{why[i]}; {p_chg[i]} of {p_cmp[i]} roof planes off by > {p.roof_dz_m} m (max {p_max[i]:+.2f} m)"
        )
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
            "planes_compared": p_cmp,
            "planes_changed": p_chg,
            "dz_plane_max": np.round(p_max, 3),
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
            "planes_compared": np.zeros(nx, dtype=np.int64),
            "planes_changed": np.zeros(nx, dtype=np.int64),
            "dz_plane_max": np.full(nx, np.nan),
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


def joined_pairs(
    buildings: gpd.GeoDataFrame, official: gpd.GeoDataFrame, params: CheckParams | None = None
) -> dict[str, str]:
    """Official building id -> cadastral oid of the buildings `check_model` joins (for
    `plane_differences`)."""
    p = params or CheckParams()
    b = buildings.reset_index(drop=True)
    j = join_lod2(b, official.reset_index(drop=True), p.join_min_iou)
    return {str(o): str(c) for o, c in zip(j["lod2_oid"], b["oid"], strict=True) if o}


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    """Buildings per class, every class listed (0 where none)."""
    vc = table["model_check"].value_counts()
    return {c: int(vc.get(c, 0)) for c in CLASSES}
