"""A light local worker pool for standalone `twin points` runs (no Dask cluster to start).

`LocalPool(n)` starts n worker processes at once. They are forked from a fork server (never from the main
process: lazrs/numba/threads there are not fork-safe) that imports the point stages and loads the numba
kernels from their on-disk cache once (`points_worker`), while the main process is still importing and
scanning headers; the workers inherit all of it. Starting it costs the main process almost nothing;
a Dask LocalCluster (scheduler + nannies + workers) costs 1-2 s before the first task can run.

It is a standard `concurrent.futures.Executor` (see `pipeline.orchestrate.executor`, the one seam the
point tiler runs on). Output bytes are identical to the Dask and in-process paths (the partition of the
work never depends on the executor).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from pipeline.fsutil import pid_alive


def _exit_with_main(main_pid: int, stop: Any, poll: float = 0.5) -> None:
    """A worker ends at once when the pool is aborted (`stop` set: an error, Ctrl-C, SIGTERM; its task is
    abandoned), and within `poll` seconds when the main process of the run is gone (killed with SIGKILL,
    say). Idle workers block on a queue whose write end they hold themselves and would never notice; they,
    and the fork server (which lives while any worker holds its liveness pipe), would keep running, holding
    the caller's stdout/stderr pipes. A daemon thread waits for either (no cost to the tasks)."""
    while not stop.wait(poll):
        if not pid_alive(main_pid):
            break
    os._exit(1)


def _init_worker(main_pid: int, stop: Any) -> None:
    """A worker's start: it ends with the run (`_exit_with_main`; `main_pid` is the process that runs the
    pool, the fork server is only the OS parent)."""
    threading.Thread(target=_exit_with_main, args=(main_pid, stop), daemon=True).start()
    # with the fork server, all of this is already in memory (inherited): the import returns at once
    import pipeline.orchestrate.points_worker  # noqa: F401


def trace(line: str) -> None:
    """Debugging aid: with $TWIN_POINTS_TRACE=FILE, `<pid> <line>` is appended to FILE."""
    path = os.environ.get("TWIN_POINTS_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {line}\n")


def _ready() -> bool:
    """A worker is up (trace: `pid ready <time> 0.000`)."""
    import time

    trace(f"ready {time.perf_counter():.3f} 0.000")
    return True


def phase_call(phase: str, fn, *args, **kwargs):
    """fn(*args) in a worker; traced (`trace`): pid, phase, start, seconds, CPU seconds, page faults."""
    if not os.environ.get("TWIN_POINTS_TRACE"):
        return fn(*args, **kwargs)
    import resource
    import time

    t0, c0 = time.perf_counter(), time.process_time()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = fn(*args, **kwargs)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    trace(
        f"{phase} {t0:.3f} {time.perf_counter() - t0:.3f} cpu {time.process_time() - c0:.3f} faults {faults}"
    )
    return out


def _context():
    """Workers are forked from a fork server that has imported the stages and loaded the kernels
    (`points_worker`): never from this process (lazrs/numba/threads here are not fork-safe)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pipeline.orchestrate.points_worker"])
    # launch the fork server now (a fork + exec, no waiting): left to the pool's starter thread, it would
    # be launched only after ~0.2 s of that thread competing for the GIL with this process's imports
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return ctx


class LocalPool(ProcessPoolExecutor):
    """Local worker processes (forked from a preloaded fork server); every task is traced (`phase_call`).
    `shutdown(wait=False)` (and leaving the `with` block on an error) stops the workers at once, abandoning
    running tasks (a run that failed or was interrupted: nothing they would still write is wanted)."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        ctx = _context()
        self._stop = ctx.Event()  # set: the workers end at once (see _exit_with_main)
        super().__init__(
            self.workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(), self._stop)
        )
        # processes start on demand: ask for all of them now, from a thread (starting the first one blocks,
        # holding the executor's lock, until the fork server has loaded the kernels: about 0.5 s from
        # numba's cache, up to a minute when a cold cache compiles them), so they warm up while the caller
        # imports and plans
        self._lock = threading.Lock()
        self._started = self._abandoned = False
        self._starter = threading.Thread(target=self._start, daemon=True)
        self._starter.start()

    def _start(self) -> None:
        # RuntimeError: shut down before it started; EOFError/OSError: the fork server died (a signal to
        # the process group): the run's own submits report what went wrong
        with contextlib.suppress(RuntimeError, EOFError, OSError):
            for _ in range(self.workers):
                super().submit(_ready)
        with self._lock:
            self._started = True
            abandoned = self._abandoned
        if abandoned:  # aborted while the fork server loaded the kernels (see `shutdown`)
            super().shutdown(wait=False, cancel_futures=True)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return super().submit(phase_call, getattr(fn, "__name__", "task"), fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if not wait:
            self._stop.set()  # workers, also those forked from now on, end at once
            with self._lock:
                # the fork server is still loading (compiling) the kernels: no task has run, and waiting
                # for it would hold up a Ctrl-C or an error for as long as the compilation takes; the
                # starter shuts the executor down once the fork server answers, and the fork server ends
                # by itself when this process is gone (`points_worker`)
                self._abandoned = not self._started
                if self._abandoned:
                    return
        self._starter.join()
        super().shutdown(wait=True, cancel_futures=True)

    def __exit__(self, exc_type, *exc) -> None:
        self.shutdown(wait=exc_type is None)
