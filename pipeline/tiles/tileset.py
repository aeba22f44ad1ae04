"""tileset.json helpers: deterministic JSON, tight boxes, schema validation."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "data" / "schema" / "3d-tiles-1.1-schema"


def dumps(obj: Any) -> bytes:
    """Deterministic JSON bytes (key order as built, compact floats via repr)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file in the destination folder, then one rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; releases are served by other users (web server)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, dumps(obj))


def box_from_bounds(
    lo: np.ndarray | list[float], hi: np.ndarray | list[float], pad: float = 0.0
) -> list[float]:
    """Axis-aligned `box` bounding volume (z-up tile frame) from min/max corners."""
    lo = np.asarray(lo, dtype=np.float64) - pad
    hi = np.asarray(hi, dtype=np.float64) + pad
    c = (lo + hi) / 2
    h = np.maximum((hi - lo) / 2, 1e-3)  # never degenerate
    return [
        float(c[0]),
        float(c[1]),
        float(c[2]),
        float(h[0]),
        0.0,
        0.0,
        0.0,
        float(h[1]),
        0.0,
        0.0,
        0.0,
        float(h[2]),
    ]


def box_bounds(box: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `box_from_bounds` for axis-aligned boxes."""
    c = np.array(box[:3])
    h = np.array([abs(box[3]), abs(box[7]), abs(box[11])])
    return c - h, c + h


def asset(version: str = "1.1", tileset_version: str | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {"version": version, "generator": "RuhrTwin"}
    if tileset_version:
        a["tilesetVersion"] = tileset_version
    return a


@cache
def schema_validator(schema_name: str = "tileset.schema.json", schema_dir: Path = SCHEMA_DIR):
    """A Draft 2020-12 validator for one 3D Tiles schema, with every `$ref` resolved inside `schema_dir`."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    resources = []
    for f in schema_dir.rglob("*.json"):
        doc = json.loads(f.read_text())
        res = Resource.from_contents(doc)
        resources.append((f.relative_to(schema_dir).as_posix(), res))
        if "$id" in doc:
            resources.append((doc["$id"], res))
    registry = Registry().with_resources(resources)
    schema = json.loads((schema_dir / schema_name).read_text())
    return Draft202012Validator(schema, registry=registry)


def schema_errors(obj: Any, schema_name: str = "tileset.schema.json") -> list[str]:
    """Errors of `obj` against a 3D Tiles 1.1 schema (empty list = valid)."""
    v = schema_validator(schema_name)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in v.iter_errors(obj)
    ]


# ---- quadtrees split into external tilesets --------------------------------------------------------------

LEVELS_PER_FILE = 3
"""Quadtree levels per tileset file: the root `tileset.json` holds levels 0-2 (at most 21 tiles) and references
at most 64 external tilesets `tilesets/<level>_<x>_<y>.json`, each again 3 levels deep. The root stays under
about 20 KB whatever the region's size (an inline tree grows with its area); a viewer reads a deeper file
only when it refines into that area."""


@dataclass
class QuadTile:
    """One tile of a quadtree for `quadtree_tilesets`: boxes in the project ENU frame."""

    level: int
    tx: int
    ty: int
    lo: np.ndarray  # ENU min corner of its content (and children)
    hi: np.ndarray
    geometric_error: float
    uri: str | None
    children: list[QuadTile] = field(default_factory=list)


def quadtree_tilesets(
    root: QuadTile,
    transform: list[float],
    tileset_version: str | None,
    *,
    refine: str,
    tileset_error: Callable[[QuadTile], float],
    pad: float = 0.01,
    levels_per_file: int = LEVELS_PER_FILE,
) -> dict[str, dict[str, Any]]:
    """Explicit quadtree tilesets, {path relative to the layer folder: document}: `tileset.json` (its root
    carries the project frame transform) first, then the external tilesets below it. A tile at a level
    divisible by `levels_per_file` (below the root) starts a new file: its parent file keeps a reference
    tile (same box and geometric error, content = the external tileset). `tileset_error(tile)`: the
    document-level geometric error of the file whose root is `tile`. Only the root names the release
    (`tilesetVersion`): an external file of an unchanged area is byte-identical between releases."""
    docs: dict[str, dict[str, Any]] = {}

    def head(t: QuadTile) -> dict[str, Any]:
        return {
            "boundingVolume": {"box": box_from_bounds(t.lo, t.hi, pad=pad)},
            "geometricError": float(round(t.geometric_error, 4)),
        }

    def node(t: QuadTile, prefix: str) -> dict[str, Any]:
        d = head(t)
        if t.uri:
            d["content"] = {"uri": prefix + t.uri}
        kids = []
        for c in t.children:
            if c.level % levels_per_file == 0:
                name = f"tilesets/{c.level}_{c.tx}_{c.ty}.json"
                write_file(c, name)
                kids.append({**head(c), "content": {"uri": prefix + name}})
            else:
                kids.append(node(c, prefix))
        if kids:
            d["children"] = kids
        return d

    def write_file(t: QuadTile, name: str) -> None:
        r = node(t, "../" if t.level > 0 else "")
        r["refine"] = refine
        if t.level == 0:
            r["transform"] = [float(v) for v in transform]
        docs[name] = {
            "asset": asset("1.1", tileset_version if t.level == 0 else None),
            "geometricError": float(round(tileset_error(t), 4)),
            "root": r,
        }

    write_file(root, "tileset.json")
    return {"tileset.json": docs.pop("tileset.json"), **docs}
