"""The point attribute table (pipeline.point_attributes): the layouts it derives, and an opt-in attribute
(scan angle) that round-trips from LAS to glTF and pnts while the default output stays as it was."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.orchestrate.points_plan import PointTilingOptions
from pipeline.orchestrate.points_run import tile_pointcloud
from pipeline.point_attributes import ATTRIBUTES, OPTIONAL, active, record_fields
from pipeline.stages.points.classes import enum_schema
from pipeline.tiles.gltf import decode_meshopt_views, read_glb
from pipeline.tiles.points_glb import PointSchema, vertex_dtype
from tests._synthetic_las import synthetic_points, write_las


def _schema(**kw) -> PointSchema:
    base = dict(has_rgb=True, has_gps=True, has_nir=False)
    base.update(kw)
    return PointSchema(active(**base), "asprs", enum_schema("asprs"))


def test_default_vertex_layout_is_the_published_one():
    """The layout the table derives for colour + GPS time (docs/pointcloud.md: 36 bytes per point)."""
    dt = vertex_dtype(_schema(extra_dims=("height",)).attributes)
    fields = [(name, *dt.fields[name][:2]) for name in dt.names]
    got = [(name, off, t.base.str, t.shape[0] if t.shape else 1) for name, t, off in fields]
    assert got == [
        ("POSITION", 0, "<u2", 3),
        ("_INTENSITY", 8, "<u2", 1),
        ("_GPS_TIME", 12, "<f4", 1),
        ("_X_HEIGHT", 16, "<f4", 1),
        ("_POINT_SOURCE_ID", 20, "<u2", 1),
        ("COLOR_0", 24, "|u1", 3),
        ("_CLASSIFICATION", 28, "|u1", 1),
        ("_RETURN_NUMBER", 32, "|u1", 1),
        ("_NUMBER_OF_RETURNS", 36, "|u1", 1),
    ]
    assert dt.itemsize == 40
    assert vertex_dtype(_schema().attributes).itemsize == 36


def test_metadata_properties_follow_the_table():
    props = _schema(has_nir=True, extra_dims=("height",)).metadata_schema()["classes"]["point"]["properties"]
    assert list(props) == [
        "intensity", "classification", "return_number", "number_of_returns", "point_source_id", "gps_time",
        "nir", "x_height",
    ]  # fmt: skip
    assert props["gps_time"]["componentType"] == "FLOAT32" and props["nir"]["componentType"] == "UINT16"
    assert "ASPRS class code" in props["classification"]["description"]
    with_scan = _schema(optional=("scan_angle",)).metadata_schema()["classes"]["point"]["properties"]
    assert with_scan["scan_angle"]["componentType"] == "FLOAT32"


def test_spill_record_has_every_active_attribute_once():
    attrs = active(True, True, True, OPTIONAL, ("height",))
    names = [f[0] for f in record_fields(attrs)]
    assert names[:3] == ["x", "y", "z"] and len(names) == len(set(names))
    assert set(names[3:]) == {a.name for a in ATTRIBUTES} | {"x_height"}
    assert [a.name for a in active(False, False, False)] == [
        "intensity", "classification", "return_number", "number_of_returns", "point_source_id",
    ]  # fmt: skip


def test_scan_angle_is_opt_in():
    assert "scan_angle" in OPTIONAL
    assert "scan_angle" not in [a.name for a in active(True, True, True)]


def _cloud(n: int, fmt: int, seed: int) -> dict[str, np.ndarray]:
    pts = synthetic_points(n, size=40.0, seed=seed)
    rng = np.random.default_rng(seed)
    if fmt >= 6:
        pts["scan_angle"] = rng.integers(-15000, 15000, n).astype(np.int16)  # 0.006 degree steps
    else:
        pts["scan_angle_rank"] = rng.integers(-90, 91, n).astype(np.int8)
    return pts


def _expected_degrees(pts: dict[str, np.ndarray], fmt: int) -> np.ndarray:
    if fmt >= 6:
        return pts["scan_angle"].astype(np.float32) * np.float32(0.006)
    return pts["scan_angle_rank"].astype(np.float32)


def _glb_tiles(out: Path) -> list[Path]:
    return sorted((out / "content").rglob("*.glb"))


def _glb_values(out: Path, attr: str) -> np.ndarray:
    vals = []
    for p in _glb_tiles(out):
        js, binary = decode_meshopt_views(*read_glb(p.read_bytes()))  # the default tiles are compressed
        prim = js["meshes"][0]["primitives"][0]
        acc = js["accessors"][prim["attributes"][attr]]
        view = js["bufferViews"][acc["bufferView"]]
        n, stride = acc["count"], view["byteStride"]
        rows = np.frombuffer(binary, np.uint8, count=n * stride, offset=view.get("byteOffset", 0))
        dtype = {5126: np.float32, 5123: np.uint16, 5121: np.uint8}[acc["componentType"]]
        off = acc["byteOffset"]
        col = rows.reshape(n, stride)[:, off : off + np.dtype(dtype).itemsize].copy()
        vals.append(col.view(dtype).reshape(-1))
    return np.concatenate(vals)


@pytest.mark.parametrize(("fmt", "version"), [(1, "1.2"), (6, "1.4")])
def test_scan_angle_round_trips_to_gltf(tmp_path, fmt, version):
    n = 20_000
    pts = _cloud(n, fmt, seed=fmt)
    src = write_las(tmp_path / "in.laz", pts, point_format=fmt, version=version, scale=0.001, chunk_size=5000)
    out = tmp_path / "ts"
    s = tile_pointcloud([src], out, PointTilingOptions(class_scheme="adv", attributes=("scan_angle",),
                                                       max_points_per_tile=3000))  # fmt: skip
    assert s.points_out == n
    got = np.sort(_glb_values(out, "_SCAN_ANGLE"))
    assert got.dtype == np.float32
    assert np.array_equal(got, np.sort(_expected_degrees(pts, fmt)))
    js, _ = read_glb(_glb_tiles(out)[0].read_bytes())
    meta = js["extensions"]["EXT_structural_metadata"]
    assert meta["propertyAttributes"][0]["properties"]["scan_angle"] == {"attribute": "_SCAN_ANGLE"}
    # by default the attribute is not there, and the other attributes are unchanged by asking for it
    plain = tmp_path / "plain"
    tile_pointcloud([src], plain, PointTilingOptions(class_scheme="adv", max_points_per_tile=3000))
    js0, _ = read_glb(_glb_tiles(plain)[0].read_bytes())
    assert "_SCAN_ANGLE" not in js0["meshes"][0]["primitives"][0]["attributes"]
    assert (
        "scan_angle"
        not in js0["extensions"]["EXT_structural_metadata"]["schema"]["classes"]["point"]["properties"]
    )
    for attr in ("_INTENSITY", "_CLASSIFICATION", "_POINT_SOURCE_ID"):
        assert np.array_equal(np.sort(_glb_values(out, attr)), np.sort(_glb_values(plain, attr))), attr


def _pnts_batch_column(data: bytes, name: str) -> np.ndarray:
    _m, _v, _t, ftj, ftb, btj, _btb = struct.unpack_from("<4sIIIIII", data, 0)
    start = 28 + ftj + ftb
    bt = json.loads(data[start : start + btj])
    ft = json.loads(data[28 : 28 + ftj])
    col = bt[name]
    dtype = {"FLOAT": np.float32, "DOUBLE": np.float64, "UNSIGNED_SHORT": np.uint16}[col["componentType"]]
    return np.frombuffer(data, dtype=dtype, count=ft["POINTS_LENGTH"], offset=start + btj + col["byteOffset"])


def test_scan_angle_round_trips_to_pnts(tmp_path):
    n = 12_000
    pts = _cloud(n, 6, seed=3)
    src = write_las(tmp_path / "in.laz", pts, point_format=6, version="1.4", scale=0.001, chunk_size=5000)
    out = tmp_path / "ts"
    tile_pointcloud([src], out, PointTilingOptions(class_scheme="adv", format="1.0",
                                                   attributes=("scan_angle",), max_points_per_tile=3000))  # fmt: skip
    tiles = sorted((out / "content").rglob("*.pnts"))
    got = np.concatenate([_pnts_batch_column(p.read_bytes(), "scan_angle") for p in tiles])
    assert np.array_equal(np.sort(got), np.sort(_expected_degrees(pts, 6)))


def test_unknown_attribute_is_a_config_error(tmp_path):
    src = write_las(tmp_path / "in.las", synthetic_points(100, size=10.0), scale=0.001)
    with pytest.raises(ConfigError, match=r"unknown point attribute.*'bogus'.*scan_angle"):
        tile_pointcloud([src], tmp_path / "o", PointTilingOptions(attributes=("bogus",)))
    assert not (tmp_path / "o").exists()
