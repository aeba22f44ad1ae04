"""The overlays' region rasters assembled piece by piece (memory: the result and one piece) equal the
one-piece computations they replaced: the gap filling in strips of rows, the surface from per-file
windows as float32, the NDVI mosaicked from per-tile NDVI windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.orchestrate.overlays import max_surface, mosaic_first
from pipeline.stages.overlays.ndvi import ndvi
from pipeline.stages.terrain.rasterise import fill_gaps


def _holes(rng, shape, share) -> np.ndarray:
    a = rng.normal(50.0, 10.0, shape).astype(np.float32)
    a[rng.random(shape) < share] = np.nan
    return a


@pytest.mark.parametrize("max_cells", [1, 2, 3])
@pytest.mark.parametrize("strip_cells", [1, 7, 40, 333])
@pytest.mark.parametrize("share", [0.1, 0.6, 0.97])
def test_fill_gaps_strips_equal_one_pass(max_cells, strip_cells, share):
    rng = np.random.default_rng(int(share * 100) + max_cells)
    a = _holes(rng, (57, 23), share)
    whole = fill_gaps(a, max_cells=max_cells, strip_cells=a.size)
    strips = fill_gaps(a, max_cells=max_cells, strip_cells=strip_cells)
    assert np.array_equal(whole, strips, equal_nan=True)
    assert np.isnan(whole).sum() < np.isnan(a).sum() or share > 0.9  # it did fill something
    assert np.array_equal(
        a, _holes(np.random.default_rng(int(share * 100) + max_cells), (57, 23), share), equal_nan=True
    )  # input untouched


def test_fill_gaps_strips_empty_band():
    """A band of rows without any value wider than the strips' margin stays empty, as in one pass."""
    rng = np.random.default_rng(1)
    a = _holes(rng, (40, 10), 0.2)
    a[10:25] = np.nan
    for cells in (10, 30, 55):
        assert np.array_equal(
            fill_gaps(a, 2, strip_cells=cells), fill_gaps(a, 2, strip_cells=a.size), equal_nan=True
        )


def _windows(rng, shape, n):
    """(row0, col0, value float64, count int64) windows like the per-file rasterisation's, overlapping."""
    out = []
    for _ in range(n):
        h, w = rng.integers(1, shape[0] + 1), rng.integers(1, shape[1] + 1)
        r0, c0 = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        count = rng.integers(0, 3, (h, w)).astype(np.int64)
        value = np.where(count > 0, rng.normal(60.0, 20.0, (h, w)) + 1e-9 * rng.random((h, w)), -np.inf)
        out.append((int(r0), int(c0), value, count))
    return out


def _max_reference(shape, windows) -> np.ndarray:
    """The former assembly: float64 value and int64 count grids, then float32 where counted."""
    value = np.full(shape, -np.inf)
    count = np.zeros(shape, dtype=np.int64)
    for r0, c0, v, c in windows:
        win = (slice(r0, r0 + c.shape[0]), slice(c0, c0 + c.shape[1]))
        value[win] = np.maximum(value[win], v)
        count[win] += c
    return np.where(count > 0, value, np.nan).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 6))
def test_max_surface_equals_float64_assembly(seed, n):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
    windows = _windows(rng, shape, n)
    got = max_surface(shape, iter(windows))
    assert got.dtype == np.float32
    assert np.array_equal(got, _max_reference(shape, windows), equal_nan=True)


def _band_windows(rng, shape, n):
    out = []
    for _ in range(n):
        h, w = rng.integers(1, shape[0] + 1), rng.integers(1, shape[1] + 1)
        r0, c0 = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        data = rng.uniform(0, 255, (2, h, w)).astype(np.float32)
        data[rng.random((2, h, w)) < 0.2] = np.nan
        data[:, rng.random((h, w)) < 0.05] = 0.0  # red + nir = 0: no NDVI although both have data
        out.append((int(r0), int(c0), data))
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 5))
def test_ndvi_of_tiles_equals_ndvi_of_band_mosaic(seed, n):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 25)), int(rng.integers(1, 25)))
    parts = _band_windows(rng, shape, n)
    # the former: red and NIR mosaicked (first tile with both bands wins), then the NDVI of the grid
    bands = np.full((2, *shape), np.nan, dtype=np.float32)
    filled = np.zeros(shape, dtype=bool)
    for r0, c0, data in parts:
        h, w = data.shape[1:]
        win = (slice(r0, r0 + h), slice(c0, c0 + w))
        take = np.all(np.isfinite(data), axis=0) & ~filled[win]
        bands[:, win[0], win[1]][:, take] = data[:, take]
        filled[win] |= take
    reference = ndvi(bands[0], bands[1])
    got = mosaic_first(
        shape, [(r0, c0, ndvi(d[0], d[1]), np.all(np.isfinite(d), axis=0)) for r0, c0, d in parts]
    )
    assert got.dtype == np.float32
    assert np.array_equal(got, reference, equal_nan=True)
