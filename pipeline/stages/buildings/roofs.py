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
| pyramid (3500 Zeltdach) | r - s max(abs(u) W / L, abs(v)) | r, s |
| multi (generic, 5000 Mischform) | one plane per RANSAC segment | 3 per plane + 1 per segment |

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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import shapely

from pipeline.stages.buildings import _roof_kernels as K

# AdV roofType (dachform) codes: 1000 Flachdach, 2100 Pultdach, 3100 Satteldach, 3200 Walmdach,
# 3500 Zeltdach, 5000 Mischform (several shapes combined)
ROOF_TYPE_CODES = {
    "flat": "1000",
    "shed": "2100",
    "gable": "3100",
    "hip": "3200",
    "pyramid": "3500",
    "multi": "5000",
}


@dataclass(frozen=True)
class RoofParams:
    min_points: int = 20
    max_rmse_m: float = 0.5
    inlier_m: float = 0.15  # floor of the trimming threshold
    outlier_m: float = 0.5  # truncation of the scoring loss
    sigma0_m: float = 0.03  # noise floor in the score (perfect synthetic data would otherwise divide by 0)
    grid_steps: int = 21  # grid search of the ridge offset / hip ridge length
    grid_stride: int = 4  # numba: coarse screen of every 4th grid value, then the best one's neighbours
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
    max_fit_points: int = 1500  # larger point sets are fitted on a seeded random subset of this size
    min_inlier_fraction: float = 0.7  # fewer points on the fitted roof: vegetation or clutter, not a roof
    backend: str = "numba"  # "numba" (kernels in _roof_kernels) or "numpy" (the reference, tests)
    # a standard shape in the footprint's frame with this inlier share and inlier RMSE ends the search
    # (no RANSAC multi-plane candidate, no ridge frame); early_exit_inliers 1.0 = always search
    early_exit_inliers: float = 0.97
    early_exit_rmse_m: float = 0.08


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
            sx, sy = self.segment_xy[:, 0], self.segment_xy[:, 1]
            out = np.empty(x.size)
            xr, yr = x.ravel(), y.ravel()
            for k in range(0, x.size, 2048):
                d = (xr[k : k + 2048, None] - sx) ** 2 + (yr[k : k + 2048, None] - sy) ** 2
                lab = self.segment_label[np.argmin(d, axis=1)]
                out[k : k + 2048] = zz[lab, np.arange(k, k + lab.size)]
            return out.reshape(x.shape)
        if self.roof_type in ("gable", "hip", "pyramid"):  # convex: the lower envelope of the planes
            return zz.min(axis=0).reshape(x.shape)
        return zz[0].reshape(x.shape)


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
    labels: np.ndarray | None = None  # multi: the face of every point
    frame: Frame | None = None
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # (u, v) -> model z

    def __post_init__(self) -> None:
        if self.predict is None and callable(self.design):
            design, beta = self.design, self.beta
            self.predict = lambda uu, vv: design(uu, vv) @ beta


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
    """Screen the grid with plain least squares (truncated cost), fit the best value robustly, screen
    again on that fit's inliers (outliers no longer pull the choice) and fit the winner robustly."""
    c2 = p.outlier_m**2

    def screen(mask: np.ndarray) -> object:
        best_val, best_cost = None, math.inf
        for val in values:
            X = make_design(u, v, val)
            beta, *_ = np.linalg.lstsq(X[mask], z[mask], rcond=None)
            r = z - X @ beta
            cost = float(np.minimum(r * r, c2).sum())
            if cost < best_cost - 1e-12:
                best_val, best_cost = val, cost
        return best_val

    val = screen(np.ones(len(z), dtype=bool))
    _b, _r, w = _robust_lstsq(make_design(u, v, val), z, p)
    if len(values) > 1 and w.sum() > 3:
        val = screen(w)

    def design(uu, vv, val=val):
        return make_design(uu, vv, val)

    beta, r, w = _robust_lstsq(design(u, v), z, p)
    return _Candidate(name, k, beta, design, planes_of(beta, val), r, w)


def _standard_candidates_reference(
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

    # gable with the ridge along u (at v = v0) or along v (at u = u0): symmetric (ridge on the axis, one
    # slope: 2 parameters) or with the ridge offset and a slope per side (4 parameters)
    def sym_u(uu, vv, v0):
        return np.column_stack([np.ones_like(uu), -np.abs(vv - v0)])

    def sym_v(uu, vv, u0):
        return np.column_stack([np.ones_like(uu), -np.abs(uu - u0)])

    def asym_u(uu, vv, v0):
        return np.column_stack([np.ones_like(uu), -np.maximum(vv - v0, 0.0), -np.maximum(v0 - vv, 0.0)])

    def asym_v(uu, vv, u0):
        return np.column_stack([np.ones_like(uu), -np.maximum(uu - u0, 0.0), -np.maximum(u0 - uu, 0.0)])

    out.append(
        _grid_fit(
            "gable",
            2,
            u,
            v,
            z,
            p,
            [0.0],
            sym_u,
            lambda b, v0: [(0.0, -b[1], b[0] + b[1] * v0), (0.0, b[1], b[0] - b[1] * v0)],
        )
    )
    out.append(
        _grid_fit(
            "gable",
            2,
            u,
            v,
            z,
            p,
            [0.0],
            sym_v,
            lambda b, u0: [(-b[1], 0.0, b[0] + b[1] * u0), (b[1], 0.0, b[0] - b[1] * u0)],
        )
    )
    out.append(
        _grid_fit(
            "gable",
            4,
            u,
            v,
            z,
            p,
            np.linspace(-0.6 * W, 0.6 * W, g),
            asym_u,
            lambda b, v0: [(0.0, -b[1], b[0] + b[1] * v0), (0.0, b[2], b[0] - b[2] * v0)],
        )
    )
    out.append(
        _grid_fit(
            "gable",
            4,
            u,
            v,
            z,
            p,
            np.linspace(-0.6 * L, 0.6 * L, g),
            asym_v,
            lambda b, u0: [(-b[1], 0.0, b[0] + b[1] * u0), (b[2], 0.0, b[0] - b[2] * u0)],
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


def _kernel_planes(kind: int, b: np.ndarray, val: float) -> list[tuple[float, float, float]]:
    """(au, bv, c) per plane of a fitted shape (the same planes as the reference's `planes_of`)."""
    b0, b1, b2 = (float(t) for t in b)
    if kind == K.FLAT:
        return [(0.0, 0.0, b0)]
    if kind == K.SHED:
        return [(b1, b2, b0)]
    if kind == K.SYM_U:
        return [(0.0, -b1, b0 + b1 * val), (0.0, b1, b0 - b1 * val)]
    if kind == K.SYM_V:
        return [(-b1, 0.0, b0 + b1 * val), (b1, 0.0, b0 - b1 * val)]
    if kind == K.ASYM_U:
        return [(0.0, -b1, b0 + b1 * val), (0.0, b2, b0 - b2 * val)]
    if kind == K.ASYM_V:
        return [(-b1, 0.0, b0 + b1 * val), (b2, 0.0, b0 - b2 * val)]
    if kind == K.HIP:
        return [(0.0, -b1, b0), (0.0, b1, b0), (-b1, 0.0, b0 + b1 * val), (b1, 0.0, b0 + b1 * val)]
    q = val  # PYRAMID: val = W / L
    return [(0.0, -b1, b0), (0.0, b1, b0), (-b1 * q, 0.0, b0), (b1 * q, 0.0, b0)]


def _standard_candidates(
    u: np.ndarray, v: np.ndarray, z: np.ndarray, f: Frame, p: RoofParams
) -> list[_Candidate]:
    """The standard shapes of `_standard_candidates_reference`, fitted by the numba kernels."""
    L, W = f.half_l, f.half_w
    u = np.ascontiguousarray(u, dtype=np.float64)
    v = np.ascontiguousarray(v, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    g = p.grid_steps
    c2 = p.outlier_m**2
    # (name, BIC parameters, kind, values of the nonlinear parameter: one value = no grid search)
    specs = [
        ("flat", 1, K.FLAT, [0.0]),
        ("shed", 3, K.SHED, [0.0]),
        ("gable", 2, K.SYM_U, [0.0]),
        ("gable", 2, K.SYM_V, [0.0]),
        ("gable", 4, K.ASYM_U, np.linspace(-0.6 * W, 0.6 * W, g)),
        ("gable", 4, K.ASYM_V, np.linspace(-0.6 * L, 0.6 * L, g)),
        ("hip", 3, K.HIP, np.linspace(0.05 * L, 0.95 * L, g)),
        ("pyramid", 2, K.PYRAMID, [W / L]),
    ]
    out: list[_Candidate] = []
    for name, k, kind, values in specs:
        beta = np.zeros(3)
        r = np.empty(len(z))
        w = np.empty(len(z), dtype=bool)
        vals = np.asarray(values, dtype=np.float64)
        if len(vals) == 1:
            val = float(vals[0])
            K.robust_fit(u, v, z, kind, val, p.inlier_m, beta, r, w)
        else:
            val = float(K.grid_fit(u, v, z, kind, vals, p.inlier_m, c2, beta, r, w, p.grid_stride))

        def predict(uu, vv, kind=kind, val=val, beta=beta):
            return K.eval_shape(
                kind, val, beta, np.ascontiguousarray(uu, np.float64), np.ascontiguousarray(vv, np.float64)
            )

        out.append(_Candidate(name, k, beta, None, _kernel_planes(kind, beta, val), r, w, predict=predict))
    return out


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
    """For every point the segment of its nearest *other* segmented point in plan (numba kernel). A point is thus predicted by the plane of the face it lies
    on, as its neighbours say, not by the plane it was fitted to: RANSAC planes that only pick noise
    layers out of one face (interleaved, not a region) gain nothing, real faces (regions) keep their
    points. Unsegmented points take the face they lie over."""
    seg = np.flatnonzero(label >= 0)
    own = np.full(len(u), -1, dtype=np.int64)
    own[seg] = np.arange(seg.size)
    u = np.ascontiguousarray(u, dtype=np.float64)
    v = np.ascontiguousarray(v, dtype=np.float64)
    j = K.nearest_other(u, v, u[seg], v[seg], own)
    return label[seg[j]]


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
    local_planes = [(float(a), float(b), float(c)) for a, b, c in planes]
    return _Candidate("multi", 4 * len(planes), P, None, local_planes, r, w, labels=pick)


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


def _ridge_frame(multi: _Candidate, f: Frame, footprint: shapely.Geometry) -> Frame | None:
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
    elif c.labels is not None:
        pick = c.labels
    else:
        pick = np.argmin(np.abs(z - pred), axis=0)
    pick = pick[c.inliers]
    return [int(v) for v in np.bincount(pick, minlength=len(P))]


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


def shape_from_planes(planes: list[Plane], p: RoofParams) -> str:
    """The standard shape a set of segmented planes forms, judged on the planes that hold
    `dominant_share` of the points (dormers, chimneys and stray points aside): all nearly flat -> flat;
    one sloped plane -> shed; two with opposite azimuths -> gable; two opposite pairs at right angles ->
    hip; else multi."""
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
    if len(sloped) == 4:
        a = sloped[0]
        opp = [pl for pl in sloped[1:] if abs(_az_diff(a.azimuth_deg, pl.azimuth_deg) - 180.0) < tol]
        if len(opp) == 1:
            c, d = [pl for pl in sloped[1:] if pl is not opp[0]]
            if (
                abs(_az_diff(c.azimuth_deg, d.azimuth_deg) - 180.0) < tol
                and abs(_az_diff(a.azimuth_deg, c.azimuth_deg) - 90.0) < tol
            ):
                return "hip"
    return "multi"


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
    standard = _standard_candidates if p.backend == "numba" else _standard_candidates_reference
    cands: list[_Candidate] = []
    for c in standard(u, v, z, f, p):
        c.frame = f
        cands.append(c)
    # early exit: a standard shape in the footprint's frame that already explains nearly every point
    # (inlier share and RMSE) leaves nothing for a multi-plane roof or a ridge frame to gain
    first = min(cands, key=lambda c: _score(c.resid, c.k, p))
    rin = first.resid[first.inliers]
    done = (
        p.early_exit_inliers < 1.0
        and first.inliers.mean() >= p.early_exit_inliers
        and rin.size > 0
        and float(np.sqrt(np.mean(rin * rin))) <= p.early_exit_rmse_m
    )
    multi = None if done else _multi_candidate(u, v, z, p)
    if multi is not None:
        multi.frame = f
        g = _ridge_frame(multi, f, footprint)
        if g is not None:
            uu, vv = g.to_local(x, y)
            for c in standard(uu, vv, z, g, p):
                c.frame = g
                cands.append(c)
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
        if best.name in ("gable", "hip", "pyramid"):  # the ridge / apex lies inside the footprint
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
        fit.roof_type = shape_from_planes(fit.planes, p)
        if fit.roof_type in ("gable", "hip"):
            # a gable or hip roof is the lower envelope of its planes; a cross gable (an L-shaped house)
            # has the same plane directions but is not: it stays multi
            W = np.array([(pl.a, pl.b, pl.c) for pl in dominant_planes(fit.planes, p)])
            env = (W[:, 0:1] * x + W[:, 1:2] * y + W[:, 2:3]).min(axis=0)
            if np.mean(np.abs(z - env)[best.inliers] > p.ransac_tol_m) > 1.0 - p.dominant_share:
                fit.roof_type = "multi"
        seg = best.inliers
        fit.segment_xy = np.column_stack([x[seg], y[seg]])
        fit.segment_label = best.labels[seg]  # type: ignore[index]
    if rmse > p.max_rmse_m or best.inliers.sum() < max(p.min_points, p.min_inlier_fraction * n):
        # (n_inliers counts the fitted subset when the points were subsampled)
        fit.fallback = "too_noisy"
    return fit
