"""Per-footprint raster statistics made per raster tile (`ndvi_sums`, `terrain_part`) and joined
(`mean_of_sums`, `low_of_parts`) equal the statistics over the whole delivery at once, bit for bit, for
footprints inside one tile, across tile edges and outside every tile; which tiles a key must name
(`sources.rasters.covering`: GDAL's pixel convention, what the point samplers see)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from pipeline.sources.rasters import covering, overlapping, scan_rasters
from pipeline.stages.buildings.rasters import (
    low_of_parts,
    mean_ndvi,
    mean_of_sums,
    ndvi_sums,
    terrain_low,
    terrain_part,
)

CRS = "EPSG:25832"
X0, Y0 = 362000.0, 5716000.0


def _tiles(folder: Path, bands: int, res: float, seed: int) -> list[Path]:
    """A 2 x 2 delivery of 100 m tiles with random values (uint8 RGBI or float32 heights)."""
    rng = np.random.default_rng(seed)
    n = round(100 / res)
    out = []
    for i in range(2):
        for j in range(2):
            p = folder / f"t_{i}_{j}.tif"
            if bands == 4:
                data = rng.integers(0, 255, (4, n, n), dtype=np.uint8)
            else:
                data = (50 + rng.random((1, n, n)) * 20).astype(np.float32)
            tr = Affine(res, 0, X0 + 100 * i, 0, -res, Y0 + 100 * (j + 1))
            with rasterio.open(
                p,
                "w",
                driver="GTiff",
                width=n,
                height=n,
                count=bands,
                dtype=data.dtype,
                crs=CRS,
                transform=tr,
            ) as ds:
                ds.write(data)
            out.append(p)
    return out


def _footprints(seed: int) -> np.ndarray:
    """Boxes inside tiles, across the tile edges and the corner, and one outside the delivery."""
    rng = np.random.default_rng(seed)
    x = X0 + rng.uniform(-5, 195, 60)
    y = Y0 + rng.uniform(-5, 195, 60)
    w = rng.uniform(3, 25, 60)
    boxes = [shapely.box(a, b, a + c, b + c * 0.7) for a, b, c in zip(x, y, w, strict=True)]
    boxes += [shapely.box(X0 + 95, Y0 + 95, X0 + 105, Y0 + 105), shapely.box(X0 + 300, Y0, X0 + 310, Y0 + 10)]
    return np.asarray(boxes, dtype=object)


def _by_tile(paths: list[Path], geoms: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    from pipeline.orchestrate.buildings import _footprints_by_tile

    return [
        (i.path, sub)
        for i, sub, _wkb in _footprints_by_tile(scan_rasters(paths, working_crs=CRS), geoms, CRS)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tiled_ndvi_equals_whole_delivery(tmp_path, seed):
    paths = _tiles(tmp_path, 4, 0.2, seed)
    geoms = _footprints(seed)
    whole = mean_ndvi(geoms, paths, 1, 4, 1.0, CRS)
    parts = []
    for path, sub in _by_tile(paths, geoms):
        idx, s, c = ndvi_sums(geoms[sub], path, 1, 4, 1.0, CRS)
        parts.append((sub[idx], s, c))
    joined = mean_of_sums(len(geoms), parts)
    assert np.isnan(whole[-1]) and np.isfinite(whole).sum() >= len(geoms) - 5  # outside: NaN
    assert np.array_equal(whole, joined, equal_nan=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tiled_terrain_low_equals_whole_delivery(tmp_path, seed):
    paths = _tiles(tmp_path, 1, 1.0, seed)
    geoms = _footprints(seed)
    whole = terrain_low(geoms, paths, 10.0, 1.0, CRS)
    tiles = _by_tile(paths, geoms)
    ntouch = np.bincount(np.concatenate([sub for _p, sub in tiles]), minlength=len(geoms))
    assert (ntouch > 1).sum() >= 3  # footprints across tile edges: joined from several tiles' cells
    parts = []
    for path, sub in tiles:
        done, low, rest, v = terrain_part(geoms[sub], path, ntouch[sub] == 1, 10.0, 1.0, CRS)
        assert set(sub[done]).isdisjoint(sub[rest])
        parts.append((sub[done], low, sub[rest], v))
    joined = low_of_parts(len(geoms), parts, 10.0)
    assert np.isnan(whole[-1]) and np.isfinite(whole).sum() >= len(geoms) - 5
    assert np.array_equal(whole, joined, equal_nan=True)


def test_covering_follows_the_pixel_convention_of_the_samplers(tmp_path):
    paths = _tiles(tmp_path, 4, 0.5, 0)
    infos = scan_rasters(paths, working_crs=CRS)
    names = lambda ts: sorted(t.path.name for t in ts)  # noqa: E731
    assert names(covering(infos, (X0 + 10, Y0 + 10, X0 + 20, Y0 + 20), CRS)) == ["t_0_0.tif"]
    # a tile holds west <= x < east and south < y <= north
    assert names(covering(infos, (X0 + 90, Y0 + 10, X0 + 100, Y0 + 20), CRS)) == ["t_0_0.tif", "t_1_0.tif"]
    assert names(covering(infos, (X0 + 100, Y0 + 10, X0 + 110, Y0 + 20), CRS)) == ["t_1_0.tif"]
    assert names(covering(infos, (X0 + 10, Y0 + 100, X0 + 20, Y0 + 110), CRS)) == ["t_0_0.tif", "t_0_1.tif"]
    assert names(covering(infos, (X0 + 10, Y0 + 90, X0 + 20, Y0 + 100), CRS)) == ["t_0_0.tif"]
    assert names(overlapping(infos, (X0 + 90, Y0 + 10, X0 + 100, Y0 + 20), CRS)) == ["t_0_0.tif"]
    # bounds in another CRS cannot be compared: every tile is named
    assert len(covering(infos, (X0 + 10, Y0 + 10, X0 + 20, Y0 + 20), "EPSG:25833")) == 4

    # the samplers given only the covering tiles colour every point as with the whole delivery
    from pipeline.stages.buildings.rasters import ndvi_at_points
    from pipeline.stages.points.colour import sample_orthophoto

    rng = np.random.default_rng(5)
    for box in [
        (X0 + 100, Y0 + 100, X0 + 150, Y0 + 200),
        (X0, Y0, X0 + 100, Y0 + 100),
        (X0 + 50, Y0 + 50, X0 + 150, Y0 + 100),
    ]:
        x = np.concatenate([rng.uniform(box[0], box[2], 500), [box[0], box[2], box[0], box[2]]])
        y = np.concatenate([rng.uniform(box[1], box[3], 500), [box[1], box[3], box[3], box[1]]])
        sub = [str(t.path) for t in covering(infos, box, CRS)]
        assert len(sub) < 4
        wkt = rasterio.crs.CRS.from_string(CRS).to_wkt()
        every, some = sample_orthophoto([str(p) for p in paths], x, y, wkt), sample_orthophoto(sub, x, y, wkt)
        assert np.array_equal(every["rgb"], some["rgb"]) and np.array_equal(every["nir"], some["nir"])
        n_all = ndvi_at_points(x, y, [str(p) for p in paths], 1, 4, CRS)
        assert np.array_equal(n_all, ndvi_at_points(x, y, sub, 1, 4, CRS), equal_nan=True)
