"""Terrain of the demo district: a smooth analytic surface of DHHN2016 normal heights.

Heights stay within about 46-69 m (the Emscher valley near Gelsenkirchen) with a gentle slope and
undulations of a few hundred metres to a few kilometres wavelength; slopes stay below about 6 %.
The function is evaluated vectorised on any array of coordinates, so the point simulation, the DGM and
the building bases all see exactly the same ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.sources.demo.kernels import terrain_waves, terrain_waves_numpy

# (amplitude m, wavelength m) of the undulation terms; amplitudes sum to 11 m around a 57.5 m mean.
_TERMS = ((5.0, 2600.0), (3.5, 1700.0), (1.5, 820.0), (1.0, 430.0))
MEAN_HEIGHT = 57.5
# subtracted before projecting onto the wave directions (keeps the arguments small)
_REF = (360000.0, 5700000.0)


@dataclass(frozen=True)
class Terrain:
    """z(x, y) = mean + sum of plane waves with seed-dependent directions and phases."""

    directions: tuple[float, ...]  # radians, one per term
    phases: tuple[float, ...]

    @classmethod
    def from_rng(cls, rng: np.random.Generator) -> Terrain:
        n = len(_TERMS)
        return cls(
            directions=tuple(float(v) for v in rng.uniform(0.0, np.pi, n)),
            phases=tuple(float(v) for v in rng.uniform(0.0, 2 * np.pi, n)),
        )

    def _params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        amps = np.array([a for a, _ in _TERMS])
        ks = np.array([2 * np.pi / wl for _, wl in _TERMS])
        return amps, ks, np.array(self.directions), np.array(self.phases)

    def __call__(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Heights at (x, y); one fused numba pass (see `reference` for the numpy version)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        x, y = np.broadcast_arrays(x, y)
        return terrain_waves(x, y, *self._params(), MEAN_HEIGHT, _REF)

    def reference(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Pure-numpy evaluation of the same surface (used by the tests)."""
        return terrain_waves_numpy(
            np.asarray(x, float), np.asarray(y, float), *self._params(), MEAN_HEIGHT, _REF
        )
