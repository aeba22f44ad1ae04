"""GML 3.x surface geometry to shapely, namespace-agnostic (NAS uses GML 3.2, CityGML 1.0 uses GML 3.1).

Handles gml:Polygon / gml:Surface (PolygonPatch) / gml:MultiSurface / gml:CompositeSurface, rings given
as gml:LinearRing (posList, pos, coordinates) or gml:Ring of curve members whose segments are
gml:LineStringSegment, gml:Arc, gml:ArcString and gml:Circle. Arcs are densified so that the chord error
stays below `arc_tolerance_m` (and the step below 10 degrees).
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Callable
from typing import IO

import numpy as np
import shapely
from lxml import etree

MAX_ARC_STEP = math.radians(10.0)


class GmlError(ValueError):
    """A geometry that cannot be read; the reader reports it with the record id."""


def local(el: etree._Element) -> str:
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if local(c) == name]


def srs_dimension(el: etree._Element, default: int = 2) -> int:
    """srsDimension of a coordinate list: its own or the nearest ancestor's, else `default`."""
    cur: etree._Element | None = el
    while cur is not None:
        d = cur.get("srsDimension")
        if d:
            return int(d)
        cur = cur.getparent()
    return default


def _text(el: etree._Element) -> str:
    if el.text is None:
        raise GmlError(f"empty <{local(el)}>")
    return el.text


def coords_of(el: etree._Element, dim_default: int = 2) -> np.ndarray:
    """(N, dim) coordinates of a curve-ish element with posList / pos / coordinates children."""
    pl = [c for c in el if local(c) == "posList"]
    if pl:
        dim = srs_dimension(pl[0], dim_default)
        try:
            vals = np.array(_text(pl[0]).split(), dtype=np.float64)
        except ValueError as e:
            raise GmlError(f"bad posList: {e}") from e
        if vals.size % dim:
            raise GmlError(f"posList has {vals.size} values, not a multiple of srsDimension {dim}")
        return vals.reshape(-1, dim)
    pos = [c for c in el if local(c) == "pos"]
    if pos:
        try:
            rows = [np.array(_text(p).split(), dtype=np.float64) for p in pos]
        except ValueError as e:
            raise GmlError(f"bad pos: {e}") from e
        dim = min(len(r) for r in rows)
        return np.array([r[:dim] for r in rows])
    co = [c for c in el if local(c) == "coordinates"]
    if co:
        try:
            rows = [np.array(t.split(","), dtype=np.float64) for t in _text(co[0]).split()]
        except ValueError as e:
            raise GmlError(f"bad coordinates: {e}") from e
        dim = min(len(r) for r in rows)
        return np.array([r[:dim] for r in rows])
    raise GmlError(f"<{local(el)}> has no coordinates")


def densify_arc(
    p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, tol: float, full_circle: bool = False
) -> np.ndarray:
    """Points along the circular arc p1 -> p2 -> p3 (2D), endpoints exact. Collinear -> straight line."""
    ax, ay = p1[0], p1[1]
    bx, by = p2[0], p2[1]
    cx, cy = p3[0], p3[1]
    d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    scale = max(abs(bx - ax), abs(by - ay), abs(cx - ax), abs(cy - ay), 1e-12)
    if abs(d) < 1e-12 * scale * scale:
        return np.array([p1[:2], p3[:2]]) if not full_circle else np.array([p1[:2]])
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
    uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
    r = math.hypot(ax - ux, ay - uy)
    t1 = math.atan2(ay - uy, ax - ux)
    t2 = math.atan2(by - uy, bx - ux)
    t3 = math.atan2(cy - uy, cx - ux)
    two_pi = 2.0 * math.pi
    ccw = (t2 - t1) % two_pi < (t3 - t1) % two_pi
    if full_circle:
        ccw = d > 0
    # two sub-arcs p1 -> p2 -> p3 so that the (surveyed) middle point is kept exactly
    s1 = (t2 - t1) % two_pi if ccw else -((t1 - t2) % two_pi)
    s2 = (t3 - t2) % two_pi if ccw else -((t2 - t3) % two_pi)
    if full_circle:
        s2 = (two_pi if ccw else -two_pi) - s1
    step = MAX_ARC_STEP
    if r > tol:
        step = min(step, 2.0 * math.acos(max(-1.0, 1.0 - tol / r)))
    n1 = max(1, math.ceil(abs(s1) / step))
    n2 = max(1, math.ceil(abs(s2) / step))
    ang = np.concatenate([t1 + s1 * np.arange(n1) / n1, t2 + s2 * np.arange(n2 + 1) / n2])
    pts = np.column_stack([ux + r * np.cos(ang), uy + r * np.sin(ang)])
    pts[0] = p1[:2]
    pts[n1] = p2[:2]
    pts[-1] = p1[:2] if full_circle else p3[:2]
    return pts


def _append(out: list[np.ndarray], pts: np.ndarray) -> None:
    pts = pts[:, :2]
    if out and len(pts) and np.allclose(out[-1][-1], pts[0], atol=1e-9, rtol=0):
        pts = pts[1:]
    if len(pts):
        out.append(pts)


def _curve_coords(el: etree._Element, tol: float, out: list[np.ndarray]) -> None:
    name = local(el)
    if name in ("LineString", "LineStringSegment", "LinearRing"):
        _append(out, coords_of(el))
    elif name in ("Arc", "ArcString"):
        c = coords_of(el)
        if len(c) < 3 or len(c) % 2 == 0:
            raise GmlError(f"<{name}> needs an odd number >= 3 of points, got {len(c)}")
        for k in range(0, len(c) - 2, 2):
            _append(out, densify_arc(c[k], c[k + 1], c[k + 2], tol))
    elif name == "Circle":
        c = coords_of(el)
        if len(c) != 3:
            raise GmlError(f"<Circle> needs 3 points, got {len(c)}")
        _append(out, densify_arc(c[0], c[1], c[2], tol, full_circle=True))
    elif name in ("Curve", "OrientableCurve", "CompositeCurve"):
        for child in el:
            ln = local(child)
            if ln == "segments":
                for seg in child:
                    if local(seg):
                        _curve_coords(seg, tol, out)
            elif ln in ("curveMember", "baseCurve"):
                for cc in child:
                    if local(cc):
                        _curve_coords(cc, tol, out)
    else:
        raise GmlError(f"unsupported curve element <{name}>")


def ring_coords(el: etree._Element, tol: float) -> np.ndarray:
    """Closed ring coordinates (N, 2) of a gml:LinearRing or gml:Ring."""
    name = local(el)
    parts: list[np.ndarray] = []
    if name == "LinearRing":
        _append(parts, coords_of(el))
    elif name == "Ring":
        for m in children(el, "curveMember"):
            for c in m:
                if local(c):
                    _curve_coords(c, tol, parts)
    else:
        raise GmlError(f"unsupported ring element <{name}>")
    if not parts:
        raise GmlError("empty ring")
    pts = np.concatenate(parts)
    if not np.allclose(pts[0], pts[-1], atol=1e-6, rtol=0):
        raise GmlError(f"ring is not closed ({pts[0].tolist()} != {pts[-1].tolist()})")
    pts[-1] = pts[0]
    if len(pts) < 4:
        raise GmlError(f"ring has only {len(pts)} points")
    return pts


RingReader = Callable[[etree._Element, float], np.ndarray]


def _polygon(el: etree._Element, tol: float, ring: RingReader) -> shapely.Polygon:
    """gml:Polygon or gml:PolygonPatch."""
    shell = None
    holes = []
    for c in el:
        ln = local(c)
        if ln in ("exterior", "outerBoundaryIs"):
            for r in c:
                if local(r):
                    shell = ring(r, tol)
        elif ln in ("interior", "innerBoundaryIs"):
            for r in c:
                if local(r):
                    holes.append(ring(r, tol))
    if shell is None:
        raise GmlError("polygon without exterior")
    return shapely.Polygon(shell, holes)


def polygons_of(el: etree._Element, tol: float, ring: RingReader = ring_coords) -> list[shapely.Polygon]:
    """All polygons of a surface-ish element (Polygon, Surface, MultiSurface, CompositeSurface, Solid...).
    `ring` reads one ring (`ring_coords`; the NAS reader passes its fast path for straight rings)."""
    name = local(el)
    if name in ("Polygon", "PolygonPatch", "Rectangle"):
        return [_polygon(el, tol, ring)]
    out: list[shapely.Polygon] = []
    for c in el:
        if local(c):
            out.extend(polygons_of(c, tol, ring))
    return out


def polygons_3d(el: etree._Element) -> list[np.ndarray]:
    """Exterior rings with Z (N, 3) of every polygon below `el` (CityGML solids / multi-surfaces)."""
    out: list[np.ndarray] = []
    for poly in el.iter("{*}Polygon"):
        for ext in poly:
            if local(ext) == "exterior":
                for r in ext:
                    if local(r) == "LinearRing":
                        c = coords_of(r, dim_default=3)
                        if c.shape[1] >= 3:
                            out.append(c[:, :3])
    return out


# AdV CRS names (urn:adv:crs:<horizontal>[*<vertical>[*<geoid>]]) -> EPSG codes
ADV_HORIZONTAL: dict[str, str] = {
    "ETRS89_UTM32": "25832",
    "ETRS89_UTM33": "25833",
    "ETRS89_UTM32_3GK": "25832",
    "DE_DHDN_3GK2": "31466",
    "DE_DHDN_3GK3": "31467",
    "DE_DHDN_3GK4": "31468",
    "DE_DHDN_3GK5": "31469",
    "ETRS89_Lat-Lon": "4258",
}
ADV_VERTICAL: dict[str, str] = {
    "DE_DHHN2016_NH": "7837",
    "DE_DHHN92_NH": "5783",
    "DE_DHHN12_NOH": "5784",
    "DE_DHHN85_NOH": "5784",
}


def gml_crs(srs: str | None, vertical: bool = True) -> str | None:
    """A GML srsName (CityGML, NAS, XPlanGML) as a CRS string PROJ understands ('EPSG:25832+7837',
    'EPSG:25832'; only the horizontal part when `vertical` is False); None when the name is unknown
    (the caller refuses it: never a guess)."""
    if not srs:
        return None
    s = srs.strip()
    if s.lower().startswith("urn:adv:crs:"):
        parts = s[len("urn:adv:crs:") :].split("*")
        h = ADV_HORIZONTAL.get(parts[0])
        if h is None:
            return None
        if vertical and len(parts) > 1:
            v = ADV_VERTICAL.get(parts[1])
            if v is None:
                return None
            return f"EPSG:{h}+{v}"
        return f"EPSG:{h}"
    codes = re.findall(r"EPSG:(?:[\d.]*:)?(\d{4,5})", s, flags=re.IGNORECASE)
    if not codes:
        codes = re.findall(r"epsg\.xml#(\d{4,5})|/EPSG/[\d.]+/(\d{4,5})", s, flags=re.IGNORECASE)
        codes = [a or b for a, b in codes] if codes else []
    if len(codes) == 1 or (codes and not vertical):
        return f"EPSG:{codes[0]}"
    if len(codes) == 2:
        return f"EPSG:{codes[0]}+{codes[1]}"
    return None


def srs_to_crs(srs: str | None) -> str | None:
    """The horizontal CRS of a GML srsName ('EPSG:25832' for 'urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH'),
    None when unknown."""
    return gml_crs(srs, vertical=False)


def first_srs_name(source: str | IO[bytes] | gzip.GzipFile) -> str | None:
    """The first srsName of a GML document (a path or a binary stream), read from its start only (None
    without one, or when the XML breaks before it: the readers report broken files)."""
    try:
        for _ev, el in etree.iterparse(source, events=("start",), huge_tree=True):
            srs = el.get("srsName") if isinstance(el.tag, str) else None
            if srs:
                return srs
    except etree.XMLSyntaxError:
        return None
    return None


def find_srs(el: etree._Element) -> str | None:
    for e in el.iter():
        s = e.get("srsName") if isinstance(e.tag, str) else None
        if s:
            return s
    return None


def release_parsed(el: etree._Element) -> None:
    """Free a record handled by `iterparse` and everything parsed before it: memory stays bounded by one
    record, whatever the file size."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]
