"""QGIS styles (QML) rendered from the palettes in `pipeline.styles.palettes`.

The `.qml` files in this folder are this module's output (`python -m pipeline.styles.qml` rewrites them;
tests/unit/test_viewer_palettes.py checks that they are up to date), so QGIS, the 3D tiles, the viewer and the
report show the same classes in the same colours.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from pipeline.styles import palettes as P

STYLES_DIR = Path(__file__).resolve().parent
HEADER = (
    "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
    '<qgis version="3.34.0" styleCategories="Symbology">\n'
)
FOOTER = "  <layerGeometryType>2</layerGeometryType>\n</qgis>\n"
OUTLINE: P.RGBA = (60, 60, 60, 255)


def _rgba(c: P.RGBA) -> str:
    return ",".join(str(int(v)) for v in c)


def _fill_symbol(name: str, fill: P.RGBA, outline: P.RGBA = OUTLINE) -> str:
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        '          <Option type="Map">\n'
        f'            <Option type="QString" name="color" value="{_rgba(fill)}"/>\n'
        f'            <Option type="QString" name="outline_color" value="{_rgba(outline)}"/>\n'
        '            <Option type="QString" name="outline_style" value="solid"/>\n'
        '            <Option type="QString" name="outline_width" value="0.26"/>\n'
        '            <Option type="QString" name="outline_width_unit" value="MM"/>\n'
        '            <Option type="QString" name="style" value="solid"/>\n'
        "          </Option>\n"
        "        </layer>\n"
        "      </symbol>\n"
    )


def categorized(comment: str, attr: str, entries: tuple[P.ClassEntry, ...]) -> str:
    cats = "".join(
        f'      <category render="true" value={quoteattr(str(e.value))} symbol="{i}" label={quoteattr(e.label)}/>\n'
        for i, e in enumerate(entries)
    )
    syms = "".join(_fill_symbol(str(i), e.rgba) for i, e in enumerate(entries))
    return (
        HEADER
        + f"  <!-- {comment} -->\n"
        + f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(attr)} symbollevels="0" enableorderby="0"'
        ' forceraster="0">\n'
        "    <categories>\n" + cats + "    </categories>\n"
        "    <symbols>\n" + syms + "    </symbols>\n"
        "  </renderer-v2>\n" + FOOTER
    )


def single(comment: str, fill: P.RGBA, outline: P.RGBA) -> str:
    return (
        HEADER
        + f"  <!-- {comment} -->\n"
        + '  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">\n'
        "    <symbols>\n" + _fill_symbol("0", fill, outline) + "    </symbols>\n"
        "  </renderer-v2>\n" + FOOTER
    )


def parcels_rules() -> str:
    """The parcels: land-use classes (LAND_USE, property `land_use`) in their colours, every other parcel
    (ELSE) by GRZ class (GRZ, `grz`; no value in GRZ_NO_VALUE); the colours of the parcels tiles."""
    lu, grz = P.LAND_USE_PROPERTY, P.GRZ_PROPERTY
    rules = ""
    syms: list[P.RGBA] = []
    for e in P.LAND_USE:
        f = f"\"{lu}\" = '{e.value}'"
        rules += f'      <rule key="{lu}_{e.value}" filter={quoteattr(f)} symbol="{len(syms)}" label={quoteattr(e.label)}/>\n'
        syms.append(e.rgba)
    rules += '      <rule key="by_grz" filter="ELSE" label="GRZ">\n'
    lower = 0.0
    for k, (upper, c, label) in enumerate(P.GRZ):
        f = f'"{grz}" >= {lower:g}' if k else f'"{grz}" IS NOT NULL'
        if upper != float("inf"):
            f += f' AND "{grz}" < {upper:g}'
        rules += f'        <rule key="grz_{k}" filter={quoteattr(f)} symbol="{len(syms)}" label={quoteattr(label)}/>\n'
        syms.append(c)
        lower = upper
    f = f'"{grz}" IS NULL'
    rules += f'        <rule key="grz_none" filter={quoteattr(f)} symbol="{len(syms)}" label="no value"/>\n'
    syms.append(P.GRZ_NO_VALUE)
    rules += "      </rule>\n"
    return (
        HEADER
        + "  <!-- RuhrTwin parcels overlay: land-use classes (pipeline.styles.palettes.LAND_USE), the other"
        " parcels by actual GRZ (pipeline.styles.palettes.GRZ) -->\n"
        '  <renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" forceraster="0">\n'
        '    <rules key="root">\n' + rules + "    </rules>\n"
        "    <symbols>\n"
        + "".join(_fill_symbol(str(i), c, P.PARCEL_OUTLINE) for i, c in enumerate(syms))
        + "    </symbols>\n"
        "  </renderer-v2>\n" + FOOTER
    )


def render_all() -> dict[str, str]:
    """File name -> QML text of every style in this folder."""
    unknown = P.CHANGE_COLOURS["unknown"]
    unreg = P.CHANGE_COLOURS["unregistered"]
    return {
        "buildings_change.qml": categorized(
            "RuhrTwin change detection: buildings by change class (palette pipeline.styles.palettes.CHANGE)",
            P.CHANGE_PROPERTY,
            tuple(e for e in P.CHANGE if e.value != "unregistered"),
        ),
        "buildings_function.qml": categorized(
            "RuhrTwin buildings by function group (palette pipeline.styles.palettes.BUILDING_FUNCTION)",
            P.BUILDING_FUNCTION_PROPERTY,
            P.BUILDING_FUNCTION,
        ),
        "buildings_roof_type.qml": categorized(
            "RuhrTwin buildings by roof type, AdV roofType (palette pipeline.styles.palettes.ROOF_TYPES); "
            "the empty value (all other values) = no LoD2 roof",
            P.ROOF_TYPE_PROPERTY,
            (*P.ROOF_TYPE, P.ClassEntry("", P.ROOF_NONE_LABEL, P.ROOF_NONE)),
        ),
        "buildings_lod_source.qml": categorized(
            "RuhrTwin buildings by model source (palette pipeline.styles.palettes.LOD_SOURCE)",
            P.LOD_SOURCE_PROPERTY,
            P.LOD_SOURCE,
        ),
        "parcels.qml": parcels_rules(),
        "unknown_areas.qml": single(
            "RuhrTwin: areas without data in an epoch (change unknown)", (*unknown[:3], 90), unknown
        ),
        "unregistered_structures.qml": single(
            "RuhrTwin: structures without a cadastral footprint (review list)",
            unreg,
            (unreg[0] * 53 // 100, unreg[1] * 53 // 100, unreg[2] * 53 // 100, 255),
        ),
    }


def write_all(folder: Path = STYLES_DIR) -> list[Path]:
    out = []
    for name, text in render_all().items():
        p = folder / name
        p.write_text(text, encoding="utf-8")
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_all():
        print(p)
