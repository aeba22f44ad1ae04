"""Release machinery with fake layers: incremental reuse, atomic publish, status, rollback, lock, access
classes, cache. The fake layers (tests/_release_fakes.py) use the same helpers as real layers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.buildlog import BuildLog
from pipeline.config import load_config
from pipeline.errors import EXIT_INPUT, EXIT_LOCKED, EXIT_RELEASE, InputError
from tests import _release_fakes as fakes

pytestmark = pytest.mark.usefixtures("fake_layers")

TILE = "dgm/dgm1_32_352_5700_1_nw.txt"


@pytest.fixture
def fake_layers(monkeypatch):
    from pipeline.orchestrate import build

    monkeypatch.setattr(build, "_OPTIONAL_LAYERS", list(build._OPTIONAL_LAYERS))
    fakes.install()


def build(cfg_path: Path, **overrides):
    from pipeline.orchestrate.build import run_build

    return run_build(load_config(cfg_path, overrides or None), workers=1, log=BuildLog(quiet=True))


def tree(release: Path) -> dict[str, bytes]:
    """Every file of a release except what legitimately differs between builds of the same content."""
    out = {}
    for p in sorted(release.rglob("*")):
        rel = p.relative_to(release).as_posix()
        if not p.is_file() or rel in ("build.log.jsonl", ".twin/build-record.json"):
            continue
        data = p.read_bytes()
        if rel == "manifest.json":
            m = json.loads(data)
            for k in ("created", "timings"):
                m.pop(k, None)
            for lay in m["layers"]:
                lay.pop("seconds", None)
            data = json.dumps(m, sort_keys=True).encode()
        out[rel] = data
    return out


def test_incremental_rebuild_reuses_unchanged_files(tmp_path):
    cfg = fakes.make_project(tmp_path / "p")
    r1 = build(cfg)
    m1 = json.loads((r1.release_dir / "manifest.json").read_text())
    assert m1["validation"]["ok"]
    assert build(cfg).up_to_date

    (tmp_path / "p/data/raw" / TILE).write_text("new survey\n")
    r2 = build(cfg)
    assert r2.build_id != r1.build_id
    a, b = r1.release_dir, r2.release_dir
    changed = "fake_terrain/dgm1_32_352_5700_1_nw.bin"
    tiles = sorted(p.relative_to(b).as_posix() for p in (b / "fake_terrain").glob("*.bin"))
    assert len(tiles) == 6
    for rel in tiles:
        same_inode = os.stat(a / rel).st_ino == os.stat(b / rel).st_ino
        assert same_inode == (rel != changed), rel  # unchanged tiles are hard links, not rewritten
    assert (a / changed).read_bytes() != (b / changed).read_bytes()
    # the internal layer did not depend on the changed tile: reused as a whole
    rec = json.loads((b / ".twin/build-record.json").read_text())
    assert rec["changes"]["inputs"]["changed"] == [TILE]
    assert "panoramas" in rec["changes"]["reuse"]["layers_reused"]
    assert (
        os.stat(a / "street_panoramas/pano_secret_0.bin").st_ino
        == os.stat(b / "street_panoramas/pano_secret_0.bin").st_ino
    )
    # every layer's root tileset carries the build id
    for lay in json.loads((b / "manifest.json").read_text())["layers"]:
        if lay.get("tileset"):
            assert json.loads((b / lay["tileset"]).read_text())["asset"]["tilesetVersion"] == r2.build_id
    # the previous release is untouched by the stamping (no in-place writes through hard links)
    assert json.loads((a / "fake_terrain/tileset.json").read_text())["asset"]["tilesetVersion"] == r1.build_id

    # incremental == from scratch, byte for byte
    import shutil

    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "p/configs", fresh / "configs")
    shutil.copytree(tmp_path / "p/data/raw", fresh / "data/raw")
    r3 = build(fresh / "configs/fake.yaml")
    assert r3.build_id == r2.build_id
    assert tree(r3.release_dir) == tree(b)


def test_bad_tile_fails_and_keeps_current(tmp_path, capsys):
    cfg = fakes.make_project(tmp_path / "p")
    r1 = build(cfg)
    (tmp_path / "p/data/raw" / TILE).write_bytes(b"\xff\xfe garbage \x00\x81")  # not UTF-8: unreadable
    with pytest.raises(InputError) as ei:
        build(cfg)
    assert "dgm1_32_352_5700_1_nw.txt" in str(ei.value)
    out = tmp_path / "p/data/out"
    assert (out / "current").resolve() == r1.release_dir.resolve()
    from pipeline.release.status import release_status

    st = release_status(out)
    assert st["current"]["build_id"] == r1.build_id
    assert st["last_build"]["state"] == "failed" and st["last_build"]["exit_code"] == EXIT_INPUT
    assert "dgm1_32_352_5700_1_nw.txt" in st["last_build"]["error"]
    # the CLI says the same and exits with the input-error code
    from pipeline.cli.main import main

    assert main(["build", str(cfg), "--quiet"]) == EXIT_INPUT
    assert "dgm1_32_352_5700_1_nw.txt" in capsys.readouterr().err
    assert main(["status", "-c", str(cfg)]) == 1
    text = capsys.readouterr().out
    assert "failed" in text and r1.build_id in text

    # with on_bad_tile: skip the tile is left out and reported
    r2 = build(cfg, **{"release.on_bad_tile": "skip"})
    m = json.loads((r2.release_dir / "manifest.json").read_text())
    assert [s["path"] for s in m["skipped_inputs"]] == [TILE]
    assert any("skipped corrupt input" in w and TILE in w for w in m["warnings"])
    assert not (r2.release_dir / "fake_terrain/dgm1_32_352_5700_1_nw.bin").exists()
    assert len(list((r2.release_dir / "fake_terrain").glob("*.bin"))) == 5


def test_status_rollback_keep_and_lock(tmp_path, capsys):
    from pipeline.cli.main import main
    from pipeline.release.lock import build_lock

    cfg = fakes.make_project(tmp_path / "p")
    out = tmp_path / "p/data/out"
    ids = []
    for k in range(4):  # keep: 3
        (tmp_path / "p/data/raw" / TILE).write_text(f"epoch {k}\n")
        ids.append(build(cfg).build_id)
    rels = sorted(p.name for p in (out / "releases").iterdir() if not p.name.startswith("."))
    assert rels == sorted(ids[1:])
    assert main(["status", "-c", str(cfg), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["current"]["build_id"] == ids[-1]
    assert st["last_build"]["state"] == "success"
    assert st["last_build"]["changes"]["inputs"]["changed"] == [TILE]
    assert [r["build_id"] for r in st["releases"]] == ids[1:]

    assert main(["rollback", "-c", str(cfg)]) == 0
    assert (out / "current").resolve().name == ids[2]
    assert main(["rollback", "-c", str(cfg)]) == 0
    assert (out / "current").resolve().name == ids[1]
    assert main(["rollback", "-c", str(cfg)]) == EXIT_RELEASE  # nothing older on disk
    assert "nothing to roll back" in capsys.readouterr().err
    assert (out / "current").resolve().name == ids[1]

    with build_lock(out):  # a build is running: the second one refuses with its own exit code
        assert main(["build", str(cfg), "--quiet"]) == EXIT_LOCKED
        err = capsys.readouterr().err
        assert "another build is running" in err and f"pid {os.getpid()}" in err
        assert main(["rollback", "-c", str(cfg)]) == EXIT_LOCKED


def test_failed_layer_resumes_from_partial(tmp_path, monkeypatch):
    """A build that dies in the middle of a layer leaves current untouched; the rerun reuses the tiles the
    dead build finished (from its staging folder) and ends with the same bytes as a clean build."""
    cfg = fakes.make_project(tmp_path / "p", n_tiles=8)
    r0 = build(cfg)
    for k in range(8):
        (tmp_path / "p/data/raw/dgm" / f"dgm1_32_{350 + k}_5700_1_nw.txt").write_text(f"v2 {k}\n")
    calls = []
    real = fakes.render_tile

    def dying(a, b):
        if len(calls) == 5:
            raise KeyboardInterrupt  # like Ctrl-C / a scheduler killing the job
        calls.append(a)
        return real(a, b)

    monkeypatch.setattr(fakes, "render_tile", dying)
    # serial rendering (no client) so the monkeypatch applies in this process
    from pipeline.orchestrate import build as build_mod

    orig = build_mod.BuildContext

    class NoClient(orig):
        def __setattr__(self, k, v):
            super().__setattr__(k, None if k == "client" else v)

    monkeypatch.setattr(build_mod, "BuildContext", NoClient)
    with pytest.raises(KeyboardInterrupt):
        build(cfg)
    out = tmp_path / "p/data/out"
    assert (out / "current").resolve() == r0.release_dir.resolve()
    assert json.loads((out / ".twin/last-build.json").read_text())["state"] == "failed"
    calls.clear()
    monkeypatch.setattr(fakes, "render_tile", real)
    r1 = build(cfg)
    rec = json.loads((r1.release_dir / ".twin/build-record.json").read_text())
    # 5 tiles the dead build finished + the panorama layer (4 files, its root tileset re-stamped)
    assert rec["changes"]["reuse"]["files_reused"] == 5 + 3
    assert not [p for p in (out / "releases").iterdir() if p.name.startswith(".")]  # partials cleaned
    import shutil

    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "p/configs", fresh / "configs")
    shutil.copytree(tmp_path / "p/data/raw", fresh / "data/raw")
    monkeypatch.setattr(build_mod, "BuildContext", orig)
    assert tree(build(fresh / "configs/fake.yaml").release_dir) == tree(r1.release_dir)


def test_public_export_leaks_nothing_internal(tmp_path, capsys):
    from pipeline.cli.main import main

    cfg = fakes.make_project(tmp_path / "p")
    r = build(cfg)
    manifest = json.loads((r.release_dir / "manifest.json").read_text())
    internal = [lay for lay in manifest["layers"] if lay["access"] == "internal"]
    assert [lay["name"] for lay in internal] == ["panoramas"]
    dest = tmp_path / "www" / "public"
    assert main(["publish", "-c", str(cfg), "--public", str(dest)]) == 0
    assert "left out: panoramas" in capsys.readouterr().out

    # everything a reader could use to find internal data: names, paths, input files, their hashes
    secrets = {"panoramas", "street_panoramas", "pano_secret", "gsc/", "IMG_0"}
    secrets |= {i["sha256"] for i in manifest["inputs"] if i["role"] == "panoramas"}
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert {p.relative_to(dest).as_posix() for p in files} >= {
        "manifest.json",
        "index.html",
        "fake_terrain/tileset.json",
    }
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{p} leaks {s!r}"
            assert s not in p.relative_to(dest).as_posix()
    pm = json.loads((dest / "manifest.json").read_text())
    assert [lay["name"] for lay in pm["layers"]] == ["fake_terrain", "viewer"]
    assert all(i["role"] == "dgm" for i in pm["inputs"])
    # every tileset URI of the export resolves inside the export
    from pipeline.release.ops import validate_path

    assert validate_path(dest, check_gltf=False)["ok"]

    # a public layer that references internal data is refused, and nothing is exported
    ts = r.release_dir / "fake_terrain/tileset.json"
    doc = json.loads(ts.read_text())
    doc["root"]["children"].append(
        {
            "boundingVolume": doc["root"]["boundingVolume"],
            "geometricError": 0,
            "content": {"uri": "../street_panoramas/tileset.json"},
        }
    )
    ts.unlink()  # (a hard link: replace, never write through it)
    ts.write_text(json.dumps(doc))
    dest2 = tmp_path / "www" / "public2"
    assert main(["publish", "-c", str(cfg), "--public", str(dest2)]) == EXIT_RELEASE
    assert "street_panoramas" in capsys.readouterr().err
    assert not dest2.exists()


def test_cache_get_or_build_and_gc(tmp_path):
    from pipeline.orchestrate.cache import Cache, content_key

    c = Cache(tmp_path / "cache", budget=10_000)
    calls = []

    def builder(size):
        def b(tmp: Path):
            calls.append(size)
            tmp.write_bytes(b"x" * size)

        return b

    p1 = c.get_or_build(["tile", "sha-1"], builder(4000))
    assert c.get_or_build(["tile", "sha-1"], builder(4000)) == p1 and calls == [4000]
    p2 = c.get_or_build(["tile", "sha-2"], builder(4000))
    os.utime(p2, (1, 1))  # p2 is the least recently used
    p3 = c.get_or_build(["dir", "sha-3"], lambda t: (t.mkdir(), (t / "a").write_bytes(b"y" * 4000)))
    assert p3.is_dir() and c.usage() == 12_000
    rep = c.gc()
    assert rep.removed == 1 and rep.after == 8000 and not p2.exists() and p1.exists() and p3.exists()

    def boom(tmp: Path):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        c.get_or_build(["tile", "sha-4"], boom)
    assert c.get(c.key(["tile", "sha-4"])) is None and not list(c.objects.glob("*/.tmp-*"))
    assert content_key({"b": 1, "a": [1, 2]}) == content_key({"a": [1, 2], "b": 1})
