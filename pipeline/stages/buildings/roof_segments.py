"""The generic multi-plane roof: seeded sequential RANSAC planes (numba scoring, numpy reference), the
multi-plane candidate, the ridge frame the planes show, and the name a set of planes earns (a
multi-plane fit whose dominant planes form a catalogue shape is named after it)."""

from __future__ import annotations

import math

import numpy as np
import shapely

from pipeline.stages.buildings import _roof_kernels as K
from pipeline.stages.buildings.roof_model import Frame, Plane, RoofParams, frame_along
from pipeline.stages.buildings.roof_shapes import Candidate


def ransac_planes_reference(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, p: RoofParams
) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequential RANSAC: planes (a, b, c) with z = a x + b y + c (local coordinates in, same out) and the
    plane index of every point (-1: none). Deterministic (seeded). Each plane is refitted by least
    squares on its inliers."""
    rng = np.random.default_rng(p.seed)
    label = np.full(len(z), -1, dtype=np.int64)
    planes: list[np.ndarray] = []
    for _ in range(p.max_planes):
        free = np.flatnonzero(label < 0)
        if free.size < p.min_plane_points:
            break
        tri = free[rng.integers(0, free.size, size=(p.ransac_iterations, 3))]
        A = np.stack([x[tri], y[tri], np.ones(tri.shape)], axis=-1)  # (it, 3, 3)
        det = np.linalg.det(A)
        ok = np.abs(det) > 1e-6
        if not ok.any():
            break
        coef = np.linalg.solve(A[ok], z[tri][ok][..., None])[..., 0]  # (m, 3)
        steep = np.hypot(coef[:, 0], coef[:, 1]) < 3.0  # roofs steeper than ~72 degrees are walls/noise
        coef = coef[steep]
        if not len(coef):
            break
        pred = coef[:, 0:1] * x[free] + coef[:, 1:2] * y[free] + coef[:, 2:3]
        counts = (np.abs(pred - z[free]) < p.ransac_tol_m).sum(axis=1)
        best = int(np.argmax(counts))
        if counts[best] < p.min_plane_points:
            break
        inl = free[np.abs(pred[best] - z[free]) < p.ransac_tol_m]
        X = np.column_stack([x[inl], y[inl], np.ones(inl.size)])
        c, *_ = np.linalg.lstsq(X, z[inl], rcond=None)
        inl = free[np.abs(c[0] * x[free] + c[1] * y[free] + c[2] - z[free]) < p.ransac_tol_m]
        if inl.size < p.min_plane_points:
            break
        label[inl] = len(planes)
        planes.append(c)
    return planes, label


def ransac_planes(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, p: RoofParams
) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequential RANSAC (numba scoring, `ransac_planes_reference` is the numpy twin; both draw the
    same seeded triples): planes (a, b, c) with z = a x + b y + c and the plane index of every point
    (-1: none). Each plane is refitted by least squares on its inliers."""
    if p.backend != "numba":
        return ransac_planes_reference(x, y, z, p)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    rng = np.random.default_rng(p.seed)
    label = np.full(len(z), -1, dtype=np.int64)
    planes: list[np.ndarray] = []
    for _ in range(p.max_planes):
        free = np.flatnonzero(label < 0)
        if free.size < p.min_plane_points:
            break
        tri = rng.integers(0, free.size, size=(p.ransac_iterations, 3))
        a, b, c, count = K.ransac_best(
            x, y, z, free, tri, p.ransac_tol_m, 3.0, p.ransac_subset, p.ransac_keep
        )
        if count < p.min_plane_points:
            break
        inl = free[np.abs(a * x[free] + b * y[free] + c - z[free]) < p.ransac_tol_m]
        X = np.column_stack([x[inl], y[inl], np.ones(inl.size)])
        coef, *_ = np.linalg.lstsq(X, z[inl], rcond=None)
        inl = free[np.abs(coef[0] * x[free] + coef[1] * y[free] + coef[2] - z[free]) < p.ransac_tol_m]
        if inl.size < p.min_plane_points:
            break
        label[inl] = len(planes)
        planes.append(coef)
    return planes, label


def _neighbour_label(u: np.ndarray, v: np.ndarray, label: np.ndarray) -> np.ndarray:
    """For every point the segment of its nearest *other* segmented point in plan (numba kernel). A
    point is thus predicted by the plane of the face it lies on, as its neighbours say, not by the plane
    it was fitted to: RANSAC planes that only pick noise layers out of one face (interleaved, not a
    region) gain nothing, real faces (regions) keep their points. Unsegmented points take the face they
    lie over."""
    seg = np.flatnonzero(label >= 0)
    own = np.full(len(u), -1, dtype=np.int64)
    own[seg] = np.arange(seg.size)
    u = np.ascontiguousarray(u, dtype=np.float64)
    v = np.ascontiguousarray(v, dtype=np.float64)
    j = K.nearest_other(u, v, u[seg], v[seg], own)
    return label[seg[j]]


def multi_candidate(u: np.ndarray, v: np.ndarray, z: np.ndarray, p: RoofParams) -> Candidate | None:
    planes, label = ransac_planes(u, v, z, p)
    if len(planes) < 2:
        return None
    P = np.array(planes)
    pred = P[:, 0:1] * u + P[:, 1:2] * v + P[:, 2:3]  # (m, n)
    r_all = z - pred
    pick = _neighbour_label(u, v, label)
    r = r_all[pick, np.arange(len(z))]
    w = np.abs(r) <= max(p.inlier_m, 3 * p.sigma0_m)
    local_planes = [(float(a), float(b), float(c)) for a, b, c in planes]
    return Candidate("multi", 4 * len(planes), P, local_planes, r, w, labels=pick)


def ridge_frame(multi: Candidate, f: Frame, footprint: shapely.Geometry) -> Frame | None:
    """A frame whose u axis follows the ridge the data show: perpendicular to the gradient of the
    largest sloped RANSAC plane (footprints are rarely exact rectangles, ridges not always parallel to
    the minimum rectangle). None when no plane slopes more than ~5 degrees or the axes already agree."""
    assert multi.labels is not None
    counts = np.bincount(multi.labels, minlength=len(multi.local_planes))
    for k in np.argsort(-counts, kind="stable"):
        au, bv, c = multi.local_planes[int(k)]
        a, b, _c = f.plane_to_world(au, bv, c)
        g = math.hypot(a, b)
        if g < 0.09:
            continue
        ax, ay = -b / g, a / g  # ridge direction: perpendicular to the gradient
        if ax < 0 or (ax == 0 and ay < 0):
            ax, ay = -ax, -ay
        cross = abs(ax * f.uy - ay * f.ux)
        if cross < math.sin(math.radians(0.5)) or cross > math.cos(math.radians(0.5)):
            return None  # parallel or perpendicular to the rectangle: the rectangle frame covers it
        return frame_along(footprint, ax, ay)
    return None


def _az_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def dominant_planes(planes: list[Plane], p: RoofParams) -> list[Plane]:
    """The largest planes that together hold `dominant_share` of the segmented points."""
    total = sum(pl.n_points for pl in planes)
    dom: list[Plane] = []
    acc = 0
    for pl in sorted(planes, key=lambda pl: -pl.n_points):
        if total == 0 or acc >= p.dominant_share * total:
            break
        dom.append(pl)
        acc += pl.n_points
    return dom


def shape_from_planes(
    planes: list[Plane], p: RoofParams, low: list[float] | None = None, top: float = math.nan
) -> str:
    """The catalogue shape a set of segmented planes forms, judged on the planes that hold
    `dominant_share` of the points (dormers, chimneys and stray points aside): all nearly flat -> flat;
    one sloped plane -> shed; two with opposite azimuths -> gable; two opposite pairs at right angles ->
    hip, or half_hip when the smaller pair's lowest points (`low`: per plane its lowest inlier height)
    stay clearly above the larger pair's (a share of the rise to `top`, the ridge); two pairs with the same two opposite azimuths, the lower
    (by `low`) steeper -> mansard; else multi."""
    dom = dominant_planes(planes, p)
    if not dom:
        return "multi"
    if all(pl.slope_deg < p.flat_deg for pl in dom):
        return "flat"
    sloped = [pl for pl in dom if pl.slope_deg >= p.flat_deg]
    if len(dom) != len(sloped):
        return "multi"
    tol = p.azimuth_tol_deg
    if len(sloped) == 1:
        return "shed"
    if len(sloped) == 2:
        return (
            "gable" if abs(_az_diff(sloped[0].azimuth_deg, sloped[1].azimuth_deg) - 180.0) < tol else "multi"
        )
    if len(sloped) != 4:
        return "multi"
    a = sloped[0]
    opp = [pl for pl in sloped[1:] if abs(_az_diff(a.azimuth_deg, pl.azimuth_deg) - 180.0) < tol]
    same = [pl for pl in sloped[1:] if _az_diff(a.azimuth_deg, pl.azimuth_deg) < tol]
    if len(opp) == 1 and not same:
        c, d = [pl for pl in sloped[1:] if pl is not opp[0]]
        if not (
            abs(_az_diff(c.azimuth_deg, d.azimuth_deg) - 180.0) < tol
            and abs(_az_diff(a.azimuth_deg, c.azimuth_deg) - 90.0) < tol
        ):
            return "multi"
        if low is None or not math.isfinite(top):
            return "hip"
        ids = {id(pl): k for k, pl in enumerate(planes)}
        main_low = min(low[ids[id(a)]], low[ids[id(opp[0])]])
        end_low = min(low[ids[id(c)]], low[ids[id(d)]])
        rise = max(top - main_low, 1e-6)
        return "half_hip" if end_low - main_low > p.half_hip_min_drop_share * rise else "hip"
    if len(opp) == 2 and len(same) == 1 and low is not None:
        # mansard: per side an upper (shallow) and a lower (steep) plane
        ids = {id(pl): k for k, pl in enumerate(planes)}
        for side in ([a, same[0]], opp):
            lo, hi = sorted(side, key=lambda pl: low[ids[id(pl)]])
            if lo.slope_deg - hi.slope_deg < p.mansard_min_break_deg:
                return "multi"
        return "mansard"
    return "multi"
