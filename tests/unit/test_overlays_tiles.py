"""Tile partitions of the parcel overlay and the building change: the rows equal a one-piece run.

Parcels are a jittered grid (shared edges, cell centres on some edges, parcels straddling tile lines), the
footprints overlap each other and the parcel edges; partitions of 40, 55 and 1e6 m (one tile) must give the
same rows as the stage functions on the whole region, in the same order, on no executor and on a thread
pool (the executor seam), also with at most 1 or 3 tile tasks in flight (`window`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from pipeline.config.model import ChangeLayer
from pipeline.orchestrate.overlays_tiles import ParcelSource, building_rows, parcel_rows
from pipeline.sources.rasters import Grid
from pipeline.stages.change import building_change
from pipeline.stages.overlays.parcels import parcel_overlay

CRS = "EPSG:25832"
X0, Y0 = 360000.0, 5710000.0


def _parcels(rng) -> gpd.GeoDataFrame:
    geoms, keys = [], []
    xs = X0 + np.array([0, 23, 47.5, 70.25, 96, 120.5, 150])  # 70.25: on cell centres
    ys = Y0 + np.array([0, 31, 60.75, 88.5, 120])
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            geoms.append(shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]))
            keys.append(f"05{int(rng.integers(0, 10**6)):06d}_{i}_{j}")
    geoms.append(None)  # a record without geometry: dropped as in a one-piece run
    keys.append("zz-missing")
    return gpd.GeoDataFrame({"flstkennz": keys}, geometry=geoms, crs=CRS)


def _buildings(rng) -> gpd.GeoDataFrame:
    x = X0 + rng.uniform(0, 140, 60)
    y = Y0 + rng.uniform(0, 110, 60)
    w = rng.uniform(4, 18, 60)
    h = rng.uniform(4, 14, 60)
    geoms = shapely.box(x, y, x + w, y + h)
    heights = rng.uniform(3, 20, 60)
    heights[::7] = np.nan
    return gpd.GeoDataFrame(
        {"oid": [f"B{i:03d}" for i in range(60)], "height": heights}, geometry=geoms, crs=CRS
    )


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    rng = np.random.default_rng(7)
    parcels = _parcels(rng)
    path = tmp_path_factory.mktemp("cad") / "alkis.gpkg"
    parcels.sample(frac=1.0, random_state=3).to_file(path, layer="Flurstueck", engine="pyogrio")
    buildings = _buildings(rng)
    grid = Grid.from_bounds((X0 - 5, Y0 - 5, X0 + 160, Y0 + 130), 0.5, CRS)
    landcover = rng.integers(0, 4, (grid.height, grid.width)).astype(np.uint8)
    ndsm_old = rng.uniform(-1, 15, (grid.height, grid.width)).astype(np.float32)
    ndsm_new = ndsm_old + rng.normal(0, 2, ndsm_old.shape).astype(np.float32)
    ndsm_old[10:30, 40:90] = np.nan
    source = ParcelSource((str(path),), "alkis_gpkg", "Flurstueck", None, CRS)
    return source, parcels, buildings, grid, landcover, ndsm_old, ndsm_new


@pytest.mark.parametrize("size", [40.0, 55.0, 1e6])
@pytest.mark.parametrize(("pool", "window"), [(False, None), (True, None), (True, 1), (True, 3)])
def test_parcel_rows_equal_one_piece(region, size, pool, window):
    source, parcels, buildings, grid, landcover, ndsm, _ = region
    whole = source.read()
    want = parcel_overlay(
        whole, buildings, landcover=landcover, ndsm=ndsm, transform=grid.transform, floor_height_m=3.0
    )
    with ThreadPoolExecutor(2) if pool else _none() as ex:
        got = parcel_rows(source, size, buildings, grid, landcover, ndsm, 3.0, ex, window=window)
    assert got is not None
    assert len(got) == len(parcels) - 1
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(pd.DataFrame(got.drop(columns="geometry")), want.drop(columns="geometry"))
    assert shapely.equals_exact(got.geometry.to_numpy(), want.geometry.to_numpy(), 0).all()
    # the figures are real: built-up area and land-cover shares are not all zero
    assert (got["built_area_m2"] > 0).sum() > 5 and got["sealed_share"].notna().all()


@pytest.mark.parametrize("size", [40.0, 55.0, 1e6])
@pytest.mark.parametrize(("pool", "window"), [(False, None), (True, None), (True, 1), (True, 3)])
def test_building_rows_equal_one_piece(region, size, pool, window):
    _source, _parcels, buildings, grid, _lc, ndsm_old, ndsm_new = region
    cfg = ChangeLayer()
    b = buildings.set_axis(np.arange(100, 100 + len(buildings)))
    want = building_change(b, ndsm_old, ndsm_new, grid.transform, cfg)
    with ThreadPoolExecutor(2) if pool else _none() as ex:
        got = building_rows(b, size, grid, ndsm_old, ndsm_new, cfg, ex, window=window)
    pd.testing.assert_frame_equal(got, want)
    assert set(want["change_class"]) - {"unknown"}


def test_window_reads_bound_the_parcels(region):
    """A tile's task reads only the parcels reaching into its window (the spatial index of the file)."""
    source, parcels, *_ = region
    few = source.read((X0 + 1, Y0 + 1, X0 + 10, Y0 + 10))
    assert list(few["flstkennz"]) == [parcels["flstkennz"].iloc[0]]
    env = source.envelopes()
    assert np.isfinite(env).all(axis=1).sum() == len(parcels) - 1


@pytest.mark.parametrize("size", [40.0, 1e6])
def test_nas_parcels_read_once_and_partitioned(region, tmp_path, monkeypatch, size):
    """NAS has no spatial index: the planning pass reads the delivery once (streaming) and hands each task
    the parcels of its window; the rows equal a one-piece run on the same parcels."""
    import pipeline.sources.cadastre.nas as nas
    from pipeline.sources.cadastre.nas_write import write_bestandsdatenauszug

    _source, parcels, buildings, grid, landcover, ndsm, _ = region
    parcels = parcels[parcels.geometry.notna()].reset_index(drop=True)
    path = tmp_path / "alkis.xml"
    write_bestandsdatenauszug(path, parcels=parcels)
    source = ParcelSource((str(path),), "nas", None, None, CRS)
    whole = source.read()
    assert len(whole) == len(parcels)
    want = parcel_overlay(
        whole, buildings, landcover=landcover, ndsm=ndsm, transform=grid.transform, floor_height_m=3.0
    )
    reads = []
    real = nas.read_nas_files
    monkeypatch.setattr(nas, "read_nas_files", lambda *a, **k: reads.append(1) or real(*a, **k))
    with ThreadPoolExecutor(2) as ex:
        got = parcel_rows(source, size, buildings, grid, landcover, ndsm, 3.0, ex)
    assert reads == [1]  # not once per tile
    assert got is not None and len(got) == len(parcels)
    pd.testing.assert_frame_equal(pd.DataFrame(got.drop(columns="geometry")), want.drop(columns="geometry"))
    assert shapely.equals_exact(got.geometry.to_numpy(), want.geometry.to_numpy(), 0).all()


class _none:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_crop_keeps_the_cell_centres():
    from pipeline.orchestrate.overlays_tiles import crop

    grid = Grid(Affine(0.5, 0, 100.0, 0, -0.5, 200.0), 40, 30, CRS)
    a = np.arange(30 * 40).reshape(30, 40)
    (w,), t, extent = crop(grid, [a], (105.2, 190.1, 107.0, 195.0), margin=1)
    assert t.c == 100.0 + 0.5 * 9 and t.f == 200.0 - 0.5 * 9
    assert w[0, 0] == a[9, 9] and extent == (t.c, t.f - 0.5 * w.shape[0], t.c + 0.5 * w.shape[1], t.f)
