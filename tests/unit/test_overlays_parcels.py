"""Parcel overlay: GRZ / GFZ on crafted parcels, NDVI and green share on a crafted raster, outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from tests import _overlay_district as district


def test_grz_equals_analytic_value():
    from pipeline.stages.overlays.parcels import parcel_overlay

    parcels = gpd.GeoDataFrame(
        {"flstkennz": ["A", "B", "C"]},
        geometry=[box(0, 0, 20, 20), box(20, 0, 40, 20), box(40, 0, 60, 30).difference(box(45, 5, 55, 15))],
        crs="EPSG:25832",
    )
    buildings = gpd.GeoDataFrame(
        {"height": [6.0, 10.0, 9.5, 3.0, 7.0]},
        geometry=[
            box(2, 2, 12, 12),  # 100 m2 in A
            box(18, 5, 23, 9),  # 20 m2 across A (8) and B (12)
            box(3, 3, 5, 5),  # inside the first: counted once in the built-up area
            box(46, 6, 54, 14),  # inside C's hole: not on C
            shapely.Polygon([(41, 20), (49, 20), (45, 28)]),  # triangle, 32 m2 in C
        ],
        crs="EPSG:25832",
    )
    ov = parcel_overlay(parcels, buildings, floor_height_m=3.0)
    area_c = 10 * 30 * 2 - 100
    np.testing.assert_allclose(ov["parcel_area_m2"], [400, 400, area_c])
    np.testing.assert_allclose(ov["built_area_m2"], [108, 12, 32])
    np.testing.assert_allclose(ov["grz"], [108 / 400, 12 / 400, 32 / area_c])
    # GFZ estimate: floors = max(1, round(h / 3)): 2, 3, 3, 2 -> A: 100*2 + 8*3 + 4*3; B: 12*3; C: 32*2
    np.testing.assert_allclose(ov["gfz_est"], [(200 + 24 + 12) / 400, 36 / 400, 64 / area_c])
    np.testing.assert_allclose(ov["volume_est_m3"], [100 * 6 + 8 * 10 + 4 * 9.5, 12 * 10, 32 * 7])
    assert (ov["n_buildings"] == [3, 1, 1]).all()
    assert ov["estimate_note"].str.contains("estimated").all()


def test_gfz_unknown_when_a_height_is_missing():
    from pipeline.stages.overlays.parcels import parcel_overlay

    parcels = gpd.GeoDataFrame({"flstkennz": ["A"]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:25832")
    buildings = gpd.GeoDataFrame(
        {"height": [6.0, np.nan]}, geometry=[box(0, 0, 2, 2), box(5, 5, 7, 7)], crs="EPSG:25832"
    )
    ov = parcel_overlay(parcels, buildings)
    assert ov["grz"].iloc[0] == pytest.approx(0.08)
    assert np.isnan(ov["gfz_est"].iloc[0]) and ov["height_missing"].iloc[0] == 1


def test_ndvi_and_green_share_on_crafted_raster():
    from pipeline.stages.overlays.ndvi import LOW_GREEN, SEALED, TREE, classify_landcover, ndvi
    from pipeline.stages.overlays.parcels import parcel_overlay

    red = np.array([[40, 150, 0, 50]], dtype=np.uint8)
    nir = np.array([[200, 120, 0, 50]], dtype=np.uint8)
    v = ndvi(red, nir)
    np.testing.assert_allclose(v[0, :2], [(200 - 40) / 240, (120 - 150) / 270], rtol=1e-6)
    assert np.isnan(v[0, 2]) and v[0, 3] == 0.0

    # 20 x 10 cells of 1 m: parcel A = left 10 columns, B = right 10
    red = np.full((10, 20), 150.0)
    nir = np.full((10, 20), 120.0)
    red[:, 0:4], nir[:, 0:4] = 40, 200  # A: 4 green columns
    red[:, 12:20], nir[:, 12:20] = 30, 180  # B: 8 green columns
    ndsm = np.zeros((10, 20))
    ndsm[:, 2:4] = 6.0  # A: 2 of the green columns are trees
    ndsm[:, 12:15] = 12.0  # B: 3 tree columns, 12 m
    red[0, 10:20] = np.nan  # B: one row without orthophoto
    lc = classify_landcover(ndvi(red, nir), ndsm, 0.3, 2.5)
    assert lc[5, 0] == LOW_GREEN and lc[5, 2] == TREE and lc[5, 5] == SEALED
    parcels = gpd.GeoDataFrame(
        {"flstkennz": ["A", "B"]}, geometry=[box(0, 0, 10, 10), box(10, 0, 20, 10)], crs="EPSG:25832"
    )
    empty = gpd.GeoDataFrame({"height": []}, geometry=gpd.GeoSeries([], crs="EPSG:25832"), crs="EPSG:25832")
    ov = parcel_overlay(parcels, empty, landcover=lc, ndsm=ndsm, transform=Affine(1, 0, 0, 0, -1, 10))
    np.testing.assert_allclose(ov["green_share"], [0.4, 0.8])
    np.testing.assert_allclose(ov["sealed_share"], [0.6, 0.2])
    np.testing.assert_allclose(ov["tree_share"], [0.2, 0.3])
    np.testing.assert_allclose(ov["nodata_share"], [0.0, 0.1])
    np.testing.assert_allclose(ov["tree_height_mean_m"], [6.0, 12.0])


@pytest.fixture(scope="module")
def overlay_release(tmp_path_factory):
    from pipeline.orchestrate.overlays import build_overlay_layers

    root = tmp_path_factory.mktemp("overlays")
    cfg = district.make_district(root)
    ctx = district.context(cfg, root / "release")
    return ctx, build_overlay_layers(ctx, [])


def test_parcel_layer_outputs(overlay_release):
    ctx, layers = overlay_release
    parcels = next(lay for lay in layers if lay.name == "parcels")
    assert parcels.kind == "overlay" and parcels.tileset == "overlays/parcels/tileset.json"
    gdf = gpd.read_file(ctx.release_dir / "overlays" / "parcels.gpkg", layer="parcels")
    truth = {t["flstkennz"]: t for t in district.parcel_truth()}
    assert sorted(gdf["flstkennz"]) == sorted(truth)
    for _, row in gdf.iterrows():
        t = truth[row["flstkennz"]]
        assert row["grz"] == pytest.approx(t["built"] / t["area"], abs=1e-4)
    # the lawn (west 15 m of the SW parcel) is green, the tree parcel has canopy of ~8 m
    sw = gdf.set_index("flstkennz").iloc[0]
    assert sw["green_share"] == pytest.approx(0.15, abs=0.01)
    se = gdf.set_index("flstkennz").iloc[1]
    assert se["tree_share"] == pytest.approx(144 / 10000, abs=0.003)
    assert se["tree_height_mean_m"] == pytest.approx(8.0, abs=0.3)
    gj = json.loads((ctx.release_dir / "overlays" / "parcels.geojson").read_text())
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0]
    assert 6 < lon < 8 and 51 < lat < 52  # EPSG:4326 for the web


def test_parcel_qml_draws_land_use_else_grz_classes(overlay_release):
    from pipeline.stages.overlays import GRZ_CLASSES
    from pipeline.styles.palettes import GRZ_NO_VALUE, LAND_USE

    ctx, _ = overlay_release
    root = ET.parse(ctx.release_dir / "overlays" / "parcels.qml").getroot()
    r = root.find("renderer-v2")
    assert r.get("type") == "RuleRenderer"
    rules = r.find("rules")
    top = list(rules)
    assert [t.get("filter") for t in top] == [f"\"land_use\" = '{e.value}'" for e in LAND_USE] + ["ELSE"]
    assert [g.get("label") for g in top[-1]] == [lab for _, _, lab in GRZ_CLASSES] + ["no value"]
    colours = [s.find("layer/Option/Option[@name='color']").get("value") for s in r.find("symbols")]
    want = [e.rgba for e in LAND_USE] + [c for _, c, _ in GRZ_CLASSES] + [GRZ_NO_VALUE]
    assert colours == [",".join(map(str, c)) for c in want]


def test_parcel_tiles_valid(overlay_release):
    from pipeline.tiles.gltf import read_glb
    from pipeline.tiles.tileset import schema_errors
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    ctx, _ = overlay_release
    ts = json.loads((ctx.release_dir / "overlays" / "parcels" / "tileset.json").read_text())
    assert schema_errors(ts) == []
    glbs = sorted((ctx.release_dir / "overlays" / "parcels").rglob("*.glb"))
    js, _ = read_glb(glbs[0].read_bytes())
    table = js["extensions"]["EXT_structural_metadata"]["propertyTables"][0]
    assert table["count"] == 4 and "grz" in table["properties"] and "land_use" in table["properties"]
    # parcel edges: a LINES primitive beside the triangles, in the outline colour, without feature ids
    prims = js["meshes"][0]["primitives"]
    assert [p.get("mode") for p in prims] == [4, 1]
    assert "_FEATURE_ID_0" not in prims[1]["attributes"]
    lines = js["accessors"][prims[1]["indices"]]["count"]
    assert lines >= 2 * 4 * 4  # four 100 m squares: at least their four sides each
    if validator_available():
        assert all(r["errors"] == 0 for r in validate_glb_files(glbs))


def test_parcels_without_land_use_layer_say_so_and_fall_back_to_grz(overlay_release):
    """The district's cadastre has no land-use layer: the build log says so, `land_use` is NULL and the
    parcels keep their GRZ colours (never a guessed land use)."""
    ctx, results = overlay_release
    res = next(r for r in results if r.name == "parcels")
    assert any("no land-use layer" in w for w in res.warnings), res.warnings
    assert res.stats["land_use"] is None
    gdf = gpd.read_file(ctx.release_dir / "overlays" / "parcels.gpkg", layer="parcels")
    assert "land_use" in gdf and gdf["land_use"].isna().all()


def test_overlays_are_byte_identical_on_rebuild(overlay_release, tmp_path):
    from pipeline.orchestrate.overlays import build_overlay_layers

    ctx, _ = overlay_release
    ctx2 = district.context(Path(ctx.cfg.base_dir) / "district.yaml", tmp_path / "again")
    build_overlay_layers(ctx2, [])
    a = sorted(p.relative_to(ctx.release_dir) for p in ctx.release_dir.rglob("*") if p.is_file())
    b = sorted(p.relative_to(ctx2.release_dir) for p in ctx2.release_dir.rglob("*") if p.is_file())
    assert a == b and len(a) >= 10
    for rel in a:
        assert (ctx.release_dir / rel).read_bytes() == (ctx2.release_dir / rel).read_bytes(), rel
