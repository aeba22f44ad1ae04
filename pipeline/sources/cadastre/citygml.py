"""CityGML 1.0 / 2.0 buildings (LoD1 and LoD2): one streaming reader for every use.

`iter_citygml(path)` walks a file with `lxml.iterparse`, one `bldg:Building` at a time (each is freed
after use, so memory stays bounded by one building whatever the file size), and yields a `CityObject`
per building with its `bldg:BuildingPart`s (`consistsOfBuildingPart`, nested parts too). Every
`gml:Polygon` (also `PolygonPatch`, `Triangle`, `Rectangle`) below the building becomes one `Surface` with
its semantic: the thematic surface it sits in (`boundedBy` Roof/Wall/Ground/Closure/OuterCeiling/
OuterFloorSurface, openings), or, for geometry outside any thematic surface (an LoD1 solid, an LoD2 solid
without `boundedBy`), the semantic of a thematic surface that points at it by `xlink:href`, else
`unclassified`. A solid that only references the `boundedBy` polygons (`<gml:surfaceMember
xlink:href="#id"/>`, as Geobasis NRW writes it) therefore counts each polygon once. References that
point nowhere inside the building are reported, not ignored.

CRS: the innermost `srsName` wins (a geometry's, else the file's: the `gml:Envelope` of the CityModel,
which is where Geobasis NRW states it, once per file). AdV names (`urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH
*GCG2016`), OGC compound URNs (`urn:ogc:def:crs,crs:EPSG::25832,crs:EPSG::5783`) and `EPSG:x` names are
understood (`gml.gml_crs`). Coordinates other than the working CRS go through PROJ
(`pipeline.crs.make_transformer`: exact operations only, the geoid grid where needed), so heights are
DHHN2016 normal heights like every other source. A file without any srsName needs the source's `crs`.

Outputs: `read_citygml` (one footprint row per building: the generic cadastre / reference reader) and
`read_lod2` (the official LoD2 model: a row per building and per part, and a row per surface with the
3D polygon). Bad buildings never raise: they are reported as `Rejected(file, gml:id, reason)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from lxml import etree

from pipeline.errors import CrsError
from pipeline.sources.cadastre.common import WORKING_CRS, Rejected, normalise_columns
from pipeline.sources.cadastre.gml import GmlError, coords_of, gml_crs, local, release_parsed

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig

# thematic surfaces (CityGML building module) -> semantic
SEMANTICS: dict[str, str] = {
    "RoofSurface": "roof",
    "WallSurface": "wall",
    "GroundSurface": "ground",
    "ClosureSurface": "closure",
    "OuterCeilingSurface": "outer_ceiling",
    "OuterFloorSurface": "outer_floor",
    "FloorSurface": "floor",
    "CeilingSurface": "ceiling",
    "InteriorWallSurface": "interior_wall",
    "Window": "window",
    "Door": "door",
}
POLYGON_TAGS = frozenset({"Polygon", "PolygonPatch", "Triangle", "Rectangle"})
_LOD = re.compile(r"^lod(\d)")
_NOT_GEOMETRY = frozenset({"address", "externalReference", "appearance", "generalizesTo"})
CLOSE_TOL = 1e-6  # m: a ring whose first and last point differ more is not closed

# ---------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Surface:
    """One polygon of a building: rings (N, 3) closed, exterior first; semantic roof/wall/ground/..."""

    semantic: str
    surface_id: str  # gml:id of the thematic surface ('' without one)
    polygon_id: str  # gml:id of the gml:Polygon ('' without one)
    lod: int  # 0 when the geometry property names no LoD
    rings: tuple[np.ndarray, ...]


@dataclass
class CityObject:
    """A bldg:Building or bldg:BuildingPart with its own surfaces and its parts."""

    gml_id: str
    building_id: str  # gml:id of the Building it belongs to (its own for a Building)
    is_part: bool
    attributes: dict[str, str] = field(default_factory=dict)  # function, roofType, measuredHeight, ...
    surfaces: list[Surface] = field(default_factory=list)
    parts: list[CityObject] = field(default_factory=list)
    srs: str | None = None

    def all_objects(self) -> Iterator[CityObject]:
        yield self
        for p in self.parts:
            yield from p.all_objects()

    def all_surfaces(self) -> Iterator[Surface]:
        for o in self.all_objects():
            yield from o.surfaces


# ------------------------------------------------------------------------------------ geometry


def ring_plan_integrals(ring: np.ndarray) -> tuple[float, float]:
    """(signed plan area, signed integral of z over the plan area) of a closed 3D ring (N, 3).

    Fan triangulation from the first vertex with signed areas: exact for any simple planar polygon
    (convex or not), since z is linear over a plane."""
    x = ring[:, 0] - ring[0, 0]
    y = ring[:, 1] - ring[0, 1]
    z = ring[:, 2]
    a = 0.5 * (x[1:-2] * y[2:-1] - x[2:-1] * y[1:-2])
    zi = (z[0] + z[1:-2] + z[2:-1]) / 3.0
    return float(a.sum()), float((a * zi).sum())


def polygon_plan_integrals(rings: Sequence[np.ndarray]) -> tuple[float, float]:
    """(plan area >= 0, integral of z over it) of a polygon with holes (rings with Z)."""
    area = zint = 0.0
    for k, r in enumerate(rings):
        a, zi = ring_plan_integrals(r)
        s = 1.0 if a >= 0 else -1.0
        if k == 0:
            area, zint = s * a, s * zi
        else:
            area -= s * a
            zint -= s * zi
    return max(area, 0.0), zint if area > 0 else 0.0


def newell_normal(ring: np.ndarray) -> np.ndarray:
    """Newell's normal of a closed ring (length = 2 x area of the planar polygon it bounds)."""
    p = ring - ring[0]
    q = np.roll(p, -1, axis=0)
    return np.array(
        [
            np.sum((p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2])),
            np.sum((p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0])),
            np.sum((p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1])),
        ]
    )


def polygon_area_3d(rings: Sequence[np.ndarray]) -> float:
    """Area of a planar 3D polygon with holes."""
    n0 = newell_normal(rings[0])
    total = float(np.linalg.norm(n0)) / 2.0
    for r in rings[1:]:
        total -= float(np.linalg.norm(newell_normal(r))) / 2.0
    return max(total, 0.0)


def surface_polygon(s: Surface) -> shapely.Polygon:
    """The surface as a shapely Polygon with Z."""
    return shapely.Polygon(s.rings[0], list(s.rings[1:]))


# --------------------------------------------------------------------------------------- parsing


def _gml_id(el: etree._Element) -> str:
    for k, v in el.attrib.items():
        if k.endswith("}id") or k == "id":
            return v
    return ""


def _href(el: etree._Element) -> str | None:
    for k, v in el.attrib.items():
        if k.endswith("}href"):
            return v
    return None


def _ring3d(el: etree._Element) -> np.ndarray:
    if local(el) != "LinearRing":
        raise GmlError(f"unsupported ring element <{local(el)}> (CityGML rings are gml:LinearRing)")
    c = coords_of(el, dim_default=3)
    if c.shape[1] < 3:
        raise GmlError("ring without Z (srsDimension 2)")
    c = np.ascontiguousarray(c[:, :3], dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise GmlError("ring has non-finite coordinates")
    if len(c) < 4:
        raise GmlError(f"ring has only {len(c)} points")
    if np.max(np.abs(c[0] - c[-1])) > CLOSE_TOL:
        raise GmlError(f"ring is not closed ({c[0].tolist()} != {c[-1].tolist()})")
    c[-1] = c[0]
    return c


def _polygon_rings(el: etree._Element, reverse: bool) -> tuple[np.ndarray, ...]:
    ext: np.ndarray | None = None
    holes: list[np.ndarray] = []
    for c in el:
        ln = local(c)
        if ln in ("exterior", "outerBoundaryIs", "interior", "innerBoundaryIs"):
            for r in c:
                if local(r):
                    ring = _ring3d(r)
                    if reverse:
                        ring = ring[::-1].copy()
                    if ln in ("exterior", "outerBoundaryIs"):
                        ext = ring
                    else:
                        holes.append(ring)
    if ext is None:
        raise GmlError(f"<{local(el)}> {_gml_id(el)!r} has no exterior ring")
    return (ext, *holes)


@dataclass
class _Walk:
    defined: set[str] = field(default_factory=set)
    refs: dict[str, tuple[str, str]] = field(default_factory=dict)  # href -> (semantic, surface id)
    any_refs: set[str] = field(default_factory=set)


def _walk(
    el: etree._Element,
    obj: CityObject,
    state: _Walk,
    sem: str,
    sid: str,
    lod: int,
    reverse: bool,
) -> None:
    for c in el:
        name = local(c)
        if not name or name in _NOT_GEOMETRY or name.endswith("TerrainIntersection"):
            continue
        if name == "consistsOfBuildingPart":
            for bp in c:
                if local(bp) == "BuildingPart":
                    obj.parts.append(_parse_object(bp, obj.building_id, True, state))
            continue
        m = _LOD.match(name)
        if name in SEMANTICS:
            _walk(c, obj, state, SEMANTICS[name], _gml_id(c), lod, reverse)
        elif name in POLYGON_TAGS:
            pid = _gml_id(c)
            if pid:
                state.defined.add(pid)
            obj.surfaces.append(Surface(sem, sid, pid, lod, _polygon_rings(c, reverse)))
        elif name == "surfaceMember" and len(c) == 0 and (href := _href(c)):
            ref = href.lstrip("#")
            state.any_refs.add(ref)
            if sem != "unclassified":
                state.refs.setdefault(ref, (sem, sid))
        elif name == "OrientableSurface":
            flip = c.get("orientation", "+").strip() == "-"
            _walk(c, obj, state, sem, sid, lod, reverse != flip)
        else:
            gid = _gml_id(c)
            if gid:
                state.defined.add(gid)  # an xlink may name a MultiSurface / CompositeSurface
            _walk(c, obj, state, sem, sid, int(m.group(1)) if m else lod, reverse)


_ATTRS = (
    "function",
    "roofType",
    "measuredHeight",
    "storeysAboveGround",
    "yearOfConstruction",
    "class",
    "usage",
)


def _parse_object(el: etree._Element, building_id: str, is_part: bool, state: _Walk) -> CityObject:
    gid = _gml_id(el)
    obj = CityObject(gid, building_id or gid, is_part)
    for c in el:
        ln = local(c)
        if ln in _ATTRS and c.text and c.text.strip():
            obj.attributes[ln] = c.text.strip()
        elif ln.endswith("Attribute") and c.get("name"):
            val = next((v.text for v in c if local(v) == "value" and v.text), None)
            if val is not None and c.get("name"):
                obj.attributes[f"gen:{c.get('name')}"] = val.strip()
    _walk(el, obj, state, "unclassified", "", 0, False)
    return obj


def _parse_building(el: etree._Element) -> CityObject:
    state = _Walk()
    obj = _parse_object(el, _gml_id(el), False, state)
    # geometry outside thematic surfaces gets the semantic of a thematic surface that references it
    if state.refs:
        for o in obj.all_objects():
            o.surfaces = [
                Surface(*state.refs[s.polygon_id], s.polygon_id, s.lod, s.rings)
                if s.semantic == "unclassified" and s.polygon_id in state.refs
                else s
                for s in o.surfaces
            ]
    missing = sorted(state.any_refs - state.defined)
    if missing:
        raise GmlError(f"xlink:href to polygons not defined in the building: {', '.join(missing[:5])}")
    if not any(True for _ in obj.all_surfaces()):
        raise GmlError("no polygons")
    return obj


def _first_srs(el: etree._Element) -> str | None:
    for e in el.iter():
        if isinstance(e.tag, str):
            s = e.get("srsName")
            if s:
                return s
    return None


def looks_like_citygml(path: Path) -> bool:
    """A .gml/.xml/.citygml file whose first 4 KB name the CityGML namespace or a CityModel."""
    if path.suffix.lower() not in (".gml", ".xml", ".citygml"):
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"citygml" in head.lower() or b"CityModel" in head


def own_crs_cfg(path: Path | str, crs: str | None = None) -> CrsConfig | None:
    """The CRS settings that keep a CityGML file in its own CRS (`crs`, else its first srsName): the
    readers' default when no working CRS is given. None when the file names no CRS (its buildings are
    then refused with a CrsError as they are read); CrsError when it names one PROJ does not know."""
    from pipeline.config.model import CrsConfig
    from pipeline.crs import horizontal_of, parse_crs
    from pipeline.sources.cadastre.gml import first_srs_name

    srs = crs or first_srs_name(str(path))
    if srs is None:
        return None
    name = crs or gml_crs(srs)
    if name is None:
        raise CrsError(f"unknown srsName {srs!r}; set the source's crs", path=path)
    full = parse_crs(name, path=path)
    vert = next((c for c in full.sub_crs_list or [] if c.is_vertical), None)

    def code(c: Any) -> str:
        auth = c.to_authority()
        return f"{auth[0]}:{auth[1]}" if auth else c.to_wkt()

    return CrsConfig(
        horizontal=code(horizontal_of(full)),
        vertical=code(vert) if vert is not None else None,
        assume_ellipsoidal_heights=vert is None,
    )


def target_crs_of(cfg: CrsConfig) -> Any:
    """The horizontal CRS the readers' frames are labelled with (that of the working CRS `cfg`)."""
    from pipeline.crs import horizontal_of, working_crs

    return horizontal_of(working_crs(cfg))


def iter_citygml(
    path: Path | str,
    rejected: list[Rejected],
    *,
    crs: str | None = None,
    crs_cfg: CrsConfig | None = None,
) -> Iterator[CityObject]:
    """Buildings of one CityGML file, one at a time, coordinates in the working CRS `crs_cfg` (None: the
    file's own CRS, see `own_crs_cfg`). The srsName of each building (else the file's) says the source
    CRS, AdV `urn:adv:crs:` names included; `crs` overrides every srsName of the file. Bad buildings and
    broken XML are appended to `rejected`; a building without any CRS raises CrsError (never a guess)."""
    from pipeline.crs import make_transformer, parse_crs, resolve_source_crs, working_crs

    cfg = crs_cfg if crs_cfg is not None else own_crs_cfg(path, crs)
    src = str(path)
    target = working_crs(cfg) if cfg is not None else None
    file_srs: str | None = None
    transformers: dict[str, Any] = {}

    def to_working(srs_text: str) -> Any:
        if srs_text in transformers:
            return transformers[srs_text]
        name = crs or gml_crs(srs_text)
        if name is None:
            raise CrsError(f"unknown srsName {srs_text!r}; set the source's crs", path=path)
        if cfg is None or target is None:  # no srsName found first but one here: not in well-formed XML
            raise CrsError(
                f"srsName {srs_text!r} after buildings without one; set the source's crs", path=path
            )
        source = resolve_source_crs(parse_crs(name, path=path), None, cfg, path=path)
        t = None if source.equals(target) else make_transformer(source, target, cfg, path=path)
        transformers[srs_text] = t
        return t

    try:
        ctx = etree.iterparse(src, events=("end",), tag=("{*}Envelope", "{*}Building"), huge_tree=True)
        for _ev, el in ctx:
            if local(el) == "Envelope":
                bb = el.getparent()
                owner = bb.getparent() if bb is not None else None
                if owner is not None and local(owner) == "CityModel" and el.get("srsName"):
                    file_srs = el.get("srsName")
                continue
            if file_srs is None:
                root = el.getroottree().getroot()
                file_srs = root.get("srsName") or None
            gid = _gml_id(el) or "-"
            try:
                obj = _parse_building(el)
                srs = crs or _first_srs(el) or file_srs
                if srs is None:
                    raise CrsError("CityGML without srsName; set the source's crs", path=path)
                obj.srs = srs
                t = to_working(srs)
                if t is not None:
                    _transform(obj, t)
                yield obj
            except (GmlError, ValueError) as e:
                rejected.append(Rejected(src, gid, f"Building: {e}"))
            _release(el)
    except etree.XMLSyntaxError as e:
        rejected.append(Rejected(src, "-", f"XML syntax error (records after it are lost): {e}"))


def _release(el: etree._Element) -> None:
    """Free a building and everything parsed before it, on every level (the emptied
    cityObjectMember shells too): memory stays bounded by one building."""
    el.clear(keep_tail=False)
    for anc in el.iterancestors():
        parent = anc.getparent()
        if parent is None:
            break
        while anc.getprevious() is not None:
            del parent[0]
    parent = el.getparent()
    while parent is not None and el.getprevious() is not None:
        del parent[0]


def _transform(obj: CityObject, t: Any) -> None:
    surfaces = list(obj.all_surfaces())
    rings = [r for s in surfaces for r in s.rings]
    if not rings:
        return
    xyz = np.concatenate(rings)
    x, y, z = t.transform(xyz[:, 0], xyz[:, 1], xyz[:, 2])
    out = np.column_stack([x, y, z])
    if not np.all(np.isfinite(out)):
        raise GmlError("coordinates could not be transformed into the working CRS (outside the grid?)")
    k = 0
    for o in obj.all_objects():
        new = []
        for s in o.surfaces:
            rr = []
            for r in s.rings:
                rr.append(out[k : k + len(r)])
                k += len(r)
            new.append(Surface(s.semantic, s.surface_id, s.polygon_id, s.lod, tuple(rr)))
        o.surfaces = new


def check_citygml(path: Path | str) -> str | None:
    """Input check: the whole file is well-formed XML with a CityModel root (streamed, nothing written
    beside the file). None when readable, else the problem (one line). Bad records are not a file
    problem: the readers report them in rejected.csv."""
    try:
        root_name = None
        for ev, el in etree.iterparse(str(path), events=("start", "end"), huge_tree=True):
            if ev == "start":
                if root_name is None:
                    root_name = local(el)
                continue
            if local(el) in ("cityObjectMember", "featureMember", "member"):
                release_parsed(el)
        if root_name != "CityModel":
            return f"root element is <{root_name}>, not a CityGML CityModel"
    except etree.XMLSyntaxError as e:
        return f"XMLSyntaxError: {e}"[:300]
    return None


# ------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class ObjectSummary:
    footprint: shapely.Geometry
    ground_z: float
    z_min: float
    z_max: float
    roof_plan_area: float
    roof_z_integral: float
    roof_area: float
    roof_z_min: float
    roof_z_max: float
    counts: dict[str, int]

    @property
    def roof_mean_z(self) -> float:
        """Area-weighted (plan area) mean height of the roof surface: the AdV LoD1 roof."""
        return self.roof_z_integral / self.roof_plan_area if self.roof_plan_area > 0 else float("nan")


def _roof_surfaces(surfaces: list[Surface]) -> list[Surface]:
    roofs = [s for s in surfaces if s.semantic == "roof"]
    if roofs or any(s.semantic != "unclassified" for s in surfaces):
        return roofs
    # no semantics at all (an LoD1 solid, a bare LoD2 solid): the upward-facing faces are the roof
    return [s for s in surfaces if newell_normal(s.rings[0])[2] > 1e-9]


def summarise_object(surfaces: list[Surface]) -> ObjectSummary:
    """Footprint (GroundSurface union, else the projection of all surfaces) and roof statistics."""
    if not surfaces:
        raise GmlError("no polygons")
    ground = [s for s in surfaces if s.semantic == "ground"]
    base = ground or surfaces
    polys = []
    for s in base:
        p = shapely.make_valid(shapely.Polygon(s.rings[0][:, :2], [r[:, :2] for r in s.rings[1:]]))
        p = shapely.union_all([g for g in shapely.get_parts(p) if isinstance(g, shapely.Polygon)])
        if not p.is_empty and p.area > 0:
            polys.append(p)
    fp = shapely.union_all(polys) if polys else shapely.Polygon()
    if not fp.is_valid:  # GEOS's union of valid parts can come out invalid at sub-micrometre precision
        fp = shapely.union_all([g for g in shapely.get_parts(shapely.make_valid(fp)) if g.area > 0])
    if fp.is_empty or fp.area <= 0:
        raise GmlError("footprint has no area")
    zs = np.concatenate([r[:, 2] for s in surfaces for r in s.rings])
    gz = np.concatenate([r[:, 2] for s in ground for r in s.rings]) if ground else zs
    roofs = _roof_surfaces(surfaces)
    pa = zi = a3 = 0.0
    rz_min, rz_max = np.inf, -np.inf
    for s in roofs:
        a, z = polygon_plan_integrals(s.rings)
        pa += a
        zi += z
        a3 += polygon_area_3d(s.rings)
        rz_min = min(rz_min, float(s.rings[0][:, 2].min()))
        rz_max = max(rz_max, float(s.rings[0][:, 2].max()))
    counts: dict[str, int] = {}
    for s in surfaces:
        counts[s.semantic] = counts.get(s.semantic, 0) + 1
    return ObjectSummary(
        fp,
        float(gz.min()),
        float(zs.min()),
        float(zs.max()),
        pa,
        zi,
        a3,
        rz_min if roofs else float("nan"),
        rz_max if roofs else float("nan"),
        counts,
    )


def _float(v: str | None) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except ValueError:
        return float("nan")


def _building_row(obj: CityObject, src: str) -> tuple[dict[str, Any], shapely.Geometry]:
    """One footprint row per Building (parts merged): normalised columns + ground_z, roof_z."""
    summ = summarise_object(list(obj.all_surfaces()))
    mh = _float(obj.attributes.get("measuredHeight"))
    if np.isnan(mh):
        part_mh = [_float(p.attributes.get("measuredHeight")) for p in obj.all_objects()]
        part_mh = [v for v in part_mh if not np.isnan(v)]
        mh = max(part_mh) if part_mh else float("nan")
    roof_type = obj.attributes.get("roofType") or next(
        (p.attributes["roofType"] for p in obj.all_objects() if "roofType" in p.attributes), None
    )
    row = {
        "oid": obj.gml_id or None,
        "gfkzshh": obj.attributes.get("function"),
        "measured_height": mh,
        "dachform": roof_type,
        "gebnutzbez": "Gebäude",
        "source_file": src,
        "ground_z": summ.z_min,
        "roof_z": summ.z_max,
        "roof_mean_z": summ.roof_mean_z,
    }
    return row, summ.footprint


def read_citygml(
    path: Path,
    rejected: list[Rejected],
    *,
    crs: str | None = None,
    crs_cfg: CrsConfig | None = None,
) -> gpd.GeoDataFrame:
    """Buildings of one CityGML file: normalised footprint columns + ground_z, roof_z, roof_mean_z."""
    rows: list[dict] = []
    geoms: list = []
    src = str(path)
    cfg = crs_cfg if crs_cfg is not None else own_crs_cfg(path, crs)
    for obj in iter_citygml(path, rejected, crs=crs, crs_cfg=cfg):
        try:
            row, geom = _building_row(obj, src)
        except (GmlError, shapely.errors.GEOSException) as e:
            rejected.append(Rejected(src, obj.gml_id or "-", f"Building: {e}"))
            continue
        rows.append(row)
        geoms.append(geom)
    label = target_crs_of(cfg) if cfg is not None else WORKING_CRS  # no CRS: no building was read
    gdf = gpd.GeoDataFrame(rows, geometry=gpd.GeoSeries(geoms), crs=label)
    for c in ("ground_z", "roof_z", "roof_mean_z"):
        if c not in gdf:
            gdf[c] = np.nan
    out = normalise_columns(gdf)
    from pipeline.sources.cadastre.common import GEBAEUDEFUNKTION, function_code

    out["funktion"] = [GEBAEUDEFUNKTION.get(function_code(c)) for c in out["gfkzshh"]]
    return out


# ------------------------------------------------------------------------------------ LoD2 model

OBJECT_COLUMNS = (
    "oid",
    "building_oid",
    "is_part",
    "lod",
    "function",
    "roof_type",
    "measured_height",
    "storeys",
    "ground_z",
    "z_min",
    "z_max",
    "roof_mean_z",
    "roof_z_min",
    "roof_z_max",
    "roof_plan_area",
    "roof_area",
    "n_roof",
    "n_wall",
    "n_ground",
    "n_closure",
    "n_other",
    "source_file",
)
SURFACE_COLUMNS = (
    "oid",
    "building_oid",
    "semantic",
    "surface_id",
    "polygon_id",
    "lod",
    "area",
    "plan_area",
    "mean_z",
    "source_file",
)


@dataclass
class Lod2Model:
    """An official LoD2 model: `objects` one row per Building (parts merged: footprint = union, roof
    statistics over all roof surfaces) and per BuildingPart, geometry = 2D footprint; `surfaces` one row
    per polygon with its semantic, geometry = Polygon Z. Both in the working CRS, sorted by id."""

    objects: gpd.GeoDataFrame
    surfaces: gpd.GeoDataFrame
    rejected: list[Rejected]

    @property
    def buildings(self) -> gpd.GeoDataFrame:
        return self.objects[~self.objects["is_part"].to_numpy(dtype=bool)].reset_index(drop=True)


def _object_row(
    obj: CityObject, surfaces: list[Surface], building: CityObject, src: str
) -> tuple[dict[str, Any], shapely.Geometry]:
    s = summarise_object(surfaces)
    attrs = obj.attributes
    other = sum(v for k, v in s.counts.items() if k not in ("roof", "wall", "ground", "closure"))
    lods = [x.lod for x in surfaces]
    return (
        {
            "oid": obj.gml_id,
            "building_oid": building.gml_id,
            "is_part": obj.is_part,
            "lod": int(max(lods)) if lods else 0,
            "function": attrs.get("function") or building.attributes.get("function"),
            "roof_type": attrs.get("roofType"),
            "measured_height": _float(attrs.get("measuredHeight")),
            "storeys": _float(attrs.get("storeysAboveGround")),
            "ground_z": s.ground_z,
            "z_min": s.z_min,
            "z_max": s.z_max,
            "roof_mean_z": s.roof_mean_z,
            "roof_z_min": s.roof_z_min,
            "roof_z_max": s.roof_z_max,
            "roof_plan_area": s.roof_plan_area,
            "roof_area": s.roof_area,
            "n_roof": s.counts.get("roof", 0),
            "n_wall": s.counts.get("wall", 0),
            "n_ground": s.counts.get("ground", 0),
            "n_closure": s.counts.get("closure", 0),
            "n_other": other,
            "source_file": src,
        },
        s.footprint,
    )


def read_lod2(
    files: Sequence[Path | str],
    *,
    crs: str | None = None,
    crs_cfg: CrsConfig | None = None,
) -> Lod2Model:
    """The official LoD2 (or LoD1) model of some CityGML files: buildings, parts and surfaces."""
    rejected: list[Rejected] = []
    orows: list[dict] = []
    ogeoms: list = []
    srows: list[dict] = []
    sgeoms: list = []
    ordered = sorted(Path(p) for p in files)
    # the working CRS, or the first file's own (the others are transformed into it)
    cfg = crs_cfg if crs_cfg is not None or not ordered else own_crs_cfg(ordered[0], crs)
    for f in ordered:
        src = str(f)
        for b in iter_citygml(f, rejected, crs=crs, crs_cfg=cfg):
            try:
                rows = [_object_row(b, list(b.all_surfaces()), b, src)]
                for p in b.all_objects():
                    if p is not b:
                        rows.append(_object_row(p, p.surfaces, b, src))
            except (GmlError, shapely.errors.GEOSException) as e:
                rejected.append(Rejected(src, b.gml_id or "-", f"Building: {e}"))
                continue
            for row, g in rows:
                orows.append(row)
                ogeoms.append(g)
            for o in b.all_objects():
                for s in o.surfaces:
                    pa, zi = polygon_plan_integrals(s.rings)
                    srows.append(
                        {
                            "oid": o.gml_id,
                            "building_oid": b.gml_id,
                            "semantic": s.semantic,
                            "surface_id": s.surface_id,
                            "polygon_id": s.polygon_id,
                            "lod": s.lod,
                            "area": polygon_area_3d(s.rings),
                            "plan_area": pa,
                            "mean_z": zi / pa if pa > 0 else float(np.mean(s.rings[0][:-1, 2])),
                            "source_file": src,
                        }
                    )
                    sgeoms.append(surface_polygon(s))
    label = target_crs_of(cfg) if cfg is not None else WORKING_CRS  # no file: an empty model
    objects = gpd.GeoDataFrame(
        pd.DataFrame(orows, columns=list(OBJECT_COLUMNS)), geometry=gpd.GeoSeries(ogeoms), crs=label
    )
    surfaces = gpd.GeoDataFrame(
        pd.DataFrame(srows, columns=list(SURFACE_COLUMNS)), geometry=gpd.GeoSeries(sgeoms), crs=label
    )
    objects = objects.sort_values(["building_oid", "is_part", "oid"], kind="stable").reset_index(drop=True)
    surfaces = surfaces.sort_values(["building_oid", "oid", "polygon_id"], kind="stable").reset_index(
        drop=True
    )
    return Lod2Model(objects, surfaces, rejected)
