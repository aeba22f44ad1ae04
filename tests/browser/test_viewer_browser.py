"""The release viewer in a real browser (Debian chromium, headless, SwiftShader WebGL2, via Playwright).

A tiny release (box buildings with EXT_structural_metadata + a few thousand glTF points) gets the
generated viewer, is served by `twin view`'s server and loaded in lite mode. Skipped (not failed) only
when /usr/bin/chromium is absent; `make test` installs it.
"""

from __future__ import annotations

import colorsys
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from pipeline.viewer.build import find_cesium_build, write_viewer
from pipeline.viewer.sample import (
    GROUND_Z,
    SAMPLE_BUILDINGS,
    sample_frame,
    sample_points,
    write_sample_release,
)
from pipeline.viewer.serve import ReleaseServer, make_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1000, "height": 700}
READY_TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (make chromium)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseServer]:
    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    rel = tmp_path_factory.mktemp("viewer_browser") / "release"
    write_sample_release(rel, with_change=True, with_noise=True, with_parcels=True)
    write_viewer(rel, build_id="sample0000000000", cesium_build=cesium)
    srv = make_server(rel, internal=False)
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


class Page:
    """A loaded viewer page with its console messages and requests."""

    def __init__(self, browser: Any, url: str):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        self.page.on("requestfailed", lambda r: self.console.append(("requestfailed", r.url)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.ready = self.page.evaluate(
            f"Promise.race([window.twin.ready, new Promise((_, rej) => setTimeout(() => rej('twin.ready timed out'), {READY_TIMEOUT_MS}))])"
        )

    def errors(self) -> list[tuple[str, str]]:
        return [m for m in self.console if m[0] in ("error", "pageerror", "requestfailed")]

    def to_window(self, enu: tuple[float, float, float]) -> tuple[float, float]:
        ecef = sample_frame().enu_to_ecef(np.array(enu, dtype=np.float64))
        xy = self.page.evaluate("(p) => window.twin.worldToWindow(p)", [float(v) for v in ecef])
        assert xy is not None, enu
        return float(xy[0]), float(xy[1])

    def close(self) -> None:
        self.page.close()


@pytest.fixture(scope="module")
def page(browser: Any, server: ReleaseServer) -> Iterator[Page]:
    p = Page(browser, server.url + "?lite=1")
    yield p
    p.close()


def _hue_counts(png: Path) -> dict[str, int]:
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64) / 255.0
    img = img[:640, 300:]  # leave out the layer panel (left) and the credit line (bottom)
    flat = img.reshape(-1, 3)
    hsv = np.array([colorsys.rgb_to_hsv(*px) for px in flat[::3]])  # every 3rd pixel is plenty
    h, s, v = hsv[:, 0] * 360, hsv[:, 1], hsv[:, 2]
    vivid = (s > 0.45) & (v > 0.3)
    bg = np.array([0x1D, 0x23, 0x30]) / 255.0
    not_bg = np.abs(flat[::3] - bg).max(axis=1) > 0.06
    return {
        "orange": int((vivid & (h > 12) & (h < 36)).sum()),  # Wohngebäude #e07b39
        "blue": int((vivid & (h > 205) & (h < 235)).sum()),  # Bürogebäude #3974e0
        "green": int((vivid & (h > 100) & (h < 150)).sum()),  # ground points (40, 200, 60)
        "not_background": int(not_bg.sum()),
        "total": len(hsv),
    }


def test_viewer_loads_and_renders(page: Page) -> None:
    ready = page.ready
    assert ready["ok"], ready
    layers = {lay["name"]: lay for lay in ready["layers"]}
    # panoramas are internal: not served
    assert set(layers) == {"aerial_points", "buildings", "change", "parcels"}
    assert not layers["change"]["show"] and not layers["parcels"]["show"]  # overlays off until asked for
    assert layers["buildings"]["selected"] >= 1 and layers["aerial_points"]["selected"] >= 1
    assert layers["buildings"]["preset"] == "style.json"
    assert page.errors() == []
    outside = [
        u for u in page.requests if not u.startswith("http://127.0.0.1:") and not u.startswith("data:")
    ]
    assert outside == []  # offline: no ion, no CDN

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "sample_lite.png"
    page.page.screenshot(path=str(shot))
    counts = _hue_counts(shot)
    (ARTIFACTS / "sample_lite.json").write_text(json.dumps(counts))
    assert counts["not_background"] > 0.08 * counts["total"], counts
    assert counts["orange"] > 300, counts  # residential buildings
    assert counts["blue"] > 300, counts  # office building
    assert counts["green"] > 300, counts  # ground points


def test_click_building_shows_its_oid(page: Page) -> None:
    b = next(b for b in SAMPLE_BUILDINGS if b.function == "Bürogebäude")
    x, y = page.to_window((b.centre[0], b.centre[1], GROUND_Z + b.height))
    page.page.mouse.click(x, y)
    page.page.wait_for_selector("#info:not([hidden])", timeout=10_000)
    oid = page.page.text_content("#infoTable tr[data-prop=oid] td")
    assert oid == b.oid
    # the id keeps its case in the title too (no CSS upper-casing)
    assert (
        page.page.evaluate("getComputedStyle(document.querySelector('#infoTitle')).textTransform") == "none"
    )
    assert b.oid in (page.page.inner_text("#infoTitle") or "")
    # the picked building is highlighted (yellow) where it was blue
    page.page.wait_for_timeout(300)
    r, g, bl = _pixel(page, x, y)
    assert r > 150 and g > 150 and bl < 110, (r, g, bl)
    page.page.evaluate("window.twin.pickAt(990, 20)")  # clicking nothing clears the highlight
    assert page.page.text_content("#infoTable tr[data-prop=quality] td") == b.quality
    assert float(page.page.text_content("#infoTable tr[data-prop=height] td") or "nan") == pytest.approx(
        b.height
    )


def _known_points() -> list[tuple[str, int, tuple[float, float, float], dict[str, Any]]]:
    """(what, index, ENU position, attributes) of sample points to click: open ground, roofs, next to a
    wall (where the old nearest-in-3D lookup returned the wrong point)."""
    pts = sample_points(noise=True)
    xyz = pts["xyz"]
    out = []
    for what, target in (
        ("ground", (-80.0, -80.0)),
        ("ground near a wall", (-30.0 + 11.0 + 2.0, 25.0)),
        ("roof", (25.0, 25.0)),
        ("roof", (-25.0, -30.0)),
    ):
        d = np.hypot(xyz[:, 0] - target[0], xyz[:, 1] - target[1])
        d[pts["classification"] == 18] = np.inf
        i = int(np.argmin(d))
        attrs = {"classification": int(pts["classification"][i]), "intensity": int(pts["intensity"][i])}
        out.append((what, i, tuple(float(v) for v in xyz[i]), attrs))
    return out


def test_click_point_shows_that_points_attributes(page: Page) -> None:
    frame = sample_frame()
    for what, _i, enu, attrs in _known_points():
        x, y = page.to_window(enu)
        res = page.page.evaluate("([x, y]) => window.twin.pickAt(x, y)", [x, y])
        assert res["kind"] == "point" and res["layer"] == "aerial_points", (what, res)
        got = np.array(res["position"], dtype=np.float64)
        want = frame.enu_to_ecef(np.array(enu, dtype=np.float64))
        assert float(np.linalg.norm(got - want)) < 0.5, (what, got - want)
        assert res["properties"]["classification"] == attrs["classification"], what
        assert res["properties"]["intensity"] == attrs["intensity"], what
        # the real click fills the panel with the same point, its class named in the scheme (AdV, German)
        page.page.mouse.click(x, y)
        page.page.wait_for_function(
            '(v) => document.querySelector("#infoTable tr[data-prop=intensity] td")?.textContent === v',
            arg=str(attrs["intensity"]),
            timeout=10_000,
        )
        name = page.page.text_content("#infoTable tr[data-prop='class name'] td") or ""
        assert name.startswith({2: "Boden (ground)", 20: "Nicht-Boden (non-ground)"}[attrs["classification"]])
        heads = page.page.eval_on_selector_all("#infoTable th", "els => els.map(e => e.textContent)")
        assert any("absolute" in h for h in heads) and any("relative" in h for h in heads), heads


def test_click_on_empty_sky_shows_no_attributes(browser: Any, server: ReleaseServer) -> None:
    """A click where nothing is drawn (the sky) picks nothing: no attributes of some other point or
    feature, the info panel of the previous pick is closed and no highlight stays (the old viewer showed
    the attributes of a point up to 118 km away)."""
    p = Page(browser, server.url + "?lite=1")
    try:
        assert p.ready["ok"], p.ready
        _what, _i, enu, _attrs = _known_points()[0]
        x, y = p.to_window(enu)
        assert p.page.evaluate("([x, y]) => window.twin.pickAt(x, y)", [x, y])["kind"] == "point"
        p.page.mouse.click(x, y)
        p.page.wait_for_selector("#info:not([hidden])", timeout=10_000)
        # look up at the sky: the whole view is empty
        p.page.evaluate(
            "() => { const c = window.twin.viewer.camera;"
            " c.setView({ destination: c.positionWC.clone(),"
            " orientation: { heading: c.heading, pitch: Cesium.Math.toRadians(30), roll: 0 } });"
            " window.twin.viewer.scene.requestRender(); }"
        )
        p.page.wait_for_timeout(300)
        w, h = VIEWPORT["width"], VIEWPORT["height"]
        res = p.page.evaluate("([x, y]) => window.twin.pickAt(x, y)", [w * 0.7, h * 0.5])
        assert res["kind"] == "none" and res["properties"] == {} and res["position"] is None, res
        p.page.mouse.click(w * 0.7, h * 0.5)
        p.page.wait_for_selector("#info", state="hidden", timeout=10_000)
        assert p.errors() == []
    finally:
        p.close()


def test_measure_distance_and_height(page: Page) -> None:
    office = next(b for b in SAMPLE_BUILDINGS if b.function == "Bürogebäude")
    a = (office.centre[0], office.centre[1], GROUND_Z + office.height)  # roof
    g = np.linspace(-100.0, 100.0, 60)
    gx = float(g[np.argmin(np.abs(g - 80))])
    b = (gx, gx, GROUND_Z)  # ground point
    m1 = page.page.evaluate("([x, y]) => window.twin.measureAt(x, y)", list(page.to_window(a)))
    assert m1 is None  # first click
    m = page.page.evaluate("([x, y]) => window.twin.measureAt(x, y)", list(page.to_window(b)))
    expected = float(np.linalg.norm(np.subtract(b, a)))
    assert m["distance"] == pytest.approx(expected, abs=2.0)
    assert m["height_difference"] == pytest.approx(b[2] - a[2], abs=1.0)
    assert "height difference" in (page.page.text_content("#measure") or "")


def test_url_carries_layers_and_camera(page: Page, browser: Any, server: ReleaseServer) -> None:
    page.page.wait_for_function("location.search.includes('cam=')", timeout=10_000)
    q = parse_qs(urlsplit(page.page.url).query)
    assert q["layers"] == ["aerial_points,buildings"]
    lon, lat, h, heading, pitch = map(float, q["cam"][0].split(","))
    frame = sample_frame()
    assert 100 < h < 2000 and 0 <= heading <= 360 and -90 <= pitch < 0  # framed on the data, looking down
    assert lon == pytest.approx(frame.lon, abs=0.01) and lat == pytest.approx(frame.lat, abs=0.01)

    # a shared link: only the buildings, styled by height, from a given camera
    cam = f"{frame.lon:.6f},{frame.lat - 0.002:.6f},400,0,-45"
    shared = Page(browser, f"{server.url}?lite=1&layers=buildings&style=buildings:height&cam={cam}")
    try:
        assert shared.ready["ok"], shared.ready
        layers = {lay["name"]: lay for lay in shared.ready["layers"]}
        assert layers["buildings"]["show"] and not layers["aerial_points"]["show"]
        assert layers["buildings"]["preset"] == "height"
        got = shared.page.evaluate(
            "(() => { const c = window.twin.viewer.camera.positionCartographic;"
            " return [c.longitude * 180 / Math.PI, c.latitude * 180 / Math.PI, c.height]; })()"
        )
        assert got == pytest.approx([frame.lon, frame.lat - 0.002, 400.0], abs=1e-4)
        assert shared.errors() == []
        assert "height" in (shared.page.text_content("#legend") or "")
    finally:
        shared.close()


@pytest.mark.slow
def test_full_mode_with_imagery(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Globe, sky and the release's own XYZ orthophoto as base layer: still offline and error-free."""
    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    rel = tmp_path_factory.mktemp("viewer_full") / "release"
    write_sample_release(rel, with_imagery=True, with_internal=False)
    write_viewer(rel, build_id="sample0000000000", cesium_build=cesium)
    srv = make_server(rel)
    srv.start_background()
    try:
        full = Page(browser, srv.url)
        try:
            assert full.ready["ok"], full.ready
            assert {lay["name"] for lay in full.ready["layers"]} == {"imagery", "aerial_points", "buildings"}
            full.page.wait_for_timeout(1500)  # let some imagery arrive
            xyz = [u for u in full.requests if "/imagery/xyz/" in u]
            assert xyz, "no orthophoto tile requested"
            local = f"http://127.0.0.1:{srv.server_address[1]}/"
            outside = [u for u in full.requests if not u.startswith((local, "data:", "blob:"))]
            assert outside == []
            assert full.errors() == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            full.page.screenshot(path=str(ARTIFACTS / "sample_full.png"))
        finally:
            full.close()
    finally:
        srv.shutdown()
        srv.server_close()


# ---- the real tiny district (configs/tiny.yaml + generate_demo), once the full build works ---------------


def _tile_matrix(tile: dict[str, Any]) -> np.ndarray:
    t = tile.get("transform")
    return np.array(t, dtype=np.float64).reshape(4, 4).T if t else np.eye(4)


def _building_candidates(release: Path, tileset_rel: str) -> list[tuple[str, np.ndarray]]:
    """(oid, ECEF roof centre) of the buildings of the first building GLB, largest roof first."""
    from pipeline.tiles.buildings_glb import read_building_table
    from pipeline.tiles.gltf import accessor_array, read_glb

    stack: list[tuple[dict[str, Any], np.ndarray, Path]] = []
    ts_path = release / tileset_rel
    stack.append((json.loads(ts_path.read_text())["root"], np.eye(4), ts_path.parent))
    glb_path, matrix = None, None
    while stack and glb_path is None:
        tile, parent, base = stack.pop(0)
        m = parent @ _tile_matrix(tile)
        for c in ([tile["content"]] if "content" in tile else []) + tile.get("contents", []):
            target = base / c["uri"]
            if target.suffix == ".json":
                stack.append((json.loads(target.read_text())["root"], m, target.parent))
            elif target.suffix == ".glb" and glb_path is None:
                glb_path, matrix = target, m
        stack.extend((ch, m, base) for ch in tile.get("children", []))
    assert glb_path is not None and matrix is not None, "no building GLB in the release"
    data = glb_path.read_bytes()
    js, binary = read_glb(data)
    table = read_building_table(data)
    oid_key = next(k for k in ("oid", "gml_id", "id") if k in table)
    out = []
    for node in js["nodes"]:
        if "mesh" not in node:
            continue
        assert "matrix" not in node and "rotation" not in node
        shift = np.array(node.get("translation", [0.0, 0.0, 0.0]))
        for prim in js["meshes"][node["mesh"]]["primitives"]:
            pos = accessor_array(js, binary, prim["attributes"]["POSITION"]).astype(np.float64) + shift
            enu = np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])  # glTF y-up -> z-up
            fid = accessor_array(js, binary, prim["attributes"]["_FEATURE_ID_0"]).astype(np.int64)
            for f in np.unique(fid):
                v = enu[fid == f]
                roof = v[v[:, 2] >= v[:, 2].max() - 0.05]
                size = float(np.ptp(roof[:, 0]) * np.ptp(roof[:, 1]))
                centre = np.array([roof[:, 0].mean(), roof[:, 1].mean(), roof[:, 2].max(), 1.0])
                out.append((size, str(table[oid_key][int(f)]), (matrix @ centre)[:3]))
    out.sort(key=lambda t: -t[0])
    return [(oid, ecef) for _, oid, ecef in out]


@pytest.mark.slow
def test_tiny_district_release(request: pytest.FixtureRequest, browser: Any) -> None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "configs" / "tiny.yaml").is_file():
        pytest.skip("configs/tiny.yaml not there yet (full build not wired up)")
    try:
        release: Path = request.getfixturevalue("tiny_release")
    except Exception as e:  # build failures are test_build_e2e's to report, not the viewer's
        pytest.skip(f"the tiny district does not build yet: {type(e).__name__}: {e}")
    manifest = json.loads((release / "manifest.json").read_text())
    assert (release / "viewer" / "index.html").is_file(), "the build did not generate the viewer"
    buildings = next(lay for lay in manifest["layers"] if lay["kind"] == "buildings" and lay.get("tileset"))
    srv = make_server(release)
    srv.start_background()
    try:
        page = Page(browser, srv.url + "?lite=1")
        try:
            assert page.ready["ok"], page.ready
            assert page.errors() == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "tiny_district_lite.png"
            page.page.screenshot(path=str(shot))
            counts = _hue_counts(shot)
            assert counts["not_background"] > 0.1 * counts["total"], counts
            # click a building (other layers hidden so nothing stands in front of its roof)
            for lay in page.ready["layers"]:
                if lay["name"] != buildings["name"]:
                    page.page.evaluate("(n) => window.twin.setVisible(n, false)", lay["name"])
            for oid, ecef in _building_candidates(release, buildings["tileset"])[:8]:
                xy = page.page.evaluate("(p) => window.twin.worldToWindow(p)", [float(v) for v in ecef])
                if xy is None or not (300 < xy[0] < VIEWPORT["width"] and 0 < xy[1] < VIEWPORT["height"]):
                    continue
                probe = page.page.evaluate("([x, y]) => window.twin.pickAt(x, y)", xy)
                if probe["kind"] != "feature" or str(probe["properties"].get("oid")) != oid:
                    continue
                page.page.mouse.click(xy[0], xy[1])
                page.page.wait_for_selector("#info:not([hidden])")
                assert page.page.text_content("#infoTable tr[data-prop=oid] td") == oid
                break
            else:
                pytest.fail("no building of the release could be clicked")
        finally:
            page.close()
    finally:
        srv.shutdown()
        srv.server_close()


# ---- palettes, classification, noise ---------------------------------------------------------------------


def _screenshot(page: Page) -> np.ndarray:
    """(H, W, 3) float RGB of a fresh screenshot."""
    import io

    from PIL import Image

    page.page.evaluate("window.twin.viewer.scene.requestRender()")
    page.page.wait_for_timeout(150)
    return np.asarray(Image.open(io.BytesIO(page.page.screenshot())).convert("RGB"), dtype=np.float64)


def _pixel(page: Page, x: float, y: float, r: int = 2) -> tuple[float, float, float]:
    """Median colour of a small square around a window position (a fresh screenshot)."""
    import io

    from PIL import Image

    page.page.evaluate("window.twin.viewer.scene.requestRender()")
    page.page.wait_for_timeout(150)
    img = np.asarray(Image.open(io.BytesIO(page.page.screenshot())).convert("RGB"), dtype=np.float64)
    xi, yi = round(x), round(y)
    patch = img[yi - r : yi + r + 1, xi - r : xi + r + 1].reshape(-1, 3)
    return tuple(float(v) for v in np.median(patch, axis=0))  # type: ignore[return-value]


def test_change_classes_render_in_palette_colours(browser: Any, server: ReleaseServer) -> None:
    from pipeline.styles.palettes import CHANGE_COLOURS
    from pipeline.viewer.sample import CHANGE_SAMPLE_Y, change_sample_centres

    frame = sample_frame()
    centre = frame.enu_to_ecef(np.array([-40.0, CHANGE_SAMPLE_Y, 0.0]))  # the row right of the panel
    import pyproj

    lon, lat, _h = pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(*centre)
    cam = f"{lon:.7f},{lat:.7f},{frame_ellipsoidal(frame) + GROUND_Z + 260:.1f},0,-90"
    p = Page(browser, f"{server.url}?lite=1&layers=change&cam={cam}")
    try:
        assert p.ready["ok"], p.ready
        assert p.page.evaluate("window.twin.layers.find(l => l.name === 'change').preset") == "style.json"
        legend = p.page.inner_text("#legend")
        # the legend says what the tiles, QGIS and the report say: raised blue, lowered orange
        items = p.page.eval_on_selector_all(
            "#legend .legend-group[data-layer=change] .legend-item",
            "els => els.map(e => [e.textContent.trim(), getComputedStyle(e.querySelector('.swatch')).backgroundColor])",
        )
        got = {lab: col for lab, col in items}
        for cls, rgba in CHANGE_COLOURS.items():
            assert got.get(cls) == f"rgb({rgba[0]}, {rgba[1]}, {rgba[2]})", (cls, got, legend)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.page.screenshot(path=str(ARTIFACTS / "change_classes.png"))
        seen = {}
        for cls, (cx, cy) in change_sample_centres().items():
            x, y = p.to_window((cx, cy, GROUND_Z + 6.0))
            seen[cls] = _pixel(p, x, y)
        (ARTIFACTS / "change_classes.json").write_text(json.dumps(seen))
        for cls, rgb in seen.items():
            # the palette colour under the scene's (fixed, from above) light on the roof: same hue and
            # saturation, a little darker. The old viewer multiplied its own class colour onto the baked
            # one (raised: blue x orange = dark green); the next one handed CesiumJS the sRGB colour as
            # if it were linear (raised #1f77b4 drawn as #55a9cd: paler and lighter than the legend)
            want_h, want_s, want_v = colorsys.rgb_to_hsv(*(np.array(CHANGE_COLOURS[cls][:3]) / 255.0))
            h, sat, val = colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))
            assert 0.8 * want_v < val < 1.02 * want_v + 0.01, (cls, rgb, CHANGE_COLOURS[cls])
            if want_s < 0.1:  # grey classes stay grey
                assert sat < 0.1, (cls, rgb)
                continue
            dh = abs(h - want_h) * 360.0
            assert min(dh, 360.0 - dh) < 12.0, (cls, rgb, CHANGE_COLOURS[cls])
            assert 0.85 * want_s < sat < 1.2 * want_s, (cls, rgb, CHANGE_COLOURS[cls])
        # grey classes differ by brightness only: absent (240) is drawn brighter than unchanged (190)
        assert np.mean(seen["absent"]) > np.mean(seen["unchanged"]) + 5, seen
    finally:
        p.close()


def test_parcels_render_translucent_in_grz_colours_with_a_legend(browser: Any, server: ReleaseServer) -> None:
    """The parcels overlay (GRZ colours baked into its tiles) is drawn by GRZ class from the palette, as
    QGIS's parcels.qml: the legend lists the classes drawn with the palette's labels and colours, each
    parcel shows its class's hue, and the parcels are translucent (the terrain shows through). The old
    viewer showed the baked colours opaque and without a legend."""
    import pyproj

    from pipeline.styles.palettes import GRZ, LAND_USE_COLOURS, PARCEL_OUTLINE
    from pipeline.viewer.sample import (
        PARCELS_SAMPLE_GRZ,
        PARCELS_SAMPLE_HALF,
        PARCELS_SAMPLE_STREET,
        parcels_sample_centres,
    )

    frame = sample_frame()
    centre = frame.enu_to_ecef(np.array([-20.0, parcels_sample_centres()[0][1], 0.0]))
    lon, lat, _h = pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(*centre)
    cam = f"{lon:.7f},{lat:.7f},{frame_ellipsoidal(frame) + GROUND_Z + 260:.1f},0,-90"
    p = Page(browser, f"{server.url}?lite=1&layers=parcels&cam={cam}")
    try:
        assert p.ready["ok"], p.ready
        assert p.page.evaluate("window.twin.layers.find(l => l.name === 'parcels').preset") == "grz"
        p.page.wait_for_function(
            "document.querySelectorAll('#legend .legend-group[data-layer=parcels] .legend-item').length >= 6",
            timeout=10_000,
        )
        items = p.page.eval_on_selector_all(
            "#legend .legend-group[data-layer=parcels] .legend-item",
            "els => els.map(e => [e.textContent.trim(), getComputedStyle(e.querySelector('.swatch')).backgroundColor])",
        )
        from pipeline.styles.palettes import LAND_USE

        traffic = next(e for e in LAND_USE if e.value == "traffic")
        want_items = [[traffic.label, "rgb({}, {}, {})".format(*traffic.rgba[:3])]]
        want_items += [[lab, f"rgb({c[0]}, {c[1]}, {c[2]})"] for _up, c, lab in GRZ]
        assert items == want_items, items
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        p.page.screenshot(path=str(ARTIFACTS / "parcels_grz.png"))
        for (cx, cy), grz in zip(parcels_sample_centres(), PARCELS_SAMPLE_GRZ, strict=True):
            rgb = np.array(_pixel(p, *p.to_window((cx, cy, GROUND_Z + 0.3))))
            want = np.array(next(c for up, c, _lab in GRZ if grz < up)[:3], dtype=np.float64)
            want_h, _s, _v = colorsys.rgb_to_hsv(*(want / 255.0))
            h, sat, _val = colorsys.rgb_to_hsv(*(rgb / 255.0))
            dh = abs(h - want_h) * 360.0
            assert min(dh, 360.0 - dh) < 12.0 and sat > 0.3, (grz, rgb, want)
            # translucent: drawn between the (unlit) palette colour and what lies below (the background)
            bg = np.array([0x1D, 0x23, 0x30], dtype=np.float64)
            assert np.linalg.norm(rgb - bg) < np.linalg.norm(want - bg) - 8, (grz, rgb, want)
        # the street parcel (GRZ 0, like the garden parcel GRZ 0.1) is drawn in the traffic colour
        street = np.array(_pixel(p, *p.to_window((*PARCELS_SAMPLE_STREET, GROUND_Z + 0.3))))
        garden = np.array(_pixel(p, *p.to_window((*parcels_sample_centres()[0], GROUND_Z + 0.3))))
        want = np.array(LAND_USE_COLOURS["traffic"][:3], dtype=np.float64)
        want_h, _s, _v = colorsys.rgb_to_hsv(*(want / 255.0))
        h, sat, _val = colorsys.rgb_to_hsv(*(street / 255.0))
        dh = abs(h - want_h) * 360.0
        assert min(dh, 360.0 - dh) < 12.0 and sat > 0.2, (street, want)
        assert np.linalg.norm(street - garden) > 40, (street, garden)
        # parcel edges: a light line (the outline colour) along the street parcel's eastern edge, where the
        # fill beside it is darker; searched across the edge (the line is one pixel wide)
        sx, sy = PARCELS_SAMPLE_STREET
        x0, y0 = p.to_window((sx + PARCELS_SAMPLE_HALF - 1.5, sy, GROUND_Z + 0.35))
        x1, y1 = p.to_window((sx + PARCELS_SAMPLE_HALF + 1.5, sy, GROUND_Z + 0.35))
        img = _screenshot(p)
        ts = np.linspace(0.0, 1.0, 25)
        row = np.array([img[round(y0 + t * (y1 - y0)), round(x0 + t * (x1 - x0))] for t in ts])
        outline = np.array(PARCEL_OUTLINE[:3], dtype=np.float64)
        dist = np.linalg.norm(row - outline, axis=1)
        assert dist.min() < 60, (row.tolist(), outline)
        assert np.linalg.norm(street - outline) > 100  # the fill itself is not the outline colour
        assert p.errors() == []
    finally:
        p.close()


def frame_ellipsoidal(frame: Any) -> float:
    """Ellipsoidal height of the frame origin (the sample's ground is GROUND_Z above it)."""
    import pyproj

    return float(
        pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(*frame.to_json()["origin_ecef"])[2]
    )


def test_legend_lists_the_classes_present_with_scheme_names(page: Page) -> None:
    from pipeline.point_attributes import ADV_CLASSES

    info = page.page.evaluate("window.twin.classes('aerial_points')")
    assert info["scheme"] == "adv"
    assert [c["code"] for c in info["classes"]] == [2, 18, 20]  # exactly the classes present
    rows = page.page.eval_on_selector_all(
        "#legend .legend-group[data-layer=aerial_points] .class-filter .legend-item",
        "els => els.map(e => [e.dataset.class, e.querySelector('.class-name').textContent,"
        " e.querySelector('input').checked])",
    )
    assert [r[0] for r in rows] == ["2", "18", "20"]
    for code, text, checked in rows:
        assert text.startswith(f"{code} {ADV_CLASSES[int(code)]}"), text
        assert checked == (code != "18"), (code, checked)  # noise off by default
    counts = {c["code"]: c["count"] for c in info["classes"]}
    assert counts == {2: 3501, 18: 289, 20: 99}


def _yellow(page: Page) -> int:
    import io

    from PIL import Image

    page.page.evaluate("window.twin.viewer.scene.requestRender()")
    page.page.wait_for_timeout(400)
    img = np.asarray(Image.open(io.BytesIO(page.page.screenshot())).convert("RGB"), dtype=np.int32)[
        :640, 300:
    ]
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(((r > 170) & (g > 170) & (b < 90) & (np.abs(r - g) < 50)).sum())


def test_noise_hidden_by_default_and_switchable(browser: Any, server: ReleaseServer) -> None:
    p = Page(browser, server.url + "?lite=1")  # a fresh page: no measure line or highlight (also yellow)
    try:
        assert p.ready["ok"], p.ready
        hidden = _yellow(p)
        p.page.evaluate("window.twin.setClassVisible('aerial_points', 18, true)")
        p.page.wait_for_timeout(800)
        shown = _yellow(p)
        assert p.page.is_checked("#legend .class-filter input[data-class='18']")
        p.page.uncheck("#legend .class-filter input[data-class='18']")  # the legend's switch
        p.page.wait_for_timeout(800)
        again = _yellow(p)
        assert hidden < 20 and again < 20, (hidden, again)
        assert shown > 1000, shown
    finally:
        p.close()


# ---- picking on tiles written by the point pipeline (quantized positions, several tiles and levels) ------


def _scalar_accessor(js: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """A SCALAR accessor of an interleaved vertex buffer (byteStride)."""
    acc = js["accessors"][index]
    view = js["bufferViews"][acc["bufferView"]]
    dt = np.dtype({5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}[acc["componentType"]])
    stride = view.get("byteStride", dt.itemsize)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    n = acc["count"]
    raw = np.frombuffer(binary, np.uint8, count=(n - 1) * stride + dt.itemsize, offset=start)
    return (
        np.ascontiguousarray(np.lib.stride_tricks.as_strided(raw, (n, dt.itemsize), (stride, 1)))
        .view(dt)
        .ravel()
    )


def _real_point_release(base: Path, fmt: str) -> tuple[Path, list[dict[str, Any]]]:
    """A release holding one point layer tiled by `tile_pointcloud`; returns it and points to click (ECEF,
    intensity, classification), each the highest point within 1.5 m so nothing covers it seen from above."""
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.orchestrate.points_run import tile_pointcloud
    from pipeline.tiles.gltf import decode_meshopt_views, read_glb
    from pipeline.tiles.points_reader import tile_positions_mm
    from pipeline.viewer.classes import class_stats
    from tests._synthetic_las import synthetic_points, write_las

    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    laz = write_las(base / "in.laz", synthetic_points(20_000, size=50.0, seed=3), point_format=3, scale=0.001)
    rel = base / "release"
    opts = PointTilingOptions(class_scheme="adv", max_points_per_tile=2500, format=fmt)
    tile_pointcloud([laz], rel / "aerial_points", opts)
    meta = json.loads((rel / "aerial_points" / "pointcloud.json").read_text())
    frame = meta["frame"]
    enu_l, inten_l, cls_l = [], [], []
    for glb in sorted((rel / "aerial_points").rglob("*.pnts")):  # 1.0: batch table columns
        data = glb.read_bytes()
        _m, _v, _t, ftj, ftb, btj, _btb = struct.unpack_from("<4sIIIIII", data, 0)
        bt = json.loads(data[28 + ftj + ftb : 28 + ftj + ftb + btj])
        n = json.loads(data[28 : 28 + ftj])["POINTS_LENGTH"]
        base_off = 28 + ftj + ftb + btj
        enu_l.append(tile_positions_mm(glb) / 1000.0)
        inten_l.append(np.frombuffer(data, np.uint16, n, base_off + bt["intensity"]["byteOffset"]))
        cls_l.append(np.frombuffer(data, np.uint8, n, base_off + bt["classification"]["byteOffset"]))
    glbs = sorted((rel / "aerial_points").rglob("*.glb"))
    # the default 1.1 tiles are meshopt-compressed (the viewer decodes them to pick): read them decoded
    assert all("EXT_meshopt_compression" in read_glb(g.read_bytes())[0]["extensionsUsed"] for g in glbs)
    for glb in glbs:
        js, binary = decode_meshopt_views(*read_glb(glb.read_bytes()))
        ext = js["extensions"]["EXT_structural_metadata"]["propertyAttributes"][0]["properties"]
        attrs = js["meshes"][0]["primitives"][0]["attributes"]
        enu_l.append(tile_positions_mm(glb) / 1000.0)
        inten_l.append(_scalar_accessor(js, binary, attrs[ext["intensity"]["attribute"]]))
        cls_l.append(_scalar_accessor(js, binary, attrs[ext["classification"]["attribute"]]))
    enu, inten, cls = np.vstack(enu_l), np.concatenate(inten_l), np.concatenate(cls_l)
    lon, lat = np.radians(frame["lon"]), np.radians(frame["lat"])
    east = np.array([-np.sin(lon), np.cos(lon), 0.0])
    north = np.array([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])
    up = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    ecef = np.array(frame["origin_ecef"]) + enu @ np.vstack([east, north, up])
    rng = np.random.default_rng(5)
    mid = np.median(enu[:, :2], axis=0)
    targets = []
    for i in rng.permutation(len(enu)):
        near = np.hypot(enu[:, 0] - enu[i, 0], enu[:, 1] - enu[i, 1]) < 1.5
        central = np.abs(enu[i, :2] - mid).max() < 15
        if central and enu[i, 2] >= enu[near, 2].max():
            targets.append(
                {
                    "ecef": ecef[i].tolist(),
                    "up": up.tolist(),
                    "intensity": int(inten[i]),
                    "classification": int(cls[i]),
                }
            )
        if len(targets) == 4:
            break
    manifest = {
        "name": "real tiles",
        "build_id": "real000000000000",
        "frame": frame,
        "layers": [
            {
                "name": "aerial_points",
                "kind": "pointcloud",
                "access": "public",
                "tileset": "aerial_points/tileset.json",
                "stats": {"points": meta["points"], **class_stats(rel, "aerial_points/tileset.json", "adv")},
                "warnings": [],
            }
        ],
    }
    (rel / "manifest.json").write_text(json.dumps(manifest))
    write_viewer(rel, build_id="real000000000000", cesium_build=cesium)
    return rel, targets


@pytest.mark.parametrize("fmt", ["1.1", "1.0"])
def test_pick_on_pipeline_point_tiles(browser: Any, tmp_path: Path, fmt: str) -> None:
    rel, targets = _real_point_release(tmp_path, fmt)
    assert len(targets) == 4
    srv = make_server(rel)
    srv.start_background()
    try:
        p = Page(browser, srv.url + "?lite=1")
        try:
            assert p.ready["ok"], p.ready
            for t in targets:
                # look straight down on the point from 60 m, wait for the tiles of that view
                p.page.evaluate(
                    """([e, u]) => { const v = window.twin.viewer;
                       const p = new Cesium.Cartesian3(e[0] + 60 * u[0], e[1] + 60 * u[1], e[2] + 60 * u[2]);
                       v.camera.setView({destination: p, orientation: {heading: 0, pitch: -Math.PI / 2, roll: 0}});
                       v.scene.requestRender(); }""",
                    [t["ecef"], t["up"]],
                )
                p.page.wait_for_function(
                    "() => { const l = window.twin.layers[0]; window.twin.viewer.scene.requestRender();"
                    " return l.tileset.tilesLoaded && l.visibleTiles.size > 0; }",
                    timeout=20_000,
                )
                p.page.wait_for_timeout(300)
                xy = p.page.evaluate("(q) => window.twin.worldToWindow(q)", t["ecef"])
                res = p.page.evaluate("([x, y]) => window.twin.pickAt(x, y)", xy)
                assert res["kind"] == "point", res
                d = float(np.linalg.norm(np.subtract(res["position"], t["ecef"])))
                assert d < 0.5, (d, res, t)
                assert res["properties"]["intensity"] == t["intensity"], (res, t)
                assert res["properties"]["classification"] == t["classification"], (res, t)
            assert p.errors() == []
        finally:
            p.close()
    finally:
        srv.shutdown()
        srv.server_close()
