"""Building parts (ALKIS Bauteil, issue 15 items 1/3): a building whose footprint holds a lower flat
wing recorded as a Bauteil is reconstructed per part (the gable main house and the flat wing each get
their own fit) and the parts' roofs merge into one valid solid with a step wall between them."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from pipeline.config.model import BuildingsLayer
from pipeline.stages.buildings.parts import assign_parts, join_parts, roof_parts, split_units
from pipeline.stages.buildings.reconstruct import ReconstructParams, lod2_roofs
from pipeline.stages.buildings.solids import (
    build_solid,
    check_solid,
    merge_partitions,
    roof_mean_height,
    unpack_partition,
)
from tests.unit.test_roofs import X0, Y0, sample


def _house():
    """A 20 x 10 m building: gable main house (x < 12, ridge 52 m along x, eaves 48 m) and a flat wing
    (x >= 12) at 46 m, recorded as a Bauteil; 8 points/m2, 3 cm noise."""
    rng = np.random.default_rng(11)
    fp = shapely.box(X0, Y0, X0 + 20, Y0 + 10)
    wing = shapely.box(X0 + 12, Y0, X0 + 20, Y0 + 10)
    x, y = sample(fp, 8.0, rng)
    z = np.where(x < X0 + 12, 52.0 - 0.8 * np.abs(y - (Y0 + 5)), 46.0) + rng.normal(0, 0.03, x.shape)
    return fp, wing, x, y, z


def test_assign_and_split():
    fp, wing, *_ = _house()
    other = shapely.box(X0 + 100, Y0, X0 + 110, Y0 + 10)
    stray = shapely.box(X0 + 200, Y0, X0 + 201, Y0 + 1)
    host = assign_parts(np.array([fp, other], dtype=object), np.array([wing, stray], dtype=object))
    assert host.tolist() == [0, -1]
    u = split_units(np.array([fp, other], dtype=object), np.array([wing, stray], dtype=object), host)
    assert u.building.tolist() == [0, 0, 1] and u.part.tolist() == [0, -1, -1]
    assert shapely.area(u.geoms[0]) == pytest.approx(80.0) and shapely.area(u.geoms[1]) == pytest.approx(
        120.0
    )
    assert shapely.union_all(u.geoms[:2]).symmetric_difference(fp).area < 1e-6


def test_per_part_roofs_merge_into_one_valid_solid():
    fp, wing, x, y, z = _house()
    u = split_units(np.array([fp], dtype=object), np.array([wing], dtype=object), np.array([0]))
    # roof points of every unit (the footprints are shrunk by 0.3 m as in the build)
    idx, ptr = [], [0]
    for g in u.geoms:
        k = np.flatnonzero(shapely.contains_xy(shapely.buffer(g, -0.3, join_style="mitre"), x, y))
        idx.append(k)
        ptr.append(ptr[-1] + len(k))
    cols, parts, _low, _solids = lod2_roofs(
        x, y, z, np.array(ptr), np.concatenate(idx), u.geoms, ReconstructParams(), np.array([40.0, 40.0])
    )
    assert cols["roof_type"].tolist() == ["flat", "gable"] and (cols["roof_rmse"] < 0.06).all()
    merged = merge_partitions([unpack_partition(p) for p in parts])
    solid = build_solid(merged, 40.0)
    assert check_solid(solid) == []
    assert shapely.union_all(merged.faces).symmetric_difference(fp).area < 1e-3
    # the area-weighted mean roof: 80 m2 at 46 m and 120 m2 of gable at mean 50 m
    assert roof_mean_height(merged) == pytest.approx((80 * 46 + 120 * 50) / 200, abs=0.05)
    # a step wall joins the wing's flat roof to the main house's eave (walls above 46 m inside)
    walls = [p for p, s in zip(solid.polygons, solid.semantics, strict=True) if s == 1]
    inner = [w for w in walls if np.allclose(solid.vertices[w[0]][:, 0], X0 + 12, atol=1e-3)]
    assert inner and min(solid.vertices[w[0]][:, 2].min() for w in inner) == pytest.approx(46.0, abs=0.1)
    # one fit over the whole footprint cannot hold both: not a clean standard roof
    whole_idx = np.flatnonzero(shapely.contains_xy(shapely.buffer(fp, -0.3, join_style="mitre"), x, y))
    whole = lod2_roofs(
        x, y, z, np.array([0, whole_idx.size]), whole_idx, np.array([fp], dtype=object), ReconstructParams()
    )[0]
    assert whole["roof_type"][0] not in ("flat", "gable") or whole["roof_rmse"][0] > 0.1


def _fit_units(u, x, y, z, base=40.0):
    """lod2_roofs over the units (roof points: inside each unit shrunk by 0.3 m, as in the build)."""
    idx, ptr = [], [0]
    for g in u.geoms:
        k = np.flatnonzero(shapely.contains_xy(shapely.buffer(g, -0.3, join_style="mitre"), x, y))
        idx.append(k)
        ptr.append(ptr[-1] + len(k))
    return lod2_roofs(
        x, y, z, np.array(ptr), np.concatenate(idx), u.geoms, ReconstructParams(), np.full(len(u.geoms), base)
    )


def _gable(rng):
    """A 20 x 10 m gable house (ridge 52 m along x, eaves 48 m), 8 points/m2, 3 cm noise."""
    fp = shapely.box(X0, Y0, X0 + 20, Y0 + 10)
    x, y = sample(fp, 8.0, rng)
    z = 52.0 - 0.8 * np.abs(y - (Y0 + 5)) + rng.normal(0, 0.03, x.shape)
    return fp, x, y, z


def test_roof_parts_by_bauart():
    default = BuildingsLayer().lod2_part_bauarten
    keys = ["31002_1200", "31002_1300", "31002_2720", "31002_2500", "31002_1100", "31002_2610", "", None]
    assert roof_parts(keys, default).tolist() == [True, True, True, False, False, False, False, False]
    assert roof_parts(["31002_2500"], [2500]).tolist() == [True]
    assert BuildingsLayer().lod2_parts is True


def test_roofless_bauteil_keeps_one_gable():
    """A projecting storey (bauart 2500) over half a gable house has no roof of its own: no unit, the
    house keeps one gable (split into two units it was a gable and a shed, i.e. multi)."""
    fp, x, y, z = _gable(np.random.default_rng(3))
    part = shapely.box(X0 + 10, Y0, X0 + 20, Y0 + 10)
    host = assign_parts(np.array([fp], dtype=object), np.array([part], dtype=object))
    assert host.tolist() == [0]
    host[~roof_parts(["31002_2500"], BuildingsLayer().lod2_part_bauarten)] = -1
    u = split_units(np.array([fp], dtype=object), np.array([part], dtype=object), host)
    assert u.part.tolist() == [-1] and u.geoms[0].equals(fp)
    cols = _fit_units(u, x, y, z)[0]
    assert cols["roof_type"].tolist() == ["gable"] and cols["roof_rmse"][0] < 0.06


def test_tower_with_own_roof_is_its_own_unit():
    """A 5 x 5 m tower (bauart 2720) with a flat roof at 60 m in the middle of the ridge: its own unit,
    fitted flat at 60 m, merged with the house's roof into one valid solid."""
    rng = np.random.default_rng(5)
    fp, x, y, z = _gable(rng)
    tower = shapely.box(X0 + 8, Y0 + 2.5, X0 + 13, Y0 + 7.5)
    z = np.where(shapely.contains_xy(tower, x, y), 60.0 + rng.normal(0, 0.03, x.shape), z)
    host = assign_parts(np.array([fp], dtype=object), np.array([tower], dtype=object))
    host[~roof_parts(["31002_2720"], BuildingsLayer().lod2_part_bauarten)] = -1
    u = split_units(np.array([fp], dtype=object), np.array([tower], dtype=object), host)
    assert u.part.tolist() == [0, -1] and shapely.area(u.geoms[0]) == pytest.approx(25.0)
    cols, parts, _low, _solids = _fit_units(u, x, y, z)
    assert cols["roof_type"][0] == "flat" and cols["ridge_height"][0] == pytest.approx(60.0, abs=0.1)
    assert all(parts)
    merged = merge_partitions([unpack_partition(p) for p in parts])
    assert check_solid(build_solid(merged, 40.0)) == []
    assert float(merged.height_at(np.array([X0 + 10.5]), np.array([Y0 + 5.0]))[0]) == pytest.approx(
        60.0, abs=0.1
    )


def test_tiny_part_joins_the_rest():
    """A 2 x 2 m tower part has too few roof points (about 16): it joins the rest of the footprint,
    and the house keeps its LoD2 roof (one gable) instead of falling back to its LoD1 box."""
    fp, x, y, z = _gable(np.random.default_rng(9))
    tiny = shapely.box(X0 + 3, Y0 + 1, X0 + 5, Y0 + 3)
    bs, ps = np.array([fp], dtype=object), np.array([tiny], dtype=object)
    host = assign_parts(bs, ps)
    u = split_units(bs, ps, host)
    cols = _fit_units(u, x, y, z)[0]
    failed = (cols["lod2_fallback_reason"] == "too_few_points") & (u.part >= 0)
    assert failed.tolist() == [True, False]
    host, absorb = join_parts(host, u, failed, np.zeros(1, dtype=bool))
    assert host.tolist() == [-1] and absorb.tolist() == [False]
    u = split_units(bs, ps, host)
    assert len(u.geoms) == 1 and u.geoms[0].equals(fp)
    cols = _fit_units(u, x, y, z)[0]
    assert cols["roof_type"].tolist() == ["gable"] and cols["lod2_fallback_reason"].tolist() == [""]


def test_reader_keeps_only_roof_bauteile():
    """skip_bauteil filters the Bauteile without a roof of their own and keeps the listed bauarten."""
    import geopandas as gpd

    from pipeline.sources.cadastre.common import FootprintFilter, repair_and_filter

    gdf = gpd.GeoDataFrame(
        {
            "oid": ["A", "B", "C"],
            "gebnutzbez": ["Gebäude", "Bauteil", "Bauteil"],
            "gfkzshh": ["31001_1010", "31002_2720", "31002_2500"],
            "rellage": [None, None, None],
            "source_file": ["f.gpkg"] * 3,
        },
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(2, 2, 6, 6), shapely.box(6, 6, 9, 9)],
    )
    rejected: list = []
    kept = repair_and_filter(gdf, FootprintFilter(keep_bauarten=(2720,)), rejected)
    assert kept["oid"].tolist() == ["A", "B"]
    assert [(r.id, r.reason) for r in rejected] == [("C", "filtered: Bauteil")]


def test_small_rest_joins_a_part():
    """A tower part (2720) covering all but a 1.5 m strip of a flat house: the strip (the rest of the
    footprint) has too few roof points and joins the tower instead of costing the house its roof."""
    rng = np.random.default_rng(13)
    fp = shapely.box(X0, Y0, X0 + 20, Y0 + 10)
    tower = shapely.box(X0, Y0, X0 + 18.5, Y0 + 10)
    x, y = sample(fp, 1.5, rng)
    z = 50.0 + rng.normal(0, 0.03, x.shape)
    bs, ps = np.array([fp], dtype=object), np.array([tower], dtype=object)
    host = assign_parts(bs, ps)
    u = split_units(bs, ps, host)
    cols = _fit_units(u, x, y, z)[0]
    failed = cols["lod2_fallback_reason"] == "too_few_points"
    assert u.part.tolist() == [0, -1] and failed.tolist() == [False, True]
    host, absorb = join_parts(host, u, failed, np.zeros(1, dtype=bool))
    assert host.tolist() == [0] and absorb.tolist() == [True]
    u = split_units(bs, ps, host, absorb=absorb)
    assert u.part.tolist() == [0] and u.geoms[0].symmetric_difference(fp).area < 1e-6
    cols = _fit_units(u, x, y, z)[0]
    assert cols["roof_type"].tolist() == ["flat"] and cols["lod2_fallback_reason"].tolist() == [""]
