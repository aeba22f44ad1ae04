"""Only the root tileset names the release: external child tilesets are identical across releases, so a
child reused from an earlier release equals what a clean build writes (incremental == clean, byte for byte)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.tiles.implicit import OctreeTile, write_explicit


def _chain(depth: int) -> OctreeTile:
    """A root with one child per level down to `depth` (every node has content and bounds)."""
    root = node = OctreeTile(0, 0, 0, 0, uri="r.glb", count=1, lo=np.zeros(3), hi=np.full(3, 64.0))
    for d in range(1, depth + 1):
        size = 64.0 / 2**d
        child = OctreeTile(d, 0, 0, 0, uri=f"{d}.glb", count=1, lo=np.zeros(3), hi=np.full(3, size))
        node.children.append(child)
        node = child
    return root


def _write(out: Path, version: str) -> dict[str, bytes]:
    names = write_explicit(
        _chain(7),
        out,
        spacing=lambda d: 8.0 / 2**d,
        transform=[1.0] * 16,
        version="1.1",
        tileset_version=version,
        every=2,
    )
    return {n: (out / n).read_bytes() for n in names}


def test_only_the_root_tileset_carries_the_release_version(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", "build-a")
    b = _write(tmp_path / "b", "build-b")
    children = [n for n in a if n != "tileset.json"]
    assert len(children) >= 3  # levels 2, 4, 6 in files of their own
    assert json.loads(a["tileset.json"])["asset"]["tilesetVersion"] == "build-a"
    assert json.loads(b["tileset.json"])["asset"]["tilesetVersion"] == "build-b"
    for n in children:
        assert "tilesetVersion" not in json.loads(a[n])["asset"], n
        assert a[n] == b[n], n
