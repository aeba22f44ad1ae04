"""Zoning checks on crafted parcels, buildings and plan areas with known violations."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.sources.xplan import AREA_COLUMNS
from pipeline.stages.zoning import ZoningParams, check_zoning

X0, Y0 = 370_000.0, 5_710_000.0
CRS = "EPSG:25832"


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def areas(*rows: dict) -> gpd.GeoDataFrame:
    out = []
    for r in rows:
        d = {c: (np.nan if c.endswith(("_min", "_max", "_zwingend", "_ausn")) else "") for c in AREA_COLUMNS}
        d.update({"ebene": 0, "rechtscharakter": "1000"})
        d.update(r)
        out.append(d)
    return gpd.GeoDataFrame(pd.DataFrame(out), geometry="geometry", crs=CRS)


def area(plan, gid, kind, geom, **lim):
    return {"plan_id": plan, "gml_id": gid, "kind": kind, "geometry": geom, **lim}


def parcels(**geoms) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"flstkennz": list(geoms)}, geometry=list(geoms.values()), crs=CRS)


BASE = 50.0  # terrain height (DHHN2016)


def buildings(rows: list[dict]) -> gpd.GeoDataFrame:
    """rows: oid, geometry, top (m above terrain, p99), eaves (p50 above terrain), floors, floors_known, quality."""
    recs = []
    for r in rows:
        top = r.get("top", 8.0)
        recs.append(
            {
                "oid": r["oid"],
                "height": r.get("height", top - 0.5),
                "base_height": BASE,
                "roof_height": BASE + r.get("height", top - 0.5),
                "p50": BASE + r.get("eaves", top),
                "p99": BASE + top if r.get("quality", "ok") == "ok" else np.nan,
                "floors_estimate": r.get("floors", 2),
                "floors_is_estimate": not r.get("floors_known", True),
                "quality": r.get("quality", "ok"),
                "base_source": r.get("base_source", "ring"),
                "geometry": r["geometry"],
            }
        )
    return gpd.GeoDataFrame(pd.DataFrame(recs), geometry="geometry", crs=CRS)


@pytest.fixture
def district():
    plan = areas(
        area(
            "P",
            "A",
            "building_area",
            box(0, 0, 100, 100),
            grz_max=0.4,
            gfz_max=1.0,
            z_max=2.0,
            fh_max=10.0,
            fh_ref="relativGelaendeoberkante",
        ),
        area("P", "U", "buildable_area", box(10, 10, 90, 90), z_max=3.0),
    )
    par = parcels(
        p1=box(0, 0, 50, 50),
        p2=box(50, 0, 100, 50),
        p3=box(0, 50, 50, 100),
        p4=box(50, 50, 100, 100),
        p5=box(200, 0, 250, 50),
    )
    bld = buildings(
        [
            {"oid": "b1", "geometry": box(15, 15, 35, 35), "top": 9.0, "floors": 2},
            {"oid": "b2", "geometry": box(52, 12, 88, 48), "top": 12.3, "floors": 4},
            {"oid": "b3", "geometry": box(2, 60, 20, 80), "top": 6.0, "floors": 1},
            {
                "oid": "b6",
                "geometry": box(60, 60, 70, 70),
                "quality": "fallback_default",
                "height": 9.0,
                "floors": 3,
                "floors_known": False,
            },
            {"oid": "b5", "geometry": box(210, 10, 230, 30), "top": 30.0, "floors": 9},
        ]
    )
    return par, bld, plan


def test_known_violations(district):
    par, bld, plan = district
    r = check_zoning(par, bld, plan)
    b = r.buildings.set_index("oid")
    p = r.parcels.set_index("flstkennz")

    # b1: everything within (Z 2 against the buildable area's Z 3, FH 9 m against 10 m)
    assert b.loc["b1", "status"] == "within", b.loc["b1", "reasons"]
    assert (b.loc["b1", "z_max"], b.loc["b1", "fh_max"]) == (3.0, 10.0)
    assert b.loc["b1", "building_area_id"] == "A" and b.loc["b1", "buildable_area_id"] == "U"
    # b2: FH +2.3 m, Z 4 > 3
    assert b.loc["b2", "status"] == "exceeds"
    assert b.loc["b2", "violation_kinds"] == "FH|Z"
    assert "FH 12.3 m > 10 m (+2.3 m)" in b.loc["b2", "violations"]
    assert "Z 4 > 3 (+1)" in b.loc["b2", "violations"]
    assert b.loc["b2", "top_m"] == pytest.approx(12.3)
    # b3: 8 m x 20 m outside the buildable area (grown by 0.3 m): 7.7 x 20 = 154 m2, 8 m deep
    assert b.loc["b3", "violation_kinds"] == "BUILDABLE"
    assert b.loc["b3", "outside_buildable_m2"] == pytest.approx(7.7 * 20)
    assert b.loc["b3", "outside_depth_m"] == pytest.approx(8.0)
    assert b.loc["b3", "buildable_check"] == "exceeds"
    # b6: heights not measured -> cannot be judged, with the reason
    assert b.loc["b6", "status"] == "cannot_judge"
    assert "FH: height not measured (fallback_default)" in b.loc["b6", "reasons"]
    assert b.loc["b6", "storeys_source"] == "estimate" and b.loc["b6", "storeys_check"] == "ok"
    # b5: no plan
    assert b.loc["b5", "status"] == "cannot_judge" and b.loc["b5", "reasons"] == "no zoning plan"

    # parcels: p2 GRZ 1296/2500 = 0.518 > 0.4, GFZ 1296*4/2500 = 2.07 > 1.0, plus its building
    assert p.loc["p2", "grz"] == pytest.approx(0.5184)
    assert p.loc["p2", "gfz_est"] == pytest.approx(2.0736)
    assert p.loc["p2", "violation_kinds"] == "GRZ|GFZ"
    assert "GRZ 0.52 > 0.4 (+0.12)" in p.loc["p2", "violations"]
    assert "building b2: FH" in p.loc["p2", "violations"]
    assert p.loc["p2", "status"] == "exceeds" and p.loc["p2", "n_buildings_violating"] == 1
    assert p.loc["p1", "status"] == "within" and p.loc["p1", "grz"] == pytest.approx(0.16)
    assert p.loc["p3", "status"] == "exceeds" and p.loc["p3", "grz_check"] == "ok"
    assert p.loc["p3", "outside_buildable_m2"] == pytest.approx(154.0)
    assert p.loc["p4", "status"] == "cannot_judge" and "building b6" in p.loc["p4", "reasons"]
    assert p.loc["p5", "status"] == "cannot_judge" and p.loc["p5", "reasons"] == "no zoning plan"
    assert set(r.parcels["status"]) <= {"within", "exceeds", "below_minimum", "cannot_judge"}


def test_tolerances(district):
    par, _bld, plan = district
    # b2 trimmed to stay within GRZ; heights 10.4 (inside the 0.5 m tolerance) and 10.6 (beyond)
    for top, want in ((10.4, "ok"), (10.6, "exceeds")):
        b = buildings([{"oid": "x", "geometry": box(55, 12, 75, 32), "top": top, "floors": 2}])
        r = check_zoning(par, b, plan)
        assert r.buildings.iloc[0]["height_check"] == want
    # the buildable area tolerance: 0.2 m over the line is no violation, 0.5 m over is (0.2 m x 20 m)
    for dx, want in ((0.2, "ok"), (0.5, "exceeds")):
        b = buildings([{"oid": "x", "geometry": box(10 - dx, 20, 30, 40), "top": 5.0, "floors": 1}])
        r = check_zoning(par, b, plan, params=ZoningParams(min_outside_area_m2=1.0))
        assert r.buildings.iloc[0]["buildable_check"] == want


def test_height_references():
    geom = box(0, 0, 50, 50)
    par = parcels(p=geom)
    b = buildings(
        [
            {"oid": "flat", "geometry": box(5, 5, 15, 15), "top": 9.0, "eaves": 8.8},
            {"oid": "pitched", "geometry": box(20, 5, 30, 15), "top": 9.0, "eaves": 6.0},
        ]
    )

    def run(**lim):
        plan = areas(area("P", "A", "building_area", geom, **lim))
        return check_zoning(par, b, plan).buildings.set_index("oid")

    r = run(fh_max=8.0)  # no reference given
    assert r.loc["flat", "status"] == "cannot_judge"
    assert "FH: height reference (hoehenbezug) not given" in r.loc["flat", "reasons"]
    r = run(fh_max=8.0, fh_ref="relativStrasse")
    assert "FH: height reference relativStrasse not supported" in r.loc["flat", "reasons"]
    r = run(gh_max=BASE + 8.0, gh_ref="absolutDHHN")  # absolute: 59 m DHHN > 58 m
    assert r.loc["flat", "violations"] == "GH 59 m > 58 m (+1 m)"
    r = run(gh_max=BASE + 10.0, gh_ref="absolutNHN")
    assert r.loc["flat", "status"] == "within"
    # eaves: judged on the flat roof only
    r = run(th_max=7.0, th_ref="relativGelaendeoberkante")
    assert r.loc["flat", "violation_kinds"] == "TH"
    assert r.loc["pitched", "status"] == "cannot_judge"
    assert "TH: eaves height not measured" in r.loc["pitched", "reasons"]
    # minimum and mandatory heights
    r = run(gh_min=12.0, gh_max=12.0, gh_ref="relativGelaendeoberkante")
    assert r.loc["flat", "status"] == "below_minimum" and r.loc["flat", "violation_kinds"] == "GHmin"
    # guessed ground height: a height above terrain cannot be judged
    b2 = b.assign(base_source="guessed")
    plan = areas(area("P", "A", "building_area", geom, fh_max=5.0, fh_ref="relativGelaendeoberkante"))
    r = check_zoning(par, b2, plan).buildings
    assert (r["status"] == "cannot_judge").all()
    assert r["reasons"].str.contains("ground height at the building guessed").all()


def test_parcel_across_two_areas_and_absolute_limits():
    # a parcel half in GRZ 0.2, half in GRZ 0.6: permitted 0.4
    plan = areas(
        area("P", "A", "building_area", box(0, 0, 50, 100), grz_max=0.2, gr_max=300.0),
        area("P", "B", "building_area", box(50, 0, 100, 100), grz_max=0.6),
    )
    par = parcels(p=box(0, 0, 100, 100))
    b = buildings(
        [
            {"oid": "b", "geometry": box(10, 10, 30, 30), "top": 5.0},
            {"oid": "c", "geometry": box(60, 10, 90, 80)},
        ]
    )
    p = check_zoning(par, b, plan).parcels.iloc[0]
    assert p["grz_permitted"] == pytest.approx(0.4)
    assert p["grz"] == pytest.approx((400 + 2100) / 10000)
    assert p["grz_check"] == "exceeds" and p["violation_kinds"] == "GR"  # GRZ 0.25 fine, GR 400 > 300 m2
    assert "GR 400 m2 > 300 m2 (+100 m2)" in p["violations"]


def test_minimum_grz_and_zoned_share():
    plan = areas(area("P", "A", "building_area", box(0, 0, 100, 100), grz_min=0.3, grz_max=0.5))
    b = buildings([{"oid": "b", "geometry": box(10, 10, 20, 20)}])
    p = check_zoning(parcels(p=box(0, 0, 50, 50)), b, plan).parcels.iloc[0]
    assert p["status"] == "below_minimum" and p["violation_kinds"] == "GRZmin"
    # a parcel mostly outside the building area (e.g. the street): GRZ not judged
    p = check_zoning(parcels(p=box(80, 0, 180, 50)), b, plan).parcels.iloc[0]
    assert p["grz_check"] == "unknown" and "less than 50% of the parcel" in p["reasons"]


def test_estimated_storeys_and_several_plans(district):
    par, _bld, plan = district
    b = buildings(
        [{"oid": "e", "geometry": box(55, 12, 65, 22), "top": 14.0, "floors": 4, "floors_known": False}]
    )
    r = check_zoning(par, b, plan, params=ZoningParams(judge_estimated_storeys=False)).buildings.iloc[0]
    assert r["storeys_check"] == "unknown" and "storeys not in the cadastre" in r["reasons"]
    r = check_zoning(par, b, plan).buildings.iloc[0]
    assert r["storeys_check"] == "exceeds" and r["storeys_source"] == "estimate"
    # a second plan's building area over the same ground: not decided
    both = pd.concat([plan, areas(area("Q", "A2", "building_area", box(0, 0, 100, 100), grz_max=0.8))])
    r = check_zoning(par, b, gpd.GeoDataFrame(both, crs=CRS))
    assert r.buildings.iloc[0]["status"] == "cannot_judge"
    assert "several plans" in r.buildings.iloc[0]["reasons"]


def test_non_binding_and_other_levels_are_ignored(district):
    par, bld, plan = district
    plan = plan.copy()
    plan["rechtscharakter"] = ["9998", "1000"]  # the building area is only a note
    r = check_zoning(par, bld, plan)
    assert (r.buildings["building_area_id"] == "").all()
    plan["rechtscharakter"] = "1000"
    plan["ebene"] = [1, 0]
    assert (check_zoning(par, bld, plan).buildings["building_area_id"] == "").all()


def test_inputs_not_mutated_and_deterministic(district):
    par, bld, plan = district
    before = (par.copy(), bld.copy(), plan.copy())
    r1 = check_zoning(par, bld, plan)
    r2 = check_zoning(par, bld, plan)
    pd.testing.assert_frame_equal(par, before[0])
    pd.testing.assert_frame_equal(bld, before[1])
    pd.testing.assert_frame_equal(plan, before[2])
    pd.testing.assert_frame_equal(r1.parcels, r2.parcels)
    pd.testing.assert_frame_equal(r1.buildings, r2.buildings)


def test_building_lines_without_buildable_polygon(district):
    par, bld, plan = district
    only_building_area = plan[plan["kind"] == "building_area"]
    r = check_zoning(par, bld, only_building_area).buildings.set_index("oid")
    assert r.loc["b3", "buildable_check"] == ""  # no Baugrenze at all: the whole building area is buildable
    lines = gpd.GeoDataFrame(
        {"plan_id": ["P"], "gml_id": ["L"], "kind": ["baugrenze"], "ebene": [0], "rechtscharakter": ["1000"]},
        geometry=[shapely.LineString([(X0 + 10, Y0 + 10), (X0 + 10, Y0 + 90)])],
        crs=CRS,
    )
    r = check_zoning(par, bld, only_building_area, lines=lines).buildings.set_index("oid")
    assert r.loc["b3", "buildable_check"] == "unknown"
    assert "building lines without a buildable area polygon" in r.loc["b3", "reasons"]
