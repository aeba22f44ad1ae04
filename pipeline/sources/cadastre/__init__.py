"""Cadastre readers: building footprints and parcels from ALKIS (GeoPackage "vereinfacht", NAS XML),
generic vector files and CityGML, normalised, repaired and filtered.

    table = read_footprints(files, fmt="alkis_gpkg", flt=FootprintFilter(), target_crs="EPSG:25832")
    table.gdf       # GeoDataFrame in target_crs (None: the first file's own), FOOTPRINT_COLUMNS, by oid
    table.rejected  # [Rejected(file, id, reason)], e.g. duplicates, slivers, Bauteil, bad XML
    parcels = read_parcels(files, fmt="alkis_gpkg")  # flstkennz + geometry (may be empty)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.errors import CrsError, InputError
from pipeline.sources.cadastre.common import (
    FOOTPRINT_COLUMNS,
    FUNCTION_GROUPS,
    GEBAEUDEFUNKTION,
    WORKING_CRS,
    FootprintFilter,
    FootprintTable,
    Rejected,
    empty_footprints,
    function_code,
    function_group,
    repair_and_filter,
)

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig

__all__ = [
    "FOOTPRINT_COLUMNS",
    "FUNCTION_GROUPS",
    "FootprintFilter",
    "FootprintTable",
    "Rejected",
    "function_code",
    "function_group",
    "read_footprints",
    "read_parcels",
    "read_reference_citygml",
]


def _is_citygml(path: Path) -> bool:
    if path.suffix.lower() not in (".gml", ".xml", ".citygml"):
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"citygml" in head.lower() or b"CityModel" in head


def _read_one(
    path: Path,
    fmt: str,
    *,
    layer: str | None,
    columns: dict[str, str],
    crs: str | None,
    rejected: list[Rejected],
    target_crs: str | None = None,
    crs_cfg: CrsConfig | None = None,
) -> gpd.GeoDataFrame:
    if _is_citygml(path):
        from pipeline.sources.cadastre.citygml import read_citygml

        return read_citygml(path, rejected, crs=crs, crs_cfg=crs_cfg)
    from pipeline.sources.cadastre.gpkg import read_vector

    return read_vector(path, layer=layer, columns=columns, crs=crs, rejected=rejected, target_crs=target_crs)


def read_footprints(
    files: Sequence[Path | str],
    fmt: str = "alkis_gpkg",
    *,
    flt: FootprintFilter | None = None,
    layer: str | None = None,
    columns: dict[str, str] | None = None,
    crs: str | None = None,
    target_crs: str | None = None,
    crs_cfg: CrsConfig | None = None,
) -> FootprintTable:
    """Read, normalise, repair and filter the footprints of all files (sorted by oid), in `target_crs`
    (the working CRS's horizontal part; None: the first file's own CRS, the others transformed into it).
    Each file's own CRS (GeoPackage layer CRS, NAS/CityGML srsName) is honoured; `crs` overrides it.
    `crs_cfg` (the working CRS with its heights) takes CityGML heights into the working height system."""
    flt = flt or FootprintFilter()
    rejected: list[Rejected] = []
    frames: list[gpd.GeoDataFrame] = []
    if fmt == "nas":  # all files at once: updates apply across files; broken XML raises InputError
        from pipeline.sources.cadastre.nas import read_nas_files

        frames.append(read_nas_files(files, rejected, crs=crs, want_parcels=False, target_crs=target_crs)[0])
    for f in sorted(Path(p) for p in files) if fmt != "nas" else []:
        try:
            frames.append(
                _read_one(
                    f,
                    fmt,
                    layer=layer,
                    columns=columns or {},
                    crs=crs,
                    rejected=rejected,
                    target_crs=target_crs,
                    crs_cfg=crs_cfg,
                )
            )
        except CrsError:
            raise
        except InputError as e:
            if "sources.cadastre.columns" in e.message or "no id column" in e.message:
                raise  # configuration problem, not a bad record
            rejected.append(Rejected(str(f), "-", f"unreadable file: {e.message}"))
    frames = [f for f in frames if len(f)]
    if not frames:
        if files and len(rejected) and all(r.id == "-" for r in rejected):
            raise InputError(f"no cadastre file could be read: {rejected[0].reason}", path=rejected[0].file)
        return FootprintTable(empty_footprints(), rejected)
    target = target_crs or frames[0].crs
    frames = [_to_target(f, target) for f in frames]
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=target)
    # derive the function text from the code where only the code is given
    codes = [function_code(c) for c in gdf["gfkzshh"]]
    gdf["funktion"] = [
        t if t else (GEBAEUDEFUNKTION.get(c) if c else None)
        for t, c in zip(gdf["funktion"], codes, strict=True)
    ]
    gdf = repair_and_filter(gdf, flt, rejected)
    return FootprintTable(gdf, rejected)


def read_parcels(
    files: Sequence[Path | str],
    fmt: str = "alkis_gpkg",
    *,
    layer: str | None = None,
    crs: str | None = None,
    target_crs: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> gpd.GeoDataFrame:
    """Parcels (flstkennz, geometry) of the cadastre files; empty when the format carries none.

    `bbox` (working CRS): only parcels whose envelope intersects it. GeoPackages are read through their
    spatial index (memory bounded by the box); NAS files are read whole, then filtered."""
    frames = []
    if fmt == "nas":
        from pipeline.sources.cadastre.nas import read_nas_files

        frames.append(read_nas_files(files, [], crs=crs, want_buildings=False, target_crs=target_crs)[1])
    for f in sorted(Path(p) for p in files) if fmt != "nas" else []:
        if f.suffix.lower() == ".gpkg":
            from pipeline.sources.cadastre.gpkg import read_parcels as gp

            try:
                frames.append(gp(f, layer, crs, target_crs, bbox))
            except InputError:
                if layer:
                    raise
    frames = [f for f in frames if len(f)]
    if not frames:
        empty = target_crs or WORKING_CRS
        return gpd.GeoDataFrame({"flstkennz": []}, geometry=gpd.GeoSeries([], crs=empty), crs=empty)
    target = target_crs or frames[0].crs
    frames = [_to_target(f, target) for f in frames]
    out = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=target)
    if bbox is not None:  # envelopes intersecting the box, as the GeoPackage's spatial index selects
        b = shapely.bounds(out.geometry.to_numpy())
        hit = (b[:, 0] <= bbox[2]) & (b[:, 2] >= bbox[0]) & (b[:, 1] <= bbox[3]) & (b[:, 3] >= bbox[1])
        out = out[hit].reset_index(drop=True)
    return out


def _to_target(frame: gpd.GeoDataFrame, target_crs: object) -> gpd.GeoDataFrame:
    """A reader's frame in the working CRS (a frame already in it is only relabelled)."""
    if target_crs is None or frame.crs is None:
        return frame
    from pipeline.sources.cadastre.common import to_working_crs

    return to_working_crs(frame, None, str(frame.get("source_file", pd.Series(["-"])).iloc[0]), target_crs)


def read_reference_citygml(
    files: Sequence[Path | str], crs: str | None = None, crs_cfg: CrsConfig | None = None
) -> FootprintTable:
    """Official LoD1/LoD2 models (no filtering): footprints with measured_height, ground_z, roof_z, in the
    working CRS `crs_cfg` (positions and heights; None: the first file's own CRS)."""
    from pipeline.sources.cadastre.citygml import own_crs_cfg, read_citygml

    rejected: list[Rejected] = []
    ordered = sorted(Path(p) for p in files)
    cfg = crs_cfg if crs_cfg is not None or not ordered else own_crs_cfg(ordered[0], crs)
    frames = [read_citygml(f, rejected, crs=crs, crs_cfg=cfg) for f in ordered]
    frames = [f for f in frames if len(f)]
    if not frames:
        return FootprintTable(empty_footprints(), rejected)
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    return FootprintTable(gdf.sort_values("oid", kind="stable").reset_index(drop=True), rejected)
