"""Terrain texture encodings (`layers.terrain.texture_format`, `texture_quality`, `texture_subsampling`):
JPEG quality and chroma subsampling as configured, WebP through glTF EXT_texture_webp (valid for the Khronos
validator), deterministic bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest


def _photo(px: int = 128) -> np.ndarray:
    """(3, px, px) uint8: smooth gradients plus texture noise, like an orthophoto clip."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:px, 0:px]
    base = np.stack([x * 255 / px, y * 255 / px, (x + y) * 127 / px])
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_jpeg_quality_and_subsampling_as_configured():
    from PIL import Image, JpegImagePlugin

    from pipeline.stages.imagery import encode_image

    img = _photo()
    q85 = encode_image(img, "jpeg", quality=85, subsampling="4:4:4")
    q80 = encode_image(img, "jpeg", quality=80, subsampling="4:2:0")
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(q85))) == 0  # 4:4:4
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(q80))) == 2  # 4:2:0
    assert len(q80) < 0.8 * len(q85)
    assert q80 == encode_image(img, "jpeg", quality=80, subsampling="4:2:0")  # deterministic
    back = np.asarray(Image.open(io.BytesIO(q80))).astype(float)
    assert np.abs(back - np.moveaxis(img, 0, -1)).mean() < 10


def test_webp_texture_in_a_valid_terrain_glb():
    from PIL import Image

    from pipeline.stages.imagery import encode_image
    from pipeline.tiles.gltf import read_glb
    from pipeline.tiles.terrain_glb import terrain_glb
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    img = _photo()
    webp = encode_image(img, "webp", quality=80)
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP" and webp == encode_image(img, "webp", quality=80)
    assert Image.open(io.BytesIO(webp)).size == (128, 128)
    pos = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 1], [0, 10, 1]], float)
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], float)
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    glb = terrain_glb(pos, tris, uv=uv, texture=webp, texture_format="webp")
    js, _ = read_glb(glb)
    assert js["images"][0]["mimeType"] == "image/webp"
    assert js["textures"][0] == {"sampler": 0, "extensions": {"EXT_texture_webp": {"source": 0}}}
    assert "EXT_texture_webp" in js["extensionsRequired"] and "EXT_texture_webp" in js["extensionsUsed"]
    if not validator_available():
        pytest.skip("glTF validator not installed")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.glb"
        p.write_bytes(glb)
        (rep,) = validate_glb_files([p])
    assert rep["errors"] == 0, rep


def test_config_rejects_unknown_texture_settings():
    from pydantic import ValidationError

    from pipeline.config.model import TerrainLayer

    t = TerrainLayer()
    assert (t.texture_format, t.texture_quality, t.texture_subsampling) == ("jpeg", 80, "4:2:0")
    with pytest.raises(ValidationError):
        TerrainLayer(texture_quality=0)
    with pytest.raises(ValidationError):
        TerrainLayer(texture_format="avif")
