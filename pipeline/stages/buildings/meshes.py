"""Watertight LoD1 solids: footprint extruded from base to roof height (roof, walls, optional floor).

Rings are oriented (exterior counter-clockwise, holes clockwise) so that every wall quad
(b_i, b_i+1, t_i+1, t_i) faces outward, roof triangles face up and the floor is the roof reversed;
roof and floor are triangulated with earcut (holes supported). Vertices are duplicated per face so that
normals are flat; welded by position, every edge is shared by exactly two triangles with opposite
directions (a closed, consistently oriented 2-manifold with positive volume).

Coordinates go through `to_local(x, y, z) -> (N, 3)` (e.g. EPSG:25832+7837 -> ECEF via the geoid ->
project ENU frame); normals are computed from the transformed positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mapbox_earcut
import numpy as np
import shapely

ToLocal = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class BuildingMesh:
    positions: np.ndarray  # (V, 3) float64 in the local frame
    normals: np.ndarray  # (V, 3) float32 unit vectors
    indices: np.ndarray  # (T*3,) uint32, counter-clockwise seen from outside
    feature_ids: np.ndarray  # (V,) uint32: index of the building in the input arrays

    @property
    def triangles(self) -> np.ndarray:
        return self.indices.reshape(-1, 3)


def _identity(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.column_stack([x, y, z]).astype(np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    out = np.zeros_like(v)
    ok = n[:, 0] > 0
    out[ok] = v[ok] / n[ok]
    out[~ok] = (0.0, 0.0, 1.0)
    return out


def extrude_footprints(
    geoms: np.ndarray,
    base: np.ndarray,
    roof: np.ndarray,
    to_local: ToLocal | None = None,
    *,
    floor: bool = True,
) -> BuildingMesh:
    """One mesh for all footprints (Polygon / MultiPolygon, holes allowed); feature id = input index."""
    to_local = to_local or _identity
    geoms = shapely.orient_polygons(shapely.remove_repeated_points(np.asarray(geoms, dtype=object), 1e-6))
    base = np.asarray(base, dtype=np.float64)
    roof = np.asarray(roof, dtype=np.float64)
    parts, part_owner = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    # drop the closing coordinate of every ring
    last = np.ones(len(coords), dtype=bool)
    last[:-1] = coord_ring[:-1] != coord_ring[1:]
    rv = coords[~last]
    rv_ring = coord_ring[~last]
    m = len(rv)
    ring_start = np.searchsorted(rv_ring, np.arange(len(rings)))
    ring_len = np.bincount(rv_ring, minlength=len(rings))
    owner = part_owner[ring_part[rv_ring]]

    # walls: edge j -> next vertex of the same ring
    j = np.arange(m)
    nxt = j + 1
    wrap = (j - ring_start[rv_ring]) == ring_len[rv_ring] - 1
    nxt[wrap] = ring_start[rv_ring[wrap]]

    # roof (and floor) triangles: earcut per polygon part, indices into rv
    tris = []
    part_of_ring = ring_part
    ring_ptr = np.concatenate([[0], np.cumsum(np.bincount(part_of_ring, minlength=len(parts)))])
    for p in range(len(parts)):
        r0, r1 = ring_ptr[p], ring_ptr[p + 1]
        if r1 == r0:
            continue
        s = ring_start[r0]
        e = ring_start[r1 - 1] + ring_len[r1 - 1]
        if e - s < 3:
            continue
        v = rv[s:e]
        ends = [*(ring_start[r0 + 1 : r1] - s).tolist(), e - s]
        t = mapbox_earcut.triangulate_float64(v - v[0], np.asarray(ends, dtype=np.uint32))
        if len(t):
            tris.append(t.astype(np.int64) + s)
    tri = np.concatenate(tris).reshape(-1, 3) if tris else np.zeros((0, 3), dtype=np.int64)
    # make every roof triangle counter-clockwise seen from above
    a, b, c = rv[tri[:, 0]], rv[tri[:, 1]], rv[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    flip = cross < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]

    # vertex blocks: roof (m), floor (m), walls (4 per edge)
    zb = base[owner]
    zr = roof[owner]
    # transform each corner once (top and bottom), then gather the duplicated face vertices
    corners = to_local(
        np.concatenate([rv[:, 0], rv[:, 0]]), np.concatenate([rv[:, 1], rv[:, 1]]), np.concatenate([zr, zb])
    )
    top, bot = corners[:m], corners[m:]
    walls = np.stack([bot[j], bot[nxt], top[nxt], top[j]], axis=1).reshape(-1, 3)
    pos = np.concatenate([top] + ([bot] if floor else []) + [walls])
    wall0 = 2 * m if floor else m
    q = wall0 + 4 * j
    wall_tri = np.concatenate([np.stack([q, q + 1, q + 2], 1), np.stack([q, q + 2, q + 3], 1)], axis=0)
    wall_tri = wall_tri.reshape(2, m, 3).transpose(1, 0, 2).reshape(-1, 3)  # keep quads together
    all_tri = [tri]
    if floor:
        all_tri.append(tri[:, [0, 2, 1]] + m)
    all_tri.append(wall_tri)
    indices = np.concatenate(all_tri).astype(np.uint32)

    # flat normals from the transformed positions
    nb = len(base)
    rp = pos[tri]
    tn = np.cross(rp[:, 1] - rp[:, 0], rp[:, 2] - rp[:, 0])
    up = np.zeros((nb, 3))
    np.add.at(up, owner[tri[:, 0]], tn)
    up = _unit(up)
    wp0, wp1, wp3 = pos[q], pos[q + 1], pos[q + 3]
    wn = _unit(np.cross(wp1 - wp0, wp3 - wp0))
    normals = np.concatenate(
        [up[owner]] + ([-up[owner]] if floor else []) + [np.repeat(wn, 4, axis=0)]
    ).astype(np.float32)
    fid = np.concatenate([owner] + ([owner] if floor else []) + [np.repeat(owner, 4)]).astype(np.uint32)
    return BuildingMesh(pos, normals, indices, fid)


def weld(mesh: BuildingMesh, decimals: int = 6) -> np.ndarray:
    """Triangles (T, 3) over position-welded vertex ids (tests: watertightness, volume)."""
    key = np.round(mesh.positions, decimals)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    return inv.reshape(-1)[mesh.triangles]


def edge_problems(tri: np.ndarray) -> int:
    """Number of directed edges not matched by exactly one opposite edge (0 = closed, oriented)."""
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = e[e[:, 0] != e[:, 1]]
    fwd, cf = np.unique(e, axis=0, return_counts=True)
    rev, cr = np.unique(e[:, ::-1], axis=0, return_counts=True)
    d_f = {tuple(k): v for k, v in zip(fwd.tolist(), cf.tolist(), strict=True)}
    d_r = {tuple(k): v for k, v in zip(rev.tolist(), cr.tolist(), strict=True)}
    bad = sum(1 for k, v in d_f.items() if v != 1 or d_r.get(k, 0) != 1)
    return bad


def signed_volume(positions: np.ndarray, tri: np.ndarray) -> float:
    p = positions[tri]
    return float(np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)
