"""Building heights: numba kernel vs the shapely/numpy reference, percentiles vs numpy, class schemes,
tile merging, fallbacks and quality flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.stages.buildings._kernels import grouped_percentiles
from pipeline.stages.buildings.attributes import AttributeParams, finalize_heights
from pipeline.stages.buildings.heights import (
    HeightParams,
    collect_samples,
    collect_samples_reference,
    footprint_heights,
    footprint_zones,
    merge_samples,
    summarise,
)


def _scene(n: int = 60_000, seed: int = 0, scheme: str = "adv"):
    """Flat-roofed footprints (one with a hole, one multi-part) over flat ground at 100 m."""
    rng = np.random.default_rng(seed)
    geoms = np.array(
        [
            shapely.box(10, 10, 30, 25),
            shapely.Polygon(
                [(50, 50), (80, 50), (80, 80), (50, 80)], [[(60, 60), (70, 60), (70, 70), (60, 70)]]
            ),
            shapely.MultiPolygon([shapely.box(10, 60, 20, 70), shapely.box(25, 60, 35, 75)]),
            shapely.box(85, 5, 95, 15),
        ],
        dtype=object,
    )
    roofs = np.array([112.0, 118.5, 106.0, 104.0])
    x = rng.uniform(0, 100, n)
    y = rng.uniform(0, 100, n)
    which = np.full(n, -1)
    for k, g in enumerate(geoms):
        which[shapely.contains_xy(g, x, y)] = k
    on = which >= 0
    z = np.where(on, roofs[np.maximum(which, 0)], 100.0) + rng.normal(0, 0.02, n)
    roof_cls, ground_cls = (20, 2) if scheme == "adv" else (6, 2)
    cls = np.where(on, roof_cls, ground_cls).astype(np.uint8)
    if scheme == "asprs":  # some vegetation over the ground (must be ignored)
        veg = (~on) & (rng.random(n) < 0.1)
        cls[veg] = 5
        z[veg] += 6.0
    ret = np.ones(n, np.uint8)
    # second returns on roofs (e.g. through a skylight) must not count
    second = on & (rng.random(n) < 0.05)
    ret[second] = 2
    z[second] -= 5.0
    return geoms, roofs, dict(x=x, y=y, z=z, classification=cls, return_number=ret)


def test_kernel_equals_reference():
    geoms, _roofs, pts = _scene()
    params = HeightParams()
    zones = footprint_zones(geoms, params)
    a = collect_samples(pts, zones, params)
    b = collect_samples_reference(pts, zones, params)
    assert np.array_equal(a.roof_ptr, b.roof_ptr) and np.array_equal(a.ground_ptr, b.ground_ptr)
    for k in range(len(geoms)):
        s = slice(a.roof_ptr[k], a.roof_ptr[k + 1])
        assert np.array_equal(np.sort(a.roof_z[s]), np.sort(b.roof_z[s]))
        g = slice(a.ground_ptr[k], a.ground_ptr[k + 1])
        assert np.array_equal(np.sort(a.ground_z[g]), np.sort(b.ground_z[g]))
    assert a.roof_ptr[-1] > 1000 and a.ground_ptr[-1] > 1000


def test_grouped_percentiles_match_numpy():
    rng = np.random.default_rng(3)
    lens = rng.integers(0, 40, 200)
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    vals = rng.normal(50, 10, ptr[-1])
    qs = np.array([10.0, 50.0, 75.0, 99.0])
    got = grouped_percentiles(ptr, vals, qs)
    for g in range(len(lens)):
        seg = vals[ptr[g] : ptr[g + 1]]
        if seg.size == 0:
            assert np.isnan(got[g]).all()
        else:
            assert np.allclose(got[g], np.percentile(seg, qs))


@pytest.mark.parametrize("scheme", ["adv", "asprs"])
def test_flat_roofs_and_ground(scheme: str):
    geoms, roofs, pts = _scene(scheme=scheme)
    params = HeightParams(roof_classes=(20, 1) if scheme == "adv" else (6, 1))
    df = footprint_heights(geoms, pts, params)
    assert np.allclose(df["roof_sample"], roofs, atol=0.05)
    assert np.allclose(df["ground_sample"], 100.0, atol=0.05)  # vegetation (ASPRS 5) and 2nd returns ignored
    assert (df["n_points"] > 100).all()
    # density: about 6 points / m2 over the shrunk roof area
    assert np.allclose(df["density"], 6.0, rtol=0.15)
    assert list(df.columns[:5]) == ["roof_sample", "p50", "p70", "p90", "p99"]


def test_merging_tiles_equals_one_pass():
    geoms, _roofs, pts = _scene()
    params = HeightParams()
    zones = footprint_zones(geoms, params)
    whole = summarise(collect_samples(pts, zones, params), zones.roof_area, params)
    left = pts["x"] < 47.0  # splits footprints 0 and 2 and the rings
    parts, ids = [], []
    for m in (left, ~left):
        sub = {k: v[m] for k, v in pts.items()}
        parts.append(collect_samples(sub, zones, params))
        ids.append(np.arange(len(geoms)))
    merged = summarise(merge_samples(ids, parts, len(geoms)), zones.roof_area, params)
    for k in whole:
        assert np.allclose(whole[k], merged[k], equal_nan=True), k


def test_shrink_excludes_wall_points():
    # a wall of points at the footprint edge 10 m lower must not pull the roof percentile down
    g = np.array([shapely.box(0, 0, 10, 10)], dtype=object)
    xs, ys = np.meshgrid(np.arange(0.1, 10, 0.2), np.arange(0.1, 10, 0.2))
    x, y = xs.ravel(), ys.ravel()
    edge = (x < 0.4) | (x > 9.6) | (y < 0.4) | (y > 9.6)
    z = np.where(edge, 40.0, 50.0)
    pts = dict(x=x, y=y, z=z, classification=np.full(x.size, 20, np.uint8))
    df = footprint_heights(g, pts, HeightParams(roof_percentile=10.0))
    assert df["roof_sample"].iloc[0] == pytest.approx(50.0)


def test_fallbacks_and_quality_flags():
    stats = pd.DataFrame(
        {
            "roof_sample": [110.0, np.nan, np.nan, 108.0, 101.2],
            "n_points": [50, 0, 2, 40, 30],
            "ground_sample": [100.0, np.nan, 99.0, np.nan, 100.8],
            "n_ground": [20, 0, 10, 0, 12],
        }
    )
    floors = np.array([np.nan, 2.0, np.nan, np.nan, np.nan])
    ndvi = np.array([0.6, 0.0, 0.0, 0.1, 0.0])
    dgm = np.array([np.nan, 98.0, np.nan, 97.5, np.nan])
    out = finalize_heights(stats, floors, ndvi, dgm, AttributeParams(min_points=5, default_height_m=9.0))
    assert list(out["quality"]) == ["vegetation_suspected", "fallback_floors", "fallback_default", "ok", "ok"]
    assert list(out["base_source"]) == ["ring", "dgm", "ring", "dgm", "ring"]
    assert np.allclose(out["height"], [10.0, 6.0, 9.0, 10.5, 1.0])
    assert np.allclose(out["roof_height"], out["base_height"] + out["height"])
    assert "too_few_points" in out["flags"][1] and "clamped_height" in out["flags"][4]
    assert list(out["floors_estimate"]) == [3, 2, 3, 4, 1]
    assert list(out["floors_is_estimate"]) == [True, False, True, True, True]
    # nothing known about the base: the median of known bases, flagged
    out2 = finalize_heights(stats.iloc[[1]], floors[[1]], None, None, AttributeParams())
    assert out2["base_source"].iloc[0] == "guessed" and "base_guessed" in out2["flags"].iloc[0]
