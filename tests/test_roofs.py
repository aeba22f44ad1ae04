"""LoD2 roof shapes fitted to synthetic roof points (pipeline.stages.buildings.roofs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from pipeline.stages.buildings.roofs import RoofParams, fit_roof, footprint_frame, ransac_planes

X0, Y0 = 360500.0, 5721500.0


def rect(length: float, width: float, angle_deg: float) -> shapely.Polygon:
    r = shapely.box(-length / 2, -width / 2, length / 2, width / 2)
    return shapely.affinity.translate(shapely.affinity.rotate(r, angle_deg, origin=(0, 0)), X0, Y0)


def sample(fp: shapely.Polygon, density: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = fp.bounds
    n = int(density * (x1 - x0) * (y1 - y0))
    x, y = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    keep = shapely.contains_xy(fp, x, y)
    return x[keep], y[keep]


def local(x, y, angle_deg):
    a = math.radians(angle_deg)
    dx, dy = x - X0, y - Y0
    return dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)


def roof_points(kind: str, angle: float = 23.0, seed: int = 1, noise: float = 0.05, outliers: float = 0.02):
    rng = np.random.default_rng(seed)
    L, W, base, ridge = 14.0, 9.0, 45.0, 50.0
    fp = rect(L, W, angle)
    x, y = sample(fp, 8.0, rng)
    u, v = local(x, y, angle)
    t = (ridge - base) / (W / 2)  # slope of the gable / hip sides
    if kind == "flat":
        z = np.full(u.shape, 48.0)
    elif kind == "shed":
        z = base + (v + W / 2) * 0.3
    elif kind == "gable":
        z = ridge - t * np.abs(v)
    elif kind == "hip":
        z = ridge - t * np.maximum(np.abs(v), np.abs(u) - (L - W) / 2)
    elif kind == "pyramid":
        z = ridge - t * np.maximum(np.abs(u) * W / L, np.abs(v))
    else:
        raise ValueError(kind)
    z = z + rng.normal(0, noise, z.shape)
    bad = rng.random(z.shape) < outliers
    z[bad] += rng.uniform(1.0, 4.0, bad.sum())  # chimneys, branches
    return x, y, z, fp, (L, W, base, ridge, t)


@pytest.mark.parametrize("kind", ["flat", "shed", "gable", "hip", "pyramid"])
@pytest.mark.parametrize("angle", [0.0, 23.0, 117.0])
def test_standard_shapes_recovered(kind: str, angle: float):
    x, y, z, fp, (_len, W, base, ridge, t) = roof_points(kind, angle)
    fit = fit_roof(x, y, z, fp)
    assert fit.roof_type == kind, fit.scores
    assert not fit.fallback
    assert fit.rmse < 0.08
    assert fit.n_inliers > 0.9 * fit.n_points
    slope = math.degrees(math.atan(t))
    if kind == "flat":
        assert fit.ridge_height == pytest.approx(48.0, abs=0.03)
        assert len(fit.planes) == 1 and fit.planes[0].slope_deg < 0.5
    elif kind == "shed":
        assert fit.eave_height == pytest.approx(base, abs=0.1)
        assert fit.ridge_height == pytest.approx(base + W * 0.3, abs=0.1)
        assert fit.planes[0].slope_deg == pytest.approx(math.degrees(math.atan(0.3)), abs=0.5)
        # downhill towards -v: the azimuth of -v rotated by the angle (clockwise from north)
        want = (math.degrees(math.atan2(math.sin(math.radians(angle)), -math.cos(math.radians(angle))))) % 360
        assert min(abs(fit.planes[0].azimuth_deg - want), 360 - abs(fit.planes[0].azimuth_deg - want)) < 1.0
    else:
        assert fit.ridge_height == pytest.approx(ridge, abs=0.1)
        assert fit.eave_height == pytest.approx(base, abs=0.15)
        n_planes = {"gable": 2, "hip": 4, "pyramid": 4}[kind]
        assert len(fit.planes) == n_planes
        assert fit.planes[0].slope_deg == pytest.approx(slope, abs=1.0)
        assert all(pl.n_points > 0 for pl in fit.planes)


def test_penalised_choice_keeps_simple_shapes():
    """A flat roof with noise never becomes a shed or gable; a gentle shed is not called flat."""
    for seed in range(5):
        x, y, z, fp, _ = roof_points("flat", 40.0, seed=seed, noise=0.08)
        assert fit_roof(x, y, z, fp).roof_type == "flat"
    rng = np.random.default_rng(3)
    fp = rect(12, 8, 10)
    x, y = sample(fp, 8, rng)
    u, v = local(x, y, 10)
    z = 40 + 0.05 * v + rng.normal(0, 0.03, u.shape)  # 3 degrees
    assert fit_roof(x, y, z, fp).roof_type == "shed"


def test_l_shaped_cross_gable_is_multi_plane():
    rng = np.random.default_rng(5)
    a = shapely.box(X0, Y0, X0 + 16, Y0 + 8)
    b = shapely.box(X0, Y0, X0 + 8, Y0 + 16)
    fp = shapely.union(a, b)
    x, y = sample(fp, 8, rng)
    za = 50 - 1.0 * np.abs(y - (Y0 + 4))  # ridge along x
    zb = 50 - 1.0 * np.abs(x - (X0 + 4))  # ridge along y
    ina = shapely.contains_xy(a, x, y)
    inb = shapely.contains_xy(b, x, y)
    z = np.where(ina & inb, np.maximum(za, zb), np.where(ina, za, zb)) + rng.normal(0, 0.04, x.shape)
    fit = fit_roof(x, y, z, fp)
    assert fit.roof_type == "multi", fit.scores
    assert 4 <= len(fit.planes) <= 6 and fit.rmse < 0.1
    assert fit.ridge_height == pytest.approx(50.0, abs=0.15)
    assert sorted(round(p.slope_deg) for p in fit.planes[:4]) == [45, 45, 45, 45]


def test_fallbacks_say_why():
    x, y, z, fp, _ = roof_points("gable")
    few = fit_roof(x[:10], y[:10], z[:10], fp)
    assert few.fallback == "too_few_points" and few.roof_type == ""
    rng = np.random.default_rng(9)
    noisy = fit_roof(x, y, 45 + rng.uniform(0, 8, len(z)), fp)  # a tree, not a roof
    assert noisy.fallback == "too_noisy"


def test_deterministic_and_frame():
    x, y, z, fp, _ = roof_points("hip", 33.0)
    a, b = fit_roof(x, y, z, fp), fit_roof(x, y, z, fp)
    assert a.planes == b.planes and a.scores == b.scores
    f = footprint_frame(fp)
    assert f.half_l == pytest.approx(7.0, abs=1e-3) and f.half_w == pytest.approx(4.5, abs=1e-3)
    assert abs(f.ux * math.cos(math.radians(33)) + f.uy * math.sin(math.radians(33))) == pytest.approx(1.0)
    planes, label = ransac_planes(x - X0, y - Y0, z, RoofParams())
    assert len(planes) >= 4 and (label >= 0).mean() > 0.9
