"""Polygons -> triangle meshes in the source CRS: flat draped polygons and extruded prisms.

Vectorised with shapely 2 (constrained Delaunay triangulation of all polygons at once); heights are
normal heights in the working CRS, converted to the project frame by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely


@dataclass
class MeshParts:
    """Triangle soup: vertices (N,3) x, y, h; normals (N,3) ENU; triangles (M,3); feature (N,) row index."""

    xyz: np.ndarray
    normals: np.ndarray
    triangles: np.ndarray
    feature: np.ndarray

    @classmethod
    def empty(cls) -> MeshParts:
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3), np.uint32), np.zeros(0, np.int64))


def triangulate(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All triangles of the polygons: (T, 3, 2) xy counter-clockwise, and (T,) polygon index."""
    polys = np.asarray(polys, dtype=object)
    if not len(polys):
        return np.zeros((0, 3, 2)), np.zeros(0, np.int64)
    tris = shapely.constrained_delaunay_triangles(polys)
    parts, owner = shapely.get_parts(tris, return_index=True)
    ne = ~shapely.is_empty(parts)
    parts, owner = parts[ne], owner[ne]
    if not len(parts):
        return np.zeros((0, 3, 2)), np.zeros(0, np.int64)
    rings = shapely.get_exterior_ring(parts)
    coords = shapely.get_coordinates(rings)
    counts = shapely.get_num_coordinates(rings)
    if not np.all(counts == 4):
        keep = counts == 4
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sel = np.concatenate([np.arange(s, s + 4) for s in starts[keep]])
        coords = coords[sel]
        owner = owner[keep]
    t = coords.reshape(-1, 4, 2)[:, :3, :]
    # orient counter-clockwise
    area2 = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (
        t[:, 1, 1] - t[:, 0, 1]
    )
    flip = area2 < 0
    t[flip] = t[flip][:, [0, 2, 1], :]
    ok = np.abs(area2) > 1e-10
    return t[ok], owner[ok]


def draped(polys: np.ndarray, height_at, offset: float, cell: float = 10.0) -> MeshParts:
    """Flat polygons following the terrain: split along a `cell` metre grid, triangulated, each vertex at
    `height_at(x, y) + offset`. Normals point up."""
    polys = np.asarray(polys, dtype=object)
    if not len(polys):
        return MeshParts.empty()
    pieces, owner = _split_by_grid(polys, cell)
    t, towner = triangulate(pieces)
    if not len(t):
        return MeshParts.empty()
    xy = t.reshape(-1, 2)
    h = np.asarray(height_at(xy[:, 0], xy[:, 1]), dtype=np.float64) + offset
    h = np.where(np.isfinite(h), h, np.nanmedian(h) if np.isfinite(h).any() else 0.0)
    xyz = np.column_stack([xy, h])
    normals = np.tile([0.0, 0.0, 1.0], (len(xyz), 1))
    tri = np.arange(len(xyz), dtype=np.uint32).reshape(-1, 3)
    feature = np.repeat(owner[towner], 3)
    return MeshParts(xyz, normals, tri, feature)


def _split_by_grid(polys: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    b = shapely.total_bounds(polys)
    x0 = np.floor(b[0] / cell) * cell
    y0 = np.floor(b[1] / cell) * cell
    nx = max(1, int(np.ceil((b[2] - x0) / cell)))
    ny = max(1, int(np.ceil((b[3] - y0) / cell)))
    gx, gy = np.meshgrid(x0 + cell * np.arange(nx), y0 + cell * np.arange(ny))
    cells = shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + cell, gy.ravel() + cell)
    tree = shapely.STRtree(cells)
    pi, ci = tree.query(polys, predicate="intersects")
    pieces = shapely.intersection(polys[pi], cells[ci])
    parts, idx = shapely.get_parts(pieces, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 1e-6)
    return parts[keep], pi[idx[keep]]


def prisms(polys: np.ndarray, base: np.ndarray, top: np.ndarray) -> MeshParts:
    """Extruded footprints from `base` to `top` (normal heights per polygon): roof + walls, flat normals."""
    if not len(polys):
        return MeshParts.empty()
    # single polygons, exterior CCW, holes CW
    polys, pown = shapely.get_parts(np.asarray(polys, dtype=object), return_index=True)
    polys = shapely.orient_polygons(polys)
    base = np.asarray(base, dtype=np.float64)[pown]
    top = np.asarray(top, dtype=np.float64)[pown]
    t, owner = triangulate(polys)
    roof_xy = t.reshape(-1, 2)
    roof_owner = np.repeat(owner, 3)
    roof = np.column_stack([roof_xy, top[roof_owner]])
    roof_n = np.tile([0.0, 0.0, 1.0], (len(roof), 1))
    # walls: every ring edge a -> b, quad (a_bot, b_bot, b_top), (a_bot, b_top, a_top)
    rings = []
    ring_owner = []
    ext = shapely.get_exterior_ring(polys)
    rings.append(ext)
    ring_owner.append(np.arange(len(polys)))
    n_int = shapely.get_num_interior_rings(polys)
    for k in range(int(n_int.max(initial=0))):
        has = np.nonzero(n_int > k)[0]
        rings.append(shapely.get_interior_ring(polys[has], k))
        ring_owner.append(has)
    rings_a = np.concatenate(rings)
    rown = np.concatenate(ring_owner)
    coords, cidx = shapely.get_coordinates(rings_a, return_index=True)
    same = cidx[:-1] == cidx[1:]
    a = coords[:-1][same]
    b = coords[1:][same]
    own = rown[cidx[:-1][same]]
    seg = b - a
    length = np.hypot(seg[:, 0], seg[:, 1])
    keep = length > 1e-6
    a, b, own, seg, length = a[keep], b[keep], own[keep], seg[keep], length[keep]
    # outward normal of a CCW exterior edge (and a CW hole edge) is to the right of travel
    nrm = np.column_stack([seg[:, 1] / length, -seg[:, 0] / length, np.zeros(len(seg))])
    zb, zt = base[own], top[own]
    quad = np.stack(
        [
            np.column_stack([a, zb]),
            np.column_stack([b, zb]),
            np.column_stack([b, zt]),
            np.column_stack([a, zb]),
            np.column_stack([b, zt]),
            np.column_stack([a, zt]),
        ],
        axis=1,
    ).reshape(-1, 3)
    wall_n = np.repeat(nrm, 6, axis=0)
    xyz = np.concatenate([roof, quad])
    normals = np.concatenate([roof_n, wall_n])
    feature = pown[np.concatenate([roof_owner, np.repeat(own, 6)])]
    tri = np.arange(len(xyz), dtype=np.uint32).reshape(-1, 3)
    return MeshParts(xyz, normals, tri, feature)


@dataclass
class Outlines:
    """Line segments: vertices (N,3) x, y, h; segments (K,2) vertex index pairs; feature (N,) row index."""

    xyz: np.ndarray
    segments: np.ndarray
    feature: np.ndarray


def draped_outlines(polys: np.ndarray, height_at, offset: float, step: float = 10.0) -> Outlines:
    """The polygons' rings as line segments following the terrain: densified to at most `step` metres
    (the draped mesh's grid cell), each vertex at `height_at(x, y) + offset`."""
    polys = np.asarray(polys, dtype=object)
    empty = Outlines(np.zeros((0, 3)), np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    if not len(polys):
        return empty
    rings = shapely.segmentize(shapely.boundary(polys), step)
    lines, owner = shapely.get_parts(rings, return_index=True)
    coords, cidx = shapely.get_coordinates(lines, return_index=True)
    if not len(coords):
        return empty
    i = np.flatnonzero(cidx[:-1] == cidx[1:])
    h = np.asarray(height_at(coords[:, 0], coords[:, 1]), dtype=np.float64) + offset
    h = np.where(np.isfinite(h), h, np.nanmedian(h) if np.isfinite(h).any() else 0.0)
    return Outlines(np.column_stack([coords, h]), np.column_stack([i, i + 1]), owner[cidx])
