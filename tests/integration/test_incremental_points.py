"""Incremental point tiling: per-unit decode cache + per-bin cache (pipeline/orchestrate/points_cache.py).

One changed input tile of four: only its decode units are decoded again, only the bins it touches are
re-tiled, the other bins' tiles are hard-linked (same inode) from the cache, and the result equals a clean
build of the changed inputs byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import load_tiny_config


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _opts(files: list[Path], cache, cfg):
    from pipeline.orchestrate.points_plan import PointTilingOptions

    return PointTilingOptions(
        crs_cfg=cfg.crs,
        class_scheme="adv",
        max_bin_points=20_000,
        memory="1GB",
        cache=cache,
        input_sha256=tuple(sorted((str(f.resolve()), _sha(f)) for f in files)) if cache else (),
    )


def test_one_changed_tile_redoes_only_its_units_and_bins(tiny_project, tmp_path, monkeypatch):
    from bench.incremental import change_point_tile
    from pipeline.orchestrate import points_cache
    from pipeline.orchestrate.cache import Cache
    from pipeline.orchestrate.points_run import tile_pointcloud

    cfg = load_tiny_config(tiny_project)
    src = sorted((tiny_project / "data" / "raw" / "aerial" / "2024").glob("*.laz"))
    assert len(src) == 4
    raw = tmp_path / "raw"
    raw.mkdir()
    files = []
    for p in src:
        shutil.copy2(p, raw / p.name)
        files.append(raw / p.name)
    cache = Cache(tmp_path / "cache")

    calls = {"decode": 0, "bin": 0}
    real_decode, real_bin = points_cache.decode_to_spill, points_cache.process_bin

    def count_decode(*a, **k):
        calls["decode"] += 1
        return real_decode(*a, **k)

    def count_bin(*a, **k):
        calls["bin"] += 1
        return real_bin(*a, **k)

    monkeypatch.setattr(points_cache, "decode_to_spill", count_decode)
    monkeypatch.setattr(points_cache, "process_bin", count_bin)

    a = tile_pointcloud(files, tmp_path / "a", _opts(files, cache, cfg))
    units_a, bins_a = calls["decode"], calls["bin"]
    assert bins_a == a.bins >= 4 and units_a >= 4

    # no change: nothing decoded, nothing tiled, identical bytes
    calls.update(decode=0, bin=0)
    same = tile_pointcloud(files, tmp_path / "same", _opts(files, cache, cfg))
    assert calls == {"decode": 0, "bin": 0}
    fa, fs = _files(tmp_path / "a"), _files(tmp_path / "same")
    assert fa.keys() == fs.keys()
    assert all(fa[k].read_bytes() == fs[k].read_bytes() for k in fa)
    assert same.checksum == a.checksum

    # one tile of four changed: one file's units decoded, a part of the bins re-tiled
    change_point_tile(files[1])
    calls.update(decode=0, bin=0)
    inc = tile_pointcloud(files, tmp_path / "inc", _opts(files, cache, cfg))
    assert 1 <= calls["decode"] <= units_a // 2
    assert 1 <= calls["bin"] < inc.bins
    reused_bins = inc.bins - calls["bin"]

    full = tile_pointcloud(files, tmp_path / "full", _opts(files, None, cfg))
    fi, ff = _files(tmp_path / "inc"), _files(tmp_path / "full")
    assert fi.keys() == ff.keys()
    differ = [k for k in fi if fi[k].read_bytes() != ff[k].read_bytes()]
    assert differ == []
    assert (inc.points_out, inc.checksum) == (full.points_out, full.checksum)

    # tiles of unchanged bins are the same inode as in build A (hard links, not rewritten)
    same_inode = [
        k
        for k in fi
        if k.startswith("content/") and k in fa and os.stat(fi[k]).st_ino == os.stat(fa[k]).st_ino
    ]
    changed = [k for k in fi if k in fa and fi[k].read_bytes() != fa[k].read_bytes()]
    assert reused_bins >= 1 and len(same_inode) >= 1  # (a bin may promote all its points upwards)
    assert changed and not set(changed) & set(same_inode)


@pytest.mark.parametrize("fmt", ["1.0"])
def test_cache_key_follows_the_tile_format(tiny_project, tmp_path, fmt):
    """A config change (tile format) must not reuse bins built for another format."""
    import dataclasses

    from pipeline.orchestrate.cache import Cache
    from pipeline.orchestrate.points_run import tile_pointcloud

    cfg = load_tiny_config(tiny_project)
    files = sorted((tiny_project / "data" / "raw" / "aerial" / "2024").glob("*.laz"))[:1]
    cache = Cache(tmp_path / "cache")
    tile_pointcloud(files, tmp_path / "a", _opts(files, cache, cfg))
    opts = dataclasses.replace(_opts(files, cache, cfg), format=fmt)
    tile_pointcloud(files, tmp_path / "b", opts)
    assert list((tmp_path / "b").rglob("*.pnts")) and not list((tmp_path / "b").rglob("*.glb"))
