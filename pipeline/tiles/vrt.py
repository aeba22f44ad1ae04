"""GDAL VRT mosaic of raster tiles that share one grid (the orthophoto's per-tile COGs).

Sources are drawn in the order given and later ones cover earlier ones where they have data (nodata 0 is
transparent), paths are relative to the VRT, so a release folder can be moved or served as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from affine import Affine

COLOR_INTERP = {1: "Red", 2: "Green", 3: "Blue"}


def mosaic_vrt(
    width: int,
    height: int,
    transform: Affine,
    crs_wkt: str,
    bands: int,
    sources: Sequence[tuple[str, int, int, int, int]],
    nodata: int = 0,
    block: int = 256,
) -> bytes:
    """VRT XML of a uint8 mosaic. `sources`: (path relative to the VRT, column, row, width, height) of
    each tile on the mosaic grid, drawn in this order."""
    t = transform
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(crs_wkt)}</SRS>",
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>",
    ]
    for b in range(1, bands + 1):
        lines.append(
            f'  <VRTRasterBand dataType="Byte" band="{b}" blockXSize="{block}" blockYSize="{block}">'
        )
        lines.append(f"    <NoDataValue>{nodata}</NoDataValue>")
        lines.append(f"    <ColorInterp>{COLOR_INTERP.get(b, 'Undefined')}</ColorInterp>")
        for rel, col, row, w, h in sources:
            lines += [
                "    <ComplexSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(Path(rel).as_posix())}</SourceFilename>',
                f"      <SourceBand>{b}</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}" />',
                f'      <DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}" />',
                f"      <NODATA>{nodata}</NODATA>",
                "    </ComplexSource>",
            ]
        lines.append("  </VRTRasterBand>")
    factors = []
    f = 2
    while max(width, height) / (f // 2) > block:
        factors.append(f)
        f *= 2
    if factors:  # overviews as the tiles' COGs have them: GDAL reads them through the sources
        lines.append(f'  <OverviewList resampling="average">{" ".join(map(str, factors))}</OverviewList>')
    lines.append("</VRTDataset>")
    return ("\n".join(lines) + "\n").encode()
