"""The demo's "official" LoD2 model: CityGML 2.0 in the Geobasis NRW style, of the FIRST survey epoch.

One file per 1 km tile of the NRW grid that holds building centroids: ``lod2/LoD2_32_<E>_<N>_1_NW.gml``
(E, N in km). The CRS is stated once per file on the CityModel's ``gml:Envelope``
(``urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH*GCG2016``). Every cadastral building that stands in epoch 1
is one ``bldg:Building`` (``gml:id`` = ALKIS oid) with ``function`` (ALKIS key ``31001_xxxx``),
``roofType`` (AdV code), ``measuredHeight`` (highest point of the roof model - base) and ``boundedBy``
Roof/Wall/GroundSurfaces of ``gml:Polygon``/``gml:posList`` (3D, counter-clockwise seen from outside).

Roofs from the ground truth (`pipeline.sources.demo.roofs`, epoch-1 heights):

* flat: the footprint at the roof height;
* gable, shed, half-hip, pyramid, mansard: the lower envelope of their planes (`roofs.frame_planes`):
  every plane's face is the part of the footprint where it is the lowest;
* cross gable: per wing its two gable halves, minus where another wing's roof is higher (valleys);
* hip: one plane per footprint edge (eave + slope x distance to the edge's line), each valid in the wedge
  the edge sweeps when it moves inwards along the angle bisectors at its ends; the roof is the lowest
  plane at every point (the straight-skeleton roof), capped at the ridge. For convex footprints this is
  exactly the truth surface; at reflex corners (L-shapes, courtyards) the truth (distance to the
  boundary) is a cone and the model has a valley, as a real LoD2 model would (the model lies up to
  ~0.4 x slope x the distance from the corner below the truth there).

The roof faces are noded (a vertex of one face on an edge of another is a vertex of both), walls follow
the roof along every footprint edge through every roof face vertex on it (gable ends are pentagons):
every building is a closed shell (tests/unit/test_demo_roofs.py). Buildings of the second
epoch (new, raised, lowered, demolished) make parts of this model outdated: that is what the
outdated-model check (`pipeline.stages.buildings.model_check`) finds.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import shapely
import shapely.affinity
import shapely.errors
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from pipeline.sources.demo.city import City, Structure
from pipeline.sources.demo.roofs import (
    CROSS_GABLE,
    FLAT,
    FRAMED,
    HIP,
    ROOF_CODES,
    WING_MARGIN,
    Roof,
    frame_planes,
)

LOD2_DIR = "lod2"
SRS_NAME = "urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH*GCG2016"
_BIG = 1.0e3  # half-plane size (m), far beyond any footprint


def lod2_name(e_km: int, n_km: int) -> str:
    return f"LoD2_32_{e_km}_{n_km}_1_NW.gml"


def _halfplane(px: float, py: float, dx: float, dy: float) -> Polygon:
    """Half-plane left of the directed line through (px, py) along (dx, dy) (unit), as a big square."""
    nx, ny = -dy, dx
    a = (px - _BIG * dx, py - _BIG * dy)
    b = (px + _BIG * dx, py + _BIG * dy)
    return Polygon([a, b, (b[0] + _BIG * nx, b[1] + _BIG * ny), (a[0] + _BIG * nx, a[1] + _BIG * ny)])


def _below(a: float, b: float, c: float) -> Polygon:
    """Half-plane a x + b y + c <= 0 ((a, b) != 0)."""
    norm2 = a * a + b * b
    norm = math.sqrt(norm2)
    gx, gy = -a / norm, -b / norm  # inward normal
    return _halfplane(-c * a / norm2, -c * b / norm2, gy, -gx)


def _polys(g: BaseGeometry) -> list[Polygon]:
    if g.is_empty:
        return []
    if isinstance(g, Polygon):
        return [g]
    return [p for p in getattr(g, "geoms", []) if isinstance(p, Polygon) and not p.is_empty]


def _rings(geom: BaseGeometry) -> list[np.ndarray]:
    out = []
    for poly in _polys(shapely.orient_polygons(geom)):
        out.append(np.asarray(poly.exterior.coords)[:, :2])
        out.extend(np.asarray(r.coords)[:, :2] for r in poly.interiors)
    return out


_GRID = 1e-6  # snap grid (m) of the set operations: robust against near-coincident wedge edges


def _area(g: BaseGeometry) -> BaseGeometry:
    """The polygonal part of a geometry (snapping to the grid can leave a sliver line or point beside it)."""
    if g.is_empty or isinstance(g, Polygon | MultiPolygon):
        return g
    return MultiPolygon(_polys(g))


def _overlay(op, a: BaseGeometry, b: BaseGeometry) -> BaseGeometry:
    try:
        return op(a, b, grid_size=_GRID)
    except shapely.errors.GEOSException:  # "mixed-dimension" input: a sliver left by an earlier step
        return op(_area(a), _area(b), grid_size=_GRID)


def _isect(a: BaseGeometry, b: BaseGeometry) -> BaseGeometry:
    return _overlay(shapely.intersection, a, b)


def _diff(a: BaseGeometry, b: BaseGeometry) -> BaseGeometry:
    return _overlay(shapely.difference, a, b)


def _hip_planes(geom: BaseGeometry, roof: Roof) -> list[tuple[Polygon, tuple[float, float, float]]]:
    """(plan polygon, plane z = a x + b y + c) of a hip roof (relative heights), see the module doc."""
    edges = []  # (x0, y0, x1, y1, ux, uy, start bisector, end bisector): interior on the left
    bis = []  # per ring vertex: inward bisector direction, per edge start
    for ring in _rings(geom):
        pts = ring[:-1]
        n = len(pts)
        dirs = np.roll(pts, -1, axis=0) - pts
        dirs /= np.linalg.norm(dirs, axis=1)[:, None]
        for k in range(n):
            d_in, d_out = dirs[k - 1], dirs[k]
            n_in, n_out = np.array([-d_in[1], d_in[0]]), np.array([-d_out[1], d_out[0]])
            b = n_in + n_out
            b = b / np.linalg.norm(b) if np.linalg.norm(b) > 1e-9 else n_out
            bis.append((float(pts[k][0]), float(pts[k][1]), float(b[0]), float(b[1])))
        base = len(bis) - n
        for k in range(n):
            x0, y0 = pts[k]
            x1, y1 = pts[(k + 1) % n]
            ux, uy = float(dirs[k][0]), float(dirs[k][1])
            edges.append((float(x0), float(y0), float(x1), float(y1), ux, uy, base + k, base + (k + 1) % n))
    wedges, planes = [], []
    for x0, y0, x1, y1, ux, uy, b0, b1 in edges:
        # interior side of the edge, towards the edge from the start bisector, and from the end one
        w: BaseGeometry = _halfplane(x0, y0, ux, uy)
        w = _isect(w, _halfplane(x0, y0, -bis[b0][2], -bis[b0][3]))
        w = _isect(w, _halfplane(x1, y1, bis[b1][2], bis[b1][3]))
        # plane: eave + slope * distance to the edge line (inward normal (-uy, ux))
        nx, ny = -uy, ux
        a, b = roof.slope * nx, roof.slope * ny
        c = roof.eave - roof.slope * (nx * x0 + ny * y0)
        wedges.append(w)
        planes.append((a, b, c))
    out = []
    top = roof.ridge
    for i, (w, (a, b, c)) in enumerate(zip(wedges, planes, strict=True)):
        region = _isect(geom, w)
        if region.is_empty:
            continue
        for j, (wj, (aj, bj, cj)) in enumerate(zip(wedges, planes, strict=True)):
            if j == i or not region.intersects(wj):
                continue
            da, db, dc = aj - a, bj - b, cj - c  # z_j - z_i = da x + db y + dc; lower where < 0
            norm = math.hypot(da, db)
            if norm < 1e-12:
                if dc < 0 or (dc == 0 and j < i):
                    region = _diff(region, wj)
                continue
            # {z_j < z_i}: half-plane with inward normal (-da, -db)
            region = _diff(region, _isect(wj, _below(da, db, dc)))
            if region.is_empty:
                break
        # cap at the ridge: keep z_i <= top
        if math.hypot(a, b) > 1e-12:
            region = _isect(region, _below(a, b, c - top))
        for p in _polys(region):
            if p.area > 1e-4:
                out.append((p, (a, b, c)))
    rest = _diff(geom, shapely.union_all([p for p, _ in out])) if out else geom
    for p in _polys(rest):
        if p.area > 0.01:
            out.append((p, (0.0, 0.0, top)))
    return out


def roof_planes(s: Structure, roof: Roof) -> list[tuple[Polygon, tuple[float, float, float]]]:
    """Plan polygons of the roof and their planes (z relative to the base), world coordinates.

    Computed in a local frame (origin at the footprint's rounded centroid): half-plane clipping at UTM
    coordinates loses too much precision in GEOS."""
    c0 = s.geom.centroid
    ox, oy = float(round(c0.x)), float(round(c0.y))
    local = shapely.affinity.translate(s.geom, -ox, -oy)
    roof = roof.moved(lambda x, y: (x - ox, y - oy), lambda dx, dy: (dx, dy))
    out = []
    faces = [(shapely.remove_repeated_points(p, 1e-4), pl) for p, pl in _local_roof_planes(local, roof)]
    faces = [(p, pl) for p, pl in faces if not p.is_empty and p.area > 1e-4]
    for poly, (a, b, c) in _node_faces(faces) if roof.kind != FLAT else faces:
        poly = shapely.remove_repeated_points(poly, 1e-4)
        out.append((shapely.affinity.translate(poly, ox, oy), (a, b, c - a * ox - b * oy)))
    return out


def _node_faces(
    faces: list[tuple[Polygon, tuple[float, float, float]]], tol: float = 1e-6
) -> list[tuple[Polygon, tuple[float, float, float]]]:
    """Every vertex of one face that lies on an edge of another inserted into that edge (no
    T-junctions: neighbouring faces share their edges vertex for vertex)."""
    verts = np.unique(np.concatenate([shapely.get_coordinates(p) for p, _ in faces]), axis=0)

    def ring(coords: np.ndarray) -> np.ndarray:
        out = []
        for p, q in itertools.pairwise(coords):
            out.append(p)
            d = q - p
            ll = float(d @ d)
            if ll <= 0:
                continue
            t = ((verts - p) @ d) / ll
            off = np.abs((verts[:, 0] - p[0]) * d[1] - (verts[:, 1] - p[1]) * d[0]) / math.sqrt(ll)
            k = (off < tol) & (t > 1e-9) & (t < 1 - 1e-9)
            out.extend(verts[k][np.argsort(t[k], kind="stable")])
        out.append(coords[-1])
        return np.asarray(out)

    return [
        (
            Polygon(
                ring(np.asarray(p.exterior.coords)[:, :2]),
                [ring(np.asarray(h.coords)[:, :2]) for h in p.interiors],
            ),
            pl,
        )
        for p, pl in faces
    ]


def _local_roof_planes(geom: BaseGeometry, roof: Roof) -> list[tuple[Polygon, tuple[float, float, float]]]:
    if roof.kind == FLAT:
        return [(p, (0.0, 0.0, roof.eave)) for p in _polys(geom)]
    if roof.kind == HIP:
        return _hip_planes(geom, roof)
    if roof.kind in FRAMED:
        return _envelope(geom, frame_planes(roof))
    if roof.kind == CROSS_GABLE:
        return _cross_gable_planes(geom, roof)
    raise ValueError(f"demo LoD2: unknown roof kind {roof.kind!r}")


def _lower_than(p: tuple[float, float, float], q: tuple[float, float, float]) -> Polygon | None:
    """Half-plane where plane p lies at or below plane q (None: everywhere / nowhere by dc)."""
    da, db, dc = p[0] - q[0], p[1] - q[1], p[2] - q[2]
    if math.hypot(da, db) < 1e-12:
        return None
    return _below(da, db, dc)


def _envelope(
    geom: BaseGeometry, planes: list[tuple[float, float, float]]
) -> list[tuple[Polygon, tuple[float, float, float]]]:
    """Faces of the lower envelope of the planes over geom (ties to the earlier plane)."""
    out = []
    for i, pi in enumerate(planes):
        region = geom
        for j, pj in enumerate(planes):
            if j == i:
                continue
            h = _lower_than(pi, pj)
            if h is None:
                if pi[2] > pj[2] or (pi[2] == pj[2] and j < i):
                    region = Polygon()
                    break
                continue
            region = _isect(region, h)
        out += [(p, pi) for p in _polys(region) if p.area > 1e-4]
    return out


def _wing_rect(w: Roof) -> Polygon:
    """The wing's rectangle, WING_MARGIN larger all round (the footprint is rounded to the cm)."""
    ux, uy = -w.ny, w.nx
    hl, hw = w.hl + WING_MARGIN, w.hw + WING_MARGIN
    return Polygon(
        [
            (w.cx + su * hl * ux + sv * hw * w.nx, w.cy + su * hl * uy + sv * hw * w.ny)
            for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
    )


def _cross_gable_planes(geom: BaseGeometry, roof: Roof) -> list[tuple[Polygon, tuple[float, float, float]]]:
    wings = [(_wing_rect(w), frame_planes(w)) for w in roof.wings]
    out = []
    for k, (rect, planes) in enumerate(wings):
        for face, pi in _envelope(_isect(geom, rect), planes):
            region: BaseGeometry = face
            for j, (rj, pj) in enumerate(wings):
                if j == k:
                    continue
                higher: BaseGeometry = rj  # where wing j's roof (the lower of its planes) is above pi
                for q in pj:
                    h = _lower_than(pi, q)
                    if h is not None:
                        higher = shapely.MultiPolygon(_polys(_isect(higher, h)))
                if not higher.is_empty:
                    region = shapely.MultiPolygon(_polys(_diff(region, higher)))
            out += [(p, pi) for p in _polys(region) if p.area > 1e-4]
    return out


def _edge_profile(
    faces: list[tuple[Polygon, tuple[float, float, float]]],
    corners: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
) -> list[tuple[float, float, float]]:
    """The top of the wall on a footprint edge: (x, y, z) from p0 to p1 through every roof face vertex
    on the edge, heights from the plane of the face each piece lies on (wall tops and roof edges
    coincide; where two faces meet at different heights the wall steps)."""
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy
    t = ((corners[:, 0] - x0) * dx + (corners[:, 1] - y0) * dy) / ll
    off = np.abs((corners[:, 0] - x0) * dy - (corners[:, 1] - y0) * dx) / math.sqrt(ll)
    on = (off < 1e-4) & (t > 1e-6) & (t < 1 - 1e-6)
    ts = np.unique(np.concatenate([[0.0, 1.0], np.round(t[on], 9)]))
    x, y = x0 + ts * dx, y0 + ts * dy
    # the plane of every piece between two such points: the face its midpoint lies on (else the
    # nearest); where the pieces on either side of a point differ in height, the wall steps there
    mid = shapely.points((x[:-1] + x[1:]) / 2, (y[:-1] + y[1:]) / 2)
    dist = np.array([shapely.distance(poly, mid) for poly, _ in faces])  # (faces, pieces)
    near = np.where(dist.min(axis=0) < 1e-4, np.argmax(dist < 1e-4, axis=0), np.argmin(dist, axis=0))
    P = np.array([pl for _, pl in faces])[near]
    out = [(float(x[0]), float(y[0]), float(P[0, 0] * x[0] + P[0, 1] * y[0] + P[0, 2]))]
    for i in range(1, len(x)):
        zb = float(P[i - 1, 0] * x[i] + P[i - 1, 1] * y[i] + P[i - 1, 2])
        out.append((float(x[i]), float(y[i]), zb))
        if i < len(x) - 1:
            za = float(P[i, 0] * x[i] + P[i, 1] * y[i] + P[i, 2])
            if abs(za - zb) > 5e-4:
                out.append((float(x[i]), float(y[i]), za))
    return out


def _poslist(pts: list[tuple[float, float, float]]) -> str:
    ring = [*pts, pts[0]]
    return " ".join(f"{x:.3f} {y:.3f} {z:.3f}" for x, y, z in ring)


def _polygon_xml(pid: str, rings: list[list[tuple[float, float, float]]]) -> str:
    parts = [f'<gml:Polygon gml:id="{pid}">']
    for k, ring in enumerate(rings):
        tag = "exterior" if k == 0 else "interior"
        parts.append(
            f'<gml:{tag}><gml:LinearRing><gml:posList srsDimension="3">{_poslist(ring)}'
            f"</gml:posList></gml:LinearRing></gml:{tag}>"
        )
    parts.append("</gml:Polygon>")
    return "".join(parts)


def _surface_xml(kind: str, sid: str, polys: list[str]) -> str:
    members = "".join(f"<gml:surfaceMember>{p}</gml:surfaceMember>" for p in polys)
    return (
        f'<bldg:boundedBy><bldg:{kind} gml:id="{sid}"><bldg:lod2MultiSurface><gml:MultiSurface>{members}'
        f"</gml:MultiSurface></bldg:lod2MultiSurface></bldg:{kind}></bldg:boundedBy>"
    )


def building_xml(s: Structure) -> str:
    """One `cityObjectMember` with the building's epoch-1 LoD2 geometry (absolute DHHN2016 heights)."""
    roof = s.roof_in(0)
    base = s.base
    oid = s.oid
    surfaces: list[str] = []
    geom = shapely.orient_polygons(s.geom)
    # ground: footprint at the base, seen from below (clockwise from above)
    grounds = []
    for k, poly in enumerate(_polys(geom)):
        rings = [
            np.asarray(poly.exterior.coords)[:-1, :2],
            *(np.asarray(r.coords)[:-1, :2] for r in poly.interiors),
        ]
        grounds.append(
            _polygon_xml(f"{oid}_G{k}_P", [[(float(x), float(y), base) for x, y in r[::-1]] for r in rings])
        )
    surfaces.append(_surface_xml("GroundSurface", f"{oid}_G", grounds))
    walls: list[str] = []
    faces = roof_planes(s, roof)
    corners = np.concatenate([shapely.get_coordinates(p) for p, _ in faces]) if faces else np.zeros((0, 2))
    for ring in _rings(geom):
        for k in range(len(ring) - 1):
            (x0, y0), (x1, y1) = ring[k], ring[k + 1]
            prof = _edge_profile(faces, corners, float(x0), float(y0), float(x1), float(y1))
            pts = [(x0, y0, base), (x1, y1, base)] + [(x, y, base + z) for x, y, z in reversed(prof)]
            walls.append(
                _polygon_xml(f"{oid}_W{len(walls)}_P", [[(float(a), float(b), float(c)) for a, b, c in pts]])
            )
    surfaces.append(_surface_xml("WallSurface", f"{oid}_W", walls))
    roofs = []
    top = roof.eave
    for k, (poly, (a, b, c)) in enumerate(faces):
        xy = shapely.get_coordinates(poly)
        top = max(top, float((a * xy[:, 0] + b * xy[:, 1] + c).max()))
        poly = shapely.orient_polygons(poly)
        rings = [
            np.asarray(poly.exterior.coords)[:-1, :2],
            *(np.asarray(r.coords)[:-1, :2] for r in poly.interiors),
        ]
        roofs.append(
            _polygon_xml(
                f"{oid}_R{k}_P",
                [[(float(x), float(y), base + a * x + b * y + c) for x, y in r] for r in rings],
            )
        )
    surfaces.append(_surface_xml("RoofSurface", f"{oid}_R", roofs))
    return (
        f'<core:cityObjectMember><bldg:Building gml:id="{oid}">'
        f'<gen:stringAttribute name="DatenquelleDachhoehe"><gen:value>1000</gen:value></gen:stringAttribute>'
        f"<bldg:function>{s.gfkzshh}</bldg:function>"
        f"<bldg:roofType>{ROOF_CODES[roof.kind]}</bldg:roofType>"
        f'<bldg:measuredHeight uom="urn:adv:uom:m">{top:.3f}</bldg:measuredHeight>'
        f"{''.join(surfaces)}</bldg:Building></core:cityObjectMember>\n"
    )


_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<core:CityModel xmlns:core="http://www.opengis.net/citygml/2.0" xmlns:bldg="http://www.opengis.net/citygml/building/2.0" xmlns:gen="http://www.opengis.net/citygml/generics/2.0" xmlns:gml="http://www.opengis.net/gml" xmlns:xlink="http://www.w3.org/1999/xlink">
<gml:boundedBy><gml:Envelope srsName="{srs}" srsDimension="3"><gml:lowerCorner>{lo}</gml:lowerCorner><gml:upperCorner>{hi}</gml:upperCorner></gml:Envelope></gml:boundedBy>
"""


def write_lod2(out_dir: Path, city: City) -> list[Path]:
    """Write the epoch-1 LoD2 model (see the module doc); returns the files written, sorted."""
    tiles: dict[tuple[int, int], list[Structure]] = {}
    for s in city.structures:
        if not (s.in_cadastre and s.present[0]):
            continue
        c = s.geom.centroid
        tiles.setdefault((int(c.x // 1000), int(c.y // 1000)), []).append(s)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for (e, n), members in sorted(tiles.items()):
        lo = f"{e * 1000}.000 {n * 1000}.000 {min(s.base for s in members):.3f}"
        hi = f"{(e + 1) * 1000}.000 {(n + 1) * 1000}.000 {max(s.base + s.roof.ridge for s in members):.3f}"
        body = [_HEAD.format(srs=SRS_NAME, lo=lo, hi=hi)]
        body += [building_xml(s) for s in sorted(members, key=lambda s: s.oid)]
        body.append("</core:CityModel>\n")
        path = out_dir / lod2_name(e, n)
        path.write_text("".join(body), encoding="utf-8")
        files.append(path)
    return files
