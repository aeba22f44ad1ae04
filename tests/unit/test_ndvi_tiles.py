"""NDVI per orthophoto tile (`pipeline.sources.rasters.read_tile_cells`): a task warps only the cells its
tile touches, in strips of rows; the values do not depend on the strip height nor on the region's size,
and equal the area average of the tile's pixels (a numpy reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling

from pipeline.sources.rasters import Grid, read_tile_cells, scan_rasters, tile_cells

CRS = "EPSG:25832"
X0, Y0 = 362000.0, 5716000.0
PX = 0.1  # orthophoto pixel (m)
N = 200  # pixels per tile side (20 m tiles)


def _tile(path: Path, x0: float, y0: float, rng) -> np.ndarray:
    data = rng.integers(0, 256, (4, N, N), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=N,
        height=N,
        count=4,
        dtype="uint8",
        crs=CRS,
        transform=Affine(PX, 0, x0, 0, -PX, y0 + N * PX),
        tiled=True,
        blockxsize=64,
        blockysize=64,
    ) as ds:
        ds.write(data)
    return data


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    rng = np.random.default_rng(3)
    d = tmp_path_factory.mktemp("dop")
    side = N * PX
    out = {}
    for i, j in [(0, 0), (1, 0), (0, 1)]:
        p = d / f"dop_{i}_{j}.tif"
        out[(i, j)] = (p, _tile(p, X0 + i * side, Y0 + j * side, rng))
    infos = scan_rasters(sorted(p for p, _ in out.values()), working_crs=CRS, min_bands=3)
    return out, {Path(i.path).name: i for i in infos}


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    b, h, w = a.shape
    return a.reshape(b, h // k, k, w // k, k).astype(np.float64).mean(axis=(2, 4)).astype(np.float32)


@pytest.mark.parametrize("region_m", [20.0, 40.0, 160.0])
@pytest.mark.parametrize("strip_pixels", [2**30, 5000, 1])
def test_tile_cells_equal_the_area_average(tiles, region_m, strip_pixels):
    """Whatever the region around the tile and the strip height: the tile's own cells, each the mean of
    the 5 x 5 pixels under it (no cell of a neighbouring tile filled from its border)."""
    files, infos = tiles
    path, data = files[(1, 0)]
    info = infos[path.name]
    grid = Grid.from_bounds((X0, Y0, X0 + region_m * 2, Y0 + region_m), 0.5, CRS)
    r0, c0, got = read_tile_cells(
        info, grid, bands=[1, 4], resampling=Resampling.average, max_source_pixels=strip_pixels
    )
    t = grid.transform
    assert (c0, r0) == (round((X0 + N * PX - t.c) / 0.5), round((t.f - (Y0 + N * PX)) / 0.5))
    want = _block_mean(data[[0, 3]], 5)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_mosaic_of_tiles_equals_one_piece(tiles):
    """The per-tile windows mosaicked (as `overlays.ndvi_grid` does) give the area average of the whole
    orthophoto, NaN where no tile lies: the same as a one-piece computation on the region's mosaic."""
    files, infos = tiles
    grid = Grid.from_bounds((X0 - 1, Y0 - 1, X0 + 41, Y0 + 41), 0.5, CRS)
    mosaic = np.full((2, grid.height, grid.width), np.nan, dtype=np.float32)
    for name in sorted(infos):
        r0, c0, d = read_tile_cells(
            infos[name], grid, bands=[1, 4], resampling=Resampling.average, max_source_pixels=3000
        )
        win = mosaic[:, r0 : r0 + d.shape[1], c0 : c0 + d.shape[2]]
        take = np.isfinite(d) & ~np.isfinite(win)
        win[take] = d[take]
    # one piece: the region's pixels in one array (no data outside the tiles), averaged per cell
    full = np.full((2, 2 * N, 2 * N), np.nan)
    for (i, j), (_p, data) in files.items():
        full[:, (1 - j) * N : (2 - j) * N, i * N : (i + 1) * N] = data[[0, 3]]
    want = full.reshape(2, 2 * N // 5, 5, 2 * N // 5, 5).mean(axis=(2, 4)).astype(np.float32)
    inner = mosaic[:, 2:-2, 2:-2]
    np.testing.assert_array_equal(inner, want)
    assert np.isnan(mosaic[:, :2]).all() and np.isnan(mosaic[:, :, :2]).all()
    assert np.isfinite(inner).sum() == 2 * 3 * (N // 5) ** 2  # three tiles, the fourth quarter empty


def _same_window(a: tuple, b: tuple) -> None:
    assert a[:2] == b[:2]
    for x, y in zip(a[2:], b[2:], strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()  # bit for bit, NaN included


@pytest.mark.parametrize("strip_pixels", [2**30, 3000, 1])
def test_one_read_for_all_grids_equals_the_warp_per_grid(tiles, strip_pixels):
    """`_ndvi_windows` (one read of the tile for every grid, exact block averages where the cells are
    whole blocks of pixels) gives, bit for bit, the windows of `_ndvi_window` (GDAL's average warp, one
    grid at a time) on aligned grids of several cell sizes, a grid inside the tile, and grids the fast
    path must leave to the warp (cells of 3 pixels that do not tile the tile, cell edges between pixels)."""
    from pipeline.orchestrate.overlays import _ndvi_window, _ndvi_windows, aligned_blocks

    files, infos = tiles
    info = infos[files[(1, 0)][0].name]
    region = (X0 - 1, Y0 - 1, X0 + 41, Y0 + 41)
    grids = [
        Grid.from_bounds(region, 0.5, CRS),
        Grid.from_bounds(region, 1.0, CRS),
        Grid.from_bounds(region, 2.0, CRS),
        Grid.from_bounds((X0 + 23.0, Y0 + 3.0, X0 + 31.0, Y0 + 17.0), 0.5, CRS),  # inside the tile
        Grid.from_bounds(region, 0.3, CRS),
        Grid.from_bounds((X0 - 1.05, Y0 - 1.05, X0 + 41, Y0 + 41), 0.5, CRS, snap=False),
    ]
    fast = [b is not None for b in aligned_blocks(info, grids)]
    assert fast == [True, True, True, True, False, False]
    got = _ndvi_windows(info, grids, [1, 4], max_source_pixels=strip_pixels)
    for g, w in zip(grids, got, strict=True):
        _same_window(w, _ndvi_window(info, g, [1, 4]))
    assert got[0][2].shape == (N // 5, N // 5) and np.isfinite(got[0][2]).any()


def test_block_averages_are_the_exact_area_average(tiles):
    """The fast path's values: each cell the mean of its k x k pixels (numpy reference), for k = 5 and 10
    read in one pass with strips of a few rows."""
    from pipeline.orchestrate.overlays import aligned_blocks, block_averages

    files, infos = tiles
    path, data = files[(0, 1)]
    info = infos[path.name]
    grids = [Grid.from_bounds((X0, Y0, X0 + 40, Y0 + 40), r, CRS) for r in (0.5, 1.0)]
    blocks = aligned_blocks(info, grids)
    out = block_averages(info, blocks, [1, 4], max_source_pixels=700)
    for (r0, c0, got), k, g in zip(out, (5, 10), grids, strict=True):
        assert (r0, c0) == (0, 0)
        np.testing.assert_array_equal(got, _block_mean(data[[0, 3]], k))
        assert got.shape == (2, N // k, N // k) and g.res == k * PX


def test_fast_path_refuses_tiles_it_cannot_average_exactly(tmp_path):
    """A tile with a nodata value (its pixels do not all count), float pixels, or in another CRS goes to
    the warp: `aligned_blocks` says None for every grid."""
    from pipeline.orchestrate.overlays import aligned_blocks

    grid = Grid.from_bounds((X0, Y0, X0 + 20, Y0 + 20), 0.5, CRS)
    rng = np.random.default_rng(5)
    cases = {
        "nodata": ("uint8", 0, CRS),
        "float": ("float32", None, CRS),
        "crs": ("uint8", None, "EPSG:25833"),
    }
    for name, (dtype, nodata, crs) in cases.items():
        p = tmp_path / f"{name}.tif"
        x0, y0 = (X0, Y0) if crs == CRS else Transformer.from_crs(CRS, crs, always_xy=True).transform(X0, Y0)
        with rasterio.open(
            p,
            "w",
            driver="GTiff",
            width=N,
            height=N,
            count=4,
            dtype=dtype,
            crs=crs,
            nodata=nodata,
            transform=Affine(PX, 0, x0, 0, -PX, y0 + N * PX),
        ) as ds:
            ds.write(rng.integers(1, 256, (4, N, N)).astype(dtype))
        [info] = scan_rasters([p], working_crs=CRS, min_bands=3)
        assert tile_cells(info, grid) is not None  # the tile does cover cells of the grid
        assert aligned_blocks(info, [grid]) == [None], name
