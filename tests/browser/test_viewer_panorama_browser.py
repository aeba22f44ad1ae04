"""The street view in a real browser: click a recording position, see its 360° image, step along the track.

The release holds the tiny demo's panorama layer (four rendered images, internal) and the viewer; it is
served with `--internal` and loaded in lite mode with the camera above the positions. What each image shows
is known from the demo city (an independent shapely ray cast finds the first building at a bearing): the
panorama view turned to that bearing shows the building's facade colour at the centre of the screen.
Skipped when /usr/bin/chromium or CesiumJS is absent, like tests/browser/test_viewer_browser.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from pipeline.sources.demo import streetview as sv
from pipeline.viewer.build import find_cesium_build, write_viewer
from pipeline.viewer.serve import ReleaseServer, make_server
from tests._panorama_release import (
    PanoramaRelease,
    first_building,
    wall_band_elevations,
    write_panorama_release,
)
from tests.browser.test_viewer_browser import ARTIFACTS, CHROMIUM, FLAGS, READY_TIMEOUT_MS, VIEWPORT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (make chromium)"),
]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def pano_release(tmp_path_factory: pytest.TempPathFactory) -> PanoramaRelease:
    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    pr = write_panorama_release(tmp_path_factory.mktemp("pano_browser"), with_sample=False)
    viewer = write_viewer(pr.release, build_id="pano0000", cesium_build=cesium)
    m = json.loads((pr.release / "manifest.json").read_text())
    m["layers"].append(viewer.to_json())
    (pr.release / "manifest.json").write_text(json.dumps(m))
    return pr


@pytest.fixture(scope="module")
def server(pano_release: PanoramaRelease) -> Iterator[ReleaseServer]:
    srv = make_server(pano_release.release, internal=True)  # panoramas are internal
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def features(pano_release: PanoramaRelease) -> dict[str, dict[str, Any]]:
    gj = json.loads((pano_release.release / "panoramas" / "panoramas.geojson").read_text())
    return {f["id"]: f for f in gj["features"]}


@pytest.fixture(scope="module")
def page(server: ReleaseServer, pano_release: PanoramaRelease, features) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    ids = pano_release.image_ids
    lon = np.mean([features[i]["geometry"]["coordinates"][0] for i in ids])
    lat = np.mean([features[i]["geometry"]["coordinates"][1] for i in ids])
    h = features[ids[0]]["geometry"]["coordinates"][2] + 110.0
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        pg = b.new_page(viewport=VIEWPORT)
        pg.console_messages = []  # type: ignore[attr-defined]
        pg.on("console", lambda m: pg.console_messages.append((m.type, m.text)))
        pg.on("pageerror", lambda e: pg.console_messages.append(("pageerror", str(e))))
        pg.goto(f"{server.url}?lite=1&cam={lon:.7f},{lat:.7f},{h:.1f},0,-90")
        ready = pg.evaluate(
            "Promise.race([window.twin.ready, new Promise((_, rej) => "
            f"setTimeout(() => rej('twin.ready timed out'), {READY_TIMEOUT_MS}))])"
        )
        assert ready["ok"], ready
        yield pg
        b.close()


def _window_xy(page: Any, feature: dict[str, Any]) -> tuple[float, float]:
    lon, lat, h = feature["geometry"]["coordinates"]
    ecef = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True).transform(lon, lat, h)
    xy = page.evaluate("(p) => window.twin.worldToWindow(p)", [float(v) for v in ecef])
    assert xy is not None
    return float(xy[0]), float(xy[1])


def _wait_loaded(page: Any, image_id: str) -> dict[str, Any]:
    page.wait_for_function(
        "(id) => { const s = window.twin.panorama && window.twin.panorama.state(); "
        "return s && s.open && s.loaded && s.image_id === id; }",
        arg=image_id,
        timeout=TIMEOUT_MS,
    )
    return page.evaluate("window.twin.panorama.state()")


def _centre_rgb(page: Any, name: str) -> np.ndarray:
    from PIL import Image

    png = page.locator("#panoCanvas").screenshot()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"panorama_{name}.png").write_bytes(png)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    h, w, _ = img.shape
    return img[h // 2 - 2 : h // 2 + 3, w // 2 - 2 : w // 2 + 3].reshape(-1, 3).mean(axis=0)


def _facade_checks(
    page: Any,
    pr: PanoramaRelease,
    feature: dict[str, Any],
    name: str,
    limit: int = 3,
    seen: set[tuple[float, ...]] | None = None,
) -> int:
    """Turn the view to bearings where the ray cast finds a building; the screen centre shows its facade
    colour. Bearings relative to the heading: the image centre is the heading, whatever north it uses."""
    row = next(r for r in pr.rows if r[5] == feature["id"])
    _t, x, y, z, heading_grid, _ = row
    heading_true = feature["properties"]["heading_true"]
    done = 0
    for rel in range(-180, 180, 5):
        hit = first_building(pr.city, x, y, heading_grid + rel, z=z)
        if hit is None or hit[1] < 3.0:
            continue
        i, d = hit
        fade = min(0.35, d / 600.0)
        want = sv.facade_colour(i) * (1 - fade) + sv.SKY_HORIZON * fade
        ok = []
        for elev in wall_band_elevations(pr.city, i, d, z):
            page.evaluate("([y, p]) => window.twin.panorama.look(y, p, 20)", [heading_true + rel, elev])
            got = _centre_rgb(page, f"{name}_{rel}_{elev:.1f}")
            ok.append(float(np.abs(got - want).max()))
        assert min(ok) < 18, (feature["id"], rel, i, round(d, 2), want, ok)
        if seen is not None:
            seen.add(tuple(sv.facade_colour(i)))
        done += 1
        if done >= limit:
            break
    return done


def test_click_opens_panorama_oriented_by_heading(page: Any, pano_release: PanoramaRelease, features) -> None:
    pr = pano_release
    target = features[pr.image_ids[1]]
    x, y = _window_xy(page, target)
    page.mouse.click(x, y)
    st = _wait_loaded(page, target["id"])
    assert page.locator("#pano").is_visible()
    # oriented by its heading: the view opens facing the image centre, the heading from true north
    assert st["heading"] == pytest.approx(target["properties"]["heading_true"], abs=1e-6)
    assert st["heading_delivered"] == target["properties"]["heading"]
    assert abs(st["heading"] - st["heading_delivered"]) > 1.0  # grid vs true north really differ here
    assert st["yaw"] == pytest.approx(st["heading"], abs=1e-6) and st["pitch"] == 0
    assert (st["index"], st["count"]) == (1, 4) and st["track"] == target["properties"]["track"]
    assert st["image"] == target["properties"]["image"]
    # what the image shows, at the bearings the scene says
    seen: set[tuple[float, ...]] = set()
    assert _facade_checks(page, pr, target, "open", seen=seen) >= 2
    # where the scene has no building in view, the facade colour is absent (a turned or mirrored view fails)
    _t, x, y, _z, heading_grid, _ = next(r for r in pr.rows if r[5] == target["id"])
    empty = []
    for rel in range(-180, 180, 10):
        b = np.radians(heading_grid + rel)
        end = (x + sv.VIEW_RANGE * np.sin(b), y + sv.VIEW_RANGE * np.cos(b))
        ray = shapely.LineString([(x, y), end])
        if not any(ray.intersects(s.geom) for s in pr.city.structures if s.present[1]):
            empty.append(rel)
    assert len(empty) >= 3
    for rel in empty[:: max(1, len(empty) // 3)][:3]:
        page.evaluate("([y, p]) => window.twin.panorama.look(y, p, 20)", [st["heading"] + rel, -3.0])
        got = _centre_rgb(page, f"empty_{rel}")
        assert min(float(np.abs(got - np.array(c)).max()) for c in seen) > 15, (rel, got)
    # the sky straight up, the recording vehicle straight down
    page.evaluate("(y) => window.twin.panorama.look(y, -89, 40)", st["heading"])
    assert np.abs(_centre_rgb(page, "nadir") - sv.VEHICLE_RGB).max() < 12
    assert not [m for m in page.console_messages if m[0] in ("error", "pageerror")]


def test_step_along_the_track_and_close(page: Any, pano_release: PanoramaRelease, features) -> None:
    pr = pano_release
    ids = pr.image_ids
    page.evaluate("(id) => window.twin.panorama.open(id)", ids[1])
    st = _wait_loaded(page, ids[1])
    page.evaluate("(y) => window.twin.panorama.look(y, 0, 75)", st["heading"] + 30.0)
    page.click("#panoNext")
    nxt = _wait_loaded(page, ids[2])
    assert nxt["sequence"] == st["sequence"] + 1 and nxt["index"] == 2
    assert nxt["image"] != st["image"] and nxt["image"] == features[ids[2]]["properties"]["image"]
    assert nxt["yaw"] == pytest.approx((st["heading"] + 30.0) % 360, abs=1e-6)  # stepping keeps the view
    assert _facade_checks(page, pr, features[ids[2]], "next", limit=1) == 1
    page.click("#panoNext")
    last = _wait_loaded(page, ids[3])
    assert page.locator("#panoNext").is_disabled() and not page.locator("#panoPrev").is_disabled()
    page.click("#panoPrev")
    assert _wait_loaded(page, ids[2])["index"] == 2
    assert last["index"] == 3
    page.click("#panoClose")
    assert not page.locator("#pano").is_visible()
    assert page.evaluate("window.twin.panorama.state()")["open"] is False


def test_pano_url_parameter_opens_it(server: ReleaseServer, pano_release: PanoramaRelease, page: Any) -> None:
    image_id = pano_release.image_ids[0]
    page.goto(f"{server.url}?lite=1&pano={image_id}")
    st = _wait_loaded(page, image_id)
    assert st["index"] == 0 and page.locator("#panoPrev").is_disabled()
    page.keyboard.press("Escape")
    assert not page.locator("#pano").is_visible()


def test_public_view_has_no_panoramas(pano_release: PanoramaRelease) -> None:
    """Without --internal the server answers 404 for the images and the list (their paths are internal)."""
    import urllib.error
    import urllib.request

    srv = make_server(pano_release.release, internal=False)
    srv.start_background()
    try:
        for rel in [
            pano_release.layer.files[0],
            *[f for f in pano_release.layer.files if f.endswith(".jpg")],
        ]:
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(f"{srv.url.rsplit('/viewer/', 1)[0]}/{rel}", timeout=10)
            assert ei.value.code == 404, rel
    finally:
        srv.shutdown()
        srv.server_close()
