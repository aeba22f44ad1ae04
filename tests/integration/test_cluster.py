"""The same build against an external Dask scheduler equals a local build, byte for byte.

Starts `dask scheduler` and two `dask worker` processes (the venv's `dask` CLI, one thread each, random
ports on 127.0.0.1), builds with `run_build(cfg, scheduler=...)`, and compares every file of the release
with a build on the usual LocalCluster (except the build log, the build record and the manifest's
timings/created). Workers find the package through the same venv and the data through the same paths
(one machine here; a shared file system on a real cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.buildlog import BuildLog
from pipeline.config import load_config
from tests import _release_fakes as fakes

from .test_release_machinery import tree

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).parent / "dask"


@contextlib.contextmanager
def external_cluster(tmp: Path, n_workers: int = 2, preload: bool = False, env: dict[str, str] | None = None):
    """`dask scheduler` + `n_workers` x `dask worker --nworkers 1 --nthreads 1`; yields the address.
    `preload`: started with `pipeline.cluster_preload` (the settings of the local cluster); `env`: more
    environment variables for the processes."""
    if not DASK.exists():
        pytest.skip(f"dask CLI not found next to {sys.executable}")
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}  # workers import tests._release_fakes too
    common = {"cwd": tmp, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                str(DASK),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
                *(["--preload", "pipeline.cluster_preload"] if preload else []),
            ],
            **common,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.2)
        for _ in range(n_workers):
            procs.append(
                subprocess.Popen(
                    [
                        str(DASK),
                        "worker",
                        "--scheduler-file",
                        str(sched_file),
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--memory-limit",
                        "2GB",
                        *(["--preload-nanny", "pipeline.cluster_preload"] if preload else []),
                    ],
                    **common,
                )
            )
        address = json.loads(sched_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout="60s") as c:
            c.wait_for_workers(n_workers, timeout=90)
            assert len(c.scheduler_info()["workers"]) == n_workers
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copytree(src / "data" / "raw", dst / "data" / "raw")
    return dst


def test_external_scheduler_equals_local_build(tmp_path, monkeypatch):
    from pipeline.orchestrate import build

    monkeypatch.setattr(build, "_OPTIONAL_LAYERS", list(build._OPTIONAL_LAYERS))
    fakes.install()
    local = tmp_path / "local"
    cfg_local = fakes.make_project(local, n_tiles=6)
    remote = _copy_project(local, tmp_path / "remote")
    r_local = build.run_build(load_config(cfg_local), workers=2, log=BuildLog(quiet=True))

    with external_cluster(tmp_path) as address:
        cfg = load_config(remote / "configs" / "fake.yaml")
        r_remote = build.run_build(cfg, scheduler=address, log=BuildLog(quiet=True))
        # the work really ran on the external workers
        from distributed import Client

        with Client(address, timeout="30s") as c:
            logs = c.run(lambda: __import__("sys").modules.get("tests._release_fakes") is not None)
        assert len(logs) == 2 and any(logs.values())

    assert r_remote.build_id == r_local.build_id
    last = json.loads((remote / "data/out/.twin/last-build.json").read_text())
    assert last["scheduler"] == address and last["state"] == "success"
    a, b = tree(r_local.release_dir), tree(r_remote.release_dir)
    assert sorted(a) == sorted(b)
    assert a == b


def _settings() -> tuple[str | None, bool, str]:
    import dask

    return (
        os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        dask.config.get("distributed.worker.profile.enabled"),
        dask.config.get("distributed.admin.tick.interval"),
    )


@pytest.mark.parametrize("preload", [False, True])
def test_cluster_preload_gives_the_local_clusters_settings(tmp_path, preload):
    """Workers and scheduler started with `pipeline.cluster_preload` run with the settings of `twin build`'s
    local cluster (docs/operations.md): no MALLOC_TRIM_THRESHOLD_ in the workers (also when the
    environment they are started from sets it), no profiler, a 200 ms tick; without it, Dask's defaults."""
    from distributed import Client

    malloc = {"MALLOC_TRIM_THRESHOLD_": "65536"}
    with (
        external_cluster(tmp_path, preload=preload, env=malloc) as address,
        Client(address, timeout="30s") as c,
    ):
        workers = set(c.run(_settings).values())
        scheduler = c.run_on_scheduler(_settings)
    if preload:
        assert workers == {(None, False, "200ms")}
        assert scheduler[1:] == (False, "200ms")
    else:
        assert workers == {("65536", True, "20ms")}
        assert scheduler[2] == "20ms"


def test_external_scheduler_tiny_district_equals_local(tiny_project, tiny_release, tmp_path):
    """The real layers of the tiny district, built on `dask scheduler` + 2 `dask worker`s (started with
    `pipeline.cluster_preload`), equal the local build."""
    from pipeline.orchestrate.build import run_build
    from tests.conftest import load_tiny_config

    remote = tmp_path / "remote"
    shutil.copytree(tiny_project / "configs", remote / "configs")
    shutil.copytree(tiny_project / "data" / "raw", remote / "data" / "raw")  # no cache: a full build
    with external_cluster(tmp_path, preload=True) as address:
        r_remote = run_build(load_tiny_config(remote), scheduler=address, log=BuildLog(quiet=True))
    assert r_remote.build_id == tiny_release.name
    a, b = tree(tiny_release), tree(r_remote.release_dir)

    # the report plots stage timings; the manifest and the rebuild index (.twin/) record speeds and timings,
    # the nightly report its build date and timings (its warnings.csv is compared). Every layer file is
    # identical.
    def layer_file(k: str) -> bool:
        timed = ("manifest.json", "nightly_report/index.html", "nightly_report/build_summary.json")
        return not k.startswith(("report/", ".twin/")) and k not in timed

    layer_files = sorted(k for k in a if layer_file(k))
    assert layer_files == sorted(k for k in b if layer_file(k))
    assert len(layer_files) > 100
    differing = [k for k in layer_files if a[k] != b[k]]
    assert differing == []
