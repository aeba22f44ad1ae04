"""The one executor seam: work runs on a `concurrent.futures.Executor`, or in this process.

- standalone `twin points --jobs N`: `points_pool.LocalPool` (a process pool forked from a preloaded fork
  server);
- a Dask cluster (`twin build`, `twin points --scheduler`): `dask_executor(client)`, i.e.
  `client.get_executor(pure=True)`: Dask derives each task's key from the function and its arguments
  (`dask.base.tokenize`), so the same work always has the same key (no object ids, no random keys);
- `None`: every call runs here, in order.

`map_ordered` is the one submit/gather loop: results in the order of the work, progress as tasks finish,
the remaining tasks cancelled when one fails. The output never depends on the executor.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

__all__ = ["Executor", "build_executor", "call", "dask_executor", "dask_workers", "map_ordered"]

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def dask_executor(client: Any) -> concurrent.futures.Executor:
    """A Dask client's standard executor with content-derived task keys."""
    return client.get_executor(pure=True)


def build_executor(client: Any) -> concurrent.futures.Executor | None:
    """The executor of a build: its Dask cluster's (`dask_executor`), None without one (serial)."""
    return None if client is None else dask_executor(client)


def dask_workers(client: Any) -> int:
    """The number of workers of a Dask cluster (at least 1)."""
    return max(1, len(client.scheduler_info()["workers"]))


def map_ordered(
    executor: concurrent.futures.Executor | None,
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    *,
    name: str,
    progress: Progress | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Any]:
    """[fn(*args) for args in items], on `executor` (in this process when None). `progress(name, done,
    total)` as tasks finish; `on_done(i)` after task i has finished (in the calling thread)."""
    total = len(items)
    if progress:
        progress(name, 0, total)
    results: list[Any] = [None] * total
    if executor is None:
        for i, args in enumerate(items):
            results[i] = fn(*args)
            if on_done:
                on_done(i)
            if progress:
                progress(name, i + 1, total)
        return results
    futures: dict[concurrent.futures.Future, int] = {}
    try:
        for i, args in enumerate(items):
            futures[executor.submit(fn, *args)] = i
        for done, fut in enumerate(concurrent.futures.as_completed(futures), start=1):
            i = futures[fut]
            results[i] = fut.result()
            if on_done:
                on_done(i)
            if progress:
                progress(name, done, total)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return results


def call(executor: concurrent.futures.Executor | None, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on the executor (a worker: it has the kernels loaded), else here."""
    if executor is None:
        return fn(*args)
    return executor.submit(fn, *args).result()
