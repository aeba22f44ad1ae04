"""CRS and heights: the GCG2016 check value, refusal without the grid, other CRSs through config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyproj import CRS, Transformer

from pipeline.config.model import CrsConfig
from pipeline.crs import (
    ECEF,
    GEOGRAPHIC_3D,
    check_area_of_use,
    locate_geoid_grid,
    make_transformer,
    project_frame,
    resolve_source_crs,
    to_enu_exact,
    working_crs,
)
from pipeline.errors import CrsError, GeoidGridMissing


def test_gcg2016_check_value():
    # ../shared/grids/README.md: (362000, 5716000, 60.0) -> lon 7.0083935, lat 51.5781503, h 105.0725
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    t = make_transformer(working_crs(cfg), GEOGRAPHIC_3D, cfg)
    lon, lat, h = t.transform(362000.0, 5716000.0, 60.0)
    assert lon == pytest.approx(7.0083935, abs=1e-7)
    assert lat == pytest.approx(51.5781503, abs=1e-7)
    assert h == pytest.approx(105.0725, abs=1e-3)


def test_vendored_grid_is_found():
    p = locate_geoid_grid(CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"))
    assert p.name == "de_bkg_gcg2016.tif" and p.stat().st_size > 500_000


def test_configured_grid_missing_is_refused(tmp_path):
    with pytest.raises(GeoidGridMissing, match="projsync"):
        locate_geoid_grid(CrsConfig(geoid_grid=tmp_path / "nope.tif"))


def test_refuses_without_grid_in_fresh_process(tmp_path):
    """With no grid anywhere (vendored copy disabled, empty PROJ user dir) PROJ must not fall back to ballpark."""
    code = f"""
import json, pyproj
from pipeline.config.model import CrsConfig
from pipeline import crs
from pipeline.errors import GeoidGridMissing
crs.VENDORED_GRID_DIR = crs.Path({str(tmp_path)!r})
try:
    t = crs.make_transformer(crs.working_crs(CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")), crs.ECEF, CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"))
    print(json.dumps({{"ok": True, "desc": t.description, "z": t.transform(362000, 5716000, 60.0)[2]}}))
except GeoidGridMissing as e:
    print(json.dumps({{"ok": False, "msg": str(e)}}))
"""
    env = {"PROJ_USER_WRITABLE_DIRECTORY": str(tmp_path), "PROJ_NETWORK": "OFF", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] is False, out
    assert "de_bkg_gcg2016.tif" in out["msg"] and "projsync" in out["msg"]


def test_ballpark_would_be_45m_off():
    """Why we refuse: the ballpark operation leaves Z unchanged."""
    ballpark = Transformer.from_crs(
        "EPSG:25832+7837", GEOGRAPHIC_3D, always_xy=True, allow_ballpark=True, only_best=False
    )
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    exact = make_transformer(working_crs(cfg), GEOGRAPHIC_3D, cfg)
    h_exact = exact.transform(362000.0, 5716000.0, 60.0)[2]
    assert 44.0 < h_exact - 60.0 < 46.5
    del ballpark


def test_missing_crs_is_refused():
    with pytest.raises(CrsError, match=r"x\.laz: file has no CRS"):
        resolve_source_crs(None, None, CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"), path="x.laz")


def test_horizontal_only_gets_configured_vertical():
    crs = resolve_source_crs(
        CRS("EPSG:25832"), None, CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"), path="x.laz"
    )
    assert (
        crs.to_authority() is None
        or "7837" in crs.to_wkt()
        or any(s.to_authority() == ("EPSG", "7837") for s in crs.sub_crs_list)
    )


def test_feet_crs_without_vertical_through_config():
    """Autzen: EPSG:2994 international feet, no vertical CRS; heights declared ellipsoidal by config."""
    cfg = CrsConfig(horizontal="EPSG:2994", vertical=None, assume_ellipsoidal_heights=True)
    src = resolve_source_crs(CRS("EPSG:2994"), None, cfg, path="autzen.laz")
    assert not src.is_geographic
    # 2D CRS in feet: pyproj converts XY; Z passes through unchanged (feet!) -> callers must scale Z.
    t = make_transformer(src, GEOGRAPHIC_3D, cfg)
    lon, lat, _ = t.transform(637290.0, 851209.0, 0.0)
    assert -123.2 < lon < -123.0 and 44.0 < lat < 44.2
    assert src.axis_info[0].unit_name in ("foot", "International foot", "international foot") or "foot" in (
        src.axis_info[0].unit_name.lower()
    )


def test_area_of_use_refuses_metres_in_geographic(tmp_path):
    with pytest.raises(CrsError, match="outside the area of use"):
        check_area_of_use(CRS("EPSG:4326"), (362000.0, 5716000.0, 363000.0, 5717000.0), path="bad.las")
    check_area_of_use(CRS("EPSG:25832"), (362000.0, 5716000.0, 363000.0, 5717000.0), path="ok.las")
    with pytest.raises(CrsError, match="outside the area of use"):
        check_area_of_use(CRS("EPSG:25832"), (7.0, 51.5, 7.1, 51.6), path="deg.las")


def test_project_frame_matches_pyproj():
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837", frame_origin=(362500.0, 5716500.0, 0.0))
    frame = project_frame(cfg)
    t = make_transformer(working_crs(cfg), ECEF, cfg)
    rng = np.random.default_rng(0)
    x = 362000 + rng.random(100) * 1000
    y = 5716000 + rng.random(100) * 1000
    z = 40 + rng.random(100) * 60
    enu = to_enu_exact(frame, t, x, y, z)
    # back to ECEF through the tile transform equals pyproj's ECEF
    m = np.array(frame.tile_transform()).reshape(4, 4).T
    ecef = (m[:3, :3] @ enu.T).T + m[:3, 3]
    ex, ey, ez = t.transform(x, y, z)
    assert np.max(np.abs(ecef - np.c_[ex, ey, ez])) < 1e-6
    # ENU is metric and local; the origin is at normal height 0, so "up" ~ normal height (the quasigeoid
    # varies by centimetres over 1 km; earth curvature drops by < 5 cm at 700 m)
    # (ENU is aligned to true north, UTM to grid north: ~1.6 deg apart here, so compare distances)
    d_utm = np.hypot(x - 362500, y - 5716500)
    assert np.max(np.abs(np.hypot(enu[:, 0], enu[:, 1]) - d_utm)) < 0.5
    assert np.max(np.abs(enu[:, 2] - z)) < 0.2


def test_geoid_applied_in_frame():
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837", frame_origin=(362000.0, 5716000.0, 60.0))
    frame = project_frame(cfg)
    t = Transformer.from_crs(GEOGRAPHIC_3D, ECEF, always_xy=True)
    x, y, z = t.transform(frame.lon, frame.lat, 105.0725)
    assert np.allclose(frame.origin_ecef, (x, y, z), atol=2e-3)
    assert Path(locate_geoid_grid(cfg)).exists()


def test_proj_pipeline_cache_gives_identical_transforms(tmp_path, monkeypatch):
    """The on-disk cache of chosen PROJ operations: a second transformer comes from the cached pipeline
    (no operation search) and transforms bit-identically; a corrupt cache file is ignored; "off" disables."""
    import numpy as np
    from pyproj import CRS

    from pipeline.config.model import CrsConfig
    from pipeline.crs import ECEF, make_transformer

    monkeypatch.setenv("RUHRTWIN_PROJ_CACHE", str(tmp_path))
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    src = CRS.from_user_input("EPSG:25832+7837")
    aoi = (6.9, 51.4, 7.1, 51.6)
    x = np.linspace(360_000, 368_000, 7)
    y = np.linspace(5_700_000, 5_708_000, 7)
    z = np.linspace(30.0, 120.0, 7)
    first = make_transformer(src, ECEF, cfg, area_of_interest=aoi)
    assert (tmp_path / "proj-pipelines.json").is_file()
    second = make_transformer(src, ECEF, cfg, area_of_interest=aoi)
    assert "vgridshift" in second.definition and "gcg2016" in second.definition
    for a, b in zip(first.transform(x, y, z), second.transform(x, y, z), strict=True):
        assert np.array_equal(a, b)
    (tmp_path / "proj-pipelines.json").write_text("{not json")
    third = make_transformer(src, ECEF, cfg, area_of_interest=aoi)  # rebuilt, cache rewritten
    assert np.array_equal(third.transform(x, y, z)[2], first.transform(x, y, z)[2])
    monkeypatch.setenv("RUHRTWIN_PROJ_CACHE", "off")
    assert make_transformer(src, ECEF, cfg, area_of_interest=aoi).description == first.description


# ---- any CRS, any vertical datum, grids by name or from the config ---------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _constant_geoid(path: Path, undulation: float) -> Path:
    """A crafted geoid model: constant undulation over lon 2..10, lat 50..56 (ETRS89 GeoTIFF)."""
    import rasterio
    from rasterio.transform import from_origin

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
        ds.write(np.full((60, 80), undulation, dtype=np.float32), 1)
    return path


def test_missing_nap_grid_is_named_with_where_to_get_it():
    from pipeline.crs import missing_grids

    src = CRS("EPSG:28992+5709")
    if not missing_grids(src, ECEF):
        pytest.skip("the NAP geoid grid is installed here")
    cfg = CrsConfig(horizontal="EPSG:28992", vertical="EPSG:5709")
    with pytest.raises(GeoidGridMissing) as e:
        make_transformer(working_crs(cfg), ECEF, cfg)
    msg = str(e.value)
    assert "nl_nsgi_nlgeo2018.tif" in msg
    assert (
        "projsync --file nl_nsgi_nlgeo2018.tif" in msg and "https://cdn.proj.org/nl_nsgi_nlgeo2018.tif" in msg
    )
    assert "crs.geoid_grid" in msg and "NAP height" in msg
    assert e.value.exit_code == 4


def test_configured_grid_under_another_name_equals_proj_choice(tmp_path):
    """`crs.geoid_grid` with any file name replaces the grid of PROJ's geoid step: the GCG2016 grid renamed
    gives exactly PROJ's own transformation, to ECEF and to lon/lat/h (axis order kept east first)."""
    import shutil

    renamed = tmp_path / "my_quasigeoid.tif"
    shutil.copy(locate_geoid_grid(CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")), renamed)
    ref_cfg, cfg = (
        CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"),
        CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837", geoid_grid=renamed),
    )
    x = np.array([362000.0, 370000.0]), np.array([5716000.0, 5720000.0]), np.array([60.0, 100.0])
    for dst in (ECEF, GEOGRAPHIC_3D):
        ref = make_transformer(working_crs(ref_cfg), dst, ref_cfg)
        got = make_transformer(working_crs(cfg), dst, cfg)
        assert str(renamed) in got.definition
        for a, b in zip(ref.transform(*x), got.transform(*x), strict=True):
            assert np.allclose(a, b, rtol=0, atol=1e-9)


def test_crafted_geoid_for_nap_through_config(tmp_path):
    """RD New + NAP with a crafted constant 43 m model given as `crs.geoid_grid`: h = NAP + 43 m."""
    grid = _constant_geoid(tmp_path / "crafted.tif", 43.0)
    cfg = CrsConfig(horizontal="EPSG:28992", vertical="EPSG:5709", geoid_grid=grid)
    t = make_transformer(working_crs(cfg), GEOGRAPHIC_3D, cfg)
    lon, lat, h = t.transform(136000.0, 456000.0, 2.5)
    assert 5.0 < lon < 5.2 and 52.0 < lat < 52.1  # Utrecht, east first
    assert h == pytest.approx(45.5, abs=1e-6)
    # a grid under PROJ's own name is found in its directory too (no substitution needed)
    named = _constant_geoid(tmp_path / "nl_nsgi_nlgeo2018.tif", 43.0)
    cfg2 = CrsConfig(horizontal="EPSG:28992", vertical="EPSG:5709", geoid_grid=named)
    h2 = make_transformer(working_crs(cfg2), GEOGRAPHIC_3D, cfg2).transform(136000.0, 456000.0, 2.5)[2]
    assert h2 == pytest.approx(45.5, abs=0.01)


def test_utm33_dhhn2016_uses_the_vendored_grid():
    cfg = CrsConfig(horizontal="EPSG:25833", vertical="EPSG:7837")
    t = make_transformer(working_crs(cfg), GEOGRAPHIC_3D, cfg)
    lon, lat, h = t.transform(455000.0, 5735000.0, 60.0)  # Cottbus area
    assert 14.2 < lon < 14.5 and 51.7 < lat < 51.8
    assert 40.0 < h - 60.0 < 42.0  # GCG2016 there is ~40.9 m
    assert "gcg2016" in t.definition


def test_ellipsoidal_heights_declarable_for_any_crs():
    """`vertical: ellipsoidal` (= null): no geoid step, no grid; the working CRS is the horizontal one."""
    cfg = CrsConfig(horizontal="EPSG:28992", vertical="ellipsoidal", assume_ellipsoidal_heights=True)
    assert cfg.vertical is None and cfg.compound == "EPSG:28992"
    work = working_crs(cfg)
    assert not work.is_compound
    lon, _lat, h = make_transformer(work, GEOGRAPHIC_3D, cfg).transform(136000.0, 456000.0, 50.0)
    assert np.isfinite(h) and 5.0 < lon < 5.2
    # a horizontal-only file is accepted as ellipsoidal, not given a vertical datum
    assert resolve_source_crs(CRS("EPSG:28992"), None, cfg, path="x.laz").equals(CRS("EPSG:28992"))


def test_unresolved_auto_and_non_vertical_are_refused():
    with pytest.raises(CrsError, match="auto"):
        working_crs(CrsConfig(horizontal="auto"))
    with pytest.raises(CrsError, match="not a vertical CRS"):
        working_crs(CrsConfig(horizontal="EPSG:25832", vertical="EPSG:4326"))


def test_same_crs_compares_meaning():
    from pipeline.crs import same_crs

    assert same_crs(
        CRS("EPSG:25832+7837"), working_crs(CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"))
    )
    assert not same_crs(CRS("EPSG:25833+7837"), CRS("EPSG:25832+7837"))
    assert not same_crs(CRS("EPSG:25832"), CRS("EPSG:25832+7837"))
    assert same_crs(CRS("EPSG:25832"), CRS("EPSG:25832").to_3d())


@pytest.mark.parametrize("name", ["rdnew.example.yaml", "utm33.example.yaml"])
def test_example_configs_name_a_resolvable_working_crs(name):
    from pipeline.config import load_config

    cfg = load_config(REPO / "configs" / name)
    work = working_crs(cfg.crs)
    assert work.is_compound and work.sub_crs_list[0].is_projected
    e, n, _h = cfg.crs.frame_origin
    check_area_of_use(work.sub_crs_list[0], (e, n, e, n), path=name)
    try:
        t = make_transformer(work, GEOGRAPHIC_3D, cfg.crs)
    except GeoidGridMissing as err:  # RD New + NAP where nl_nsgi_nlgeo2018.tif is not installed
        assert "nl_nsgi_nlgeo2018.tif" in str(err)
        return
    lon, lat, _ = t.transform(e, n, 0.0)
    assert 3.0 < lon < 15.0 and 50.0 < lat < 54.0


def test_ellipsoidal_points_in_a_normal_height_project_go_through_the_geoid():
    """Files declared ellipsoidal (`assume_ellipsoidal_heights`) in a DHHN2016 project: the building
    heights task transforms them into the working CRS instead of refusing them as 'not in the working
    CRS' (the old, self-contradictory error): GCG2016 check value 105.0725 m ellipsoidal = 60 m normal."""
    from pipeline.crs import same_crs

    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837", assume_ellipsoidal_heights=True)
    src = CRS("EPSG:25832").to_3d()
    work = working_crs(cfg)
    assert not same_crs(src, work)
    t = make_transformer(src, work, cfg)
    x, y, h = t.transform(362000.0, 5716000.0, 105.0725)
    assert (x, y) == pytest.approx((362000.0, 5716000.0), abs=1e-6) and h == pytest.approx(60.0, abs=1e-3)


@pytest.mark.parametrize("crs", ["local:7.2160,51.4818,95.0", "EPSG:25832"])
def test_point_file_with_an_unknown_z_unit_is_a_crs_error(crs):
    """Also in a local frame (it used to look the unit up before checking it: a KeyError)."""
    from pipeline.sources.pointcloud.crs import resolve_file_crs
    from pipeline.sources.pointcloud.header import PointFileInfo

    info = PointFileInfo(
        Path("scan.e57"), "e57", 1, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None, False, False, False
    )
    with pytest.raises(CrsError, match="unknown Z unit 'yd'"):
        resolve_file_crs(info, crs, CrsConfig(), "yd")
