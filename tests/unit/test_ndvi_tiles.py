"""NDVI per orthophoto tile (`pipeline.sources.rasters.read_tile_cells`): a task warps only the cells its
tile touches, in strips of rows; the values do not depend on the strip height nor on the region's size,
and equal the area average of the tile's pixels (a numpy reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from pipeline.sources.rasters import Grid, read_tile_cells, scan_rasters

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
