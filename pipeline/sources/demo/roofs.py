"""Roof shapes as vectorised height functions (metres above the building base).

* ``flat``: constant height.
* ``gable``: a ridge line through (cx, cy) with unit normal (nx, ny); the roof falls linearly from the
  ridge to the eaves at distance ``hw`` on both sides (rectangular footprints, ridge parallel to the street
  for row houses, to the long side otherwise).
* ``hip``: eave + slope * distance to the footprint boundary, capped at the ridge. For rectangles this is
  exactly a hipped roof; for L-shapes and courtyard buildings it is the straight-skeleton-like roof with
  hips at the corners and the ridge along the middle of every wing.

The same functions feed the LiDAR simulation, the orthophoto shading and the truth statistics, so the
truth is exact for the simulated surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

FLAT, GABLE, HIP = "flat", "gable", "hip"

# ALKIS / CityGML roof type codes (AdV): 1000 flat, 3100 gable, 3200 hip
ROOF_CODES = {FLAT: 1000, GABLE: 3100, HIP: 3200}


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
    raise ValueError(f"unknown roof kind {roof.kind!r}")


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
