"""The demo's zoning plan: written by `twin demo`, read back by the XPlanGML reader, and its planted
violations found by the zoning stage (bar: >= 95 % found, <= 5 % false alarms)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from pipeline.sources.demo.zoning import PLAN_FILE, TRUTH_FILE, score, write_zoning_plan
from pipeline.sources.xplan import read_plans
from pipeline.stages.zoning import check_zoning


def _measured_buildings(raw, noise_m: float, seed: int = 0) -> gpd.GeoDataFrame:
    """The cadastre's footprints with heights as the buildings layer measures them, simulated from the truth
    (top = ridge, p50 between eave and ridge, base) plus noise."""
    from pipeline.sources.cadastre import FootprintFilter, read_footprints

    fp = read_footprints(
        [raw / "alkis" / "alkis_vereinfacht_demo.gpkg"], "alkis_gpkg", flt=FootprintFilter()
    ).gdf
    t = pd.read_csv(raw / "truth" / "buildings.csv", dtype={"oid": str}).set_index("oid").reindex(fp["oid"])
    rng = np.random.default_rng(seed)
    n = len(fp)
    base = t["base_height"].to_numpy(float) + rng.normal(0, noise_m, n)
    ridge = t["ridge_height"].to_numpy(float) + rng.normal(0, noise_m, n)
    roof = t["roof_height"].to_numpy(float) + rng.normal(0, noise_m, n)
    anz = pd.to_numeric(fp["anzahlgs"], errors="coerce").to_numpy(float)
    height = roof - base
    floors = np.where(np.isfinite(anz) & (anz > 0), anz, np.maximum(1, np.round(height / 3.0)))
    return gpd.GeoDataFrame(
        {
            "oid": fp["oid"].to_numpy(),
            "base_height": base,
            "roof_height": roof,
            "height": height,
            "p50": (t["eave_height"].to_numpy(float) + ridge) / 2,
            "p99": ridge,
            "floors_estimate": floors,
            "floors_is_estimate": ~(np.isfinite(anz) & (anz > 0)),
            "quality": "ok",
            "base_source": "ring",
        },
        geometry=fp.geometry.to_numpy(),
        crs=fp.crs,
    )


def test_demo_writes_a_plan_and_its_truth(tiny_project):
    raw = tiny_project / "data" / "raw"
    assert (raw / PLAN_FILE).is_file() and (raw / TRUTH_FILE).is_file()
    plans = read_plans([raw / PLAN_FILE], "EPSG:25832")
    assert len(plans.plans) == 1 and plans.warnings == []
    truth = pd.read_csv(raw / TRUTH_FILE, dtype={"id": str})
    assert set(truth["kind"]) == {"GRZ", "FH", "Z", "BUILDABLE"}
    assert truth["expected"].sum() >= 10 and (truth["expected"] == 0).sum() >= 10
    # deterministic: written again, byte-identical
    before = (raw / PLAN_FILE).read_bytes(), (raw / TRUTH_FILE).read_bytes()
    write_zoning_plan(raw, 42)
    assert ((raw / PLAN_FILE).read_bytes(), (raw / TRUTH_FILE).read_bytes()) == before


@pytest.mark.parametrize("noise_m", [0.0, 0.3])
def test_demo_violations_found(tiny_project, noise_m):
    raw = tiny_project / "data" / "raw"
    plans = read_plans([raw / PLAN_FILE], "EPSG:25832")
    parcels = gpd.read_file(raw / "alkis" / "alkis_vereinfacht_demo.gpkg", layer="Flurstueck")
    result = check_zoning(parcels, _measured_buildings(raw, noise_m), plans.areas, plans.plans)
    truth = pd.read_csv(raw / TRUTH_FILE, dtype={"id": str})
    s = score(truth, result.parcels, result.buildings)
    assert s["planted"] >= 10
    assert s["recall"] >= 0.95, s
    assert s["false_alarm_rate"] <= 0.05, s
    # a plan whose limits are all raised far above the figures: nothing is flagged
    lax = plans.areas.assign(grz_max=1.0, z_max=99.0, fh_max=999.0)
    lax.loc[lax["kind"] == "buildable_area", "geometry"] = lax.geometry.buffer(1000)
    r = check_zoning(parcels, _measured_buildings(raw, noise_m), lax, plans.plans)
    assert (r.buildings["status"] != "exceeds").all() and (r.parcels["status"] != "exceeds").all()
