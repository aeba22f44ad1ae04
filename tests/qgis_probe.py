"""Open release layers in QGIS (headless `qgis.core`) and report what QGIS sees, as JSON on stdout.

Run by tests/integration/test_qgis.py with Debian's system python (`/usr/bin/python3`, where `python3-qgis` lives,
not the project's venv) and `QT_QPA_PLATFORM=offscreen`:

    /usr/bin/python3 tests/qgis_probe.py request.json > answer.json

The request names GeoPackage layers (`vectors`: gpkg, layer, expected colours) and 3D Tiles tilesets
(`scenes`: path). For each vector layer the GeoPackage is copied alone into a scratch folder (no `.qml`
beside it, so a style can only come from its `layer_styles` table) and opened twice: as is, and as a
control copy whose `layer_styles` rows are deleted. This file imports nothing from the pipeline.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsExpressionContextUtils,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRectangle,
    QgsRenderContext,
    QgsTiledSceneLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

SIZE = 400
BACKGROUND = (255, 255, 255)


def render(layer, extent: QgsRectangle, png: Path, crs: QgsCoordinateReferenceSystem | None = None) -> dict:
    """Render `layer` alone on white (in `crs`, default the layer's); count the pixels drawn and their
    colours."""
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(crs or layer.crs())
    settings.setOutputSize(QSize(SIZE, SIZE))
    settings.setBackgroundColor(QColor(*BACKGROUND))
    settings.setFlag(Qgis.MapSettingsFlag.Antialiasing, False)
    settings.setExtent(extent)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    img = job.renderedImage().convertToFormat(QImage.Format.Format_RGB888)
    img.save(str(png))
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    raw = bytes(ptr)
    stride = img.bytesPerLine()
    colours: dict[tuple[int, int, int], int] = {}
    for y in range(img.height()):
        row = raw[y * stride : y * stride + 3 * img.width()]
        for x in range(0, len(row), 3):
            c = (row[x], row[x + 1], row[x + 2])
            colours[c] = colours.get(c, 0) + 1
    drawn = SIZE * SIZE - colours.get(BACKGROUND, 0)
    return {
        "drawn_pixels": drawn,
        "colours": [[*c, n] for c, n in sorted(colours.items(), key=lambda kv: -kv[1])[:64]],
        "errors": [e.message for e in job.errors()],
        "png": str(png),
    }


def padded(extent: QgsRectangle) -> QgsRectangle:
    e = QgsRectangle(extent)
    if e.isEmpty():
        return e
    side = max(e.width(), e.height()) * 1.05 + 1.0
    cx, cy = e.center().x(), e.center().y()
    return QgsRectangle(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def renderer_info(layer: QgsVectorLayer) -> dict:
    r = layer.renderer()
    info: dict = {"type": r.type() if r else None}
    if r is not None and r.type() == "singleSymbol":
        info["rgb"] = list(r.symbol().color().getRgb()[:3])
    elif r is not None and r.type() == "categorizedSymbol":
        info["attr"] = r.classAttribute()
        info["classes"] = [
            {"value": str(c.value()), "label": c.label(), "rgb": list(c.symbol().color().getRgb()[:3])}
            for c in r.categories()
        ]
    elif r is not None and r.type() == "graduatedSymbol":
        info["attr"] = r.classAttribute()
        info["classes"] = [
            {
                "lower": g.lowerValue(),
                "upper": g.upperValue(),
                "label": g.label(),
                "rgb": list(g.symbol().color().getRgb()[:3]),
            }
            for g in r.ranges()
        ]
    elif r is not None and r.type() == "RuleRenderer":
        # the rules that draw (leaves with a symbol) and how many features each draws (an ELSE rule takes
        # the features no sibling takes: counted by the renderer itself)
        ctx = QgsRenderContext()
        ctx.expressionContext().appendScopes(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
        rr = r.clone()
        rr.startRender(ctx, layer.fields())
        counts: dict[str, int] = {}
        for f in layer.getFeatures():
            ctx.expressionContext().setFeature(f)
            for k in rr.legendKeysForFeature(f, ctx):
                counts[k] = counts.get(k, 0) + 1
        rr.stopRender(ctx)
        info["rules"] = [
            {
                "key": q.ruleKey(),
                "filter": q.filterExpression(),
                "label": q.label(),
                "rgb": list(q.symbol().color().getRgb()[:3]),
                "features": counts.get(q.ruleKey(), 0),
            }
            for q in r.rootRule().descendants()
            if q.symbol() is not None
        ]
    return info


def open_vector(gpkg: Path, layer: str) -> QgsVectorLayer:
    return QgsVectorLayer(f"{gpkg}|layername={layer}", layer, "ogr")


def probe_vector(item: dict, scratch: Path, images: Path) -> dict:
    src = Path(item["gpkg"])
    layer_name = item["layer"]
    alone = scratch / f"alone_{src.stem}_{layer_name}" / src.name
    alone.parent.mkdir(parents=True)
    shutil.copyfile(src, alone)
    lyr = open_vector(alone, layer_name)
    out: dict = {"gpkg": str(src), "layer": layer_name, "valid": lyr.isValid()}
    if not lyr.isValid():
        return out
    related, _ids, names, _descriptions, _err = lyr.listStylesInDatabase()
    out["db_styles"] = {"related": related, "names": list(names[:related])}
    out["style_manager"] = {
        "current": lyr.styleManager().currentStyle(),
        "styles": list(lyr.styleManager().styles()),
    }
    out["renderer"] = renderer_info(lyr)
    out["features"] = lyr.featureCount()
    out["geometry_type"] = Qgis.GeometryType(lyr.geometryType()).name
    out["wkb_type"] = QgsWkbTypes.displayString(lyr.wkbType())
    out["crs"] = lyr.crs().authid()
    # what loadDefaultStyle() gives when asked again (the provider's database style comes first)
    msg, ok = lyr.loadDefaultStyle()
    out["load_default_style"] = {"ok": bool(ok), "message": msg}
    out["renderer_after_reload"] = renderer_info(lyr)["type"]
    if lyr.featureCount() > 0:
        out["render"] = render(lyr, padded(lyr.extent()), images / f"{src.stem}_{layer_name}.png")

    # control: the same copy without its stored styles opens with QGIS's single-symbol default
    control = scratch / f"control_{src.stem}_{layer_name}" / src.name
    control.parent.mkdir(parents=True)
    shutil.copyfile(src, control)
    con = sqlite3.connect(control)
    con.execute("DELETE FROM layer_styles")
    con.commit()
    con.close()
    out["control_renderer"] = renderer_info(open_vector(control, layer_name))["type"]
    return out


def probe_scene(item: dict, images: Path) -> dict:
    path = Path(item["path"])
    lyr = QgsTiledSceneLayer(str(path), item["name"], "cesiumtiles")
    out: dict = {"path": str(path), "name": item["name"], "valid": lyr.isValid()}
    if not lyr.isValid():
        out["error"] = lyr.error().summary() if lyr.error() else ""
        return out
    out["provider"] = lyr.providerType()
    out["crs"] = lyr.crs().authid() or lyr.crs().description()
    e = lyr.extent()
    out["extent"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
    out["renderer"] = lyr.renderer().type() if lyr.renderer() else None
    # drawn in 2D in the project's projected CRS (QGIS >= 3.34 draws tiled-scene meshes on the map)
    crs = QgsCoordinateReferenceSystem(item["render_crs"])
    box = QgsCoordinateTransform(lyr.crs(), crs, QgsProject.instance()).transformBoundingBox(e)
    out["render"] = render(lyr, padded(box), images / f"scene_{item['name']}.png", crs)
    return out


def main() -> int:
    request = json.loads(Path(sys.argv[1]).read_text())
    images = Path(request["images"])
    images.mkdir(parents=True, exist_ok=True)
    app = QgsApplication([], False)
    app.initQgis()
    answer: dict = {"qgis_version": Qgis.QGIS_VERSION, "qgis_version_int": Qgis.QGIS_VERSION_INT}
    with tempfile.TemporaryDirectory(prefix="qgis-probe-") as tmp:
        scratch = Path(tmp)
        answer["vectors"] = [probe_vector(v, scratch, images) for v in request.get("vectors", [])]
        answer["scenes"] = [probe_scene(s, images) for s in request.get("scenes", [])]
    json.dump(answer, sys.stdout)
    sys.stdout.flush()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
