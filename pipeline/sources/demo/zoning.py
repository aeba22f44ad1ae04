"""A zoning plan (XPlanGML 6.0 Bebauungsplan) for the demo district, with planted violations and their truth.

    write_zoning_plan(out, seed) -> counts

Reads what the demo wrote (the cadastre GeoPackage and ``truth/buildings.csv``) and writes

    out/xplan/demo_bplan.gml    BP_Plan, BP_Bereich, one BP_BaugebietsTeilFlaeche per built parcel (the parcel's
                                outline) with GRZ, Z and an FH limit (XP_Hoehenangabe, above the terrain), and
                                BP_UeberbaubareGrundstuecksFlaeche (buildable areas) around its buildings
    out/truth/zoning.csv        object (parcel | building), id (flstkennz | oid), kind (GRZ | FH | Z |
                                BUILDABLE), expected (1 = violation planted, 0 = within), truth value, limit

Each built parcel independently gets, with probability `p_violation` per kind, a limit its true figures
break clearly (GRZ 25 % above the limit; the tallest building 2 m above FH; one storey above Z; the
largest building 2.5 m beyond its buildable area), otherwise a limit they keep with the same margin.
Limits whose truth would lie within 1 m (heights) or near a storey boundary (estimated storeys) of the
limit are not stated, so every truth row is unambiguous. Measures follow the zoning stage's rules on the
cadastre's footprints (the buildings layer's footprint filter: Gebäude above ground, >= 2 m2) and the
truth heights (FH: ridge above base; storeys: ALKIS anzahlgs, else max(1, round(height / 3 m))).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from lxml import etree

from pipeline.sources.demo.cadastre import PARCEL_LAYER

PLAN_FILE = "xplan/demo_bplan.gml"
TRUTH_FILE = "truth/zoning.csv"
STREAM_ZONING = 11
NS = {
    "xplan": "http://www.xplanung.de/xplangml/6/0",
    "gml": "http://www.opengis.net/gml/3.2",
    "xlink": "http://www.w3.org/1999/xlink",
}
SRS = "EPSG:25832"
GRZ_FACTOR = 1.25
FH_MARGIN_M = 2.0
FH_AMBIGUOUS_M = 1.0
OUTSIDE_M = 2.5
INSIDE_M = 2.0


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _sub(
    parent: etree._Element, prefix: str, name: str, text: str | None = None, **attrib: str
) -> etree._Element:
    el = etree.SubElement(parent, _q(prefix, name), attrib)
    if text is not None:
        el.text = text
    return el


def _surface(parent: etree._Element, geom: Any, gid: str) -> None:
    polys = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]

    def polygon(par: etree._Element, poly: shapely.Polygon, pid: str) -> None:
        pe = _sub(par, "gml", "Polygon", srsName=SRS)
        pe.set(_q("gml", "id"), pid)
        for tag, ring in [("exterior", poly.exterior), *[("interior", r) for r in poly.interiors]]:
            lr = _sub(_sub(pe, "gml", tag), "gml", "LinearRing")
            _sub(lr, "gml", "posList", " ".join(f"{x:.3f} {y:.3f}" for x, y in ring.coords))

    if len(polys) == 1:
        polygon(parent, polys[0], gid)
        return
    ms = _sub(parent, "gml", "MultiSurface", srsName=SRS)
    ms.set(_q("gml", "id"), gid)
    for k, p in enumerate(polys):
        polygon(_sub(ms, "gml", "surfaceMember"), p, f"{gid}_{k}")


def _storeys(anzahlgs: float, height: float) -> float:
    """Storeys as the zoning stage sees them; NaN when an estimate lies near a rounding boundary."""
    if np.isfinite(anzahlgs) and anzahlgs > 0:
        return float(anzahlgs)
    if not np.isfinite(height):
        return np.nan
    f = height / 3.0
    if abs(f - np.floor(f) - 0.5) < 0.2:
        return np.nan
    return float(max(1.0, np.round(f)))


def write_zoning_plan(out: Path, seed: int = 42, p_violation: float = 0.25) -> dict[str, int]:
    from pipeline.sources.cadastre import FootprintFilter, read_footprints

    out = Path(out)
    gpkg = out / "alkis" / "alkis_vereinfacht_demo.gpkg"
    import geopandas as gpd

    parcels = gpd.read_file(gpkg, layer=PARCEL_LAYER).sort_values("flstkennz").reset_index(drop=True)
    fp = read_footprints([gpkg], "alkis_gpkg", flt=FootprintFilter()).gdf
    truth = pd.read_csv(out / "truth" / "buildings.csv", dtype={"oid": str})
    truth = truth.set_index("oid")
    epochs = [c.removeprefix("present_") for c in truth.columns if c.startswith("present_")]
    latest = sorted(epochs)[-1]
    fp = fp.sort_values("oid").reset_index(drop=True)
    geoms = fp.geometry.to_numpy()
    geoms = np.where(shapely.is_valid(geoms), geoms, shapely.make_valid(geoms))
    n = len(fp)
    t = truth.reindex(fp["oid"])
    top = (t["ridge_height"] - t["base_height"]).to_numpy(dtype=float)
    present = t[f"present_{latest}"].fillna(0).to_numpy(dtype=float) > 0
    valid = t["geometry_valid"].fillna(0).to_numpy(dtype=float) > 0
    anz = (
        pd.to_numeric(fp["anzahlgs"], errors="coerce").to_numpy(dtype=float)
        if "anzahlgs" in fp
        else np.full(n, np.nan)
    )
    storeys = np.array([_storeys(a, h) for a, h in zip(anz, t["height"].to_numpy(dtype=float), strict=True)])
    usable = present & valid & np.isfinite(top)

    # building -> parcel with the largest overlap (the stage's rule)
    pg = parcels.geometry.to_numpy()
    tree = shapely.STRtree(pg)
    ia, ib = tree.query(geoms, predicate="intersects")
    area = shapely.area(shapely.intersection(geoms[ia], pg[ib]))
    order = np.lexsort((ib, -area, ia))
    ia, ib = ia[order], ib[order]
    first = np.r_[True, ia[1:] != ia[:-1]] if len(ia) else np.zeros(0, bool)
    parcel_of = np.full(n, -1, dtype=np.int64)
    parcel_of[ia[first]] = ib[first]

    rng = np.random.default_rng([seed, STREAM_ZONING])
    built = sorted(set(parcel_of[parcel_of >= 0].tolist()))
    root = etree.Element(_q("xplan", "XPlanAuszug"), nsmap=NS)
    root.set(_q("gml", "id"), "GML_demo_auszug")
    bounds = shapely.total_bounds(pg)
    scope = shapely.box(*bounds)
    plan = _sub(_sub(root, "gml", "featureMember"), "xplan", "BP_Plan")
    plan.set(_q("gml", "id"), "GML_demo_plan")
    _sub(plan, "xplan", "name", "Demo-Bebauungsplan")
    _sub(plan, "xplan", "nummer", "DEMO-1")
    _surface(_sub(plan, "xplan", "raeumlicherGeltungsbereich"), scope, "GML_demo_scope")
    _sub(plan, "xplan", "planArt", "1000")
    _sub(plan, "xplan", "bereich").set(_q("xlink", "href"), "#GML_demo_bereich")
    ber = _sub(_sub(root, "gml", "featureMember"), "xplan", "BP_Bereich")
    ber.set(_q("gml", "id"), "GML_demo_bereich")
    _sub(ber, "xplan", "nummer", "0")
    _sub(ber, "xplan", "gehoertZuPlan").set(_q("xlink", "href"), "#GML_demo_plan")

    rows: list[dict[str, Any]] = []
    ugf_geoms: list[Any] = []
    ugf_owner: list[int] = []
    counts = {"building_areas": 0, "buildable_areas": 0}
    for j in built:
        members = np.flatnonzero(parcel_of == j)
        ok = usable[members].all()
        draws = rng.random(4) < p_violation  # GRZ, FH, Z, BUILDABLE (drawn for every parcel: stable stream)
        limits: dict[str, float] = {}
        parcel = pg[j]
        flst = str(parcels["flstkennz"].iat[j])
        if ok:
            # GRZ: union of every footprint inside the parcel
            fps = shapely.intersection(geoms[shapely.intersects(geoms, parcel)], parcel)
            grz = shapely.union_all(fps).area / parcel.area if len(fps) else 0.0
            if draws[0] and grz >= 0.08:
                limits["GRZ"] = float(np.floor(grz / GRZ_FACTOR * 100) / 100)
            else:
                limits["GRZ"] = float(min(1.0, np.ceil((grz * GRZ_FACTOR + 0.05) * 100) / 100))
            rows.append(_row("parcel", flst, "GRZ", grz > limits["GRZ"], grz, limits["GRZ"]))
            tops = top[members]
            fh = tops.max() - FH_MARGIN_M if draws[1] else tops.max() + FH_MARGIN_M
            if np.all(np.abs(tops - fh) >= FH_AMBIGUOUS_M):
                limits["FH"] = round(float(fh), 1)
                for i in members:
                    rows.append(
                        _row("building", fp["oid"].iat[i], "FH", top[i] > limits["FH"], top[i], limits["FH"])
                    )
            st = storeys[members]
            if np.isfinite(st).all():
                z = st.max() - 1 if draws[2] and st.max() >= 2 else st.max() + 1
                limits["Z"] = float(z)
                for i in members:
                    rows.append(_row("building", fp["oid"].iat[i], "Z", storeys[i] > z, storeys[i], z))
        # buildable areas: every building grown by 2 m, the largest one (if planted) shrunk by 2.5 m
        target = members[np.argmax(shapely.area(geoms[members]))]
        parts = []
        for i in members:
            if ok and draws[3] and i == target and shapely.buffer(geoms[i], -OUTSIDE_M).area >= 10.0:
                parts.append(shapely.buffer(geoms[i], -OUTSIDE_M, join_style="mitre"))
            else:
                parts.append(shapely.buffer(geoms[i], INSIDE_M, join_style="mitre"))
        ugf = shapely.union_all(parts)
        ugf_geoms.append(ugf)
        ugf_owner.append(j)
        btf = _sub(_sub(root, "gml", "featureMember"), "xplan", "BP_BaugebietsTeilFlaeche")
        btf.set(_q("gml", "id"), f"GML_demo_btf_{j:05d}")
        _sub(btf, "xplan", "gehoertZuBereich").set(_q("xlink", "href"), "#GML_demo_bereich")
        _sub(btf, "xplan", "rechtscharakter", "1000")
        if "FH" in limits:
            ha = _sub(_sub(btf, "xplan", "hoehenangabe"), "xplan", "XP_Hoehenangabe")
            _sub(ha, "xplan", "hoehenbezug", "2000")
            _sub(ha, "xplan", "bezugspunkt", "2000")
            _sub(ha, "xplan", "h", f"{limits['FH']:.1f}", uom="m")
        _surface(_sub(btf, "xplan", "position"), parcel, f"GML_demo_btf_{j:05d}_g")
        _sub(btf, "xplan", "flaechenschluss", "true")
        if "GRZ" in limits:
            _sub(btf, "xplan", "GRZ", f"{limits['GRZ']:.2f}")
        if "Z" in limits:
            _sub(btf, "xplan", "Z", f"{limits['Z']:.0f}")
        _sub(btf, "xplan", "besondereArtDerBaulNutzung", "1100")
        counts["building_areas"] += 1
        u = _sub(_sub(root, "gml", "featureMember"), "xplan", "BP_UeberbaubareGrundstuecksFlaeche")
        u.set(_q("gml", "id"), f"GML_demo_ugf_{j:05d}")
        _sub(u, "xplan", "gehoertZuBereich").set(_q("xlink", "href"), "#GML_demo_bereich")
        _sub(u, "xplan", "rechtscharakter", "1000")
        _surface(_sub(u, "xplan", "position"), ugf, f"GML_demo_ugf_{j:05d}_g")
        _sub(u, "xplan", "flaechenschluss", "false")
        counts["buildable_areas"] += 1

    # buildable-area truth by the stage's rule (all buildable areas of the plan, grown by 0.3 m)
    grown = shapely.buffer(shapely.union_all(ugf_geoms), 0.3) if ugf_geoms else shapely.Polygon()
    for i in range(n):
        j = parcel_of[i]
        if j < 0 or not usable[parcel_of == j].all():
            continue
        outside = shapely.difference(shapely.intersection(geoms[i], scope), grown).area
        if 0.5 <= outside < 3.0:
            continue  # too close to the 1 m2 threshold to be a clean truth
        rows.append(_row("building", fp["oid"].iat[i], "BUILDABLE", outside >= 1.0, outside, 1.0))

    path = out / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True))
    df = pd.DataFrame(rows, columns=["object", "id", "kind", "expected", "truth_value", "limit"])
    df = df.sort_values(["object", "id", "kind"]).reset_index(drop=True)
    (out / TRUTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / TRUTH_FILE, index=False, float_format="%.3f", lineterminator="\n")
    counts["truth_rows"] = len(df)
    counts["violations"] = int(df["expected"].sum())
    return counts


def _row(obj: str, oid: object, kind: str, expected: bool, value: float, limit: float) -> dict[str, Any]:
    return {
        "object": obj,
        "id": str(oid),
        "kind": kind,
        "expected": int(bool(expected)),
        "truth_value": float(value),
        "limit": float(limit),
    }


def score(truth: pd.DataFrame, parcels: pd.DataFrame, buildings: pd.DataFrame) -> dict[str, float]:
    """Recall of the planted violations and false-alarm rate of the zoning checks against the truth:
    a truth row is found when its object's `violation_kinds` holds the kind (parcels by flstkennz,
    buildings by oid); a false alarm is a row with expected 0 that is flagged."""
    found: set[tuple[str, str, str]] = set()
    for obj, df, key in (("parcel", parcels, "flstkennz"), ("building", buildings, "oid")):
        for oid, kinds in zip(df[key].astype(str), df["violation_kinds"].astype(str), strict=True):
            for k in filter(None, kinds.split("|")):
                found.add((obj, oid, k))
    hit = np.array(
        [
            (o, i, k) in found
            for o, i, k in zip(truth["object"], truth["id"].astype(str), truth["kind"], strict=True)
        ]
    )
    exp = truth["expected"].to_numpy() == 1
    return {
        "planted": int(exp.sum()),
        "found": int((hit & exp).sum()),
        "recall": float((hit & exp).sum() / max(1, exp.sum())),
        "checked_clean": int((~exp).sum()),
        "false_alarms": int((hit & ~exp).sum()),
        "false_alarm_rate": float((hit & ~exp).sum() / max(1, (~exp).sum())),
    }
