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


@pytest.mark.skipif(not _demo_available(), reason="demo generator not available")
def test_change_vs_demo_truth(tiny_project, tmp_path):
    """Recall >= 95 % of true changes (>= 3 m or >= 50 m2), false alarms <= 5 %."""
    from pipeline.orchestrate.overlays import build_overlay_layers
    from tests.conftest import load_tiny_config

    cfg = load_tiny_config(tiny_project)
    from pipeline.buildlog import BuildLog
    from pipeline.crs import project_frame
    from pipeline.orchestrate.context import BuildContext
    from pipeline.orchestrate.inputs import scan_inputs

    ctx = BuildContext(
        cfg=cfg,
        build_id="t",
        release_dir=tmp_path / "rel",
        frame=project_frame(cfg.crs, (0, 0, 0))
        if cfg.crs.frame_origin
        else project_frame(cfg.crs, _centre(cfg)),
        inputs=scan_inputs(cfg),
        log=BuildLog(quiet=True),
    )
    layers = build_overlay_layers(ctx, [])
    assert any(lay.kind == "change" for lay in layers)
    truth = pd.read_csv(cfg.raw_dir / "truth" / "buildings.csv", dtype={"oid": str})
    got = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="buildings_change")
    unreg = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="unregistered_structures")
    score = score_against_truth(truth, got, unreg)
    assert score["recall"] >= 0.95, score
    assert score["false_alarm_rate"] <= 0.05, score


def _centre(cfg):
    from pipeline.orchestrate.terrain import las_bounds

    files = sorted(cfg.raw_dir.glob(cfg.sources.aerial[-1].points))
    b = las_bounds(files)
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 0.0)


def score_against_truth(truth: pd.DataFrame, got: gpd.GeoDataFrame, unreg: gpd.GeoDataFrame) -> dict:
    """Match the demo truth (one row per structure with its change class) with our outputs."""
    import shapely

    cls_col = next(c for c in ("change", "change_class", "change_type") if c in truth)
    t = truth.copy()
    t["true_class"] = t[cls_col].astype(str)
    changed = t["true_class"].isin(["new", "demolished", "raised", "lowered"])
    registered = t["oid"].notna() & t["oid"].astype(str).isin(set(got["oid"].astype(str)))
    ours = dict(zip(got["oid"].astype(str), got["change_class"], strict=True))
    hits, misses, false_alarms, unchanged_total = 0, [], [], 0
    for _, row in t.iterrows():
        oid = str(row["oid"])
        if registered.loc[row.name]:
            pred = ours[oid]
            if changed.loc[row.name]:
                if pred == row["true_class"]:
                    hits += 1
                else:
                    misses.append((oid, row["true_class"], pred))
            else:
                unchanged_total += 1
                if pred in ("new", "demolished", "raised", "lowered"):
                    false_alarms.append((oid, pred))
        elif changed.loc[row.name] and row["true_class"] == "new" and "wkt" in t:
            # unregistered new structure: must be in the review list
            g = shapely.from_wkt(row["wkt"])
            if len(unreg) and shapely.intersects(unreg.geometry.to_numpy(), g).any():
                hits += 1
            else:
                misses.append((oid, "unregistered", None))
    n_changed = hits + len(misses)
    return {
        "recall": hits / max(n_changed, 1),
        "false_alarm_rate": len(false_alarms) / max(unchanged_total, 1),
        "misses": misses,
        "false_alarms": false_alarms,
    }
