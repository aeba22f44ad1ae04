"""Terrain GLB mesh encodings: compact (KHR_mesh_quantization + EXT_meshopt_compression) against float32."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stages.terrain.pyramid import tile_grid_mesh
from pipeline.tiles.gltf import read_glb
from pipeline.tiles.terrain_glb import quantisation_step, read_terrain_glb, terrain_glb


def _jpeg() -> bytes:
    from PIL import Image

    bio = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 60)).save(bio, "JPEG")
    return bio.getvalue()


def _tile(size_m: float = 512.0, relief_m: float = 300.0, skirt: float = 2.0, seed: int = 0):
    """A 65 x 65 grid tile over `size_m` with `relief_m` of height range (+ noise), ENU around 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:65, 0:65] / 64.0
    h = 60 + relief_m * (0.5 + 0.5 * np.sin(6 * xx) * np.cos(4 * yy)) + rng.normal(0, 0.05, (65, 65))
    h[:3, :5] = np.nan  # a no-data corner: fewer vertices than the full grid
    xyh, uv, tris, _ = tile_grid_mesh(h, (0.0, 0.0, size_m, size_m), skirt)
    enu = xyh - np.array([size_m / 2, size_m / 2, 0.0]) + np.array([1234.5, -987.25, 0.0])
    return enu, uv, tris


def _canonical(tris: np.ndarray) -> set[tuple[int, ...]]:
    """Triangles as a set, each rotated to start at its smallest index (keeps the winding)."""
    return {tuple(np.roll(t, -int(np.argmin(t)))) for t in np.asarray(tris).tolist()}


def test_compact_error_within_bound_and_against_float32():
    enu, uv, tris = _tile()
    compact = terrain_glb(enu, tris, uv=uv, texture=_jpeg(), mesh_encoding="compact")
    flt = terrain_glb(enu, tris, uv=uv, texture=_jpeg(), mesh_encoding="float")
    pos_c, uv_c, tris_c = read_terrain_glb(compact)
    pos_f, uv_f, tris_f = read_terrain_glb(flt)
    # the bound: half a grid step per axis, step = box size / 65535 (ENU z = glTF y)
    step = quantisation_step(enu.min(axis=0), enu.max(axis=0))
    err = np.abs(pos_c - enu).max(axis=0)
    assert (err <= step / 2 + 1e-9).all(), (err, step)
    # stated figures: a 512 m tile with ~300 m of relief (+ 2 m skirt) -> <= 3.9 mm horizontally and
    # <= 2.3 mm vertically; well within 1 cm
    assert err[:2].max() <= 512 / 131070 + 1e-9 and err[2] <= 0.0024
    # against the float32 mesh: within the same bound plus float32's own rounding
    assert np.abs(pos_c - pos_f).max(axis=0)[2] < 0.0024 + 1e-4
    assert np.abs(uv_c - uv).max() <= 0.5 / 65535 + 1e-9 and np.abs(uv_f - uv).max() == 0
    # same triangles (reordered for compression, windings kept)
    assert len(tris_c) == len(tris) and _canonical(tris_c) == _canonical(tris) == _canonical(tris_f)


def test_compact_file_layout_is_small_and_deterministic():
    enu, uv, tris = _tile()
    tex = _jpeg()
    compact = terrain_glb(enu, tris, uv=uv, texture=tex, mesh_encoding="compact")
    assert compact == terrain_glb(enu.copy(), tris.copy(), uv=uv.copy(), texture=tex, mesh_encoding="compact")
    flt = terrain_glb(enu, tris, uv=uv, texture=tex, mesh_encoding="float")
    assert len(compact) * 3 < len(flt), (len(compact), len(flt))
    js, _ = read_glb(compact)
    assert {"KHR_mesh_quantization", "EXT_meshopt_compression"} <= set(js["extensionsRequired"])
    prim = js["meshes"][0]["primitives"][0]
    assert set(prim["attributes"]) == {"POSITION", "TEXCOORD_0"}  # unlit: no normals
    acc = js["accessors"]
    assert acc[prim["attributes"]["POSITION"]]["componentType"] == 5123  # uint16, not normalized
    assert acc[prim["attributes"]["TEXCOORD_0"]]["normalized"] is True
    assert acc[prim["indices"]]["componentType"] == 5123
    modes = sorted(
        v["extensions"]["EXT_meshopt_compression"]["mode"] for v in js["bufferViews"] if "extensions" in v
    )
    assert modes == ["ATTRIBUTES", "ATTRIBUTES", "TRIANGLES"]  # the image is not meshopt data
    js_f, _ = read_glb(flt)
    assert "extensionsRequired" not in js_f or "EXT_meshopt_compression" not in js_f["extensionsRequired"]


def test_both_encodings_pass_the_gltf_validator(tmp_path: Path):
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    if not validator_available():
        pytest.skip("glTF validator not installed")
    enu, uv, tris = _tile()
    paths = []
    for enc in ("compact", "float"):
        p = tmp_path / f"{enc}.glb"
        p.write_bytes(terrain_glb(enu, tris, uv=uv, texture=_jpeg(), mesh_encoding=enc))
        paths.append(p)
    p = tmp_path / "untextured.glb"
    p.write_bytes(terrain_glb(enu, tris, mesh_encoding="compact"))
    paths.append(p)
    reports = validate_glb_files(paths)
    assert [r["errors"] for r in reports] == [0, 0, 0], reports
    assert [r["warnings"] for r in reports] == [0, 0, 0], reports


def test_flat_tile_and_unknown_encoding():
    enu, _uv, tris = _tile(relief_m=0.0)
    enu[:, 2] = 42.0  # a perfectly flat tile (no skirt offset either): the z scale must not be 0
    pos, _, _ = read_terrain_glb(terrain_glb(enu, tris, mesh_encoding="compact"))
    assert np.abs(pos[:, 2] - 42.0).max() < 1e-6
    js, _ = read_glb(terrain_glb(enu, tris, mesh_encoding="compact"))
    assert min(js["nodes"][0]["scale"]) > 0
    with pytest.raises(ValueError, match="mesh encoding"):
        terrain_glb(enu, tris, mesh_encoding="draco")


@settings(max_examples=15, deadline=None)
@given(
    size=st.floats(10.0, 5000.0),
    relief=st.floats(0.0, 1500.0),
    seed=st.integers(0, 1000),
)
def test_quantisation_error_bound_for_any_box(size: float, relief: float, seed: int):
    enu, _uv, tris = _tile(size_m=size, relief_m=relief, skirt=0.0, seed=seed)
    pos, _, _ = read_terrain_glb(terrain_glb(enu, tris, mesh_encoding="compact"))
    step = quantisation_step(enu.min(axis=0), enu.max(axis=0))
    assert (np.abs(pos - enu).max(axis=0) <= step / 2 * (1 + 1e-6) + 1e-9).all()


def test_config_option():
    from pydantic import ValidationError

    from pipeline.config.model import TerrainLayer

    assert TerrainLayer().mesh_encoding == "float"  # QGIS 3.40 reads only float meshes
    assert TerrainLayer(mesh_encoding="compact").mesh_encoding == "compact"
    with pytest.raises(ValidationError):
        TerrainLayer(mesh_encoding="draco")
