"""Other CRSs through config: Autzen (EPSG:2994, international feet, no vertical CRS) builds a valid point layer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pyproj import Transformer

from pipeline.buildlog import BuildLog
from pipeline.config import load_config
from pipeline.orchestrate.build import run_build
from pipeline.tiles.points_reader import pointcloud_invariants

pytestmark = pytest.mark.slow

FT = 0.3048

CONFIG = """
name: autzen
paths: {raw: raw, out: out, cache: cache}
crs:
  horizontal: EPSG:2994        # NAD83(HARN) / Oregon GIC Lambert (ft)
  vertical: null               # the survey has no vertical CRS ...
  assume_ellipsoidal_heights: true   # ... and its Z is taken as ellipsoidal height (in the file's feet)
runtime: {workers: 1, progress: false}
sources:
  aerial:
    - {epoch: "2010", points: "*.las", class_scheme: asprs}
layers:
  aerial_points: {colour_from_orthophoto: false}
  viewer: {enabled: false}
"""


def test_autzen_feet_through_config(tmp_path, realdata):
    (tmp_path / "raw").mkdir()
    shutil.copy(realdata / "autzen" / "autzen_class.las", tmp_path / "raw")
    (tmp_path / "twin.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "twin.yaml")
    res = run_build(cfg, workers=1, log=BuildLog(quiet=True))
    manifest = json.loads((res.release_dir / "manifest.json").read_text())
    layer = next(lay for lay in manifest["layers"] if lay["name"] == "aerial_points")
    inv = pointcloud_invariants(res.release_dir / layer["tileset"])
    assert inv["points"] == 110_000 == layer["stats"]["points_in"]

    # the root transform maps the content frame to ECEF; its origin lies in Eugene, Oregon, on the ellipsoid
    ts = json.loads((res.release_dir / layer["tileset"]).read_text())
    m = np.array(ts["root"]["transform"]).reshape(4, 4).T
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*m[:3, 3])
    assert -123.2 < lon < -123.0 and 44.0 < lat < 44.1 and abs(h) < 1.0

    # Z went from feet to metres: the tight root box spans the data's height range in metres, not feet
    box = ts["root"]["boundingVolume"]["box"]
    z_lo, z_hi = box[2] - abs(box[11]), box[2] + abs(box[11])
    span_m = z_hi - z_lo
    import laspy

    las = laspy.read(realdata / "autzen" / "autzen_class.las")
    span_ft = float(las.z.max() - las.z.min())
    assert span_m == pytest.approx(span_ft * FT, rel=0.05, abs=2.0)

    # the terrain from ground points uses the same Z unit rule: it lies at the points' ground, not 3.3x above
    terrain = json.loads((res.release_dir / "terrain" / "tileset.json").read_text())
    tb = terrain["root"]["boundingVolume"]["box"]
    t_hi = tb[2] + abs(tb[11])
    assert z_lo - 10.0 < t_hi < z_hi + 1.0
    assert res.seconds < 120, "terrain from a sparse survey must not explode into millions of triangles"


# ---- any working CRS: the demo in UTM 33 (+ DHHN2016) and a crafted RD New + NAP district ----------------

BUILDINGS_ONLY = """
name: {name}
paths: {{raw: raw, out: out, cache: cache}}
crs:
{crs}
runtime: {{workers: 1, progress: false}}
sources:
  aerial:
    - {{epoch: "2024", points: "aerial/2024/*.laz", class_scheme: adv}}
  dgm: {{path: "dgm/*.tif"}}
  cadastre: {{path: "alkis/*.gpkg", format: alkis_gpkg, layer: GebauedeBauwerk, parcel_layer: Flurstueck}}
layers:
  aerial_points: {{enabled: false}}
  mobile_points: {{enabled: false}}
  panoramas: {{enabled: false}}
  terrain: {{enabled: false}}
  overlays: {{enabled: false}}
  change: {{enabled: false}}
  viewer: {{enabled: false}}
release: {{validate_gltf: false}}
"""

RD_SHIFT = (
    155_000.0 - 362_000.0,
    463_000.0 - 5_716_000.0,
)  # demo district -> Amersfoort (multiples of 2 m)


@pytest.fixture(scope="module")
def demo_district(tmp_path_factory):
    """The tiny demo district (EPSG:25832 + DHHN2016, 200 m, 4 tiles), generated once for this module."""
    from pipeline.sources.demo import generate_demo

    raw = tmp_path_factory.mktemp("demo25832") / "raw"
    generate_demo(raw, size_m=200, tile_m=100, density=8, progress=False)
    return raw


def _copy_laz(src, dst, crs, xy):
    """One LAZ file rewritten in `crs` (LAS 1.4 PF 6, WKT), x/y mapped by `xy`, Z and classes unchanged."""
    import laspy
    from pyproj import CRS

    las = laspy.read(src)
    x, y = xy(np.asarray(las.x), np.asarray(las.y))
    out = laspy.convert(las, point_format_id=6, file_version="1.4")
    hdr = laspy.LasHeader(point_format=6, version="1.4")
    hdr.scales = np.array([0.001, 0.001, 0.001])
    hdr.offsets = np.array([np.floor(x.min()), np.floor(y.min()), 0.0])
    hdr.add_crs(CRS.from_user_input(crs))
    new = laspy.LasData(hdr)
    new.x, new.y, new.z = x, y, np.asarray(las.z)
    for name in ("classification", "return_number", "number_of_returns", "intensity", "gps_time"):
        setattr(new, name, np.asarray(getattr(out, name)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    new.write(dst)


def _reproject_dgm(src, dst, crs):
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(src) as ds:
        tr, w, h = calculate_default_transform(
            ds.crs, crs, ds.width, ds.height, *ds.bounds, resolution=ds.res
        )
        prof = ds.profile | {"crs": crs, "transform": tr, "width": w, "height": h, "nodata": -9999.0}
        dst.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst, "w", **prof) as out:
            data = np.full((h, w), -9999.0, dtype=np.float32)
            reproject(
                ds.read(1),
                data,
                src_transform=ds.transform,
                src_crs=ds.crs,
                dst_transform=tr,
                dst_crs=crs,
                dst_nodata=-9999.0,
                resampling=Resampling.bilinear,
            )
            out.write(data, 1)


def _translate_dgm(src, dst, crs, shift):
    import rasterio
    from rasterio import Affine

    with rasterio.open(src) as ds:
        prof = ds.profile | {"crs": crs, "transform": Affine.translation(*shift) * ds.transform}
        data = ds.read()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **prof) as out:
        out.write(data)


def _cadastre(src, dst, to):
    import geopandas as gpd
    import pyogrio

    dst.parent.mkdir(parents=True, exist_ok=True)
    for layer in ("GebauedeBauwerk", "Flurstueck"):
        g = pyogrio.read_dataframe(src, layer=layer)
        pyogrio.write_dataframe(gpd.GeoDataFrame(to(g)), dst, layer=layer, driver="GPKG")


def _build(root, name, crs_yaml):
    (root / "twin.yaml").write_text(BUILDINGS_ONLY.format(name=name, crs=crs_yaml))
    cfg = load_config(root / "twin.yaml")
    res = run_build(cfg, workers=1, log=BuildLog(quiet=True))
    import pyogrio

    gdf = pyogrio.read_dataframe(res.release_dir / "buildings" / "buildings.gpkg", layer="buildings")
    return res, gdf.set_index("oid").sort_index()


def _link_raw(raw, root, parts):
    for part in parts:
        (root / "raw" / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(raw / part, root / "raw" / part)


def _assert_same_heights(ref, got):
    """Every building height agrees within 1 cm: those measured from the points (base, percentiles of
    the roof points) and the LoD1 roof (`roof_height`, by default the area-weighted mean of the
    reconstructed LoD2 roof), whose multi-plane faces are laid out in each footprint's own frame and so
    follow the projection's rotation (meridian convergence) and scale; roof types and plane counts are
    the same."""
    assert len(ref) > 20 and list(ref.index) == list(got.index)
    for col in ("base_height", "p50", "p90", "p99", "roof_height", "height"):
        a, b = ref[col].to_numpy(float), got[col].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        ok = ~np.isnan(a)
        assert ok.sum() > 20
        assert np.max(np.abs(a[ok] - b[ok])) < 0.01, (col, np.max(np.abs(a[ok] - b[ok])))
    assert (ref["quality"] == got["quality"]).all()
    for col in ("roof_type", "roof_planes"):
        if col in ref:
            assert (ref[col] == got[col]).all(), col


@pytest.fixture(scope="module")
def utm32_build(demo_district, tmp_path_factory):
    root = tmp_path_factory.mktemp("b25832")
    _link_raw(demo_district, root, ["aerial/2024", "dgm", "alkis"])
    return _build(root, "utm32", "  horizontal: EPSG:25832\n  vertical: EPSG:7837\n")


# per-build records that name times and durations (and the reports drawn from them); everything else
# must keep its bytes
VOLATILE = ("manifest.json", "build.log.jsonl", ".twin/")


def _snapshot(release):
    out = {}
    for p in sorted(release.rglob("*")):
        rel = p.relative_to(release).as_posix()
        if p.is_file() and not rel.startswith(VOLATILE) and "report" not in rel:
            out[rel] = p.read_bytes()
    return out


def test_default_crs_auto_builds_the_same_release(demo_district, utm32_build, tmp_path):
    """No `crs` configured (the default `auto`): the working CRS is the demo files' own EPSG:25832 +
    DHHN2016, so the build id and every byte of the release equal the build that spells the CRS out."""
    res32, _ref = utm32_build
    _link_raw(demo_district, tmp_path, ["aerial/2024", "dgm", "alkis"])
    res, _got = _build(tmp_path, "utm32", "  frame_snap: 1000.0\n")  # the crs section left at its defaults
    assert res.build_id == res32.build_id
    a, b = _snapshot(res32.release_dir), _snapshot(res.release_dir)
    assert sorted(a) == sorted(b) and len(a) > 5
    assert [k for k in a if a[k] != b[k]] == []


def test_class_scheme_auto_feeds_the_building_heights(demo_district, utm32_build, tmp_path):
    """`class_scheme: auto` on the aerial epoch (the demo's AdV codes 1, 2, 9, 18, 20): decided as AdV
    before the buildings stage, stated in the layer's stats; heights equal the `adv` build's exactly."""
    _res32, ref = utm32_build
    _link_raw(demo_district, tmp_path, ["aerial/2024", "dgm", "alkis"])
    (tmp_path / "twin.yaml").write_text(
        BUILDINGS_ONLY.format(name="auto", crs="  frame_snap: 1000.0\n").replace(
            "class_scheme: adv", "class_scheme: auto"
        )
    )
    res = run_build(load_config(tmp_path / "twin.yaml"), workers=1, log=BuildLog(quiet=True))
    import pyogrio

    got = pyogrio.read_dataframe(res.release_dir / "buildings" / "buildings.gpkg", layer="buildings")
    got = got.set_index("oid").sort_index()
    for col in ("roof_height", "base_height", "height"):
        assert np.array_equal(ref[col].to_numpy(float), got[col].to_numpy(float), equal_nan=True), col
    manifest = json.loads((res.release_dir / "manifest.json").read_text())
    (layer,) = [x for x in manifest["layers"] if x["name"] == "buildings"]
    chosen = layer["stats"]["class_schemes"]["2024"]
    assert chosen["scheme"] == "adv" and "codes [20] exist only in the AdV scheme" in chosen["reason"]


def test_demo_reprojected_to_utm33_gives_the_same_heights(demo_district, utm32_build, tmp_path):
    """The demo re-projected to EPSG:25833 + DHHN2016 (a Berlin/Brandenburg/Saxony delivery), with two of
    its four point tiles left in UTM 32 (a delivery at the state border): same building heights within
    1 cm, every layer file in the working CRS."""
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:25832", "EPSG:25833", always_xy=True)

    def xy(x, y):
        return tuple(np.asarray(v) for v in t.transform(x, y))

    laz = sorted((demo_district / "aerial" / "2024").glob("*.laz"))
    for k, f in enumerate(laz):
        dst = tmp_path / "raw" / "aerial" / "2024" / f.name
        if k % 2:
            _copy_laz(f, dst, "EPSG:25832+7837", lambda x, y: (x, y))  # stays in UTM 32
        else:
            _copy_laz(f, dst, "EPSG:25833+7837", xy)
    for f in sorted((demo_district / "dgm").glob("*.tif")):
        _reproject_dgm(f, tmp_path / "raw" / "dgm" / f.name, "EPSG:25833")
    _cadastre(
        demo_district / "alkis" / "alkis_vereinfacht_demo.gpkg",
        tmp_path / "raw" / "alkis" / "district.gpkg",
        lambda g: g.to_crs("EPSG:25833"),
    )
    _res32, ref = utm32_build
    res, got = _build(tmp_path, "utm33", "  horizontal: EPSG:25833\n  vertical: EPSG:7837\n")
    _assert_same_heights(ref, got)
    # the layer's GeoPackage is in the working CRS, at the re-projected place
    import pyogrio

    info = pyogrio.read_info(res.release_dir / "buildings" / "buildings.gpkg", layer="buildings")
    assert "25833" in info["crs"]
    want = ref.to_crs("EPSG:25833").total_bounds
    assert np.allclose(got.total_bounds, want, atol=0.01)  # UTM 33 eastings at 7 degrees E are negative


def _geoid_grid(path, undulation):
    """A constant geoid model (ETRS89 lon/lat GeoTIFF, 0.1 degree cells) covering the Netherlands."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.full((60, 80), undulation, dtype=np.float32)  # lon 2..10, lat 50..56
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=80,
        height=60,
        count=1,
        dtype="float32",
        crs="EPSG:4258",
        transform=from_origin(2.0, 56.0, 0.1, 0.1),
    ) as ds:
        ds.write(data, 1)


@pytest.fixture(scope="module")
def rd_district(demo_district, tmp_path_factory):
    """A crafted RD New + NAP district: the demo's footprints, points and DGM moved to Amersfoort (a pure
    shift, so every height and every point-in-footprint relation is unchanged), files tagged EPSG:28992
    (+ EPSG:5709 in the LAZ WKT)."""
    root = tmp_path_factory.mktemp("rdnew")
    raw = root / "raw"
    dx, dy = RD_SHIFT
    for f in sorted((demo_district / "aerial" / "2024").glob("*.laz")):
        _copy_laz(f, raw / "aerial" / "2024" / f.name, "EPSG:28992+5709", lambda x, y: (x + dx, y + dy))
    for f in sorted((demo_district / "dgm").glob("*.tif")):
        _translate_dgm(f, raw / "dgm" / f.name, "EPSG:28992", (dx, dy))
    import shapely

    _cadastre(
        demo_district / "alkis" / "alkis_vereinfacht_demo.gpkg",
        raw / "alkis" / "district.gpkg",
        lambda g: g.set_geometry(
            shapely.transform(g.geometry.values, lambda c: c + np.array([dx, dy]))
        ).set_crs("EPSG:28992", allow_override=True),
    )
    return root


def test_rd_new_nap_with_a_configured_geoid_grid_gives_the_same_heights(rd_district, utm32_build, tmp_path):
    """RD New + NAP through config alone: the NAP geoid model is given as `crs.geoid_grid` (a crafted
    constant 43 m model under another file name than PROJ's nl_nsgi_nlgeo2018.tif): building heights equal
    the EPSG:25832 build's within 1 cm, and the tiles sit at NAP + 43 m on the ellipsoid."""
    from pyproj import Transformer

    grid = tmp_path / "crafted_nap_geoid.tif"
    _geoid_grid(grid, 43.0)
    crs = (
        "  horizontal: EPSG:28992\n  vertical: EPSG:5709\n"
        f"  geoid_grid: {grid}\n  frame_origin: [155100.0, 463100.0, 0.0]\n"
    )
    res, got = _build(rd_district, "rdnew", crs)
    _res32, ref = utm32_build
    _assert_same_heights(ref, got)
    ts = json.loads((res.release_dir / "buildings" / "tileset.json").read_text())
    m = np.array(ts["root"]["transform"]).reshape(4, 4).T
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*m[:3, 3])
    assert 5.3 < lon < 5.5 and 52.1 < lat < 52.2  # Amersfoort, the origin of RD
    assert h == pytest.approx(43.0, abs=0.5)  # NAP 0 m + the configured geoid (the datum shift moves mm-dm)


def test_rd_new_nap_without_the_grid_names_it(rd_district, tmp_path):
    """No NAP geoid grid installed and none configured: the build stops (exit 4) naming
    nl_nsgi_nlgeo2018.tif and how to get it, instead of heights 43 m off."""
    from pyproj import CRS

    from pipeline.crs import missing_grids
    from pipeline.errors import GeoidGridMissing

    if not missing_grids(CRS("EPSG:28992+5709"), "EPSG:4978"):
        pytest.skip("PROJ has the NAP geoid grid installed here")
    root = tmp_path
    shutil.copytree(rd_district / "raw", root / "raw")
    crs = "  horizontal: EPSG:28992\n  vertical: EPSG:5709\n  frame_origin: [155100.0, 463100.0, 0.0]\n"
    with pytest.raises(GeoidGridMissing) as e:
        _build(root, "rdnew", crs)
    msg = str(e.value)
    assert "nl_nsgi_nlgeo2018.tif" in msg and "projsync --file nl_nsgi_nlgeo2018.tif" in msg
    assert "crs.geoid_grid" in msg and e.value.exit_code == 4


def test_rd_new_with_ellipsoidal_heights_declared(rd_district, utm32_build, tmp_path):
    """Heights declared ellipsoidal for any CRS (no vertical datum, no grid): the same building heights."""
    root = tmp_path
    raw = root / "raw"
    shutil.copytree(rd_district / "raw" / "dgm", raw / "dgm")
    shutil.copytree(rd_district / "raw" / "alkis", raw / "alkis")
    for f in sorted((rd_district / "raw" / "aerial" / "2024").glob("*.laz")):
        _copy_laz(f, raw / "aerial" / "2024" / f.name, "EPSG:28992", lambda x, y: (x, y))
    crs = (
        "  horizontal: EPSG:28992\n  vertical: null\n  assume_ellipsoidal_heights: true\n"
        "  frame_origin: [155100.0, 463100.0, 0.0]\n"
    )
    _res, got = _build(root, "rdell", crs)
    _res32, ref = utm32_build
    _assert_same_heights(ref, got)


def test_working_crs_auto_takes_the_inputs_own(rd_district, tmp_path):
    """`crs.horizontal: auto` / `crs.vertical: auto`: the working CRS is the point files' RD New + NAP."""
    from pipeline.config import load_config as load
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.orchestrate.working_crs import resolve_working_crs

    (tmp_path / "twin.yaml").write_text(
        BUILDINGS_ONLY.format(name="auto", crs="  horizontal: auto\n  vertical: auto\n").replace(
            "paths: {raw: raw,", f"paths: {{raw: {rd_district / 'raw'},"
        )
    )
    cfg = load(tmp_path / "twin.yaml")
    out = resolve_working_crs(cfg, scan_inputs(cfg))
    assert (out.crs.horizontal, out.crs.vertical) == ("EPSG:28992", "EPSG:5709")


FULL = """
name: {name}
paths: {{raw: raw, out: out, cache: cache}}
crs: {{horizontal: "{h}", vertical: EPSG:7837}}
runtime: {{workers: 1, progress: false}}
sources:
  aerial:
    - {{epoch: "2021", points: "aerial/2021/*.laz", class_scheme: adv}}
    - {{epoch: "2024", points: "aerial/2024/*.laz", class_scheme: adv}}
  orthophoto: {{path: "dop/*.tif", bands: {{red: 1, green: 2, blue: 3, nir: 4}}}}
  dgm: {{path: "dgm/*.tif"}}
  cadastre: {{path: "alkis/*.gpkg", format: alkis_gpkg, layer: GebauedeBauwerk, parcel_layer: Flurstueck}}
layers:
  mobile_points: {{enabled: false}}
  panoramas: {{enabled: false}}
  viewer: {{enabled: false}}
release: {{validate_gltf: false}}
"""


def _reproject_raster(src, dst, crs):
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(src) as ds:
        tr, w, h = calculate_default_transform(
            ds.crs, crs, ds.width, ds.height, *ds.bounds, resolution=ds.res
        )
        prof = ds.profile | {"crs": crs, "transform": tr, "width": w, "height": h}
        dst.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst, "w", **prof) as out:
            for b in range(1, ds.count + 1):
                data = np.zeros((h, w), dtype=ds.dtypes[b - 1])
                reproject(
                    rasterio.band(ds, b), data, dst_transform=tr, dst_crs=crs, resampling=Resampling.bilinear
                )
                out.write(data, b)


def test_demo_in_utm33_builds_every_layer_in_the_working_crs(demo_district, tmp_path):
    """Points, buildings, terrain, imagery, parcels, change and report from the demo re-projected to
    EPSG:25833 + DHHN2016: the layers' GeoPackages are in UTM 33 and the planning figures match the
    EPSG:25832 build (GRZ and GFZ estimate are vector results: equal; change classes agree)."""
    import pyogrio
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:25832", "EPSG:25833", always_xy=True)
    r32, r33 = tmp_path / "utm32", tmp_path / "utm33"
    for part in ("aerial/2021", "aerial/2024", "dop", "dgm", "alkis"):
        shutil.copytree(demo_district / part, r32 / "raw" / part)
    for ep in ("2021", "2024"):
        for f in sorted((demo_district / "aerial" / ep).glob("*.laz")):
            _copy_laz(
                f,
                r33 / "raw" / "aerial" / ep / f.name,
                "EPSG:25833+7837",
                lambda x, y: tuple(np.asarray(v) for v in t.transform(x, y)),
            )
    for f in sorted((demo_district / "dgm").glob("*.tif")):
        _reproject_dgm(f, r33 / "raw" / "dgm" / f.name, "EPSG:25833")
    for f in sorted((demo_district / "dop").glob("*.tif")):
        _reproject_raster(f, r33 / "raw" / "dop" / f.name, "EPSG:25833")
    _cadastre(
        demo_district / "alkis" / "alkis_vereinfacht_demo.gpkg",
        r33 / "raw" / "alkis" / "district.gpkg",
        lambda g: g.to_crs("EPSG:25833"),
    )
    out = {}
    for root, h in ((r32, "EPSG:25832"), (r33, "EPSG:25833")):
        (root / "twin.yaml").write_text(FULL.format(name=root.name, h=h))
        res = run_build(load_config(root / "twin.yaml"), workers=1, log=BuildLog(quiet=True))
        names = {lay["name"] for lay in json.loads((res.release_dir / "manifest.json").read_text())["layers"]}
        assert {"aerial_points", "buildings", "terrain", "parcels", "change", "report"} <= names
        out[h] = res.release_dir
    a = pyogrio.read_dataframe(out["EPSG:25832"] / "overlays" / "parcels.gpkg").set_index("flstkennz")
    b = pyogrio.read_dataframe(out["EPSG:25833"] / "overlays" / "parcels.gpkg").set_index("flstkennz")
    assert "25833" in str(b.crs) and len(a) == len(b) > 20 and (a["n_buildings"] > 0).sum() > 10
    b = b.loc[a.index]
    for col in ("grz", "gfz_est", "n_buildings"):
        assert np.allclose(a[col].to_numpy(float), b[col].to_numpy(float), atol=1e-3, equal_nan=True), col
    assert np.nanmedian(np.abs(a["green_share"].to_numpy(float) - b["green_share"].to_numpy(float))) < 0.02
    ca = pyogrio.read_dataframe(out["EPSG:25832"] / "change" / "change.gpkg", layer="buildings_change")
    cb = pyogrio.read_dataframe(out["EPSG:25833"] / "change" / "change.gpkg", layer="buildings_change")
    ca, cb = ca.set_index("oid").sort_index(), cb.set_index("oid").sort_index()
    assert list(ca.index) == list(cb.index) and "25833" in str(cb.crs)
    assert (ca["change_class"] == cb["change_class"]).mean() >= 0.9


NRW_BUILDINGS = """
name: nrw
paths: {{raw: {raw}, out: out, cache: cache}}
runtime: {{workers: 1, progress: false}}
sources:
  aerial:
    - {{epoch: "2021", points: "3dm_32_360_5721_crop300_*.laz", class_scheme: auto}}
  cadastre: {{path: "LoD2_32_360_5721_1_NW.gml", format: generic}}
layers:
  aerial_points: {{enabled: false}}
  mobile_points: {{enabled: false}}
  panoramas: {{enabled: false}}
  terrain: {{enabled: false}}
  overlays: {{enabled: false}}
  change: {{enabled: false}}
  viewer: {{enabled: false}}
  buildings: {{lod: 1, cityjson: false}}
# the tile's 9 lattice masts (51002_1251, skipped by rule) are a third of its 30 records
release: {{validate_gltf: false, gates: {{max_rejected_share: 0.5}}}}
"""


def test_real_nrw_crop_builds_with_no_crs_and_no_class_scheme_given(realdata, tmp_path):
    """Real Geobasis NRW data through config alone, nothing said about CRS or classes: the LAZ crop
    declares EPSG:25832 only, the official LoD2 tile used as cadastre names
    `urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH*GCG2016`, so the working CRS is EPSG:25832 + DHHN2016; the
    crop's third-party ASPRS codes (6 building) beat its AdV-style name, and the buildings it covers get
    measured heights from its points."""
    nrw = realdata / "nrw"
    (tmp_path / "twin.yaml").write_text(NRW_BUILDINGS.format(raw=nrw))
    res = run_build(load_config(tmp_path / "twin.yaml"), workers=1, log=BuildLog(quiet=True))
    manifest = json.loads((res.release_dir / "manifest.json").read_text())
    (layer,) = [x for x in manifest["layers"] if x["name"] == "buildings"]
    chosen = layer["stats"]["class_schemes"]["2021"]
    assert chosen["scheme"] == "asprs" and "named like an AdV delivery" in chosen["reason"]
    import pyogrio

    info = pyogrio.read_info(res.release_dir / "buildings" / "buildings.gpkg", layer="buildings")
    assert "25832" in info["crs"]
    gdf = pyogrio.read_dataframe(res.release_dir / "buildings" / "buildings.gpkg", layer="buildings")
    measured = gdf[gdf["quality"] == "ok"]
    assert len(measured) >= 8  # the crop covers 10 buildings of the tile
    assert measured["height"].between(2.0, 40.0).all()
    log = (res.release_dir / "build.log.jsonl").read_text()
    assert "class scheme ASPRS" in log
    rejected = (res.release_dir / "buildings" / "rejected.csv").read_text().splitlines()[1:]
    assert len(rejected) == 9 and all("function 51002_1251 is skipped" in r for r in rejected)
