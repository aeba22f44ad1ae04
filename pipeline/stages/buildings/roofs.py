"""LoD2 roof shapes fitted to the roof points of one footprint (pure functions, numpy; not wired into
the build yet).

`fit_roof(x, y, z, footprint, params)` works in the footprint's principal frame (the minimum rotated
rectangle: u along its long side, v across, origin at its centre, half sizes L >= W) and fits the
standard roof shapes of the AdV catalogue that a rectangle carries, each as a linear model in its heights
and slopes with at most one nonlinear parameter found by a grid search:

| shape | model z(u, v) | free parameters |
|---|---|---|
| flat (1000) | h | h |
| shed (2100) | c + a u + b v | c, a, b |
| gable (3100), ridge along u or v | r - s abs(v - v0) | r, s, ridge offset v0 |
| hip (3200), ridge along u | r - s max(abs(v), abs(u) - d) | r, s, ridge half-length d |
| pyramid (5000) | r - s max(abs(u) W / L, abs(v)) | r, s |
| multi (generic, 9999) | one plane per RANSAC segment | 3 per plane + 1 per segment |

Every fit is robust (iteratively trimmed least squares: residuals beyond 3 robust sigmas, at least
`inlier_m`, are left out) and scored with the same truncated squared loss rho(r) = min(r^2, c^2)
(c = `outlier_m`); the shape with the lowest penalised score BIC = n ln(mean rho + sigma0^2) + k ln n wins,
so a more flexible shape must explain clearly more of the points than a simpler one (not the best
residual alone). A footprint with fewer than `min_points` roof points or a winner with an RMSE (inliers)
above `max_rmse_m` keeps its LoD1 solid: `RoofFit.fallback` says why.

Per fit: the roof type, the planes (world coefficients z = a x + b y + c, slope in degrees, azimuth of
the downhill direction in degrees clockwise from north), eave and ridge height (model minimum and maximum
over the footprint's vertices and the rectangle), RMSE over inliers, point and inlier counts, the BIC of
every candidate. Known limits: half-hip, mansard and other catalogue shapes are not modelled yet (they
land in `multi` or the nearest standard shape); walls and solids are not built here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely

ROOF_TYPE_CODES = {
    "flat": "1000",
    "shed": "2100",
    "gable": "3100",
    "hip": "3200",
    "pyramid": "5000",
    "multi": "9999",
}


@dataclass(frozen=True)
class RoofParams:
    min_points: int = 20
    max_rmse_m: float = 0.5
    inlier_m: float = 0.15  # floor of the trimming threshold
    outlier_m: float = 0.5  # truncation of the scoring loss
    sigma0_m: float = 0.03  # noise floor in the score (perfect synthetic data would otherwise divide by 0)
    grid_steps: int = 21  # grid search of the ridge offset / hip ridge length
    ransac_iterations: int = 300
    ransac_tol_m: float = 0.12
    max_planes: int = 8
    min_plane_points: int = 12
    seed: int = 0  # RANSAC sampling is deterministic
    min_inlier_fraction: float = 0.7  # fewer points on the fitted roof: vegetation or clutter, not a roof


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
    roof_type: str  # flat | shed | gable | hip | pyramid | multi | "" (fallback)
    planes: list[Plane]
    eave_height: float
    ridge_height: float
    rmse: float
    n_points: int
    n_inliers: int
    scores: dict[str, float] = field(default_factory=dict)
    fallback: str = ""  # "" or the reason the LoD1 solid stays (too_few_points, too_noisy)

    @property
    def roof_type_code(self) -> str:
        return ROOF_TYPE_CODES.get(self.roof_type, "")


# ------------------------------------------------------------------------------------ frame


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

    def plane_to_world(self, au: float, bv: float, c: float) -> tuple[float, float, float]:
        """z = au u + bv v + c (local) -> z = a x + b y + c' (world)."""
        a = au * self.ux - bv * self.uy
        b = au * self.uy + bv * self.ux
        return a, b, c - a * self.cx - b * self.cy


def footprint_frame(footprint: shapely.Geometry) -> Frame:
    rect = shapely.minimum_rotated_rectangle(footprint)
    pts = np.asarray(rect.exterior.coords)[:4]
    e1, e2 = pts[1] - pts[0], pts[2] - pts[1]
    n1, n2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    axis, long_, short = (e1 / n1, n1, n2) if n1 >= n2 else (e2 / n2, n2, n1)
    if axis[0] < 0 or (axis[0] == 0 and axis[1] < 0):  # deterministic direction
        axis = -axis
    c = pts.mean(axis=0)
    return Frame(
        float(c[0]), float(c[1]), float(axis[0]), float(axis[1]), long_ / 2.0, max(short / 2.0, 1e-6)
    )


# ------------------------------------------------------------------------------------ fitting


@dataclass
class _Candidate:
    name: str
    k: int
    beta: np.ndarray
    design: object  # (u, v) -> X
    local_planes: list[tuple[float, float, float]]  # (au, bv, c) per plane, local frame
    resid: np.ndarray
    inliers: np.ndarray
    extra: float = 0.0


def _robust_lstsq(X: np.ndarray, z: np.ndarray, p: RoofParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.ones(len(z), dtype=bool)
    beta = np.zeros(X.shape[1])
    for _ in range(4):
        if w.sum() < X.shape[1] + 1:
            break
        beta, *_ = np.linalg.lstsq(X[w], z[w], rcond=None)
        r = z - X @ beta
        mad = float(np.median(np.abs(r[w] - np.median(r[w])))) * 1.4826
        new = np.abs(r) <= max(3.0 * mad, p.inlier_m)
        if np.array_equal(new, w):
            break
        w = new
    r = z - X @ beta
    return beta, r, w


def _score(r: np.ndarray, k: int, p: RoofParams) -> float:
    n = len(r)
    rho = np.minimum(r * r, p.outlier_m**2)
    return float(n * math.log(float(rho.mean()) + p.sigma0_m**2) + k * math.log(n))


def _grid_fit(name, k, u, v, z, p, values, make_design, planes_of) -> _Candidate:
    best: _Candidate | None = None
    for val in values:

        def design(uu, vv, val=val):
            return make_design(uu, vv, val)

        X = design(u, v)
        beta, r, w = _robust_lstsq(X, z, p)
        cost = float(np.minimum(r * r, p.outlier_m**2).sum())
        if best is None or cost < best.extra - 1e-12:
            best = _Candidate(name, k, beta, design, planes_of(beta, val), r, w, cost)
    assert best is not None
    return best


def _standard_candidates(
    u: np.ndarray, v: np.ndarray, z: np.ndarray, f: Frame, p: RoofParams
) -> list[_Candidate]:
    L, W = f.half_l, f.half_w
    out: list[_Candidate] = []

    def flat_d(uu, vv):
        return np.ones((len(uu), 1))

    b, r, w = _robust_lstsq(flat_d(u, v), z, p)
    out.append(_Candidate("flat", 1, b, flat_d, [(0.0, 0.0, float(b[0]))], r, w))

    def shed_d(uu, vv):
        return np.column_stack([np.ones_like(uu), uu, vv])

    b, r, w = _robust_lstsq(shed_d(u, v), z, p)
    out.append(_Candidate("shed", 3, b, shed_d, [(float(b[1]), float(b[2]), float(b[0]))], r, w))

    g = p.grid_steps
    # gable, symmetric (ridge on the axis: 2 parameters) and with the ridge offset to v = v0 (3)
    out.append(
        _grid_fit(
            "gable",
            2,
            u,
            v,
            z,
            p,
            [0.0],
            lambda uu, vv, v0: np.column_stack([np.ones_like(uu), -np.abs(vv - v0)]),
            lambda b, v0: [(0.0, -b[1], b[0] + b[1] * v0), (0.0, b[1], b[0] - b[1] * v0)],
        )
    )
    out.append(
        _grid_fit(
            "gable",
            3,
            u,
            v,
            z,
            p,
            np.linspace(-0.5 * W, 0.5 * W, g),
            lambda uu, vv, v0: np.column_stack([np.ones_like(uu), -np.abs(vv - v0)]),
            lambda b, v0: [(0.0, -b[1], b[0] + b[1] * v0), (0.0, b[1], b[0] - b[1] * v0)],
        )
    )
    out.append(
        _grid_fit(
            "gable",
            3,
            u,
            v,
            z,
            p,
            np.linspace(-0.5 * L, 0.5 * L, g),
            lambda uu, vv, u0: np.column_stack([np.ones_like(uu), -np.abs(uu - u0)]),
            lambda b, u0: [(-b[1], 0.0, b[0] + b[1] * u0), (b[1], 0.0, b[0] - b[1] * u0)],
        )
    )
    # hip: ridge along u of half-length d (d = L - W: equal slopes all round)
    out.append(
        _grid_fit(
            "hip",
            3,
            u,
            v,
            z,
            p,
            np.linspace(0.05 * L, 0.95 * L, g),
            lambda uu, vv, d: np.column_stack([np.ones_like(uu), -np.maximum(np.abs(vv), np.abs(uu) - d)]),
            lambda b, d: [
                (0.0, -b[1], b[0]),
                (0.0, b[1], b[0]),
                (-b[1], 0.0, b[0] + b[1] * d),
                (b[1], 0.0, b[0] + b[1] * d),
            ],
        )
    )

    def pyr_d(uu, vv):
        return np.column_stack([np.ones_like(uu), -np.maximum(np.abs(uu) * (W / L), np.abs(vv))])

    b, r, w = _robust_lstsq(pyr_d(u, v), z, p)
    q = W / L
    out.append(
        _Candidate(
            "pyramid",
            2,
            b,
            pyr_d,
            [(0.0, -b[1], b[0]), (0.0, b[1], b[0]), (-b[1] * q, 0.0, b[0]), (b[1] * q, 0.0, b[0])],
            r,
            w,
        )
    )
    return out


def ransac_planes(
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


def _neighbour_label(u: np.ndarray, v: np.ndarray, label: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For every point the segment of its nearest *other* segmented point in plan (brute force in
    chunks: memory chunk x segmented points). A point is thus predicted by the plane of the face it lies
    on, as its neighbours say, not by the plane it was fitted to: RANSAC planes that only pick noise
    layers out of one face (interleaved, not a region) gain nothing, real faces (regions) keep their
    points. Unsegmented points take the face they lie over."""
    seg = np.flatnonzero(label >= 0)
    out = np.empty(len(u), dtype=np.int64)
    su, sv = u[seg], v[seg]
    pos = np.full(len(u), -1, dtype=np.int64)
    pos[seg] = np.arange(seg.size)
    for k in range(0, len(u), chunk):
        du = u[k : k + chunk, None] - su[None, :]
        dv = v[k : k + chunk, None] - sv[None, :]
        d = du * du + dv * dv
        rows = np.arange(d.shape[0])
        own = pos[k : k + chunk]
        d[rows[own >= 0], own[own >= 0]] = np.inf
        out[k : k + chunk] = label[seg[np.argmin(d, axis=1)]]
    return out


def _multi_candidate(u: np.ndarray, v: np.ndarray, z: np.ndarray, p: RoofParams) -> _Candidate | None:
    planes, label = ransac_planes(u, v, z, p)
    if len(planes) < 2:
        return None
    P = np.array(planes)
    pred = P[:, 0:1] * u + P[:, 1:2] * v + P[:, 2:3]  # (m, n)
    r_all = z - pred
    pick = _neighbour_label(u, v, label)
    r = r_all[pick, np.arange(len(z))]
    w = np.abs(r) <= max(p.inlier_m, 3 * p.sigma0_m)
    return _Candidate(
        "multi", 4 * len(planes), P, None, [(float(a), float(b), float(c)) for a, b, c in planes], r, w
    )


def _world_planes(c: _Candidate, f: Frame, n_per_plane: list[int]) -> list[Plane]:
    out = []
    for (au, bv, cc), n in zip(c.local_planes, n_per_plane, strict=True):
        a, b, c0 = f.plane_to_world(float(au), float(bv), float(cc))
        g = math.hypot(a, b)
        slope = math.degrees(math.atan(g))
        az = (math.degrees(math.atan2(-a, -b)) + 360.0) % 360.0 if g > 1e-9 else float("nan")
        out.append(Plane(a, b, c0, slope, az, n))
    return out


def _plane_counts(c: _Candidate, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> list[int]:
    P = np.array(c.local_planes, dtype=np.float64).reshape(-1, 3)
    pred = P[:, 0:1] * u + P[:, 1:2] * v + P[:, 2:3]
    if c.name in ("gable", "hip", "pyramid"):  # convex roofs: the lower envelope of their planes
        pick = np.argmin(pred, axis=0)
    else:
        pick = np.argmin(np.abs(z - pred), axis=0)
    pick = pick[c.inliers]
    return [int(v) for v in np.bincount(pick, minlength=len(P))]


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
    f = footprint_frame(footprint)
    u, v = f.to_local(x, y)
    cands = _standard_candidates(u, v, z, f, p)
    multi = _multi_candidate(u, v, z, p)
    if multi is not None:
        cands.append(multi)
    scores: dict[str, float] = {}
    best: _Candidate | None = None
    best_s = math.inf
    for c in cands:
        s = _score(c.resid, c.k, p)
        if c.name not in scores or s < scores[c.name]:
            scores[c.name] = s
        if s < best_s - 1e-9:
            best, best_s = c, s
    assert best is not None
    rin = best.resid[best.inliers]
    rmse = float(np.sqrt(np.mean(rin * rin))) if rin.size else float("inf")
    # eave / ridge: the model over the footprint's vertices and the whole roof area
    fx, fy = np.asarray(shapely.get_coordinates(footprint)).T
    fu, fv = f.to_local(fx, fy)
    P = np.array(best.local_planes).reshape(-1, 3)
    if best.name == "multi":
        zz = P[:, 0:1] * u + P[:, 1:2] * v + P[:, 2:3]
        ridge = float(np.max(zz[np.argmin(np.abs(z - zz), axis=0), np.arange(n)]))
        eave = float(np.min(zz[np.argmin(np.abs(z - zz), axis=0), np.arange(n)]))
    else:
        model = best.design(np.concatenate([fu, u]), np.concatenate([fv, v])) @ best.beta  # type: ignore[operator]
        eave, ridge = float(model[: len(fu)].min()), float(model.max())
        if best.name in ("gable", "hip", "pyramid"):  # the ridge / apex lies inside the footprint
            ridge = max(ridge, float(best.beta[0]))
    fit = RoofFit(
        best.name,
        _world_planes(best, f, _plane_counts(best, u, v, z)),
        eave,
        ridge,
        rmse,
        n,
        int(best.inliers.sum()),
        scores,
    )
    if rmse > p.max_rmse_m or best.inliers.sum() < max(p.min_points, p.min_inlier_fraction * n):
        fit.fallback = "too_noisy"
    return fit
