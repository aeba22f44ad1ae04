"""Dask runtime: a LocalCluster sized to the machine, or an existing scheduler.

Workers are separate processes started with `spawn` (never fork after threads exist: lazrs' rayon pool
and numba's threading layer are not fork-safe), one thread each, so numba/lazrs get a core per worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from pipeline.config.model import RuntimeConfig
from pipeline.config.sizes import parse_size


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def cluster_settings() -> dict[str, Any]:
    """The Dask settings of `twin build`'s local cluster; `pipeline.cluster_preload` gives them to a
    cluster started by hand (`dask scheduler` / `dask worker`)."""
    import dask

    return {
        "distributed.worker.multiprocessing-method": "spawn",
        "distributed.worker.daemon": False,
        # we manage memory with our own budget and spill files; keep dask from pausing workers early
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": 0.95,
        "distributed.scheduler.work-stealing": True,
        "distributed.admin.tick.limit": "30s",
        # nobody reads the event-loop tick statistics or the statistical profiles (no dashboard): a tick
        # every 20 ms in the scheduler, each nanny and each worker and a profiler sample of the running
        # task every 10 ms took 10-14 % of a core on an idle 2-worker cluster (3-5 % with these two settings)
        "distributed.admin.tick.interval": "200ms",
        "distributed.worker.profile.enabled": False,
        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which switches off glibc's
        # adaptive mmap threshold: every mid-sized array is then a fresh mapping with its page faults
        # (release read-back on 2 workers: 52.7-54.8 s worker CPU with it, 41.8-45.2 s without)
        # (a nanny also copies it into its own process's os.environ, so every cluster of a build
        # process has to be started here for it to stay out)
        "distributed.nanny.pre-spawn-environ": {
            k: v
            for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
            if k != "MALLOC_TRIM_THRESHOLD_"
        },
        "distributed.comm.timeouts.connect": "60s",
    }


@contextlib.contextmanager
def dask_client(rt: RuntimeConfig, *, workers: int | None = None, scheduler: str | None = None) -> Iterator:
    """Yield a `distributed.Client`: attached to `scheduler` if given, else a fresh LocalCluster."""
    import dask
    from distributed import Client, LocalCluster

    address = scheduler or rt.scheduler
    budget = parse_size(rt.memory)
    with dask.config.set(cluster_settings()):
        if address:
            client = Client(address, timeout="60s")
            try:
                yield client
            finally:
                client.close()
            return
        n = workers or rt.workers or default_workers()
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            memory_limit=max(budget * 2, 512 * 2**20),
            dashboard_address=None,
            silence_logs=40,
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
