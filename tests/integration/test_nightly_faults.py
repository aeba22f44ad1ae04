"""Fault tests of a nightly build: `kill -9` at random moments, then a rerun.

The build runs as a subprocess in its own process group (`twin build` with the fake layers of
tests/_release_fakes.py, slowed down per tile); the whole group (driver, Dask scheduler, workers) gets
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
from tests import _release_fakes as fakes

from .test_release_machinery import tree

REPO = Path(__file__).resolve().parents[2]
N_TILES = 8


def _twin(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests._release_fakes import main; sys.exit(main(sys.argv[1:]))"
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


# ------------------------------------------------------------------ kill -9 inside each release operation
#
# `TWIN_FAULT_AT=step:N` makes the process SIGKILL itself the N-th time it reaches `fault_point(step)`
# (pipeline.release.publish). Each operation is killed at every one of its fault points in turn (N = 1, 2,
# ... until the operation runs through), with and without the atomic folder exchange. After every kill:
# `current` is a complete release, `rollback` works (on a copy of the output folder), and the next command
# repairs the leftovers and ends byte-identical to a clean build.


def _killed_at(args: list[str], step: str, n: int, env: dict[str, str] | None = None) -> bool:
    """Run `twin ARGS` killing itself at the n-th `step`; True if it died there, False if it ran through."""
    from pipeline.release.publish import FAULT_ENV

    proc = _twin(args, {FAULT_ENV: f"{step}:{n}", **(env or {})})
    _out, err = proc.communicate(timeout=180)
    _kill_group(proc)  # nothing of it may live on (workers are gone before any release step anyway)
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, f"{args} at {step}:{n}: exit {proc.returncode}: {err.decode()[-2000:]}"
    return False


def _assert_current_valid(out: Path) -> Path:
    from pipeline.release.publish import check_complete, current_release

    cur = current_release(out)
    assert cur is not None, "current points at nothing"
    check_complete(cur)
    return cur


def _assert_rollback_works(out: Path, scratch: Path) -> None:
    """Roll back a copy of the output folder (the original goes on to the repair build)."""
    from pipeline.release.ops import do_rollback
    from pipeline.release.publish import check_complete

    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(out, scratch, symlinks=True)
    r = do_rollback(scratch)
    check_complete(Path(r["current"]))
    assert r["from"] != r["to"]


def _assert_clean(out: Path) -> None:
    from pipeline.release.publish import _read_history_doc, current_release

    left = [p.name for p in (out / "releases").iterdir() if p.name.startswith(".")]
    assert not left, f"leftovers: {left}"
    assert not list(out.glob(".current.tmp-*"))
    doc = _read_history_doc(out)
    cur = current_release(out)
    assert cur is not None and doc["published"][-1] == cur.name and cur.name not in doc["rolled_back"]


def _reference(tmp_path: Path, project: Path, name: str) -> dict[str, bytes]:
    """A clean build of the project's current inputs and config, in a fresh folder."""
    ref = tmp_path / name
    shutil.copytree(project / "configs", ref / "configs")
    shutil.copytree(project / "data/raw", ref / "data/raw")
    return tree(_inprocess_build(ref / "configs/fake.yaml").release_dir)


def _three_releases(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    project = tmp_path / "p"
    cfg = fakes.make_project(project, n_tiles=4)
    ids = []
    for k in range(3):
        _set_inputs(project, f"night {k}")
        ids.append(_inprocess_build(cfg).build_id)
    return project, cfg, ids


def _set_keep(cfg: Path, keep: int) -> None:
    cfg.write_text(cfg.read_text().replace("keep: 3", f"keep: {keep}"))


@pytest.mark.slow
@pytest.mark.parametrize("step", ["promote", "record", "switch", "prune"])
def test_kill_inside_build_publish_steps(tmp_path, step):
    """A new build killed inside promote / history record / `current` switch / prune (which removes two
    releases here: killed after the first and after the second). Every round starts from a copy of the
    same three-release project."""
    template, cfg, _ids = _three_releases(tmp_path / "template")
    _set_keep(cfg, 2)
    _set_inputs(template, "night 3")
    reference = _reference(tmp_path, template, "ref")
    n = 1
    while True:
        project = tmp_path / f"round{n}"
        shutil.copytree(template, project, symlinks=True)
        cfg, out = project / "configs/fake.yaml", project / "data/out"
        before = _assert_current_valid(out)
        if not _killed_at(["build", str(cfg), "--quiet"], step, n):
            break
        cur = _assert_current_valid(out)
        assert cur == before or tree(cur) == reference, f"{step}:{n}: current is neither old nor new"
        _assert_rollback_works(out, tmp_path / "scratch")
        r = _inprocess_build(cfg)  # repairs, then builds (or finds it up to date)
        assert tree(r.release_dir) == reference, f"{step}:{n}: repaired build differs from a clean one"
        assert (out / "current").resolve() == r.release_dir.resolve()
        _assert_clean(out)
        shutil.rmtree(project)
        n += 1
    assert n == {"promote": 2, "record": 2, "switch": 3, "prune": 3}[step], f"{step}: {n - 1} fault points"
    assert tree((out / "current").resolve()) == reference


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_kill_inside_promote_of_a_forced_rebuild(tmp_path, exchange):
    """`twin build --force` of the release `current` points at (same build id): killed at every point
    inside promote, `current` never points at nothing."""
    project, cfg, ids = _three_releases(tmp_path)
    out = project / "data/out"
    expected = tree(out / "releases" / ids[-1])
    env = {} if exchange else {"TWIN_NO_RENAME_EXCHANGE": "1"}
    n = 1
    while _killed_at(["build", str(cfg), "--quiet", "--force"], "promote", n, env):
        cur = _assert_current_valid(out)
        assert tree(cur) == expected, f"promote:{n}: current changed content"
        _assert_rollback_works(out, tmp_path / "scratch")
        r = _inprocess_build(cfg)
        assert r.build_id == ids[-1] and tree(r.release_dir) == expected
        assert (out / "current").resolve() == (out / "releases" / ids[-1]).resolve()
        _assert_clean(out)
        n += 1
    assert n > 1, "promote of an existing id has no fault point"
    print(f"killed inside promote at {n - 1} points")


@pytest.mark.slow
def test_kill_inside_rollback(tmp_path):
    project, cfg, ids = _three_releases(tmp_path)
    out = project / "data/out"
    reference = tree(out / "releases" / ids[-1])
    n = 1
    while _killed_at(["rollback", "-c", str(cfg)], "rollback", n):
        cur = _assert_current_valid(out)
        assert cur.name in ids[1:], cur.name
        _assert_rollback_works(out, tmp_path / "scratch")
        r = _inprocess_build(cfg)  # the inputs of the newest release: it is published again
        assert r.build_id == ids[-1] and tree(r.release_dir) == reference
        _assert_clean(out)
        n += 1
    assert n == 3, n  # before the switch, between the switch and the history record
    assert (out / "current").resolve().name == ids[1]  # the last round ran through


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_kill_inside_export(tmp_path, exchange):
    """`twin publish --public DIR` over an earlier export, killed at every point: the next export repairs
    (puts a moved-aside export back, removes temporaries) and the web folder ends complete."""
    from pipeline.release.access import EXPORT_MARKER, export_public

    project, _cfg, ids = _three_releases(tmp_path)
    out = project / "data/out"
    dest = tmp_path / "www" / "public"
    export_public(out / "releases" / ids[0], dest)
    old = tree(dest)
    export_public(out / "releases" / ids[-1], tmp_path / "fresh")
    new = tree(tmp_path / "fresh")
    env = {} if exchange else {"TWIN_NO_RENAME_EXCHANGE": "1"}
    n = 1
    args = ["publish", "--release", str(out / "releases" / ids[-1]), "--public", str(dest)]
    while _killed_at(args, "export", n, env):
        _assert_current_valid(out)
        if exchange:  # one atomic swap: the folder is always a complete export, old or new
            assert tree(dest) in (old, new), f"export:{n}"
        export_public(out / "releases" / ids[-1], dest)  # the next export repairs
        assert tree(dest) == new and (dest / EXPORT_MARKER).is_file()
        assert [p.name for p in dest.parent.iterdir()] == ["public"], f"export:{n}: leftovers"
        export_public(out / "releases" / ids[0], dest)  # back to the old one for the next round
        n += 1
    assert n > 1
    assert tree(dest) == new


@pytest.mark.slow
@pytest.mark.parametrize("when", ["while-dask-starts", "while-rendering"])
def test_sigterm_records_the_failure_and_releases_the_lock(tmp_path, when):
    """SIGTERM to the build's main process: as soon as its first Dask worker process exists (the cluster
    is starting), or once tiles are being rendered."""
    import psutil

    from pipeline.release.lock import build_lock

    project, cfg, ids = _three_releases(tmp_path)
    out = project / "data/out"
    _set_inputs(project, "night 4")
    proc = _twin(["build", str(cfg), "--quiet"], {fakes.SLEEP_ENV: "0.5"})
    deadline = time.monotonic() + 90
    main = psutil.Process(proc.pid)

    def ready() -> bool:
        if when == "while-dask-starts":
            return bool(main.children())
        return bool(list((out / "releases").glob(".staging-*/fake_terrain/*.bin")))

    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, "build did not get there"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGTERM)  # the driver only, as systemd / a scheduler would
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert b"Traceback" not in err and b"SIGTERM" in err
    last = json.loads((out / ".twin/last-build.json").read_text())
    assert last["state"] == "failed" and last["exit_code"] == 143
    assert last["log"] and Path(last["log"]).is_file()
    assert (out / "current").resolve().name == ids[-1]
    with build_lock(out):  # released
        pass
    deadline = time.monotonic() + 20  # no process of the build outlives it (its workers share the group)
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "processes of the build still running after SIGTERM"
        time.sleep(0.2)
