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


def same_crs(path: Path, layer: str, crs: str | None, target_crs: str | None):
    """(True when the layer's horizontal CRS is the working CRS, the layer's CRS, the working CRS)."""
    from pyproj import CRS

    from pipeline.errors import CrsError
    from pipeline.sources.cadastre.common import WORKING_CRS

    file_crs = crs or pyogrio.read_info(path, layer=layer)["crs"]
    if file_crs is None:
        raise CrsError("cadastre file has no CRS; set sources.cadastre.crs", path=path)
    src = CRS.from_user_input(file_crs)
    want = CRS.from_user_input(target_crs if target_crs is not None else WORKING_CRS)
    src2 = src.sub_crs_list[0] if src.is_compound and src.sub_crs_list else src
    want2 = next(c for c in want.sub_crs_list if not c.is_vertical) if want.is_compound else want
    return src2.equals(want2) or src2.to_2d().equals(want2.to_2d()), src2, want2


def _file_bbox(
    path: Path,
    layer: str,
    crs: str | None,
    target_crs: str | None,
    bbox: tuple[float, float, float, float] | None,
) -> tuple[float, float, float, float] | None:
    """`bbox` (working CRS) in the CRS of the file's layer (densified bounds when they differ)."""
    if bbox is None:
        return None
    from pyproj.transformer import Transformer

    same, src, want = same_crs(path, layer, crs, target_crs)
    if same:
        return bbox
    t = Transformer.from_crs(want, src, always_xy=True)
    x0, y0, x1, y1 = t.transform_bounds(*bbox, densify_pts=21)
    return (float(x0), float(y0), float(x1), float(y1))


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
    path: Path,
    layer: str | None = None,
    crs: str | None = None,
    target_crs: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> gpd.GeoDataFrame:
    """Parcels (`flstkennz` + geometry) from an ALKIS GeoPackage (layer `Flurstueck` by default).

    `bbox` (in the working CRS `target_crs`): only the parcels whose envelope intersects it, read through
    the file's spatial index (memory bounded by the box, not the file; a superset: callers filter)."""
    lyr = find_layer(path, layer, PARCEL_LAYERS, "parcel")
    gdf = pyogrio.read_dataframe(path, layer=lyr, bbox=_file_bbox(path, lyr, crs, target_crs, bbox))
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
