"""A light local worker pool for standalone `twin points` runs (no Dask cluster to start).

`LocalPool(n)` spawns n worker processes at once (spawn, never fork: lazrs/numba are not fork-safe); each
imports the point stages and loads the numba kernels from their on-disk cache in its initializer, while the
main process is still importing and scanning headers. Starting it costs the main process almost nothing;
a Dask LocalCluster (scheduler + nannies + workers) costs 1-2 s before the first task can run.

It offers the small part of the `distributed.Client` interface that `pipeline.orchestrate.points` uses
(`submit(fn, *args, key=..., pure=..., workers=...)`, `scheduler_info()`, `gather()`), and returns
`concurrent.futures.Future`s (with a `key` attribute). Output bytes are identical to the Dask and in-process
paths (the partition of the work never depends on the executor).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def _init_worker() -> None:
    import os

    # one core per worker: numba and BLAS must not start thread pools of their own
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from pipeline.orchestrate.points import warm_worker
    from pipeline.stages.points.kernels import warm_all

    warm_worker()
    warm_all()


def _ready() -> bool:
    return True


# glibc malloc settings of the workers (mallopt): during the decode phase, buffers up to 32 MB (a work
# unit's columns and records) come from the heap and freed memory is kept for the next task instead of
# being returned to the kernel: fresh pages cost a page fault each (about 2.6 ms per MB on the benchmark VM),
# and the tasks of a worker then reuse the same pages (about -9 % CPU on Autzen). Later phases (the bin
# phase sets the peak) first return that heap and keep at most 32 MB of free heap. Values never change.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Keeping 512 MB of decode heap raised the 100 M point peak from 1.88 to 2.00 GiB (the other worker may
# already be binning), past the 2 GB budget: the decode phase uses the bounded settings too.
DECODE_MALLOC = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 32 * 2**20}
OTHER_MALLOC = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 32 * 2**20}


def _malloc_tune(settings: dict[int, int], trim: bool = False) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        libc = ctypes.CDLL("libc.so.6")
        if trim:
            libc.malloc_trim(0)
        for param, value in settings.items():
            libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))


_PHASE: list[str] = []  # the phase of the last task this worker ran


def phase_call(phase: str, fn, *args):
    """fn(*args) in a worker, with the malloc settings of its phase (see DECODE_MALLOC)."""
    if not _PHASE or _PHASE[-1] != phase:
        _malloc_tune(DECODE_MALLOC if phase == "decode" else OTHER_MALLOC, trim=bool(_PHASE))
        _PHASE.append(phase)
    return fn(*args)


class LocalPool:
    """Spawned local worker processes with a Dask-Client-like `submit`."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._ex = ProcessPoolExecutor(
            self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
        )
        # processes start on demand: ask for all of them now so they warm up while the caller plans
        self._warm = [self._ex.submit(_ready) for _ in range(self.workers)]

    def submit(self, fn, *args, key: str | None = None, pure: bool = False, workers=None, **kw) -> Future:
        fut = self._ex.submit(fn, *args, **kw)
        fut.key = key or f"{getattr(fn, '__name__', 'task')}-{id(fut)}"  # type: ignore[attr-defined]
        return fut

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {f"local-{i}": {} for i in range(self.workers)}}

    def gather(self, futures: list[Future]) -> list[Any]:
        return [f.result() for f in futures]

    def close(self) -> None:
        # the work is done (or failed): idle workers are stopped rather than waited for (their interpreter
        # teardown with numba loaded takes a few tenths of a second)
        procs = list((getattr(self._ex, "_processes", None) or {}).values())
        self._ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=10)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
