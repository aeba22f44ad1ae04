"""Quadtree tiling of the buildings and the tileset.json tree over it.

Leaves hold at most `max_features` buildings and are at most `max_leaf_m` wide; a building belongs to the
leaf containing its representative point. The grid is anchored at multiples of `max_leaf_m`, so tile ids
(level, x, y) stay stable when the district grows a little. Content sits only at the leaves
(refine ADD, parents empty): CesiumJS then loads buildings near the camera first and never draws a
building twice. Parent geometric error = `ge_factor` x tile width (leaves: 0, buildings are exact).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.tiles.tileset import box_from_bounds


@dataclass
class QuadNode:
    level: int
    x: int
    y: int
    x0: float
    y0: float
    size: float
    children: list[QuadNode] = field(default_factory=list)
    members: np.ndarray | None = None  # building indices (leaves only), ascending
    lo: np.ndarray | None = None  # ENU bounds of the content (filled after meshing)
    hi: np.ndarray | None = None

    @property
    def is_leaf(self) -> bool:
        return self.members is not None

    @property
    def name(self) -> str:
        return f"{self.level}/{self.x}_{self.y}"

    @property
    def indices(self) -> np.ndarray:
        """The building indices of a leaf, ascending."""
        if self.members is None:
            raise ValueError(f"quadtree node {self.name} is not a leaf")
        return self.members

    def leaves(self) -> Iterator[QuadNode]:
        if self.is_leaf:
            yield self
        for c in self.children:
            yield from c.leaves()

    def count(self) -> int:
        return 1 + sum(c.count() for c in self.children)


def build_quadtree(
    px: np.ndarray,
    py: np.ndarray,
    *,
    max_features: int = 2000,
    max_leaf_m: float = 250.0,
    max_level: int = 20,
) -> QuadNode:
    """Quadtree over representative points (x, y in the working CRS)."""
    n = len(px)
    if n == 0:
        return QuadNode(0, 0, 0, 0.0, 0.0, max_leaf_m, members=np.zeros(0, dtype=np.int64))
    x0 = np.floor(px.min() / max_leaf_m) * max_leaf_m
    y0 = np.floor(py.min() / max_leaf_m) * max_leaf_m
    extent = max(px.max() - x0, py.max() - y0, 1e-6)
    size = max_leaf_m * 2 ** max(0, int(np.ceil(np.log2(max(extent / max_leaf_m, 1.0) + 1e-12))))
    while size <= extent:
        size *= 2
    root = QuadNode(0, 0, 0, float(x0), float(y0), float(size))

    def split(node: QuadNode, idx: np.ndarray) -> None:
        if (len(idx) <= max_features and node.size <= max_leaf_m * 1.0001) or node.level >= max_level:
            node.members = np.sort(idx)
            return
        h = node.size / 2
        right = px[idx] >= node.x0 + h
        top = py[idx] >= node.y0 + h
        for dy in (0, 1):
            for dx in (0, 1):
                sel = idx[(right == bool(dx)) & (top == bool(dy))]
                if len(sel) == 0:
                    continue
                child = QuadNode(
                    node.level + 1, node.x * 2 + dx, node.y * 2 + dy, node.x0 + dx * h, node.y0 + dy * h, h
                )
                node.children.append(child)
                split(child, sel)

    split(root, np.arange(n))
    return root


def _fill_bounds(node: QuadNode) -> None:
    if node.is_leaf:
        return
    for c in node.children:
        _fill_bounds(c)
    los = [c.lo for c in node.children if c.lo is not None]
    his = [c.hi for c in node.children if c.hi is not None]
    if los:
        node.lo = np.min(los, axis=0)
        node.hi = np.max(his, axis=0)


def tileset_tree(
    root: QuadNode,
    content_uri,  # (QuadNode) -> str
    *,
    ge_factor: float = 0.1,
    external_every: int = 0,
    external_uri=None,  # (QuadNode) -> str
    asset: dict[str, Any],
    transform: list[float] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(main tileset, {relative path: external tileset}) for a quadtree whose leaves have bounds."""
    _fill_bounds(root)
    externals: dict[str, dict[str, Any]] = {}

    def ge(node: QuadNode) -> float:
        return 0.0 if node.is_leaf else float(round(node.size * ge_factor, 3))

    def tile(node: QuadNode, depth: int) -> dict[str, Any]:
        assert node.lo is not None and node.hi is not None  # children without bounds are skipped below
        t: dict[str, Any] = {
            "boundingVolume": {"box": box_from_bounds(node.lo, node.hi)},
            "geometricError": ge(node),
        }
        if node.is_leaf:
            t["content"] = {"uri": content_uri(node)}
            return t
        t["refine"] = "ADD"
        kids = []
        for c in node.children:
            if c.lo is None:
                continue
            if external_every and (depth + 1) % external_every == 0 and not c.is_leaf:
                uri = external_uri(c)
                sub_root = tile(c, 0)
                externals[uri] = {
                    "asset": asset,
                    "geometricError": ge(c),
                    "root": sub_root,
                }
                kids.append(
                    {
                        "boundingVolume": sub_root["boundingVolume"],
                        "geometricError": ge(c),
                        "content": {"uri": uri},
                    }
                )
            else:
                kids.append(tile(c, depth + 1))
        if kids:
            t["children"] = kids
        return t

    if root.lo is None:  # nothing meshed
        root.lo = np.zeros(3)
        root.hi = np.ones(3)
    rt = tile(root, 0)
    rt["refine"] = "ADD"
    if transform is not None:
        rt["transform"] = transform
    main = {"asset": asset, "geometricError": float(round(max(ge(root), 1.0) * 2, 3)), "root": rt}
    return main, externals
