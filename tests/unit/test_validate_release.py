"""The release validator's checks run as independent tasks in one call of the executor, largest first:
the findings (every message and its order) are those of the checks run one after another in this process,
whatever order the tasks finish in; tilesets hard-linked from a validated release skip the schema check
but not the check of their content URIs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ValidationError
from pipeline.release import validate
from pipeline.tiles.tileset import schema_errors

BOX = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def _tileset(contents: list[str], *, broken: bool = False) -> dict[str, Any]:
    children = [
        {"boundingVolume": {"box": BOX}, "geometricError": 0.0, "content": {"uri": u}} for u in contents
    ]
    root: dict[str, Any] = {"boundingVolume": {"box": BOX}, "geometricError": 1.0, "refine": "ADD"}
    root["children"] = children
    if broken:
        root["geometricError"] = "large"  # a schema error
    return {"asset": {"version": "1.1"}, "geometricError": 2.0, "root": root}


def _release(tmp: Path) -> dict[str, Any]:
    """Two layers: `a` with an external tileset that breaks the schema and a missing tile, `b` valid
    with a schema-breaking root; a third layer's tileset is missing."""
    for rel, doc in {
        "a/tileset.json": _tileset(["t0.glb", "sub/tileset.json", "gone.glb"]),
        "a/sub/tileset.json": _tileset(["t1.glb", "lost.glb"], broken=True),
        "b/tileset.json": _tileset(["t2.glb"], broken=True),
    }.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(json.dumps(doc))
    for rel in ("a/t0.glb", "a/sub/t1.glb", "b/t2.glb"):
        (tmp / rel).write_bytes(b"")
    names = {"a": "a/tileset.json", "b": "b/tileset.json", "c": "c/tileset.json"}
    return {"layers": [{"name": n, "kind": "overlay", "tileset": t} for n, t in names.items()]}


def _findings(tmp: Path, manifest: dict[str, Any], map_tasks: validate.MapTasks) -> list[str]:
    errors: list[str] = []
    validate.run_checks(map_tasks, [validate.tileset_check(tmp, manifest, set(), [])], errors)
    return errors


def test_tasks_in_any_order_give_the_serial_findings(tmp_path, monkeypatch):
    manifest = _release(tmp_path)
    # the findings of the walk in this process, one layer after the other (as before the tasks)
    serial: list[str] = []
    for layer in manifest["layers"]:
        ts = tmp_path / layer["tileset"]
        if not ts.is_file():
            serial.append(f"layer {layer['name']}: tileset {layer['tileset']} missing")
            continue
        validate._walk_tileset(ts.resolve(), serial, set(), [])
    a, sub, b = (
        str((tmp_path / p).resolve()) for p in ("a/tileset.json", "a/sub/tileset.json", "b/tileset.json")
    )
    # depth first, as walked (the last child first), each file's schema errors before its URIs'
    assert [e.split(": ")[0] for e in serial] == [a, sub, sub, b, "layer c"]
    assert "gone.glb does not exist" in serial[0] and "lost.glb does not exist" in serial[2]
    assert serial[1].startswith(f"{sub}: root/geometricError: ") and serial[3].startswith(f"{b}: root/")

    monkeypatch.setattr(validate, "SCHEMA_DOCS_PER_TASK", 1)  # one task per document

    def backwards(fn, items):  # the last task first, results back in the order of the items
        with ThreadPoolExecutor(1) as pool:
            futures = [pool.submit(fn, *args) for args in reversed(items)]
            return [f.result() for f in futures][::-1]

    assert _findings(tmp_path, manifest, validate.serial_map) == serial
    assert _findings(tmp_path, manifest, backwards) == serial
    for map_tasks in (validate.serial_map, backwards):
        with pytest.raises(ValidationError) as e:
            validate.validate_release(tmp_path, manifest, check_gltf=False, map_tasks=map_tasks)
        assert f"({len(serial)} problems; nothing published). First: {serial[0]}" in str(e.value)


def test_trusted_tilesets_skip_the_schema_not_their_uris(tmp_path):
    manifest = _release(tmp_path)
    sub = (tmp_path / "a/sub/tileset.json").resolve()
    assert schema_errors(json.loads(sub.read_text()))  # it breaks the schema
    errors: list[str] = []
    seen: set[Path] = set()
    check = validate.tileset_check(tmp_path, manifest, seen, [], {sub})
    (checked,) = validate.run_checks(validate.serial_map, [check], errors)
    assert len(seen) == 3 and checked == 2
    assert not any(e.startswith(f"{sub}: root/") for e in errors)  # trusted: passed before
    assert any(e.startswith(f"{sub}: content lost.glb does not exist") for e in errors)  # still checked
    with pytest.raises(ValidationError):
        validate.validate_release(tmp_path, manifest, check_gltf=False, trusted={sub})
