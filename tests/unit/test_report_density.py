"""The report's point density raster is written strip by strip from the per-file count windows: the file's
bytes equal one write of the summed grid, whatever the strip height; the map reads a large raster averaged
down to a bounded size."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from pipeline.orchestrate.report import write_counts
from pipeline.report import DENSITY_MAP_CELLS, ReleaseData, plot_point_density
from pipeline.sources.rasters import Grid

CRS = "EPSG:25832"


def _windows(rng, grid: Grid) -> list[tuple[int, int, np.ndarray]]:
    """Overlapping windows (neighbouring point files share edge cells), one at the grid's corner."""
    out = []
    for r0, c0, h, w in [(0, 0, 120, 90), (119, 0, 181, 90), (0, 89, 300, 111), (250, 150, 50, 50)]:
        out.append((r0, c0, rng.integers(0, 50, (h, w)).astype(np.int64)))
    return out


@pytest.mark.parametrize("strip_cells", [None, 1, 5000, 10**9])
def test_counts_written_in_strips_equal_one_write(tmp_path, strip_cells):
    rng = np.random.default_rng(5)
    grid = Grid(Affine(2.0, 0, 362000.0, 0, -2.0, 5717000.0), 200, 300, CRS)
    windows = _windows(rng, grid)
    whole = np.zeros((grid.height, grid.width), dtype=np.int64)
    for r0, c0, c in windows:
        whole[r0 : r0 + c.shape[0], c0 : c0 + c.shape[1]] += c
    one = tmp_path / "one.tif"
    with rasterio.open(
        one,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="uint32",
        crs=grid.crs,
        transform=grid.transform,
        compress="deflate",
    ) as ds:
        ds.write(whole.astype(np.uint32), 1)
    got = tmp_path / "strips.tif"
    write_counts(got, grid, windows, strip_cells)
    with rasterio.open(got) as ds:
        np.testing.assert_array_equal(ds.read(1), whole)
    assert got.read_bytes() == one.read_bytes()


def test_density_map_of_a_large_region_is_averaged_down(tmp_path):
    n = DENSITY_MAP_CELLS * 2 + 3
    grid = Grid(Affine(2.0, 0, 362000.0, 0, -2.0, 5717000.0), n, 40, CRS)
    counts = np.full((40, n), 8, dtype=np.int64)
    write_counts(tmp_path / "report" / "data" / "point_density.tif", grid, [(0, 0, counts)])
    data = ReleaseData.load(tmp_path)
    fig = plot_point_density(data)
    img = fig.axes[0].images[0].get_array()
    assert img.shape[1] <= DENSITY_MAP_CELLS
    np.testing.assert_allclose(np.asarray(img), 2.0)  # 8 points per 4 m² cell
