"""Building tile formats: GLB metadata round trip, Khronos validator, b3dm + batch table, tileset tree."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from pipeline.stages.buildings.meshes import extrude_footprints
from pipeline.stages.buildings.tiling import build_quadtree, tileset_tree
from pipeline.tiles.b3dm import b3dm_bytes, read_b3dm
from pipeline.tiles.buildings_glb import building_glb, read_building_table, read_feature_ids
from pipeline.tiles.gltf import read_glb
from pipeline.tiles.tileset import asset, schema_errors
from pipeline.tiles.validate_gltf import validate_glb_files, validator_available


def _tile():
    geoms = np.array(
        [shapely.box(0, 0, 10, 5), shapely.box(20, 0, 30, 8), shapely.box(40, 0, 44, 4)], dtype=object
    )
    base = np.array([50.0, 51.0, 52.0])
    roof = np.array([60.5, 58.25, np.nan])
    roof[2] = 61.0
    mesh = extrude_footprints(geoms, base, roof)
    table = {
        "oid": ["DENW000000000001", "DENW000000000002", "DENW00000000000Ä"],
        "flstkennz": ["", "", ""],
        "funktion": ["Wohngebäude", "Garage", "Bürogebäude"],
        "funktion_code": np.array([1000, 2463, 2020], dtype=np.uint16),
        "roof_height": roof,
        "p90": np.array([60.7, np.nan, 61.2]),
        "n_points": np.array([120, 0, 33], dtype=np.uint32),
        "floors_estimate": np.array([3, 2, 1], dtype=np.int16),
        "floors_is_estimate": np.array([True, False, True]),
        "quality": ["ok", "fallback_floors", "vegetation_suspected"],
    }
    return mesh, table


def test_glb_metadata_round_trip(tmp_path):
    mesh, table = _tile()
    center = np.array([20.0, 4.0, 55.0])
    glb = building_glb(mesh.positions, mesh.normals, mesh.indices, mesh.feature_ids, center, table)
    back = read_building_table(glb)
    assert set(back) == set(table)
    for k, v in table.items():
        if isinstance(v, list):
            assert back[k] == v, k
        else:
            assert back[k].dtype == v.dtype or v.dtype.kind == "f", k
            assert np.array_equal(np.asarray(back[k]), v, equal_nan=True), k
    assert np.array_equal(read_feature_ids(glb), mesh.feature_ids)
    js, _ = read_glb(glb)
    assert "EXT_mesh_features" in js["extensionsUsed"] and "EXT_structural_metadata" in js["extensionsUsed"]
    fid = js["meshes"][0]["primitives"][0]["extensions"]["EXT_mesh_features"]["featureIds"][0]
    assert fid == {"featureCount": 3, "attribute": 0, "propertyTable": 0}
    p90 = js["extensions"]["EXT_structural_metadata"]["schema"]["classes"]["building"]["properties"]["p90"]
    assert p90["noData"] == -9999.0
    # node translation puts the tile back in place (glTF y-up)
    assert js["nodes"][0]["translation"] == [20.0, 55.0, -4.0]
    if validator_available():
        p = tmp_path / "t.glb"
        p.write_bytes(glb)
        rep = validate_glb_files([p])[0]
        assert rep["errors"] == 0, rep["messages"][:5]


def test_b3dm_batch_table_and_alignment(tmp_path):
    mesh, table = _tile()
    glb = building_glb(
        mesh.positions, mesh.normals, mesh.indices, mesh.feature_ids, np.zeros(3), None, profile="1.0"
    )
    data = b3dm_bytes(glb, table, 3)
    assert len(data) % 8 == 0
    ft, bt, inner = read_b3dm(data)
    assert ft == {"BATCH_LENGTH": 3}
    assert bt["oid"] == table["oid"] and bt["p90"] == [60.7, None, 61.2]
    assert bt["floors_is_estimate"] == [True, False, True]
    js, _ = read_glb(inner)
    assert "_BATCHID" in js["meshes"][0]["primitives"][0]["attributes"]
    assert "extensionsUsed" not in js
    # feature table JSON starts at 28, batch table and GLB on 8-byte boundaries
    import struct

    _, _, total, ftj, _ftb, btj, _btb = struct.unpack_from("<4sIIIIII", data, 0)
    assert total == len(data) and (28 + ftj) % 8 == 0 and (28 + ftj + btj) % 8 == 0
    if validator_available():
        p = tmp_path / "inner.glb"
        p.write_bytes(inner)
        assert validate_glb_files([p])[0]["errors"] == 0


def test_quadtree_limits_and_tileset_schema():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1000, 5000)
    y = rng.uniform(0, 600, 5000)
    root = build_quadtree(x, y, max_features=300, max_leaf_m=250.0)
    leaves = list(root.leaves())
    members = np.concatenate([lf.members for lf in leaves])
    assert np.array_equal(np.sort(members), np.arange(5000))  # each building exactly once
    assert max(len(lf.members) for lf in leaves) <= 300
    assert max(lf.size for lf in leaves) <= 250.0
    for lf in leaves:
        m = lf.members
        assert np.all((x[m] >= lf.x0) & (x[m] < lf.x0 + lf.size) & (y[m] >= lf.y0) & (y[m] < lf.y0 + lf.size))
        lf.lo = np.array([x[m].min(), y[m].min(), 0.0])
        lf.hi = np.array([x[m].max(), y[m].max(), 10.0])
    main, ext = tileset_tree(
        root,
        lambda n: f"tiles/{n.name}.glb",
        asset=asset("1.1"),
        external_every=2,
        external_uri=lambda n: f"tileset_{n.level}_{n.x}_{n.y}.json",
    )
    assert schema_errors(main) == []
    assert ext and all(schema_errors(t) == [] for t in ext.values())

    def walk(t, out):
        if "content" in t:
            out.append(t)
        for c in t.get("children", []):
            walk(c, out)
        return out

    contents = walk(main["root"], []) + [c for t in ext.values() for c in walk(t["root"], [])]
    glbs = [c for c in contents if c["content"]["uri"].endswith(".glb")]
    assert len(glbs) == len(leaves) and all(c["geometricError"] == 0 for c in glbs)
    assert main["root"]["refine"] == "ADD" and main["geometricError"] > main["root"]["geometricError"] > 0


@pytest.mark.parametrize("n", [0, 1])
def test_quadtree_tiny_inputs(n):
    root = build_quadtree(np.zeros(n) + 5.0, np.zeros(n) + 5.0)
    assert sum(len(lf.members) for lf in root.leaves()) == n
