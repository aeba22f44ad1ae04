"""The executor seam (pipeline.orchestrate.executor): one ordered map over any concurrent.futures.Executor,
and Dask task keys derived from the work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.orchestrate.executor import call, map_ordered

REPO = Path(__file__).resolve().parents[2]


def _square(x: int) -> int:
    return x * x


def _run(executor):
    seen: list[tuple[str, int, int]] = []
    out = map_ordered(
        executor, _square, [(i,) for i in range(40)], name="sq", progress=lambda *a: seen.append(a)
    )
    return out, seen


@pytest.mark.parametrize("kind", ["inline", "threads", "local-pool"])
def test_map_ordered_results_in_order_with_progress(kind):
    from pipeline.orchestrate.points_pool import LocalPool

    if kind == "inline":
        out, seen = _run(None)
    elif kind == "threads":
        with ThreadPoolExecutor(4) as ex:
            out, seen = _run(ex)
    else:
        with LocalPool(2) as pool:
            out, seen = _run(pool)
            assert call(pool, _square, 7) == 49
    assert out == [i * i for i in range(40)]
    assert seen[0] == ("sq", 0, 40) and seen[-1] == ("sq", 40, 40)
    assert [s[1] for s in seen] == list(range(41))
    assert call(None, _square, 3) == 9


def test_map_ordered_failure_cancels_the_rest():
    ran: list[int] = []
    gate = threading.Event()

    def task(i: int) -> int:
        if i == 0:
            gate.wait(5)
            raise ValueError("task 0 failed")
        ran.append(i)
        return i

    with ThreadPoolExecutor(1) as ex:  # one thread: tasks 1.. are still queued when task 0 fails
        gate.set()
        with pytest.raises(ValueError, match="task 0 failed"):
            map_ordered(ex, task, [(i,) for i in range(50)], name="t")
    assert len(ran) < 49  # the queued ones were cancelled, not run


_TOKEN = """
import sys
from pathlib import Path
from dask.base import tokenize
from pipeline.orchestrate.points_plan import PointTilingOptions, plan_tiling
from pipeline.sources.pointcloud.header import plan_units
from pipeline.stages.points.decode import DecodeJob, decode_to_spill
plan = plan_tiling([Path(sys.argv[1])], PointTilingOptions(class_scheme="adv"))
job = DecodeJob(plan.frame, plan.crs_cfg.model_dump_json(), plan.layout, "adv", False, "/nonexistent/spill", plan.cube, "report")
units = plan_units(plan.infos, points_per_unit=5000)
print(" ".join(tokenize(decode_to_spill, {}, plan.file_jobs[u.file_index], u, job) for u in units[:2]))
"""


def test_dask_task_keys_come_from_the_work(tmp_path):
    """With `build_executor` (pure=True) Dask names a task by tokenize(fn, kwargs, *args): for the decode
    tasks that token is the same in every process (no object ids, no random fallback) and differs between
    units."""
    from tests._synthetic_las import synthetic_points, write_las

    src = write_las(tmp_path / "a.laz", synthetic_points(12_000, size=20.0), scale=0.001, chunk_size=5000)

    # the first process finds the PROJ operation cache cold, the second warm: the keys must not care
    env = {**os.environ, "RUHRTWIN_PROJ_CACHE": str(tmp_path / "proj-cache.json")}

    def tokens() -> list[str]:
        r = subprocess.run(
            [sys.executable, "-c", _TOKEN, str(src)], capture_output=True, text=True, cwd=REPO, timeout=120,
            env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    first, second = tokens(), tokens()
    assert first == second and len(first) == 2 and first[0] != first[1]


def test_build_executor_is_pure():
    """The executor handed to the tiler for a Dask cluster asks for content-derived keys; none without."""
    from pipeline.orchestrate.executor import build_executor

    class FakeClient:
        def get_executor(self, **kw):
            return kw

    assert build_executor(FakeClient()) == {"pure": True}
    assert build_executor(None) is None


def test_dask_workers_keep_glibc_adaptive_malloc(monkeypatch) -> None:
    """The build's LocalCluster workers do not inherit Dask's MALLOC_TRIM_THRESHOLD_ (it switches off
    glibc's adaptive mmap threshold: ~20 % more worker CPU on the release read-back); the thread limits
    of Dask's default environment stay. (A nanny copies its pre-spawn environment into its own process's
    os.environ: a cluster started earlier in this pytest process with Dask's defaults leaves the variable
    there, so the test starts from the environment `twin build` starts from.)"""
    import os

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    from pipeline.config.model import RuntimeConfig
    from pipeline.runtime import dask_client

    with dask_client(RuntimeConfig(), workers=1) as client:
        trim = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        omp = client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
    assert list(trim.values()) == [None]
    assert list(omp.values()) == ["1"]


def test_bin_size_small_for_one_process_balanced_for_several():
    """One process alone takes the smallest bins (its peak: numba + plan + one bin); several workers get
    at least ~4 bins each, up to what their share of the memory budget holds; an explicit size wins."""
    from pipeline.orchestrate.points_plan import (
        BYTES_PER_BIN_POINT,
        MIN_BIN_POINTS,
        WORKER_BASE_BYTES,
        PointTilingOptions,
        max_bin_points,
    )

    opts = PointTilingOptions(memory=1536 * 2**20)
    assert max_bin_points(opts, 1, 10_650_000) == MIN_BIN_POINTS
    assert max_bin_points(opts, 1, 100_000_000) == MIN_BIN_POINTS
    assert max_bin_points(opts, 2, 10_650_000) == 10_650_000 // 8
    by_budget = int((1536 * 2**20 / 2 - WORKER_BASE_BYTES) / BYTES_PER_BIN_POINT)
    assert max_bin_points(opts, 2, 100_000_000) == by_budget < 100_000_000 // 8
    assert max_bin_points(opts, 2, 1_000_000) == MIN_BIN_POINTS
    assert max_bin_points(PointTilingOptions(max_bin_points=25_000), 1, 10_650_000) == 25_000
