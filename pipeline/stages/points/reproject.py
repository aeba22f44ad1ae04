"""Source CRS -> project ENU millimetres through an exact PROJ lattice plus trilinear interpolation.

PROJ is evaluated exactly on lattice nodes (default every 50 m horizontally, nodes anchored to a global grid
in the source CRS so every work unit of a file uses identical node values); the numba kernel interpolates
between them. The map source -> ECEF is exactly linear in the height, and over 50 m the curvature terms stay
far below a millimetre (tested against per-point pyproj in tests/unit/test_points_kernels.py).
"""

from __future__ import annotations

import math

import numpy as np
from pyproj import CRS, Transformer

from pipeline.crs import ProjectFrame
from pipeline.errors import CrsError
from pipeline.frame import Lattice

LATTICE_SPACING_M = 50.0
MAX_LATTICE_NODES = 2_000_000


def _metres_per_unit(crs: CRS) -> float:
    if crs.is_geographic:
        return 111_000.0
    ax = crs.axis_info
    return float(ax[0].unit_conversion_factor) if ax else 1.0


def build_lattice(
    transformer: Transformer,
    frame: ProjectFrame,
    crs: CRS,
    mins: tuple[float, float, float],
    maxs: tuple[float, float, float],
    z_factor: float,
    spacing_m: float = LATTICE_SPACING_M,
    *,
    path=None,
) -> Lattice:
    """Exact ENU values on a lattice covering the box [mins, maxs] (source units; Z before z_factor)."""
    mpu = _metres_per_unit(crs)
    s = spacing_m / mpu
    while True:  # the spacing doubles until the lattice has at most MAX_LATTICE_NODES nodes
        x0, x1 = math.floor(mins[0] / s) * s, math.ceil(maxs[0] / s) * s
        y0, y1 = math.floor(mins[1] / s) * s, math.ceil(maxs[1] / s) * s
        nx = max(2, round((x1 - x0) / s) + 1)
        ny = max(2, round((y1 - y0) / s) + 1)
        if nx * ny * 2 <= MAX_LATTICE_NODES:
            break
        s *= 2
    # heights: the map is linear in h, two levels on a coarse global grid suffice
    zs = 1000.0
    zlo, zhi = mins[2] * z_factor, maxs[2] * z_factor
    z0 = math.floor(zlo / zs) * zs
    z1 = max(math.ceil(zhi / zs) * zs, z0 + zs)
    nz = max(2, round((z1 - z0) / zs) + 1)
    gx = x0 + s * np.arange(nx)
    gy = y0 + s * np.arange(ny)
    gz = z0 + zs * np.arange(nz)
    X, Y, Z = np.meshgrid(gx, gy, gz, indexing="ij")
    ex, ey, ez = transformer.transform(X.ravel(), Y.ravel(), Z.ravel())
    enu = frame.ecef_to_enu(np.asarray(ex), np.asarray(ey), np.asarray(ez))
    if not np.all(np.isfinite(enu)):
        raise CrsError(
            f"PROJ cannot transform the file's extent from {crs.name} (outside the geoid grid or the CRS's "
            "valid area?)",
            path=path,
        )
    return Lattice(
        lo=np.array([x0, y0, z0], dtype=np.float64),
        step=np.array([s, s, zs], dtype=np.float64),
        values=np.ascontiguousarray(enu.reshape(nx, ny, nz, 3)),
    )
