"""Change detection: per-building classes on a crafted district, unregistered structures, unknown areas,
a missing second epoch, and (when the demo generator is available) recall / false alarms vs its truth."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from tests import _overlay_district as district


def test_label_quantile_matches_numpy():
    from pipeline.stages.change import label_quantile, label_quantile_reference

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 6, (40, 30)).astype(np.int32)
    values = rng.normal(10, 3, (40, 30))
    values[rng.random((40, 30)) < 0.2] = np.nan
    for q in (0.0, 0.25, 0.75, 1.0):
        got, cnt = label_quantile(labels, values, q, 6)
        np.testing.assert_allclose(got, label_quantile_reference(labels, values, q, 6))
        assert cnt.sum() == ((labels > 0) & np.isfinite(values)).sum()


def test_classes_and_confidence_on_synthetic_grid():
    from shapely.geometry import box

    from pipeline.config.model import ChangeLayer
    from pipeline.stages.change import building_change

    t = (1.0, 0.0, 0.0, 0.0, -1.0, 40.0)
    from affine import Affine

    tr = Affine(*t)
    old = np.zeros((40, 40))
    new = np.zeros((40, 40))
    old[0:10, 0:10], new[0:10, 0:10] = 8.0, 8.2  # unchanged
    old[0:10, 20:30], new[0:10, 20:30] = 8.0, 12.0  # raised
    old[20:30, 0:10], new[20:30, 0:10] = np.nan, 9.0  # no data in the old epoch -> unknown
    old[20:30, 20:30], new[20:30, 20:30] = 0.1, 0.2  # nothing in either epoch -> absent
    fp = gpd.GeoDataFrame(
        {"oid": list("abcd")},
        geometry=[box(0, 30, 10, 40), box(20, 30, 30, 40), box(0, 10, 10, 20), box(20, 10, 30, 20)],
    )
    ch = building_change(fp, old, new, tr, ChangeLayer())
    assert list(ch["change_class"]) == ["unchanged", "raised", "unknown", "absent"]
    assert ch["dh"].iloc[1] == pytest.approx(4.0)
    assert ch["confidence"].iloc[1] > 0.95 and ch["confidence"].iloc[2] == 0.0
    # a change right at the threshold is uncertain
    new[0:10, 20:30] = 9.0
    ch = building_change(fp, old, new, tr, ChangeLayer(min_dh_m=1.0))
    assert ch["confidence"].iloc[1] < 0.7


@pytest.fixture(scope="module")
def change_release(tmp_path_factory):
    from pipeline.orchestrate.overlays import build_overlay_layers

    root = tmp_path_factory.mktemp("change")
    cfg = district.make_district(root)
    ctx = district.context(cfg, root / "release")
    return ctx, build_overlay_layers(ctx, [])


def test_building_classes_on_crafted_district(change_release):
    ctx, layers = change_release
    change = next(lay for lay in layers if lay.kind == "change")
    gdf = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="buildings_change")
    got = dict(zip(gdf["oid"], gdf["change_class"], strict=True))
    want = {b.oid: b.expected for b in district.BUILDINGS if b.registered}
    assert got == want
    by = gdf.set_index("oid")
    assert by.loc["DENW02", "dh"] == pytest.approx(4.0, abs=0.2)
    assert by.loc["DENW03", "dh"] == pytest.approx(-5.0, abs=0.2)
    assert (by.drop(index="DENW06")["confidence"] > 0.9).all()
    assert change.stats["classes"]["unknown"] == 1


def test_unregistered_structures_and_unknown_areas(change_release):
    ctx, _ = change_release
    unreg = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="unregistered_structures")
    # the shed (48 m2, 4 m, no footprint) and not the 8 m tree (green in NDVI)
    assert len(unreg) == 1
    shed = next(b for b in district.BUILDINGS if not b.registered)
    assert unreg.geometry.iloc[0].intersection(shed.geom).area / shed.geom.area > 0.8
    assert unreg["height_p75"].iloc[0] == pytest.approx(4.0, abs=0.2)
    assert not unreg["existed_before"].iloc[0]
    unk = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="unknown_areas")
    hx0, hy0, hx1, hy1 = district.HOLE_2024
    hole = (hx1 - hx0) * (hy1 - hy0)
    assert len(unk) == 1 and unk["missing_in"].iloc[0] == "2024"
    assert 0.85 * hole < unk["area_m2"].iloc[0] <= hole


def test_change_outputs_styles_and_tiles(change_release):
    import xml.etree.ElementTree as ET

    from pipeline.stages.change import CLASS_COLOURS
    from pipeline.tiles.gltf import read_glb
    from pipeline.tiles.tileset import schema_errors
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    ctx, _ = change_release
    out = ctx.release_dir / "change"
    for name in ("buildings_change", "unregistered_structures", "unknown_areas"):
        assert (out / f"{name}.geojson").is_file() and (out / f"{name}.qml").is_file()
        ET.parse(out / f"{name}.qml")
    import sqlite3

    with sqlite3.connect(out / "change.gpkg") as con:
        embedded = dict(con.execute("SELECT f_table_name, styleQML FROM layer_styles WHERE useAsDefault"))
    assert embedded["buildings_change"] == (out / "buildings_change.qml").read_text()
    assert set(embedded) == {"buildings_change", "unregistered_structures", "unknown_areas"}
    r = ET.parse(out / "buildings_change.qml").getroot().find("renderer-v2")
    cats = {c.get("value") for c in r.find("categories")}
    assert cats == set(CLASS_COLOURS) - {"unregistered"}
    ts = json.loads((out / "tileset.json").read_text())
    assert schema_errors(ts) == []
    glbs = sorted(out.rglob("*.glb"))
    js, _ = read_glb(glbs[0].read_bytes())
    table = js["extensions"]["EXT_structural_metadata"]["propertyTables"][0]
    assert table["count"] == 7  # 6 footprints + 1 unregistered structure
    if validator_available():
        assert all(r["errors"] == 0 for r in validate_glb_files(glbs))


def test_single_epoch_skips_change_with_warning(tmp_path):
    from pipeline.orchestrate.overlays import build_overlay_layers

    cfg = district.make_district(tmp_path, epochs=("2024",))
    ctx = district.context(cfg, tmp_path / "release")
    layers = build_overlay_layers(ctx, [])
    assert [lay.kind for lay in layers] == ["overlay"]
    assert any("two aerial epochs" in w for w in ctx.warnings)
    assert not (tmp_path / "release" / "change").exists()


# ---- demo ground truth ----------------------------------------------------------------------------


def _demo_available() -> bool:
    try:
        from pipeline.sources.demo import generate_demo  # noqa: F401
    except ImportError:
        return False
    return True


DEMO_CONFIG = """name: tiny
paths: {raw: ../raw, out: ../out, cache: ../cache}
runtime: {progress: false}
sources:
  aerial:
    - {epoch: '2021', points: 'aerial/2021/*.laz'}
    - {epoch: '2024', points: 'aerial/2024/*.laz'}
  orthophoto: {path: 'dop/*.tif'}
  dgm: {path: 'dgm/*.tif'}
  cadastre: {path: 'alkis/*.gpkg'}
"""


@pytest.fixture(scope="module")
def demo_change(tmp_path_factory):
    if not _demo_available():
        pytest.skip("demo generator not available")
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.model import BuildContext
    from pipeline.orchestrate.build import plan_frame
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.orchestrate.overlays import build_overlay_layers
    from pipeline.orchestrate.working_crs import resolve_working_crs

    root = tmp_path_factory.mktemp("demo")
    district.demo_project(root, DEMO_CONFIG)
    cfg = load_config(root / "configs" / "tiny.yaml")
    inputs = scan_inputs(cfg)
    cfg = resolve_working_crs(cfg, inputs)  # crs: auto, as a build does
    ctx = BuildContext(
        cfg=cfg,
        build_id="t",
        release_dir=root / "release",
        frame=plan_frame(cfg, inputs),
        inputs=inputs,
        log=BuildLog(quiet=True),
    )
    layers = build_overlay_layers(ctx, [])
    return ctx, layers


def test_change_vs_demo_truth(demo_change):
    """Recall >= 95 % of true changes (>= 3 m or >= 50 m2), false alarms <= 5 %."""
    ctx, layers = demo_change
    assert any(lay.kind == "change" for lay in layers)
    truth = pd.read_csv(ctx.cfg.raw_dir / "truth" / "buildings.csv", dtype={"oid": str})
    got = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="buildings_change")
    unreg = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="unregistered_structures")
    score = score_against_truth(truth, got, unreg)
    assert score["n_changes"] >= 4, score
    assert score["recall"] >= 0.95, score
    assert score["false_alarm_rate"] <= 0.05, score


def test_demo_parcel_grz_matches_footprints(demo_change):
    """GRZ of every demo parcel equals the union of the footprints the overlay used over its area."""
    import shapely

    from pipeline.orchestrate.overlays import read_buildings

    ctx, _ = demo_change
    parcels = gpd.read_file(ctx.release_dir / "overlays" / "parcels.gpkg", layer="parcels")
    fp, _src = read_buildings(ctx, [])
    built = shapely.union_all(fp.geometry.to_numpy())
    want = shapely.area(shapely.intersection(parcels.geometry.to_numpy(), built)) / parcels.geometry.area
    np.testing.assert_allclose(parcels["grz"], want, atol=1e-4)
    assert (parcels["grz"] > 0).sum() >= 5
    assert parcels["green_share"].between(0, 1).all() and parcels["green_share"].max() > 0.3


def score_against_truth(truth: pd.DataFrame, got: gpd.GeoDataFrame, unreg: gpd.GeoDataFrame) -> dict:
    """Match the demo truth with our outputs.

    True changes: structures whose change is not `unchanged` and that changed by >= 3 m or cover >= 50 m2.
    A registered one is found when its class matches; an unregistered one when a review-list blob
    overlaps it. False alarms: unchanged cadastral buildings we call changed, plus review-list blobs that
    overlap no unregistered structure; rate over all unchanged buildings plus all blobs.
    """
    import shapely

    t = truth[truth["kind"].isin(["building", "unregistered"])].copy()
    dh = pd.to_numeric(t["dh"], errors="coerce").fillna(0).abs()
    height = pd.to_numeric(t["height"], errors="coerce").fillna(0)
    area = pd.to_numeric(t["footprint_area"], errors="coerce").fillna(0)
    changed = t["change"] != "unchanged"
    size = np.where(t["change"].isin(["new", "demolished"]), height, dh)
    relevant = changed & ((size >= 3.0) | (area >= 50.0))
    ours = dict(zip(got["oid"].astype(str), got["change_class"], strict=True))
    blobs = unreg.geometry.to_numpy()
    used_blobs = np.zeros(len(blobs), dtype=bool)
    hits, misses = 0, []
    for _, row in t[relevant].iterrows():
        if row["kind"] == "unregistered":
            g = shapely.from_wkt(row["footprint_wkt"])
            hit = shapely.intersects(blobs, g) if len(blobs) else np.zeros(0, bool)
            used_blobs |= hit
            ok = bool(hit.any())
        else:
            ok = ours.get(str(row["oid"])) == row["change"]
        hits += ok
        if not ok:
            misses.append((row["oid"], row["change"], ours.get(str(row["oid"]))))
    for _, row in t[t["kind"] == "unregistered"].iterrows():  # small ones may be listed too: not false
        if len(blobs):
            used_blobs |= shapely.intersects(blobs, shapely.from_wkt(row["footprint_wkt"]))
    unchanged = t[(t["kind"] == "building") & ~changed & t["oid"].isin(set(ours))]
    false_b = [o for o in unchanged["oid"] if ours[o] in ("new", "demolished", "raised", "lowered")]
    false_blobs = int((~used_blobs).sum())
    n = int(relevant.sum())
    return {
        "n_changes": n,
        "recall": hits / max(n, 1),
        "false_alarm_rate": (len(false_b) + false_blobs) / max(len(unchanged) + len(blobs), 1),
        "misses": misses,
        "false_buildings": false_b,
        "false_blobs": false_blobs,
    }
