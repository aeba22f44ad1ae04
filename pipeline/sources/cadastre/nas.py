"""Full ALKIS NAS XML (AAA model): `AX_Gebaeude` footprints and `AX_Flurstueck` parcels.

GDAL's NAS driver is used when the installed GDAL has it (`nas_driver_available()`); the wheels of pyogrio
usually do not ship it, so the default is a streaming reader on `lxml.etree.iterparse`: memory stays
bounded (every feature element is cleared after use), `gml:Arc` segments are densified, holes and
multi-surfaces are kept. Records that cannot be read are reported (file, id, reason), never fatal.
"""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from lxml import etree

from pipeline.sources.cadastre.common import (
    GEBAEUDEFUNKTION,
    WORKING_CRS,
    Rejected,
    normalise_columns,
)
from pipeline.sources.cadastre.gml import GmlError, find_srs, local, polygons_of, release_parsed, srs_to_crs

_TIMESTAMP = re.compile(r"\d{8}T\d{6}Z$")
LAGE = {"1200": "unter der Erdoberfläche", "1400": "aufgeständert", "1700": "über der Erdoberfläche"}


def nas_driver_available() -> bool:
    try:
        import pyogrio

        return "NAS" in pyogrio.list_drivers()
    except Exception:
        return False


def _oid(el: etree._Element) -> str | None:
    for c in el:
        if local(c) == "identifier" and c.text:
            t = c.text.strip()
            return t.rsplit(":", 1)[-1] if t.startswith("urn:adv:oid:") else t
    gid = next((v for k, v in el.attrib.items() if k.endswith("}id") or k == "id"), None)
    if gid and len(gid) > 16 and _TIMESTAMP.search(gid):
        gid = gid[:16]
    return gid


def _text(el: etree._Element, name: str) -> str | None:
    for c in el:
        if local(c) == name and c.text and c.text.strip():
            return c.text.strip()
    return None


def _geometry(el: etree._Element, tol: float, crs_override: str | None):
    pos = next((c for c in el if local(c) == "position"), None)
    if pos is None:
        raise GmlError("no position (geometry)")
    polys = polygons_of(pos, tol)
    if not polys:
        raise GmlError("position holds no surface")
    geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    crs = crs_override or srs_to_crs(find_srs(pos))
    if crs is None:
        raise GmlError(f"unknown or missing srsName {find_srs(pos)!r}; set sources.cadastre.crs")
    if crs != WORKING_CRS:
        from pyproj import Transformer

        t = Transformer.from_crs(crs, WORKING_CRS, always_xy=True)
        geom = shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    return geom


def read_nas(
    path: Path,
    rejected: list[Rejected],
    *,
    crs: str | None = None,
    arc_tolerance_m: float = 0.02,
    want_parcels: bool = True,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(buildings, parcels) of one NAS file; buildings in normalised columns, parcels with flstkennz."""
    b_rows: list[dict] = []
    b_geoms: list = []
    p_keys: list[str | None] = []
    p_geoms: list = []
    tags = ["{*}AX_Gebaeude", "{*}AX_Flurstueck"] if want_parcels else ["{*}AX_Gebaeude"]
    src = str(path)
    try:
        ctx = etree.iterparse(str(path), events=("end",), tag=tags, huge_tree=True, remove_comments=True)
        for _ev, el in ctx:
            kind = local(el)
            oid = _oid(el) or "-"
            try:
                geom = _geometry(el, arc_tolerance_m, crs)
                if kind == "AX_Gebaeude":
                    code = _text(el, "gebaeudefunktion")
                    lage = _text(el, "lageZurErdoberflaeche")
                    b_rows.append(
                        {
                            "oid": oid if oid != "-" else None,
                            "gfkzshh": f"31001_{code}" if code else None,
                            "funktion": (
                                GEBAEUDEFUNKTION.get(int(code), f"Gebäudefunktion {code}")
                                if code and code.isdigit()
                                else None
                            ),
                            "anzahlgs": _text(el, "anzahlDerOberirdischenGeschosse"),
                            "gebnutzbez": "Gebäude",
                            "rellage": LAGE.get(lage or "", lage),
                            "objekthoehe": _text(el, "objekthoehe"),
                            "dachform": _text(el, "dachform"),
                            "baujahr": _text(el, "baujahr"),
                            "source_file": src,
                        }
                    )
                    b_geoms.append(geom)
                else:
                    key = _text(el, "flurstueckskennzeichen")
                    if key is None:
                        raise GmlError("AX_Flurstueck without flurstueckskennzeichen")
                    p_keys.append(key)
                    p_geoms.append(geom)
            except (GmlError, ValueError, shapely.errors.GEOSException) as e:
                rejected.append(Rejected(src, oid, f"{kind}: {e}"))
            release_parsed(el)
    except etree.XMLSyntaxError as e:
        rejected.append(Rejected(src, "-", f"XML syntax error (records after it are lost): {e}"))
    except OSError as e:
        rejected.append(Rejected(src, "-", f"cannot read file: {e}"))
    buildings = gpd.GeoDataFrame(b_rows, geometry=gpd.GeoSeries(b_geoms, crs=WORKING_CRS), crs=WORKING_CRS)
    buildings = normalise_columns(buildings)
    parcels = gpd.GeoDataFrame(
        {"flstkennz": np.array(p_keys, dtype=object)},
        geometry=gpd.GeoSeries(p_geoms, crs=WORKING_CRS),
        crs=WORKING_CRS,
    )
    return buildings, parcels
