"""One palette per concept: the QGIS styles, the change/GRZ tile colours, the 3D Tiles style JSON and the
viewer's palettes.json all come from pipeline.styles.palettes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.styles import BUILDING_COLOURS, buildings_style
from pipeline.styles import palettes as P
from pipeline.styles.qml import STYLES_DIR, render_all
from pipeline.viewer.build import PALETTES, render_templates


def test_qml_files_are_rendered_from_the_palettes() -> None:
    for name, text in render_all().items():
        assert (STYLES_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run `python -m pipeline.styles.qml`"
        )


def _qml_colours(text: str) -> list[tuple[int, int, int, int]]:
    return [
        tuple(int(v) for v in m.split(","))  # type: ignore[misc]
        for m in re.findall(r'name="color" value="([0-9,]+)"', text)
    ]


def test_change_colours_agree_everywhere() -> None:
    from pipeline.stages.change import CLASS_COLOURS

    assert CLASS_COLOURS == P.CHANGE_COLOURS
    # raised is blue and lowered orange in every consumer (the old viewer legend had them swapped)
    assert P.CHANGE_COLOURS["raised"][2] > P.CHANGE_COLOURS["raised"][0]
    assert P.CHANGE_COLOURS["lowered"][0] > P.CHANGE_COLOURS["lowered"][2]
    qml = (STYLES_DIR / "buildings_change.qml").read_text(encoding="utf-8")
    cats = re.findall(r'<category render="true" value="([^"]+)"', qml)
    assert dict(zip(cats, _qml_colours(qml), strict=True)) == {
        k: v for k, v in P.CHANGE_COLOURS.items() if k != "unregistered"
    }
    style = P.change_style()
    got = {
        re.search(r"'([^']+)'", cond).group(1): colour  # type: ignore[union-attr]
        for cond, colour in style["color"]["conditions"]
        if cond != "true"
    }
    assert got == {k: f"color('{P.hex_colour(v)}')" for k, v in P.CHANGE_COLOURS.items()}


def test_grz_and_building_palettes() -> None:
    from pipeline.stages.overlays import GRZ_CLASSES, NO_VALUE_COLOUR, grz_colours

    assert list(P.GRZ) == GRZ_CLASSES and NO_VALUE_COLOUR == P.GRZ_NO_VALUE
    qml = (STYLES_DIR / "parcels.qml").read_text(encoding="utf-8")
    want = [e.rgba for e in P.LAND_USE] + [c for _u, c, _l in P.GRZ] + [P.GRZ_NO_VALUE]
    assert _qml_colours(qml) == want
    # the 3D Tiles style of the parcels: land-use classes first, then GRZ classes, same colours
    conds = P.parcels_style()["color"]["conditions"]
    assert [c for _f, c in conds] == [
        f"color('{P.hex_colour(c)}', 0.6)" for c in want[:2] + want[-1:] + want[2:-1]
    ]
    pal = json.loads(json.dumps(P.viewer_palettes()))["grz"]
    assert pal["land_use"] == [
        {"value": e.value, "label": e.label, "color": P.hex_colour(e.rgba)} for e in P.LAND_USE
    ]
    assert [tuple(c) for c in grz_colours([0.1, 0.5, 0.95])] == [P.GRZ[0][1], P.GRZ[2][1], P.GRZ[4][1]]
    assert {str(e.value): P.hex_colour(e.rgba).upper() for e in P.BUILDING_FUNCTION} == BUILDING_COLOURS
    conds = buildings_style()["color"]["conditions"]
    assert any(
        "Wohngebäude" in c and P.hex_colour(P.BUILDING_FUNCTION[0].rgba).upper() in col for c, col in conds
    )


def test_point_classes_per_scheme() -> None:
    from pipeline.point_attributes import ADV_CLASSES, ASPRS_CLASSES

    adv = {e.value: e for e in P.point_classes("adv")}
    assert adv[2].label == ADV_CLASSES[2] and adv[2].label.startswith("Boden")  # German names for AdV
    assert adv[18].hidden and not adv[2].hidden and not adv[20].hidden
    asprs = {e.value: e for e in P.point_classes("asprs")}
    assert asprs[6].label == ASPRS_CLASSES[6]
    assert asprs[7].hidden and asprs[18].hidden and not asprs[2].hidden


def test_viewer_gets_the_palettes(tmp_path: Path) -> None:
    render_templates(tmp_path, build_id="x", cesium="1.0")
    pal = json.loads((tmp_path / PALETTES).read_text(encoding="utf-8"))
    assert pal == json.loads(json.dumps(P.viewer_palettes()))
    change = {c["value"]: c["color"] for c in pal["change"]["classes"]}
    assert change == {k: P.hex_colour(v) for k, v in P.CHANGE_COLOURS.items()}
    adv = {c["code"]: c for c in pal["classification"]["adv"]}
    assert adv[18]["noise"] and adv[2]["name"].startswith("Boden")
    # the page has no class colour table of its own any more
    js = (Path(__file__).resolve().parents[2] / "pipeline" / "viewer" / "static" / "app.js").read_text()
    assert "raised:" not in js and "ASPRS_CLASSES" not in js


def test_zoning_status_colours_agree_in_the_viewer_style_and_qgis() -> None:
    """The zoning overlay's 3D Tiles style (the viewer's colours and legend) and its QGIS styles colour the
    check statuses alike, from the one status palette."""
    from pipeline.orchestrate.zoning import status_style, styles
    from pipeline.stages.zoning import STATUS_COLOURS

    style = status_style()
    got = {
        re.search(r"'([^']+)'", cond).group(1): colour  # type: ignore[union-attr]
        for cond, colour in style["color"]["conditions"]
        if cond != "true"
    }
    assert got == {k: f"color('{P.hex_colour(v)}')" for k, v in STATUS_COLOURS.items()}
    for name in ("zoning_parcels", "zoning_buildings"):
        qml = styles()[name]
        cats = re.findall(r'<category render="true" value="([^"]+)"', qml)
        rgb = [c[:3] for c in _qml_colours(qml)]
        assert dict(zip(cats, rgb, strict=True)) == {k: v[:3] for k, v in STATUS_COLOURS.items()}, name
