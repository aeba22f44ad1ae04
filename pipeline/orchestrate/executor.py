"""The one executor seam: work runs on a `concurrent.futures.Executor`, or in this process.

- standalone `twin points --jobs N`: `points_pool.LocalPool` (a process pool forked from a preloaded fork
  server);
- a Dask cluster (`twin build`, `twin points --scheduler`): `build_executor(client)`, i.e.
  `client.get_executor(pure=True)`: Dask derives each task's key from the function and its arguments
  (`dask.base.tokenize`), so the same work always has the same key (no object ids, no random keys);
- `None`: every call runs here, in order.

`map_ordered` is the one submit/gather loop: results in the order of the work, progress as tasks finish,
the remaining tasks cancelled when one fails. The output never depends on the executor.

Several stages of a build submit to the one executor at once, each from a thread of its own
(`pipeline.orchestrate.stages`). When one of them fails the others stop: inside `stopped_by(signal)`,
`signal.stop()` cancels the tasks `map_ordered` and `call` wait for, and they raise `StageStopped`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

__all__ = [
    "Executor",
    "StageStopped",
    "StopSignal",
    "build_executor",
    "call",
    "dask_workers",
    "map_ordered",
    "run_task",
    "stopped_by",
]

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class StageStopped(Exception):
    """Raised in a stage whose build is stopping because another stage failed (not the build's error)."""


class StopSignal:
    """Stops the stages of a build: `stop()` cancels every task waited for under `stopped_by(self)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._futures: set[concurrent.futures.Future] = set()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            futures = list(self._futures)
        for f in futures:
            f.cancel()

    def check(self) -> None:
        if self._stopped:
            raise StageStopped("stopped: another stage of the build failed")

    def track(self, fut: concurrent.futures.Future) -> None:
        with self._lock:
            if not self._stopped:
                self._futures.add(fut)
                return
        fut.cancel()
        self.check()

    def untrack(self, futures: Iterable[concurrent.futures.Future]) -> None:
        with self._lock:
            self._futures.difference_update(futures)


# the stop signal of the calling thread's stage (`stopped_by`)
_SIGNAL: contextvars.ContextVar[StopSignal | None] = contextvars.ContextVar("twin_stage_stop", default=None)


@contextlib.contextmanager
def stopped_by(signal: StopSignal) -> Iterator[None]:
    """Inside (in this thread): `map_ordered` and `call` raise `StageStopped` once `signal.stop()` ran."""
    token = _SIGNAL.set(signal)
    try:
        yield
    finally:
        _SIGNAL.reset(token)


def _check_stop() -> None:
    sig = _SIGNAL.get()
    if sig is not None:
        sig.check()


def build_executor(client: Any) -> concurrent.futures.Executor | None:
    """A Dask client's standard executor with content-derived task keys; None without a client (serial)."""
    return None if client is None else client.get_executor(pure=True)


def dask_workers(client: Any) -> int:
    """The number of workers of a Dask cluster (at least 1); 1 without a client."""
    return 1 if client is None else max(1, len(client.scheduler_info()["workers"]))


def map_ordered(
    executor: concurrent.futures.Executor | None,
    fn: Callable[..., Any],
    items: Iterable[tuple[Any, ...]],
    *,
    name: str,
    total: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    window: int | None = None,
) -> list[Any]:
    """[fn(*args) for args in items], on `executor` (in this process when None). `progress(name, done,
    total)` as tasks finish.

    Bounded memory: `on_result(i, result)` takes each result as it arrives (in the calling thread) and
    the result is not kept (the list returned holds None); with `window` at most that many tasks are
    submitted at a time and `items` is advanced only when a task is submitted, so a generator (with its
    length as `total`) builds each task's arguments just in time instead of all of them up front."""
    if total is None:
        items = list(items)
        total = len(items)
    it = iter(items)
    if progress:
        progress(name, 0, total)
    results: list[Any] = [None] * total

    def finish(i: int, r: Any, done: int) -> None:
        if on_result is not None:
            on_result(i, r)
        else:
            results[i] = r
        if progress:
            progress(name, done, total)

    if executor is None:
        for i, args in enumerate(it):
            _check_stop()
            finish(i, fn(*args), i + 1)
        return results
    futures: dict[concurrent.futures.Future, int] = {}
    finished: queue.SimpleQueue[concurrent.futures.Future] = queue.SimpleQueue()  # in the order they end
    signal = _SIGNAL.get()  # a stage's stop signal: it cancels the tasks submitted here
    submitted = 0
    try:
        for done in range(1, total + 1):
            while submitted < total and len(futures) < (window or total):
                _check_stop()
                fut = executor.submit(fn, *next(it))
                futures[fut] = submitted
                submitted += 1
                if signal is not None:
                    signal.track(fut)
                fut.add_done_callback(finished.put)
            fut = finished.get()
            if signal is not None:
                signal.untrack([fut])
            try:
                result = fut.result()
            except concurrent.futures.CancelledError:
                _check_stop()  # cancelled by the stop signal: StageStopped
                raise
            finish(futures.pop(fut), result, done)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        if signal is not None:
            signal.untrack(futures)
    return results


def run_task(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`: the function of a `map_ordered` over tasks of several kinds (items `(fn, *args)`)."""
    return fn(*args)


def call(executor: concurrent.futures.Executor | None, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on the executor (a worker: it has the kernels loaded), else here."""
    return map_ordered(executor, fn, [args], name=getattr(fn, "__name__", "call"))[0]
