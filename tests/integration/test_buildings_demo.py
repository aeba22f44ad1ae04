"""Heights against the demo district's ground truth (skipped while the demo generator is unavailable)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from pipeline.buildlog import BuildLog
from pipeline.config.model import TwinConfig
from pipeline.crs import project_frame
from pipeline.model import BuildContext
from pipeline.orchestrate.buildings import build_buildings_layers
from pipeline.orchestrate.inputs import scan_inputs

demo = pytest.importorskip("pipeline.sources.demo", reason="demo generator not available")


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    if not hasattr(demo, "generate_demo"):
        pytest.skip("pipeline.sources.demo.generate_demo not available")
    root = tmp_path_factory.mktemp("bdemo")
    raw = root / "raw"
    summary = demo.generate_demo(raw, size_m=200, tile_m=100, density=8, progress=False, mobile=False)
    e1, e2 = summary.epochs
    cfg = TwinConfig.model_validate(
        {
            "name": "demo",
            "paths": {"raw": str(raw), "out": str(root / "out"), "cache": str(root / "cache")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": {
                "aerial": [
                    {"epoch": e1, "points": f"aerial/{e1}/*.la[sz]"},
                    {"epoch": e2, "points": f"aerial/{e2}/*.la[sz]"},
                ],
                "orthophoto": {"path": "dop/*"},
                "dgm": {"path": "dgm/*"},
                "cadastre": {"path": "alkis/*.gpkg"},
            },
        }
    )
    rel = root / "release"
    rel.mkdir()
    b = summary.bounds
    frame = project_frame(cfg.crs, ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 0.0))
    ctx = BuildContext(
        cfg=cfg,
        build_id="demo",
        release_dir=rel,
        frame=frame,
        inputs=scan_inputs(cfg),
        log=BuildLog(quiet=True),
    )
    res = build_buildings_layers(ctx, [])[0]
    return raw, rel, res, summary


def test_heights_within_tolerance_of_truth(demo_build):
    raw, rel, _res, summary = demo_build
    e2 = summary.epochs[1]
    ours = gpd.read_file(rel / "buildings" / "buildings.gpkg", layer="buildings")
    truth = pd.read_csv(raw / "truth" / "buildings.csv", dtype={"oid": str})
    truth = truth[(truth["kind"] == "building") & (truth[f"present_{e2}"] == 1)]
    m = ours.merge(truth, on="oid", suffixes=("", "_truth"))
    # heights measured from points ("vegetation_suspected" only flags green over the roof, e.g. green roofs)
    good = m["quality"].isin(["ok", "vegetation_suspected"]) & (m["n_points"] >= 20)
    assert good.sum() >= 0.6 * len(truth)
    # the LoD1 roof is the area-weighted mean height of the roof (lod1_roof_source lod2, the AdV rule):
    # the truth's mean_roof_height, not its p75 roof_height
    dh = (m["height"] - (m["mean_roof_height"] - m["base_height_truth"])).abs()
    flat = good & (m["roof_type"] == "flat")
    pitched = good & m["roof_type"].isin(["gable", "hip"])
    assert flat.sum() >= 3 and pitched.sum() >= 3
    assert np.median(dh[flat]) <= 0.3, dh[flat].describe()
    assert np.median(dh[pitched]) <= 0.8, dh[pitched].describe()


def test_cadastre_records_accounted_for(demo_build):
    _raw, rel, _res, summary = demo_build
    rej = pd.read_csv(rel / "buildings" / "rejected.csv")
    assert (rej["reason"] == "filtered: Bauteil").sum() == summary.counts["bauteil_records"]
    assert (rej["reason"] == "filtered: underground").sum() == summary.counts["underground_records"]
    ours = gpd.read_file(rel / "buildings" / "buildings.gpkg", layer="buildings")
    assert len(ours) + len(rej) == summary.counts["cadastre_records"]
    assert (ours["flstkennz"] != "").mean() > 0.95
    assert ours.geometry.is_valid.all()
