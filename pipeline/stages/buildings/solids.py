"""LoD2 solids: a fitted roof (planes) over a footprint -> a closed, outward-oriented boundary made of
planar roof, wall and ground polygons (pure functions, numpy + shapely).

Two steps, so that the expensive one runs where the points are and the cheap one where the base height
is known:

1. `roof_partition(fit, footprint)`: the footprint split into roof faces, each carrying one plane
   z = a x + b y + c. Standard shapes (flat, shed, gable, hip, pyramid) are the lower envelope of their
   planes: the face of plane i is the part of the footprint where plane i is the lowest, so neighbouring
   faces meet exactly on the planes' intersection lines (ridges, hips, valleys). A multi-plane roof is
   split by the segmentation of its points (every place takes the plane of its nearest segmented point:
   Voronoi cells, no grid, so the faces follow the footprint whatever the map projection); where two
   such faces do not meet at the same height a vertical step wall joins them. The faces are noded on a
   1 mm grid (shared vertices are identical) and stored as `RoofPartition` (WKB MultiPolygon + plane
   per part), small enough to travel to the tile writers.
2. `build_solid(partition, base)`: one shell per footprint part. Roof polygons = faces lifted onto their
   planes; walls = one vertical polygon per boundary edge from `base` up to the roof edge; step walls on
   inner edges where the two faces' heights differ (split where they cross); ground = the footprint at
   `base`, facing down. Every vertical polygon carries all heights any other polygon uses on its vertical
   edges and every horizontal edge is an edge of the partition, so welded by position each edge is
   shared by exactly two polygons in opposite directions (no T-junctions).

`check_solid` tests what val3dity tests for a solid (closed shell, consistent orientation, outward
normals / positive volume, planar polygons within a tolerance, simple non-degenerate rings, no
self-intersection); a height field over a partition of the footprint cannot intersect itself as long as
the roof stays above the base, which `build_solid` enforces (`min_height_m`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import mapbox_earcut
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.stages.buildings.meshes import BuildingMesh, extrude_footprints
from pipeline.stages.buildings.roofs import RoofFit

ROOF, WALL, GROUND = 0, 1, 2
SEMANTICS = ("roof", "wall", "ground")
GRID = 0.001  # m: vertices are snapped to this grid (noding and welding)
MIN_WALL_M = 0.5  # lowest roof point above the base: less and the building keeps its LoD1 box


class SolidError(ValueError):
    """A roof partition or solid that cannot be built validly (the building keeps its LoD1 solid)."""


@dataclass(frozen=True)
class RoofPartition:
    wkb: bytes  # MultiPolygon: the roof faces (plan), noded
    planes: np.ndarray  # (faces, 3): a, b, c of z = a x + b y + c per face

    @cached_property
    def faces(self) -> list[shapely.Polygon]:
        return list(shapely.get_parts(shapely.from_wkb(self.wkb)))

    def height_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Roof height at plan positions (NaN outside the footprint)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        out = np.full(x.shape, np.nan)
        for f, (a, b, c) in zip(self.faces, self.planes, strict=True):
            k = shapely.contains_xy(f, x, y) & np.isnan(out)
            out[k] = a * x[k] + b * y[k] + c
        return out


@dataclass
class Solid:
    """Boundary of one building: vertices (V, 3) and polygons (rings of vertex ids, outer first, holes
    after), each with a semantic (ROOF, WALL, GROUND) and the shell it belongs to."""

    vertices: np.ndarray
    polygons: list[list[np.ndarray]]
    semantics: np.ndarray
    shells: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


# ---------------------------------------------------------------------------------- partition


def _halfplane_clip(poly: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Convex polygon (k, 2) clipped to a x + b y + c <= 0 (Sutherland-Hodgman)."""
    if len(poly) == 0:
        return poly
    out = []
    d = poly[:, 0] * a + poly[:, 1] * b + c
    for i in range(len(poly)):
        j = (i + 1) % len(poly)
        if d[i] <= 0:
            out.append(poly[i])
        if (d[i] <= 0) != (d[j] <= 0):
            t = d[i] / (d[i] - d[j])
            out.append(poly[i] + t * (poly[j] - poly[i]))
    return np.array(out).reshape(-1, 2)


def _envelope_faces(planes: np.ndarray, footprint: BaseGeometry) -> list[tuple[BaseGeometry, int]]:
    x0, y0, x1, y1 = footprint.bounds
    pad = 1.0 + max(x1 - x0, y1 - y0)
    box = np.array([[x0 - pad, y0 - pad], [x1 + pad, y0 - pad], [x1 + pad, y1 + pad], [x0 - pad, y1 + pad]])
    out = []
    for i in range(len(planes)):
        cell = box
        for j in range(len(planes)):
            if i != j:
                # plane i lowest: (a_i - a_j) x + (b_i - b_j) y + (c_i - c_j) <= 0; ties to the lower index
                d = planes[i] - planes[j]
                cell = _halfplane_clip(cell, d[0], d[1], d[2] - (1e-9 if i < j else 0.0))
        if len(cell) >= 3:
            out.append((shapely.intersection(footprint, shapely.Polygon(cell)), i))
    return out


def _segment_faces(
    fit: RoofFit, footprint: BaseGeometry, simplify_m: float
) -> list[tuple[BaseGeometry, int]]:
    """Faces of a multi-plane roof from its point segmentation: every place takes the plane of its
    nearest segmented point (the Voronoi cells of the points, merged per plane), the boundaries between
    planes simplified together. No grid: the faces are the same whatever the map projection's rotation
    (meridian convergence) and scale, up to the simplification's tolerance. Computed in the footprint's
    own frame (centred, axes along its minimum rotated rectangle) and mapped back."""
    from pipeline.stages.buildings.roof_model import footprint_frame

    assert fit.segment_xy is not None and fit.segment_label is not None
    f = footprint_frame(footprint)
    uv = np.column_stack(f.to_local(fit.segment_xy[:, 0], fit.segment_xy[:, 1]))
    # coincident points (in plan) share one cell: the first one's plane
    first = np.sort(np.unique(uv, axis=0, return_index=True)[1])
    uv, lab = uv[first], fit.segment_label[first]
    pad = 1.0 + f.half_l
    env = shapely.box(-f.half_l - pad, -f.half_w - pad, f.half_l + pad, f.half_w + pad)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(uv), extend_to=env, ordered=True))
    if len(cells) != len(lab):
        raise SolidError(f"Voronoi cells of {len(lab)} roof points: {len(cells)}")
    keys = np.unique(lab)
    regions = np.array([shapely.coverage_union_all(cells[lab == k]) for k in keys], dtype=object)
    # the zigzag boundaries between planes simplified together (shared edges stay shared)
    regions = shapely.coverage_simplify(regions, tolerance=simplify_m, simplify_boundary=False)
    regions = shapely.transform(regions, lambda c: np.column_stack(f.to_world(c[:, 0], c[:, 1])))
    return [
        (shapely.intersection(footprint, r, grid_size=GRID), int(k))
        for r, k in zip(regions, keys, strict=True)
    ]


def roof_partition(
    fit: RoofFit,
    footprint: BaseGeometry,
    *,
    simplify_m: float = 0.75,
    min_face_m2: float = 2.0,
) -> RoofPartition:
    """The footprint split into roof faces with one plane each (see the module docstring)."""
    if fit.fallback or not fit.planes:
        raise SolidError(f"no roof model ({fit.fallback or 'no planes'})")
    planes = np.array([(pl.a, pl.b, pl.c) for pl in fit.planes], dtype=np.float64)
    footprint = shapely.set_precision(footprint, GRID)
    if len(planes) == 1:
        faces = [(footprint, 0)]
    elif fit.segment_xy is not None:
        faces = _segment_faces(fit, footprint, simplify_m)
    else:
        faces = _envelope_faces(planes, footprint)
    if len(planes) == 1:  # one plane: the footprint's parts are the faces (nothing to node)
        parts = [shapely.orient_polygons(q) for q in shapely.get_parts(footprint) if q.area > 1e-4]
        if not parts:
            raise SolidError("empty roof partition")
        return RoofPartition(
            shapely.to_wkb(shapely.MultiPolygon(parts)), np.repeat(planes, len(parts), axis=0)
        )
    polys, owner = _node(faces)
    if len(planes) > 1 and fit.segment_xy is not None:
        polys, owner = _merge_small(polys, owner, min_face_m2)
    order = sorted(range(len(polys)), key=lambda i: polys[i].wkb)  # deterministic
    mp = shapely.MultiPolygon([polys[i] for i in order])
    return RoofPartition(shapely.to_wkb(mp), np.array([planes[owner[i]] for i in order]).reshape(-1, 3))


def _merge_small(
    polys: list[shapely.Polygon], owner: list[int], min_face_m2: float
) -> tuple[list[shapely.Polygon], list[int]]:
    """Faces smaller than min_face_m2 (segmentation noise, slivers) join the neighbour they share the
    longest edge with; faces of one plane are then dissolved and everything noded again."""
    owner = list(owner)
    for _ in range(len(polys)):
        small = [i for i in range(len(polys)) if polys[i].area < min_face_m2]
        changed = False
        for i in sorted(small, key=lambda i: (polys[i].area, i)):
            shared = []
            for j in range(len(polys)):
                if j != i and owner[j] != owner[i]:
                    ln = shapely.length(shapely.intersection(polys[i].boundary, polys[j].boundary))
                    if ln > GRID:
                        shared.append((-ln, j))
            if shared:
                owner[i] = owner[min(shared)[1]]
                changed = True
        if not changed:
            break
        merged = [
            (
                shapely.coverage_union_all(
                    np.array([p for p, o in zip(polys, owner, strict=True) if o == k], dtype=object)
                ),
                k,
            )
            for k in sorted(set(owner))
        ]
        polys, owner = _node(merged)
        owner = list(owner)
        if all(p.area >= min_face_m2 for p in polys):
            break
    return polys, owner


def official_partition(
    roofs: list[shapely.Polygon], footprint: BaseGeometry, *, min_face_m2: float = 0.5
) -> RoofPartition:
    """A roof partition from an official LoD2 model's roof polygons (Polygon Z) over a (cadastral)
    footprint: every roof polygon becomes a face with the plane through it, clipped to the footprint;
    where polygons overlap in plan (dormers, steps) the higher one is the visible roof; parts of the
    footprint no roof polygon covers take the plane of the face they share the longest edge with
    (cadastral and model footprints differ by centimetres to metres)."""
    items = []
    for g in roofs:
        ring = np.asarray(g.exterior.coords, dtype=np.float64)
        n = newell_normal(ring)
        if ring.shape[1] < 3 or abs(n[2]) < 0.1 * np.linalg.norm(n):
            continue  # vertical or degenerate: no roof face in plan
        a, b = -n[0] / n[2], -n[1] / n[2]
        pts = np.concatenate([ring] + [np.asarray(h.coords) for h in g.interiors])
        c = float(np.mean(pts[:, 2] - a * pts[:, 0] - b * pts[:, 1]))
        plan = shapely.make_valid(
            shapely.Polygon(ring[:, :2], [np.asarray(h.coords)[:, :2] for h in g.interiors])
        )
        items.append((-float(np.mean(ring[:, 2])), plan.wkb, plan, (a, b, c)))
    if not items:
        raise SolidError("no roof polygons in the official model")
    items.sort(key=lambda t: (t[0], t[1]))  # highest first (priority where plan projections overlap)
    footprint = shapely.set_precision(footprint, GRID)
    planes = np.array([t[3] for t in items], dtype=np.float64)
    faces = [(shapely.intersection(footprint, t[2], grid_size=GRID), k) for k, t in enumerate(items)]
    covered = shapely.union_all(np.array([t[2] for t in items], dtype=object), grid_size=GRID)
    gaps = shapely.difference(footprint, covered, grid_size=GRID)
    for gap in shapely.get_parts(gaps):
        if gap.area <= 1e-4:
            continue
        best = max(
            range(len(faces)),
            key=lambda k: (shapely.length(shapely.intersection(gap.boundary, faces[k][0].boundary)), -k),
        )
        faces.append((gap, faces[best][1]))
    polys, owner = _node(faces)
    polys, owner = _merge_small(polys, owner, min_face_m2)
    order = sorted(range(len(polys)), key=lambda i: polys[i].wkb)
    mp = shapely.MultiPolygon([polys[i] for i in order])
    return RoofPartition(shapely.to_wkb(mp), np.array([planes[owner[i]] for i in order]).reshape(-1, 3))


def merge_partitions(parts: list[RoofPartition]) -> RoofPartition:
    """One roof partition from the partitions of a building's parts (which tile its footprint): their
    faces noded together (shared part boundaries get identical vertices; where the parts' roofs meet at
    different heights `build_solid` puts a step wall), in a deterministic order."""
    faces: list[tuple[BaseGeometry, int]] = []
    planes: list[np.ndarray] = []
    for part in parts:
        off = len(planes)
        for k, (f, pl) in enumerate(zip(part.faces, part.planes, strict=True)):
            faces.append((f, off + k))
            planes.append(np.asarray(pl, dtype=np.float64))
    polys, owner = _node(faces)
    order = sorted(range(len(polys)), key=lambda i: polys[i].wkb)
    mp = shapely.MultiPolygon([polys[i] for i in order])
    return RoofPartition(shapely.to_wkb(mp), np.array([planes[owner[i]] for i in order]).reshape(-1, 3))


def _node(faces: list[tuple[BaseGeometry, int]]) -> tuple[list[shapely.Polygon], list[int]]:
    """Faces (geometry, plane) noded on the grid: shared boundaries get identical vertices; every
    noded polygon takes the plane of the face it overlaps most (holes of the footprint are left out)."""
    polys, owner = [], []
    for g, k in faces:
        for part in shapely.get_parts(shapely.set_precision(g, GRID)):
            if isinstance(part, shapely.Polygon) and part.area > 1e-4:
                polys.append(part)
                owner.append(k)
    if not polys:
        raise SolidError("empty roof partition")
    lines = shapely.union_all(shapely.boundary(np.array(polys, dtype=object)), grid_size=GRID)
    noded = [p for p in shapely.get_parts(shapely.polygonize(shapely.get_parts(lines))) if p.area > 1e-6]
    tree = shapely.STRtree(np.array(polys, dtype=object))
    out_faces, out_owner = [], []
    for p in noded:
        rp = shapely.point_on_surface(p)
        hit = [int(i) for i in tree.query(rp, predicate="intersects")]
        if not hit:
            continue  # a hole of the footprint (courtyard)
        best = (
            hit[0]
            if len(hit) == 1
            else min(hit, key=lambda i: (-shapely.area(shapely.intersection(p, polys[i])), i))
        )
        out_faces.append(shapely.orient_polygons(p))
        out_owner.append(owner[best])
    return out_faces, out_owner


# ---------------------------------------------------------------------------------- solid


class _Verts:
    def __init__(self) -> None:
        self.ids: dict[tuple[int, int, int], int] = {}
        self.xyz: list[tuple[float, float, float]] = []

    def get(self, x: float, y: float, z: float) -> int:
        key = (round(x / GRID), round(y / GRID), round(z / GRID))
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.xyz)
            self.xyz.append((key[0] * GRID, key[1] * GRID, key[2] * GRID))
        return i


def _q(v: float) -> int:
    return round(v / GRID)


def build_solid(
    partition: RoofPartition,
    base: float,
    *,
    min_height_m: float = 0.5,
    merge_m: float = 0.005,
    _lift: frozenset[tuple[int, int]] = frozenset(),
) -> Solid:
    """The closed boundary over `partition` down to `base` (see the module docstring).

    Where faces with alternating heights meet at one vertex (a multi-plane roof's step walls would
    share a vertical edge: not 2-manifold), the roof heights at that vertex are lifted to the highest
    one and the faces that moved are split into triangles (each planar); then no wall ends there."""
    faces = partition.faces
    planes = partition.planes
    # rings of every face as 2D vertex keys (closing point dropped); outer CCW, holes CW
    key_xy: dict[tuple[int, int], tuple[float, float]] = {}
    face_rings: list[list[list[tuple[int, int]]]] = []
    for face in faces:
        rings = []
        for ring in [face.exterior, *face.interiors]:
            c = np.asarray(ring.coords)[:-1]
            ks: list[tuple[int, int]] = []
            for x, y in c:
                k = (_q(x), _q(y))
                if ks and ks[-1] == k:
                    continue
                key_xy.setdefault(k, (k[0] * GRID, k[1] * GRID))
                ks.append(k)
            if len(ks) > 1 and ks[0] == ks[-1]:
                ks.pop()
            if len(ks) < 3:
                raise SolidError("degenerate roof face ring")
            rings.append(ks)
        face_rings.append(rings)

    def zf(fi: int, k: tuple[int, int]) -> float:
        a, b, c = planes[fi]
        x, y = key_xy[k]
        return float(a * x + b * y + c)

    # directed edges -> face on their left
    left: dict[tuple[tuple[int, int], tuple[int, int]], int] = {}
    for fi, rings in enumerate(face_rings):
        for ks in rings:
            for i in range(len(ks)):
                e = (ks[i], ks[(i + 1) % len(ks)])
                if e in left:
                    raise SolidError("overlapping roof faces")
                left[e] = fi
    # roof heights must stay above the base
    for fi, rings in enumerate(face_rings):
        for ks in rings:
            for k in ks:
                if zf(fi, k) < base + min_height_m:
                    raise SolidError("roof below the base")
    # step edges whose two faces cross in height: split them at the crossing (in both faces' rings)
    splits: dict[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]] = {}
    for (p, q), f in left.items():
        g = left.get((q, p))
        if g is None or f > g:
            continue
        dp = zf(f, p) - zf(g, p)
        dq = zf(f, q) - zf(g, q)
        if abs(dp) > merge_m and abs(dq) > merge_m and (dp > 0) != (dq > 0):
            t = dp / (dp - dq)
            (px, py), (qx, qy) = key_xy[p], key_xy[q]
            m = (_q(px + t * (qx - px)), _q(py + t * (qy - py)))
            if m in (p, q):
                continue
            key_xy.setdefault(m, (m[0] * GRID, m[1] * GRID))
            splits[(p, q)] = m
            splits[(q, p)] = m
    if splits:
        for rings in face_rings:
            for r, ks in enumerate(rings):
                new = []
                for i in range(len(ks)):
                    new.append(ks[i])
                    mid = splits.get((ks[i], ks[(i + 1) % len(ks)]))
                    if mid is not None:
                        new.append(mid)
                rings[r] = new
        left = {}
        for fi, rings in enumerate(face_rings):
            for ks in rings:
                for i in range(len(ks)):
                    left[(ks[i], ks[(i + 1) % len(ks)])] = fi
    # heights on every vertical line: base (boundary vertices) and each incident face's roof height;
    # heights closer than `merge_m` are one level (faces meeting on a ridge or hip line, rounding)
    raw: dict[tuple[int, int], dict[int, float]] = {}
    boundary: set[tuple[int, int]] = set()
    for (p, q), f in left.items():
        raw.setdefault(p, {})[f] = zf(f, p)
        if (q, p) not in left:
            boundary.update((p, q))
    lev: dict[tuple[int, tuple[int, int]], int] = {}
    sorted_levels: dict[tuple[int, int], list[int]] = {}
    zb = _q(base)
    for k, zs in raw.items():
        items = sorted(zs.items(), key=lambda t: (t[1], t[0]))
        out_levels = [zb] if k in boundary else []
        clusters: list[list[tuple[int, float]]] = []
        for f, z in items:  # single linkage: heights closer than merge_m are one level
            if not clusters or (z - clusters[-1][-1][1] > merge_m and k not in _lift):
                clusters.append([])
            clusters[-1].append((f, z))
        for cl in clusters:
            if k in _lift:
                zq = _q(max(t[1] for t in cl))
            elif len(cl) == 1:
                zq = _q(cl[0][1])  # = the mean of one height
            else:
                zq = _q(float(np.mean([t[1] for t in cl])))
            out_levels.append(zq)
            for f, _z in cl:
                lev[(f, k)] = zq
        sorted_levels[k] = sorted(set(out_levels))

    V = _Verts()
    polygons: list[list[np.ndarray]] = []
    sem: list[int] = []

    def vertical(p, q, lo_p: int, lo_q: int, hi_q: int, hi_p: int) -> list[int]:
        """Ring (p, lo) -> (q, lo) -> up q -> (q, hi) -> (p, hi) -> down p, with every level between.
        A trapezoid in its vertical plane (simple) as long as no top lies below its bottom."""
        if hi_q < lo_q or hi_p < lo_p:
            raise SolidError("wall with its top below its bottom (crossing roof heights)")
        (px, py), (qx, qy) = key_xy[p], key_xy[q]
        ring = [V.get(px, py, lo_p * GRID), V.get(qx, qy, lo_q * GRID)]
        ring += [V.get(qx, qy, z * GRID) for z in sorted_levels[q] if lo_q < z < hi_q]
        ring.append(V.get(qx, qy, hi_q * GRID))
        ring.append(V.get(px, py, hi_p * GRID))
        ring += [V.get(px, py, z * GRID) for z in reversed(sorted_levels[p]) if lo_p < z < hi_p]
        out = [v for i, v in enumerate(ring) if v != ring[i - 1]]
        return out

    # roofs (faces with a lifted vertex as triangles: each one planar)
    for fi, rings in enumerate(face_rings):
        ids = [np.array([V.get(*key_xy[k], lev[(fi, k)] * GRID) for k in ks], dtype=np.int64) for ks in rings]
        moved = any(k in _lift and abs(lev[(fi, k)] * GRID - zf(fi, k)) > GRID for ks in rings for k in ks)
        if not moved:
            polygons.append(ids)
            sem.append(ROOF)
            continue
        xy = np.concatenate([[key_xy[k] for k in ks] for ks in rings])
        ends = np.cumsum([len(ks) for ks in rings]).astype(np.uint32)
        t = mapbox_earcut.triangulate_float64(xy - xy[0], ends).astype(np.int64).reshape(-1, 3)
        allid = np.concatenate(ids)
        a, b, c = xy[t[:, 0]], xy[t[:, 1]], xy[t[:, 2]]
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        t[cross < 0] = t[cross < 0][:, [0, 2, 1]]
        for tri in allid[t]:
            polygons.append([tri])
            sem.append(ROOF)
    for (p, q), f in sorted(left.items()):
        g = left.get((q, p))
        if g is None:  # outer wall from the base to the roof edge
            ring = vertical(p, q, zb, zb, lev[(f, q)], lev[(f, p)])
        else:
            if f > g:
                continue
            fp_, fq = lev[(f, p)], lev[(f, q)]
            gp, gq = lev[(g, p)], lev[(g, q)]
            if fp_ == gp and fq == gq:
                continue  # the faces meet on this edge (ridge, hip, valley)
            if fp_ >= gp and fq >= gq:  # f higher: the wall faces g's side (right of p -> q)
                ring = vertical(p, q, gp, gq, fq, fp_)
            else:  # g higher: the wall faces f's side, seen along q -> p
                ring = vertical(q, p, fq, fp_, gp, gq)
        if len(ring) >= 3:
            polygons.append([np.array(ring, dtype=np.int64)])
            sem.append(WALL)
    # ground: the boundary edges chained into rings (outer CCW, holes CW), at the base, facing down
    nxt: dict[tuple[int, int], tuple[int, int]] = {}
    for p, q in left:
        if (q, p) not in left:
            if p in nxt:
                raise SolidError("footprint touches itself at a vertex")
            nxt[p] = q
    cycles = []
    todo = sorted(nxt)
    done: set[tuple[int, int]] = set()
    for start in todo:
        if start in done:
            continue
        cyc = [start]
        done.add(start)
        cur = nxt[start]
        while cur != start:
            if cur in done or cur not in nxt:
                raise SolidError("open footprint boundary")
            cyc.append(cur)
            done.add(cur)
            cur = nxt[cur]
        cycles.append(cyc)

    def area2(cyc: list[tuple[int, int]]) -> int:  # twice the signed area, in grid units (exact)
        return sum(p[0] * q[1] - p[1] * q[0] for p, q in zip(cyc, cyc[1:] + cyc[:1], strict=True))

    positive = [area2(c) > 0 for c in cycles]
    outers = [c for c, pos in zip(cycles, positive, strict=True) if pos]
    holes = [c for c, pos in zip(cycles, positive, strict=True) if not pos]
    shells = [shapely.Polygon([key_xy[k] for k in c]) for c in outers] if holes else []
    ground: list[list[list[tuple[int, int]]]] = [[c] for c in outers]
    for h in holes:
        pt = shapely.Point(key_xy[h[0]])
        owner = [i for i, s in enumerate(shells) if s.covers(pt)]
        if not owner:
            raise SolidError("a hole outside every footprint part")
        ground[min(owner, key=lambda i: shells[i].area)].append(h)
    for rings in ground:
        polygons.append(
            [np.array([V.get(*key_xy[k], zb * GRID) for k in ks[::-1]], dtype=np.int64) for ks in rings]
        )
        sem.append(GROUND)
    solid = Solid(np.array(V.xyz, dtype=np.float64), polygons, np.array(sem, dtype=np.int8))
    if not _lift:
        # vertical edges used by more than two walls: lift the roof at those vertices and rebuild once
        seen: set[tuple[int, int]] = set()
        shared: set[int] = set()
        for poly_rings in polygons:
            for ring_ids in poly_rings:
                vs = ring_ids.tolist()
                for edge in zip(vs, vs[1:] + vs[:1], strict=True):
                    if edge in seen:
                        shared.update(edge)
                    seen.add(edge)
        if shared:
            xyz = solid.vertices[sorted(shared)]
            lift = frozenset((_q(x), _q(y)) for x, y in xyz[:, :2])
            return build_solid(partition, base, min_height_m=min_height_m, merge_m=merge_m, _lift=lift)
    return solid


# ---------------------------------------------------------------------------------- checks, mesh


def newell_normal(p: np.ndarray) -> np.ndarray:
    """Unnormalised normal of a polygon ring (k, 3) (Newell's method: robust for any planar ring);
    its length is twice the ring's area."""
    q = np.roll(p, -1, axis=0)
    return np.array(
        [
            np.sum((p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2])),
            np.sum((p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0])),
            np.sum((p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1])),
        ]
    )


@dataclass
class _Flat:
    """All rings of a solid flattened: vertex ids, their ring, the next vertex of the ring, per ring
    its polygon and whether it is the outer ring."""

    idx: np.ndarray
    ring: np.ndarray
    nxt: np.ndarray
    ring_poly: np.ndarray
    ring_outer: np.ndarray


def _flatten(solid: Solid) -> _Flat:
    rings = [r for rings in solid.polygons for r in rings]
    lens = np.array([len(r) for r in rings], dtype=np.int64)
    ring_poly = np.repeat(np.arange(len(solid.polygons)), [len(rs) for rs in solid.polygons])
    ring_outer = np.concatenate([[True] + [False] * (len(rs) - 1) for rs in solid.polygons]).astype(bool)
    idx = np.concatenate(rings).astype(np.int64) if rings else np.zeros(0, dtype=np.int64)
    ring = np.repeat(np.arange(len(rings)), lens)
    start = np.concatenate([[0], np.cumsum(lens)[:-1]])
    pos = np.arange(len(idx)) - start[ring]
    nxt_pos = np.where(pos + 1 == lens[ring], 0, pos + 1) + start[ring]
    return _Flat(idx, ring, idx[nxt_pos], ring_poly, ring_outer)


def _polygon_normals(solid: Solid, fl: _Flat) -> tuple[np.ndarray, np.ndarray]:
    """(Newell vector of every polygon's outer ring, net Newell vector over all its rings)."""
    p, q = solid.vertices[fl.idx], solid.vertices[fl.nxt]
    terms = np.column_stack(
        [
            (p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2]),
            (p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0]),
            (p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1]),
        ]
    )
    nr = len(fl.ring_poly)
    per_ring = np.column_stack([np.bincount(fl.ring, weights=terms[:, k], minlength=nr) for k in range(3)])
    npoly = len(solid.polygons)
    outer = np.zeros((npoly, 3))
    outer[fl.ring_poly[fl.ring_outer]] = per_ring[fl.ring_outer]
    net = np.column_stack(
        [np.bincount(fl.ring_poly, weights=per_ring[:, k], minlength=npoly) for k in range(3)]
    )
    return outer, net


def _project(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """2D coordinates of points in the plane with normal n, orientation kept (CCW seen along -n)."""
    ax = int(np.argmax(np.abs(n)))
    i, j = [(1, 2), (2, 0), (0, 1)][ax]
    uv = p[:, [i, j]]
    return uv if n[ax] > 0 else uv[:, ::-1]


def triangulate(solid: Solid) -> tuple[np.ndarray, np.ndarray]:
    """Triangles (T, 3) over the solid's vertices, counter-clockwise seen from outside, and the polygon
    of every triangle. Triangles and convex quads without holes (most walls) are split directly, all
    at once; the others go through earcut in the polygon's plane."""
    fl = _flatten(solid)
    outer, _net = _polygon_normals(solid, fl)
    V = solid.vertices
    single = [len(rs) == 1 for rs in solid.polygons]
    n_of = [len(rs[0]) for rs in solid.polygons]
    tri3 = [pi for pi in range(len(solid.polygons)) if single[pi] and n_of[pi] == 3]
    quad = [pi for pi in range(len(solid.polygons)) if single[pi] and n_of[pi] == 4]
    tris: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    if tri3:
        tris.append(np.array([solid.polygons[pi][0] for pi in tri3], dtype=np.int64))
        owner.append(np.array(tri3, dtype=np.int64))
    rest = [pi for pi in range(len(solid.polygons)) if not (single[pi] and n_of[pi] in (3, 4))]
    if quad:
        Q = np.array([solid.polygons[pi][0] for pi in quad], dtype=np.int64)  # (m, 4)
        v = V[Q]
        short02 = np.sum((v[:, 0] - v[:, 2]) ** 2, axis=1) <= np.sum((v[:, 1] - v[:, 3]) ** 2, axis=1)
        # split on the shorter diagonal: (0 1 2)(0 2 3) or (0 1 3)(1 2 3)
        pick = np.where(short02[:, None, None], [[0, 1, 2], [0, 2, 3]], [[0, 1, 3], [1, 2, 3]])
        t = np.take_along_axis(Q[:, None, :], pick.reshape(len(Q), 1, 6), axis=2).reshape(len(Q), 2, 3)
        tv = V[t]  # (m, 2, 3, 3)
        tn = np.cross(tv[:, :, 1] - tv[:, :, 0], tv[:, :, 2] - tv[:, :, 0])
        ok = (np.einsum("mkj,mj->mk", tn, outer[np.array(quad)]) > 0).all(axis=1)  # convex, planar
        if ok.any():
            tris.append(t[ok].reshape(-1, 3))
            owner.append(np.repeat(np.array(quad)[ok], 2))
        rest = sorted(rest + [quad[k] for k in np.flatnonzero(~ok).tolist()])
    for pi in rest:
        rings = solid.polygons[pi]
        pts = np.concatenate([V[r] for r in rings])
        ids = np.concatenate(rings)
        uv = _project(pts, outer[pi])
        ends = np.cumsum([len(r) for r in rings]).astype(np.uint32)
        t = mapbox_earcut.triangulate_float64(uv - uv[0], ends).astype(np.int64).reshape(-1, 3)
        if len(t) == 0:
            continue
        a, b, c = uv[t[:, 0]], uv[t[:, 1]], uv[t[:, 2]]
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        t[cross < 0] = t[cross < 0][:, [0, 2, 1]]
        tris.append(ids[t])
        owner.append(np.full(len(t), pi, dtype=np.int64))
    if not tris:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(tris).astype(np.int64), np.concatenate(owner).astype(np.int64)


def check_solid(solid: Solid, planarity_m: float = 0.01, *, rings: bool = True) -> list[str]:
    """Errors under val3dity's rules for one closed shell (empty list = valid): rings with fewer than 3
    distinct vertices or repeated vertices (101/102), degenerate polygons, non-planar polygons beyond
    `planarity_m` (203), edges not shared by exactly two polygons in opposite directions (not closed
    302, non-manifold 303, inconsistent orientation 307), inward orientation (negative volume, 308);
    with `rings`, also self-intersecting rings and holes outside (104, 201-205; shapely on each polygon
    projected onto its plane: the slow part, which the build skips because `build_solid` makes walls as
    trapezoids and roofs from GEOS-valid faces)."""
    from pipeline.stages.buildings._solid_kernels import solid_checks

    errors: list[str] = []
    V = np.ascontiguousarray(solid.vertices, dtype=np.float64)
    ring_list = [r for rs in solid.polygons for r in rs]
    lens = np.array([len(r) for r in ring_list], dtype=np.int64)
    idx = np.concatenate(ring_list).astype(np.int64) if ring_list else np.zeros(0, dtype=np.int64)
    per_poly = [len(rs) for rs in solid.polygons]
    ring_poly = np.repeat(np.arange(len(solid.polygons)), per_poly)
    ring_outer = np.ones(len(ring_list), dtype=bool)
    ring_outer[1:] = ring_poly[1:] != ring_poly[:-1]
    outer, _net, norm, dev, bad_ring, n_bad, first, vol = solid_checks(
        V, idx, lens, ring_poly, ring_outer, len(solid.polygons)
    )

    def tag(pi: int) -> str:
        return f"polygon {pi} ({SEMANTICS[int(solid.semantics[pi])]})"

    for pi in np.flatnonzero(norm < 1e-9).tolist():
        errors.append(f"{tag(pi)}: degenerate (zero area)")
    # repeated vertices within a ring, rings with fewer than 3 vertices
    for r in np.flatnonzero(bad_ring).tolist():
        errors.append(f"{tag(int(ring_poly[r]))}: ring with repeated or too few vertices")
    # planarity: distance of every vertex to the plane of its polygon (unit outer normal)
    for pi in np.flatnonzero((dev > planarity_m) & (norm >= 1e-9)).tolist():
        errors.append(f"{tag(pi)}: not planar ({dev[pi]:.3f} m)")
    # closed, 2-manifold, consistently oriented: every directed edge once, its opposite once
    if n_bad:
        a, b, ce, crev = (int(v) for v in first)
        errors.append(
            f"edge {a}-{b}: used {ce}x, opposite {crev}x (not closed/oriented)"
            + (f" and {n_bad - 1} more" if n_bad > 1 else "")
        )
    # outward: the volume (divergence theorem over the planar polygons) is positive
    if vol <= 0:
        errors.append(f"volume {vol:.3f} m3 <= 0 (inward orientation)")
    if rings:
        for pi, rs in enumerate(solid.polygons):
            if norm[pi] < 1e-9:
                continue
            uv = [_project(V[r], outer[pi]) for r in rs]
            poly = shapely.Polygon(uv[0], uv[1:])
            if not poly.is_valid:
                errors.append(f"{tag(pi)}: {shapely.is_valid_reason(poly)}")
    return errors


def solid_volume(solid: Solid) -> float:
    tri, _ = triangulate(solid)
    p = solid.vertices[tri] - solid.vertices.mean(axis=0)
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


# ---------------------------------------------------------------------------------- transport


def pack_partition(part: RoofPartition) -> bytes:
    """Bytes of a partition (planes count, planes float64, WKB): what travels to the tile writers."""
    planes = np.ascontiguousarray(part.planes, dtype="<f8")
    return np.uint32(len(planes)).tobytes() + planes.tobytes() + part.wkb


def unpack_partition(blob: bytes) -> RoofPartition:
    n = int(np.frombuffer(blob[:4], dtype="<u4")[0])
    planes = np.frombuffer(blob[4 : 4 + 24 * n], dtype="<f8").reshape(n, 3).copy()
    return RoofPartition(bytes(blob[4 + 24 * n :]), planes)


SOLID_MAGIC = b"SOL1"  # a packed partition starts with its plane count, never with these bytes


def pack_solid(solid: Solid) -> bytes:
    """Bytes of a built solid (vertices float64, semantics, ring counts per polygon, ring lengths,
    vertex ids): what travels to the tile and CityJSON writers, so that each solid is built once."""
    rings = [r for rs in solid.polygons for r in rs]
    head = np.array([len(solid.vertices), len(solid.polygons), len(rings)], dtype="<u4")
    per_poly = np.array([len(rs) for rs in solid.polygons], dtype="<u4")
    lens = np.array([len(r) for r in rings], dtype="<u4")
    ids = np.concatenate(rings).astype("<u4") if rings else np.zeros(0, dtype="<u4")
    return b"".join(
        [
            SOLID_MAGIC,
            head.tobytes(),
            np.ascontiguousarray(solid.vertices, dtype="<f8").tobytes(),
            np.asarray(solid.semantics, dtype=np.int8).tobytes(),
            per_poly.tobytes(),
            lens.tobytes(),
            ids.tobytes(),
        ]
    )


def unpack_solid(blob: bytes) -> Solid:
    nv, npoly, nr = (int(v) for v in np.frombuffer(blob[4:16], dtype="<u4"))
    o = 16
    V = np.frombuffer(blob[o : o + 24 * nv], dtype="<f8").reshape(nv, 3).copy()
    o += 24 * nv
    sem = np.frombuffer(blob[o : o + npoly], dtype=np.int8).copy()
    o += npoly
    per_poly = np.frombuffer(blob[o : o + 4 * npoly], dtype="<u4").astype(np.int64)
    o += 4 * npoly
    lens = np.frombuffer(blob[o : o + 4 * nr], dtype="<u4").astype(np.int64)
    o += 4 * nr
    ids = np.frombuffer(blob[o:], dtype="<u4").astype(np.int64)
    rings = np.split(ids, np.cumsum(lens)[:-1]) if nr else []
    bounds = np.concatenate([[0], np.cumsum(per_poly)])
    polygons = [list(rings[bounds[k] : bounds[k + 1]]) for k in range(npoly)]
    return Solid(V, polygons, sem)


def solid_of(blob: bytes, base: float) -> Solid:
    """The solid of a transported LoD2 blob: a packed solid (built over its final base by the LoD2
    task) as it is, a packed partition built over `base`."""
    if blob[:4] == SOLID_MAGIC:
        return unpack_solid(blob)
    return build_solid(unpack_partition(blob), base)


def lowest_roof(part: RoofPartition) -> float:
    """The lowest roof height over the partition (at a face vertex: the faces are planar)."""
    low = np.inf
    for f, (a, b, c) in zip(part.faces, part.planes, strict=True):
        xy = shapely.get_coordinates(f)
        low = min(low, float((a * xy[:, 0] + b * xy[:, 1] + c).min()))
    return low


def roof_faces(oids: np.ndarray, partitions: list[bytes]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One row per roof face of the packed partitions (b"" = no LoD2 roof: no rows): columns oid,
    face (index within the building), plane_a/b/c (z = a x + b y + c), slope, azimuth (downhill,
    clockwise from north; NaN when flat), plan area, mean height; and the faces as 3D polygons (z on
    the plane), in building then face order."""
    rows: dict[str, list] = {k: [] for k in ("oid", "face", "plane_a", "plane_b", "plane_c")}
    geoms: list[BaseGeometry] = []
    for oid, blob in zip(oids, partitions, strict=True):
        if not blob:
            continue
        part = unpack_partition(blob)
        for k, (f, pl) in enumerate(zip(part.faces, part.planes, strict=True)):
            rows["oid"].append(str(oid))
            rows["face"].append(k)
            for name, v in zip(("plane_a", "plane_b", "plane_c"), pl, strict=True):
                rows[name].append(float(v))
            geoms.append(f)
    g = np.asarray(geoms, dtype=object)
    a = np.asarray(rows["plane_a"], dtype=np.float64)
    b = np.asarray(rows["plane_b"], dtype=np.float64)
    c = np.asarray(rows["plane_c"], dtype=np.float64)
    grad = np.hypot(a, b)
    area = shapely.area(g) if g.size else np.zeros(0)
    cen = shapely.centroid(g) if g.size else np.zeros(0, dtype=object)
    cols = {
        "oid": np.asarray(rows["oid"], dtype=object),
        "face": np.asarray(rows["face"], dtype=np.int32),
        "plane_a": a,
        "plane_b": b,
        "plane_c": c,
        "slope": np.degrees(np.arctan(grad)),
        "azimuth": np.where(grad > 1e-3, (np.degrees(np.arctan2(-a, -b)) + 360.0) % 360.0, np.nan),
        "area": area,
        "mean_height": a * shapely.get_x(cen) + b * shapely.get_y(cen) + c if g.size else np.zeros(0),
    }
    out = np.empty(len(g), dtype=object)
    for i, f in enumerate(g):
        xy = shapely.get_coordinates(f)
        f3 = shapely.force_3d(f)
        out[i] = shapely.set_coordinates(f3, np.column_stack([xy, a[i] * xy[:, 0] + b[i] * xy[:, 1] + c[i]]))
    return cols, out


def roof_mean_height(part: RoofPartition) -> float:
    """Plan-area-weighted mean height of the roof (the AdV / Geobasis NRW LoD1 roof): over a planar
    face z = a x + b y + c the mean height is the plane's height at the face's plan centroid, so the
    roof's mean is the area-weighted mean of those (exact, holes included)."""
    faces = np.asarray(part.faces, dtype=object)
    if faces.size == 0:
        return float("nan")
    area = shapely.area(faces)
    cen = shapely.centroid(faces)
    z = part.planes[:, 0] * shapely.get_x(cen) + part.planes[:, 1] * shapely.get_y(cen) + part.planes[:, 2]
    total = float(area.sum())
    return float((area * z).sum() / total) if total > 0 else float("nan")


def solid_mesh(solid: Solid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions (3T, 3), triangle corner order, semantic per position): vertices duplicated per
    triangle corner, so that normals are flat per polygon."""
    tri, owner = triangulate(solid)
    pos = solid.vertices[tri.reshape(-1)]
    sem = np.repeat(solid.semantics[owner], 3)
    return pos, np.arange(len(pos), dtype=np.int64), sem


def lod2_tile_mesh(
    geoms: np.ndarray,
    base: np.ndarray,
    roof: np.ndarray,
    lod2: list[bytes],
    to_local: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    *,
    floor: bool = True,
) -> tuple[BuildingMesh, np.ndarray]:
    """One tile's mesh: LoD2 solids where `lod2[i]` holds a packed solid or partition (`solid_of`), LoD1 boxes
    (`meshes.extrude_footprints`) for the others; feature id = input index. Returns the mesh and the
    surface of every vertex (ROOF, WALL, GROUND; LoD1 boxes by their faces' directions)."""
    has = np.array([len(b) > 0 for b in lod2], dtype=bool)
    pos_b, nrm_b, idx_b, fid_b, sem_b = [], [], [], [], []
    nv = 0
    lod1 = np.flatnonzero(~has)
    if lod1.size:  # LoD1 boxes, indexed as meshes.extrude_footprints makes them
        m1 = extrude_footprints(geoms[lod1], base[lod1], roof[lod1], to_local, floor=floor)
        up = m1.normals[:, 2].astype(np.float64)
        pos_b.append(m1.positions)
        nrm_b.append(m1.normals)
        idx_b.append(m1.indices.astype(np.int64).reshape(-1))
        fid_b.append(lod1[m1.feature_ids.astype(np.int64)])
        sem_b.append(np.where(up > 0.5, ROOF, np.where(up < -0.5, GROUND, WALL)).astype(np.uint8))
        nv = len(m1.positions)
    pos2, fid2, sem2 = [], [], []
    for i in np.flatnonzero(has):
        solid = solid_of(lod2[i], float(base[i]))
        p, _order, sem = solid_mesh(solid)
        pos2.append(p)
        fid2.append(np.full(len(p), i, dtype=np.int64))
        sem2.append(sem)
    if pos2:  # LoD2 solids: one vertex per triangle corner (flat normals per polygon)
        p = np.concatenate(pos2)
        local = to_local(p[:, 0], p[:, 1], p[:, 2])
        t = local.reshape(-1, 3, 3)
        nrm = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        ln = np.linalg.norm(nrm, axis=1, keepdims=True)
        nrm = np.where(ln > 0, nrm / np.maximum(ln, 1e-300), np.array([0.0, 0.0, 1.0]))
        pos_b.append(local)
        nrm_b.append(np.repeat(nrm, 3, axis=0).astype(np.float32))
        idx_b.append(np.arange(len(local), dtype=np.int64) + nv)
        fid_b.append(np.concatenate(fid2))
        sem_b.append(np.concatenate(sem2).astype(np.uint8))
    if not pos_b:
        empty = BuildingMesh(
            np.zeros((0, 3)), np.zeros((0, 3), np.float32), np.zeros(0, np.uint32), np.zeros(0, np.uint32)
        )
        return empty, np.zeros(0, dtype=np.uint8)
    mesh = BuildingMesh(
        np.concatenate(pos_b),
        np.concatenate(nrm_b).astype(np.float32),
        np.concatenate(idx_b).astype(np.uint32),
        np.concatenate(fid_b).astype(np.uint32),
    )
    return mesh, np.concatenate(sem_b)


# AdV roofType (dachform) codes -> roof_type names (the reconstruction uses the first six)
OFFICIAL_ROOF_TYPES = {
    "1000": "flat",
    "2100": "shed",
    "2200": "shed",  # versetztes Pultdach
    "3100": "gable",
    "3200": "hip",
    "3300": "half_hip",
    "3400": "mansard",
    "3500": "pyramid",
    "3600": "cone",
    "3700": "dome",
    "3800": "sawtooth",
    "3900": "arched",
    "4000": "tower",
    "5000": "multi",
    "9999": "other",
}


def official_roof_columns(roofs: list[shapely.Polygon], roof_type: str | None) -> dict[str, object]:
    """Roof attributes (reconstruct.ROOF_COLUMNS, without the point statistics) of an official roof:
    type from its roofType code, planes from its roof polygons (plan-area weighted)."""
    code = str(roof_type or "").strip()
    slopes, azimuths, weights = [], [], []
    zs = []
    for g in roofs:
        ring = np.asarray(g.exterior.coords, dtype=np.float64)
        if ring.shape[1] < 3:
            continue
        n = newell_normal(ring)
        ln = float(np.linalg.norm(n))
        if ln <= 0 or abs(n[2]) < 0.1 * ln:
            continue
        n = n / ln if n[2] > 0 else -n / ln
        slopes.append(float(np.degrees(np.arccos(min(1.0, n[2])))))
        azimuths.append(
            float((np.degrees(np.arctan2(n[0], n[1])) + 360.0) % 360.0) if n[2] < 0.9986 else np.nan
        )
        weights.append(abs(float(shapely.area(shapely.Polygon(ring[:, :2])))))
        zs.append(ring[:, 2])
    order = np.argsort(-np.asarray(weights), kind="stable")
    sl, az, w = np.asarray(slopes)[order], np.asarray(azimuths)[order], np.asarray(weights)[order]
    sloped = np.flatnonzero(sl >= 5.0)
    allz = np.concatenate(zs) if zs else np.zeros(0)
    return {
        "roof_type": OFFICIAL_ROOF_TYPES.get(code, "other" if code else ""),
        "roof_type_code": code,
        "roof_planes": len(sl),
        "roof_slope_mean": float((sl * w).sum() / w.sum()) if w.sum() > 0 else np.nan,
        "roof_slope_max": float(sl.max()) if sl.size else np.nan,
        "roof_azimuth_main": float(az[sloped[0]]) if sloped.size else np.nan,
        "roof_planes_summary": ";".join(
            f"{s:.1f}/{'' if np.isnan(a) else f'{a:.0f}'}" for s, a in zip(sl, az, strict=True)
        ),
        "eave_height": float(allz.min()) if allz.size else np.nan,
        "ridge_height": float(allz.max()) if allz.size else np.nan,
        "roof_rmse": np.nan,
    }
