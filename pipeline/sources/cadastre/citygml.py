"""CityGML LoD1/LoD2 buildings: ground footprint, measuredHeight, function, roofType (streaming).

The footprint is the union of the `bldg:GroundSurface` polygons (LoD2) or, without them, of the lowest
horizontal polygons of the LoD1 solid / multi-surface. Used as generic footprint input and as the
official reference our heights are compared against.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from lxml import etree

from pipeline.sources.cadastre.common import WORKING_CRS, Rejected, normalise_columns
from pipeline.sources.cadastre.gml import GmlError, find_srs, local, polygons_3d, release_parsed, srs_to_crs

HORIZONTAL_TOL = 0.05  # m: a polygon whose Z varies less than this is horizontal


def _footprint(el: etree._Element) -> tuple[shapely.Geometry, float, float]:
    ground: list[np.ndarray] = []
    for gs in el.iter("{*}GroundSurface"):
        ground.extend(polygons_3d(gs))
    rings = polygons_3d(el)
    if not rings:
        raise GmlError("no polygons with Z")
    zmin = min(float(r[:, 2].min()) for r in rings)
    zmax = max(float(r[:, 2].max()) for r in rings)
    if not ground:
        ground = [
            r
            for r in rings
            if float(np.ptp(r[:, 2])) < HORIZONTAL_TOL and abs(float(r[:, 2].mean()) - zmin) < HORIZONTAL_TOL
        ]
    if not ground:
        ground = rings
    polys = [shapely.make_valid(shapely.Polygon(r[:, :2])) for r in ground if len(r) >= 4]
    geom = shapely.union_all([p for p in polys if not p.is_empty])
    if geom.is_empty or geom.area <= 0:
        raise GmlError("footprint has no area")
    return geom, zmin, zmax


def _value(el: etree._Element, name: str) -> str | None:
    for c in el:
        if local(c) == name and c.text and c.text.strip():
            return c.text.strip()
    return None


def read_citygml(path: Path, rejected: list[Rejected], *, crs: str | None = None) -> gpd.GeoDataFrame:
    """Buildings of one CityGML file: normalised footprint columns + ground_z, roof_z, roof_type."""
    rows: list[dict] = []
    geoms: list = []
    src = str(path)
    file_crs: str | None = crs
    try:
        for _ev, el in etree.iterparse(str(path), events=("end",), tag="{*}Building", huge_tree=True):
            gid = next((v for k, v in el.attrib.items() if k.endswith("}id")), None) or "-"
            try:
                if file_crs is None:
                    file_crs = srs_to_crs(find_srs(el))
                geom, zmin, zmax = _footprint(el)
                mh = _value(el, "measuredHeight")
                rows.append(
                    {
                        "oid": gid if gid != "-" else None,
                        "gfkzshh": _value(el, "function"),
                        "measured_height": float(mh) if mh else np.nan,
                        "dachform": _value(el, "roofType"),
                        "gebnutzbez": "Gebäude",
                        "source_file": src,
                        "ground_z": zmin,
                        "roof_z": zmax,
                    }
                )
                geoms.append(geom)
            except (GmlError, ValueError, shapely.errors.GEOSException) as e:
                rejected.append(Rejected(src, gid, f"Building: {e}"))
            release_parsed(el)
    except etree.XMLSyntaxError as e:
        rejected.append(Rejected(src, "-", f"XML syntax error (records after it are lost): {e}"))
    gdf = gpd.GeoDataFrame(rows, geometry=gpd.GeoSeries(geoms), crs=None)
    if len(gdf):
        if file_crs is None:
            from pipeline.errors import CrsError

            raise CrsError("CityGML without srsName; set the source's crs", path=path)
        gdf = gdf.set_crs(file_crs)
        if gdf.crs.to_epsg() != 25832:
            gdf = gdf.to_crs(WORKING_CRS)
    else:
        gdf = gdf.set_crs(WORKING_CRS)
    for c in ("ground_z", "roof_z"):
        if c not in gdf:
            gdf[c] = np.nan
    out = normalise_columns(gdf)
    from pipeline.sources.cadastre.common import GEBAEUDEFUNKTION, function_code

    out["funktion"] = [GEBAEUDEFUNKTION.get(function_code(c)) for c in out["gfkzshh"]]
    return out
