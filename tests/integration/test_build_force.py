"""`twin build --force`: every layer is rebuilt from its inputs (no reuse from the earlier release, no
content-cache hit) and the release is byte-identical to the one it replaces (issue 16: `--force` used to
rebuild nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import load_tiny_config

OVERRIDES = {
    "layers.mobile_points.enabled": False,
    "layers.panoramas.enabled": False,
    "layers.terrain.enabled": False,
    "layers.viewer.enabled": False,
    "layers.aerial_points.colour_from_orthophoto": False,
    "release.validate_gltf": False,
}
# per-build records that name times and durations; everything else must keep its bytes
VOLATILE = ("manifest.json", "build.log.jsonl", ".twin/")


def _build(project: Path, force: bool = False):
    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build

    return run_build(load_tiny_config(project, OVERRIDES), workers=2, force=force, log=BuildLog(quiet=True))


def _snapshot(release: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(release.rglob("*")):
        rel = p.relative_to(release).as_posix()
        if p.is_file() and not rel.startswith(VOLATILE) and "report" not in rel:
            out[rel] = p.read_bytes()
    return out


def _events(release: Path) -> list[dict]:
    lines = (release / "build.log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
def test_force_rebuilds_every_layer_and_keeps_the_bytes(tiny_project, tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_FINGERPRINT", "test-build-force")
    proj = tmp_path / "p"
    shutil.copytree(tiny_project / "configs", proj / "configs")
    shutil.copytree(tiny_project / "data" / "raw", proj / "data" / "raw")

    first = _build(proj)
    before = _snapshot(first.release_dir)
    layers = sorted(e["layer"] for e in _events(first.release_dir) if e.get("event") == "layer_built")
    assert {"aerial_points", "buildings"} <= set(layers)

    again = _build(proj)  # unchanged: up to date, nothing built
    assert again.up_to_date

    cache_entries = {p: p.stat().st_mtime for p in (proj / "data" / "cache" / "objects").glob("*/*")}
    assert cache_entries
    forced = _build(proj, force=True)
    assert not forced.up_to_date
    assert forced.build_id == first.build_id and forced.release_dir == first.release_dir

    events = _events(forced.release_dir)
    built = sorted(e["layer"] for e in events if e.get("event") == "layer_built")
    reused = [e["layer"] for e in events if e.get("event") == "layer_reused"]
    assert built == layers and reused == []
    record = json.loads((forced.release_dir / ".twin" / "build-record.json").read_text())["changes"]["reuse"]
    assert record["layers_reused"] == [] and record["files_reused"] == 0
    # the content cache was not read: every entry an earlier build wrote was written again
    old = [p for p, t in cache_entries.items() if p.exists() and p.stat().st_mtime <= t]
    assert old == [], old[:5]

    after = _snapshot(forced.release_dir)
    assert after.keys() == before.keys() and len(after) > 50
    assert [k for k in after if after[k] != before[k]] == []


def test_cache_refresh_rebuilds_entries_older_than_the_build(tmp_path):
    """The cache of a forced build: an entry from before the build is rebuilt and replaced (directory and
    pickled result alike); an entry written during the build is a hit."""
    import os
    import time

    from pipeline.orchestrate.cache import Cache

    calls: list[str] = []

    def build_dir(tmp: Path, text: str) -> None:
        calls.append(text)
        tmp.mkdir()
        (tmp / "a.txt").write_text(text)

    old = Cache(tmp_path)
    entry = old.get_or_build(["k"], lambda t: build_dir(t, "old"))
    assert old.call(["r"], lambda: "old result") == "old result"
    for p in (entry, old.path_for(old.key(["r"]))):
        os.utime(p, (time.time() - 60, time.time() - 60))

    forced = Cache(tmp_path, refresh_before=time.time())
    assert forced.get(forced.key(["k"])) is None
    again = forced.get_or_build(["k"], lambda t: build_dir(t, "new"))
    assert again == entry and (again / "a.txt").read_text() == "new"
    assert forced.get_or_build(["k"], lambda t: build_dir(t, "third")) == entry
    assert calls == ["old", "new"]
    assert forced.call(["r"], lambda: "new result") == "new result"
    assert forced.call(["r"], lambda: "third result") == "new result"
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".tmp")]
