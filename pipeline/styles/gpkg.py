"""GeoPackage layers that open styled in QGIS, valid for GDAL >= 3.6 and byte-identical on rebuild.

Every GeoPackage layer of a release is written through `write_layer` (features) and gets its QGIS style
from `embed_styles` / `write_styles`.

- `write_layer` declares the layer's geometry type (e.g. ``MultiPolygon``) and CRS even when the layer is
  empty (an empty GeoDataFrame would otherwise be declared ``GEOMETRY``), promotes single geometries to
  the declared multi type, and stamps ``gpkg_contents.last_change`` with `GPKG_TIMESTAMP` instead of the
  current time (GDAL's ``OGR_CURRENT_DATE``).
- `embed_styles` stores QML styles in the ``layer_styles`` table in the schema QGIS itself creates
  (``QgsOgrProviderMetadata::saveStyle``: ``f_table_catalog``, ``f_table_schema``, ``f_table_name``,
  ``f_geometry_column``, ``styleName``, ``styleQML``, ``styleSLD``, ``useAsDefault``, ``description``,
  ``owner``, ``ui``, ``update_time``), with ``useAsDefault = 1``: QGIS applies it when the layer is
  opened. The table is registered in ``gpkg_contents`` as an attributes table, as QGIS does.
  `write_styles` does that and writes each style as ``<layer>.qml`` beside the GeoPackage too.

Timestamps: GeoPackage 1.2 (requirement 15) wants ``YYYY-MM-DDTHH:MM:SS.SSSZ``; GDAL 3.6 warns about
any ``DATETIME`` value in another form when it reads the row. The fixed `GPKG_TIMESTAMP` keeps rebuilds
byte-identical (the release's build id and the manifest say when a release was built).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd

# GeoPackage 1.2 timestamp format (UTC, milliseconds, 'Z'); fixed so rebuilds are byte-identical.
GPKG_TIMESTAMP = "2000-01-01T00:00:00.000Z"
STYLE_DESCRIPTION = "RuhrTwin default style"
# GeoPackage 1.2: GDAL >= 3.7 writes 1.4 by default, whose R-tree triggers GDAL 3.6 and its
# validate_gpkg.py reject ("rtree_..._update1 trigger missing", "may only be partially supported").
GPKG_VERSION = "1.2"

# What GDAL's GeoPackage driver makes of the fields QGIS creates for `layer_styles` (FID "id",
# update_time an OFTDateTime defaulting to CURRENT_TIMESTAMP).
LAYER_STYLES_DDL = (
    'CREATE TABLE "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
    '"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256), '
    '"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT, '
    '"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30), '
    "\"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)
# GDAL's feature-count triggers (as on every table GDAL creates), so later edits keep the count right.
COUNT_TRIGGERS = (
    'CREATE TRIGGER "trigger_insert_feature_count_layer_styles" AFTER INSERT ON "layer_styles" BEGIN '
    "UPDATE gpkg_ogr_contents SET feature_count = feature_count + 1 "
    "WHERE lower(table_name) = lower('layer_styles'); END",
    'CREATE TRIGGER "trigger_delete_feature_count_layer_styles" AFTER DELETE ON "layer_styles" BEGIN '
    "UPDATE gpkg_ogr_contents SET feature_count = feature_count - 1 "
    "WHERE lower(table_name) = lower('layer_styles'); END",
)


def write_layer(
    gdf: gpd.GeoDataFrame,
    path: Path,
    layer: str,
    geometry_type: str,
    *,
    spatial_index: bool = True,
) -> Path:
    """Write (or replace) one layer of a GeoPackage with a declared geometry type and CRS.

    `geometry_type` is an OGR name (``"MultiPolygon"``, ``"MultiLineString"``, ``"Point"``...); the
    layer's CRS is the GeoDataFrame's, which must be set (a layer without CRS is a bug, not a guess)."""
    import pyogrio

    if gdf.crs is None:
        raise ValueError(f"{path}: layer {layer!r} has no CRS; refusing to write it without one")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    try:
        pyogrio.write_dataframe(
            gdf,
            path,
            layer=layer,
            driver="GPKG",
            geometry_type=geometry_type,
            promote_to_multi=geometry_type.startswith("Multi"),
            SPATIAL_INDEX="YES" if spatial_index else "NO",
            VERSION=GPKG_VERSION,
        )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})
    return path


def write_layer_wkb(
    path: Path,
    layer: str,
    geometry_type: str,
    wkb: np.ndarray,
    columns: Mapping[str, np.ndarray],
    crs: Any,
    *,
    spatial_index: bool = True,
) -> Path:
    """`write_layer` for a layer given as WKB geometries (shapely.to_wkb) and attribute arrays (one per
    field, in field order) instead of a GeoDataFrame: the same file, byte for byte, as `write_layer` of the
    GeoDataFrame of those columns and geometries, without the geometries as shapely objects in memory."""
    import pyogrio
    import pyproj
    from pyogrio.raw import write

    if crs is None:
        raise ValueError(f"{path}: layer {layer!r} has no CRS; refusing to write it without one")
    crs = pyproj.CRS.from_user_input(crs)
    epsg = crs.to_epsg()  # as pyogrio.write_dataframe names the CRS
    path.parent.mkdir(parents=True, exist_ok=True)
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    try:
        write(
            path,
            geometry=wkb,
            field_data=list(columns.values()),
            field_mask=[None] * len(columns),
            fields=list(columns),
            layer=layer,
            driver="GPKG",
            geometry_type=geometry_type,
            crs=f"EPSG:{epsg}" if epsg else crs.to_wkt("WKT1_GDAL"),
            promote_to_multi=geometry_type.startswith("Multi"),
            gdal_tz_offsets={},
            SPATIAL_INDEX="YES" if spatial_index else "NO",
            VERSION=GPKG_VERSION,
        )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})
    return path


def write_styles(gpkg: Path, styles: Mapping[str, str]) -> list[Path]:
    """Each layer's QML (layer name -> QML text) as its default style in `gpkg` and as `<layer>.qml`
    beside it (for QGIS's "Load Style..." and other tools); returns the `.qml` files written."""
    embed_styles(gpkg, styles)
    out = []
    for layer in sorted(styles):
        p = gpkg.parent / f"{layer}.qml"
        p.write_text(styles[layer], encoding="utf-8")
        out.append(p)
    return out


def embed_styles(
    gpkg: Path,
    styles: Mapping[str, str],
    *,
    description: str = STYLE_DESCRIPTION,
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Store each layer's QML (layer name -> QML text) as its default QGIS style in `gpkg`.

    `extra`: further named styles per layer (layer -> style name -> QML), stored with
    ``useAsDefault = 0`` after the default one (QGIS offers them in the layer's style manager, "Load
    Style... > From database"). Replaces the styles stored before for the same layers; every layer must
    exist and have a default style."""
    extra = extra or {}
    if set(extra) - set(styles):
        raise ValueError(
            f"{gpkg}: extra styles for {sorted(set(extra) - set(styles))} without a default style"
        )
    if not gpkg.is_file():
        raise FileNotFoundError(f"{gpkg}: no GeoPackage to store styles in")
    con = sqlite3.connect(gpkg)
    try:
        geom_cols = dict(con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())
        contents = {r[0] for r in con.execute("SELECT table_name FROM gpkg_contents").fetchall()}
        missing = sorted(set(styles) - contents)
        if missing:
            raise ValueError(f"{gpkg}: no layer {', '.join(missing)} to attach a style to")
        has_table = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'layer_styles'"
        ).fetchone()
        has_counts = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gpkg_ogr_contents'"
        ).fetchone()
        if not has_table:
            con.execute(LAYER_STYLES_DDL)
            if has_counts:
                con.execute(
                    "INSERT INTO gpkg_ogr_contents (table_name, feature_count) VALUES ('layer_styles', 0)"
                )
                for trigger in COUNT_TRIGGERS:
                    con.execute(trigger)
        if "layer_styles" not in contents:
            con.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles', '', ?)",
                (GPKG_TIMESTAMP,),
            )
        for layer in sorted(styles):
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '', ?)",
                (layer, geom_cols.get(layer, ""), layer, styles[layer], description, GPKG_TIMESTAMP),
            )
            for name in sorted(extra.get(layer, {})):
                con.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                    "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, "
                    "update_time) VALUES ('', '', ?, ?, ?, ?, '', 0, ?, '', '', ?)",
                    (layer, geom_cols.get(layer, ""), name, extra[layer][name], description, GPKG_TIMESTAMP),
                )
        con.commit()
    finally:
        con.close()


def default_styles(gpkg: Path) -> dict[str, str]:
    """Layer name -> QML of the default styles stored in `gpkg` (empty without a `layer_styles` table)."""
    con = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'layer_styles'").fetchone():
            return {}
        rows = con.execute(
            "SELECT f_table_name, styleQML FROM layer_styles WHERE useAsDefault ORDER BY f_table_name, id"
        ).fetchall()
    finally:
        con.close()
    return {name: qml for name, qml in rows}
