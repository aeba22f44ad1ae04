"""LoD2 solids from fitted roofs (pipeline.stages.buildings.solids): closed, oriented, planar, the
volume of the roof surface over the footprint; checked by our val3dity-rule checker and independently
by trimesh."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stages.buildings.roofs import fit_roof
from pipeline.stages.buildings.solids import (
    GROUND,
    ROOF,
    WALL,
    SolidError,
    build_solid,
    check_solid,
    roof_partition,
    solid_volume,
    triangulate,
)
from tests.unit.test_roofs import X0, Y0, roof_points, sample

trimesh = pytest.importorskip("trimesh")


def _integral(part, footprint, base: float, step: float = 0.1) -> float:
    x0, y0, x1, y1 = footprint.bounds
    gx, gy = np.meshgrid(np.arange(x0, x1, step) + step / 2, np.arange(y0, y1, step) + step / 2)
    h = part.height_at(gx.ravel(), gy.ravel())
    return float(np.nansum(h - base) * step * step)


def _independent(solid) -> None:
    tri, _ = triangulate(solid)
    m = trimesh.Trimesh(solid.vertices - solid.vertices.mean(axis=0), tri, process=False)
    assert m.is_watertight and m.is_winding_consistent and m.is_volume
    assert m.volume > 0
    assert m.volume == pytest.approx(solid_volume(solid), rel=1e-9)


def _l_shape():
    rng = np.random.default_rng(5)
    a = shapely.box(X0, Y0, X0 + 16, Y0 + 8)
    b = shapely.box(X0, Y0, X0 + 8, Y0 + 16)
    fp = shapely.union(a, b)
    x, y = sample(fp, 8, rng)
    za = 50 - 1.0 * np.abs(y - (Y0 + 4))
    zb = 50 - 1.0 * np.abs(x - (X0 + 4))
    ina = shapely.contains_xy(a, x, y)
    inb = shapely.contains_xy(b, x, y)
    z = np.where(ina & inb, np.maximum(za, zb), np.where(ina, za, zb)) + rng.normal(0, 0.04, x.shape)
    return x, y, z, fp


@pytest.mark.parametrize("kind", ["flat", "shed", "gable", "hip", "half_hip", "mansard", "pyramid"])
@pytest.mark.parametrize("angle", [0.0, 23.0])
def test_standard_roof_solids_are_valid(kind: str, angle: float):
    x, y, z, fp, (_l, _w, base, _ridge, _t) = roof_points(kind, angle)
    fit = fit_roof(x, y, z, fp)
    part = roof_partition(fit, fp)
    assert (
        len(part.faces)
        == {"flat": 1, "shed": 1, "gable": 2, "hip": 4, "half_hip": 4, "mansard": 4, "pyramid": 4}[kind]
    )
    # the faces tile the footprint
    assert shapely.union_all(part.faces).symmetric_difference(fp).area < fp.length * 1e-3
    solid = build_solid(part, base - 6.0)
    assert check_solid(solid) == []
    _independent(solid)
    assert solid_volume(solid) == pytest.approx(_integral(part, fp, base - 6.0), rel=2e-3)
    # semantics: roof faces up, ground down, walls vertical
    tri, owner = triangulate(solid)
    p = solid.vertices[tri]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    sem = solid.semantics[owner]
    assert (n[sem == ROOF, 2] > 0).all() and (n[sem == GROUND, 2] < 0).all()
    assert np.abs(n[sem == WALL, 2]).max() < 1e-6 * np.abs(n[sem == WALL]).max()
    # gable / hip: the faces meet on the ridge (no step walls inside): as many walls as footprint edges
    # plus the breakpoints of the roof edges on the boundary
    if kind in ("gable", "hip", "half_hip", "mansard"):
        assert solid.vertices[:, 2].max() == pytest.approx(fit.ridge_height, abs=0.01)


def test_multi_plane_solid_with_steps_is_valid():
    x, y, z, fp = _l_shape()
    fit = fit_roof(x, y, z, fp)
    assert fit.roof_type == "multi"
    part = roof_partition(fit, fp)
    solid = build_solid(part, 40.0)
    assert check_solid(solid) == []
    _independent(solid)
    assert shapely.union_all(part.faces).symmetric_difference(fp).area < fp.length * 1e-3
    # the volume under the true roof (cross gable, eaves at 46 m) down to 40 m, within 3 %
    gx, gy = np.meshgrid(np.arange(X0, X0 + 16, 0.05) + 0.025, np.arange(Y0, Y0 + 16, 0.05) + 0.025)
    za = 50 - np.abs(gy - (Y0 + 4))
    zb = 50 - np.abs(gx - (X0 + 4))
    ina, inb = gy < Y0 + 8, gx < X0 + 8
    zt = np.where(ina & inb, np.maximum(za, zb), np.where(ina, za, np.where(inb, zb, np.nan)))
    true = float(np.nansum(zt - 40.0) * 0.05 * 0.05)
    assert solid_volume(solid) == pytest.approx(true, rel=0.03)


def test_courtyard_and_multipolygon_footprints():
    ring = shapely.box(X0, Y0, X0 + 30, Y0 + 30).difference(shapely.box(X0 + 10, Y0 + 10, X0 + 20, Y0 + 20))
    two = shapely.MultiPolygon(
        [shapely.box(X0, Y0, X0 + 10, Y0 + 8), shapely.box(X0 + 12, Y0, X0 + 22, Y0 + 8)]
    )
    rng = np.random.default_rng(1)
    for fp, n_ground in ((ring, 1), (two, 2)):
        x, y = sample(fp, 4, rng)
        z = 60 + rng.normal(0, 0.03, x.shape)
        fit = fit_roof(x, y, z, fp)
        assert fit.roof_type == "flat"
        solid = build_solid(roof_partition(fit, fp), 50.0)
        assert check_solid(solid) == []
        assert int((solid.semantics == GROUND).sum()) == n_ground
        _independent(solid) if n_ground == 1 else None  # trimesh: one body per check
        assert solid_volume(solid) == pytest.approx(fp.area * 10.0, rel=1e-3)


def test_checker_finds_broken_solids():
    x, y, z, fp, _ = roof_points("gable", 23.0)
    good = build_solid(roof_partition(fit_roof(x, y, z, fp), fp), 40.0)
    assert check_solid(good) == []
    open_ = type(good)(good.vertices, good.polygons[:-1], good.semantics[:-1])
    assert any("not closed" in e for e in check_solid(open_))
    flipped = type(good)(
        good.vertices, [[r[::-1] for r in good.polygons[0]], *good.polygons[1:]], good.semantics
    )
    assert any("not closed/oriented" in e for e in check_solid(flipped))
    inward = type(good)(good.vertices, [[r[::-1] for r in rings] for rings in good.polygons], good.semantics)
    assert any("inward" in e for e in check_solid(inward))
    bent = good.vertices.copy()
    bent[good.polygons[0][0][0], 2] += 0.2
    assert any("not planar" in e for e in check_solid(type(good)(bent, good.polygons, good.semantics)))


def test_roof_below_base_and_no_model_refused():
    x, y, z, fp, _ = roof_points("flat")
    fit = fit_roof(x, y, z, fp)
    with pytest.raises(SolidError, match="below the base"):
        build_solid(roof_partition(fit, fp), 48.0)
    few = fit_roof(x[:5], y[:5], z[:5], fp)
    with pytest.raises(SolidError, match="too_few_points"):
        roof_partition(few, fp)


def test_partition_is_deterministic():
    x, y, z, fp = _l_shape()
    fit = fit_roof(x, y, z, fp)
    a, b = roof_partition(fit, fp), roof_partition(fit, fp)
    assert a.wkb == b.wkb and np.array_equal(a.planes, b.planes)
    sa, sb = build_solid(a, 40.0), build_solid(b, 40.0)
    assert np.array_equal(sa.vertices, sb.vertices)


def test_tile_mesh_mixes_lod1_and_lod2():
    """A tile with a LoD2 building and a LoD1 box: one mesh, feature ids per building, every feature
    closed and outward when welded, surfaces from both kinds."""
    from pipeline.stages.buildings.meshes import edge_problems, signed_volume
    from pipeline.stages.buildings.solids import lod2_tile_mesh, pack_partition, unpack_partition

    x, y, z, fp, _ = roof_points("hip", 23.0)
    part = roof_partition(fit_roof(x, y, z, fp), fp)
    back = unpack_partition(pack_partition(part))
    assert back.wkb == part.wkb and np.array_equal(back.planes, part.planes)
    box = shapely.box(X0 + 20, Y0, X0 + 30, Y0 + 6)
    geoms = np.array([box, fp], dtype=object)
    mesh, sem = lod2_tile_mesh(
        geoms, np.array([40.0, 40.0]), np.array([47.0, np.nan]), [b"", pack_partition(part)], _xyz
    )
    tri = mesh.indices.reshape(-1, 3)
    assert len(sem) == len(mesh.positions) and set(np.unique(sem)) == {ROOF, WALL, GROUND}
    for f in (0, 1):
        mine = tri[mesh.feature_ids[tri[:, 0]] == f]
        key, inv = np.unique(mesh.positions[mine.reshape(-1)], axis=0, return_inverse=True)
        assert edge_problems(inv.reshape(-1, 3)) == 0
        assert signed_volume(key - key.mean(axis=0), inv.reshape(-1, 3)) > 0
    lod1 = tri[mesh.feature_ids[tri[:, 0]] == 0]
    assert mesh.positions[lod1.reshape(-1), 2].max() == pytest.approx(47.0)


def _xyz(x, y, z):
    return np.column_stack([x, y, z]).astype(np.float64)


def test_official_partition_from_roof_polygons():
    """Official roof polygons (a gable with a dormer on one side, the model's outline 0.3 m inside the
    cadastral footprint) -> a valid solid over the cadastral footprint; attributes from the polygons."""
    from pipeline.stages.buildings.solids import official_partition, official_roof_columns

    def poly(*pts):
        return shapely.Polygon([(X0 + x, Y0 + y, z) for x, y, z in pts])

    south = poly((0.3, 0.3, 46), (11.7, 0.3, 46), (11.7, 4, 50), (0.3, 4, 50))
    north = poly((0.3, 4, 50), (11.7, 4, 50), (11.7, 7.7, 46), (0.3, 7.7, 46))
    dormer = poly((4, 1, 48.5), (7, 1, 48.5), (7, 3, 48.5), (4, 3, 48.5))  # flat dormer above the slope
    fp = shapely.box(X0, Y0, X0 + 12, Y0 + 8)
    part = official_partition([south, north, dormer], fp)
    assert shapely.union_all(part.faces).symmetric_difference(fp).area < fp.length * 1e-3
    assert part.height_at(np.array([X0 + 5.5]), np.array([Y0 + 2.0]))[0] == pytest.approx(48.5)
    assert part.height_at(np.array([X0 + 9.0]), np.array([Y0 + 6.0]))[0] == pytest.approx(
        50 - 4 * 2 / 3.7, abs=1e-6
    )
    solid = build_solid(part, 40.0)
    assert check_solid(solid) == []
    _independent(solid)
    cols = official_roof_columns([south, north, dormer], "3100")
    assert cols["roof_type"] == "gable" and cols["roof_planes"] == 3
    assert cols["ridge_height"] == 50 and cols["eave_height"] == 46
    assert cols["roof_slope_max"] == pytest.approx(np.degrees(np.arctan(4 / 3.7)), abs=0.01)


def test_alternating_heights_at_a_vertex_are_lifted():
    """Four flat faces around one vertex at 50, 48, 50, 48 m: the step walls would share the vertical
    edge 48-50 at the centre four times (not 2-manifold); the roof is lifted to 50 there and the two
    lower faces become triangles, so the shell is closed and every polygon planar."""
    from pipeline.stages.buildings.solids import RoofPartition

    q = [
        shapely.box(X0, Y0, X0 + 5, Y0 + 5),
        shapely.box(X0 + 5, Y0, X0 + 10, Y0 + 5),
        shapely.box(X0 + 5, Y0 + 5, X0 + 10, Y0 + 10),
        shapely.box(X0, Y0 + 5, X0 + 5, Y0 + 10),
    ]
    planes = np.array([[0, 0, 50.0], [0, 0, 48.0], [0, 0, 50.0], [0, 0, 48.0]])
    part = RoofPartition(
        shapely.to_wkb(shapely.MultiPolygon([shapely.orient_polygons(p) for p in q])), planes
    )
    solid = build_solid(part, 40.0)
    assert check_solid(solid) == []
    _independent(solid)
    # the two lower faces are now triangles (fans to the lifted centre), the others stay squares
    roofs = [rs for rs, s in zip(solid.polygons, solid.semantics, strict=True) if s == ROOF]
    assert sorted(len(rs[0]) for rs in roofs).count(3) >= 4
    centre = np.flatnonzero(
        (np.abs(solid.vertices[:, 0] - X0 - 5) < 1e-6) & (np.abs(solid.vertices[:, 1] - Y0 - 5) < 1e-6)
    )
    assert solid.vertices[centre, 2].max() == pytest.approx(50.0)


def test_roof_mean_height_is_the_area_weighted_mean():
    """The LoD1 roof of the AdV definition: exact for a gable over a rectangle with a courtyard under
    the ridge (96 m2 at mean 48 m minus 4 m2 at mean 49.5 m), and equal to a fine numeric integral
    for fitted roofs (rotated hip, L-shaped multi-plane with steps)."""
    from pipeline.stages.buildings.solids import RoofPartition, roof_mean_height

    def poly(*pts):
        return shapely.Polygon([(X0 + x, Y0 + y, z) for x, y, z in pts])

    south = poly((0, 0, 46), (12, 0, 46), (12, 4, 50), (0, 4, 50))
    north = poly((0, 4, 50), (12, 4, 50), (12, 8, 46), (0, 8, 46))
    fp = shapely.box(X0, Y0, X0 + 12, Y0 + 8).difference(shapely.box(X0 + 4, Y0 + 3, X0 + 6, Y0 + 5))
    from pipeline.stages.buildings.solids import official_partition

    part = official_partition([south, north], fp)
    assert roof_mean_height(part) == pytest.approx((96 * 48.0 - 4 * 49.5) / 92, abs=1e-9)
    assert np.isnan(roof_mean_height(RoofPartition(shapely.MultiPolygon().wkb, np.zeros((0, 3)))))
    for x, y, z, footprint in (roof_points("hip", 23.0)[:4], _l_shape()):
        fit = fit_roof(x, y, z, footprint)
        part = roof_partition(fit, footprint)
        numeric = _integral(part, footprint, 0.0, step=0.05) / footprint.area
        assert roof_mean_height(part) == pytest.approx(numeric, abs=0.02)


def _similar(x, y, fp, angle_deg: float, scale: float):
    """Points and footprint under a similarity transform (rotation about a point off the footprint's
    centre, scale, shift), as a change of map projection does to a building (meridian convergence,
    scale factor)."""
    a = np.radians(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)

    def t(px, py):
        dx, dy = px - X0 - 5.0, py - Y0 - 3.0
        return X0 + 47.0 + c * dx - s * dy, Y0 - 71.0 + s * dx + c * dy

    return (*t(x, y), shapely.transform(fp, lambda q: np.column_stack(t(q[:, 0], q[:, 1]))))


@settings(max_examples=12, deadline=None)
@given(
    angle=st.floats(-180.0, 180.0) | st.floats(-6.0, 6.0),
    scale=st.sampled_from([1.0 + 4e-4, 1.0035]),  # 1.0035: EPSG:25833 against EPSG:25832 at 7 deg E
)
def test_multi_plane_roof_is_invariant_under_rotation_and_scale(angle: float, scale: float):
    """Another projected CRS rotates a building by its meridian convergence (degrees) and scales it
    (1 + a few 1e-4 to 1e-3): the multi-plane roof keeps its type, its planes, and the LoD1 roof (the
    area-weighted mean of the LoD2 roof) within 1 mm. The faces come from the points' Voronoi cells,
    not from cells of a grid (along the map grid the mean moved by up to 9 mm at a few degrees, along
    the footprint by up to 3 mm at scale 1.0035)."""
    from pipeline.stages.buildings.solids import roof_mean_height

    x, y, z, fp = _l_shape()
    ref = fit_roof(x, y, z, fp)
    want = roof_mean_height(roof_partition(ref, fp))
    x2, y2, fp2 = _similar(x, y, fp, angle, scale)
    fit = fit_roof(x2, y2, z, fp2)
    assert fit.roof_type == ref.roof_type == "multi"
    assert len(fit.planes) == len(ref.planes)
    assert roof_mean_height(roof_partition(fit, fp2)) == pytest.approx(want, abs=1e-3)


def test_packed_solid_round_trip_and_tile_blobs():
    """The LoD2 task builds each solid once, over the final base, and ships it packed: unpacking gives
    the same solid, and `solid_of` takes either a packed solid or a partition (built over the base)."""
    from pipeline.stages.buildings.solids import (
        pack_partition,
        pack_solid,
        solid_of,
        unpack_solid,
    )

    x, y, z, fp = _l_shape()
    part = roof_partition(fit_roof(x, y, z, fp), fp)
    solid = build_solid(part, 40.0)
    back = unpack_solid(pack_solid(solid))
    assert np.array_equal(back.vertices, solid.vertices) and np.array_equal(back.semantics, solid.semantics)
    assert len(back.polygons) == len(solid.polygons)
    for a, b in zip(back.polygons, solid.polygons, strict=True):
        assert len(a) == len(b) and all(np.array_equal(ra, rb) for ra, rb in zip(a, b, strict=True))
    assert check_solid(back) == []
    again = solid_of(pack_partition(part), 40.0)
    assert np.array_equal(again.vertices, solid.vertices)
    assert solid_of(pack_solid(solid), 12.0).vertices.min(axis=0)[2] == pytest.approx(40.0)
