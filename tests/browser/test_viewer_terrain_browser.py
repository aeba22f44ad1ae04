"""The terrain layer's compact GLBs (KHR_mesh_quantization + EXT_meshopt_compression) drawn by CesiumJS.

A sample release with one terrain tile (300 m square, 65 x 65 vertices, a 4-colour texture, one colour per
quadrant) in the default compact encoding: each quadrant's colour is seen where its ENU position projects
into the window, nothing is drawn beyond the tile, and the page logs no error. Same browser set-up as
test_viewer_browser.py (Debian chromium, SwiftShader); skipped when chromium or CesiumJS is absent.
"""

from __future__ import annotations

import colorsys
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.test_viewer_browser import (
    ARTIFACTS,
    CHROMIUM,
    FLAGS,
    Page,
    _pixel,
    frame_ellipsoidal,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (make chromium)"),
]

HALF = 150.0  # the tile covers ENU [-HALF, HALF]^2
QUADRANTS = {  # (east sign, north sign) -> texture colour
    (-1, 1): (255, 0, 255),  # NW magenta
    (1, 1): (0, 255, 255),  # NE cyan
    (-1, -1): (255, 255, 0),  # SW yellow
    (1, -1): (0, 0, 255),  # SE blue
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


def _terrain_height(e: np.ndarray, n: np.ndarray) -> np.ndarray:
    from pipeline.viewer.sample import GROUND_Z

    return GROUND_Z - 1.0 + 4.0 * np.sin(e / 40.0) * np.cos(n / 55.0)


def _write_terrain(release: Path) -> None:
    from PIL import Image

    from pipeline.stages.terrain.pyramid import tile_grid_mesh
    from pipeline.tiles.terrain_glb import TerrainTileNode, terrain_glb, terrain_tilesets
    from pipeline.tiles.tileset import write_atomic, write_json
    from pipeline.viewer.sample import sample_frame

    img = np.zeros((64, 64, 3), np.uint8)  # row 0 north, column 0 west
    img[:32, :32], img[:32, 32:] = QUADRANTS[(-1, 1)], QUADRANTS[(1, 1)]
    img[32:, :32], img[32:, 32:] = QUADRANTS[(-1, -1)], QUADRANTS[(1, -1)]
    bio = io.BytesIO()
    Image.fromarray(img).save(bio, "JPEG", quality=95)
    u = np.linspace(-HALF, HALF, 65)
    ge, gn = np.meshgrid(u, u[::-1])  # row 0 north
    xyh, uv, tris, _ = tile_grid_mesh(_terrain_height(ge, gn), (-HALF, -HALF, HALF, HALF))
    glb = terrain_glb(xyh, tris, uv=uv, texture=bio.getvalue(), mesh_encoding="compact")
    write_atomic(release / "terrain" / "tiles" / "0" / "0" / "0.glb", glb)
    node = TerrainTileNode(0, 0, 0, xyh.min(axis=0), xyh.max(axis=0), 0.0, "tiles/0/0/0.glb")
    docs = terrain_tilesets(node, sample_frame().tile_transform(), "s")
    assert list(docs) == ["tileset.json"]
    write_json(release / "terrain" / "tileset.json", docs["tileset.json"])
    manifest = json.loads((release / "manifest.json").read_text())
    manifest["layers"].append(
        {
            "name": "terrain",
            "kind": "terrain",
            "access": "public",
            "tileset": "terrain/tileset.json",
            "files": ["terrain/tileset.json", "terrain/tiles/0/0/0.glb"],
            "stats": {"levels": 1},
            "warnings": [],
        }
    )
    (release / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_compact_terrain_renders_its_texture_where_it_lies(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import pyproj

    from pipeline.tiles.gltf import read_glb
    from pipeline.viewer.build import find_cesium_build, write_viewer
    from pipeline.viewer.sample import sample_frame, write_sample_release
    from pipeline.viewer.serve import make_server

    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    rel = tmp_path_factory.mktemp("viewer_terrain") / "release"
    write_sample_release(rel, with_internal=False)
    _write_terrain(rel)
    js, _ = read_glb((rel / "terrain" / "tiles" / "0" / "0" / "0.glb").read_bytes())
    assert "EXT_meshopt_compression" in js["extensionsRequired"]
    write_viewer(rel, build_id="terrain000000000", cesium_build=cesium)
    srv = make_server(rel, internal=False)
    srv.start_background()
    frame = sample_frame()
    lon, lat, _h = pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(
        *frame.enu_to_ecef(np.array([0.0, 0.0, 0.0]))
    )
    cam = f"{lon:.7f},{lat:.7f},{frame_ellipsoidal(frame) + 480:.1f},0,-90"
    p = Page(browser, f"{srv.url}?lite=1&layers=terrain&cam={cam}")
    try:
        assert p.ready["ok"], p.ready
        layer = next(la for la in p.ready["layers"] if la["name"] == "terrain")
        assert layer["show"] and not layer.get("error"), layer
        p.page.wait_for_timeout(500)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.page.screenshot(path=str(ARTIFACTS / "terrain_compact.png"))
        for (se, sn), rgb in QUADRANTS.items():
            e, n = se * HALF / 2, sn * HALF / 2
            x, y = p.to_window((e, n, float(_terrain_height(np.array(e), np.array(n)))))
            got = _pixel(p, x, y, r=3)
            want_h = colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))[0]
            h, s, v = colorsys.rgb_to_hsv(*(np.array(got) / 255.0))
            dh = abs(h - want_h) * 360.0
            assert s > 0.5 and v > 0.4 and min(dh, 360.0 - dh) < 15.0, ((se, sn), rgb, got)
        # beyond the tile's east edge: no terrain colour (the lite page's background)
        x, y = p.to_window((HALF + 40.0, 0.0, float(_terrain_height(np.array(HALF), np.array(0.0)))))
        assert 0 <= x < 1000 and 0 <= y < 700
        h, s, v = colorsys.rgb_to_hsv(*(np.array(_pixel(p, x, y)) / 255.0))
        assert s < 0.5 or v < 0.3, (h, s, v)
        assert p.errors() == []
    finally:
        p.close()
        srv.shutdown()
        srv.server_close()
