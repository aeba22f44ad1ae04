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
