"""tileset.json helpers: deterministic JSON, tight boxes, schema validation."""

from __future__ import annotations

import json
import os
import tempfile
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
