"""Tile selection over a large raster delivery: a tile's horizontal CRS is worked out once, not once per
selection (the terrain asks `overlapping` for every chunk of the region: 65,536 chunks x 2 deliveries for a
Ruhr-sized square; at ~40 us of PROJ per tile and call that was hours in the build process)."""

from __future__ import annotations

from pathlib import Path

from pyproj import CRS

import pipeline.sources.rasters as rasters
from pipeline.sources.rasters import RasterInfo, covering, delivery_bounds, overlapping


def _delivery(n: int, crs: CRS) -> list[RasterInfo]:
    return [
        RasterInfo(
            Path(f"dgm1_32_{x}_{y}.tif"),
            crs,
            (x * 1e3, y * 1e3, x * 1e3 + 1e3, y * 1e3 + 1e3),
            (1.0, 1.0),
            1,
            "float32",
            None,
        )
        for x in range(360, 360 + n)
        for y in range(5700, 5700 + n)
    ]


def test_horizontal_crs_worked_out_once_per_tile(monkeypatch):
    calls = {"n": 0}
    real = rasters._horizontal_epsg

    def counting(crs):
        calls["n"] += 1
        return real(crs)

    monkeypatch.setattr(rasters, "_horizontal_epsg", counting)
    infos = _delivery(10, CRS.from_user_input("EPSG:25832"))
    for k in range(20):
        box = (360_500.0 + 100 * k, 5_700_500.0, 361_500.0 + 100 * k, 5_701_500.0)
        assert [i.path.name for i in overlapping(infos, box, "EPSG:25832")] == [
            f"dgm1_32_{x}_{y}.tif"
            for x in range(360, 370)
            if x * 1e3 < box[2] and x * 1e3 + 1e3 > box[0]
            for y in (5700, 5701)
        ]
        assert len(covering(infos, box, "EPSG:25832")) >= 4
    delivery_bounds(infos, "EPSG:25832")
    # 100 tiles once each, plus the query CRS once per call (41 calls); before: every tile in every call
    assert calls["n"] <= len(infos) + 41, calls["n"]


def test_tiles_in_another_crs_are_always_selected():
    infos = _delivery(3, CRS.from_user_input("EPSG:25832"))
    other = RasterInfo(
        Path("utm33.tif"),
        CRS.from_user_input("EPSG:25833"),
        (0.0, 0.0, 1.0, 1.0),
        (1.0, 1.0),
        1,
        "float32",
        None,
    )
    sel = overlapping([*infos, other], (360_100.0, 5_700_100.0, 360_200.0, 5_700_200.0), "EPSG:25832")
    assert [i.path.name for i in sel] == ["dgm1_32_360_5700.tif", "utm33.tif"]


def _mixed_delivery() -> list[RasterInfo]:
    """1-km tiles, a 500 m tile overlapping them, a tile in another CRS in the middle of the order."""
    infos = _delivery(6, CRS.from_user_input("EPSG:25832"))
    half = RasterInfo(
        Path("half.tif"),
        CRS.from_user_input("EPSG:25832"),
        (361_250.0, 5_701_250.0, 361_750.0, 5_701_750.0),
        (0.5, 0.5),
        1,
        "float32",
        None,
    )
    other = RasterInfo(
        Path("utm33.tif"),
        CRS.from_user_input("EPSG:25833"),
        (0.0, 0.0, 1.0, 1.0),
        (1.0, 1.0),
        1,
        "float32",
        None,
    )
    return [*infos[:7], other, *infos[7:], half]


def test_tile_index_selects_as_the_functions():
    infos = _mixed_delivery()
    index = rasters.TileIndex(infos, "EPSG:25832")
    boxes = [
        (360_000.0, 5_700_000.0, 361_000.0, 5_701_000.0),  # on tile edges: closed vs open sides differ
        (361_000.0, 5_701_000.0, 361_000.0, 5_701_000.0),  # a point on a tile corner
        (361_250.0, 5_701_750.0, 362_000.0, 5_702_000.0),
        (350_000.0, 5_690_000.0, 380_000.0, 5_710_000.0),  # larger than the delivery
        (370_000.0, 5_710_000.0, 371_000.0, 5_711_000.0),  # outside
        (361_600.0, 5_701_600.0, 361_400.0, 5_701_400.0),  # inverted
    ]
    boxes += [
        (360_000.0 + 137.5 * k, 5_700_000.0 + 91.0 * k, 360_300.0 + 137.5 * k, 5_700_700.0 + 91.0 * k)
        for k in range(50)
    ]
    for b in boxes:
        assert index.overlapping(b) == overlapping(infos, b, "EPSG:25832"), b
        assert index.covering(b) == covering(infos, b, "EPSG:25832"), b


def test_tile_index_tests_only_nearby_tiles(monkeypatch):
    """The terrain selects the tiles of every chunk of the region (65,536 chunks x 2 deliveries for a
    Ruhr-sized square): each selection must test the tiles near the chunk, not the whole delivery."""
    calls = {"n": 0}
    real = rasters._apart_overlapping

    def counting(t, b):
        calls["n"] += 1
        return real(t, b)

    monkeypatch.setattr(rasters, "_apart_overlapping", counting)
    infos = _delivery(20, CRS.from_user_input("EPSG:25832"))  # 400 tiles
    index = rasters.TileIndex(infos, "EPSG:25832")
    n = 0
    for x in range(360_000, 380_000, 512):
        for y in range(5_700_000, 5_720_000, 512):
            assert len(index.overlapping((x, y, x + 512.0, y + 512.0))) in (1, 2, 4)
            n += 1
    # before: 400 tiles per chunk (608,400 tests for 1,521 chunks); now at most 9 cells' tiles per chunk
    assert calls["n"] <= 9 * n, (calls["n"], n)
