"""Panorama recording locations (mobile mapping) -> `panoramas/panoramas.geojson` for the viewer.

Input: CSV files `time,x,y,z,heading,image_id` (header required, extra columns ignored) in the mobile
source's CRS (`sources.mobile.crs`, else the project's working CRS `crs.horizontal + crs.vertical`).
Output: one GeoJSON FeatureCollection in EPSG:4326 longitude/latitude with ellipsoidal heights (the
RFC 7946 altitude), which is what CesiumJS expects. Access class "internal" by default: the panoramas are
licensed for municipal use only (`layers.panoramas.access`).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.crs import GEOGRAPHIC_3D, check_area_of_use, make_transformer, parse_crs, working_crs
from pipeline.errors import CrsError, InputError
from pipeline.orchestrate.context import BuildContext, LayerResult
from pipeline.tiles.tileset import write_json

REQUIRED_COLUMNS = ("time", "x", "y", "z", "heading", "image_id")
NUMERIC_COLUMNS = ("time", "x", "y", "z", "heading")
OUT_FILE = "panoramas/panoramas.geojson"


@dataclass
class PanoramaTable:
    """Panorama records of one or more files, in file order."""

    time: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    heading: np.ndarray
    image_id: list[str]
    source: list[str]  # file name of each record

    def __len__(self) -> int:
        return len(self.image_id)


def read_panorama_csv(path: Path) -> PanoramaTable:
    """Read and check one CSV; every problem names the file and the row (1-based, header = row 1)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read panorama list: {e}", path=path) from e
    lines = text.splitlines()
    sample = "\n".join(lines[:5])
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample else csv.excel
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    header = next(reader, None)
    if header is None:
        raise InputError("empty panorama list (no header row)", path=path)
    cols = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; expected a header with {','.join(REQUIRED_COLUMNS)} "
            f"(found {','.join(cols)})",
            path=path,
            record="row 1",
        )
    idx = {c: cols.index(c) for c in REQUIRED_COLUMNS}
    values: dict[str, list[float]] = {c: [] for c in NUMERIC_COLUMNS}
    ids: list[str] = []
    for rowno, row in enumerate(reader, start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) < len(cols):
            raise InputError(
                f"{len(row)} fields, the header has {len(cols)}", path=path, record=f"row {rowno}"
            )
        for c in NUMERIC_COLUMNS:
            raw = row[idx[c]].strip()
            try:
                v = float(raw)
            except ValueError:
                raise InputError(
                    f"column {c}: {raw!r} is not a number", path=path, record=f"row {rowno}"
                ) from None
            if not math.isfinite(v):
                raise InputError(f"column {c}: {raw!r} is not finite", path=path, record=f"row {rowno}")
            values[c].append(v)
        image_id = row[idx["image_id"]].strip()
        if not image_id:
            raise InputError("column image_id is empty", path=path, record=f"row {rowno}")
        if not 0.0 <= values["heading"][-1] <= 360.0:
            raise InputError(
                f"column heading: {values['heading'][-1]} is outside 0..360 degrees",
                path=path,
                record=f"row {rowno}",
            )
        ids.append(image_id)
    return PanoramaTable(
        *(np.asarray(values[c], dtype=np.float64) for c in NUMERIC_COLUMNS),
        image_id=ids,
        source=[path.name] * len(ids),
    )


def concat_tables(tables: list[PanoramaTable]) -> PanoramaTable:
    if not tables:
        e = np.zeros(0)
        return PanoramaTable(e, e, e, e, e, [], [])
    return PanoramaTable(
        *(np.concatenate([getattr(t, c) for t in tables]) for c in NUMERIC_COLUMNS),
        image_id=[i for t in tables for i in t.image_id],
        source=[s for t in tables for s in t.source],
    )


def panoramas_geojson(
    table: PanoramaTable, lon: np.ndarray, lat: np.ndarray, h: np.ndarray
) -> dict[str, Any]:
    """FeatureCollection (EPSG:4326 lon/lat, ellipsoidal height in metres); deterministic rounding."""
    feats = []
    for i in range(len(table)):
        feats.append(
            {
                "type": "Feature",
                "id": table.image_id[i],
                "geometry": {
                    "type": "Point",
                    "coordinates": [round(float(lon[i]), 9), round(float(lat[i]), 9), round(float(h[i]), 3)],
                },
                "properties": {
                    "image_id": table.image_id[i],
                    "time": float(table.time[i]),
                    "heading": float(table.heading[i]),
                    "height": round(float(table.z[i]), 3),
                    "source": table.source[i],
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def build_panorama_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """Layer builder hook of `twin build` (no-op unless `sources.mobile.panoramas` is configured)."""
    cfg = ctx.cfg
    mobile = cfg.sources.mobile
    if not cfg.layers.panoramas.enabled or mobile is None or not mobile.panoramas:
        return []
    t0 = time.perf_counter()
    files = [i.path for i in ctx.inputs_for("panoramas")]
    warnings: list[str] = []
    with ctx.stage("panoramas"):
        tables = [read_panorama_csv(f) for f in files]
        table = concat_tables(tables)
        seen: dict[str, str] = {}
        for img, src in zip(table.image_id, table.source, strict=True):
            if img in seen:
                raise InputError(f"image_id {img!r} appears twice (also in {seen[img]})", path=src)
            seen[img] = src
        if len(table):
            src_crs = parse_crs(mobile.crs) if mobile.crs else working_crs(cfg.crs)
            label = files[0] if len(files) == 1 else f"{files[0].parent}/*"
            check_area_of_use(
                src_crs,
                (float(table.x.min()), float(table.y.min()), float(table.x.max()), float(table.y.max())),
                path=label,
            )
            tr = make_transformer(src_crs, GEOGRAPHIC_3D, cfg.crs, path=label)
            lon, lat, h = tr.transform(table.x, table.y, table.z)
            lon, lat, h = np.asarray(lon), np.asarray(lat), np.asarray(h)
            if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat)) and np.all(np.isfinite(h))):
                raise CrsError(
                    f"coordinates could not be transformed from {src_crs.name} (outside the geoid grid, or "
                    "the file is in another CRS: set sources.mobile.crs)",
                    path=label,
                )
        else:
            lon = lat = h = np.zeros(0)
            warnings.append("panoramas: the panorama list is empty")
        write_json(ctx.release_dir / OUT_FILE, panoramas_geojson(table, lon, lat, h))
    stats: dict[str, Any] = {"panoramas": len(table), "files": len(files), "crs": "EPSG:4326+ellipsoidal"}
    if len(table):
        stats["bounds"] = [
            round(float(lon.min()), 7),
            round(float(lat.min()), 7),
            round(float(lon.max()), 7),
            round(float(lat.max()), 7),
        ]
    return [
        LayerResult(
            name="panoramas",
            kind="panoramas",
            access=cfg.layers.panoramas.access,
            files=[OUT_FILE],
            stats=stats,
            warnings=warnings,
            seconds=time.perf_counter() - t0,
        )
    ]
