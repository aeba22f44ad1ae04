"""pipeline.fsutil: the one delete helper (owned only, rename first), the atomic exchange, permissions."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline import fsutil
from pipeline.fsutil import (
    DELETING_PREFIX,
    UnsafeDeleteError,
    exchange,
    finish_deletes,
    make_world_readable,
    remove_owned,
)


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_refuses_what_it_cannot_prove_it_made(tmp_path):
    own = tmp_path / "releases"
    (own / "r1").mkdir(parents=True)
    (tmp_path / "raw" / "dgm").mkdir(parents=True)
    (tmp_path / "raw" / "dgm" / "tile.xyz").write_text("data")
    before = _tree(tmp_path)
    for path, kw in [
        (tmp_path / "raw", {"owned_by": own}),  # outside the owned folder
        (own, {"owned_by": own}),  # the owned folder itself
        (tmp_path / "raw", {"marker": ".twin-export"}),  # no marker
        (own / ".." / "raw", {"owned_by": own}),  # `..` does not sneak out
        (tmp_path / "raw", {}),
    ]:
        with pytest.raises(UnsafeDeleteError):
            remove_owned(path, **kw)
    assert _tree(tmp_path) == before


def test_link_inside_an_owned_folder_is_removed_not_followed(tmp_path):
    own = tmp_path / "releases"
    own.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("keep")
    (own / "link").symlink_to(data)
    assert remove_owned(own / "link", owned_by=own)
    assert not os.path.lexists(own / "link") and (data / "keep.txt").read_text() == "keep"


def test_marker_proves_ownership(tmp_path):
    d = tmp_path / "www" / "public"
    d.mkdir(parents=True)
    (d / ".twin-export").write_text("x")
    (d / "a.json").write_text("{}")
    assert remove_owned(d, marker=".twin-export")
    assert _tree(tmp_path) == ["www"]
    assert not remove_owned(d, marker=".twin-export")  # nothing left to delete


def test_renames_first_so_a_killed_delete_leaves_no_half_folder(tmp_path, monkeypatch):
    own = tmp_path / "releases"
    (own / "r1" / "tiles").mkdir(parents=True)
    (own / "r1" / "manifest.json").write_text("{}")
    (own / "r1" / "tiles" / "0.glb").write_bytes(b"glb")

    def killed(path, ignore_errors=False):
        raise SystemExit("killed in the middle of rmtree")

    monkeypatch.setattr(fsutil.shutil, "rmtree", killed)
    with pytest.raises(SystemExit):
        remove_owned(own / "r1", owned_by=own)
    left = [p.name for p in own.iterdir()]
    assert not (own / "r1").exists() and len(left) == 1 and left[0].startswith(DELETING_PREFIX + "r1-")
    monkeypatch.undo()
    assert finish_deletes(own) == left
    assert list(own.iterdir()) == []


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "new").write_text("new")
    (b / "old").write_text("old")
    if not exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    assert [p.name for p in b.iterdir()] == ["new"] and [p.name for p in a.iterdir()] == ["old"]


def test_exchange_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_NO_RENAME_EXCHANGE", "1")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert exchange(tmp_path / "a", tmp_path / "b") is False


def test_make_world_readable_only_adds_bits(tmp_path):
    d = tmp_path / "rel" / "aerial_points"
    d.mkdir(parents=True)
    f = d / "0.glb"
    f.write_bytes(b"x")
    x = d / "tool.sh"
    x.write_text("#!/bin/sh")
    os.chmod(f, 0o600)
    os.chmod(x, 0o700)
    os.chmod(d, 0o700)
    make_world_readable(tmp_path / "rel")
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE(x.stat().st_mode) == 0o744
