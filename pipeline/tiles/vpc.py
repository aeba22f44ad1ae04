"""Virtual point cloud (`.vpc`): a STAC ItemCollection (GeoJSON FeatureCollection of STAC 1.0.0 Items, one
per point-cloud file) as PDAL wrench's `build_vpc` writes it and QGIS (>= 3.32) opens it as one layer.

Per item: `geometry` / `bbox` in WGS 84 (lon/lat; `bbox` with heights), and in `properties` the file's own
CRS (`proj:wkt2`), its native 2D footprint (`proj:geometry`) and 3D box (`proj:bbox`), the point count
(`pc:count`), the dimensions (`pc:schemas`, PDAL's names and types) and a `datetime`; `assets.data.href`
is the file relative to the .vpc (`./copc/x.copc.laz`). QGIS takes the layer's extent from `proj:bbox`
and its CRS from `proj:epsg` if present, else `proj:wkt2`: `proj:epsg` is left out on purpose (QGIS
3.34-3.40 read it as an internal QGIS id, not as an EPSG code), so the CRS always comes from the WKT.

Output is deterministic: items in the order given, keys in a fixed order, floats as Python prints them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.tiles.copc import CopcSchema

STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/pointcloud/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
]


def pdal_schema(schema: CopcSchema, has_gps: bool = True) -> list[dict]:
    """The dimensions of a COPC file of `schema` as PDAL's LAS/COPC readers name and type them."""
    dims = [
        ("X", "floating", 8),
        ("Y", "floating", 8),
        ("Z", "floating", 8),
        ("Intensity", "unsigned", 2),
        ("ReturnNumber", "unsigned", 1),
        ("NumberOfReturns", "unsigned", 1),
        ("ScanDirectionFlag", "unsigned", 1),
        ("EdgeOfFlightLine", "unsigned", 1),
        ("Classification", "unsigned", 1),
        ("ScanAngleRank", "floating", 4),
        ("UserData", "unsigned", 1),
        ("PointSourceId", "unsigned", 2),
        ("GpsTime", "floating", 8),
        ("ScanChannel", "unsigned", 1),
        ("ClassFlags", "unsigned", 1),
    ]
    if schema.has_rgb or schema.has_nir:
        dims += [("Red", "unsigned", 2), ("Green", "unsigned", 2), ("Blue", "unsigned", 2)]
    if schema.has_nir:
        dims += [("Infrared", "unsigned", 2)]
    dims += [(name, "floating", 4) for name in schema.extra_dims]
    return [{"name": n, "type": t, "size": s} for n, t, s in dims]


@dataclass(frozen=True)
class VpcItem:
    href: str  # relative to the .vpc, "./..."
    count: int
    mins: tuple[float, float, float]  # native CRS
    maxs: tuple[float, float, float]
    wkt2: str
    schema: list[dict]
    datetime: str  # RFC 3339, e.g. "2024-01-01T00:00:00Z"

    @property
    def id(self) -> str:
        name = self.href.rsplit("/", 1)[-1]
        for ext in (".copc.laz", ".laz", ".las"):
            if name.endswith(ext):
                return name[: -len(ext)]
        return name


def _ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _wgs84_box(item: VpcItem) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the item's native box, densified edges (pyproj)."""
    from pyproj import CRS, Transformer

    src = CRS.from_wkt(item.wkt2)
    horiz = src.sub_crs_list[0] if src.is_compound and src.sub_crs_list else src
    t = Transformer.from_crs(horiz, CRS.from_epsg(4326), always_xy=True)
    w, s, e, n = t.transform_bounds(item.mins[0], item.mins[1], item.maxs[0], item.maxs[1], densify_pts=21)
    return (round(w, 9), round(s, 9), round(e, 9), round(n, 9))


def vpc_document(items: list[VpcItem]) -> dict:
    features = []
    for it in items:
        w, s, e, n = _wgs84_box(it)
        x0, y0, z0 = it.mins
        x1, y1, z1 = it.maxs
        features.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": STAC_EXTENSIONS,
                "id": it.id,
                "geometry": {"type": "Polygon", "coordinates": [_ring(w, s, e, n)]},
                "bbox": [w, s, z0, e, n, z1],
                "properties": {
                    "datetime": it.datetime,
                    "pc:count": it.count,
                    "pc:type": "lidar",
                    "pc:encoding": "application/vnd.laszip+copc",
                    "pc:schemas": it.schema,
                    "proj:wkt2": it.wkt2,
                    "proj:geometry": {"type": "Polygon", "coordinates": [_ring(x0, y0, x1, y1)]},
                    "proj:bbox": [x0, y0, z0, x1, y1, z1],
                },
                "links": [],
                "assets": {"data": {"href": it.href, "roles": ["data"]}},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_vpc(path: str | Path, items: list[VpcItem]) -> None:
    """Write the .vpc (through `<path>.part`, renamed when complete)."""
    for it in items:
        if not it.href.startswith("./"):
            raise ValueError(f"VPC asset href must be relative ('./...'): {it.href!r}")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(vpc_document(items), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
