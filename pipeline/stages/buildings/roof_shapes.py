"""The standard roof shapes as linear models in a footprint's frame, fitted robustly (numba kernels in
`_roof_kernels`, numpy reference here) and scored by a penalised (BIC-like) truncated loss.

In the frame (u along the long side, v across, origin at the centre, half sizes L >= W):

| candidate | model z(u, v) | BIC parameters | grid |
|---|---|---|---|
| flat | h | 1 | - |
| shed | c + a u + b v | 3 | - |
| gable, ridge on an axis (u or v) | r - s abs(v) | 2 | - |
| gable, ridge offset, a slope per side | r - s1 max(v - v0, 0) - s2 max(v0 - v, 0) | 4 | v0 |
| hip (ridge along u) | r - s max(abs(v), W (abs(u) - d) / (L - d)) | 3 | d |
| half_hip | r - s max(abs(v), f W (abs(u) - d) / (L - d)) | 4 | d, f |
| pyramid | r - s max(abs(v), abs(u) W / L) | 2 | - |
| mansard (ridge along u) | r - s1 abs(v) - s2 max(abs(v) - b, 0) | 4 | b |

d: half length of the ridge (the hip planes reach the eave at the ends, u = +-L); f: the share of the
rise the half-hip's hip planes drop (they stop f (r - eave) below the ridge at the ends); b: distance
of the mansard's slope break from the ridge. Convex shapes with a negative slope (a valley, or a
mansard whose lower planes are flatter than the upper ones) are not candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.stages.buildings import _roof_kernels as K
from pipeline.stages.buildings.roof_model import Frame, RoofParams


@dataclass
class Candidate:
    name: str
    k: int
    beta: np.ndarray
    local_planes: list[tuple[float, float, float]]  # (au, bv, c) per plane, local frame
    resid: np.ndarray
    inliers: np.ndarray
    labels: np.ndarray | None = None  # multi: the face of every point
    frame: Frame | None = None
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # (u, v) -> model z
    rank: int = 0  # catalogue order of the standard shapes (`shape_specs`; ties go to the first)
    bic: float = math.nan  # `score` of the candidate, once computed (`Candidate.score`)

    def score(self, p: RoofParams) -> float:
        """`score(resid, k, p)`, computed once."""
        if math.isnan(self.bic):
            self.bic = score(self.resid, self.k, p)
        return self.bic


def score(r: np.ndarray, k: int, p: RoofParams) -> float:
    """BIC over a truncated squared loss: n ln(mean min(r^2, c^2) + sigma0^2) + k ln n."""
    n = len(r)
    rho = np.minimum(r * r, p.outlier_m**2)
    return float(n * math.log(float(rho.mean()) + p.sigma0_m**2) + k * math.log(n))


def design(kind: int, u: np.ndarray, v: np.ndarray, val: float, val2: float) -> np.ndarray:
    """The design matrix of a shape kind (numpy twin of `_roof_kernels._cols`)."""
    one = np.ones_like(u)
    if kind == K.FLAT:
        return one[:, None]
    if kind == K.SHED:
        return np.column_stack([one, u, v])
    if kind == K.SYM_U:
        return np.column_stack([one, -np.abs(v - val)])
    if kind == K.SYM_V:
        return np.column_stack([one, -np.abs(u - val)])
    if kind == K.ASYM_U:
        return np.column_stack([one, -np.maximum(v - val, 0.0), -np.maximum(val - v, 0.0)])
    if kind == K.ASYM_V:
        return np.column_stack([one, -np.maximum(u - val, 0.0), -np.maximum(val - u, 0.0)])
    if kind == K.HIPEND:
        return np.column_stack([one, -np.maximum(np.abs(v), val2 * (np.abs(u) - val))])
    if kind == K.MANSARD:
        return np.column_stack([one, -np.abs(v), -np.maximum(np.abs(v) - val, 0.0)])
    raise ValueError(f"unknown shape kind {kind}")


def robust_lstsq(X: np.ndarray, z: np.ndarray, p: RoofParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iteratively trimmed least squares (numpy twin of `_roof_kernels.robust_fit`)."""
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


def grid_fit(
    kind: int, u: np.ndarray, v: np.ndarray, z: np.ndarray, p: RoofParams, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Screen the grid rows (val, val2) with plain least squares (truncated cost), fit the best robustly,
    screen again on that fit's inliers (outliers no longer pull the choice) and fit the winner robustly
    (numpy twin of `_roof_kernels.grid_fit` with stride 1). Returns beta (3,), residuals, inliers, row."""
    c2 = p.outlier_m**2

    def screen(mask: np.ndarray) -> int:
        best_t, best_cost = 0, math.inf
        for t, (val, val2) in enumerate(values):
            X = design(kind, u, v, val, val2)
            beta, *_ = np.linalg.lstsq(X[mask], z[mask], rcond=None)
            r = z - X @ beta
            cost = float(np.minimum(r * r, c2).sum())
            if cost < best_cost - 1e-12:
                best_t, best_cost = t, cost
        return best_t

    t = screen(np.ones(len(z), dtype=bool))
    _b, _r, w = robust_lstsq(design(kind, u, v, *values[t]), z, p)
    if len(values) > 1 and w.sum() > 3:
        t = screen(w)
    beta, r, w = robust_lstsq(design(kind, u, v, *values[t]), z, p)
    return np.concatenate([beta, np.zeros(3 - beta.size)]), r, w, t


def kernel_planes(kind: int, b: np.ndarray, val: float, val2: float) -> list[tuple[float, float, float]]:
    """(au, bv, c) per plane of a fitted shape."""
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
    if kind == K.HIPEND:
        q = b1 * val2
        return [(0.0, -b1, b0), (0.0, b1, b0), (-q, 0.0, b0 + q * val), (q, 0.0, b0 + q * val)]
    if kind == K.MANSARD:
        s = b1 + b2
        return [(0.0, -b1, b0), (0.0, b1, b0), (0.0, -s, b0 + b2 * val), (0.0, s, b0 + b2 * val)]
    raise ValueError(f"unknown shape kind {kind}")


def _convex(kind: int, b: np.ndarray) -> bool:
    """The fitted shape is what its name says: slopes falling away from the ridge (a lower envelope)."""
    if kind in (K.SYM_U, K.SYM_V, K.HIPEND):
        return b[1] > 0
    if kind in (K.ASYM_U, K.ASYM_V):
        return b[1] > 0 and b[2] > 0
    if kind == K.MANSARD:
        return b[1] >= 0 and b[2] > 0
    return True


def refine_rows(values: np.ndarray, t: int, block: int, steps: int = 5) -> np.ndarray:
    """A finer grid around row t of a grid whose rows run in blocks of `block` (the inner parameter):
    between t's neighbours in the block (and across blocks when there are several), steps x steps rows
    (linear interpolation of both values); unique rows in lexicographic order."""
    m = len(values)
    i, j = t % block, t // block
    nb = m // block
    vt = values[t]
    lo_i, hi_i = values[t - 1] if i > 0 else vt, values[t + 1] if i < block - 1 else vt
    lo_j = values[t - block] if j > 0 else vt
    hi_j = values[t + block] if j < nb - 1 else vt
    ks = np.linspace(-1.0, 1.0, steps)
    kb = ks if nb > 1 else np.zeros(1)
    da = np.where(ks[:, None] >= 0, (hi_i - vt) * ks[:, None], (vt - lo_i) * ks[:, None])  # (steps, 2)
    db = np.where(kb[:, None] >= 0, (hi_j - vt) * kb[:, None], (vt - lo_j) * kb[:, None])
    rows = ((vt + da[None, :, :]) + db[:, None, :]).reshape(-1, 2)
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    rows = rows[order]
    keep = np.ones(len(rows), dtype=bool)
    keep[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    return np.ascontiguousarray(rows[keep])


def shape_specs(
    f: Frame, p: RoofParams, group: str = "all"
) -> list[tuple[int, str, int, int, np.ndarray, int]]:
    """(rank, name, BIC parameters, kind, grid rows (val, val2), rows per block of the inner parameter)
    of the standard candidates of `group` (see `_in_group`) in frame f; rank: the catalogue order."""
    L, W = f.half_l, f.half_w
    g = p.grid_steps
    zero = np.zeros((1, 2))

    def rows(vals: object) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(vals, dtype=np.float64).reshape(-1, 2))

    def hip() -> np.ndarray:
        d_hip = np.linspace(0.05 * L, 0.95 * L, g)
        return np.ascontiguousarray(np.column_stack([d_hip, W / (L - d_hip)]))

    def half_hip() -> np.ndarray:
        d_half = np.linspace(0.3 * L, 0.95 * L, g)
        return rows([(d, fr * W / (L - d)) for fr in p.half_hip_drops for d in d_half])

    specs: list[tuple[str, int, int, Callable[[], np.ndarray], int]] = [
        ("flat", 1, K.FLAT, lambda: zero, 1),
        ("shed", 3, K.SHED, lambda: zero, 1),
        ("gable", 2, K.SYM_U, lambda: zero, 1),
        ("gable", 2, K.SYM_V, lambda: zero, 1),
        ("gable", 4, K.ASYM_U, lambda: rows([(v0, 0.0) for v0 in np.linspace(-0.6 * W, 0.6 * W, g)]), g),
        ("gable", 4, K.ASYM_V, lambda: rows([(u0, 0.0) for u0 in np.linspace(-0.6 * L, 0.6 * L, g)]), g),
        ("hip", 3, K.HIPEND, hip, g),
        ("half_hip", 4, K.HIPEND, half_hip, g),
        ("pyramid", 2, K.HIPEND, lambda: rows([(0.0, W / L)]), 1),
        ("mansard", 4, K.MANSARD, lambda: rows([(b, 0.0) for b in np.linspace(0.15 * W, 0.85 * W, g)]), g),
    ]
    return [
        (i, n, k, kind, make(), b) for i, (n, k, kind, make, b) in enumerate(specs) if _in_group(n, k, group)
    ]


SIMPLE = frozenset({"flat", "shed", "gable2", "hip", "pyramid"})  # name (+ parameters for gables)
PLANES = frozenset({"flat", "shed"})


def _in_group(name: str, k: int, group: str) -> bool:
    """group: "all", "simple" (flat, shed, symmetric gable, hip, pyramid), "complex" (offset gable,
    half-hip, mansard), or the simple shapes split by cost: "simple_single" (one robust fit each:
    flat, shed, symmetric gable, pyramid) and "simple_grid" (hip: a grid search)."""
    simple = (f"{name}{k}" if name == "gable" else name) in SIMPLE
    if group == "simple":
        return simple
    if group == "complex":
        return not simple
    if group == "simple_single":
        return simple and name != "hip"
    if group == "simple_grid":
        return name == "hip"
    if group == "all":
        return True
    raise ValueError(f"unknown candidate group {group!r}")


def standard_candidates(
    u: np.ndarray, v: np.ndarray, z: np.ndarray, f: Frame, p: RoofParams, group: str = "all"
) -> list[Candidate]:
    """The standard shapes fitted in frame f: numba kernels, or the numpy reference with
    `p.backend == "numpy"` (which screens the whole grid). group: see `_in_group`."""
    u = np.ascontiguousarray(u, dtype=np.float64)
    v = np.ascontiguousarray(v, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    c2 = p.outlier_m**2
    out: list[Candidate] = []
    for rank, name, k, kind, grid, block in shape_specs(f, p, group):
        values = grid
        if p.backend == "numba":
            beta = np.zeros(3)
            r = np.empty(len(z))
            w = np.empty(len(z), dtype=bool)
            if len(values) == 1:
                t = 0
                K.robust_fit(u, v, z, kind, values[0, 0], values[0, 1], p.inlier_m, beta, r, w)
            else:
                t = int(K.grid_fit(u, v, z, kind, values, p.inlier_m, c2, beta, r, w, p.grid_stride))
                values = refine_rows(grid, t, block)
                t = int(K.grid_fit(u, v, z, kind, values, p.inlier_m, c2, beta, r, w, 1))
        else:
            beta, r, w, t = grid_fit(kind, u, v, z, p, values)
            if len(values) > 1:
                values = refine_rows(grid, t, block)
                beta, r, w, t = grid_fit(kind, u, v, z, p, values)
        if not _convex(kind, beta):
            continue
        val, val2 = float(values[t, 0]), float(values[t, 1])

        def predict(uu, vv, kind=kind, val=val, val2=val2, beta=beta):
            return K.eval_shape(
                kind,
                val,
                val2,
                beta,
                np.ascontiguousarray(uu, np.float64),
                np.ascontiguousarray(vv, np.float64),
            )

        planes = kernel_planes(kind, beta, val, val2)
        out.append(Candidate(name, k, beta, planes, r, w, predict=predict, rank=rank))
    return out
