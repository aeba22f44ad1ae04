"""Cadastre readers: building footprints and parcels from ALKIS (GeoPackage "vereinfacht", NAS XML),
generic vector files and CityGML, normalised, repaired and filtered.

    table = read_footprints(files, fmt="alkis_gpkg", flt=FootprintFilter())
    table.gdf       # GeoDataFrame EPSG:25832, columns FOOTPRINT_COLUMNS, sorted by oid
    table.rejected  # [Rejected(file, id, reason)], e.g. duplicates, slivers, Bauteil, bad XML
    parcels = read_parcels(files, fmt="alkis_gpkg")  # flstkennz + geometry (may be empty)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd

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
) -> gpd.GeoDataFrame:
    if _is_citygml(path):
        from pipeline.sources.cadastre.citygml import read_citygml

        return read_citygml(path, rejected, crs=crs)
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
) -> FootprintTable:
    """Read, normalise, repair and filter the footprints of all files (sorted by oid), in `target_crs`
    (the working CRS; default EPSG:25832)."""
    flt = flt or FootprintFilter()
    rejected: list[Rejected] = []
    frames: list[gpd.GeoDataFrame] = []
    if fmt == "nas":  # all files at once: updates apply across files; broken XML raises InputError
        from pipeline.sources.cadastre.nas import read_nas_files

        frames.append(read_nas_files(files, rejected, crs=crs, want_parcels=False)[0])
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
    frames = [_to_target(f, target_crs) for f in frames]
    gdf = gpd.GeoDataFrame(
        pd.concat(frames, ignore_index=True), geometry="geometry", crs=target_crs or WORKING_CRS
    )
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
) -> gpd.GeoDataFrame:
    """Parcels (flstkennz, geometry) of the cadastre files; empty when the format carries none."""
    frames = []
    if fmt == "nas":
        from pipeline.sources.cadastre.nas import read_nas_files

        frames.append(read_nas_files(files, [], crs=crs, want_buildings=False)[1])
    for f in sorted(Path(p) for p in files) if fmt != "nas" else []:
        if f.suffix.lower() == ".gpkg":
            from pipeline.sources.cadastre.gpkg import read_parcels as gp

            try:
                frames.append(gp(f, layer, crs, target_crs))
            except InputError:
                if layer:
                    raise
    frames = [f for f in frames if len(f)]
    target = target_crs or WORKING_CRS
    if not frames:
        return gpd.GeoDataFrame({"flstkennz": []}, geometry=gpd.GeoSeries([], crs=target), crs=target)
    frames = [_to_target(f, target_crs) for f in frames]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=target)


def _to_target(frame: gpd.GeoDataFrame, target_crs: str | None) -> gpd.GeoDataFrame:
    """A reader's frame in the working CRS (readers that work in EPSG:25832 are reprojected here)."""
    if target_crs is None or frame.crs is None:
        return frame
    from pipeline.sources.cadastre.common import to_working_crs

    return to_working_crs(frame, None, str(frame.get("source_file", pd.Series(["-"])).iloc[0]), target_crs)


def read_reference_citygml(
    files: Sequence[Path | str], crs: str | None = None, target_crs: str | None = None
) -> FootprintTable:
    """Official LoD1/LoD2 models (no filtering): footprints with measured_height, ground_z, roof_z."""
    from pipeline.sources.cadastre.citygml import read_citygml

    rejected: list[Rejected] = []
    frames = [read_citygml(Path(f), rejected, crs=crs) for f in sorted(Path(p) for p in files)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return FootprintTable(empty_footprints(), rejected)
    frames = [_to_target(f, target_crs) for f in frames]
    gdf = gpd.GeoDataFrame(
        pd.concat(frames, ignore_index=True), geometry="geometry", crs=target_crs or WORKING_CRS
    )
    return FootprintTable(gdf.sort_values("oid", kind="stable").reset_index(drop=True), rejected)
