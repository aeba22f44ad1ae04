"""`pipeline.runtime.dask_client`: the build's LocalCluster."""

from __future__ import annotations

from pipeline.config.model import RuntimeConfig
from pipeline.runtime import dask_client


def test_workers_run_no_profiler_and_a_slow_tick():
    """Nobody reads the workers' statistical profiles or the event-loop tick statistics (no dashboard):
    the workers sample no task frames and their event loops wake every 200 ms for the tick, not 20 ms."""

    def seen(dask_worker):
        return "profile" in dask_worker.periodic_callbacks, dask_worker._tick_interval

    with dask_client(RuntimeConfig(), workers=1) as client:
        ((profiled, tick),) = client.run(seen).values()
        scheduler_tick = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval)
    assert not profiled
    assert tick == 0.2 and scheduler_tick == 0.2
