"""ALKIS-vereinfacht-like GeoPackage of the demo district (EPSG:25832).

Layers and columns (as in the open-data downloads of Geobasis NRW):

* ``Flurstueck`` (parcels; they tile the district up to mm slivers; streets are parcels of their own):
  ``flstkennz`` (20 characters: land 05, Gemarkung 4, Flur 3, Zähler 5, Nenner 4 or ``____``, ``__``),
  ``gemarkung`` (name), ``flur`` (int), ``flaeche`` (m², rounded), ``lagebeztxt``, ``aktualit`` (ISO date).
* ``GebauedeBauwerk`` (the spelling of the downloads): ``oid`` (``DENW36AL`` + 8 characters), ``aktualit``,
  ``gebnutzbez`` (``Gebäude`` / ``Bauteil``), ``funktion`` (text), ``gfkzshh`` (``31001_<function code>`` for
  buildings, ``31002_<bauart>`` for Bauteil records), ``anzahlgs`` (floors, mostly NULL), ``rellage`` (NULL or
  ``unter der Erdoberfläche``), ``lagebeztxt``. Geometries are MultiPolygons; four records carry invalid
  geometries on purpose (bow-tie self-intersection, a ring with too few distinct points, a spike with a
  duplicated vertex, a hole outside its shell) and one a valid ring with a repeated vertex.
* ``NutzungFlurstueck`` (tatsächliche Nutzung per parcel): ``flstkennz``, ``nutzart`` (``Straßenverkehr`` for
  the street parcels, ``Wohnbaufläche`` for the others), ``name`` (the street's name, else NULL),
  ``flaeche``. The street parcels are the whole street space between the lots (carriageway and
  sidewalks), so their centreline is the street's centreline.
* ``VerwaltungsEinheit``: the district outline (``bezeichnung``, ``schluessel``).

The cadastre shows the state of the second epoch, except that demolished buildings are still recorded
(the cadastre lags behind) and unregistered structures are missing.

Determinism: GDAL stamps ``gpkg_contents.last_change`` with the current time unless ``OGR_CURRENT_DATE``
is set; it is set to a fixed date derived from the epoch while writing.
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely

from pipeline.sources.demo.city import City, epoch_year

BUILDING_LAYER = "GebauedeBauwerk"
PARCEL_LAYER = "Flurstueck"
LANDUSE_LAYER = "NutzungFlurstueck"
STREET_USE = "Straßenverkehr"
ADMIN_LAYER = "VerwaltungsEinheit"
CRS = "EPSG:25832"


def building_records(city: City) -> gpd.GeoDataFrame:
    rows = []
    for s in city.structures:
        if not s.in_cadastre:
            continue
        rows.append(
            {
                "oid": s.oid,
                "aktualit": s.aktualit,
                "gebnutzbez": "Gebäude",
                "funktion": s.funktion,
                "gfkzshh": s.gfkzshh,
                "anzahlgs": s.anzahlgs,
                "rellage": None,
                "lagebeztxt": s.lagebeztxt,
                "geometry": s.cadastre_geom if s.cadastre_geom is not None else s.geom,
            }
        )
    for p in city.parts:
        rows.append(
            {
                "oid": p.oid,
                "aktualit": p.aktualit,
                "gebnutzbez": "Bauteil" if p.kind == "bauteil" else "Gebäude",
                "funktion": p.funktion,
                "gfkzshh": p.gfkzshh,
                "anzahlgs": None,
                "rellage": "unter der Erdoberfläche" if p.kind == "underground" else None,
                "lagebeztxt": p.lagebeztxt,
                "geometry": p.geom,
            }
        )
    df = pd.DataFrame(rows)
    df["anzahlgs"] = pd.array(df["anzahlgs"].tolist(), dtype="Int64")
    df["rellage"] = df["rellage"].astype(object)
    return gpd.GeoDataFrame(df, geometry="geometry", crs=CRS)


def parcel_records(city: City) -> gpd.GeoDataFrame:
    rows = [
        {
            "flstkennz": p.flstkennz,
            "gemarkung": p.gemarkung,
            "flur": p.flur,
            "flaeche": p.flaeche,
            "lagebeztxt": p.lagebeztxt,
            "aktualit": p.aktualit,
            "geometry": p.geom,
        }
        for p in city.parcels
    ]
    return gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=CRS)


def land_use_records(city: City) -> gpd.GeoDataFrame:
    rows = [
        {
            "flstkennz": p.flstkennz,
            "nutzart": STREET_USE if p.is_street else "Wohnbaufläche",
            "name": p.lagebeztxt if p.is_street else None,
            "flaeche": p.flaeche,
            "geometry": p.geom,
        }
        for p in city.parcels
    ]
    df = pd.DataFrame(rows)
    df["name"] = df["name"].astype(object)
    return gpd.GeoDataFrame(df, geometry="geometry", crs=CRS)


def write_cadastre(path: Path, city: City) -> dict[str, int]:
    """Write the GeoPackage atomically; returns record counts per layer."""
    buildings = building_records(city)
    parcels = parcel_records(city)
    land_use = land_use_records(city)
    admin = gpd.GeoDataFrame(
        {"bezeichnung": ["Gelsenkirchen (Demo)"], "schluessel": ["05513000"]},
        geometry=[shapely.box(*city.bounds)],
        crs=CRS,
    )
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if tmp.exists():
        tmp.unlink()
    stamp = f"{epoch_year(city.epochs[1], 1)}-05-01T00:00:00Z"
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": stamp})
    try:
        layers = (
            (parcels, PARCEL_LAYER),
            (buildings, BUILDING_LAYER),
            (land_use, LANDUSE_LAYER),
            (admin, ADMIN_LAYER),
        )
        for gdf, layer in layers:
            pyogrio.write_dataframe(gdf, tmp, layer=layer, driver="GPKG", promote_to_multi=True)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
    os.replace(tmp, path)
    return {
        PARCEL_LAYER: len(parcels),
        BUILDING_LAYER: len(buildings),
        LANDUSE_LAYER: len(land_use),
        ADMIN_LAYER: 1,
    }
