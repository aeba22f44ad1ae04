"""Buildings layer end to end on a synthetic district (and on the demo district when its generator exists):
heights vs ground truth, GeoPackage + per-epoch columns, rejected records, GLBs valid and carrying the same
attributes as the GeoPackage, serial == Dask, byte-identical rebuilds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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
from pipeline.stages.buildings.synthetic import make_district
from pipeline.tiles.b3dm import read_b3dm
from pipeline.tiles.buildings_glb import read_building_table
from pipeline.tiles.tileset import schema_errors
from pipeline.tiles.validate_gltf import validate_glb_files, validator_available


@pytest.fixture(scope="module")
def district(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("bdistrict") / "raw"
    make_district(raw, size_m=200, tile_m=100, density=8, epochs=("2022", "2024"))
    return raw


def _ctx(raw: Path, rel: Path, fmt: str = "1.1", client=None, **layer) -> BuildContext:
    cfg = TwinConfig.model_validate(
        {
            "name": "t",
            "paths": {"raw": str(raw), "out": str(rel.parent / "out"), "cache": str(rel.parent / "cache")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": {
                "aerial": [
                    {"epoch": "2022", "points": "aerial/2022/*.laz"},
                    {"epoch": "2024", "points": "aerial/2024/*.laz"},
                ],
                "cadastre": {"path": "alkis/*.gpkg"},
            },
            "layers": {"buildings": {"format": fmt, **layer}},
        }
    )
    rel.mkdir(parents=True, exist_ok=True)
    frame = project_frame(cfg.crs, (400_100.0, 5_700_100.0, 0.0))
    return BuildContext(
        cfg=cfg,
        build_id="test",
        release_dir=rel,
        frame=frame,
        inputs=scan_inputs(cfg),
        log=BuildLog(quiet=True),
        client=client,
    )


def _digest(d: Path) -> dict[str, str]:
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(district, tmp_path_factory):
    rel = tmp_path_factory.mktemp("brel") / "release"
    res = build_buildings_layers(_ctx(district, rel), [])
    return rel, res


def test_layer_result_and_files(built):
    rel, res = built
    assert len(res) == 1
    r = res[0]
    assert (r.name, r.kind, r.tileset, r.style) == (
        "buildings",
        "buildings",
        "buildings/tileset.json",
        "buildings/style.json",
    )
    for f in r.files:
        assert (rel / f).is_file(), f
    assert r.stats["buildings"] == 145 and r.stats["rejected"] == 4 and r.stats["tiles"] >= 1
    assert r.stats["epochs"] == ["2022", "2024"] and r.stats["survey_epoch"] == "2024"
    rej = (rel / "buildings" / "rejected.csv").read_text().splitlines()
    assert rej[0] == "file,id,reason" and len(rej) == 5
    assert all(line.startswith("alkis/district.gpkg,") for line in rej[1:])
    assert (
        schema_errors(json.loads((rel / "buildings" / "style.json").read_text()), "Styling/style.schema.json")
        == []
    )


def test_heights_match_truth(built, district):
    rel, _ = built
    bt = gpd.read_file(rel / "buildings" / "buildings.gpkg", layer="buildings")
    truth = pd.read_csv(district / "truth" / "buildings.csv", dtype={"oid": str})
    m = bt.merge(truth, on="oid", suffixes=("", "_truth"))
    ok = m["quality"] == "ok"
    assert ok.sum() >= 140
    dh = (m["height"] - m["truth_height"]).abs()
    assert np.median(dh[ok & (m["roof_type_truth"] == "flat")]) <= 0.3
    assert np.median(dh[ok & (m["roof_type_truth"] == "gable")]) <= 0.8
    # LoD2 (the default): the reconstructed roof shape is the true one
    assert (m["roof_type"] == m["roof_type_truth"])[ok].mean() >= 0.95
    assert set(m["lod_source"]) <= {"reconstructed", "lod1_fallback"}
    assert np.median((m["base_height"] - m["base"]).abs()[ok]) <= 0.1
    # per-epoch statistics for change detection: the 2022 roofs are 2 m lower
    d = (m["roof_p75_2024"] - m["roof_p75_2022"])[ok]
    assert np.median(d) == pytest.approx(2.0, abs=0.1)
    assert (m["n_points_2022"][ok] > 0).all()
    # parcel key of the lot the building stands on
    assert (m["flstkennz"].str.len() == 20).all() or (m["flstkennz"] == "").sum() <= 1
    assert bt.crs.to_epsg() == 25832 and list(bt["oid"]) == sorted(bt["oid"])


def test_glb_valid_and_metadata_equals_gpkg(built):
    rel, _ = built
    bt = gpd.read_file(rel / "buildings" / "buildings.gpkg", layer="buildings").set_index("oid")
    ts = json.loads((rel / "buildings" / "tileset.json").read_text())
    assert schema_errors(ts) == []
    assert ts["root"]["transform"] and ts["asset"]["version"] == "1.1"
    glbs = sorted((rel / "buildings").rglob("*.glb"))
    seen = []
    for p in glbs:
        tab = read_building_table(p.read_bytes())
        seen += tab["oid"]
        assert tab["oid"] == sorted(tab["oid"])
        sub = bt.loc[tab["oid"]]
        for col in ("roof_height", "base_height", "height", "p90", "density"):
            assert np.array_equal(np.asarray(tab[col]), sub[col].to_numpy(), equal_nan=True), col
        assert np.array_equal(tab["n_points"], sub["n_points"].to_numpy())
        assert tab["quality"] == list(sub["quality"]) and tab["funktion"] == list(sub["funktion"])
        assert np.array_equal(tab["floors_is_estimate"], sub["floors_is_estimate"].to_numpy().astype(bool))
    assert sorted(seen) == sorted(bt.index)
    if validator_available():
        reps = validate_glb_files(glbs)
        assert all(r["errors"] == 0 for r in reps), [r["messages"][:3] for r in reps if r["errors"]]


def test_rebuild_is_byte_identical_and_1_0_profile(built, district, tmp_path):
    rel, _ = built
    rel2 = tmp_path / "again"
    build_buildings_layers(_ctx(district, rel2), [])
    assert _digest(rel / "buildings") == _digest(rel2 / "buildings")
    rel3 = tmp_path / "v10"
    r = build_buildings_layers(_ctx(district, rel3, fmt="1.0"), [])[0]
    ts = json.loads((rel3 / "buildings" / "tileset.json").read_text())
    assert ts["asset"]["version"] == "1.0" and schema_errors(ts) == []
    b3dms = sorted((rel3 / "buildings").rglob("*.b3dm"))
    assert len(b3dms) == r.stats["tiles"]
    total = 0
    for p in b3dms:
        ft, bt, _glb = read_b3dm(p.read_bytes())
        assert ft["BATCH_LENGTH"] == len(bt["oid"])
        total += len(bt["oid"])
    assert total == r.stats["buildings"]


@pytest.mark.slow  # long end-to-end run: `make test-all` (CI), not `make test`
@pytest.mark.cluster
def test_dask_equals_serial(built, district, tmp_path):
    from distributed import Client, LocalCluster

    _rel, _ = built
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl,
        Client(cl) as c,
    ):
        rel2 = tmp_path / "dask"
        build_buildings_layers(_ctx(district, rel2, client=c, max_leaf_m=100.0), [])
    rel3 = tmp_path / "serial"
    build_buildings_layers(_ctx(district, rel3, max_leaf_m=100.0), [])
    assert _digest(rel3 / "buildings") == _digest(rel2 / "buildings")


def test_no_points_all_fallbacks(district, tmp_path):
    ctx = _ctx(district, tmp_path / "rel")
    cfg = ctx.cfg.model_copy(update={"sources": ctx.cfg.sources.model_copy(update={"aerial": []})})
    ctx.cfg = cfg
    ctx.inputs = [i for i in ctx.inputs if not i.role.startswith("aerial")]
    r = build_buildings_layers(ctx, [])[0]
    assert set(r.stats["quality"]) <= {"fallback_floors", "fallback_default"}
    bt = gpd.read_file(tmp_path / "rel" / "buildings" / "buildings.gpkg", layer="buildings")
    fl = bt["quality"] == "fallback_floors"
    assert np.allclose(bt["height"][fl], bt["anzahlgs"][fl] * 3.0)
    assert np.allclose(bt["height"][~fl], 9.0)


def test_skips_without_cadastre(district, tmp_path):
    ctx = _ctx(district, tmp_path / "rel")
    ctx.cfg = ctx.cfg.model_copy(update={"sources": ctx.cfg.sources.model_copy(update={"cadastre": None})})
    assert build_buildings_layers(ctx, []) == []
    assert any("cadastre" in w for w in ctx.warnings)


def test_all_records_rejected_gives_empty_valid_tileset(tmp_path):
    import pyogrio
    import shapely

    raw = tmp_path / "raw"
    (raw / "alkis").mkdir(parents=True)
    g = gpd.GeoDataFrame(
        {"oid": ["A"], "gebnutzbez": ["Bauteil"]},
        geometry=[shapely.box(400_000, 5_700_000, 400_010, 5_700_010)],
        crs="EPSG:25832",
    )
    pyogrio.write_dataframe(g, raw / "alkis" / "x.gpkg", layer="GebauedeBauwerk")
    cfg = TwinConfig.model_validate(
        {
            "name": "t",
            "paths": {"raw": str(raw), "out": str(tmp_path / "o"), "cache": str(tmp_path / "c")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": {"cadastre": {"path": "alkis/*.gpkg"}},
        }
    )
    rel = tmp_path / "rel"
    rel.mkdir()
    ctx = BuildContext(
        cfg=cfg,
        build_id="t",
        release_dir=rel,
        frame=project_frame(cfg.crs, (400_000.0, 5_700_000.0, 0.0)),
        inputs=scan_inputs(cfg),
        log=BuildLog(quiet=True),
    )
    r = build_buildings_layers(ctx, [])[0]
    assert r.stats["buildings"] == 0 and r.stats["rejected"] == 1
    assert schema_errors(json.loads((rel / "buildings" / "tileset.json").read_text())) == []
