"""Terrain and overlay quadtree tilesets split into external files: the root does not grow with the region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.tiles.terrain_glb import LEVELS_PER_FILE, TerrainTileNode, terrain_tilesets
from pipeline.tiles.tileset import dumps, schema_errors

LEAF_M = 62.5  # leaf tile side; the region's side doubles -> one more level


def _quadtree(levels: int) -> TerrainTileNode:
    """Full quadtree of `levels` levels over a square of LEAF_M * 2**(levels-1), every tile with content."""
    side = LEAF_M * 2 ** (levels - 1)

    def node(level: int, tx: int, ty: int) -> TerrainTileNode:
        size = side / 2**level
        lo = np.array([tx * size, ty * size, 10.0 + tx % 3])
        hi = np.array([(tx + 1) * size, (ty + 1) * size, 60.0 + ty % 5])
        kids = []
        if level + 1 < levels:
            kids = [node(level + 1, 2 * tx + dx, 2 * ty + dy) for dy in (0, 1) for dx in (0, 1)]
        ge = 0.0 if not kids else 0.5 * 2.0 ** (levels - 1 - level)
        return TerrainTileNode(level, tx, ty, lo, hi, ge, f"tiles/{level}/{tx}/{ty}.glb", kids)

    return node(0, 0, 0)


def _write(docs: dict, out: Path) -> None:
    for name, doc in docs.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(dumps(doc))


@pytest.mark.parametrize("levels", [2, 5, 6])
def test_every_tile_reachable_once_and_schema_valid(tmp_path: Path, levels: int) -> None:
    from pipeline.release.validate import _walk_tileset

    root = _quadtree(levels)
    docs = terrain_tilesets(root, list(np.eye(4).ravel()), "b1")
    assert next(iter(docs)) == "tileset.json"
    for name, doc in docs.items():
        assert schema_errors(doc) == [], name
        assert doc["root"]["refine"] == "REPLACE"
        # only the root names the release: an unchanged area's external file is byte-identical next time
        assert ("tilesetVersion" in doc["asset"]) == (name == "tileset.json")
    _write(docs, tmp_path)
    glbs = sorted(
        {f"tiles/{lv}/{x}/{y}.glb" for lv in range(levels) for x in range(2**lv) for y in range(2**lv)}
    )
    for g in glbs:
        (tmp_path / g).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / g).write_bytes(b"")
    errors: list[str] = []
    seen: set[Path] = set()
    found: list[Path] = []
    _walk_tileset((tmp_path / "tileset.json").resolve(), errors, seen, found)
    assert errors == []
    assert len(seen) == len(docs)
    # every tile's content exactly once, through the relative references of nested files
    assert sorted(p.relative_to(tmp_path.resolve()).as_posix() for p in found) == glbs
    externals = sum(4**lv for lv in range(LEVELS_PER_FILE, levels, LEVELS_PER_FILE))
    assert len(docs) == 1 + externals


def test_reference_tile_equals_the_external_root(tmp_path: Path) -> None:
    docs = terrain_tilesets(_quadtree(5), list(np.eye(4).ravel()), "b1")
    refs = []
    stack = [docs["tileset.json"]["root"]]
    while stack:
        t = stack.pop()
        if t.get("content", {}).get("uri", "").endswith(".json"):
            refs.append(t)
        stack.extend(t.get("children", []))
    assert len(refs) == 4**LEVELS_PER_FILE
    for ref in refs:
        ext = docs[ref["content"]["uri"]]["root"]
        assert ext["boundingVolume"] == ref["boundingVolume"]
        assert ext["geometricError"] == ref["geometricError"]
        assert ext["content"]["uri"].startswith("../tiles/")


def test_root_size_bounded_4_vs_16_region_tiles() -> None:
    """4 region tiles (2 km square) vs 16 (4 km square) at the same leaf size: the inline tree would grow
    4x; the root file stays the same size within 5 % (number formatting), the deeper files carry the rest."""
    transform = list(np.eye(4).ravel())
    small = terrain_tilesets(_quadtree(6), transform, "b1")  # 2 km: 32 x 32 leaves of 62.5 m
    large = terrain_tilesets(_quadtree(7), transform, "b1")  # 4 km: 64 x 64 leaves
    s, g = len(dumps(small["tileset.json"])), len(dumps(large["tileset.json"]))
    assert abs(g - s) / s < 0.05, (s, g)
    assert s < 20_000
    total_small = sum(len(dumps(d)) for d in small.values())
    total_large = sum(len(dumps(d)) for d in large.values())
    assert total_large > 3.5 * total_small  # the tree itself did grow with the area
    # no file of the split grows with the region either
    assert max(len(dumps(d)) for d in large.values()) < 20_000


def test_deterministic() -> None:
    a = terrain_tilesets(_quadtree(5), list(np.eye(4).ravel()), "b1")
    b = terrain_tilesets(_quadtree(5), list(np.eye(4).ravel()), "b1")
    assert list(a) == list(b)
    assert all(dumps(a[k]) == dumps(b[k]) for k in a)


# ---- feature tiles on a grid (parcels, change, zoning overlays) -------------------------------------------


def _grid(n: int, tile_m: float = 250.0) -> list:
    """n x n feature tiles of `tile_m` (n = 8: 4 region tiles of 1 km; n = 16: 16 of them)."""
    out = []
    for c in range(n):
        for r in range(n):
            lo = np.array([c * tile_m, r * tile_m, 40.0 + c % 4])
            out.append(
                (
                    1448 + c,
                    22864 + r,
                    f"tiles/{1448 + c}_{22864 + r}.glb",
                    lo,
                    lo + np.array([tile_m, tile_m, 12.0]),
                )
            )
    return out


def test_grid_root_bounded_4_vs_16_region_tiles(tmp_path: Path) -> None:
    from pipeline.release.validate import _walk_tileset
    from pipeline.tiles.overlay_glb import grid_tilesets

    transform = list(np.eye(4).ravel())
    small = grid_tilesets(_grid(8), transform, "b1")
    large = grid_tilesets(_grid(16), transform, "b1")
    s, g = len(dumps(small["tileset.json"])), len(dumps(large["tileset.json"]))
    # a flat root listing every tile grew 4x (about 250 bytes per tile)
    assert abs(g - s) / s < 0.05, (s, g)
    assert max(len(dumps(d)) for d in large.values()) < 20_000
    assert grid_tilesets(_grid(16), transform, "b1") == large  # deterministic
    for name, doc in large.items():
        assert schema_errors(doc) == [], name
        assert doc["root"]["refine"] == "ADD"
    # every feature tile reachable exactly once through the files; inner tiles carry no content
    _write(large, tmp_path)
    for _c, _r, uri, _lo, _hi in _grid(16):
        (tmp_path / uri).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / uri).write_bytes(b"")
    errors: list[str] = []
    found: list[Path] = []
    _walk_tileset((tmp_path / "tileset.json").resolve(), errors, set(), found)
    assert errors == []
    assert sorted(p.relative_to(tmp_path.resolve()).as_posix() for p in found) == sorted(
        t[2] for t in _grid(16)
    )
    root = large["tileset.json"]["root"]
    assert "content" not in root and "transform" in root
    lo, hi = np.array(root["boundingVolume"]["box"][:3]), np.array(root["boundingVolume"]["box"][3:12:4])
    assert np.allclose(lo - hi, [-0.01, -0.01, 40 - 0.01]) and np.allclose(lo + hi, [4000.01, 4000.01, 55.01])


def test_grid_single_tile() -> None:
    from pipeline.tiles.overlay_glb import grid_tilesets

    docs = grid_tilesets([(3, 4, "tiles/3_4.glb", np.zeros(3), np.ones(3))], list(np.eye(4).ravel()), "s")
    assert list(docs) == ["tileset.json"]
    root = docs["tileset.json"]["root"]
    assert root["geometricError"] == 50.0 and root["children"][0]["content"] == {"uri": "tiles/3_4.glb"}
    assert schema_errors(docs["tileset.json"]) == []
