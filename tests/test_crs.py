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
    cfg = CrsConfig()
    t = make_transformer(working_crs(cfg), GEOGRAPHIC_3D, cfg)
    lon, lat, h = t.transform(362000.0, 5716000.0, 60.0)
    assert lon == pytest.approx(7.0083935, abs=1e-7)
    assert lat == pytest.approx(51.5781503, abs=1e-7)
    assert h == pytest.approx(105.0725, abs=1e-3)


def test_vendored_grid_is_found():
    p = locate_geoid_grid(CrsConfig())
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
    t = crs.make_transformer(crs.working_crs(CrsConfig()), crs.ECEF, CrsConfig())
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
    cfg = CrsConfig()
    exact = make_transformer(working_crs(cfg), GEOGRAPHIC_3D, cfg)
    h_exact = exact.transform(362000.0, 5716000.0, 60.0)[2]
    assert 44.0 < h_exact - 60.0 < 46.5
    del ballpark


def test_missing_crs_is_refused():
    with pytest.raises(CrsError, match=r"x\.laz: file has no CRS"):
        resolve_source_crs(None, None, CrsConfig(), path="x.laz")


def test_horizontal_only_gets_configured_vertical():
    crs = resolve_source_crs(CRS("EPSG:25832"), None, CrsConfig(), path="x.laz")
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
    cfg = CrsConfig(frame_origin=(362500.0, 5716500.0, 0.0))
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
    cfg = CrsConfig(frame_origin=(362000.0, 5716000.0, 60.0))
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
    cfg = CrsConfig()
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


def test_plain_crs_config_mirrors_the_config_model():
    """`PlainCrsConfig` (standalone `twin points`, no pydantic) has CrsConfig's fields and defaults, and
    its JSON is read back by the model (the workers do that when they must build a lattice)."""
    import dataclasses

    from pipeline.config.model import CrsConfig
    from pipeline.crs import PlainCrsConfig

    plain = {f.name: f.default for f in dataclasses.fields(PlainCrsConfig)}
    model = {name: f.default for name, f in CrsConfig.model_fields.items()}
    assert plain == model
    p = PlainCrsConfig(vertical=None, assume_ellipsoidal_heights=True, geoid_grid=Path("/x/g.tif"))
    m = CrsConfig.model_validate_json(p.model_dump_json())
    assert m == CrsConfig(vertical=None, assume_ellipsoidal_heights=True, geoid_grid=Path("/x/g.tif"))
    assert (
        p.compound == m.compound
        and p.model_copy(update={"vertical": "EPSG:7837"}).compound == "EPSG:25832+7837"
    )
    assert hash(p) == hash(
        PlainCrsConfig(vertical=None, assume_ellipsoidal_heights=True, geoid_grid=Path("/x/g.tif"))
    )


def test_twin_points_main_process_imports_no_config_model(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path;"
        "from pipeline.orchestrate.points import plan_tiling, PointTilingOptions;"
        "from pipeline.sources.pointcloud.synthetic import synthetic_points, write_las;"
        f"p = write_las(Path({str(tmp_path)!r}) / 'a.laz', synthetic_points(1000, size=10.0), point_format=3);"
        "plan_tiling([p], PointTilingOptions(crs='EPSG:25832+7837'));"
        "print('pydantic' in sys.modules, 'yaml' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "False"]
