"""Vegetation among the LoD2 roof points (issue 15 item 1): a dense tree crown overhanging a gable roof
whose pulses return once (so the single-return rule cannot see it, and the survey has no building
class: AdV 20) is dropped by the orthophoto's NDVI before the fit; a green roof keeps its points.
Whole task path: LAZ tile + RGBI GeoTIFF -> `reconstruct.tile_roof_points` -> `reconstruct.tile_roofs`."""

from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from pipeline.stages.buildings.heights import HeightParams
from pipeline.stages.buildings.rasters import ndvi_at_points
from pipeline.stages.buildings.reconstruct import (
    NdviFilter,
    ReconstructParams,
    drop_vegetation,
    tile_roof_points,
    tile_roofs,
)
from tests.unit.test_roofs import X0, Y0, roof_points, sample

CRS = "EPSG:25832"


def _scene(tmp: Path) -> tuple[str, str, list[shapely.Geometry], np.ndarray]:
    """A gable house with a crown (radius 4 m, 1-3 m above the roof) over one side, a flat green roof
    next to it; LAZ (class 20, single returns) and a 0.5 m RGBI orthophoto (crown and green roof
    NDVI 0.6, roofs 0.05)."""
    rng = np.random.default_rng(7)
    x, y, z, fp, _ = roof_points("gable", 23.0, noise=0.03, outliers=0.0)
    crown = shapely.Point(fp.centroid.x + 4.0, fp.centroid.y + 1.0).buffer(4.0)
    cx, cy = sample(crown, 10.0, rng)
    cz = 52.0 + rng.uniform(-1.0, 1.0, cx.shape)  # over the roof (its ridge is at 50 m)
    inside = shapely.contains_xy(fp, cx, cy)
    under = shapely.contains_xy(crown, x, y)  # the crown hides the roof under it
    x, y, z = np.r_[x[~under], cx[inside]], np.r_[y[~under], cy[inside]], np.r_[z[~under], cz[inside]]
    green = shapely.box(X0 + 20, Y0 - 5, X0 + 30, Y0 + 5)
    gx, gy = sample(green, 8.0, rng)
    gz = 47.0 + rng.normal(0, 0.03, gx.shape)
    x, y, z = np.r_[x, gx], np.r_[y, gy], np.r_[z, gz]
    las = laspy.LasData(laspy.LasHeader(point_format=1, version="1.2"))
    las.header.scales = [0.001, 0.001, 0.001]
    las.header.offsets = [X0, Y0, 0.0]
    las.x, las.y, las.z = x, y, z
    las.classification = np.full(x.shape, 20, np.uint8)
    las.return_number = np.ones(x.shape, np.uint8)
    las.number_of_returns = np.ones(x.shape, np.uint8)
    laz = str(tmp / "tile.laz")
    las.write(laz)
    res, x0, y1 = 0.5, X0 - 15, Y0 + 15
    w = h = int(50 / res)
    gxx, gyy = np.meshgrid(x0 + (np.arange(w) + 0.5) * res, y1 - (np.arange(h) + 0.5) * res)
    veg = shapely.contains_xy(crown, gxx, gyy) | shapely.contains_xy(green, gxx, gyy)
    red = np.where(veg, 40, 120).astype(np.uint8)
    nir = np.where(veg, 160, 133).astype(np.uint8)  # NDVI 0.6 / 0.05
    tif = str(tmp / "dop.tif")
    with rasterio.open(
        tif, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8", crs=CRS,
        transform=from_origin(x0, y1, res, res),
    ) as ds:  # fmt: skip
        ds.write(np.stack([red, red, red, nir]))
    return laz, tif, [fp, green], inside


def test_ndvi_at_points_and_drop_rule():
    ptr = np.array([0, 4, 8])
    idx = np.arange(8)
    ndvi = np.array([0.6, 0.1, np.nan, 0.7, 0.6, 0.5, 0.4, 0.1])
    p2, i2, dropped = drop_vegetation(ptr, idx, ndvi, 0.3, 0.6)
    # footprint 0: 2 of 4 green (50 % < 60 %) -> dropped; footprint 1: 3 of 4 green -> a green roof, kept
    assert p2.tolist() == [0, 2, 6] and i2.tolist() == [1, 2, 4, 5, 6, 7] and dropped.tolist() == [2, 0]


def test_crown_over_roof_dropped_by_ndvi(tmp_path: Path):
    laz, tif, geoms, crown_pts = _scene(tmp_path)
    wkb = [shapely.to_wkb(g) for g in geoms]
    hp = HeightParams(roof_classes=(20, 1))
    nd = ndvi_at_points(
        np.array([X0 + 20.5, X0 - 3.0, X0 + 500]), np.array([Y0, Y0 - 2.0, Y0]), [Path(tif)], 1, 4, CRS, None
    )
    assert (
        nd[0] == pytest.approx(0.6, abs=0.01) and nd[1] == pytest.approx(0.05, abs=0.01) and np.isnan(nd[2])
    )
    filt = NdviFilter(paths=(tif,), threshold=0.3, green_roof_share=0.6, work_crs=CRS)
    complete = np.ones(2, dtype=bool)
    plain_p, ndvi_p = ReconstructParams(), ReconstructParams(ndvi=filt)
    plain = tile_roofs(tile_roof_points(laz, wkb, hp, plain_p), wkb, complete, plain_p)
    ndvi = tile_roofs(tile_roof_points(laz, wkb, hp, ndvi_p), wkb, complete, ndvi_p)
    # with the filter: every crown point over the house dropped, the gable fitted tightly
    assert ndvi[4][0] >= 0.95 * crown_pts.sum() and ndvi[0]["roof_n_vegetation"][0] == ndvi[4][0]
    assert ndvi[0]["roof_type"][0] == "gable" and ndvi[0]["roof_rmse"][0] < 0.06
    assert ndvi[0]["ridge_height"][0] == pytest.approx(50.0, abs=0.1)
    # without it the crown is part of the fit: the roof is lost or bent
    p = plain[0]
    assert p["roof_n_vegetation"][0] == 0
    assert p["lod2_fallback_reason"][0] != "" or p["roof_type"][0] != "gable" or p["roof_rmse"][0] > 0.1
    # the green roof keeps its points (and its flat roof)
    assert ndvi[4][1] == 0 and ndvi[0]["roof_type"][1] == "flat"
    assert ndvi[0]["roof_n_points"][1] == plain[0]["roof_n_points"][1]


def test_ndvi_at_points_reads_a_10cm_orthophoto_decimated(tmp_path: Path):
    """A 10 cm DOP tile (20 x 20 m, vegetation in the west half) sampled at 0.5 m: the same NDVI away
    from the edge; no-data pixels and points off the tile give NaN."""
    res, w = 0.1, 200
    cols = np.arange(w)
    veg = np.broadcast_to(cols < 100, (w, w))
    red = np.where(veg, 40, 120).astype(np.uint8)
    nir = np.where(veg, 160, 133).astype(np.uint8)
    red[:20, :] = 0
    nir[:20, :] = 0  # a no-data strip in the north (both bands 0)
    tif = tmp_path / "dop10.tif"
    with rasterio.open(
        tif, "w", driver="GTiff", width=w, height=w, count=4, dtype="uint8", crs=CRS,
        transform=from_origin(X0, Y0 + 20, res, res), nodata=0,
    ) as ds:  # fmt: skip
        ds.write(np.stack([red, red, red, nir]))
    x = np.array([X0 + 3.2, X0 + 16.7, X0 + 5.0, X0 - 1.0])
    y = np.array([Y0 + 5.1, Y0 + 5.1, Y0 + 19.5, Y0 + 5.0])
    fine = ndvi_at_points(x, y, [tif], 1, 4, CRS, None, resolution_m=0.1)
    coarse = ndvi_at_points(x, y, [tif], 1, 4, CRS, None, resolution_m=0.5)
    assert fine[:2] == pytest.approx([0.6, 0.05], abs=0.01) and coarse[:2] == pytest.approx(
        fine[:2], abs=1e-6
    )
    assert np.isnan(fine[2]) and np.isnan(coarse[2]) and np.isnan(coarse[3])
