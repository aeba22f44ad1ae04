"""Open point clouds (COPC files, virtual point clouds) in QGIS (headless `qgis.core`) and report what QGIS
sees, as JSON on stdout.

Run by tests/integration/test_copc.py with Debian's system python (where `python3-qgis` lives, not the project's
venv) and `QT_QPA_PLATFORM=offscreen`:

    /usr/bin/python3 tests/qgis_pointcloud_probe.py request.json > answer.json

Request: {"layers": [{"path": ".../x.vpc" | ".../x.copc.laz", "png": ".../x.png", "zoom": [x0, y0, x1, y1],
"style": ".../x.qml"}]} ("zoom" optional: a second rendering of that window, in the layer's CRS; "style"
optional: a .qml loaded after opening, as with Symbology > Style > Load Style...). For each: provider,
validity, CRS, extent, point count, attributes, and a 400 x 400 rendering of the whole extent (pixels that
are not the white background, their colours). Imports nothing from the pipeline.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsPointCloudLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

SIZE = 400
BACKGROUND = (255, 255, 255)


def render(layer, extent: QgsRectangle, png: Path) -> dict:
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setOutputSize(QSize(SIZE, SIZE))
    settings.setBackgroundColor(QColor(*BACKGROUND))
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
    return {
        "drawn_pixels": SIZE * SIZE - colours.get(BACKGROUND, 0),
        "colours": len(colours),
        "errors": [e.message for e in job.errors()],
        "png": str(png),
    }


def wait_for_statistics(layer, timeout: float = 120.0) -> str:
    calc = QgsPointCloudLayer.PointCloudStatisticsCalculationState
    t0 = time.monotonic()
    while layer.statisticsCalculationState() == calc.Calculating and time.monotonic() - t0 < timeout:
        QgsApplication.processEvents()
        time.sleep(0.05)
    QgsApplication.processEvents()
    return {calc.Calculated: "calculated", calc.Calculating: "calculating"}.get(
        layer.statisticsCalculationState(), "not-started"
    )


def _categories(layer) -> list | None:
    r = layer.renderer()
    if r is None or r.type() != "classified":
        return None
    return [[c.value(), c.label(), c.renderState()] for c in r.categories()]


def probe(spec: dict) -> dict:
    path = spec["path"]
    provider = "vpc" if path.endswith(".vpc") else "copc"
    layer = QgsPointCloudLayer(path, Path(path).name, provider)
    out: dict = {"path": path, "provider": provider, "valid": layer.isValid()}
    if not layer.isValid():
        out["error"] = layer.error().summary()
        return out
    # without a statistics record QGIS computes the statistics in a background task and draws the extent
    # meanwhile; then it switches to its default renderer (classification / RGB), as in the desktop
    out["renderer_at_open"] = layer.renderer().type() if layer.renderer() else None
    out["categories_at_open"] = _categories(layer)
    if spec.get("style"):  # a style file loaded as a user does (Symbology > Style > Load Style...)
        msg, ok = layer.loadNamedStyle(spec["style"])
        out["style_loaded"] = ok
        out["style_message"] = msg
    out["statistics_state"] = wait_for_statistics(layer)
    e = layer.extent()
    out.update(
        {
            "crs": layer.crs().authid(),
            "crs_valid": layer.crs().isValid(),
            "crs_wkt": layer.crs().toWkt(),
            "crs_description": layer.crs().description(),
            "extent": [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()],
            "points": layer.pointCount(),
            "attributes": [a.name() for a in layer.attributes().attributes()],
            "renderer": layer.renderer().type() if layer.renderer() else None,
        }
    )
    out["categories"] = _categories(layer)
    out["render"] = render(layer, e.buffered(max(e.width(), e.height()) * 0.02), Path(spec["png"]))
    if spec.get("zoom"):
        # a virtual point cloud draws only its files' outlines while the view is wider than a file (no
        # overview): render a window inside one file, as a user who zooms in
        x0, y0, x1, y1 = spec["zoom"]
        png = Path(spec["png"]).with_suffix(".zoom.png")
        out["render_zoom"] = render(layer, QgsRectangle(x0, y0, x1, y1), png)
    return out


def main() -> None:
    req = json.loads(Path(sys.argv[1]).read_text())
    app = QgsApplication([], False)
    app.initQgis()
    try:
        answers = [probe(spec) for spec in req["layers"]]
    finally:
        pass
    json.dump({"qgis": Qgis.QGIS_VERSION, "layers": answers}, sys.stdout)
    sys.stdout.flush()
    app.exitQgis()


if __name__ == "__main__":
    main()
