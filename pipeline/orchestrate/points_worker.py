"""Imported once by the fork server of the local point-tiling pool (`points_pool.LocalPool`).

Importing this module does everything a point worker needs before its first task: one core per worker
(no thread pools), the stage modules, the kernels (numba loading its on-disk cache,
`cache=True`, ~0.45 s), and the modules the pickled task descriptions refer to. Kept light on purpose: no PROJ, pydantic or laspy (the planner
ships record dtypes, lattices and the CRS settings as plain data; a worker imports those libraries only
in the rare case it must build a lattice itself). Workers are then
forked from that process: they start with all of it in memory instead of importing it each (about 0.5 s of
CPU per worker saved at the start of every run).
"""

import os
import time

_T0 = time.perf_counter()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import lazrs  # noqa: E402,F401

import pipeline.frame  # noqa: E402  (unpickling the task descriptions)
import pipeline.stages.points.decode  # noqa: E402
import pipeline.stages.points.tiling  # noqa: E402,F401
from pipeline.stages.points.kernels import warm_all  # noqa: E402

warm_all()

from pipeline.orchestrate.points_pool import trace  # noqa: E402

trace(f"preload {_T0:.3f} {time.perf_counter() - _T0:.3f}")
