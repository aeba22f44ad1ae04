"""Destructive release commands pointed at dangerous targets: nothing outside the package's own folders is
ever deleted or changed, the command exits 7 with one clear line and no traceback.

Every case snapshots the whole test folder (every path, every file's bytes) before the command and
compares after it, so a sentinel file next to and inside every path passed must survive untouched.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pipeline.buildlog import BuildLog
from pipeline.config import load_config
from pipeline.errors import EXIT_CONFIG, EXIT_RELEASE
from tests import _release_fakes as fakes

pytestmark = pytest.mark.usefixtures("fake_layers")


@pytest.fixture
def fake_layers(monkeypatch):
    from pipeline.orchestrate import build

    monkeypatch.setattr(build, "_OPTIONAL_LAYERS", list(build._OPTIONAL_LAYERS))
    fakes.install()


def _build(cfg: Path):
    from pipeline.orchestrate.build import run_build

    return run_build(load_config(cfg), workers=1, log=BuildLog(quiet=True))


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under root: file bytes, link targets, folders (the lock file's content is the holder)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.name == ".twin.lock":
            out[rel] = "lock"
        elif p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


@pytest.fixture
def project(tmp_path):
    """A project with two releases, a cache, a foreign folder, a file and sentinels next to/inside all."""
    cfg = fakes.make_project(tmp_path / "p")
    _build(cfg)
    (tmp_path / "p/data/raw/dgm/dgm1_32_350_5700_1_nw.txt").write_text("second delivery\n")
    r2 = _build(cfg)
    (tmp_path / "p/data/cache").mkdir(exist_ok=True)
    foreign = tmp_path / "www" / "site"
    foreign.mkdir(parents=True)
    (foreign / "index.html").write_text("somebody else's web site")
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "p/data/out/releases/notes").mkdir()  # a foreign folder among the releases: never pruned
    (tmp_path / "p/data/out/releases/notes/keep.txt").write_text("mine")
    for d in [
        tmp_path,
        tmp_path / "p",
        tmp_path / "p/data",
        tmp_path / "p/data/raw",
        tmp_path / "p/data/raw/dgm",
        tmp_path / "p/data/out",
        tmp_path / "p/data/out/releases",
        tmp_path / "p/data/cache",
        tmp_path / "www",
        foreign,
    ]:
        (d / "SENTINEL").write_text(f"sentinel {d.name}")
    return {"root": tmp_path, "cfg": cfg, "release": r2.release_dir}


def dangerous_targets(root: Path, release: Path) -> dict[str, Path]:
    p = root / "p"
    return {
        "paths.raw": p / "data/raw",
        "inside paths.raw": p / "data/raw/dgm",
        "new folder inside paths.raw": p / "data/raw/public",
        "paths.out": p / "data/out",
        "inside paths.out": p / "data/out/releases",
        "new folder inside paths.out": p / "data/out/public",
        "current": p / "data/out/current",
        "paths.cache": p / "data/cache",
        "new folder inside paths.cache": p / "data/cache/public",
        "parent of raw/out/cache": p / "data",
        "project root": p,
        "test root": root,
        "the release": release,
        "inside the release": release / "fake_terrain",
        "a non-empty foreign folder": root / "www/site",
        "a file": root / "notes.txt",
        "under a file": root / "notes.txt/public",
        "a symlink to paths.raw": _link(root / "raw-link", p / "data/raw"),
    }


def _link(link: Path, target: Path) -> Path:
    if not link.is_symlink():
        link.symlink_to(target)
    return link


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from pipeline.cli.main import main

    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_publish_refuses_every_dangerous_target(project, capsys):
    root, cfg = project["root"], project["cfg"]
    targets = dangerous_targets(root, project["release"])
    before = snapshot(root)
    for what, dest in targets.items():
        for argv in (
            ["publish", "-c", str(cfg), "--public", str(dest)],
            ["publish", "--release", str(project["release"]), "--public", str(dest)],
        ):
            if "--release" in argv and what.startswith(
                (
                    "paths.raw",
                    "inside paths.raw",
                    "new folder inside paths.raw",
                    "paths.cache",
                    "new folder inside paths.cache",
                )
            ):
                continue  # without a config only the release's own output folder is known
            code, _out, err = _run(argv, capsys)
            assert code == EXIT_RELEASE, f"{what}: exit {code}: {err}"
            assert "Traceback" not in err and err.startswith("twin: error:"), f"{what}: {err}"
            assert len(err.strip().splitlines()) == 1, f"{what}: {err}"
            assert snapshot(root) == before, f"{what}: something changed on disk"


def test_gc_rollback_status_refuse_foreign_out_folders(project, capsys):
    root = project["root"]
    before = snapshot(root)
    for what, out in {
        "paths.raw": root / "p/data/raw",
        "parent of raw/out/cache": root / "p/data",
        "project root": root / "p",
        "a non-empty foreign folder": root / "www/site",
        "a file": root / "notes.txt",
        "under a file": root / "notes.txt/out",
    }.items():
        for cmd in (["gc", "--keep", "1"], ["rollback"], ["status"]):
            code, _out, err = _run([*cmd, "--out", str(out)], capsys)
            assert code == EXIT_RELEASE, f"{cmd[0]} --out {what}: exit {code}: {err}"
            assert "Traceback" not in err and err.startswith("twin: error:"), f"{what}: {err}"
            assert snapshot(root) == before, f"{cmd[0]} --out {what}: something changed on disk"


def test_gc_keeps_everything_it_did_not_create(project, capsys):
    root, cfg = project["root"], project["cfg"]
    out = root / "p/data/out"
    code, _text, err = _run(["gc", "-c", str(cfg), "--keep", "1"], capsys)
    assert code == 0, err
    # the older release went, the current one and every foreign thing stayed
    rels = sorted(p.name for p in (out / "releases").iterdir())
    assert rels == sorted(["SENTINEL", "notes", project["release"].name])
    assert (out / "releases/notes/keep.txt").read_text() == "mine"
    for s in root.rglob("SENTINEL"):
        assert s.read_text().startswith("sentinel")
    assert len(list(root.rglob("SENTINEL"))) == 10


def test_commands_outside_the_repository_need_a_project(project, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no configs/demo.yaml here: nothing may default to it
    for cmd in (["status"], ["rollback"], ["gc"], ["publish", "--public", str(tmp_path / "x")]):
        code, _out, err = _run(cmd, capsys)
        assert code == EXIT_CONFIG, f"{cmd}: {code} {err}"
        assert "--config" in err and "--out" in err and "Traceback" not in err
    out = project["root"] / "p/data/out"
    code, text, _err = _run(["status", "--out", str(out)], capsys)
    assert code == 0 and project["release"].name in text


def test_export_replaces_only_empty_or_earlier_exports_world_readable(project, capsys):
    root, cfg = project["root"], project["cfg"]
    empty = root / "www" / "empty"
    empty.mkdir()
    for dest in (root / "www" / "new" / "public", empty):
        code, _o, err = _run(["publish", "-c", str(cfg), "--public", str(dest)], capsys)
        assert code == 0, err
        assert (dest / ".twin-export").is_file() and (dest / "index.html").is_file()
        for p in [dest, *dest.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & (0o755 if p.is_dir() else 0o644) == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
        # again: an earlier export is replaced (and a file a user put into it goes with it)
        (dest / "stale.txt").write_text("old")
        code, _o, err = _run(["publish", "-c", str(cfg), "--public", str(dest)], capsys)
        assert code == 0, err
        assert not (dest / "stale.txt").exists()
        assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")], "temporaries left"
    assert (root / "www/site/index.html").read_text() == "somebody else's web site"


def test_build_with_paths_out_a_file_is_a_clear_error(tmp_path, capsys):
    cfg = fakes.make_project(tmp_path / "p")
    (tmp_path / "p/data").mkdir(exist_ok=True)
    (tmp_path / "p/data/out").write_text("not a folder")
    before = snapshot(tmp_path)
    code, _o, err = _run(["build", str(cfg), "--quiet"], capsys)
    assert code == EXIT_RELEASE and "Traceback" not in err and "data/out" in err, err
    assert snapshot(tmp_path) == before
    for cmd in (["status"], ["rollback"], ["gc"], ["publish", "--public", str(tmp_path / "x")]):
        code, _o, err = _run([*cmd, "-c", str(cfg)], capsys)
        assert code == EXIT_RELEASE and "Traceback" not in err, (cmd, err)


def test_release_folders_world_readable(tmp_path):
    old = os.umask(0o077)  # a strict umask: writers create 0700 folders and 0600 files
    try:
        r = _build(fakes.make_project(tmp_path / "p"))
    finally:
        os.umask(old)
    for p in [r.release_dir.parent, r.release_dir, *r.release_dir.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        want = 0o755 if p.is_dir() else 0o644
        assert mode & want == want, (p, oct(mode))


def test_failed_build_names_a_log_that_exists(tmp_path):
    from pipeline.errors import InputError

    cfg = fakes.make_project(tmp_path / "p")
    _build(cfg)
    (tmp_path / "p/data/raw/dgm/dgm1_32_352_5700_1_nw.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError):
        _build(cfg)
    last = json.loads((tmp_path / "p/data/out/.twin/last-build.json").read_text())
    assert last["state"] == "failed"
    assert last["log"] and Path(last["log"]).is_file(), last.get("log")
    assert "build_failed" in Path(last["log"]).read_text()


def test_disk_full_during_a_build_removes_staging_and_says_so(tmp_path, monkeypatch, capsys):
    import errno

    from pipeline.orchestrate import build as build_mod

    cfg = fakes.make_project(tmp_path / "p")
    r1 = _build(cfg)
    (tmp_path / "p/data/raw/dgm/dgm1_32_352_5700_1_nw.txt").write_text("new survey\n")
    real = fakes.render_tile

    def full(a, b):
        if "352" in a:
            raise OSError(errno.ENOSPC, "No space left on device", b)
        return real(a, b)

    monkeypatch.setattr(fakes, "render_tile", full)
    orig = build_mod.BuildContext

    class NoClient(orig):  # serial rendering, so the patched function runs in this process
        def __setattr__(self, k, v):
            super().__setattr__(k, None if k == "client" else v)

    monkeypatch.setattr(build_mod, "BuildContext", NoClient)
    code, _o, err = _run(["build", str(cfg), "--quiet"], capsys)
    out = tmp_path / "p/data/out"
    assert code == 9 and "Traceback" not in err and "disk is full" in err, err
    assert not [p.name for p in (out / "releases").iterdir() if p.name.startswith(".")], "staging left"
    assert (out / "current").resolve() == r1.release_dir.resolve()
    last = json.loads((out / ".twin/last-build.json").read_text())
    assert last["state"] == "failed" and last["exit_code"] == 9
    assert last["log"] is None or Path(last["log"]).is_file()


def test_disk_full_during_an_export_leaves_the_destination(project, monkeypatch, capsys):
    import errno
    import shutil

    from pipeline.release import access

    root, cfg = project["root"], project["cfg"]
    dest = root / "www" / "public"
    assert _run(["publish", "-c", str(cfg), "--public", str(dest)], capsys)[0] == 0
    before = snapshot(root)
    calls = []

    def copy2(src, dst):
        calls.append(src)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(access.shutil, "copy2", copy2)
    code, _o, err = _run(["publish", "-c", str(cfg), "--public", str(dest)], capsys)
    assert code == 9 and "Traceback" not in err and "No space left" in err, err
    assert snapshot(root) == before  # the earlier export as it was, no temporary left


def test_status_into_a_closed_pipe_is_not_an_error(project):
    """`twin status --json | head -c 10`: the reader is gone before twin writes (closed right away here,
    while twin is still importing), which is not an error of twin."""
    import subprocess
    import sys

    out = project["root"] / "p/data/out"
    code = "import sys; from pipeline.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "status", "--json", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `head` that has read its 10 bytes and exited
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


@pytest.mark.parametrize("cmd", [["rollback"], ["gc", "--keep", "1"]], ids=["rollback", "gc"])
def test_disk_full_in_rollback_and_gc_is_a_message(project, monkeypatch, capsys, cmd):
    import errno

    from pipeline.release import publish
    from pipeline.release.publish import check_complete, current_release

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", "history.json")

    monkeypatch.setattr(publish, "_write_history", full)
    out = project["root"] / "p/data/out"
    code, _o, err = _run([*cmd, "-c", str(project["cfg"])], capsys)
    assert code == 9 and "Traceback" not in err and "disk is full" in err, (cmd, err)
    check_complete(current_release(out))


def test_build_refuses_dangerous_output_folders(project, capsys):
    """`paths.out` set to a delivery, a project folder, a foreign folder or a file: refused before the
    lock file or anything else is written."""
    root = project["root"]
    cfg_text = project["cfg"].read_text()
    cases = {
        "paths.raw": (root / "p/data/raw", 3),
        "inside paths.raw": (root / "p/data/raw/out", 3),
        "parent of raw/out/cache": (root / "p/data", 3),
        "inside paths.out": (root / "p/data/out/releases", EXIT_RELEASE),
        "a non-empty foreign folder": (root / "www/site", EXIT_RELEASE),
        "a file": (root / "notes.txt", EXIT_RELEASE),
    }
    cfg = root / "p/configs/other.yaml"
    cfg.write_text(cfg_text)  # written before the snapshot; rewritten per case below
    for what, (out, want) in cases.items():
        cfg.write_text(cfg_text.replace("out: ../data/out", f"out: {out}"))
        before = snapshot(root)
        code, _o, err = _run(["build", str(cfg), "--quiet"], capsys)
        assert code == want and "Traceback" not in err and err.startswith("twin: error:"), (what, code, err)
        assert snapshot(root) == before, f"{what}: something changed on disk"


def test_demo_overwrite_refuses_a_real_delivery(tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "alkis").mkdir(parents=True)
    (raw / "alkis" / "real.gpkg").write_bytes(b"the city's cadastre")
    before = snapshot(tmp_path)
    code, _o, err = _run(["demo", "--out", str(raw), "--overwrite"], capsys)
    assert code == 2 and "Traceback" not in err and "no demo delivery" in err, err
    assert snapshot(tmp_path) == before


def test_status_survives_damaged_records(project, capsys):
    out = project["root"] / "p/data/out"
    last = out / ".twin/last-build.json"
    for text in ("[1, 2]", '{"state": "running", "pid": "abc"}', "{not json", '{"state": "running"}'):
        last.write_text(text)
        code, stdout, err = _run(["status", "--out", str(out), "--json"], capsys)
        assert code in (0, 1) and "Traceback" not in err, (text, err)
        st = json.loads(stdout)
        assert st["current"]["build_id"] == project["release"].name
        if "running" in text:  # no live pid behind it: the build was killed
            assert st["last_build"]["state"] == "killed" and code == 1
