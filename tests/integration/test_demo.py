"""The demo district generator: determinism, format facts, geometry, truth consistency, epoch changes.

All on the tiny district (200 m x 200 m, four 100 m tiles, 8 pulses/m²), generated once per module
(about 4 s) plus once more for the byte-identity check.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import geopandas as gpd
import laspy
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import shapely

from pipeline.errors import ConfigError, InputError
from pipeline.sources.demo import DemoSummary, generate_demo

REPO = Path(__file__).resolve().parents[2]
ADV_SET = {1, 2, 9, 17, 18, 20, 21, 24, 26}
TINY = {"size_m": 200, "tile_m": 100, "density": 8, "progress": False}
DENSITY = 8.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, DemoSummary]:
    out = tmp_path_factory.mktemp("demo") / "raw"
    return out, generate_demo(out, **TINY)


@pytest.fixture(scope="module")
def truth(demo) -> pd.DataFrame:
    return pd.read_csv(demo[0] / "truth" / "buildings.csv", dtype={"oid": str})


def _tile_bounds(path: Path) -> tuple[float, float, float, float]:
    """SW corner and size from a metre-named tile (``..._32_<E>_<N>_<km>_...``)."""
    m = re.search(r"_32_(\d+)_(\d+)_(\d+(?:\.\d+)?)", path.name)
    assert m, path.name
    e, n, km = float(m.group(1)), float(m.group(2)), float(m.group(3))
    return e, n, e + km * 1000, n + km * 1000


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _first_nonground(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, zs = [], [], []
    for f in sorted(folder.glob("*.laz")):
        las = laspy.read(f)
        m = (las.return_number == 1) & (las.classification == 20)
        xs.append(np.asarray(las.x[m]))
        ys.append(np.asarray(las.y[m]))
        zs.append(np.asarray(las.z[m]))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(zs)


# ---- determinism and layout ------------------------------------------------------------------------


@pytest.mark.slow  # long end-to-end run: `make test-all` (CI), not `make test`
def test_byte_identical_rerun(demo, tmp_path):
    out, summary = demo
    again = generate_demo(tmp_path / "raw", **TINY)
    assert again.files == summary.files
    # 4 tiles x (2 aerial + dop + dgm + mobile) + gpkg, csv, truth x4 (with street_space.csv), README,
    # zoning plan + its truth, 8 panorama images, the official LoD2 model of epoch 1 (one 1 km tile)
    assert len(summary.files) == 38
    assert "truth/street_space.csv" in summary.files
    assert "lod2/LoD2_32_362_5716_1_NW.gml" in summary.files
    assert sum(f.startswith("mobile/panoramas/") and f.endswith(".jpg") for f in summary.files) == 8
    for rel in summary.files:
        assert _sha(out / rel) == _sha(tmp_path / "raw" / rel), rel


def test_other_seed_differs(demo, tmp_path):
    out, _ = demo
    other = generate_demo(tmp_path / "raw", **{**TINY, "seed": 7, "mobile": False})
    assert not any(p.startswith("mobile/") for p in other.files)
    assert _sha(out / "truth" / "buildings.csv") != _sha(tmp_path / "raw" / "truth" / "buildings.csv")


def test_files_and_summary(demo):
    out, s = demo
    assert s.bounds == (362000.0, 5716000.0, 362200.0, 5716200.0)
    names = {Path(f).name for f in s.files}
    assert "3dm_32_362100_5716100_0.1_nw_2024.laz" in names
    assert "dop10rgbi_32_362000_5716000_0.1_nw_2024.tif" in names
    assert "dgm1_32_362100_5716000_0.1_nw_2024.tif" in names
    assert "gsc_2024_32_362000_5716000_0.1.laz" in names
    assert {"panoramas.csv", "buildings.csv", "changes.csv", "truth.json", "README.md"} <= names
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"
    js = s.to_json()
    assert '"seed": 42' in js and str(s.counts["points"]["2021"]) in js
    readme = (out / "README.md").read_text()
    assert "--seed 42" in readme and f"{s.counts['points']['2024']}" in readme


def test_refuses_to_overwrite_and_bad_arguments(demo, tmp_path):
    out, _ = demo
    with pytest.raises(InputError, match="already holds a demo delivery"):
        generate_demo(out, **TINY)
    from pipeline.cli.main import main

    assert main(["demo", "--out", str(out), "--size-m", "200", "--quiet"]) == InputError.exit_code
    for bad in ({"tile_m": 0}, {"density": -1}, {"size_m": 10}, {"epochs": ("2021", "2021")}, {"scale": 0}):
        with pytest.raises(ConfigError):
            generate_demo(tmp_path / "x", **{**TINY, **bad})
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_scale_multiplies_the_area():
    from pipeline.sources.demo.generate import _check_args

    def size(scale: float) -> float:
        return _check_args(42, scale, None, 500.0, (362000.0, 5716000.0), 10.0, ("a", "b"), 0.2, 1.0)

    assert size(1) == 1000 and size(10) == 3162 and size(100) == 10000


def test_tile_names():
    from pipeline.sources.demo.grid import aerial_name, tile_grid

    tiles = tile_grid((362000.0, 5716000.0, 364000.0, 5717000.0), 1000.0)
    assert [aerial_name(t, "2021") for t in tiles] == [
        "3dm_32_362_5716_1_nw_2021.laz",
        "3dm_32_363_5716_1_nw_2021.laz",
    ]
    small = tile_grid((362000.0, 5716000.0, 362750.0, 5716500.0), 500.0)
    assert [t.stem for t in small] == ["32_362000_5716000_0.5", "32_362500_5716000_0.5"]
    assert small[1].x1 == 362750.0  # edge tile clipped to the district


# ---- aerial point clouds ---------------------------------------------------------------------------


def test_aerial_las_facts(demo):
    out, s = demo
    files = sorted((out / "aerial").rglob("*.laz"))
    assert len(files) == 8
    total = 0
    for f in files:
        las = laspy.read(f)
        h = las.header
        assert (h.version.major, h.version.minor) == (1, 2)
        assert h.point_format.id == 1
        assert np.allclose(h.scales, 0.01)
        crs = h.parse_crs()
        assert crs is not None and crs.is_compound
        assert [c.to_epsg() for c in crs.sub_crs_list] == [25832, 7837]
        assert h.parse_crs(prefer_wkt=False).to_epsg() == 25832  # GeoTIFF keys for legacy readers
        assert h.creation_date.year == int(f.stem[-4:])
        assert h.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD
        cls = set(np.unique(las.classification).tolist())
        assert cls <= ADV_SET and {2, 20} <= cls
        assert np.all(np.diff(las.gps_time) >= 0)
        rn, nr = np.asarray(las.return_number), np.asarray(las.number_of_returns)
        assert np.all((rn >= 1) & (rn <= nr)) and nr.max() >= 2
        x0, y0, x1, y1 = _tile_bounds(f)
        x, y = np.asarray(las.x), np.asarray(las.y)
        assert x.min() >= x0 and x.max() < x1 and y.min() >= y0 and y.max() < y1
        assert np.asarray(las.z)[las.classification == 2].min() > 40 and np.asarray(las.z).max() < 400
        total += len(las.points)
    assert total == sum(s.counts["points"].values())


def test_aerial_density_in_range(demo):
    out, _ = demo
    pulses, area = 0, 0.0
    for f in sorted((out / "aerial").rglob("*.laz")):
        las = laspy.read(f)
        n = int((las.return_number == 1).sum())
        x0, y0, x1, y1 = _tile_bounds(f)
        a = (x1 - x0) * (y1 - y0)
        # strip overlaps double the single-strip density (density / 1.2); water drops returns
        assert 0.6 * DENSITY <= n / a <= 1.8 * DENSITY, (f.name, n / a)
        pulses += n
        area += a
    assert abs(pulses / area - DENSITY) < 0.15 * DENSITY


def test_roof_heights_match_truth(demo, truth):
    """p75 of first non-ground returns in the footprint shrunk by 0.5 m: 0.3 m flat, 0.8 m pitched."""
    out, _ = demo
    for epoch in ("2021", "2024"):
        x, y, z = _first_nonground(out / "aerial" / epoch)
        pts = shapely.points(x, y)
        t = truth[truth["kind"].isin(["building", "unregistered"]) & (truth[f"present_{epoch}"] == 1)]
        checked = 0
        for _, r in t.iterrows():
            g = shapely.from_wkt(r["footprint_wkt"]).buffer(-0.5)
            inside = shapely.contains(g, pts)
            if inside.sum() < 5:
                continue
            err = np.percentile(z[inside], 75) - float(r[f"roof_height_{epoch}"])
            assert abs(err) <= (0.3 if r["roof_type"] == "flat" else 0.8), (r["oid"], epoch, err)
            checked += 1
        assert checked >= 0.9 * len(t)


def test_epoch_changes_visible(demo, truth):
    out, _ = demo
    data = {e: _first_nonground(out / "aerial" / e) for e in ("2021", "2024")}

    def above(epoch: str, row: pd.Series, margin: float = 2.0) -> tuple[int, int, float]:
        x, y, z = data[epoch]
        g = shapely.from_wkt(row["footprint_wkt"]).buffer(-0.5)
        inside = shapely.contains_xy(g, x, y)
        high = inside & (z > float(row["base_height"]) + margin)
        return (
            int(inside.sum()),
            int(high.sum()),
            float(np.percentile(z[inside], 75)) if inside.any() else np.nan,
        )

    kinds = set(truth["change"])
    assert {"unchanged", "new", "demolished", "raised", "lowered"} <= kinds
    for _, r in truth[truth["change"] != "unchanged"].iterrows():
        _, hi1, p1 = above("2021", r)
        _, hi2, p2 = above("2024", r)
        if r["change"] == "demolished":
            assert hi1 > 10 and hi2 == 0, (r["oid"], hi1, hi2)
        elif r["change"] == "new":
            assert hi1 == 0 and hi2 > 10, (r["oid"], hi1, hi2)
            assert float(r["height"]) >= 3.0 and float(r["footprint_area"]) >= 30.0
        else:
            dh = float(r["dh"])
            assert (dh >= 3.0) if r["change"] == "raised" else (dh <= -2.5)
            assert abs((p2 - p1) - dh) < 0.5, (r["oid"], p2 - p1, dh)
    # unregistered structures: new in epoch 2, not in the cadastre, large and high enough to be listed
    unreg = truth[(truth["kind"] == "unregistered") & (truth["change"] == "new")]
    assert len(unreg) >= 1
    assert (unreg["footprint_area"] >= 30).all() and (unreg["height"] >= 3).all()


# ---- cadastre ---------------------------------------------------------------------------------------


def test_cadastre_matches_truth(demo, truth):
    out, _ = demo
    gpkg = out / "alkis" / "alkis_vereinfacht_demo.gpkg"
    import pyogrio

    layers = dict(pyogrio.list_layers(gpkg))
    assert layers["GebauedeBauwerk"] == "MultiPolygon" and layers["Flurstueck"] == "MultiPolygon"
    b = gpd.read_file(gpkg, layer="GebauedeBauwerk")
    assert b.crs.to_epsg() == 25832
    assert {
        "oid",
        "aktualit",
        "gebnutzbez",
        "funktion",
        "gfkzshh",
        "anzahlgs",
        "rellage",
        "lagebeztxt",
    } <= set(b)
    assert set(b["oid"]) == set(truth.loc[truth["in_cadastre"] == 1, "oid"])
    assert b["oid"].is_unique and b["oid"].str.fullmatch(r"DENW36AL[0-9A-Za-z]{8}").all()
    assert set(b["gebnutzbez"]) == {"Gebäude", "Bauteil"}
    assert (b["rellage"] == "unter der Erdoberfläche").sum() >= 1
    assert b["anzahlgs"].isna().mean() > 0.4  # often empty
    assert b["gfkzshh"].str.fullmatch(r"3100[12]_\d{4}").all()
    assert b.geometry.apply(lambda g: len(g.geoms) > 1).any()  # a multi-part building
    assert b.geometry.apply(lambda g: any(len(p.interiors) for p in g.geoms)).any()  # a courtyard
    # the deliberately invalid geometries
    reasons = b.geometry.apply(shapely.is_valid_reason)
    bad = reasons[reasons != "Valid Geometry"]
    assert 3 <= len(bad) <= 5
    kinds = " ".join(bad)
    for k in ("Self-intersection", "Too few points", "Hole lies outside shell"):
        assert k in kinds
    invalid_truth = truth.loc[truth["geometry_valid"] == 0, "oid"]
    assert set(b.loc[bad.index, "oid"]) == set(invalid_truth)
    # demolished buildings are still recorded, unregistered ones are not
    demolished = truth[truth["change"] == "demolished"]
    assert set(demolished["oid"]) <= set(b["oid"])
    assert not set(truth.loc[truth["kind"] == "unregistered", "oid"]) & set(b["oid"])


def test_parcels_tile_the_district(demo):
    out, s = demo
    p = gpd.read_file(out / "alkis" / "alkis_vereinfacht_demo.gpkg", layer="Flurstueck")
    assert p["flstkennz"].is_unique
    assert p["flstkennz"].str.fullmatch(r"05\d{4}\d{3}\d{5}(\d{4}|_{4})__").all()
    assert {"gemarkung", "flur", "flaeche", "lagebeztxt", "aktualit"} <= set(p)
    district = shapely.box(*s.bounds)
    union = shapely.union_all(p.geometry.to_numpy())
    assert abs(union.area - district.area) < 1.0
    assert abs(p.geometry.area.sum() - district.area) < 1.0  # no overlaps beyond mm slivers
    np.testing.assert_allclose(p["flaeche"], p.geometry.area.round(), atol=1.0)


# ---- rasters -------------------------------------------------------------------------------------


def test_orthophoto_and_dgm(demo):
    out, s = demo
    trees_ndvi, roof_ndvi = [], []
    from pipeline.sources.demo.city import build_city

    city = build_city(42, s.bounds, s.epochs)
    for f in sorted((out / "dop").glob("*.tif")):
        with rasterio.open(f) as d:
            assert d.count == 4 and d.dtypes == ("uint8",) * 4
            assert d.descriptions == ("red", "green", "blue", "nir")
            assert d.crs.to_epsg() == 25832 and d.res == (0.1, 0.1)  # DOP10: 10 cm, as Geobasis NRW delivers
            assert d.profile["tiled"] and d.profile["compress"] == "deflate"
            assert (d.bounds.left, d.bounds.bottom) == _tile_bounds(f)[:2]
            img = d.read().astype(float)
            ndvi = (img[3] - img[0]) / (img[3] + img[0] + 1e-9)
            rows, cols = rasterio.transform.rowcol(d.transform, city.trees.x, city.trees.y)
            ok = (
                (np.asarray(rows) >= 0)
                & (np.asarray(rows) < d.height)
                & (np.asarray(cols) >= 0)
                & (np.asarray(cols) < d.width)
            )
            trees_ndvi += ndvi[np.asarray(rows)[ok], np.asarray(cols)[ok]].tolist()
            for st in city.structures:
                if st.present[1] and st.material in (
                    "bitumen",
                    "gravel",
                    "tile_red",
                    "tile_dark",
                    "tile_brown",
                ):
                    c = st.geom.representative_point()
                    r, cc = d.index(c.x, c.y)
                    if 0 <= r < d.height and 0 <= cc < d.width:
                        roof_ndvi.append(ndvi[r, cc])
    assert np.median(trees_ndvi) > 0.4 and np.mean(np.array(trees_ndvi) > 0.3) > 0.9
    assert np.median(roof_ndvi) < 0.1
    # DGM: 1 m float32 normal heights equal to the ground points
    for f in sorted((out / "dgm").glob("*.tif")):
        with rasterio.open(f) as d:
            assert d.dtypes == ("float32",) and d.res == (1.0, 1.0)
            crs = pyproj.CRS.from_wkt(d.crs.to_wkt())
            assert crs.is_compound and [c.to_epsg() for c in crs.sub_crs_list] == [25832, 7837]
            z = d.read(1)
            assert z.min() > 45 and z.max() < 70
            las = laspy.read(out / "aerial" / "2024" / f.name.replace("dgm1", "3dm").replace(".tif", ".laz"))
            g = las.classification == 2
            gx, gy, gz = np.asarray(las.x[g]), np.asarray(las.y[g]), np.asarray(las.z[g])
            r, c = rasterio.transform.rowcol(d.transform, gx, gy)
            diff = gz - z[np.clip(r, 0, d.height - 1), np.clip(c, 0, d.width - 1)]
            assert abs(np.median(diff)) < 0.05 and np.percentile(np.abs(diff), 95) < 0.2


# ---- mobile mapping ------------------------------------------------------------------------------


def test_mobile_scans_and_panoramas(demo):
    out, s = demo
    pano = pd.read_csv(out / "mobile" / "panoramas.csv")
    assert list(pano.columns) == ["time", "x", "y", "z", "heading", "image_id"]
    assert pano["image_id"].is_unique and len(pano) == s.counts["panoramas"]
    step = np.hypot(np.diff(pano["x"]), np.diff(pano["y"]))
    assert np.median(step) == pytest.approx(5.0, abs=0.01)
    tree = shapely.STRtree(shapely.points(pano["x"], pano["y"]))
    total = 0
    for f in sorted((out / "mobile").glob("*.laz")):
        las = laspy.read(f)
        h = las.header
        assert (h.version.major, h.version.minor) == (1, 4) and h.point_format.id == 7
        assert [c.to_epsg() for c in h.parse_crs().sub_crs_list] == [25832, 7837]
        assert set(np.unique(las.classification).tolist()) <= {1, 2, 5, 6}
        assert {2, 6} <= set(np.unique(las.classification).tolist())
        x0, y0, x1, y1 = _tile_bounds(f)
        x, y = np.asarray(las.x), np.asarray(las.y)
        assert x.min() >= x0 and x.max() < x1 and y.min() >= y0 and y.max() < y1
        assert np.asarray(las.red).max() > 0
        sample = np.arange(0, len(x), 50)
        _, dist = tree.query_nearest(shapely.points(x[sample], y[sample]), return_distance=True)
        assert dist.max() < 30.0 + 5.0  # within the scanner range of the track
        # density falls off with distance: more points near the track than far away
        assert np.mean(dist < 10) > 0.5
        total += len(x)
    assert total == s.counts["mobile_points"]


# ---- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "tiny.yaml", "ruhr.example.yaml"])
def test_configs_load(name):
    from pipeline.config import load_config

    cfg = load_config(REPO / "configs" / name)
    assert cfg.crs.compound == "EPSG:25832+7837"
    assert cfg.layers.mobile_points.access == "internal" and cfg.layers.panoramas.access == "internal"
    assert len(cfg.sources.aerial) == 2 and cfg.sources.orthophoto.bands["nir"] == 4
    if name == "demo.yaml":
        assert cfg.name == "demo-gelsenkirchen"
        assert cfg.crs.frame_origin == (362500.0, 5716500.0, 0.0)
        assert [e.epoch for e in cfg.sources.aerial] == ["2021", "2024"]
        assert cfg.sources.reference_citygml == "lod2/*.gml"  # the demo's official LoD2 (model check)
    if name == "tiny.yaml":
        assert cfg.crs.frame_origin == (362100.0, 5716100.0, 0.0)
        assert cfg.raw_dir == (REPO / "data" / "tiny" / "raw").resolve()


def test_demo_config_globs_match_generated_files(demo):
    out, _ = demo
    from pipeline.config import load_config

    cfg = load_config(REPO / "configs" / "demo.yaml")
    src = cfg.sources
    globs = [e.points for e in src.aerial] + [src.orthophoto.path, src.dgm.path, src.mobile.points]
    for g in globs:
        assert len(list(out.glob(g))) == 4, g
    assert (out / src.cadastre.path).is_file() and (out / src.mobile.panoramas).is_file()


@pytest.mark.slow
def test_aerial_simulation_speed():
    """One 500 m tile at 10 pulses/m² (about 2.6 M points): simulation well below 30 s on a shared box."""
    import time

    from pipeline.sources.demo.city import build_city
    from pipeline.sources.demo.grid import tile_grid
    from pipeline.sources.demo.points import simulate_aerial

    bounds = (362000.0, 5716000.0, 363000.0, 5717000.0)
    city = build_city(42, bounds, ("2021", "2024"))
    tile = tile_grid(bounds, 500.0)[0]
    t = time.perf_counter()
    pts = simulate_aerial(city, tile, 1, 10.0, np.random.default_rng(0))
    assert time.perf_counter() - t < 30.0
    assert 2.3e6 < len(pts["x"]) < 3.0e6


# ---- kernels vs numpy references ----------------------------------------------------------------


def test_terrain_kernel_matches_numpy():
    from pipeline.sources.demo.terrain import Terrain

    t = Terrain.from_rng(np.random.default_rng(3))
    rng = np.random.default_rng(4)
    x, y = rng.uniform(360000, 372000, 5000), rng.uniform(5710000, 5722000, 5000)
    np.testing.assert_allclose(t(x, y), t.reference(x, y), rtol=0, atol=1e-9)
    assert t(362000.0, 5716000.0).shape == ()
    z = t(x, y)
    assert z.min() > 45.0 and z.max() < 70.0


def test_counting_order_matches_numpy():
    from pipeline.sources.demo.kernels import counting_order, counting_order_numpy

    cid = np.random.default_rng(5).integers(0, 997, 100_000)
    order, starts = counting_order(cid, 997)
    ref_order, ref_starts = counting_order_numpy(cid, 997)
    np.testing.assert_array_equal(order, ref_order)
    np.testing.assert_array_equal(starts, ref_starts)
