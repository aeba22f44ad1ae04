"""Point products (stages/point_products.py, orchestrate/point_products.py): the building heights, the
LoD2 roof points and the overlay rasters of one point file made from ONE decode of it equal each product
made alone, and `fill_once` decodes a file once for all of its products that miss the build cache."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import shapely

from pipeline.config.model import CrsConfig
from pipeline.sources.pointcloud import reader
from pipeline.sources.rasters import Grid
from pipeline.stages.buildings.heights import HeightParams, HeightSampler, footprint_zones, tile_stats
from pipeline.stages.buildings.reconstruct import ReconstructParams, roof_points_of, tile_roof_points
from pipeline.stages.point_products import feed_points, point_product
from pipeline.stages.terrain.rasterise import FileRasters, RasterTarget, rasterise_point_files_multi
from tests._synthetic_las import synthetic_points, write_las

CRS = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
X0, Y0 = 362_000.0, 5_702_000.0


@pytest.fixture(scope="module")
def laz(tmp_path_factory):
    d = tmp_path_factory.mktemp("products")
    return str(
        write_las(d / "a.laz", synthetic_points(23_456, size=200.0, seed=5), point_format=1, chunk_size=5_000)
    )


def _footprints() -> np.ndarray:
    boxes = [
        shapely.box(X0 + i * 40, Y0 + j * 40, X0 + i * 40 + 18, Y0 + j * 40 + 18)
        for i in range(5)
        for j in range(5)
    ]
    return np.array([*boxes, shapely.box(X0 + 10, Y0 + 10, X0 + 50, Y0 + 30)], dtype=object)


def _products(path: str):
    """(HeightSampler args, roof point args, raster targets) of the synthetic district."""
    hp = HeightParams(roof_classes=(20,), ground_classes=(2,))
    zones = footprint_zones(_footprints(), hp)
    complete = np.ones(len(zones.roof_area), dtype=bool)
    complete[-1] = False
    wkb = [bytes(b) for b in shapely.to_wkb(_footprints())]
    targets = [
        RasterTarget(Grid.from_bounds((X0, Y0, X0 + 200, Y0 + 200), 1.0, "EPSG:25832"), "max", None, (7, 18)),
        RasterTarget(Grid.from_bounds((X0, Y0, X0 + 200, Y0 + 200), 2.0, "EPSG:25832"), "max", None, ()),
    ]
    return (zones, complete, hp), (wkb, hp, ReconstructParams()), targets


def _counting(monkeypatch) -> list[str]:
    """Every decode of a point file through the one reader, by path."""
    seen: list[str] = []
    real = reader.iter_points

    def counted(info, *a, **k):
        seen.append(str(getattr(info, "path", info)))
        return real(info, *a, **k)

    monkeypatch.setattr(reader, "iter_points", counted)
    return seen


def _same(a, b) -> None:
    """Equal results: nested tuples / dicts / lists of arrays, dataclasses of arrays."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    elif hasattr(a, "__dataclass_fields__"):
        for k in a.__dataclass_fields__:
            _same(getattr(a, k), getattr(b, k))
    else:
        assert a == b


@pytest.mark.parametrize("chunk", [None, 4_321])
def test_one_decode_feeds_every_product_as_if_alone(laz, monkeypatch, chunk):
    (zones, complete, hp), roof_args, targets = _products(laz)
    alone = [
        tile_stats(laz, zones, complete, hp, chunk_points=chunk),
        tile_roof_points(laz, *roof_args, chunk_points=chunk),
        rasterise_point_files_multi([laz], targets, crs_cfg=CRS, chunk_size=chunk or 2_000_000),
    ]
    seen = _counting(monkeypatch)
    together = feed_points(
        laz,
        [
            HeightSampler(laz, zones, complete, hp),
            roof_points_of(laz, *roof_args),
            FileRasters(laz, targets, CRS),
        ],
        chunk,
    )
    assert seen == [laz]  # one decode for the three
    assert np.nansum(together[0][0]["n_points"]) > 1000 and len(together[1][0]) > 1000
    assert together[2][0].count.sum() > 20_000
    _same(together[0], alone[0])
    _same(together[1], alone[1])
    for a, b in zip(together[2], alone[2], strict=True):
        _same(a.value, b.value)
        _same(a.count, b.count)


def test_a_file_outside_every_grid_is_not_decoded(laz, monkeypatch):
    far = [RasterTarget(Grid.from_bounds((X0 + 5_000, Y0, X0 + 5_100, Y0 + 100), 1.0, "EPSG:25832"), "max")]
    seen = _counting(monkeypatch)
    ((acc,),) = feed_points(laz, [FileRasters(laz, far, CRS)])
    assert seen == [] and acc.count.sum() == 0


def test_fill_once_decodes_each_file_once_for_its_missing_products(laz, tmp_path, monkeypatch):
    from pipeline.orchestrate.cache import build_cache, run_cached
    from pipeline.orchestrate.point_products import fill_once

    other = str(write_las(tmp_path / "b.laz", synthetic_points(5_000, size=200.0, seed=6), point_format=1))
    ctx = SimpleNamespace(
        cfg=SimpleNamespace(cache_dir=tmp_path / "cache", runtime=SimpleNamespace()), client=None
    )
    (zones, complete, hp), roof_args, targets = _products(laz)
    calls = [
        (["h", path], point_product, (path, HeightSampler, (zones, complete, hp)), {"chunk_points": 5_000})
        for path in (laz, other)
    ]
    calls += [
        (["r", laz], point_product, (laz, roof_points_of, roof_args), {}),
        (["g", laz], point_product, (laz, FileRasters, (targets, CRS)), {}),
        (["sum"], sum, ([1, 2, 3],), {}),  # not a point product: a task of its own
    ]
    seen = _counting(monkeypatch)
    keys = fill_once(ctx, calls, "test")
    assert sorted(seen) == sorted([laz, other])  # one decode per file
    cache = build_cache(ctx)
    assert all(cache.load(k)[0] for k in keys)
    assert cache.load(keys[-1])[1] == 6
    # the layers load the results with run_cached: all hits; a second fill makes nothing again
    got = run_cached(ctx, calls[:4], "test")
    fill_once(ctx, calls, "test")
    assert len(seen) == 2
    # equal to the products made alone
    _same(got[0], tile_stats(laz, zones, complete, hp))
    _same(got[2], tile_roof_points(laz, *roof_args))
