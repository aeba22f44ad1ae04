"""NDVI / DGM zonal statistics per footprint and the comparison with an official reference model."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from pipeline.sources.cadastre import read_reference_citygml
from pipeline.stages.buildings.rasters import mean_ndvi, terrain_low
from pipeline.stages.buildings.reference import compare_with_reference

X0, Y0 = 400_000.0, 5_700_000.0
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def _tif(path: Path, data: np.ndarray, res: float) -> None:
    bands, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=bands,
        dtype=data.dtype,
        crs="EPSG:25832",
        transform=from_origin(X0, Y0 + h * res, res, res),
    ) as ds:
        ds.write(data)


def test_ndvi_and_dgm_per_footprint(tmp_path: Path):
    res = 0.2
    h = w = 500  # 100 m x 100 m
    ortho = np.zeros((4, h, w), dtype=np.uint8)
    ortho[0] = 120  # red
    ortho[3] = 40  # nir: NDVI -0.5 (roof)
    # a tree crown over the second footprint: nir high, red low
    rows = slice(h - int(40 / res), h - int(30 / res))  # y 30..40
    cols = slice(int(30 / res), int(40 / res))  # x 30..40
    ortho[0, rows, cols] = 30
    ortho[3, rows, cols] = 150
    _tif(tmp_path / "dop.tif", ortho, res)
    dgm = np.full((1, 100, 100), 55.0, dtype=np.float32)
    dgm[0, :, 50:] = 57.0  # east half higher
    _tif(tmp_path / "dgm.tif", dgm, 1.0)
    geoms = np.array(
        [
            shapely.box(X0 + 10, Y0 + 10, X0 + 20, Y0 + 20),
            shapely.box(X0 + 31, Y0 + 31, X0 + 39, Y0 + 39),
            shapely.box(X0 + 60, Y0 + 60, X0 + 70, Y0 + 70),
            shapely.box(X0 + 500, Y0 + 500, X0 + 510, Y0 + 510),  # outside both rasters
        ],
        dtype=object,
    )
    ndvi = mean_ndvi(geoms, [tmp_path / "dop.tif"], 1, 4)
    assert ndvi[0] == pytest.approx(-0.5, abs=0.02)
    assert ndvi[1] == pytest.approx((150 - 30) / 180, abs=0.05)
    assert ndvi[2] == pytest.approx(-0.5, abs=0.02)
    assert np.isnan(ndvi[3])
    low = terrain_low(geoms, [tmp_path / "dgm.tif"], 10.0)
    assert low[0] == pytest.approx(55.0) and low[2] == pytest.approx(57.0) and np.isnan(low[3])


def test_compare_with_reference_synthetic():
    rng = np.random.default_rng(0)
    n = 50
    x = X0 + np.arange(n) * 30.0
    ref = gpd.GeoDataFrame(
        {"oid": [f"R{i}" for i in range(n)], "measured_height": rng.uniform(3, 20, n)},
        geometry=shapely.box(x, Y0, x + 12, Y0 + 9),
        crs="EPSG:25832",
    )
    # ours: slightly shifted footprints (IoU ~0.8), heights +0.4 m; one building without a reference
    ours = gpd.GeoDataFrame(
        {
            "oid": [f"O{i}" for i in range(n + 1)],
            "height": np.append(ref["measured_height"].to_numpy() + 0.4, 5.0),
        },
        geometry=[
            *list(shapely.box(x + 0.7, Y0 + 0.5, x + 12.7, Y0 + 9.5)),
            shapely.box(X0, Y0 + 100, X0 + 5, Y0 + 105),
        ],
        crs="EPSG:25832",
    )
    table, stats = compare_with_reference(ours, ref)
    assert stats["matched"] == n and len(table) == n
    assert stats["median_dh"] == pytest.approx(0.4) and stats["rmse"] == pytest.approx(0.4)
    assert list(table["ref_oid"]) == [f"R{i}" for i in range(n)]
    assert (table["iou"] > 0.7).all()


@pytest.mark.realdata
def test_compare_with_lorup_reference_roundtrip():
    d = REALDATA / "lorup_lod1_citygml"
    if not d.is_dir():
        pytest.skip("../shared/realdata is absent")
    ref = read_reference_citygml(sorted(d.glob("*.gml"))).gdf
    ours = ref[["oid", "geometry"]].copy()
    ours["height"] = ref["measured_height"] - 0.25
    _table, stats = compare_with_reference(ours, ref)
    assert stats["matched"] >= 1490  # a few overlapping reference parts compete for the same building
    assert stats["median_dh"] == pytest.approx(-0.25)
