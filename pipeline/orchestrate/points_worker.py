"""Imported once by the fork server of the local point-tiling pool (`points_pool.LocalPool`).

Importing this module does everything a point worker needs before its first task: one core per worker
(no thread pools), the stage modules, the kernels (numba loading its on-disk cache,
`cache=True`, ~0.45 s), and the modules the pickled task descriptions refer to. Kept light on purpose: no PROJ, pydantic or laspy (the planner
ships record dtypes, lattices and the CRS settings as plain data; a worker imports those libraries only
in the rare case it must build a lattice itself). Workers are then
forked from that process: they start with all of it in memory instead of importing it each (about 0.5 s of
CPU per worker saved at the start of every run).

With a cold numba cache the kernels are compiled here (half a minute or more on a loaded machine). The run
may end meanwhile (Ctrl-C, SIGTERM, an error) and would not wait for this: a watchdog thread ends the
process as soon as its parent (the run) is gone, and Ctrl-C to the process group is ignored here, as the
fork server does once it serves (the run handles it and stops the workers).
"""

import os
import signal
import sys
import threading
import time
import traceback

_T0 = time.perf_counter()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def _end_with_parent(parent: int, loaded: threading.Event) -> None:
    while not loaded.wait(0.1):
        if os.getppid() != parent:  # the run is gone (reparented)
            os._exit(1)


_loaded = threading.Event()
_watchdog = threading.Thread(target=_end_with_parent, args=(os.getppid(), _loaded), daemon=True)
_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
_watchdog.start()

import lazrs  # noqa: E402,F401

import pipeline.frame  # noqa: E402  (unpickling the task descriptions)
import pipeline.stages.points.decode  # noqa: E402
import pipeline.stages.points.tiling  # noqa: E402,F401
from pipeline.stages.points.kernels import warm_all  # noqa: E402

warm_all()


def _quiet_after_the_run(tp, value, tb, _print=sys.excepthook) -> None:
    """A worker forked after its run has failed or been signalled (while this server still loaded the
    kernels) finds the run's semaphores removed with it: it ends without printing that FileNotFoundError
    into the run's stderr. (The workers inherit this hook; any other error is printed.)"""
    frames = traceback.extract_tb(tb)
    if not (issubclass(tp, FileNotFoundError) and frames and frames[-1].filename.endswith("synchronize.py")):
        _print(tp, value, tb)


sys.excepthook = _quiet_after_the_run

# no thread runs when the fork server forks the workers; they get the usual Ctrl-C handling back
_loaded.set()
_watchdog.join()
signal.signal(signal.SIGINT, _sigint)

from pipeline.orchestrate.points_pool import trace  # noqa: E402

trace(f"preload {_T0:.3f} {time.perf_counter() - _T0:.3f}")
