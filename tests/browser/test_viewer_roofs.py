"""The viewer's LoD2 building styles in a real browser (Debian chromium, headless, as test_viewer_browser).

A release with one building per roof type (written by the buildings layer's own tile writer, with the
`_SURFACE` property attribute and the LoD2 property table) is served and viewed from above: each roof
type renders in its palette colour, the legend lists the roof types present, the model-source and
surface presets colour by their palettes, and a click shows the roof attributes with labels and units.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.styles import palettes as P
from pipeline.viewer.build import find_cesium_build, write_viewer
from pipeline.viewer.sample import (
    GROUND_Z,
    SAMPLE_ROOF_SIZE,
    SAMPLE_ROOFS,
    sample_frame,
    write_sample_roofs_release,
)
from pipeline.viewer.serve import ReleaseServer, make_server
from tests.browser.test_viewer_browser import ARTIFACTS, CHROMIUM, FLAGS, Page, _pixel, frame_ellipsoidal

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed (make chromium)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseServer]:
    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    rel = tmp_path_factory.mktemp("viewer_roofs") / "release"
    write_sample_roofs_release(rel)
    write_viewer(rel, build_id="sample0000000001", cesium_build=cesium)
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


def _cam(east: float, north: float, above: float, pitch: float = -90.0) -> str:
    import pyproj

    frame = sample_frame()
    ecef = frame.enu_to_ecef(np.array([east, north, 0.0]))
    lon, lat, _h = pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(*ecef)
    return f"{lon:.7f},{lat:.7f},{frame_ellipsoidal(frame) + GROUND_Z + above:.1f},0,{pitch}"


@pytest.fixture(scope="module")
def page(browser: Any, server: ReleaseServer) -> Iterator[Page]:
    # from above, the buildings right of the layer panel
    p = Page(browser, f"{server.url}?lite=1&style=buildings:roof_type&cam={_cam(-32.0, 0.0, 190.0)}")
    yield p
    p.close()


def _roof_xy(p: Page, east: float, north: float, height: float) -> tuple[float, float]:
    return p.to_window((east, north, GROUND_Z + height))


def _hue_dist(a: float, b: float) -> float:
    d = abs(a - b) * 360.0
    return min(d, 360.0 - d)


def _same_hue(
    rgb: tuple[float, float, float], want: tuple[int, ...], what: str, others: tuple[Any, ...] = ()
) -> None:
    """The palette colour under the scene's light: its hue within 20 degrees and nearer to it than to any
    other colour of the palette (`others`; light changes value and saturation, hue only a little); grey
    stays grey."""
    want_h, want_s, _ = colorsys.rgb_to_hsv(*(np.array(want[:3]) / 255.0))
    h, sat, val = colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))
    assert val > 0.25, (what, rgb)
    if want_s < 0.1:
        assert sat < 0.1, (what, rgb, want)
        return
    assert _hue_dist(h, want_h) < 20.0 and sat > 0.5 * want_s, (what, rgb, want)
    for o in others:
        oh, os_, _ = colorsys.rgb_to_hsv(*(np.array(o[:3]) / 255.0))
        if os_ >= 0.1 and tuple(o[:3]) != tuple(want[:3]):
            assert _hue_dist(h, want_h) < _hue_dist(h, oh), (what, rgb, want, o)


LEGEND_ITEMS = "document.querySelectorAll('#legend .legend-group[data-layer=buildings] .legend-item')"


def _legend(p: Page) -> list[tuple[str, str, str]]:
    return p.page.eval_on_selector_all(
        "#legend .legend-group[data-layer=buildings] .legend-item",
        "els => els.map(e => [e.dataset.value, e.textContent.trim(), "
        "getComputedStyle(e.querySelector('.swatch')).backgroundColor])",
    )


def _rgb_css(rgba: tuple[int, ...]) -> str:
    return f"rgb({rgba[0]}, {rgba[1]}, {rgba[2]})"


def test_presets_offered_for_lod2_buildings(page: Page) -> None:
    assert page.ready["ok"], page.ready
    lay = next(lay for lay in page.ready["layers"] if lay["name"] == "buildings")
    assert lay["preset"] == "roof_type" and lay["selected"] >= 1
    presets = page.page.evaluate("window.twin.layers.find(l => l.name === 'buildings').presets")
    # the property table is read even though the tiles' first metadata owner is the surface attribute
    assert {"style.json", "function", "roof_type", "source", "surfaces"} <= set(presets), presets
    options = page.page.eval_on_selector_all(
        ".layer[data-layer=buildings] select option", "els => els.map(e => e.textContent)"
    )
    assert "by roof type" in options and "by model source" in options and "by function" in options
    assert page.errors() == []


def test_each_roof_type_renders_in_its_palette_colour(page: Page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "roof_types.png"))
    shown = tuple(P.ROOF_TYPE_COLOURS[r.roof_type] for r in SAMPLE_ROOFS if r.roof_type)
    for r in SAMPLE_ROOFS:
        rgb = _pixel(page, *_roof_xy(page, *r.centre, r.height))
        want = P.ROOF_TYPE_COLOURS[r.roof_type] if r.roof_type else P.ROOF_NONE
        # told apart from every roof type the legend shows
        _same_hue(rgb, want, r.roof_type or "no roof", shown)
    # grey classes differ by brightness: an LoD1 box (240) is drawn brighter than a flat roof (150)
    flat = next(r for r in SAMPLE_ROOFS if r.roof_type == "flat")
    box = next(r for r in SAMPLE_ROOFS if not r.roof_type)
    assert np.mean(_pixel(page, *_roof_xy(page, *box.centre, box.height))) > 20 + np.mean(
        _pixel(page, *_roof_xy(page, *flat.centre, flat.height))
    )


def test_legend_lists_the_roof_types_present(page: Page) -> None:
    items = _legend(page)
    present = [r.value for r in P.ROOF_TYPES if any(s.roof_type == r.value for s in SAMPLE_ROOFS)]
    # exactly the types present, in palette order, then the LoD1 boxes; AdV names and codes
    assert [v for v, _l, _c in items] == [*present, ""], items
    by_value = {v: (label, css) for v, label, css in items}
    for r in P.ROOF_TYPES:
        if r.value in by_value:
            assert by_value[r.value] == (r.label, _rgb_css(r.rgba)), r
    assert by_value["gable"][0] == "Satteldach / gable (3100)"
    assert by_value[""] == (P.ROOF_NONE_LABEL, _rgb_css(P.ROOF_NONE))
    assert "half_hip" in by_value and "cone" not in by_value  # absent types are not listed


def test_model_source_and_surface_presets(page: Page) -> None:
    try:
        page.page.evaluate("window.twin.setPreset('buildings', 'source')")
        # the legend lists the sources of the features drawn (updated once they are styled)
        page.page.wait_for_function(f"{LEGEND_ITEMS}.length === 3", timeout=10_000)
        items = _legend(page)
        colours = {str(e.value): e.rgba for e in P.LOD_SOURCE}
        assert [v for v, _l, _c in items] == [str(e.value) for e in P.LOD_SOURCE], items
        assert all(css == _rgb_css(colours[v]) for v, _l, css in items)
        for r in SAMPLE_ROOFS:
            rgb = _pixel(page, *_roof_xy(page, *r.centre, r.height))
            _same_hue(rgb, colours[r.lod_source], r.lod_source, tuple(colours.values()))

        page.page.evaluate("window.twin.setPreset('buildings', 'surfaces')")
        page.page.wait_for_timeout(300)
        assert [v for v, _l, _c in _legend(page)] == ["0", "1", "2"]
        roof = dict((str(e.value), e.rgba) for e in P.SURFACE)["0"]
        for r in SAMPLE_ROOFS[:3]:  # every roof in the roof colour, whatever its type
            _same_hue(_pixel(page, *_roof_xy(page, *r.centre, r.height)), roof, "roof surface")
    finally:
        page.page.evaluate("window.twin.setPreset('buildings', 'roof_type')")


def test_walls_in_the_wall_colour(browser: Any, server: ReleaseServer) -> None:
    # oblique view from the south onto the south walls of the front row
    p = Page(browser, f"{server.url}?lite=1&style=buildings:surfaces&cam={_cam(-32.0, -150.0, 60.0, -20.0)}")
    try:
        assert p.ready["ok"], p.ready
        wall = dict((str(e.value), e.rgba) for e in P.SURFACE)["1"]
        r = next(r for r in SAMPLE_ROOFS if r.centre[1] < 0 and r.roof_type)
        x, y = p.to_window((r.centre[0], r.centre[1] - SAMPLE_ROOF_SIZE / 2, GROUND_Z + r.height / 2))
        p.page.screenshot(path=str(ARTIFACTS / "roof_surfaces_walls.png"))
        rgb = _pixel(p, x, y)
        h, sat, val = colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))
        want_h, _want_s, _ = colorsys.rgb_to_hsv(*(np.array(wall[:3]) / 255.0))
        # the wall colour (pale, warm), shaded: not the roof's red, hue within the wall's
        assert sat < 0.4 and val > 0.2, rgb
        dh = abs(h - want_h) * 360.0
        assert sat < 0.05 or min(dh, 360.0 - dh) < 20.0, (rgb, wall)
    finally:
        p.close()


def _rows(p: Page) -> dict[str, tuple[str, str]]:
    rows = p.page.eval_on_selector_all(
        "#infoTable tr",
        "els => els.map(e => [e.dataset.prop, e.cells[0].textContent, e.cells[1].textContent])",
    )
    return {k: (label, value) for k, label, value in rows}


def test_pick_shows_roof_attributes_with_labels_and_units(page: Page) -> None:
    gable = next(r for r in SAMPLE_ROOFS if r.roof_type == "gable")
    page.page.mouse.click(*_roof_xy(page, *gable.centre, gable.height))
    page.page.wait_for_selector("#info:not([hidden])", timeout=10_000)
    rows = _rows(page)
    assert rows["oid"][1] == gable.oid
    assert rows["roof_type"][1] == "gable"
    assert rows["roof_type_name"] == ("roof type (Dachform)", "Satteldach / gable (AdV 3100)")
    assert rows["roof_type_code"] == ("roof type code (AdV)", "3100")
    ridge = GROUND_Z + gable.height
    assert rows["ridge_height"][0] == "ridge height (absolute, DHHN2016, m)"
    assert float(rows["ridge_height"][1]) == pytest.approx(ridge)
    assert rows["eave_height"][0] == "eave height (absolute, DHHN2016, m)"
    assert float(rows["eave_height"][1]) == pytest.approx(ridge - 3.0)
    assert rows["eave_height_above_ground"] == (
        "eave height (relative to ground, above the base, m)",
        f"{gable.height - 3.0:.2f}",
    )
    assert float(rows["ridge_height_above_ground"][1]) == pytest.approx(gable.height)
    assert rows["roof_rmse"][0] == "roof fit RMSE (m)" and float(rows["roof_rmse"][1]) == pytest.approx(0.07)
    assert rows["roof_n_points"] == ("roof points in the fit", "312")
    assert rows["lod_source"] == ("model source", "reconstructed")
    assert rows["lod_source_name"][1] == "reconstructed from the survey (LoD2)"

    box = next(r for r in SAMPLE_ROOFS if r.lod_source == "lod1_fallback")
    got = page.page.evaluate(
        "([x, y]) => window.twin.pickAt(x, y)", list(_roof_xy(page, *box.centre, box.height))
    )
    assert got["kind"] == "feature" and got["properties"]["oid"] == box.oid, got
    rows = _rows(page)
    assert rows["lod2_fallback_reason"] == ("LoD2 fallback reason", "too_few_points")
    assert rows["lod_source_name"][1] == "LoD1 fallback (box)"
    assert "roof_type_name" not in rows and "eave_height_above_ground" not in rows
    page.page.evaluate("window.twin.pickAt(990, 20)")


def test_palettes_json_and_styles_carry_the_roof_palettes(tmp_path: Path) -> None:
    from pipeline.styles.qml import STYLES_DIR

    pal = P.viewer_palettes()
    assert [c["value"] for c in pal["roof_type"]["classes"]] == [r.value for r in P.ROOF_TYPES]
    assert {c["code"] for c in pal["roof_type"]["classes"]} >= {
        "1000",
        "2100",
        "3100",
        "3200",
        "3300",
        "3400",
        "3500",
        "5000",
    }
    # 3D Tiles style: an LoD1 box is never coloured as a roof type, then one condition per type
    conds = P.roof_type_style()["color"]["conditions"]
    assert conds[0] == ["${lod_source} === 'lod1_fallback'", f"color('{P.hex_colour(P.ROOF_NONE)}')"]
    assert conds[3] == ["${roof_type} === 'gable'", "color('#d62728')"]
    qml = (STYLES_DIR / "buildings_roof_type.qml").read_text(encoding="utf-8")
    assert 'attr="roof_type"' in qml and 'label="Satteldach / gable (3100)"' in qml
    assert 'value="214,39,40,255"' in qml
    # the six reconstructed shapes are told apart by hue (>= 25 degrees), flat by being grey
    hues = []
    for r in P.ROOF_TYPES:
        if r.value in ("shed", "gable", "hip", "pyramid", "multi"):
            hues.append(colorsys.rgb_to_hsv(*(np.array(r.rgba[:3]) / 255.0))[0] * 360)
    diffs = [min(abs(a - b), 360 - abs(a - b)) for i, a in enumerate(hues) for b in hues[i + 1 :]]
    assert min(diffs) >= 25, hues


def test_lod2_styles_beside_the_buildings_layer(tmp_path: Path) -> None:
    import json

    from pipeline.orchestrate.buildings import write_lod2_styles
    from pipeline.styles.qml import STYLES_DIR
    from pipeline.tiles.tileset import schema_errors

    files = write_lod2_styles(tmp_path)
    assert files == [
        "style_roof_type.json",
        "buildings_roof_type.qml",
        "style_lod_source.json",
        "buildings_lod_source.qml",
    ]
    for f in files:
        if f.endswith(".json"):
            style = json.loads((tmp_path / f).read_text())
            assert schema_errors(style, "Styling/style.schema.json") == [], f
        else:
            assert (tmp_path / f).read_bytes() == (STYLES_DIR / f).read_bytes()
    assert json.loads((tmp_path / "style_roof_type.json").read_text()) == P.roof_type_style()
    source = json.loads((tmp_path / "style_lod_source.json").read_text())["color"]["conditions"]
    assert source[0] == [
        "${lod_source} === 'reconstructed'",
        f"color('{P.hex_colour(P.LOD_SOURCE[0].rgba)}')",
    ]


def test_buildings_gpkg_keeps_function_default_and_carries_the_lod2_styles(tmp_path: Path) -> None:
    import sqlite3

    import geopandas as gpd
    import shapely

    from pipeline.orchestrate.buildings import write_gpkg
    from pipeline.styles.gpkg import default_styles
    from pipeline.styles.qml import STYLES_DIR

    gdf = gpd.GeoDataFrame(
        {"oid": ["a", "b"], "funktion_gruppe": ["Wohngebäude", "Garage"], "roof_type": ["gable", ""]},
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)],
        crs="EPSG:25832",
    )
    gpkg = tmp_path / "buildings.gpkg"
    write_gpkg(gpkg, gdf)
    function = (STYLES_DIR / "buildings_function.qml").read_text(encoding="utf-8")
    assert default_styles(gpkg) == {"buildings": function}
    con = sqlite3.connect(gpkg)
    try:
        rows = con.execute(
            "SELECT styleName, useAsDefault, styleQML FROM layer_styles WHERE f_table_name = 'buildings' ORDER BY id"
        ).fetchall()
        count = con.execute(
            "SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    finally:
        con.close()
    assert [(n, d) for n, d, _q in rows] == [
        ("buildings", 1),
        ("buildings by model source", 0),
        ("buildings by roof type", 0),
    ]
    assert rows[2][2] == (STYLES_DIR / "buildings_roof_type.qml").read_text(encoding="utf-8")
    assert count == (3,)
    # rebuilt: the same bytes (the styles are replaced, not added again)
    first = gpkg.read_bytes()
    write_gpkg(gpkg, gdf)
    assert gpkg.read_bytes() == first
