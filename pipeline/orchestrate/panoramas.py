"""Panorama recordings (mobile mapping) -> `panoramas/panoramas.geojson` and the images for the viewer.

Input: CSV files `time,x,y,z,heading,image_id` (header required; an optional `track_id` column; other
columns ignored) in the mobile source's CRS (`sources.mobile.crs`, else the project's working CRS
`crs.horizontal + crs.vertical`); `heading` is the yaw of the image centre in degrees clockwise from grid
north of that CRS (`sources.mobile.heading_reference: true` when the delivery measures from true north).
Optional 360° images (`sources.mobile.panorama_images`, a glob): equirectangular JPEG files named
`<image_id>.jpg`, width = 2 x height, horizontal centre at `heading`.

Output: one GeoJSON FeatureCollection in EPSG:4326 longitude/latitude with ellipsoidal heights (the
RFC 7946 altitude), which is what CesiumJS expects, with per recording `heading` (as delivered),
`heading_true` (from true north, what the viewer turns by), `track` and `sequence` (order along the track,
by time; tracks from the `track_id` column, else split where the time gap exceeds
`sources.mobile.track_gap_seconds`) and `image` (the copied image's path in the release, or null); the
images are copied byte for byte to `panoramas/images/<image_id>.jpg`. Access class "internal" by default:
the panoramas are licensed for municipal use only (`layers.panoramas.access`).
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.crs import GEOGRAPHIC_3D, check_area_of_use, make_transformer, parse_crs, working_crs
from pipeline.errors import CrsError, InputError
from pipeline.model import BuildContext, LayerResult
from pipeline.tiles.tileset import write_json

REQUIRED_COLUMNS = ("time", "x", "y", "z", "heading", "image_id")
NUMERIC_COLUMNS = ("time", "x", "y", "z", "heading")
OUT_FILE = "panoramas/panoramas.geojson"
IMAGE_DIR = "panoramas/images"
IMAGE_ROLE = "panoramas:images"


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
    track_id: list[str] | None = None  # the optional `track_id` column

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
    track_col = cols.index("track_id") if "track_id" in cols else None
    values: dict[str, list[float]] = {c: [] for c in NUMERIC_COLUMNS}
    ids: list[str] = []
    tracks: list[str] = []
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
        if track_col is not None:
            track = row[track_col].strip()
            if not track:
                raise InputError("column track_id is empty", path=path, record=f"row {rowno}")
            tracks.append(track)
    col = {c: np.asarray(values[c], dtype=np.float64) for c in NUMERIC_COLUMNS}
    return PanoramaTable(
        col["time"],
        col["x"],
        col["y"],
        col["z"],
        col["heading"],
        image_id=ids,
        source=[path.name] * len(ids),
        track_id=tracks if track_col is not None else None,
    )


def concat_tables(tables: list[PanoramaTable], gap_seconds: float = 30.0) -> PanoramaTable:
    """One table of all files, with track ids (`<file stem>:<track>`) filled in (see `assign_tracks`)."""
    if not tables:
        e = np.zeros(0)
        return PanoramaTable(e, e, e, e, e, [], [], [])
    col = {c: np.concatenate([getattr(t, c) for t in tables]) for c in NUMERIC_COLUMNS}
    return PanoramaTable(
        col["time"],
        col["x"],
        col["y"],
        col["z"],
        col["heading"],
        image_id=[i for t in tables for i in t.image_id],
        source=[s for t in tables for s in t.source],
        track_id=[tr for t in tables for tr in assign_tracks(t, gap_seconds)],
    )


def assign_tracks(table: PanoramaTable, gap_seconds: float) -> list[str]:
    """Track id of every record of one file: `<file stem>:<track_id column>`, or without that column
    `<file stem>:<n>` (n = 1, 2, ...) counting the runs in time order split where the time between two
    recordings exceeds `gap_seconds` (a vehicle drives one track after the other)."""
    if not len(table):
        return []
    stem = Path(table.source[0]).stem
    if table.track_id is not None:
        return [f"{stem}:{t}" for t in table.track_id]
    order = np.argsort(table.time, kind="stable")
    run = np.zeros(len(table), dtype=np.int64)
    run[order] = np.concatenate([[0], np.cumsum(np.diff(table.time[order]) > gap_seconds)])
    return [f"{stem}:{r + 1}" for r in run]


def track_groups(track_ids: list[str]) -> dict[str, np.ndarray]:
    """The record indices of each track (ascending), tracks sorted by id: one sort of all records, not a
    comparison of every record per track (5,000 tracks x 4 M panoramas took minutes that way)."""
    from pipeline.orchestrate.grouping import group_positions

    return {str(k): pos for k, pos in group_positions(np.asarray(track_ids, dtype=str))}


def track_sequence(table: PanoramaTable) -> np.ndarray:
    """0-based position of every record along its track, by time (file order breaks ties)."""
    seq = np.zeros(len(table), dtype=np.int64)
    for idx in track_groups(table.track_id or []).values():
        seq[idx[np.argsort(table.time[idx], kind="stable")]] = np.arange(len(idx))
    return seq


def true_headings(
    table: PanoramaTable, src_crs: Any, cfg_crs: Any, lon: np.ndarray, lat: np.ndarray, label: Path | str
) -> np.ndarray:
    """Headings from true north: the grid heading turned by the meridian convergence at each position
    (the geodesic azimuth from the position to a point 10 m ahead along the grid heading)."""
    from pyproj import Geod

    a = np.radians(table.heading)
    tr = make_transformer(src_crs, GEOGRAPHIC_3D, cfg_crs, path=label)
    lon2, lat2, _ = tr.transform(table.x + 10.0 * np.sin(a), table.y + 10.0 * np.cos(a), table.z)
    az, _, _ = Geod(ellps="GRS80").inv(lon, lat, np.asarray(lon2), np.asarray(lat2))
    return np.round(np.asarray(az) % 360.0, 4)


def check_panorama_image(path: Path) -> tuple[int, int]:
    """(width, height) of an equirectangular JPEG panorama; InputError for anything else."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"not a readable image: {e}", path=path) from None
    if fmt != "JPEG":
        raise InputError(f"panorama image is {fmt}, expected JPEG", path=path)
    if w != 2 * h:
        raise InputError(
            f"panorama image is {w} x {h} pixels; an equirectangular 360° image is twice as wide as high",
            path=path,
        )
    return w, h


def panoramas_geojson(
    table: PanoramaTable,
    lon: np.ndarray,
    lat: np.ndarray,
    h: np.ndarray,
    heading_true: np.ndarray | None = None,
    images: dict[str, str] | None = None,
) -> dict[str, Any]:
    """FeatureCollection (EPSG:4326 lon/lat, ellipsoidal height in metres); deterministic rounding."""
    feats: list[dict[str, Any]] = []
    tracks = table.track_id
    seq = track_sequence(table) if tracks is not None else None
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
        props = feats[-1]["properties"]
        if heading_true is not None:
            props["heading_true"] = float(heading_true[i])
        if seq is not None and tracks is not None:
            props["track"] = tracks[i]
            props["sequence"] = int(seq[i])
        if images is not None:
            props["image"] = images.get(table.image_id[i])
    return {"type": "FeatureCollection", "features": feats}


def build_panorama_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """Layer builder hook of `twin build` (no-op unless `sources.mobile.panoramas` is configured)."""
    cfg = ctx.cfg
    mobile = cfg.sources.mobile
    if not cfg.layers.panoramas.enabled or mobile is None or not mobile.panoramas:
        return []
    t0 = time.perf_counter()
    files = [i.path for i in ctx.inputs if i.role == "panoramas"]
    image_files = [i.path for i in ctx.inputs if i.role == IMAGE_ROLE]
    warnings: list[str] = []
    images: dict[str, str] = {}
    with ctx.stage("panoramas"):
        tables = [read_panorama_csv(f) for f in files]
        table = concat_tables(tables, mobile.track_gap_seconds)
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
            if mobile.heading_reference == "true":
                heading_true = np.round(table.heading % 360.0, 4)
            else:
                heading_true = true_headings(table, src_crs, cfg.crs, lon, lat, label)
        else:
            lon = lat = h = heading_true = np.zeros(0)
            warnings.append("panoramas: the panorama list is empty")
        if mobile.panorama_images:
            images, image_warnings = copy_images(ctx.release_dir, image_files, table)
            warnings += image_warnings
        write_json(
            ctx.release_dir / OUT_FILE,
            panoramas_geojson(table, lon, lat, h, heading_true, images if mobile.panorama_images else None),
        )
    stats: dict[str, Any] = {
        "panoramas": len(table),
        "files": len(files),
        "images": len(images),
        "tracks": len(set(table.track_id or [])),
        "crs": "EPSG:4326+ellipsoidal",
    }
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
            files=[OUT_FILE, *sorted(images.values())],
            stats=stats,
            warnings=warnings,
            seconds=time.perf_counter() - t0,
        )
    ]


def copy_images(
    release_dir: Path, image_files: list[Path], table: PanoramaTable
) -> tuple[dict[str, str], list[str]]:
    """Copy the images of the listed recordings (by file name stem = image_id) into the release, byte for
    byte; image_id -> release path. Images without a recording are skipped with a warning; two images
    for one recording and unreadable or non-equirectangular images are refused."""
    by_id: dict[str, Path] = {}
    for p in image_files:
        if p.stem in by_id:
            raise InputError(f"two images for image_id {p.stem!r} (also {by_id[p.stem]})", path=p)
        by_id[p.stem] = p
    listed = set(table.image_id)
    out: dict[str, str] = {}
    folder = release_dir / IMAGE_DIR
    for image_id in table.image_id:
        src = by_id.get(image_id)
        if src is None:
            continue
        check_panorama_image(src)
        folder.mkdir(parents=True, exist_ok=True)
        rel = f"{IMAGE_DIR}/{image_id}.jpg"
        shutil.copyfile(src, release_dir / rel)
        out[image_id] = rel
    warnings = []
    orphans = sorted(k for k in by_id if k not in listed)
    if orphans:
        warnings.append(
            f"panoramas: {len(orphans)} image(s) have no recording in the panorama list and were skipped "
            f"(e.g. {by_id[orphans[0]].name})"
        )
    return out, warnings
