"""numba kernels of the demo generator, each with the pure-numpy reference the tests compare against."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def _terrain_nb(x, y, amps, ks, cos_d, sin_d, phases, mean, x_ref, y_ref, out):  # pragma: no cover
    for i in range(x.size):
        dx = x[i] - x_ref
        dy = y[i] - y_ref
        z = mean
        for j in range(amps.size):
            z += amps[j] * math.sin((dx * cos_d[j] + dy * sin_d[j]) * ks[j] + phases[j])
        out[i] = z


def terrain_waves(
    x: np.ndarray,
    y: np.ndarray,
    amps: np.ndarray,
    ks: np.ndarray,
    directions: np.ndarray,
    phases: np.ndarray,
    mean: float,
    ref: tuple[float, float],
) -> np.ndarray:
    """mean + sum_j amps[j] * sin(((x - xr) cos d_j + (y - yr) sin d_j) * k_j + phase_j), one pass."""
    xf = np.ascontiguousarray(x, dtype=np.float64).ravel()
    yf = np.ascontiguousarray(y, dtype=np.float64).ravel()
    out = np.empty(xf.size, dtype=np.float64)
    _terrain_nb(xf, yf, amps, ks, np.cos(directions), np.sin(directions), phases, mean, ref[0], ref[1], out)
    return out.reshape(np.shape(x))


def terrain_waves_numpy(
    x: np.ndarray,
    y: np.ndarray,
    amps: np.ndarray,
    ks: np.ndarray,
    directions: np.ndarray,
    phases: np.ndarray,
    mean: float,
    ref: tuple[float, float],
) -> np.ndarray:
    z = np.full(np.broadcast(x, y).shape, mean, dtype=np.float64)
    for a, k, d, ph in zip(amps, ks, directions, phases, strict=True):
        z += a * np.sin(((x - ref[0]) * np.cos(d) + (y - ref[1]) * np.sin(d)) * k + ph)
    return z


@njit(cache=True)
def _counting_order_nb(cid, ncells):  # pragma: no cover
    starts = np.zeros(ncells + 1, dtype=np.int64)
    for c in cid:
        starts[c + 1] += 1
    for i in range(ncells):
        starts[i + 1] += starts[i]
    pos = starts[:-1].copy()
    order = np.empty(cid.size, dtype=np.int64)
    for i in range(cid.size):
        c = cid[i]
        order[pos[c]] = i
        pos[c] += 1
    return order, starts


def counting_order(cid: np.ndarray, ncells: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable order of points by cell id (counting sort) and the start offset of every cell."""
    return _counting_order_nb(np.ascontiguousarray(cid, dtype=np.int64), int(ncells))


def counting_order_numpy(cid: np.ndarray, ncells: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(ncells + 1, dtype=np.int64)
    np.cumsum(np.bincount(cid, minlength=ncells), out=starts[1:])
    return np.argsort(cid, kind="stable").astype(np.int64), starts
