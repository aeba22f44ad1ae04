"""The fixed project east-north-up frame (pure numpy: point workers import it without PROJ/pydantic)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def enu_rotation(lon_deg: float, lat_deg: float) -> np.ndarray:
    """3x3 matrix whose rows are the east, north, up unit vectors in ECEF."""
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    sl, cl, sp, cp = np.sin(lon), np.cos(lon), np.sin(lat), np.cos(lat)
    return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])


@dataclass(frozen=True)
class ProjectFrame:
    """Fixed local east-north-up frame: ENU = R @ (ECEF - origin)."""

    origin_ecef: tuple[float, float, float]
    lon: float
    lat: float

    @property
    def rotation(self) -> np.ndarray:
        return enu_rotation(self.lon, self.lat)

    def ecef_to_enu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        d = np.stack(
            [
                np.asarray(x) - self.origin_ecef[0],
                np.asarray(y) - self.origin_ecef[1],
                np.asarray(z) - self.origin_ecef[2],
            ]
        )
        return (self.rotation @ d).T

    def enu_to_ecef(self, enu: np.ndarray) -> np.ndarray:
        return np.asarray(enu) @ self.rotation + np.asarray(self.origin_ecef)

    def tile_transform(self) -> list[float]:
        """Column-major 4x4 ENU->ECEF matrix for the root tile's `transform`."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = self.origin_ecef
        return [float(v) for v in m.T.reshape(-1)]

    def to_json(self) -> dict:
        return {"origin_ecef": list(self.origin_ecef), "lon": self.lon, "lat": self.lat}


@dataclass(frozen=True)
class Lattice:
    """A source CRS -> project ENU mapping sampled on a regular grid (built with PROJ in
    pipeline.stages.points.lattice, interpolated by the point kernels)."""

    lo: np.ndarray  # (3,) source coordinates of node (0,0,0); z already multiplied by z_factor
    step: np.ndarray  # (3,)
    values: np.ndarray  # (nx, ny, nz, 3) ENU metres
