"""Solar potential (pipeline/stages/solar.py): sun position, the analytic flat roof with a wall, tilted
planes, per-roof aggregation and the fast kernel against the slow independent ray-cast reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pipeline.stages.solar import (
    Irradiation,
    SolarParams,
    assign_planes,
    compose_surface,
    irradiation,
    irradiation_reference,
    plane_gradient,
    roof_statistics,
    sun_position,
    sun_samples,
    surface_from_planes,
    surface_gradient,
)

LAT, LON = 51.45, 7.01  # Essen

# NREL SPA (pvlib 0.16.1 `spa_python`, geometric elevation and azimuth, default delta T), computed once
SPA_REFERENCE = [
    ("2025-03-20T12:00", 51.45, 7.01, 38.4112, 186.6038),
    ("2025-06-21T04:00", 51.45, 7.01, 4.7969, 57.6464),
    ("2025-06-21T11:30", 51.45, 7.01, 61.9772, 178.1382),
    ("2025-12-21T15:00", 51.45, 7.01, 2.1414, 226.7106),
    ("2025-09-01T07:15", 51.5, 6.8, 22.1270, 105.3917),
    ("2030-02-10T09:45", 48.1, 11.6, 23.5593, 152.7123),
    ("2001-07-04T18:00", 40.0, -105.0, 68.0718, 136.7680),
    ("2025-11-05T13:20", -33.9, 151.2, -40.0456, 185.9105),
]


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize(("t", "lat", "lon", "elev", "az"), SPA_REFERENCE)
def test_sun_position_matches_spa(t, lat, lon, elev, az):
    a, e = sun_position(np.array([np.datetime64(t)]), lat, lon, refraction=False)
    assert abs(e[0] - elev) < 0.1
    assert _angle_diff(a[0], az) < 0.1


def test_sun_position_matches_pvlib_over_a_year():
    pvlib = pytest.importorskip("pvlib")
    pd = pytest.importorskip("pandas")
    t = np.arange(np.datetime64("2025-01-01T00:07"), np.datetime64("2026-01-01"), np.timedelta64(53, "m"))
    sp = pvlib.solarposition.spa_python(pd.DatetimeIndex(t, tz="UTC"), LAT, LON)
    az, el = sun_position(t, LAT, LON, refraction=False)
    up = sp["elevation"].to_numpy() > -2
    assert np.abs(el - sp["elevation"].to_numpy())[up].max() < 0.1
    assert _angle_diff(az, sp["azimuth"].to_numpy())[up].max() < 0.1
    _, app = sun_position(t, LAT, LON)
    high = sp["apparent_elevation"].to_numpy() > 2
    assert np.abs(app - sp["apparent_elevation"].to_numpy())[high].max() < 0.1


def test_clear_sky_year_is_plausible_and_binning_keeps_the_integral():
    s1 = sun_samples(SolarParams(bin_deg=1.0), LAT, LON)
    s0 = sun_samples(SolarParams(bin_deg=0.0), LAT, LON)
    # binning merges directions but keeps the energy vectors' sums
    assert len(s1.vec) < len(s0.vec) / 2
    np.testing.assert_allclose(s1.vec.sum(axis=0), s0.vec.sum(axis=0), rtol=1e-9, atol=1e-6)
    # ESRA clear sky at 51.5 N: 1400-1800 kWh/m2 a year on the horizontal (real sky ~1000), diffuse 20-35 %
    assert 1400 < s1.global_wh / 1000 < 1800
    assert 0.2 < s1.diffuse_wh / s1.global_wh < 0.35
    # real-sky factors scale the energy linearly
    half = sun_samples(SolarParams(sky_factors=(0.5,) * 12), LAT, LON)
    assert half.global_wh == pytest.approx(s1.global_wh / 2, rel=1e-12)
    with pytest.raises(ValueError, match="12 monthly"):
        sun_samples(SolarParams(linke_turbidity=(3.0,) * 11), LAT, LON)


# ---- analytic cases -----------------------------------------------------------------------------------------


def _flat_scene(res: float, rows: int, cols: int, roof_z: float = 10.0) -> np.ndarray:
    return np.full((rows, cols), roof_z)


def test_unshaded_flat_roof_equals_horizontal_integral():
    res = 1.0
    dsm = np.zeros((60, 60))
    dsm[20:40, 20:40] = 12.0  # a single flat roof, 12 m above open flat ground
    params = SolarParams()
    s = sun_samples(params, LAT, LON)
    labels = np.where(dsm > 0, 0, -1)
    mask = labels == 0  # every roof cell: the slope is taken from the roof's own cells (edges too)
    irr = irradiation(dsm, res, surface_gradient(dsm, res, labels), s, params, mask=mask)
    roof = irr.global_kwh[mask]
    np.testing.assert_allclose(roof, s.global_wh / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(irr.sky_view[mask], 1.0, atol=1e-9)
    assert np.isnan(irr.global_kwh[~mask]).all()


def _shaded_fraction_expected(
    s, obs_xy, rect, wall_h
) -> float:  # rect = (x0, x1, y0, y1) in metres, wall top wall_h above the observer
    az = np.radians(s.azimuth_deg)
    tan_el = s.tan_elevation
    dx, dy = np.sin(az), np.cos(az)
    x0, x1, y0, y1 = rect
    with np.errstate(divide="ignore", invalid="ignore"):
        tx0, tx1 = (x0 - obs_xy[0]) / dx, (x1 - obs_xy[0]) / dx
        ty0, ty1 = (y0 - obs_xy[1]) / dy, (y1 - obs_xy[1]) / dy
    inside_x = (obs_xy[0] > x0) & (obs_xy[0] < x1)
    inside_y = (obs_xy[1] > y0) & (obs_xy[1] < y1)
    tminx = np.where(dx == 0, np.where(inside_x, -np.inf, np.inf), np.minimum(tx0, tx1))
    tmaxx = np.where(dx == 0, np.where(inside_x, np.inf, -np.inf), np.maximum(tx0, tx1))
    tminy = np.where(dy == 0, np.where(inside_y, -np.inf, np.inf), np.minimum(ty0, ty1))
    tmaxy = np.where(dy == 0, np.where(inside_y, np.inf, -np.inf), np.maximum(ty0, ty1))
    t_in = np.maximum(tminx, tminy)
    t_out = np.minimum(tmaxx, tmaxy)
    blocked = (t_in <= t_out) & (t_out > 0) & (tan_el * np.maximum(t_in, 0) < wall_h)
    ez = s.vec[:, 2]
    return float(ez[blocked].sum() / ez.sum())


@pytest.mark.parametrize(("dist_cells", "wall_h"), [(4, 3.0), (12, 5.0), (30, 8.0), (60, 12.0)])
def test_wall_south_of_a_flat_roof_shades_as_geometry_says(dist_cells, wall_h):
    """A flat roof at 10 m with a wall (1 m thick, 90 m long, `wall_h` above the roof) to the south of the
    observed cell: the kernel's shaded beam fraction equals the fraction of the year's horizontal beam
    whose ray meets the wall (exact slab intersection per time step) within 3 %."""
    res = 0.5
    rows, cols = 200, 260
    dsm = _flat_scene(res, rows, cols)
    rw0, rw1, cw0, cw1 = 120, 122, 40, 220  # wall rows / cols (north face at row 120)
    dsm[rw0:rw1, cw0:cw1] += wall_h
    ro, co = rw0 - 1 - dist_cells, 130
    mask = np.zeros(dsm.shape, dtype=bool)
    mask[ro, co] = True
    params = SolarParams()
    s = sun_samples(params, LAT, LON)
    irr = irradiation(dsm, res, surface_gradient(dsm, res), s, params, mask=mask)
    kernel = 1.0 - irr.beam_kwh[ro, co] * 1000.0 / s.vec[:, 2].sum()
    exact = sun_samples(SolarParams(bin_deg=0.0), LAT, LON)  # every hourly sun position
    obs = ((co + 0.5) * res, -(ro + 0.5) * res)
    rect = (cw0 * res, cw1 * res, -rw1 * res, -rw0 * res)
    expected = _shaded_fraction_expected(exact, obs, rect, wall_h)
    assert 0.02 < expected < 0.9
    assert abs(kernel - expected) <= 0.03 * expected, (kernel, expected)
    # the wall also takes sky: the sky view factor is below 1 and above the infinite wall's
    theta = math.atan(wall_h / ((dist_cells + 0.5) * res))
    assert 0.5 * (1 + math.cos(theta)) - 0.01 < irr.sky_view[ro, co] < 1.0


def _plane_dsm(slope_deg: float, aspect_deg: float, res: float, n: int = 80) -> np.ndarray:
    """A plane falling towards `aspect_deg` (clockwise from north) with `slope_deg`."""
    y, x = np.mgrid[0:n, 0:n]
    east = (x + 0.5) * res
    north = -(y + 0.5) * res
    t = math.tan(math.radians(slope_deg))
    a = math.radians(aspect_deg)
    return 100.0 - t * (east * math.sin(a) + north * math.cos(a))


def test_tilted_planes_at_51n_south_beats_flat_and_sky_view_is_liu_jordan():
    res = 1.0
    params = SolarParams()
    s = sun_samples(params, LAT, LON)
    mask = np.zeros((80, 80), dtype=bool)
    mask[40, 40] = True
    out = {}
    for name, slope, aspect in [
        ("flat", 0.0, 180.0),
        ("south35", 35.0, 180.0),
        ("north35", 35.0, 0.0),
        ("east35", 35.0, 90.0),
        ("west35", 35.0, 270.0),
    ]:
        dsm = _plane_dsm(slope, aspect, res)
        irr = irradiation(dsm, res, surface_gradient(dsm, res), s, params, mask=mask)
        out[name] = irr
        if slope:
            assert irr.slope_deg[40, 40] == pytest.approx(slope, abs=1e-6)
            assert _angle_diff(irr.aspect_deg[40, 40], aspect) < 1e-6
            # an open tilted plane sees (1 + cos slope) / 2 of the sky (Liu and Jordan)
            assert irr.sky_view[40, 40] == pytest.approx((1 + math.cos(math.radians(slope))) / 2, rel=0.01)
    g = {k: float(v.global_kwh[40, 40]) for k, v in out.items()}
    assert g["south35"] > 1.08 * g["flat"]
    assert g["north35"] < g["east35"] < g["south35"]
    assert g["east35"] == pytest.approx(g["west35"], rel=0.03)


# ---- roof planes and aggregation ------------------------------------------------------------------------------


def _gable_scene(res: float = 1.0):
    """Two gable houses (ridges east-west) and a 30 m tower south of the first one, on flat ground."""
    n = 64
    tr = Affine(res, 0, 0.0, 0, -res, n * res)
    y, x = np.mgrid[0:n, 0:n]
    north = n * res - (y + 0.5) * res
    dsm = np.zeros((n, n))
    labels = np.full((n, n), -1, dtype=np.int32)
    planes = []  # (building, a, b, c)
    for b, (c0, c1, r0, r1) in enumerate([(10, 26, 12, 24), (36, 54, 34, 46)]):
        ridge_n = n * res - (r0 + r1) / 2 * res
        pitch = math.tan(math.radians(30))
        inside = (x >= c0) & (x < c1) & (y >= r0) & (y < r1)
        labels[inside] = b
        z = 8.0 + (6.0 - pitch * np.abs(north - ridge_n))
        dsm[inside] = z[inside]
        planes.append((b, 0.0, pitch, 14.0 - pitch * ridge_n))  # south half, falls towards the south
        planes.append((b, 0.0, -pitch, 14.0 + pitch * ridge_n))  # north half
    dsm[28:34, 14:20] = 30.0  # tower south of house 0
    return dsm, labels, tr, planes


def test_planes_assign_gradient_and_per_surface_statistics():
    res = 1.0
    dsm, labels, tr, planes = _gable_scene(res)
    pb = np.array([p[0] for p in planes])
    pa, pbb, pc = (np.array([p[i] for p in planes]) for i in (1, 2, 3))
    idx = assign_planes(labels, dsm, tr, pb, pa, pbb, pc)
    assert (idx[labels >= 0] >= 0).all() and (idx[labels < 0] == -1).all()
    smooth = surface_from_planes(dsm, tr, idx, pa, pbb, pc)
    np.testing.assert_allclose(smooth[labels >= 0], dsm[labels >= 0], atol=1e-9)
    grad = plane_gradient(idx, pa, pbb, surface_gradient(dsm, res))
    params = SolarParams(day_step=7)
    s = sun_samples(params, LAT, LON)
    irr = irradiation(dsm, res, grad, s, params, mask=labels >= 0)
    # every roof cell has its plane's exact slope, including the eaves and ridge cells
    np.testing.assert_allclose(irr.slope_deg[labels >= 0], 30.0, atol=1e-4)
    per_plane = roof_statistics(idx, irr, res, len(planes))
    per_bldg = roof_statistics(labels, irr, res, 2)
    # per surface: the south-facing planes (aspect 180) get far more than the north-facing ones
    south = [k for k in range(len(planes)) if abs(per_plane["aspect_deg"][k] - 180) < 1]
    north = [
        k for k in range(len(planes)) if per_plane["aspect_deg"][k] < 1 or per_plane["aspect_deg"][k] > 359
    ]
    assert len(south) == 2 and len(north) == 2
    for ks, kn in zip(sorted(south), sorted(north), strict=True):
        assert per_plane["mean_kwh_m2"][ks] > 1.3 * per_plane["mean_kwh_m2"][kn]
    # buildings: totals are the sums of their surfaces; the mean is total / inclined area
    for b in range(2):
        ks = [k for k in range(len(planes)) if planes[k][0] == b]
        assert per_bldg["total_kwh"][b] == pytest.approx(per_plane["total_kwh"][ks].sum(), rel=1e-9)
        assert per_bldg["area_m2"][b] == pytest.approx(
            per_bldg["cells"][b] * res * res / math.cos(math.radians(30)), rel=1e-6
        )
        assert per_bldg["mean_kwh_m2"][b] == pytest.approx(per_bldg["total_kwh"][b] / per_bldg["area_m2"][b])
    # the tower shades house 0's south face: it gets less than house 1's south face
    s0 = next(k for k in south if planes[k][0] == 0)
    s1 = next(k for k in south if planes[k][0] == 1)
    assert per_plane["mean_kwh_m2"][s0] < 0.95 * per_plane["mean_kwh_m2"][s1]


@pytest.mark.slow
def test_kernel_matches_slow_reference_per_roof():
    """Per-roof means of the fast kernel (horizon sectors, max-pooled far field, binned sun) within 10 %
    of the slow reference (marching along every sun direction, numerical sky dome), and per cell close."""
    res = 1.0
    dsm, labels, _tr, _planes = _gable_scene(res)
    params = SolarParams(day_step=14, bin_deg=3.0, fine_cells=8, max_distance_m=80.0)
    s = sun_samples(params, LAT, LON)
    grad = surface_gradient(dsm, res)
    mask = labels >= 0
    # a sample of roof cells: every other cell of both houses
    rows, cols = np.nonzero(mask)
    pick = np.arange(0, rows.size, 2)
    rows, cols = rows[pick], cols[pick]
    irr = irradiation(dsm, res, grad, s, params, mask=mask)
    ref = irradiation_reference(dsm, res, grad, s, params, (rows, cols), step=0.2, sky_az=36, sky_el=9)
    for b in range(2):
        on = labels[rows, cols] == b
        fast = irr.global_kwh[rows, cols][on].mean()
        slow = ref["global_kwh"][on].mean()
        assert abs(fast - slow) <= 0.10 * slow, (b, fast, slow)
        fb, sb = irr.beam_kwh[rows, cols][on].mean(), ref["beam_kwh"][on].mean()
        assert abs(fb - sb) <= 0.10 * sb, (b, fb, sb)
    # the scene has real shade: the reference's beam varies over house 0 by more than the tolerance
    on0 = labels[rows, cols] == 0
    assert np.ptp(ref["beam_kwh"][on0]) > 0.2 * ref["beam_kwh"][on0].mean()
    # and the sky view factors agree cell by cell (72 horizon sectors against a 36 x 9 sky dome)
    dsv = np.abs(irr.sky_view[rows, cols] - ref["sky_view"])
    assert dsv.mean() < 0.02 and np.percentile(dsv, 95) < 0.04 and dsv.max() < 0.1


def test_roof_statistics_weights_by_inclined_area_and_handles_empty_labels():
    g = np.array([[1000.0, 500.0], [np.nan, 800.0]], dtype=np.float32)
    slope = np.array([[0.0, 60.0], [0.0, 0.0]], dtype=np.float32)
    irr = Irradiation(
        global_kwh=g,
        beam_kwh=g,
        diffuse_kwh=g * 0,
        reflected_kwh=g * 0,
        sky_view=np.ones_like(g),
        slope_deg=slope,
        aspect_deg=np.array([[np.nan, 90.0], [np.nan, np.nan]], dtype=np.float32),
    )
    labels = np.array([[0, 0], [0, 1]])
    st = roof_statistics(labels, irr, 1.0, 3)
    # cell areas 1 and 2 (60 deg): mean = (1000 + 2 * 500) / 3
    assert st["cells"].tolist() == [2, 1, 0]
    assert st["area_m2"][0] == pytest.approx(3.0)
    assert st["mean_kwh_m2"][0] == pytest.approx(2000.0 / 3.0)
    assert st["total_kwh"][0] == pytest.approx(2000.0)
    assert st["aspect_deg"][0] == pytest.approx(90.0)
    assert np.isnan(st["mean_kwh_m2"][2]) and st["total_kwh"][2] == 0


def test_compose_surface_fills_gaps_from_buildings_then_terrain():
    pts = np.array([[np.nan, 5.0], [np.nan, np.nan]])
    lab = np.array([[0, 0], [-1, -1]])
    terrain = np.array([[1.0, 1.0], [1.0, np.nan]])
    dsm, counts = compose_surface(pts, terrain, lab, np.array([9.0]))
    assert dsm[0, 0] == 9.0 and dsm[0, 1] == 5.0 and dsm[1, 0] == 1.0 and np.isnan(dsm[1, 1])
    assert counts == {"points": 1, "buildings": 1, "terrain": 1}


def test_bad_inputs_are_refused():
    s = sun_samples(SolarParams(day_step=30), LAT, LON)
    z = np.zeros((5, 5))
    with pytest.raises(ValueError, match="shape"):
        irradiation(z, 1.0, (np.zeros((4, 5)), np.zeros((5, 5))), s, SolarParams())
    with pytest.raises(ValueError, match="divide a day"):
        sun_samples(SolarParams(step_minutes=7), LAT, LON)
    with pytest.raises(ValueError, match="plane index"):
        plane_gradient(np.array([[3]]), np.zeros(2), np.zeros(2), (z[:1, :1], z[:1, :1]))


# ---- the layer on a crafted district ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solar_release(tmp_path_factory):
    from tests import _overlay_district as district

    root = tmp_path_factory.mktemp("solar")
    cfg = district.make_district(root)
    return root, cfg, district


def _run_layer(root, cfg, district, name: str, **overrides):
    from pipeline.orchestrate.solar import build_solar_layers

    ctx = district.context(cfg, root / name, **{"layers.solar.enabled": True, **overrides})
    return ctx, build_solar_layers(ctx, [])


def test_layer_writes_cog_and_building_attributes(solar_release):
    import geopandas as gpd
    import rasterio

    root, cfg, district = solar_release
    ctx, (res,) = _run_layer(root, cfg, district, "a")
    assert res.name == "solar" and res.kind == "overlay"
    assert res.files == ["solar/solar.gpkg", "solar/solar.qml", "solar/solar_irradiation.tif"]
    with rasterio.open(ctx.release_dir / "solar" / "solar_irradiation.tif") as ds:
        assert ds.count == 2 and ds.dtypes == ("float32", "float32")
        assert ds.descriptions == ("global_kwh_m2", "sky_view")
        assert ds.profile["tiled"] and ds.crs.to_epsg() == 25832
        g = ds.read(1)
    gdf = gpd.read_file(ctx.release_dir / "solar" / "solar.gpkg", layer="solar_buildings")
    cadastre = [b for b in district.BUILDINGS if b.registered]
    assert sorted(gdf["oid"]) == sorted(b.oid for b in cadastre)
    unshaded = res.stats["unshaded_horizontal_kwh_m2"]
    row = gdf.set_index("oid").loc["DENW01"]  # a 10 m flat box, nothing higher nearby
    assert row["solar_mean_kwh_m2"] == pytest.approx(unshaded, rel=0.03)
    assert row["solar_slope_deg"] < 4.0
    assert row["solar_roof_area_m2"] == pytest.approx(400.0, rel=0.05)
    assert row["solar_total_mwh"] == pytest.approx(
        row["solar_mean_kwh_m2"] * row["solar_roof_area_m2"] / 1000, rel=1e-3
    )
    # only roof cells are computed by default; all cells with cells: all
    assert np.isfinite(g).sum() == res.stats["cells_computed"] < g.size / 4
    assert res.stats["buildings_with_value"] == len(cadastre)  # a demolished one too: its footprint cells
    # byte-identical rebuild
    ctx2, _ = _run_layer(root, cfg, district, "b")
    for f in res.files:
        assert (ctx.release_dir / f).read_bytes() == (ctx2.release_dir / f).read_bytes(), f


def test_layer_is_off_by_default(solar_release):
    from pipeline.orchestrate.solar import build_solar_layers

    root, cfg, district = solar_release
    ctx = district.context(cfg, root / "off")
    assert build_solar_layers(ctx, []) == []


# ---- official LoD2 roof planes ------------------------------------------------------------------------------


def test_planes_from_lod2_polygons_and_rasterised_by_height():
    import shapely

    from pipeline.stages.solar import planes_from_polygons, rasterise_planes

    t = math.tan(math.radians(30))
    # gable roof over x 0..10, y 0..8, ridge at y = 4, z = 10 at the ridge; a wall; a polygon without Z
    south = shapely.Polygon([(0, 0, 10 - 4 * t), (10, 0, 10 - 4 * t), (10, 4, 10), (0, 4, 10)])
    north = shapely.Polygon([(0, 4, 10), (10, 4, 10), (10, 8, 10 - 4 * t), (0, 8, 10 - 4 * t)])
    wall = shapely.Polygon([(0, 0, 0), (10, 0, 0), (10, 0, 5), (0, 0, 5)])
    flat2d = shapely.box(20, 20, 30, 30)
    a, b, c = planes_from_polygons(np.array([south, north, wall, flat2d], dtype=object))
    np.testing.assert_allclose([a[0], b[0], c[0]], [0.0, t, 10 - 4 * t], atol=1e-9)
    np.testing.assert_allclose([a[1], b[1], c[1]], [0.0, -t, 10 + 4 * t], atol=1e-9)
    assert np.isnan(a[2]) and np.isnan(a[3])
    # two overlapping roofs in plan: the higher one owns the shared cells
    low = shapely.box(0, 0, 6, 6)
    high = shapely.box(4, 4, 10, 10)
    tr = Affine(1.0, 0, 0.0, 0, -1.0, 10.0)
    idx = rasterise_planes(np.array([high, low], dtype=object), np.array([12.0, 5.0]), tr, (10, 10))
    assert idx[5, 5] == 0  # cell centre (5.5, 4.5): in both, high wins
    assert idx[8, 1] == 1 and idx[1, 8] == 0 and idx[0, 0] == -1


REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / "nrw"


@pytest.mark.realdata
@pytest.mark.slow
def test_real_nrw_crop_per_lod2_roof_surface(tmp_path):
    """The 300 m Geobasis NRW crop (16 pts/m2) with the official LoD2 tile: per LoD2 roof surface the
    slope is the plane's, south faces get more than north faces, all values in the clear-sky range."""
    import geopandas as gpd

    crop = REALDATA / "3dm_32_360_5721_crop300_360650_5721600.laz"
    lod2 = REALDATA / "LoD2_32_360_5721_1_NW.gml"
    if not crop.is_file() or not lod2.is_file():
        pytest.skip("../shared/realdata/nrw is absent")
    from pipeline.orchestrate.solar import build_solar_layers
    from tests import _overlay_district as district

    cfg = tmp_path / "nrw.yaml"
    cfg.write_text(
        "name: nrw\n"
        f"paths: {{raw: {REALDATA.resolve()}, out: {tmp_path / 'out'}, cache: {tmp_path / 'cache'}}}\n"
        # the NRW tile declares EPSG:25832 only: its DHHN2016 heights are configured
        "crs: {vertical: 'EPSG:7837', frame_origin: [360800.0, 5721750.0, 0.0]}\n"
        "runtime: {progress: false}\n"
        "sources:\n"
        f"  aerial: [{{epoch: '2021', points: '{crop.name}', class_scheme: asprs}}]\n"
        f"  reference_citygml: '{lod2.name}'\n"
        "layers: {solar: {enabled: true, day_step: 7}}\n"
    )
    ctx = district.context(cfg, tmp_path / "release")
    (res,) = build_solar_layers(ctx, [])
    surf = gpd.read_file(ctx.release_dir / "solar" / "solar.gpkg", layer="solar_roof_surfaces")
    seen = surf[surf["solar_cells"] >= 4]
    assert len(seen) >= 20, len(seen)  # the ten buildings' roof faces inside the crop
    assert res.stats["roof_surfaces_with_value"] == int(np.isfinite(surf["solar_mean_kwh_m2"]).sum())
    unshaded = res.stats["unshaded_horizontal_kwh_m2"]
    v = seen["solar_mean_kwh_m2"].to_numpy()
    assert (v > 150).all() and (v < 1.35 * unshaded).all()  # clear sky: 45 deg south = 1.31 x flat
    pitched = seen[seen["solar_slope_deg"] > 20]
    south = pitched[(pitched["solar_aspect_deg"] > 135) & (pitched["solar_aspect_deg"] < 225)]
    north = pitched[(pitched["solar_aspect_deg"] < 45) | (pitched["solar_aspect_deg"] > 315)]
    assert len(south) and len(north)
    assert south["solar_mean_kwh_m2"].median() > 1.3 * north["solar_mean_kwh_m2"].median()
    # flat LoD2 faces (< 5 deg) that are not shaded much are close to the horizontal integral
    flat = seen[(seen["solar_slope_deg"] < 5) & (seen["solar_sky_view"] > 0.95)]
    if len(flat):
        assert flat["solar_mean_kwh_m2"].max() <= unshaded * 1.01


def test_config_refuses_bad_solar_settings(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    for bad, key in [
        ("step_minutes: 7", "layers.solar.step_minutes"),
        ("linke_turbidity: [3, 3]", "layers.solar.linke_turbidity"),
        ("sky_factors: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1]", "layers.solar.sky_factors"),
        ("cells: some", "layers.solar.cells"),
    ]:
        p = tmp_path / "c.yaml"
        p.write_text(f"name: x\nlayers:\n  solar:\n    {bad}\n")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(p)
    p.write_text("name: x\nlayers:\n  solar:\n    enabled: true\n    step_minutes: 15\n")
    assert load_config(p).layers.solar.step_minutes == 15
