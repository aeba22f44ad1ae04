"""The release in QGIS (headless `qgis.core`, QGIS >= 3.34 from Debian; `make test` installs 3.40).

On the tiny district built with its zoning plan (every GeoPackage of a release: buildings, parcels,
change, zoning): each GeoPackage layer opens with the style stored in its `layer_styles` table as its
default (a copy without the stored style opens single-symbol instead), with the renderer, classes and
colours of the QML shipped beside it, and draws the palette colours of the classes present in the data;
the 3D Tiles buildings and terrain load as tiled-scene layers ("cesiumtiles") and draw on the 2D map.

QGIS's Python bindings live in Debian's system python, not in the venv: the checks run in a subprocess
(`/usr/bin/python3 tests/qgis_probe.py`, `QT_QPA_PLATFORM=offscreen`); skipped when `qgis.core` cannot
be imported there. Rendered images are kept in `test-artifacts/qgis/`.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from lxml import etree

from tests.conftest import REPO, load_tiny_config

pytestmark = pytest.mark.qgis

SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).resolve().parents[1] / "qgis_probe.py"
ARTIFACTS = REPO / "test-artifacts" / "qgis"
MIN_VERSION = 33400
SIZE = 400  # qgis_probe.SIZE


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    return env


@cache
def qgis_version() -> int | None:
    if not Path(SYSTEM_PYTHON).is_file():
        return None
    r = subprocess.run(
        [SYSTEM_PYTHON, "-c", "from qgis.core import Qgis; print(Qgis.QGIS_VERSION_INT)"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    return int(r.stdout.split()[-1]) if r.returncode == 0 and r.stdout.strip() else None


@pytest.fixture(scope="module")
def qgis() -> int:
    v = qgis_version()
    if v is None:
        pytest.skip(f"`import qgis.core` fails under {SYSTEM_PYTHON} (make test installs python3-qgis)")
    if v < MIN_VERSION:
        pytest.skip(f"QGIS {v} is older than 3.34 (no tiled-scene layers); make test installs 3.40")
    return v


@pytest.fixture(scope="module")
def qgis_release(qgis, tiny_project) -> Path:
    """The tiny district with its zoning plan, so that the release has every GeoPackage (own output
    folder, the session's cache: the layers the tiny release built are reused)."""
    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build

    cfg = load_tiny_config(
        tiny_project, {"paths.out": "../data/out-qgis", "layers.zoning.paths": ["xplan/*.gml"]}
    )
    return run_build(cfg, workers=2, log=BuildLog(quiet=True)).release_dir


def _qml_expectation(qml: str) -> dict:
    """Renderer type, attribute and classes (value or range, RGB, opaque?) of a QML."""
    root = etree.fromstring(qml.encode("utf-8"))
    r = root.find("renderer-v2")
    colours = {}
    for sym in r.find("symbols"):
        opts = {o.get("name"): o.get("value") for o in sym.iter("Option")}
        rgba = [int(v) for v in (opts.get("color") or opts.get("line_color")).split(",")[:4]]
        opaque = rgba[3] == 255 and sym.get("alpha", "1") == "1"
        colours[sym.get("name")] = (rgba[:3], opaque)
    out = {"type": r.get("type"), "attr": r.get("attr"), "geometry": int(root.findtext("layerGeometryType"))}
    if out["type"] == "categorizedSymbol":
        out["classes"] = [(c.get("value"), *colours[c.get("symbol")]) for c in r.find("categories")]
    elif out["type"] == "graduatedSymbol":
        out["classes"] = [
            (float(g.get("lower")), float(g.get("upper")), *colours[g.get("symbol")])
            for g in r.find("ranges")
        ]
    elif out["type"] == "RuleRenderer":
        # the rules that draw (with a symbol), nested rules in document order
        out["rules"] = [
            (q.get("key"), q.get("filter"), *colours[q.get("symbol")])
            for q in r.find("rules").iter("rule")
            if q.get("symbol") is not None
        ]
    else:
        out["colour"] = colours["0"]
    return out


def _present_colours(gpkg: Path, layer: str, exp: dict) -> set[tuple[int, int, int]]:
    """The opaque palette colours of the classes that occur in the layer's data."""
    if exp["type"] == "singleSymbol":
        rgb, opaque = exp["colour"]
        return {tuple(rgb)} if opaque else set()
    if exp["type"] == "categorizedSymbol":
        # a category with the value "" is QGIS's "all other values" (also drawn when the field is absent)
        other = {tuple(c) for v, c, opaque in exp["classes"] if v == "" and opaque}
        if exp["attr"] not in pyogrio.read_info(gpkg, layer=layer)["fields"]:
            return other
        values = pyogrio.read_dataframe(gpkg, layer=layer, columns=[exp["attr"]], read_geometry=False)
        present = {str(v) for v in values[exp["attr"]].dropna()}
        return other | {tuple(c) for v, c, opaque in exp["classes"] if v in present and opaque}
    values = pyogrio.read_dataframe(gpkg, layer=layer, columns=[exp["attr"]], read_geometry=False)
    v = values[exp["attr"]].to_numpy(dtype=np.float64)
    out = set()
    for i, (lo, up, c, opaque) in enumerate(exp["classes"]):
        inside = (v > lo) & (v <= up) if i else (v >= lo) & (v <= up)
        if opaque and inside.any():
            out.add(tuple(c))
    return out


def _feature_layers(gpkg: Path) -> list[str]:
    return [name for name, geom in pyogrio.list_layers(gpkg) if geom is not None and name != "layer_styles"]


@pytest.fixture(scope="module")
def probed(qgis_release) -> dict:
    from pipeline.styles.gpkg import default_styles

    gpkgs = sorted(qgis_release.rglob("*.gpkg"))
    vectors = []
    for g in gpkgs:
        styles = default_styles(g)
        for layer in _feature_layers(g):
            vectors.append({"gpkg": str(g), "layer": layer, "qml": styles.get(layer)})
    scenes = [
        {"name": name, "path": str(qgis_release / name / "tileset.json"), "render_crs": "EPSG:25832"}
        for name in ("buildings", "terrain")
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    request = ARTIFACTS / "request.json"
    request.write_text(json.dumps({"images": str(ARTIFACTS), "vectors": vectors, "scenes": scenes}, indent=1))
    r = subprocess.run(
        [SYSTEM_PYTHON, str(PROBE), str(request)], capture_output=True, text=True, env=_env(), timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    answer = json.loads(r.stdout)
    answer["request"] = vectors
    (ARTIFACTS / "answer.json").write_text(json.dumps(answer, indent=1))
    return answer


def test_release_has_every_geopackage(qgis_release):
    names = {p.relative_to(qgis_release).as_posix() for p in qgis_release.rglob("*.gpkg")}
    assert names >= {
        "buildings/buildings.gpkg",
        "overlays/parcels.gpkg",
        "change/change.gpkg",
        "overlays/zoning.gpkg",
    }
    # the zoning overlay in 3D carries its status style (the viewer's colours and legend)
    manifest = json.loads((qgis_release / "manifest.json").read_text())
    zoning = next(lay for lay in manifest["layers"] if lay["name"] == "zoning")
    assert zoning["tileset"] and zoning["style"] == "overlays/zoning/style.json"
    assert zoning["style"] in zoning["files"] and (qgis_release / zoning["style"]).is_file()


def test_every_geopackage_layer_opens_with_its_embedded_style(probed):
    assert len(probed["vectors"]) >= 10
    for req, got in zip(probed["request"], probed["vectors"], strict=True):
        where = f"{req['gpkg']} layer {req['layer']}"
        assert req["qml"], f"{where}: no default style in layer_styles"
        exp = _qml_expectation(req["qml"])
        assert got["valid"], where
        assert got["crs"] == "EPSG:25832", where
        assert got["wkb_type"].startswith("Multi"), (where, got["wkb_type"])
        assert got["geometry_type"] == {1: "Line", 2: "Polygon"}[exp["geometry"]], where
        # QGIS lists the stored default style first (buildings also carry extra named styles: by roof type,
        # by model source), makes it the current one and says it came from the provider
        assert got["db_styles"]["names"][0] == req["layer"], where
        assert got["style_manager"]["current"] == req["layer"], where
        assert got["load_default_style"]["ok"], (where, got["load_default_style"])
        ren = got["renderer"]
        assert ren["type"] == exp["type"] == got["renderer_after_reload"], where
        if exp["type"] == "categorizedSymbol":
            assert ren["attr"] == exp["attr"]
            assert [(c["value"], c["rgb"]) for c in ren["classes"]] == [
                (v, c) for v, c, _ in exp["classes"]
            ], where
        elif exp["type"] == "graduatedSymbol":
            assert ren["attr"] == exp["attr"]
            assert [(g["lower"], g["upper"], g["rgb"]) for g in ren["classes"]] == [
                (lo, up, c) for lo, up, c, _ in exp["classes"]
            ], where
        elif exp["type"] == "RuleRenderer":
            assert [(q["key"], q["filter"], q["rgb"]) for q in ren["rules"]] == [
                (k, f, c) for k, f, c, _ in exp["rules"]
            ], where
        else:
            assert ren["rgb"] == exp["colour"][0], where
        if exp["type"] != "singleSymbol":
            # without the stored style QGIS would draw one random colour: the style came from the table
            assert got["control_renderer"] == "singleSymbol", where


def test_every_geopackage_style_equals_the_qml_beside_it(qgis_release):
    from pipeline.styles.gpkg import default_styles

    for g in sorted(qgis_release.rglob("*.gpkg")):
        styles = default_styles(g)
        assert set(styles) == set(_feature_layers(g)), g
        for layer, qml in styles.items():
            beside = g.parent / f"{layer}.qml"
            assert beside.read_text(encoding="utf-8") == qml, beside


def test_styled_layers_render_their_palette_colours(probed):
    rendered = 0
    for req, got in zip(probed["request"], probed["vectors"], strict=True):
        where = f"{req['gpkg']} layer {req['layer']}"
        if got["features"] == 0:
            assert "render" not in got
            continue
        rendered += 1
        r = got["render"]
        assert not r["errors"], (where, r["errors"])
        # at least the outline of a plan scope around the district (outline-only style): 300 px of 160,000
        assert r["drawn_pixels"] >= 300, (where, r["drawn_pixels"], r["png"])
        drawn = {tuple(c[:3]) for c in r["colours"]}
        exp = _qml_expectation(req["qml"])
        if exp["type"] == "RuleRenderer":
            # the colours of the rules that draw features (QGIS's own rule evaluation, ELSE included)
            opaque = {k: o for k, _f, _c, o in exp["rules"]}
            want = {tuple(q["rgb"]) for q in got["renderer"]["rules"] if q["features"] and opaque[q["key"]]}
            assert want, (where, got["renderer"]["rules"])
        else:
            want = _present_colours(Path(req["gpkg"]), req["layer"], exp)
        assert want <= drawn, (where, sorted(want - drawn), r["png"])
    assert rendered >= 6


@pytest.mark.parametrize("name", ["buildings", "terrain"])
def test_3d_tiles_load_as_tiled_scene_layers(probed, name):
    got = {s["name"]: s for s in probed["scenes"]}[name]
    assert got["valid"], got
    assert got["provider"] == "cesiumtiles"
    west, south, east, north = got["extent"]
    # the tiny district lies at about 7.01 E, 51.58 N (QGIS reports tilesets in EPSG:4979)
    assert 7.0 < west < east < 7.02 and 51.57 < south < north < 51.59, got["extent"]
    r = got["render"]
    assert not r["errors"], r["errors"]
    assert r["drawn_pixels"] >= 0.05 * SIZE * SIZE, (r["drawn_pixels"], r["png"])
