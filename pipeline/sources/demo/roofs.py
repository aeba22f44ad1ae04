"""Roof shapes as vectorised height functions (metres above the building base).

* ``flat``: constant height.
* ``gable``: a ridge line through (cx, cy) with unit normal (nx, ny); the roof falls linearly from the
  ridge to the eaves at distance ``hw`` on both sides (rectangular footprints, ridge parallel to the street
  for row houses, to the long side otherwise).
* ``hip``: eave + slope * distance to the footprint boundary, capped at the ridge. For rectangles this is
  exactly a hipped roof; for L-shapes and courtyard buildings it is the straight-skeleton-like roof with
  hips at the corners and the ridge along the middle of every wing.

Rectangle roofs in the frame of their rectangle (centre (cx, cy), v = distance across the ridge along the
unit normal (nx, ny), u along the ridge; half sizes ``hw`` across, ``hl`` along):

* ``shed`` (Pultdach): one plane rising from ``eave`` at v = -hw to ``ridge`` at v = +hw.
* ``half_hip`` (Krüppelwalmdach): a gable whose ends are hip planes from the ridge's ends (u = +-d)
  down to the height ``zb`` at the gable walls (u = +-hl); below ``zb`` the gable wall is vertical.
* ``pyramid`` (Zeltdach): planes from all four edges (at ``eave``) up to the apex (``ridge``).
* ``mansard`` (Mansardendach): per side a steep lower plane from the eave up to ``zb`` at |v| = d and
  a shallow upper plane from there to the ridge.
* ``cross_gable`` (an L-shaped house with two gable wings, Mischform 5000): ``wings`` are gable roofs on
  rectangles (``hl`` set); where the wings overlap the higher one is the roof (valleys where they meet).

The same functions feed the LiDAR simulation, the orthophoto shading and the truth statistics, so the
truth is exact for the simulated surface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

FLAT, GABLE, HIP = "flat", "gable", "hip"
SHED, HALF_HIP, PYRAMID, MANSARD, CROSS_GABLE = "shed", "half_hip", "pyramid", "mansard", "cross_gable"

# ALKIS / CityGML roof type codes (AdV dachform)
ROOF_CODES = {
    FLAT: 1000,
    SHED: 2100,
    GABLE: 3100,
    HIP: 3200,
    HALF_HIP: 3300,
    MANSARD: 3400,
    PYRAMID: 3500,
    CROSS_GABLE: 5000,
}
# cross gable: a wing's roof reaches this far (m) beyond its rectangle (footprints are rounded to the cm)
WING_MARGIN = 0.05
# kinds whose geometry is given in the frame of a rectangle (cx, cy, nx, ny, hw, hl)
FRAMED = frozenset({GABLE, SHED, HALF_HIP, PYRAMID, MANSARD})


@dataclass(frozen=True)
class Roof:
    kind: str
    eave: float  # relative to base; for flat roofs the roof height
    ridge: float  # relative to base; == eave for flat roofs
    # gable axis
    cx: float = 0.0
    cy: float = 0.0
    nx: float = 0.0
    ny: float = 1.0
    hw: float = 1.0
    # hip: slope (tan of the pitch)
    slope: float = 0.0
    hl: float = 0.0  # half length along the ridge (shed, half_hip, pyramid, mansard, cross-gable wings)
    d: float = 0.0  # half_hip: half length of the ridge; mansard: distance of the slope break from it
    zb: float = 0.0  # half_hip: height of the hip planes' foot at the gable walls; mansard: of the break
    wings: tuple[Roof, ...] = ()  # cross_gable: gable roofs on the wings' rectangles

    def raised(self, dh: float) -> Roof:
        """The same roof dh higher (all heights)."""
        return dataclasses.replace(
            self,
            eave=self.eave + dh,
            ridge=self.ridge + dh,
            zb=self.zb + dh if self.zb else 0.0,
            wings=tuple(w.raised(dh) for w in self.wings),
        )

    def moved(
        self,
        xy: Callable[[float, float], tuple[float, float]],
        dxy: Callable[[float, float], tuple[float, float]],
    ) -> Roof:
        """The roof with its frame mapped by a rigid transform (points by xy, directions by dxy)."""
        if self.kind not in FRAMED and self.kind != CROSS_GABLE:
            return self
        cx, cy = xy(self.cx, self.cy)
        nx, ny = dxy(self.nx, self.ny)
        return dataclasses.replace(
            self, cx=cx, cy=cy, nx=nx, ny=ny, wings=tuple(w.moved(xy, dxy) for w in self.wings)
        )

    def frame_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u along the ridge, v across it) of plan positions in this roof's frame."""
        dx, dy = x - self.cx, y - self.cy
        return -dx * self.ny + dy * self.nx, dx * self.nx + dy * self.ny


def boundary_edges(geom: BaseGeometry) -> np.ndarray:
    """(E, 4) array x0, y0, x1, y1 of all ring segments of a (multi)polygon."""
    rings = []
    for poly in getattr(geom, "geoms", [geom]):
        rings.append(np.asarray(poly.exterior.coords))
        rings.extend(np.asarray(r.coords) for r in poly.interiors)
    return np.concatenate([np.hstack([r[:-1, :2], r[1:, :2]]) for r in rings])


def distance_to_edges(edges: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance of every point to the nearest segment (vectorised over points, loop over few edges)."""
    d2 = np.full(x.shape, np.inf)
    for x0, y0, x1, y1 in edges:
        dx, dy = x1 - x0, y1 - y0
        ll = dx * dx + dy * dy
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / ll, 0.0, 1.0) if ll > 0 else 0.0
        ex = x - (x0 + t * dx)
        ey = y - (y0 + t * dy)
        np.minimum(d2, ex * ex + ey * ey, out=d2)
    return np.sqrt(d2)


def roof_height(roof: Roof, edges: np.ndarray | None, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Roof surface height above the base at the given points (points assumed inside the footprint)."""
    if roof.kind == FLAT:
        return np.full(np.shape(x), roof.eave)
    if roof.kind == GABLE:
        v = np.abs((x - roof.cx) * roof.nx + (y - roof.cy) * roof.ny)
        return roof.eave + (roof.ridge - roof.eave) * np.clip(1.0 - v / roof.hw, 0.0, 1.0)
    if roof.kind == HIP:
        assert edges is not None
        return np.minimum(roof.eave + roof.slope * distance_to_edges(edges, x, y), roof.ridge)
    if roof.kind == CROSS_GABLE:
        out = np.full(np.shape(x), -np.inf)
        for w in roof.wings:
            u, v = w.frame_uv(np.asarray(x), np.asarray(y))
            inside = (np.abs(u) <= w.hl + WING_MARGIN) & (np.abs(v) <= w.hw + WING_MARGIN)
            out = np.where(inside, np.maximum(out, roof_height(w, None, x, y)), out)
        return np.where(np.isfinite(out), out, roof.eave)
    u, v = roof.frame_uv(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    rise = roof.ridge - roof.eave
    if roof.kind == SHED:
        return roof.eave + rise * np.clip((v + roof.hw) / (2.0 * roof.hw), 0.0, 1.0)
    if roof.kind == HALF_HIP:
        side = roof.eave + rise * np.clip(1.0 - np.abs(v) / roof.hw, 0.0, 1.0)
        end = roof.ridge - (roof.ridge - roof.zb) * (np.abs(u) - roof.d) / (roof.hl - roof.d)
        return np.minimum(side, end)
    if roof.kind == PYRAMID:
        return roof.ridge - rise * np.clip(np.maximum(np.abs(u) / roof.hl, np.abs(v) / roof.hw), 0.0, 1.0)
    if roof.kind == MANSARD:
        av = np.abs(v)
        upper = roof.ridge - (roof.ridge - roof.zb) * av / roof.d
        lower = roof.zb - (roof.zb - roof.eave) * np.minimum((av - roof.d) / (roof.hw - roof.d), 1.0)
        return np.where(av <= roof.d, upper, lower)
    raise ValueError(f"unknown roof kind {roof.kind!r}")


def frame_planes(roof: Roof) -> list[tuple[float, float, float]]:
    """The planes z = a x + b y + c (relative heights) whose lower envelope is a framed roof (gable,
    shed, half_hip, pyramid, mansard; a cross-gable wing is a gable)."""
    rise = roof.ridge - roof.eave

    def world(pu: float, pv: float, c0: float) -> tuple[float, float, float]:
        # z = c0 + pu u + pv v with u = -(x - cx) ny + (y - cy) nx, v = (x - cx) nx + (y - cy) ny
        a = -pu * roof.ny + pv * roof.nx
        b = pu * roof.nx + pv * roof.ny
        return a, b, c0 - a * roof.cx - b * roof.cy

    if roof.kind == SHED:
        k = rise / (2.0 * roof.hw)
        return [world(0.0, k, roof.eave + k * roof.hw)]
    k = rise / roof.hw
    sides = [world(0.0, -k, roof.ridge), world(0.0, k, roof.ridge)]
    if roof.kind == GABLE:
        return sides
    if roof.kind == HALF_HIP:
        m = (roof.ridge - roof.zb) / (roof.hl - roof.d)
        return [*sides, world(-m, 0.0, roof.ridge + m * roof.d), world(m, 0.0, roof.ridge + m * roof.d)]
    if roof.kind == PYRAMID:
        m = rise / roof.hl
        return [*sides, world(-m, 0.0, roof.ridge), world(m, 0.0, roof.ridge)]
    if roof.kind == MANSARD:
        k1 = (roof.ridge - roof.zb) / roof.d
        k2 = (roof.zb - roof.eave) / (roof.hw - roof.d)
        c2 = roof.zb + k2 * roof.d
        return [
            world(0.0, -k1, roof.ridge),
            world(0.0, k1, roof.ridge),
            world(0.0, -k2, c2),
            world(0.0, k2, c2),
        ]
    raise ValueError(f"no planes for roof kind {roof.kind!r}")


def hip_ridge(geom: Polygon | MultiPolygon, eave: float, slope: float, tolerance: float = 0.01) -> float:
    """Ridge height of a distance-based hip roof: eave + slope * (largest distance to the boundary).

    The largest distance to the boundary is the radius of the maximum inscribed circle.
    """
    return eave + slope * float(shapely.maximum_inscribed_circle(geom, tolerance).length)


def roof_statistics(
    roof: Roof, geom: BaseGeometry, *, shrink: float = 0.5, step: float = 0.25
) -> dict[str, float]:
    """Area-sampled statistics of the roof surface (relative heights).

    ``p75`` is taken over the footprint shrunk by `shrink` metres (what a LoD1 estimator using the
    75th percentile of roof points inside the shrunk footprint converges to); ``mean`` over the full
    footprint (the CityGML LoD1 convention: mean LoD2 roof height).
    """
    edges = boundary_edges(geom) if roof.kind == HIP else None
    minx, miny, maxx, maxy = geom.bounds
    xs = np.arange(minx + step / 2, maxx, step)
    ys = np.arange(miny + step / 2, maxy, step)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    full = shapely.contains_xy(geom, gx, gy)
    shrunk_geom = geom.buffer(-shrink)
    shrunk = shapely.contains_xy(shrunk_geom, gx, gy) if not shrunk_geom.is_empty else full
    if not shrunk.any():
        shrunk = full
    h_full = roof_height(roof, edges, gx[full], gy[full])
    h_shrunk = roof_height(roof, edges, gx[shrunk], gy[shrunk])
    return {
        "p75": float(np.percentile(h_shrunk, 75)),
        "mean": float(h_full.mean()),
        "max": float(max(h_full.max(), roof.eave)),
    }
