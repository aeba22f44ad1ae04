"""ALKIS "vereinfacht" GeoPackages and generic footprint files (GeoJSON, Shapefile, GeoPackage).

The ALKIS building layer is spelled `GebauedeBauwerk` in the open-data downloads; `GebaeudeBauwerk` is
accepted too. Generic files map their columns to ours with `sources.cadastre.columns`
({our_name: their_column}).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio

from pipeline.errors import InputError
from pipeline.sources.cadastre.common import (
    Rejected,
    normalise_columns,
    to_working_crs,
)

BUILDING_LAYERS = ("GebauedeBauwerk", "GebaeudeBauwerk")
PARCEL_LAYERS = ("Flurstueck",)
LANDUSE_LAYERS = ("NutzungFlurstueck", "Nutzung")


def _layers(path: Path) -> list[str]:
    try:
        return [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except Exception as e:  # pyogrio raises DataSourceError and friends
        raise InputError(f"cannot open vector file: {e}", path=path) from e


def find_layer(path: Path, wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    names = _layers(path)
    if wanted:
        if wanted not in names:
            raise InputError(f"layer {wanted!r} not found (layers: {names})", path=path)
        return wanted
    lower = {n.lower(): n for n in names}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    if len(names) == 1:
        return names[0]
    raise InputError(f"no {what} layer (tried {list(candidates)}; layers: {names})", path=path)


def read_vector(
    path: Path,
    *,
    layer: str | None,
    columns: dict[str, str],
    crs: str | None,
    rejected: list[Rejected],
    candidates: tuple[str, ...] = BUILDING_LAYERS,
    target_crs: str | None = None,
) -> gpd.GeoDataFrame:
    """Read one footprint file into normalised columns (not yet repaired / filtered), in `target_crs`
    (the working CRS; None: the file's own)."""
    lyr = find_layer(path, layer, candidates, "building") if path.suffix.lower() == ".gpkg" else layer
    try:
        gdf = pyogrio.read_dataframe(path, layer=lyr, fid_as_index=True)
    except Exception as e:
        raise InputError(f"cannot read layer {lyr!r}: {e}", path=path) from e
    gdf = to_working_crs(gdf, crs, path, target_crs)
    # case-insensitive column access; explicit mapping wins
    lower = {c.lower(): c for c in gdf.columns if c != "geometry"}
    data: dict[str, object] = {}
    for ours in (
        "oid",
        "funktion",
        "gfkzshh",
        "anzahlgs",
        "gebnutzbez",
        "rellage",
        "lagebeztxt",
        "aktualit",
        "dachform",
        "baujahr",
        "objekthoehe",
        "measured_height",
    ):
        theirs = columns.get(ours)
        if theirs is not None:
            if theirs not in gdf.columns:
                raise InputError(
                    f"sources.cadastre.columns maps {ours!r} to {theirs!r}, which is not a column "
                    f"(columns: {sorted(lower.values())})",
                    path=path,
                )
            data[ours] = gdf[theirs].to_numpy()
        elif ours in lower:
            data[ours] = gdf[lower[ours]].to_numpy()
    if "oid" not in data:
        # a file without any id column: every record would get an invented id -> refuse clearly
        raise InputError("no id column: map one with sources.cadastre.columns: {oid: <column>}", path=path)
    out = gpd.GeoDataFrame(data, geometry=gdf.geometry.values, crs=gdf.crs)
    out["source_file"] = str(path)
    return normalise_columns(out)


def read_parcels(
    path: Path, layer: str | None = None, crs: str | None = None, target_crs: str | None = None
) -> gpd.GeoDataFrame:
    """Parcels (`flstkennz` + geometry) from an ALKIS GeoPackage (layer `Flurstueck` by default)."""
    lyr = find_layer(path, layer, PARCEL_LAYERS, "parcel")
    gdf = pyogrio.read_dataframe(path, layer=lyr)
    gdf = to_working_crs(gdf, crs, path, target_crs)
    lower = {c.lower(): c for c in gdf.columns}
    key = lower.get("flstkennz") or lower.get("flurstueckskennzeichen")
    if key is None:
        raise InputError(f"parcel layer {lyr!r} has no flstkennz column", path=path)
    keys = np.array([None if v is None else str(v) for v in gdf[key].to_numpy()], dtype=object)
    return gpd.GeoDataFrame({"flstkennz": keys}, geometry=gdf.geometry.values, crs=gdf.crs)


def read_land_use(
    path: Path,
    layer: str | None = None,
    column: str = "nutzart",
    crs: str | None = None,
    target_crs: str | None = None,
) -> gpd.GeoDataFrame | None:
    """Land-use areas (`nutzart` + geometry) of an ALKIS GeoPackage (layer `NutzungFlurstueck`, else
    `Nutzung`); None when the file has no such layer and none was asked for."""
    names = _layers(path)
    if layer is None:
        lower = {n.lower(): n for n in names}
        layer = next((lower[c.lower()] for c in LANDUSE_LAYERS if c.lower() in lower), None)
        if layer is None:
            return None
    elif layer not in names:
        raise InputError(f"land-use layer {layer!r} not found (layers: {names})", path=path)
    try:
        gdf = pyogrio.read_dataframe(path, layer=layer)
    except Exception as e:
        raise InputError(f"cannot read layer {layer!r}: {e}", path=path) from e
    gdf = to_working_crs(gdf, crs, path, target_crs)
    lower = {c.lower(): c for c in gdf.columns if c != "geometry"}
    if column.lower() not in lower:
        raise InputError(
            f"land-use layer {layer!r} has no column {column!r} (sources.cadastre.landuse_column; "
            f"columns: {sorted(lower.values())})",
            path=path,
        )
    uses = np.array(
        [None if v is None else str(v) for v in gdf[lower[column.lower()]].to_numpy()], dtype=object
    )
    return gpd.GeoDataFrame({"nutzart": uses}, geometry=gdf.geometry.values, crs=gdf.crs)
