"""LoD2 roof shapes fitted to the roof points of one footprint (pure functions, numpy + numba).

`fit_roof(x, y, z, footprint, params)` works in the footprint's principal frame (the minimum rotated
rectangle: u along its long side, v across, origin at its centre, half sizes L >= W) and fits the
catalogue shapes of the AdV (`roof_model`: flat 1000, shed 2100, gable 3100, hip 3200, half_hip 3300,
mansard 3400, pyramid 3500), each a linear model in its heights and slopes with at most two nonlinear
parameters found by a grid search (`roof_shapes`), and a generic multi-plane roof (5000 Mischform:
one plane per seeded RANSAC segment, `roof_segments`).

Every fit is robust (iteratively trimmed least squares: residuals beyond 3 robust sigmas, at least
`inlier_m`, are left out) and scored with the same truncated squared loss rho(r) = min(r^2, c^2)
(c = `outlier_m`); the shape with the lowest penalised score BIC = n ln(mean rho + sigma0^2) + k ln n wins,
so a more flexible shape must explain clearly more of the points than a simpler one (not the best
residual alone). A multi-plane winner whose dominant planes form a catalogue shape is named after it
(`roof_segments.shape_from_planes`). A footprint with fewer than `min_points` roof points or a winner
with an RMSE (inliers) above `max_rmse_m` keeps its LoD1 solid: `RoofFit.fallback` says why.

Per fit: the roof type, the planes (world coefficients z = a x + b y + c, slope in degrees, azimuth of
the downhill direction in degrees clockwise from north), eave and ridge height (model minimum and maximum
over the footprint's vertices and the rectangle), RMSE over inliers, point and inlier counts, the BIC of
every candidate. Walls and solids are built in `solids`.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from pipeline.stages.buildings.roof_model import (
    ENVELOPE_TYPES,
    ROOF_TYPE_CODES,
    Frame,
    Plane,
    RoofFit,
    RoofParams,
    footprint_frame,
    frame_along,
)
from pipeline.stages.buildings.roof_segments import (
    dominant_planes,
    multi_candidate,
    ransac_planes,
    ridge_frame,
    shape_from_planes,
)
from pipeline.stages.buildings.roof_shapes import PLANES, Candidate, standard_candidates

__all__ = [
    "ROOF_TYPE_CODES",
    "Frame",
    "Plane",
    "RoofFit",
    "RoofParams",
    "fit_roof",
    "footprint_frame",
    "frame_along",
    "ransac_planes",
]


def _world_planes(c: Candidate, f: Frame, n_per_plane: list[int]) -> list[Plane]:
    out = []
    for (au, bv, cc), n in zip(c.local_planes, n_per_plane, strict=True):
        a, b, c0 = f.plane_to_world(float(au), float(bv), float(cc))
        g = math.hypot(a, b)
        slope = math.degrees(math.atan(g))
        az = (math.degrees(math.atan2(-a, -b)) + 360.0) % 360.0 if g > 1e-9 else float("nan")
        out.append(Plane(a, b, c0, slope, az, n))
    return out


def _plane_counts(c: Candidate, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> list[int]:
    P = np.array(c.local_planes, dtype=np.float64).reshape(-1, 3)
    pred = P[:, 0:1] * u + P[:, 1:2] * v + P[:, 2:3]
    if c.name in ENVELOPE_TYPES:  # convex roofs: the lower envelope of their planes
        pick = np.argmin(pred, axis=0)
    elif c.labels is not None:
        pick = c.labels
    else:
        pick = np.argmin(np.abs(z - pred), axis=0)
    pick = pick[c.inliers]
    return [int(v) for v in np.bincount(pick, minlength=len(P))]


def _explains_all(c: Candidate, p: RoofParams, share: float) -> bool:
    rin = c.resid[c.inliers]
    return (
        share < 1.0
        and c.inliers.mean() >= share
        and rin.size > 0
        and float(np.sqrt(np.mean(rin * rin))) <= p.early_exit_rmse_m
    )


def fit_roof(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, footprint: shapely.Geometry, params: RoofParams | None = None
) -> RoofFit:
    """The best standard roof shape (or a multi-plane roof) for one footprint's roof points."""
    p = params or RoofParams()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if n < p.min_points:
        return RoofFit("", [], float("nan"), float("nan"), float("nan"), n, 0, {}, "too_few_points")
    n_all = n
    if n > p.max_fit_points:
        keep = np.sort(np.random.default_rng(p.seed).choice(n, p.max_fit_points, replace=False))
        x, y, z = x[keep], y[keep], z[keep]
        n = len(z)
    f = footprint_frame(footprint)
    u, v = f.to_local(x, y)
    # early exit: a shape in the footprint's frame that already explains nearly every point (inlier
    # share and RMSE) leaves nothing for more flexible shapes to gain: the simple shapes (flat, shed,
    # symmetric gable, hip, pyramid) first, then the others (offset gable, half-hip, mansard), then the
    # multi-plane roof and the ridge frame. Within the simple shapes the hip's grid search is skipped
    # when a plane (flat or shed) beats the gables and the pyramid and explains every point: a hip lies
    # between a gable and a pyramid, and neither improved on the plane.
    cands: list[Candidate] = []
    done = False
    for group in ("simple_single", "simple_grid", "complex"):
        if done:
            break
        for c in standard_candidates(u, v, z, f, p, group):
            c.frame = f
            cands.append(c)
        if group != "complex":
            cands.sort(key=lambda c: c.rank)  # the simple shapes in catalogue order (ties: the first)
        share = p.early_exit_inliers if group == "complex" else p.early_exit_simple_inliers
        lead = min(cands, key=lambda c: c.score(p))
        done = _explains_all(lead, p, share) and (group != "simple_single" or lead.name in PLANES)
    multi = None if done else multi_candidate(u, v, z, p)
    if multi is not None:
        multi.frame = f
        g = ridge_frame(multi, f, footprint)
        if g is not None:
            uu, vv = g.to_local(x, y)
            for c in standard_candidates(uu, vv, z, g, p):
                c.frame = g
                cands.append(c)
        cands.append(multi)
    scores: dict[str, float] = {}
    best: Candidate | None = None
    best_s = math.inf
    for c in cands:
        s = c.score(p)
        if c.name not in scores or s < scores[c.name]:
            scores[c.name] = s
        if s < best_s - 1e-9:
            best, best_s = c, s
    assert best is not None
    rin = best.resid[best.inliers]
    rmse = float(np.sqrt(np.mean(rin * rin))) if rin.size else float("inf")
    # eave / ridge: the model over the footprint's vertices and the whole roof area
    bf = best.frame or f
    bu, bv = bf.to_local(x, y)
    fx, fy = np.asarray(shapely.get_coordinates(footprint)).T
    fu, fv = bf.to_local(fx, fy)
    P = np.array(best.local_planes).reshape(-1, 3)
    if best.name == "multi":
        zz = P[:, 0:1] * bu + P[:, 1:2] * bv + P[:, 2:3]
        own = zz[best.labels, np.arange(n)][best.inliers]
        ridge, eave = float(own.max()), float(own.min())
    else:
        assert best.predict is not None
        model = best.predict(np.concatenate([fu, bu]), np.concatenate([fv, bv]))
        eave, ridge = float(model[: len(fu)].min()), float(model.max())
        if best.name in ENVELOPE_TYPES:  # the ridge / apex lies inside the footprint
            ridge = max(ridge, float(best.beta[0]))
    fit = RoofFit(
        best.name,
        _world_planes(best, bf, _plane_counts(best, bu, bv, z)),
        eave,
        ridge,
        rmse,
        n_all,
        int(best.inliers.sum()),
        scores,
    )
    if best.name == "multi":
        assert best.labels is not None
        low = []  # per plane the lowest of its inlier points (2nd percentile: noise aside)
        for k in range(len(fit.planes)):
            zk = z[best.inliers & (best.labels == k)]
            low.append(float(np.percentile(zk, 2)) if zk.size else math.inf)
        fit.roof_type = shape_from_planes(fit.planes, p, low, ridge)
        if fit.roof_type in ENVELOPE_TYPES:
            # these roofs are the lower envelope of their planes; a cross gable (an L-shaped house)
            # has the same plane directions as a gable or hip but is not: it stays multi
            W = np.array([(pl.a, pl.b, pl.c) for pl in dominant_planes(fit.planes, p)])
            env = (W[:, 0:1] * x + W[:, 1:2] * y + W[:, 2:3]).min(axis=0)
            if np.mean(np.abs(z - env)[best.inliers] > p.ransac_tol_m) > 1.0 - p.dominant_share:
                fit.roof_type = "multi"
        seg = best.inliers
        fit.segment_xy = np.column_stack([x[seg], y[seg]])
        fit.segment_label = best.labels[seg]
    if rmse > p.max_rmse_m or best.inliers.sum() < max(p.min_points, p.min_inlier_fraction * n):
        # (n_inliers counts the fitted subset when the points were subsampled)
        fit.fallback = "too_noisy"
    return fit
