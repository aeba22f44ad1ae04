"""Zoning-plan checks: per parcel and per building, the measured figures against a Bebauungsplan's limits.

    check_zoning(parcels, buildings, areas, plans, params) -> ZoningResult(parcels, buildings)

Inputs are plain GeoDataFrames in one CRS: parcels (ALKIS Flurstueck, `flstkennz` when known), buildings
as the buildings stage writes them (footprint, `height`, `base_height`, roof statistics `p50`/`p99`
(absolute, DHHN2016), `floors_estimate`, `floors_is_estimate`, `quality`, `base_source`; all but the
footprint optional) and the plan areas of `pipeline.sources.xplan.read_plans`.

Which plan area applies (only binding areas count: `ebene` 0 and `rechtscharakter` in
`binding_rechtscharakter`):

* a **building** takes the limits of the building area (BP_BaugebietsTeilFlaeche) covering most of its
  footprint; a buildable area (BP_UeberbaubareGrundstuecksFlaeche) of the same plan covering most of it
  overrides the limits it states itself (Z, heights, ...).
* a **parcel** is cut by the building areas; GRZ and GFZ are measured on the part of the parcel inside
  areas that state them (the Baugrundstück behind the street line), and the permitted value is the
  area-weighted mean of the pieces' values. GR / GF (m2) limit the built area / floor area of the
  parcel's part in the area.

Measured figures:

* GRZ = area of the union of the footprints inside the zoned part / zoned part area (as the parcel overlay).
* GFZ = sum of footprint piece area x storeys / zoned part area (storeys as below: an **estimate** unless
  the cadastre gives them).
* storeys (Z, full storeys): the cadastre's `anzahlgs` where given (`floors_is_estimate` false), else
  `floors_estimate` (height / floor height) when `judge_estimated_storeys`.
* top of the building (FH ridge, GH / OK / GBH total height): the roof statistic `top_statistic` (p99)
  minus the base height for heights above terrain (`ground_references`), absolute for heights above sea
  level (`absolute_references`). Eaves (TH / WH) are judged on flat roofs only (p99 - p50 at most
  `flat_roof_spread_m`: eaves = top); a pitched roof's eaves are not measured by LoD1 statistics.
* parts outside the buildable area: footprint minus the union of the plan's buildable areas grown by
  `buildable_tolerance_m`, inside the plan's scope; at least `min_outside_area_m2` is a violation,
  reported with its area and depth (largest distance from the buildable area).

Each check is `ok`, `exceeds`, `below` (a minimum or mandatory value not reached), `unknown` (a limit
exists but cannot be judged; `reasons` says why) or empty (no limit). `status` per object: `exceeds` if any
check exceeds, else `below_minimum` if any is below, else `cannot_judge` if any limit (or the plan itself)
cannot be judged, else `within`. `violations` lists each violation with measured, permitted and excess;
`violation_kinds` the kinds ('|'-joined: GRZ, GR, GFZ, GF, Z, TH, FH, GH, BUILDABLE) for filtering.
A parcel's status includes its buildings' violations (by representative point).
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

OK, EXCEEDS, BELOW, UNKNOWN = "ok", "exceeds", "below", "unknown"
# status -> RGBA sRGB: the QGIS styles and the 3D tiles of the zoning layer are made from this table
STATUS_COLOURS: dict[str, tuple[int, int, int, int]] = {
    "within": (26, 150, 65, 255),
    "exceeds": (215, 25, 28, 255),
    "below_minimum": (253, 174, 97, 255),
    "cannot_judge": (170, 170, 170, 255),
}
STATUS_LABELS = {
    "within": "within the plan's limits",
    "exceeds": "exceeds a limit",
    "below_minimum": "below a minimum",
    "cannot_judge": "cannot be judged",
}
STATUSES = tuple(STATUS_COLOURS)
HEIGHT_LABEL = {"th": "TH", "fh": "FH", "gh": "GH"}


@dataclass(frozen=True)
class ZoningParams:
    # a measured value counts as exceeding only beyond the permitted value plus this (measurement noise)
    grz_tolerance: float = 0.01
    gfz_tolerance: float = 0.05
    area_tolerance_m2: float = 2.0  # GR / GF
    height_tolerance_m: float = 0.5
    storeys_tolerance: int = 0
    buildable_tolerance_m: float = 0.3
    min_outside_area_m2: float = 1.0
    # GRZ/GFZ are judged only when at least this share of the parcel lies in building areas stating them
    min_zoned_share: float = 0.5
    # overlaps below this (m2) do not tie a building or parcel to an area (drawing slivers)
    min_overlap_m2: float = 0.5
    top_statistic: str = "p99"
    eaves_statistic: str = "p50"
    flat_roof_spread_m: float = 0.5
    floor_height_m: float = 3.0
    judge_estimated_storeys: bool = True
    ground_references: tuple[str, ...] = ("relativGelaendeoberkante",)
    absolute_references: tuple[str, ...] = ("absolutNHN", "absolutDHHN")
    binding_rechtscharakter: tuple[str, ...] = ("1000", "")


@dataclass
class ZoningResult:
    parcels: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame


# ---- helpers --------------------------------------------------------------------------------------------


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index into a, index into b, intersection area) of every intersecting pair."""
    if len(a) == 0 or len(b) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    tree = shapely.STRtree(b)
    ia, ib = tree.query(a, predicate="intersects")
    area = shapely.area(shapely.intersection(a[ia], b[ib]))
    return ia.astype(np.int64), ib.astype(np.int64), area


def _best(ia: np.ndarray, ib: np.ndarray, area: np.ndarray, n: int, min_area: float) -> np.ndarray:
    """Per item of a: the b with the largest overlap (>= min_area), -1 for none; ties -> lowest b."""
    best = np.full(n, -1, dtype=np.int64)
    keep = area >= min_area
    ia, ib, area = ia[keep], ib[keep], area[keep]
    if len(ia) == 0:
        return best
    order = np.lexsort((ib, -area, ia))
    ia, ib = ia[order], ib[order]
    first = np.ones(len(ia), dtype=bool)
    first[1:] = ia[1:] != ia[:-1]
    best[ia[first]] = ib[first]
    return best


def _col(df: pd.DataFrame, name: str, n: int, default: float = np.nan) -> np.ndarray:
    if name in df:
        return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    return np.full(n, default)


def _fmt(v: float, unit: str = "", nd: int = 2) -> str:
    s = f"{v:.{nd}f}".rstrip("0").rstrip(".") if nd else f"{v:.0f}"
    return f"{s} {unit}".rstrip() if unit else s


class _Checks:
    """Per-object check results, violations and reasons."""

    def __init__(self, n: int):
        self.n = n
        self.checks: dict[str, np.ndarray] = {}
        self.violations: list[list[str]] = [[] for _ in range(n)]
        self.kinds: list[list[str]] = [[] for _ in range(n)]
        self.reasons: list[list[str]] = [[] for _ in range(n)]

    def column(self, name: str) -> np.ndarray:
        if name not in self.checks:
            self.checks[name] = np.full(self.n, "", dtype=object)
        return self.checks[name]

    def set(self, name: str, i: int, state: str) -> None:
        col = self.column(name)
        rank = {"": 0, OK: 1, UNKNOWN: 2, BELOW: 3, EXCEEDS: 4}
        if rank[state] > rank[col[i]]:
            col[i] = state

    def compare(
        self,
        name: str,
        label: str,
        measured: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        tol: float,
        unit: str,
        nd: int,
        unknown_reason: np.ndarray | None = None,
    ) -> None:
        """Compare measured values with [lo, hi] (NaN = no bound); unknown_reason[i] != '' -> unknown."""
        has = np.isfinite(lo) | np.isfinite(hi)
        for i in np.flatnonzero(has):
            why = unknown_reason[i] if unknown_reason is not None else ""
            m = measured[i]
            if why or not np.isfinite(m):
                self.set(name, i, UNKNOWN)
                self.reasons[i].append(f"{label}: {why or 'not measured'}")
                continue
            if np.isfinite(hi[i]) and m > hi[i] + tol:
                self.set(name, i, EXCEEDS)
                self.kinds[i].append(label)
                self.violations[i].append(
                    f"{label} {_fmt(m, unit, nd)} > {_fmt(hi[i], unit, nd)} (+{_fmt(m - hi[i], unit, nd)})"
                )
            elif np.isfinite(lo[i]) and m < lo[i] - tol:
                self.set(name, i, BELOW)
                self.kinds[i].append(f"{label}min")
                self.violations[i].append(
                    f"{label} {_fmt(m, unit, nd)} < minimum {_fmt(lo[i], unit, nd)} (-{_fmt(lo[i] - m, unit, nd)})"
                )
            else:
                self.set(name, i, OK)

    def status(self, extra_unknown: np.ndarray | None = None) -> np.ndarray:
        out = np.full(self.n, "within", dtype=object)
        cols = list(self.checks.values())
        for i in range(self.n):
            states = {c[i] for c in cols}
            if EXCEEDS in states:
                out[i] = "exceeds"
            elif BELOW in states:
                out[i] = "below_minimum"
            elif UNKNOWN in states or (extra_unknown is not None and extra_unknown[i]):
                out[i] = "cannot_judge"
        return out


def _binding(areas: gpd.GeoDataFrame, params: ZoningParams) -> gpd.GeoDataFrame:
    ebene = pd.to_numeric(areas["ebene"], errors="coerce").fillna(0) if "ebene" in areas else 0
    rc = areas["rechtscharakter"].fillna("").astype(str) if "rechtscharakter" in areas else ""
    keep = (ebene == 0) & np.isin(np.asarray(rc, dtype=object), list(params.binding_rechtscharakter))
    a = areas[np.asarray(keep, dtype=bool)]
    a = a[a.geometry.notna() & ~a.geometry.is_empty]
    return a.reset_index(drop=True)


def _scopes(plans: gpd.GeoDataFrame | None, areas: gpd.GeoDataFrame) -> dict[str, BaseGeometry]:
    """Plan id -> scope polygon (raeumlicherGeltungsbereich, else the union of the plan's areas)."""
    out: dict[str, BaseGeometry] = {}
    if plans is not None:
        for pid, g in zip(plans["plan_id"], plans.geometry, strict=True):
            if g is not None and not g.is_empty:
                out[str(pid)] = g
    for pid, grp in areas.groupby("plan_id", sort=True):
        if str(pid) not in out:
            out[str(pid)] = shapely.union_all(grp.geometry.to_numpy())
    return out


# ---- buildings ------------------------------------------------------------------------------------------


def _building_measures(b: gpd.GeoDataFrame, params: ZoningParams) -> dict[str, np.ndarray]:
    n = len(b)
    height = _col(b, "height", n)
    base = _col(b, "base_height", n)
    top_abs = _col(b, params.top_statistic, n)
    top_note = np.full(n, "", dtype=object)
    no_top = ~np.isfinite(top_abs)
    roof = _col(b, "roof_height", n)
    if np.isfinite(base).any():
        # no roof statistic: the roof height (p75) stands in for the top, flagged
        fallback = no_top & np.isfinite(roof)
        top_abs[fallback] = roof[fallback]
        top_note[fallback] = f"no {params.top_statistic}: top = roof height (underestimates ridges)"
    top_rel = top_abs - base
    only_rel = ~np.isfinite(top_rel) & np.isfinite(height)
    top_rel[only_rel] = height[only_rel]
    top_note[only_rel] = "top = building height (roof p75; underestimates ridges)"
    eaves_abs = _col(b, params.eaves_statistic, n)
    flat = np.isfinite(top_abs) & np.isfinite(eaves_abs) & (top_abs - eaves_abs <= params.flat_roof_spread_m)
    quality = b["quality"].astype(str).to_numpy() if "quality" in b else np.full(n, "ok", dtype=object)
    measured = ~np.isin(quality, ["fallback_floors", "fallback_default"])
    base_src = b["base_source"].astype(str).to_numpy() if "base_source" in b else np.full(n, "", dtype=object)
    # storeys
    floors = _col(b, "floors_estimate", n)
    is_est = (
        b["floors_is_estimate"].astype(bool).to_numpy()
        if "floors_is_estimate" in b
        else np.ones(n, dtype=bool)
    )
    if "anzahlgs" in b and "floors_estimate" not in b:
        floors = _col(b, "anzahlgs", n)
        is_est = ~np.isfinite(floors)
    est = np.where(np.isfinite(height), np.maximum(1.0, np.round(height / params.floor_height_m)), np.nan)
    floors = np.where(np.isfinite(floors), floors, est)
    src = np.where(is_est, "estimate", "cadastre").astype(object)
    src[~np.isfinite(floors)] = ""
    return {
        "top_abs": top_abs,
        "top_rel": top_rel,
        "top_note": top_note,
        "flat": flat,
        "measured": measured,
        "quality": quality,
        "base_guessed": base_src == "guessed",
        "storeys": floors,
        "storeys_source": src,
    }


LIMIT_COLUMNS = (
    "z_min",
    "z_max",
    "th_min",
    "th_max",
    "th_ref",
    "fh_min",
    "fh_max",
    "fh_ref",
    "gh_min",
    "gh_max",
    "gh_ref",
)


def _building_limits(btf: gpd.GeoDataFrame, ugf: gpd.GeoDataFrame, bi: np.ndarray, ui: np.ndarray) -> dict:
    """Limits per building: the building area's, overridden by the buildable area's where it states one."""
    n = len(bi)
    out: dict[str, np.ndarray] = {}
    for c in LIMIT_COLUMNS:
        is_ref = c.endswith("_ref")
        v = np.full(n, "" if is_ref else np.nan, dtype=object if is_ref else np.float64)
        if c in btf and len(btf):
            src = btf[c].to_numpy()
            ok = bi >= 0
            v[ok] = src[bi[ok]]
        if c in ugf and len(ugf):
            src = ugf[c].to_numpy()
            ok = ui >= 0
            if is_ref:
                # the buildable area's reference goes with its own height values (below)
                pass
            else:
                vals = np.full(n, np.nan)
                vals[ok] = pd.to_numeric(pd.Series(src[ui[ok]]), errors="coerce").to_numpy()
                stated = np.isfinite(vals)
                v[stated] = vals[stated]
        out[c] = v
    # height references follow the values: a height stated on the buildable area uses its reference
    if len(ugf):
        for k in ("th", "fh", "gh"):
            if f"{k}_ref" not in ugf:
                continue
            ok = ui >= 0
            mn = np.full(n, np.nan)
            mx = np.full(n, np.nan)
            ref = np.full(n, "", dtype=object)
            mn[ok] = pd.to_numeric(ugf[f"{k}_min"], errors="coerce").to_numpy()[ui[ok]]
            mx[ok] = pd.to_numeric(ugf[f"{k}_max"], errors="coerce").to_numpy()[ui[ok]]
            ref[ok] = ugf[f"{k}_ref"].to_numpy()[ui[ok]]
            stated = np.isfinite(mn) | np.isfinite(mx)
            out[f"{k}_ref"][stated] = ref[stated]
    return out


def _check_buildings(
    b: gpd.GeoDataFrame,
    btf: gpd.GeoDataFrame,
    ugf: gpd.GeoDataFrame,
    scopes: dict[str, BaseGeometry],
    params: ZoningParams,
    lines: gpd.GeoDataFrame | None = None,
) -> tuple[pd.DataFrame, _Checks]:
    n = len(b)
    geoms = b.geometry.to_numpy()
    ia, ib, a = _pairs(geoms, btf.geometry.to_numpy())
    bi = _best(ia, ib, a, n, params.min_overlap_m2)
    plan_of_btf = btf["plan_id"].astype(str).to_numpy() if len(btf) else np.zeros(0, dtype=object)
    plan = np.where(bi >= 0, plan_of_btf[np.maximum(bi, 0)] if len(btf) else "", "").astype(object)
    # several plans' building areas under one footprint: which applies is not decided here
    multi = np.zeros(n, dtype=bool)
    keep = a >= params.min_overlap_m2
    if keep.any():
        df = pd.DataFrame({"i": ia[keep], "p": plan_of_btf[ib[keep]]})
        cnt = df.drop_duplicates().groupby("i").size()
        multi[cnt.index[cnt.to_numpy() > 1].to_numpy()] = True
    # buildable area of the same plan
    ja, jb, ua = _pairs(geoms, ugf.geometry.to_numpy())
    if len(ugf):
        same = ugf["plan_id"].astype(str).to_numpy()[jb] == plan[ja]
        ja, jb, ua = ja[same], jb[same], ua[same]
    ui = _best(ja, jb, ua, n, params.min_overlap_m2)
    lim = _building_limits(btf, ugf, bi, ui)
    m = _building_measures(b, params)
    ch = _Checks(n)

    # which buildings can be judged at all
    in_scope = np.zeros(n, dtype=bool)
    if scopes:
        sg = np.array(list(scopes.values()), dtype=object)
        sa, _sb = shapely.STRtree(sg).query(geoms, predicate="intersects")
        in_scope[sa] = True
    no_area = bi < 0
    for i in np.flatnonzero(no_area):
        ch.reasons[i].append(
            "no building area (BP_BaugebietsTeilFlaeche) of the plan under the building"
            if in_scope[i]
            else "no zoning plan"
        )
    for i in np.flatnonzero(multi):
        ch.reasons[i].append(
            "building areas of several plans overlap the building; the applicable plan is not decided"
        )
    judged = ~no_area & ~multi

    # heights
    for k in ("th", "fh", "gh"):
        lo = np.where(judged, lim[f"{k}_min"].astype(np.float64), np.nan)
        hi = np.where(judged, lim[f"{k}_max"].astype(np.float64), np.nan)
        ref = lim[f"{k}_ref"]
        measured = np.full(n, np.nan)
        why = np.full(n, "", dtype=object)
        is_ground = np.isin(ref, list(params.ground_references))
        is_abs = np.isin(ref, list(params.absolute_references))
        measured[is_ground] = m["top_rel"][is_ground]
        measured[is_abs] = m["top_abs"][is_abs]
        why[~is_ground & ~is_abs] = [
            "height reference (hoehenbezug) not given" if r == "" else f"height reference {r} not supported"
            for r in ref[~is_ground & ~is_abs]
        ]
        why[(why == "") & ~m["measured"]] = [
            f"height not measured ({q})" for q in m["quality"][(why == "") & ~m["measured"]]
        ]
        why[(why == "") & is_ground & m["base_guessed"]] = "ground height at the building guessed"
        if k == "th":
            why[(why == "") & ~m["flat"]] = "eaves height not measured (pitched or unknown roof)"
        ch.compare("height_check", HEIGHT_LABEL[k], measured, lo, hi, params.height_tolerance_m, "m", 1, why)

    # storeys
    why = np.full(n, "", dtype=object)
    est = m["storeys_source"] == "estimate"
    if not params.judge_estimated_storeys:
        why[est] = "storeys not in the cadastre (only estimated from the height)"
    lo = np.where(judged, lim["z_min"].astype(np.float64), np.nan)
    hi = np.where(judged, lim["z_max"].astype(np.float64), np.nan)
    ch.compare("storeys_check", "Z", m["storeys"], lo, hi, params.storeys_tolerance, "", 0, why)

    # parts outside the buildable area. No buildable area in the building area: no limit (the whole
    # building area may be built on), unless the plan draws building lines there without the polygon.
    outside_m2 = np.full(n, np.nan)
    outside_depth = np.full(n, np.nan)
    bcol = ch.column("buildable_check")
    ugf_plan = ugf["plan_id"].astype(str).to_numpy() if len(ugf) else np.zeros(0, dtype=object)
    line_geoms = lines.geometry.to_numpy() if lines is not None and len(lines) else np.zeros(0, dtype=object)
    line_plan = lines["plan_id"].astype(str).to_numpy() if lines is not None and len(lines) else line_geoms
    btf_geoms = btf.geometry.to_numpy()
    for pid in sorted(set(plan[judged])):
        sel = np.flatnonzero(judged & (plan == pid))
        u = shapely.union_all(ugf.geometry.to_numpy()[ugf_plan == pid]) if len(ugf) else shapely.Polygon()
        has = np.zeros(len(sel), dtype=bool)
        if not u.is_empty:
            has = shapely.area(shapely.intersection(btf_geoms[bi[sel]], u)) >= params.min_overlap_m2
        plan_lines = line_geoms[line_plan == pid]
        if len(plan_lines):
            lu = shapely.union_all(plan_lines)
            drawn = shapely.intersects(btf_geoms[bi[sel]], lu)
            for i in sel[~has & drawn]:
                bcol[i] = UNKNOWN
                ch.reasons[i].append("buildable area: building lines without a buildable area polygon")
        sel = sel[has]
        if not len(sel):
            continue
        grown = shapely.buffer(u, params.buildable_tolerance_m)
        scope = scopes.get(pid)
        parts = geoms[sel]
        if scope is not None:
            parts = shapely.intersection(parts, scope)
        # the overlay only for the parts the grown area does not cover (a prepared `covers` is cheap, the
        # overlay with a plan-wide area is not: 10.5 of 15.5 s on 4 km²); a covered part leaves nothing
        shapely.prepare(grown)
        outside = np.full(len(parts), shapely.Polygon(), dtype=object)
        out = ~shapely.covers(grown, parts)
        outside[out] = shapely.difference(parts[out], grown)
        area = shapely.area(outside)
        outside_m2[sel] = area
        for i, o, ar in zip(sel, outside, area, strict=True):
            if ar >= params.min_outside_area_m2:
                pts = shapely.points(shapely.get_coordinates(o))
                depth = float(shapely.distance(pts, u).max())
                outside_depth[i] = depth
                bcol[i] = EXCEEDS
                ch.kinds[i].append("BUILDABLE")
                ch.violations[i].append(
                    f"outside the buildable area: {_fmt(ar, 'm2', 1)}, up to {_fmt(depth, 'm', 1)} deep"
                )
            else:
                outside_depth[i] = 0.0
                bcol[i] = OK

    btf_id = btf["gml_id"].astype(str).to_numpy() if len(btf) else np.zeros(0, dtype=object)
    ugf_id = ugf["gml_id"].astype(str).to_numpy() if len(ugf) else np.zeros(0, dtype=object)
    table = pd.DataFrame(
        {
            "plan_id": plan,
            "building_area_id": np.where(bi >= 0, btf_id[np.maximum(bi, 0)] if len(btf) else "", ""),
            "buildable_area_id": np.where(ui >= 0, ugf_id[np.maximum(ui, 0)] if len(ugf) else "", ""),
            "footprint_m2": shapely.area(geoms),
            "top_m": m["top_rel"],
            "top_abs_m": m["top_abs"],
            "flat_roof": m["flat"],
            "storeys": m["storeys"],
            "storeys_source": m["storeys_source"],
            **{c: lim[c] for c in LIMIT_COLUMNS},
            "outside_buildable_m2": outside_m2,
            "outside_depth_m": outside_depth,
            "top_note": m["top_note"],
        }
    )
    table.attrs["unjudged"] = no_area | multi
    return table, ch


# ---- parcels --------------------------------------------------------------------------------------------


def _check_parcels(
    p: gpd.GeoDataFrame,
    b: gpd.GeoDataFrame,
    storeys: np.ndarray,
    btf: gpd.GeoDataFrame,
    scopes: dict[str, BaseGeometry],
    params: ZoningParams,
) -> tuple[pd.DataFrame, _Checks]:
    n = len(p)
    pg = p.geometry.to_numpy()
    parea = shapely.area(pg)
    ia, ib, a = _pairs(pg, btf.geometry.to_numpy())
    keep = a >= params.min_overlap_m2
    ia, ib, a = ia[keep], ib[keep], a[keep]
    pieces = (
        shapely.intersection(pg[ia], btf.geometry.to_numpy()[ib]) if len(ia) else np.zeros(0, dtype=object)
    )
    # built area and floor area per piece
    fg = b.geometry.to_numpy()
    built = np.zeros(len(ia))
    gfa: np.ndarray = np.zeros(len(ia))
    gfa_unknown = np.zeros(len(ia), dtype=bool)
    if len(ia) and len(fg):
        ka, kb = shapely.STRtree(fg).query(pieces, predicate="intersects")
        inter = shapely.intersection(pieces[ka], fg[kb])
        ar = shapely.area(inter)
        st = storeys[kb]
        gfa = np.bincount(
            ka, weights=np.where(np.isfinite(st), ar * np.nan_to_num(st), 0.0), minlength=len(ia)
        )
        gfa_unknown = (
            np.bincount(ka, weights=(~np.isfinite(st) & (ar > 0)).astype(float), minlength=len(ia)) > 0
        )
        order = np.argsort(ka, kind="stable")
        ka, inter, ar = ka[order], inter[order], ar[order]
        starts = np.flatnonzero(np.r_[True, ka[1:] != ka[:-1]]) if len(ka) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(ka)] if len(ka) else starts
        for s, e in zip(starts, ends, strict=True):
            built[ka[s]] = ar[s] if e - s == 1 else shapely.union_all(inter[s:e]).area
    plan_of_btf = btf["plan_id"].astype(str).to_numpy() if len(btf) else np.zeros(0, dtype=object)
    piece_plan = plan_of_btf[ib] if len(ib) else np.zeros(0, dtype=object)

    ch = _Checks(n)
    plan = np.full(n, "", dtype=object)
    multi = np.zeros(n, dtype=bool)
    for i in range(n):
        pl = sorted(set(piece_plan[ia == i])) if len(ia) else []
        if len(pl) == 1:
            plan[i] = pl[0]
        elif len(pl) > 1:
            multi[i] = True
            plan[i] = "|".join(pl)
    in_scope = np.zeros(n, dtype=bool)
    if scopes:
        sg = np.array(list(scopes.values()), dtype=object)
        sa, _ = shapely.STRtree(sg).query(pg, predicate="intersects")
        in_scope[sa] = True
    has_area = np.bincount(ia, minlength=n) > 0
    for i in range(n):
        if multi[i]:
            ch.reasons[i].append(
                "building areas of several plans on the parcel; the applicable plan is not decided"
            )
        elif not has_area[i]:
            ch.reasons[i].append(
                "no building area (BP_BaugebietsTeilFlaeche) on the parcel"
                if in_scope[i]
                else "no zoning plan"
            )
    judged_piece = ~multi[ia] if len(ia) else np.zeros(0, dtype=bool)

    def val(col: str) -> np.ndarray:
        if col not in btf or not len(ib):
            return np.full(len(ib), np.nan)
        return pd.to_numeric(btf[col], errors="coerce").to_numpy()[ib]

    zoned = np.bincount(ia, weights=a, minlength=n)
    cols: dict[str, np.ndarray] = {"zoned_area_m2": zoned}
    # ratio measures (GRZ on the built area, GFZ on the floor area): weighted over pieces stating them
    for label, key, num, tol, name in (
        ("GRZ", "grz", built, params.grz_tolerance, "grz_check"),
        ("GFZ", "gfz", gfa, params.gfz_tolerance, "gfz_check"),
    ):
        bounds = {}
        measured_any = np.full(n, np.nan)
        for bound in ("min", "max"):
            v = val(f"{key}_{bound}")
            s = np.isfinite(v) & judged_piece
            ar = np.bincount(ia[s], weights=a[s], minlength=n)
            perm = np.bincount(ia[s], weights=(a * np.nan_to_num(v))[s], minlength=n)
            meas = np.bincount(ia[s], weights=num[s], minlength=n)
            unknown = (
                np.bincount(ia[s], weights=gfa_unknown[s].astype(float), minlength=n) > 0
                if key == "gfz"
                else np.zeros(n, bool)
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                permitted = np.where(ar > 0, perm / ar, np.nan)
                measured = np.where(ar > 0, meas / ar, np.nan)
            share = np.where(parea > 0, ar / parea, 0.0)
            why = np.full(n, "", dtype=object)
            why[(ar > 0) & (share < params.min_zoned_share)] = (
                f"less than {params.min_zoned_share:.0%} of the parcel lies in building areas stating {label}"
            )
            why[(why == "") & unknown] = "storeys of a building on the parcel unknown"
            bounds[bound] = (permitted, why)
            measured_any = np.where(np.isfinite(measured_any), measured_any, measured)
        lo, why_lo = bounds["min"]
        hi, why_hi = bounds["max"]
        why = np.where(why_hi != "", why_hi, why_lo)
        ch.compare(name, label, measured_any, lo, hi, tol, "", 2, why)
        out_key = "gfz_est" if key == "gfz" else key
        cols[out_key] = measured_any
        cols[f"{key}_permitted"] = hi
        cols[f"{key}_min_permitted"] = lo
    # absolute measures (GR on the built area, GF on the floor area), summed over the pieces stating them
    for label, key, num, name in (("GR", "gr", built, "grz_check"), ("GF", "gf", gfa, "gfz_check")):
        for bound in ("max",):
            v = val(f"{key}_{bound}")
            s = np.isfinite(v) & judged_piece
            if not s.any():
                cols[f"{key}_permitted_m2"] = np.full(n, np.nan)
                continue
            perm = np.where(
                np.bincount(ia[s], minlength=n) > 0, np.bincount(ia[s], weights=v[s], minlength=n), np.nan
            )
            meas = np.bincount(ia[s], weights=num[s], minlength=n)
            why = np.full(n, "", dtype=object)
            if key == "gf":
                unk = np.bincount(ia[s], weights=gfa_unknown[s].astype(float), minlength=n) > 0
                why[unk] = "storeys of a building on the parcel unknown"
            ch.compare(name, label, meas, np.full(n, np.nan), perm, params.area_tolerance_m2, "m2", 0, why)
            cols[f"{key}_permitted_m2"] = perm
    cols["built_area_m2"] = np.bincount(ia, weights=built, minlength=n)
    cols["gfa_est_m2"] = np.bincount(ia, weights=gfa, minlength=n)
    table = pd.DataFrame({"plan_id": plan, "parcel_area_m2": parea, **cols})
    table.attrs["unjudged"] = multi | ~has_area
    return table, ch


# ---- entry ----------------------------------------------------------------------------------------------


def check_zoning(
    parcels: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    areas: gpd.GeoDataFrame,
    plans: gpd.GeoDataFrame | None = None,
    params: ZoningParams | None = None,
    lines: gpd.GeoDataFrame | None = None,
) -> ZoningResult:
    """Parcels and buildings with their measured figures, the permitted values and a status (see module)."""
    params = params or ZoningParams()
    crs = parcels.crs if parcels.crs is not None else buildings.crs
    for name, g in (("buildings", buildings), ("areas", areas)):
        if g.crs is not None and crs is not None and g.crs != crs:
            raise ValueError(f"check_zoning: {name} are in {g.crs}, parcels in {crs}")
    p = parcels[parcels.geometry.notna() & ~parcels.geometry.is_empty].reset_index(drop=True)
    b = buildings[buildings.geometry.notna() & ~buildings.geometry.is_empty].reset_index(drop=True)
    if not shapely.is_valid(p.geometry.to_numpy()).all():
        p = p.set_geometry(shapely.make_valid(p.geometry.to_numpy()))
    if not shapely.is_valid(b.geometry.to_numpy()).all():
        b = b.set_geometry(shapely.make_valid(b.geometry.to_numpy()))
    zoning = _binding(areas, params)
    btf = zoning[zoning["kind"] == "building_area"].reset_index(drop=True)
    ugf = zoning[zoning["kind"] == "buildable_area"].reset_index(drop=True)
    scopes = _scopes(plans, zoning)

    if lines is not None and len(lines):
        lines = _binding(lines, params)
    bt, bch = _check_buildings(b, btf, ugf, scopes, params, lines)
    b_status = bch.status(bt.attrs["unjudged"])
    pt, pch = _check_parcels(p, b, bt["storeys"].to_numpy(dtype=np.float64), btf, scopes, params)

    # buildings -> parcels by representative point
    parcel_of = np.full(len(b), -1, dtype=np.int64)
    if len(b) and len(p):
        pa, pb = shapely.STRtree(p.geometry.to_numpy()).query(
            shapely.point_on_surface(b.geometry.to_numpy()), predicate="within"
        )
        parcel_of[pa] = pb
    n_exc = np.zeros(len(p), dtype=np.int64)
    outside = np.zeros(len(p))
    outside_m2 = bt["outside_buildable_m2"].to_numpy(dtype=np.float64)
    outside_depth = bt["outside_depth_m"].to_numpy(dtype=np.float64)
    for i in np.flatnonzero(parcel_of >= 0):
        j = parcel_of[i]
        if np.isfinite(outside_m2[i]) and outside_depth[i] > 0:
            outside[j] += outside_m2[i]
        if b_status[i] in ("exceeds", "below_minimum"):
            n_exc[j] += 1
            oid = str(b["oid"].iat[i]) if "oid" in b else str(i)
            pch.violations[j].append(f"building {oid}: " + "; ".join(bch.violations[i]))
        elif b_status[i] == "cannot_judge" and not set(bch.reasons[i]) <= set(pch.reasons[j]):
            oid = str(b["oid"].iat[i]) if "oid" in b else str(i)
            pch.reasons[j].append(f"building {oid}: " + "; ".join(bch.reasons[i]))
        if b_status[i] == "exceeds":
            pch.set("buildings_check", j, EXCEEDS)
        elif b_status[i] == "below_minimum":
            pch.set("buildings_check", j, BELOW)
        elif b_status[i] == "cannot_judge":
            pch.set("buildings_check", j, UNKNOWN)
        else:
            pch.set("buildings_check", j, OK)
    p_status = pch.status(pt.attrs["unjudged"])

    keep_b = [c for c in ("oid", "flstkennz", "funktion") if c in b]
    keep_p = [c for c in ("flstkennz", "gemarkung", "flur") if c in p]
    bout = pd.concat(
        [b[keep_b].reset_index(drop=True), bt.reset_index(drop=True), _finish(bch, b_status)], axis=1
    )
    pt["n_buildings_violating"] = n_exc
    pt["outside_buildable_m2"] = outside
    pout = pd.concat(
        [p[keep_p].reset_index(drop=True), pt.reset_index(drop=True), _finish(pch, p_status)], axis=1
    )
    return ZoningResult(
        parcels=gpd.GeoDataFrame(pout, geometry=p.geometry.to_numpy(), crs=p.crs),
        buildings=gpd.GeoDataFrame(bout, geometry=b.geometry.to_numpy(), crs=b.crs),
    )


def _finish(ch: _Checks, status: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({k: v.astype(str) for k, v in sorted(ch.checks.items())})
    df["status"] = status.astype(str)
    df["violations"] = ["; ".join(v) for v in ch.violations]
    df["violation_kinds"] = ["|".join(dict.fromkeys(k)) for k in ch.kinds]
    df["reasons"] = ["; ".join(dict.fromkeys(r)) for r in ch.reasons]
    return df
