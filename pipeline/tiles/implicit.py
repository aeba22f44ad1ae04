"""Octree tilesets for point tiles: explicit `tileset.json` split into external tilesets every few levels,
or implicit octree tiling with subtree files.

Input is the flat list of written tiles (depth, x, y, z, bounds, uri). Bounding volumes are tight boxes (the
union of a tile's own points and its children's boxes) in the project ENU frame; the root tile carries the
ENU -> ECEF transform. Geometric error of a tile = its point spacing (octree cell size / 128); it halves at
every level and is never 0. The tileset-level geometric error is at least the root box's diagonal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.tiles.tileset import asset, box_from_bounds, dumps

EXTERNAL_EVERY = 4  # levels per tileset file (explicit tilesets)
SUBTREE_LEVELS = 4  # levels per subtree file (implicit tilesets)


@dataclass
class OctreeTile:
    depth: int
    ix: int
    iy: int
    iz: int
    uri: str | None = None
    count: int = 0
    lo: np.ndarray | None = None  # metres, ENU
    hi: np.ndarray | None = None
    children: list[OctreeTile] = field(default_factory=list)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) in metres, ENU: every tile has them once `build_tree` has filled in the ancestors."""
        if self.lo is None or self.hi is None:
            raise ValueError(f"octree tile {self.key} has no bounds")
        return self.lo, self.hi

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.depth, self.ix, self.iy, self.iz)


def build_tree(tiles: list[Any]) -> OctreeTile:
    """Tree from records with depth/ix/iy/iz/uri/count/lo_mm/hi_mm; adds empty ancestors where needed."""
    nodes: dict[tuple[int, int, int, int], OctreeTile] = {}
    for t in tiles:
        n = OctreeTile(t.depth, t.ix, t.iy, t.iz, t.uri, t.count)
        n.lo = np.asarray(t.lo_mm, dtype=np.float64) / 1000.0
        n.hi = np.asarray(t.hi_mm, dtype=np.float64) / 1000.0
        nodes[n.key] = n
    for key in sorted(nodes, reverse=True):
        d, x, y, z = key
        while d > 0:
            pk = (d - 1, x >> 1, y >> 1, z >> 1)
            if pk not in nodes:
                nodes[pk] = OctreeTile(*pk)
            d, x, y, z = pk
    for key in sorted(nodes):
        d, x, y, z = key
        if d > 0:
            nodes[(d - 1, x >> 1, y >> 1, z >> 1)].children.append(nodes[key])
    root = nodes.get((0, 0, 0, 0))
    if root is None:
        raise ValueError("no tiles")
    _fill_bounds(root)
    return root


def _fill_bounds(node: OctreeTile) -> None:
    for c in node.children:
        _fill_bounds(c)
    los = [c.bounds[0] for c in node.children] + ([node.lo] if node.lo is not None else [])
    his = [c.bounds[1] for c in node.children] + ([node.hi] if node.hi is not None else [])
    node.lo = np.min(los, axis=0)
    node.hi = np.max(his, axis=0)
    node.children.sort(key=lambda c: c.key)


def tree_depth(node: OctreeTile) -> int:
    return max([tree_depth(c) for c in node.children], default=node.depth)


def tileset_geometric_error(root_error: float, lo: np.ndarray, hi: np.ndarray) -> float:
    """Tileset-level geometric error: at least the diagonal of the root's box (CesiumJS skips the whole
    tileset when the screen-space error of this value is small, i.e. it must be the size of the data), and
    more than the root's own error."""
    diag = float(np.linalg.norm(np.asarray(hi, np.float64) - np.asarray(lo, np.float64)))
    return max(root_error * 2.0, math.ceil(diag * 1000.0) / 1000.0)


def _tile_json(node: OctreeTile, spacing, uri_prefix: str) -> dict[str, Any]:
    t: dict[str, Any] = {
        "boundingVolume": {"box": box_from_bounds(*node.bounds)},
        "geometricError": spacing(node.depth),
    }
    if node.uri:
        t["content"] = {"uri": uri_prefix + node.uri}
    return t


def _write(path: Path, data: bytes) -> None:
    """Plain writes: the tilers write into a private staging directory that is published as a whole by
    one rename (a temporary file + rename per JSON cost two file creations each: ext4 inode allocation
    is slow right after the spill files are deleted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_explicit(
    root: OctreeTile,
    out_dir: Path,
    *,
    spacing,
    transform: list[float],
    version: str,
    tileset_version: str | None = None,
    every: int = EXTERNAL_EVERY,
) -> list[str]:
    """Write tileset.json (+ tilesets/*.json every `every` levels). Returns the written JSON paths."""
    written: list[str] = []

    def subtree(node: OctreeTile, base_depth: int, prefix: str) -> dict[str, Any]:
        t = _tile_json(node, spacing, prefix)
        kids = []
        for c in node.children:
            if c.depth - base_depth >= every:
                name = f"tilesets/{c.depth}_{c.ix}_{c.iy}_{c.iz}.json"
                write_file(c, name)
                ref = {
                    "boundingVolume": {"box": box_from_bounds(*c.bounds)},
                    "geometricError": spacing(c.depth),
                    "content": {"uri": ("" if prefix == "" else "../") + name},
                }
                kids.append(ref)
            else:
                kids.append(subtree(c, base_depth, prefix))
        if kids:
            t["children"] = kids
        return t

    def write_file(node: OctreeTile, name: str) -> None:
        prefix = "../" if "/" in name else ""
        root_json = subtree(node, node.depth, prefix)
        root_json["refine"] = "ADD"
        if node.depth == 0:
            root_json["transform"] = transform
        # only the root names the release (`tilesetVersion`, which CesiumJS appends to every content URL
        # below it): external child tilesets carry none, so a child reused from an earlier release is
        # byte-identical to the one a clean build writes
        doc = {
            "asset": asset(version, tileset_version if node.depth == 0 else None),
            "geometricError": tileset_geometric_error(spacing(node.depth), *node.bounds),
            "root": root_json,
        }
        _write(out_dir / name, dumps(doc))
        written.append(name)

    write_file(root, "tileset.json")
    return written


# ---- implicit tiling ------------------------------------------------------------------------------------


def _morton3(x: int, y: int, z: int, level: int) -> int:
    m = 0
    for i in range(level):
        m |= ((x >> i) & 1) << (3 * i) | ((y >> i) & 1) << (3 * i + 1) | ((z >> i) & 1) << (3 * i + 2)
    return m


def _bitstream(bits: np.ndarray) -> bytes:
    return np.packbits(bits.astype(np.uint8), bitorder="little").tobytes()


def write_implicit(
    root: OctreeTile,
    out_dir: Path,
    *,
    cube_lo_m: np.ndarray,
    cube_size_m: float,
    spacing,
    transform: list[float],
    version: str,
    content_ext: str,
    tileset_version: str | None = None,
    subtree_levels: int = SUBTREE_LEVELS,
) -> list[str]:
    """Implicit octree (3D Tiles 1.1): content/{level}/{x}_{y}_{z}.ext + subtrees/{level}.{x}.{y}.{z}.subtree.

    The content files written by the tiler are already named content/{d}/{x}_{y}_{z}.ext, which is the
    template below. Bounding volume = the root cube (implicit tiling subdivides it exactly).
    """
    nodes: dict[tuple[int, int, int, int], OctreeTile] = {}

    def collect(n: OctreeTile) -> None:
        nodes[n.key] = n
        for c in n.children:
            collect(c)

    collect(root)
    max_depth = max(k[0] for k in nodes)
    levels = max_depth + 1
    written: list[str] = []

    def write_subtree(d0: int, x0: int, y0: int, z0: int) -> None:
        n_tiles = sum(8**i for i in range(subtree_levels))
        tile_bits = np.zeros(n_tiles, dtype=bool)
        content_bits = np.zeros(n_tiles, dtype=bool)
        child_bits = np.zeros(8**subtree_levels, dtype=bool)
        offset = 0
        for i in range(subtree_levels):
            for key, node in nodes.items():
                d, x, y, z = key
                if d != d0 + i:
                    continue
                if (x >> i, y >> i, z >> i) != (x0, y0, z0):
                    continue
                rx, ry, rz = x - (x0 << i), y - (y0 << i), z - (z0 << i)
                idx = offset + _morton3(rx, ry, rz, i)
                tile_bits[idx] = True
                content_bits[idx] = node.uri is not None
            offset += 8**i
        sub_children = []
        for key in nodes:
            d, x, y, z = key
            if d != d0 + subtree_levels:
                continue
            i = subtree_levels
            if (x >> i, y >> i, z >> i) != (x0, y0, z0):
                continue
            rx, ry, rz = x - (x0 << i), y - (y0 << i), z - (z0 << i)
            child_bits[_morton3(rx, ry, rz, i)] = True
            sub_children.append(key)
        bufs = [_bitstream(tile_bits), _bitstream(content_bits), _bitstream(child_bits)]
        blob = bytearray()
        views = []
        for b in bufs:
            pad = (8 - len(blob) % 8) % 8
            blob.extend(b"\x00" * pad)
            views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(b)})
            blob.extend(b)
        blob.extend(b"\x00" * ((8 - len(blob) % 8) % 8))
        js = {
            "buffers": [{"byteLength": len(blob)}],
            "bufferViews": views,
            "tileAvailability": {"bitstream": 0, "availableCount": int(tile_bits.sum())},
            "contentAvailability": [{"bitstream": 1, "availableCount": int(content_bits.sum())}],
            "childSubtreeAvailability": {"bitstream": 2, "availableCount": int(child_bits.sum())},
        }
        jb = dumps(js)
        jb += b" " * ((8 - (24 + len(jb)) % 8) % 8)
        import struct

        header = struct.pack("<4sIQQ", b"subt", 1, len(jb), len(blob))
        name = f"subtrees/{d0}.{x0}.{y0}.{z0}.subtree"
        _write(out_dir / name, header + jb + bytes(blob))
        written.append(name)
        for d, x, y, z in sub_children:
            write_subtree(d, x, y, z)

    write_subtree(0, 0, 0, 0)
    lo = np.asarray(cube_lo_m, dtype=np.float64)
    hi = lo + cube_size_m
    doc = {
        "asset": asset(version, tileset_version),
        "geometricError": tileset_geometric_error(spacing(0), lo, hi),
        "root": {
            "boundingVolume": {"box": box_from_bounds(lo, hi)},
            "geometricError": spacing(0),
            "refine": "ADD",
            "transform": transform,
            "content": {"uri": "content/{level}/{x}_{y}_{z}." + content_ext},
            "implicitTiling": {
                "subdivisionScheme": "OCTREE",
                "subtreeLevels": subtree_levels,
                "availableLevels": levels,
                "subtrees": {"uri": "subtrees/{level}.{x}.{y}.{z}.subtree"},
            },
        },
    }
    _write(out_dir / "tileset.json", dumps(doc))
    written.append("tileset.json")
    return written
