"""Incremental release build after one changed aerial tile (tiny district, real layers).

Build A, change one LAZ tile, build B incrementally; build B again from scratch in another project folder
(no previous release, empty cache): the layer outputs are byte-identical, the incremental build decoded and
re-read only the changed tile, and unchanged point/building tiles keep the inode of release A.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import load_tiny_config

# layers that do not read the aerial point cloud are switched off to keep the test fast
OVERRIDES = {
    "layers.mobile_points.enabled": False,
    "layers.panoramas.enabled": False,
    "layers.terrain.enabled": False,
    "layers.viewer.enabled": False,
    "layers.aerial_points.colour_from_orthophoto": False,
    "release.validate_gltf": False,
}
COMPARED = ("aerial_points/", "buildings/", "overlays/", "change/")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copytree(src / "data" / "raw", dst / "data" / "raw")
    return dst


def _files(release: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(release.rglob("*")):
        rel = p.relative_to(release).as_posix()
        if p.is_file() and rel.startswith(COMPARED):
            out[rel] = p
    return out


def _build(project: Path):
    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build

    return run_build(load_tiny_config(project, OVERRIDES), workers=2, log=BuildLog(quiet=True))


@pytest.mark.slow  # long end-to-end run: `make test-all` (CI), not `make test`
def test_incremental_equals_clean_build_and_reuses_tiles(tiny_project, tmp_path, monkeypatch):
    from bench.incremental import change_point_tile

    # the three builds must see one pipeline version even if the code is edited while the test runs
    monkeypatch.setenv("TWIN_FINGERPRINT", "test-incremental-build")

    proj = _copy(tiny_project, tmp_path / "inc")
    r_a = _build(proj)
    tiles = sorted((proj / "data" / "raw" / "aerial" / "2024").glob("*.laz"))
    changed = tiles[1]
    change_point_tile(changed)

    # cache look-ups run on the workers: count the new cache entries instead of calls
    before = {p.name for p in (proj / "data" / "cache" / "objects").glob("*/*")}
    r_b = _build(proj)
    after = {p.name for p in (proj / "data" / "cache" / "objects").glob("*/*")}
    assert not r_b.up_to_date and r_b.release_dir != r_a.release_dir
    new_entries = after - before
    assert new_entries, "the changed tile must produce new cache entries"
    assert len(new_entries) < len(before) / 2, (len(new_entries), len(before))

    record = json.loads((r_b.release_dir / ".twin" / "build-record.json").read_text())["changes"]
    assert "mobile_points" not in record["reuse"]["layers_built"]

    clean = _copy(tiny_project, tmp_path / "clean")
    shutil.copy2(changed, clean / "data" / "raw" / "aerial" / "2024" / changed.name)
    r_c = _build(clean)
    assert r_c.build_id == r_b.build_id

    fb, fc = _files(r_b.release_dir), _files(r_c.release_dir)
    assert fb.keys() == fc.keys()
    assert len(fb) > 50
    differ = [k for k in fb if fb[k].read_bytes() != fc[k].read_bytes()]
    assert differ == []

    # unchanged point and building tiles: the same inode as in release A (hard links, not rewritten)
    fa = _files(r_a.release_dir)
    content = [k for k in fb if k.endswith(".glb") and k in fa]
    same_inode = [k for k in content if os.stat(fb[k]).st_ino == os.stat(fa[k]).st_ino]
    changed_bytes = [k for k in content if fb[k].read_bytes() != fa[k].read_bytes()]
    assert same_inode, "no tile was reused"
    assert changed_bytes, "the raised patch must change some tiles"
    # every tile with unchanged bytes is a hard link (reused or deduplicated), none was stored twice
    unchanged = [k for k in content if k not in changed_bytes]
    assert all(os.stat(fb[k]).st_ino == os.stat(fa[k]).st_ino for k in unchanged)


@pytest.mark.slow  # long end-to-end run: `make test-all` (CI), not `make test`
def test_orthophoto_tile_change_redoes_only_its_tiles(tiny_project, tmp_path, monkeypatch):
    """One changed orthophoto tile: the point colours, roof-point NDVI filter and footprint NDVI of the
    other tiles are reused (their keys name only the orthophoto tiles they lie on), and the release equals
    a clean build of the changed delivery byte for byte."""
    from bench.incremental import change_raster_tile

    monkeypatch.setenv("TWIN_FINGERPRINT", "test-incremental-orthophoto")
    overrides = {**OVERRIDES, "layers.aerial_points.colour_from_orthophoto": True}

    def build(project: Path):
        from pipeline.buildlog import BuildLog
        from pipeline.orchestrate.build import run_build

        return run_build(load_tiny_config(project, overrides), workers=2, log=BuildLog(quiet=True))

    proj = _copy(tiny_project, tmp_path / "inc")
    r_a = build(proj)
    dop = sorted((proj / "data" / "raw" / "dop").glob("*.tif"))
    assert len(dop) == 4
    changed = dop[0]
    change_raster_tile(changed, delta=60)
    objects = proj / "data" / "cache" / "objects"
    before = {p.name for p in objects.glob("*/*")}
    r_b = build(proj)
    new_entries = [p for p in objects.glob("*/*") if p.name not in before]
    assert not r_b.up_to_date
    # decoded again: the changed tile's point file and the one north of it (points on the line between
    # them lie in the changed tile), not all four (with every orthophoto hash in every key: 4 and 17 of 61)
    spills = [p for p in new_entries if p.is_dir() and any(f.suffix == ".rec" for f in p.iterdir())]
    assert len(spills) == 2, len(spills)
    assert 0 < len(new_entries) < len(before) / 4, (len(new_entries), len(before))

    clean = _copy(tiny_project, tmp_path / "clean")
    shutil.copy2(changed, clean / "data" / "raw" / "dop" / changed.name)
    r_c = build(clean)
    fb, fc = _files(r_b.release_dir), _files(r_c.release_dir)
    assert fb.keys() == fc.keys() and len(fb) > 50
    assert [k for k in fb if fb[k].read_bytes() != fc[k].read_bytes()] == []
    fa = _files(r_a.release_dir)
    assert [k for k in fb if k in fa and fb[k].read_bytes() != fa[k].read_bytes()], (
        "the change changed nothing"
    )
