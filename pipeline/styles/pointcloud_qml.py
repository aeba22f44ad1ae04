"""QGIS style (.qml) of a point-cloud layer (COPC / virtual point cloud): points coloured by class.

The classes are those present in the layer, named by its class scheme (AdV names for NRW data, ASPRS
otherwise) and coloured from the one point-class palette (`pipeline.styles.palettes`, as the 3D viewer);
noise classes are listed but not drawn (switch them on in the layer's Symbology). QGIS applies a `.qml`
beside a file of the same name when it opens the file (`x.vpc` -> `x.qml`, `x.copc.laz` -> `x.copc.qml`).
The XML is the one QGIS 3.40 writes for a classified point-cloud renderer (checked by tests/integration/test_copc.py
in QGIS).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from pipeline.styles.palettes import NOISE_CLASSES, point_class_colour, point_class_name


def pointcloud_qml(scheme: str, codes: list[int] | tuple[int, ...], point_size_mm: float = 1.0) -> str:
    """A classified renderer on `Classification` with one category per code (ascending)."""
    noise = NOISE_CLASSES.get(scheme.lower(), frozenset())
    cats = []
    for code in sorted({int(c) for c in codes}):
        r, g, b, a = point_class_colour(code)
        render = "false" if code in noise else "true"
        label = quoteattr(f"{code} {point_class_name(scheme, code)}")
        cats.append(
            f'      <category value="{code}" label={label} color="{r},{g},{b},{a}" render="{render}" pointSize="0"/>'
        )
    body = "\n".join(cats)
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis styleCategories="Symbology" version="3.40.0">\n'
        f'  <renderer type="classified" attribute="Classification" pointSize="{point_size_mm:g}" '
        'pointSizeUnit="MM" pointSymbol="0" drawOrder2d="0" maximumScreenError="0.3" '
        'maximumScreenErrorUnit="MM" renderAsTriangles="0">\n'
        "    <categories>\n"
        f"{body}\n"
        "    </categories>\n"
        "  </renderer>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )
