"""The data of a fitted LoD2 roof (pipeline.stages.buildings.roofs): parameters, planes, the fit and the
footprint's principal frame (pure data and geometry, no fitting here).

Roof types are the AdV catalogue (ALKIS `dachform`, CityGML `roofType`) shapes the reconstruction fits:

| roof_type | AdV code | German | model |
|---|---|---|---|
| flat | 1000 | Flachdach | one horizontal plane |
| shed | 2100 | Pultdach | one sloped plane |
| gable | 3100 | Satteldach | two planes meeting at a ridge |
| hip | 3200 | Walmdach | gable whose ends are sloped planes down to the eave |
| half_hip | 3300 | Krüppelwalmdach | gable whose ends are sloped planes that stop above the eave |
| mansard | 3400 | Mansardendach | gable with a slope break: steep lower, shallow upper planes |
| pyramid | 3500 | Zeltdach | planes from every side meeting in one apex |
| multi | 5000 | Mischform | any other set of planes (RANSAC segmentation) |

All but flat, shed and multi are convex height fields: the lower envelope of their planes
(`ENVELOPE_TYPES`), which is how their heights are evaluated and how the solids split the footprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

ROOF_TYPE_CODES = {
    "flat": "1000",
    "shed": "2100",
    "gable": "3100",
    "hip": "3200",
    "half_hip": "3300",
    "mansard": "3400",
    "pyramid": "3500",
    "multi": "5000",
}
ENVELOPE_TYPES = frozenset({"gable", "hip", "half_hip", "mansard", "pyramid"})


@dataclass(frozen=True)
class RoofParams:
    min_points: int = 20
    max_rmse_m: float = 0.5
    inlier_m: float = 0.15  # floor of the trimming threshold
    outlier_m: float = 0.5  # truncation of the scoring loss
    sigma0_m: float = 0.03  # noise floor in the score (perfect synthetic data would otherwise divide by 0)
    grid_steps: int = 21  # grid search of the ridge offset / hip ridge length / mansard break
    grid_stride: int = 4  # numba: coarse screen of every 4th grid value, then the best one's neighbours
    # half-hip: share of the roof's rise (ridge - eave) the hip planes drop at the gable ends, searched
    # on this grid (1.0 would be a hip, 0 a gable)
    half_hip_drops: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    ransac_iterations: int = 300
    ransac_tol_m: float = 0.12
    max_planes: int = 8
    min_plane_points: int = 12
    seed: int = 0  # RANSAC sampling is deterministic
    ransac_subset: int = 200  # numba: triples pre-scored on ~this many points (0: all points)...
    ransac_keep: int = 12  # ...and this many best counted on all
    # naming a multi-plane fit: the planes holding this share of the points decide its shape
    dominant_share: float = 0.8
    flat_deg: float = 5.0  # planes flatter than this are flat
    azimuth_tol_deg: float = 15.0  # opposite / perpendicular planes within this
    # naming a multi-plane hip: hip planes whose lowest point stays this share of the rise above the
    # eave make a half-hip; a mansard's lower planes are at least this much steeper (degrees)
    half_hip_min_drop_share: float = 0.15
    mansard_min_break_deg: float = 10.0
    max_fit_points: int = 1500  # larger point sets are fitted on a seeded random subset of this size
    min_inlier_fraction: float = 0.7  # fewer points on the fitted roof: vegetation or clutter, not a roof
    backend: str = "numba"  # "numba" (kernels in _roof_kernels) or "numpy" (the reference, tests)
    # a standard shape in the footprint's frame with this inlier share and inlier RMSE ends the search
    # (no RANSAC multi-plane candidate, no ridge frame); early_exit_inliers 1.0 = always search
    early_exit_inliers: float = 0.97
    early_exit_rmse_m: float = 0.08
    # the same test after the simple shapes (flat, shed, symmetric gable, hip, pyramid), stricter: the
    # half-hip's hip ends or an offset ridge may hold only a few per cent of the points
    early_exit_simple_inliers: float = 0.995


@dataclass(frozen=True)
class Plane:
    a: float  # z = a x + b y + c in the input (world) coordinates
    b: float
    c: float
    slope_deg: float
    azimuth_deg: float  # downhill direction, clockwise from north (NaN for a flat plane)
    n_points: int


@dataclass
class RoofFit:
    roof_type: str  # a key of ROOF_TYPE_CODES | "" (fallback)
    planes: list[Plane]
    eave_height: float
    ridge_height: float
    rmse: float
    n_points: int
    n_inliers: int  # of the fitted points (a subset of max_fit_points when there were more)
    scores: dict[str, float] = field(default_factory=dict)
    fallback: str = ""  # "" or the reason the LoD1 solid stays (too_few_points, too_noisy)

    # multi-plane roofs: the segmented points (x, y) and their plane index, to tell which face is where
    segment_xy: np.ndarray | None = field(default=None, repr=False)
    segment_label: np.ndarray | None = field(default=None, repr=False)

    @property
    def roof_type_code(self) -> str:
        return ROOF_TYPE_CODES.get(self.roof_type, "")

    def height_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The fitted roof's height at plan positions (NaN for a fallback)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if not self.planes:
            return np.full(x.shape, np.nan)
        P = np.array([(pl.a, pl.b, pl.c) for pl in self.planes])
        zz = P[:, 0:1] * x.ravel() + P[:, 1:2] * y.ravel() + P[:, 2:3]
        if self.segment_xy is not None and self.segment_label is not None:  # segmented (multi-plane) fit
            from pipeline.stages.buildings._roof_kernels import nearest_other

            sx = np.ascontiguousarray(self.segment_xy[:, 0])
            sy = np.ascontiguousarray(self.segment_xy[:, 1])
            xr, yr = np.ascontiguousarray(x.ravel()), np.ascontiguousarray(y.ravel())
            lab = self.segment_label[nearest_other(xr, yr, sx, sy, np.full(xr.size, -1, dtype=np.int64))]
            return zz[lab, np.arange(xr.size)].reshape(x.shape)
        if self.roof_type in ENVELOPE_TYPES:  # convex: the lower envelope of the planes
            return zz.min(axis=0).reshape(x.shape)
        return zz[0].reshape(x.shape)


@dataclass(frozen=True)
class Frame:
    """Principal frame of a footprint: u along the long side of its minimum rotated rectangle."""

    cx: float
    cy: float
    ux: float  # unit vector of u in world coordinates
    uy: float
    half_l: float
    half_w: float

    def to_local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - self.cx, y - self.cy
        return dx * self.ux + dy * self.uy, -dx * self.uy + dy * self.ux

    def to_world(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of `to_local`."""
        return self.cx + u * self.ux - v * self.uy, self.cy + u * self.uy + v * self.ux

    def plane_to_world(self, au: float, bv: float, c: float) -> tuple[float, float, float]:
        """z = au u + bv v + c (local) -> z = a x + b y + c' (world)."""
        a = au * self.ux - bv * self.uy
        b = au * self.uy + bv * self.ux
        return a, b, c - a * self.cx - b * self.cy


def footprint_frame(footprint: shapely.Geometry) -> Frame:
    rect = shapely.minimum_rotated_rectangle(footprint)
    pts = np.asarray(shapely.get_coordinates(rect))[:4]
    e1, e2 = pts[1] - pts[0], pts[2] - pts[1]
    n1, n2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    axis, long_, short = (e1 / n1, n1, n2) if n1 >= n2 else (e2 / n2, n2, n1)
    if axis[0] < 0 or (axis[0] == 0 and axis[1] < 0):  # deterministic direction
        axis = -axis
    c = pts.mean(axis=0)
    return Frame(
        float(c[0]), float(c[1]), float(axis[0]), float(axis[1]), long_ / 2.0, max(short / 2.0, 1e-6)
    )


def frame_along(footprint: shapely.Geometry, ax: float, ay: float) -> Frame:
    """The footprint's bounding frame with u along the unit vector (ax, ay)."""
    c = np.asarray(shapely.get_coordinates(footprint))
    pu = c[:, 0] * ax + c[:, 1] * ay
    pv = -c[:, 0] * ay + c[:, 1] * ax
    mu, mv = (pu.min() + pu.max()) / 2.0, (pv.min() + pv.max()) / 2.0
    cx, cy = mu * ax - mv * ay, mu * ay + mv * ax
    half_l = max(float(np.ptp(pu)) / 2.0, 1e-6)
    half_w = max(float(np.ptp(pv)) / 2.0, 1e-6)
    return Frame(float(cx), float(cy), float(ax), float(ay), half_l, half_w)
