"""Fault tests of a nightly build: `kill -9` at random moments, then a rerun.

The build runs as a subprocess in its own process group (`twin build` with the fake layers of
tests/test_release_fakes.py, slowed down per tile); the whole group (driver, Dask scheduler, workers) gets
SIGKILL at a random moment. Afterwards `current` must still be the previous release, intact, and a rerun
must publish exactly the bytes of a clean build of the same inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.buildlog import BuildLog
from pipeline.config import load_config

from . import test_release_fakes as fakes
from .test_release_machinery import tree

REPO = Path(__file__).resolve().parents[1]
N_TILES = 8


def _twin(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.test_release_fakes import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TWIN_FINGERPRINT": "fault-test", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # own process group: SIGKILL reaches the Dask workers too
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def _set_inputs(project: Path, version: str) -> None:
    for k in range(N_TILES):
        (project / "data/raw/dgm" / f"dgm1_32_{350 + k}_5700_1_nw.txt").write_text(f"{version} {k}\n" * 20)


def _inprocess_build(cfg: Path):
    from pipeline.orchestrate import build

    saved = list(build._OPTIONAL_LAYERS)
    fakes.install()
    try:
        return build.run_build(load_config(cfg), workers=1, log=BuildLog(quiet=True))
    finally:
        build._OPTIONAL_LAYERS[:] = saved


@pytest.fixture(autouse=True)
def pinned_fingerprint(monkeypatch):
    """Builds of several processes are compared: pin the code fingerprint (others may edit code meanwhile)."""
    from pipeline.release.manifest import pipeline_fingerprint

    monkeypatch.setenv("TWIN_FINGERPRINT", "fault-test")
    pipeline_fingerprint.cache_clear()
    yield
    pipeline_fingerprint.cache_clear()


@pytest.mark.slow
def test_kill_9_at_random_moments_then_rerun(tmp_path):
    project = tmp_path / "p"
    cfg = fakes.make_project(project, n_tiles=N_TILES)
    _set_inputs(project, "v1")
    r0 = _inprocess_build(cfg)
    before = tree(r0.release_dir)

    ref_project = tmp_path / "ref"
    shutil.copytree(project / "configs", ref_project / "configs")
    shutil.copytree(project / "data/raw", ref_project / "data/raw")

    out = project / "data/out"
    killed_during = []
    for seed in (1, 2, 3):
        _set_inputs(project, f"v2-seed{seed}")  # a new delivery every night
        _set_inputs(ref_project, f"v2-seed{seed}")
        current_before = (out / "current").resolve()
        expected_before = tree(current_before)
        delay = random.Random(seed).uniform(0.0, 2.0)
        proc = _twin(["build", str(cfg), "--quiet"], {fakes.SLEEP_ENV: "0.25"})
        # wait until the build is really building (its staging folder exists), then a random moment more
        deadline = time.monotonic() + 90
        while not list((out / "releases").glob(".staging-*")) and proc.poll() is None:
            assert time.monotonic() < deadline, "build did not start"
            time.sleep(0.05)
        time.sleep(delay)
        finished = proc.poll() is not None
        killed_during.append("finished" if finished else f"{delay:.2f}s")
        _kill_group(proc)
        if not finished:  # killed in the middle: nothing published, the old release intact
            assert (out / "current").resolve() == current_before, f"seed {seed}: current moved"
            assert tree(current_before) == expected_before, f"seed {seed}: current release modified"
            last = json.loads((out / ".twin/last-build.json").read_text())
            if last["state"] == "running":  # killed after it took the lock: `twin status` says so
                from pipeline.release.status import release_status

                assert release_status(out)["last_build"]["state"] == "killed"
            else:  # killed while still importing: the record is the previous build's
                assert last["state"] == "success"
        rerun = _twin(["build", str(cfg), "--quiet"])
        _out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err.decode()[-2000:]
        cur = (out / "current").resolve()
        # a clean build of the same inputs, in a fresh process like the rerun (same code fingerprint)
        ref = _twin(["build", str(ref_project / "configs/fake.yaml"), "--quiet"])
        _out, err = ref.communicate(timeout=120)
        assert ref.returncode == 0, err.decode()[-2000:]
        reference = tree((ref_project / "data/out/current").resolve())
        assert tree(cur) == reference, f"seed {seed}: rerun differs from a clean build"
        assert not [p for p in (out / "releases").iterdir() if p.name.startswith(".")]
    assert tree(r0.release_dir) == before or not r0.release_dir.exists()  # pruned, never modified
    print("killed at", killed_during)
    assert any(k != "finished" for k in killed_during), killed_during
