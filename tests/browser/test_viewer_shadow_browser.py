"""The viewer's shadow study in a real browser (Debian chromium, headless, SwiftShader WebGL2, Playwright).

A crafted release (`pipeline.viewer.sample.write_sample_shadow_release`: one 20 m tower on dense light-grey
ground points, and a 12 m high block of vegetation points north-east of it) is loaded in lite mode. On midsummer
morning (08:00 CEST, sun in the east) the tower's shadow lies west of it, in the evening (19:00 CEST, sun in
the west) east of it; so do the shadows of the point block. The test reads pixels of the ground beside
the tower and the block at both times: a viewer without shadows (or with the sun at the wrong place)
fails. Skipped only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.viewer.build import find_cesium_build, write_viewer
from pipeline.viewer.sample import (
    GROUND_Z,
    SHADOW_POINT_BLOCK,
    SHADOW_TOWER,
    sample_frame,
    write_sample_shadow_release,
)
from pipeline.viewer.serve import ReleaseServer, make_server
from tests.browser.test_viewer_browser import ARTIFACTS, CHROMIUM, FLAGS, VIEWPORT

DAY = "2026-06-21"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (make chromium)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseServer]:
    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    rel = tmp_path_factory.mktemp("viewer_shadow") / "release"
    write_sample_shadow_release(rel)
    write_viewer(rel, build_id="shadow0000000000", cesium_build=cesium)
    srv = make_server(rel, internal=False)
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def page(server: ReleaseServer) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        pg = browser.new_page(viewport=VIEWPORT)
        pg.errors = []
        pg.requests = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
        pg.on("request", lambda r: pg.requests.append(r.url))
        pg.goto(server.url + "?lite=1")
        ready = pg.evaluate(
            "Promise.race([window.twin.ready, new Promise((_, rej) => setTimeout(() => rej('twin.ready timed out'), 60000))])"
        )
        assert ready["ok"], ready
        yield pg
        browser.close()


def _luminance(pg: Any, name: str) -> np.ndarray:
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = pg.screenshot(path=str(ARTIFACTS / f"shadow_{name}.png"))
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def _area_pixels(pg: Any, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    """Window pixel positions (col, row) of a 5 x 5 grid over a ground rectangle (ENU metres)."""
    frame = sample_frame()
    out = []
    for e in np.linspace(*x, 5):
        for n in np.linspace(*y, 5):
            ecef = frame.enu_to_ecef(np.array([e, n, GROUND_Z], dtype=np.float64))
            xy = pg.evaluate("(p) => window.twin.worldToWindow(p)", [float(v) for v in ecef])
            assert xy is not None
            out.append((round(xy[0]), round(xy[1])))
    px = np.array(out)
    assert (px[:, 0] > 300).all() and (px[:, 0] < VIEWPORT["width"]).all(), px  # right of the panel
    assert (px[:, 1] > 0).all() and (px[:, 1] < VIEWPORT["height"] - 30).all(), px
    return px


def _median(lum: np.ndarray, px: np.ndarray) -> float:
    """Median luminance over 3 x 3 pixel patches at `px`."""
    vals = [lum[r - 1 : r + 2, c - 1 : c + 2].ravel() for c, r in px]
    return float(np.median(np.concatenate(vals)))


def test_default_is_today_noon_berlin_without_shadows(page: Any) -> None:
    st = page.evaluate("window.twin.sun.state()")
    now = dt.datetime.now(dt.UTC)
    # today in Berlin (CET/CEST) is today or yesterday/tomorrow in UTC around midnight
    days = {(now + dt.timedelta(hours=h)).date().isoformat() for h in (1, 2)}
    assert st["date"] in days and st["time"] == "12:00", st
    assert st["on"] is False and st["shadows"] is False
    assert page.input_value("#sunDate") == st["date"]
    assert page.input_value("#sunTime") == "720"
    utc = dt.datetime.fromisoformat(st["utc"].replace("Z", "+00:00"))
    assert utc.hour == 12 - st["utc_offset_minutes"] // 60 and utc.minute == 0
    # Europe/Berlin: CET in winter, CEST (summer time, EU rule) from the last Sunday of March
    conv = "([d, t]) => window.twin.sun.berlinToUtc(d, t)"
    assert page.evaluate(conv, ["2026-01-15", "12:00"]) == "2026-01-15T11:00:00.000Z"
    assert page.evaluate(conv, [DAY, "09:00"]) == "2026-06-21T07:00:00.000Z"
    assert page.evaluate(conv, ["2026-03-29", "03:00"]) == "2026-03-29T01:00:00.000Z"  # first CEST hour
    assert page.evaluate(conv, ["2026-03-28", "03:00"]) == "2026-03-28T02:00:00.000Z"
    assert page.evaluate(conv, ["2026-10-25", "12:00"]) == "2026-10-25T11:00:00.000Z"  # back to CET


def test_shadows_move_from_west_to_east(page: Any) -> None:
    tw = SHADOW_TOWER.size[0]
    west = _area_pixels(page, (-tw / 2 - 12, -tw / 2 - 4), (-5.0, 5.0))
    east = _area_pixels(page, (tw / 2 + 4, tw / 2 + 12), (-5.0, 5.0))
    (hx0, hx1), (hy0, hy1), _ = SHADOW_POINT_BLOCK
    # the shadows of the point block fall a little south of west / east (sun azimuth 80° / 279°)
    block_w = _area_pixels(page, (hx0 - 12, hx0 - 6), (hy0 + 1, hy1 - 2))
    block_e = _area_pixels(page, (hx1 + 6, hx1 + 12), (hy0 + 1, hy1 - 2))

    lum = _luminance(page, "off")
    off = {k: _median(lum, v) for k, v in (("w", west), ("e", east), ("hw", block_w), ("he", block_e))}
    # without shadows the ground is evenly lit on both sides
    assert abs(off["w"] - off["e"]) < 10 and abs(off["hw"] - off["he"]) < 10, off

    morning = page.evaluate(f"window.twin.sun.set('{DAY}', '08:00')")
    assert morning["on"] and morning["shadows"] and morning["utc"] == "2026-06-21T06:00:00.000Z"
    assert 20 < morning["elevation"] < 25 and 70 < morning["azimuth"] < 90, morning  # low in the east
    lum = _luminance(page, "morning")
    am = {k: _median(lum, v) for k, v in (("w", west), ("e", east), ("hw", block_w), ("he", block_e))}

    evening = page.evaluate(f"window.twin.sun.set('{DAY}', '19:00')")
    assert 270 < evening["azimuth"] < 290 and evening["elevation"] > 15, evening  # low in the west
    lum = _luminance(page, "evening")
    pm = {k: _median(lum, v) for k, v in (("w", west), ("e", east), ("hw", block_w), ("he", block_e))}
    print(f"luminance off {off}, 08:00 {am}, 19:00 {pm}")

    # the tower (buildings) shades the west side in the morning, the east side in the evening
    assert am["w"] < 0.75 * pm["w"], (am, pm)
    assert pm["e"] < 0.75 * am["e"], (am, pm)
    assert am["w"] < 0.75 * am["e"] and pm["e"] < 0.75 * pm["w"], (am, pm)
    # so does the block of points (point clouds cast shadows too)
    assert am["hw"] < 0.75 * pm["hw"] and pm["he"] < 0.75 * am["he"], (am, pm)
    # the URL keeps the study; switching it off restores the even light
    assert "sun=2026-06-21T19:00" in page.evaluate(
        "new Promise((r) => setTimeout(() => r(location.href), 400))"
    )
    page.evaluate("window.twin.sun.set(null, null, false)")
    lum = _luminance(page, "off_again")
    assert abs(_median(lum, west) - _median(lum, east)) < 10
    assert page.errors == []
    outside = [
        u for u in page.requests if not u.startswith("http://127.0.0.1:") and not u.startswith("data:")
    ]
    assert outside == []  # offline: no ion, no CDN, no time-zone or ephemeris service


def test_time_slider_and_date_picker_drive_the_clock(page: Any) -> None:
    page.fill("#sunDate", "2026-12-21")
    page.dispatch_event("#sunDate", "change")
    page.evaluate(
        "(() => { const s = document.querySelector('#sunTime'); s.value = '600'; "
        "s.dispatchEvent(new Event('input')); })()"
    )
    st = page.evaluate("window.twin.sun.state()")
    assert st["on"] and st["date"] == "2026-12-21" and st["time"] == "10:00", st
    assert st["utc"] == "2026-12-21T09:00:00.000Z"
    assert 5 < st["elevation"] < 12, st  # winter morning sun in the Ruhr is low
    jd = page.evaluate("Cesium.JulianDate.toIso8601(window.twin.viewer.clock.currentTime, 0)")
    assert jd == "2026-12-21T09:00:00Z"
    assert "10:00 CET" in (page.text_content("#sunClock") or "")
