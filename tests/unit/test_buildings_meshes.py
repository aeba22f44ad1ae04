"""LoD1 meshes: watertight, consistently oriented, positive volume = area x height, unit normals facing out,
also through the real ENU transform (geoid)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from pipeline.config.model import CrsConfig
from pipeline.crs import project_frame
from pipeline.stages.buildings.content import enu_transform
from pipeline.stages.buildings.meshes import edge_problems, extrude_footprints, signed_volume, weld

GEOMS = np.array(
    [
        shapely.box(0, 0, 10, 5),
        shapely.Polygon(
            [(20, 0), (40, 0), (40, 20), (20, 20)],
            [[(25, 5), (25, 10), (30, 10), (30, 5)], [(32, 12), (36, 12), (36, 16), (32, 16)]],
        ),
        shapely.MultiPolygon([shapely.box(50, 0, 55, 5), shapely.box(60, 0, 65, 8)]),
        shapely.Polygon([(70, 0), (80, 0), (80, 4), (74, 4), (74, 10), (70, 10)]),  # L-shape (concave)
        shapely.Point(100, 5).buffer(4, quad_segs=8),  # round
        shapely.Polygon([(0, 30), (5, 30), (10, 30), (10, 40), (0, 40)]),  # collinear vertex
    ],
    dtype=object,
)
BASE = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
ROOF = BASE + np.array([5.0, 7.0, 9.0, 3.0, 12.0, 4.5])


@pytest.mark.parametrize("floor", [True, False])
def test_watertight_and_volume(floor: bool):
    m = extrude_footprints(GEOMS, BASE, ROOF, floor=floor)
    assert (
        m.indices.dtype == np.uint32 and m.positions.shape[0] == m.normals.shape[0] == m.feature_ids.shape[0]
    )
    for k, g in enumerate(GEOMS):
        tri = m.triangles[np.all(m.feature_ids[m.triangles] == k, axis=1)]
        assert len(tri) > 0
        sub = type(m)(m.positions, m.normals, tri.reshape(-1), m.feature_ids)
        welded = weld(sub)
        if floor:
            assert edge_problems(welded) == 0, k
            vol = signed_volume(m.positions, tri)
            assert vol > 0
            assert vol == pytest.approx(g.area * (ROOF[k] - BASE[k]), rel=1e-3)
        else:
            assert edge_problems(welded) > 0  # open at the bottom


def test_normals_unit_and_outward():
    m = extrude_footprints(GEOMS, BASE, ROOF)
    assert np.allclose(np.linalg.norm(m.normals, axis=1), 1.0, atol=1e-6)
    p = m.positions[m.triangles]
    face = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area = np.linalg.norm(face, axis=1)
    ok = area > 1e-9
    # the stored (flat) normal of each triangle agrees with its winding
    vn = m.normals[m.triangles[:, 0]]
    cos = (face[ok] / area[ok, None] * vn[ok]).sum(1)
    assert np.all(cos > 0.999)
    # outward: wall normals point away from the footprint's interior
    centroid_dir = (
        p.mean(axis=1)[:, :2]
        - np.array([[g.representative_point().x, g.representative_point().y] for g in GEOMS])[
            m.feature_ids[m.triangles[:, 0]]
        ]
    )
    walls = np.abs(vn[:, 2]) < 1e-6
    convex = np.isin(m.feature_ids[m.triangles[:, 0]], [0])  # box: every wall faces away from the centre
    sel = walls & convex
    assert ((centroid_dir[sel] * vn[sel, :2]).sum(1) > 0).all()


def test_through_enu_frame_with_geoid():
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    frame = project_frame(cfg, (400_000.0, 5_700_000.0, 0.0))
    to_local = enu_transform(frame, cfg)
    g = np.array([shapely.box(400_010, 5_700_010, 400_030, 5_700_022)], dtype=object)
    base, roof = np.array([60.0]), np.array([72.0])
    m = extrude_footprints(g, base, roof, to_local)
    assert edge_problems(weld(m)) == 0
    assert signed_volume(m.positions, m.triangles) == pytest.approx(20 * 12 * 12, rel=1e-3)
    # heights are DHHN2016 normal heights: the ENU up of the roof is about the normal height (frame at H=0)
    top = m.positions[:, 2].max()
    assert 71.9 < top < 72.1
