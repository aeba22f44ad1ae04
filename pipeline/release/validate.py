"""Validation stage: a release is only published when every tileset and every glTF in it is valid.

Checks: each tileset JSON against the 3D Tiles 1.1 schemas, every content URI exists, each GLB through the
Khronos glTF validator (when node + gltf-validator are installed), and layer invariants (e.g. the point count
written equals the point count read). Returns a per-file report; raises ValidationError on any error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ValidationError
from pipeline.tiles.tileset import schema_errors
from pipeline.tiles.validate_gltf import start_validation, validator_available


def _walk_tileset(path: Path, errors: list[str], seen: set[Path], glbs: list[Path]) -> None:
    if path in seen:
        return
    seen.add(path)
    try:
        ts = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        errors.append(f"{path}: unreadable tileset: {e}")
        return
    for err in schema_errors(ts):
        errors.append(f"{path}: {err}")
    stack = [ts.get("root", {})]
    while stack:
        tile = stack.pop()
        contents = ([tile["content"]] if "content" in tile else []) + tile.get("contents", [])
        for c in contents:
            uri = c.get("uri", "")
            if "{" in uri:  # implicit tiling template; subtrees are checked by the layer's own invariants
                continue
            target = (path.parent / uri).resolve()
            if not target.is_file():
                errors.append(f"{path}: content {uri} does not exist")
            elif target.suffix == ".json":
                _walk_tileset(target, errors, seen, glbs)
            elif target.suffix == ".glb":
                glbs.append(target)
        stack.extend(tile.get("children", []))


MapTasks = Callable[[Callable[..., Any], Sequence[tuple[Any, ...]]], list[Any]]
"""[fn(*args) for args in items], in the order of the items, wherever it runs (the build passes
`orchestrate.executor.map_ordered` on its executor: the read-back checks run as independent tasks)."""

TILES_PER_TASK = 64  # point tiles read back by one task (fixed: the tasks do not depend on the workers)


def serial_map(fn: Callable[..., Any], items: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`MapTasks` in this process."""
    return [fn(*args) for args in items]


def tiles_task(files: list[Path]) -> tuple[int, int] | str:
    """(points, checksum) of a chunk of a point tileset's tiles, or why one of them cannot be read."""
    from pipeline.tiles.points_reader import tiles_sum

    try:
        return tiles_sum(files)
    except Exception as e:  # unreadable tile: an error of the release, not of the validator
        return str(e)


def layer_invariants(
    release_dir: Path,
    manifest: dict[str, Any],
    errors: list[str],
    skip: set[str],
    map_tasks: MapTasks = serial_map,
) -> dict[str, Any]:
    """Point clouds: the points and checksum in the written tiles equal what the layer says it read
    (`pipeline.tiles.points_reader.pointcloud_invariants`, read in chunks of `TILES_PER_TASK` tiles).
    Layers reused unchanged are not re-read."""
    try:
        from pipeline.tiles.points_reader import content_files
    except ImportError:
        return {}
    plans: list[tuple[dict[str, Any], str | tuple[int, int, int]]] = []  # (layer, problem | task range)
    tasks: list[tuple[list[Path]]] = []
    for layer in manifest.get("layers", []):
        if layer.get("kind") != "pointcloud" or not layer.get("tileset") or layer["name"] in skip:
            continue
        if "points_in" not in layer.get("stats", {}):
            continue
        ts = release_dir / layer["tileset"]
        if not ts.is_file():
            continue  # reported as missing by the tileset check
        try:
            files = content_files(ts)
        except Exception as e:  # unreadable tileset: an error of the release, not of the validator
            plans.append((layer, str(e)))
            continue
        plans.append((layer, (len(tasks), len(files), -(-len(files) // TILES_PER_TASK))))
        tasks += [(files[i : i + TILES_PER_TASK],) for i in range(0, len(files), TILES_PER_TASK)]
    results = map_tasks(tiles_task, tasks) if tasks else []
    out: dict[str, Any] = {}
    for layer, plan in plans:
        stats = layer["stats"]
        if isinstance(plan, tuple):
            start, n_files, n_tasks = plan
            parts = results[start : start + n_tasks]
            plan = next((p for p in parts if isinstance(p, str)), plan)  # the first unreadable tile
        if isinstance(plan, str):
            errors.append(f"layer {layer['name']}: cannot read its tiles: {plan}")
            continue
        checksum = sum(c for _, c in parts) % (1 << 64)
        inv = {"points": sum(n for n, _ in parts), "checksum": f"{checksum:016x}", "tiles": n_files}
        out[layer["name"]] = inv
        if inv["points"] != stats["points_in"]:
            errors.append(
                f"layer {layer['name']}: {inv['points']} points in the tiles but {stats['points_in']} read"
            )
        if stats.get("checksum") and inv["checksum"] != stats["checksum"]:
            errors.append(f"layer {layer['name']}: tile checksum {inv['checksum']} != {stats['checksum']}")
    return out


def copc_errors(
    release_dir: Path,
    manifest: dict[str, Any],
    errors: list[str],
    skip: set[str],
    map_tasks: MapTasks = serial_map,
) -> int:
    """Every point layer's COPC files and .vpc (`stats.copc`), read back node by node, one task per file
    (`pipeline.tiles.copc_check.copc_item_errors`): all nodes readable, counts and checksum equal to the
    manifest's (and the COPC points equal to the tiles'), the .vpc's files exist with their boxes and CRS.
    Returns the number of layers checked."""
    from pipeline.tiles.copc_check import CopcReadError, copc_item_errors, vpc_items, vpc_total_errors

    plans: list[tuple[str, list[str], Path, dict[str, Any], tuple[int, int] | None]] = []
    tasks: list[tuple[Path, dict[str, Any]]] = []
    for layer in manifest.get("layers", []):
        copc = layer.get("stats", {}).get("copc")
        if layer.get("kind") != "pointcloud" or not copc or layer["name"] in skip:
            continue
        name = layer["name"]
        first: list[str] = []  # this layer's findings before its files'
        tiled = layer["stats"].get("points_out")
        if tiled is not None and copc.get("points") != tiled:
            first.append(f"layer {name}: the manifest's COPC points {copc.get('points')} != tiles {tiled}")
        vpc = release_dir / Path(layer["tileset"]).parent / copc.get("vpc", "")
        if not copc.get("vpc") or not vpc.is_file():
            first.append(f"layer {name}: COPC: virtual point cloud {copc.get('vpc')!r} missing")
            plans.append((name, first, vpc, copc, None))
            continue
        try:
            feats = vpc_items(vpc)
        except CopcReadError as e:
            first.append(f"layer {name}: COPC: {e}")
            plans.append((name, first, vpc, copc, (len(tasks), -1)))
            continue
        plans.append((name, first, vpc, copc, (len(tasks), len(feats))))
        tasks += [(vpc, f) for f in feats]
    results = map_tasks(copc_item_errors, tasks) if tasks else []
    n = 0
    for name, first, vpc, copc, span in plans:
        errors += first
        if span is None:
            continue
        n += 1
        start, count = span
        if count >= 0:
            items = results[start : start + count]
            errs = vpc_total_errors(vpc, items, copc.get("points"), copc.get("checksum"))
            errors += [f"layer {name}: COPC: {e}" for e in errs]
    return n


def cityjson_errors(release_dir: Path, manifest: dict[str, Any], errors: list[str], skip: set[str]) -> int:
    """Every CityJSONSeq file a layer lists (`*.city.jsonl`) through `tiles.cityjson.validate_cityjsonseq`.
    Returns the number of files checked."""
    from pipeline.tiles.cityjson import validate_cityjsonseq

    n = 0
    for layer in manifest.get("layers", []):
        if layer["name"] in skip:
            continue
        for f in layer.get("files", []):
            if not f.endswith(".city.jsonl"):
                continue
            p = release_dir / f
            if not p.is_file():
                errors.append(f"layer {layer['name']}: {f} missing")
                continue
            text = p.read_text(encoding="utf-8")
            errs = validate_cityjsonseq(text)
            errors += [f"{f}: CityJSON: {e}" for e in errs[:3]]
            n += 1
    return n


def validate_release(
    release_dir: Path,
    manifest: dict[str, Any],
    check_gltf: bool = True,
    trusted: set[Path] | None = None,
    reused_layers: set[str] | None = None,
    jobs: int = 1,
    map_tasks: MapTasks = serial_map,
) -> dict[str, Any]:
    """`trusted`: files hard-linked unchanged from a release that passed validation (GLBs among them
    are not sent through the glTF validator again). `jobs`: glTF validator processes at once; they run
    while this process checks the layer invariants, CityJSON and COPC files (the report and its order
    do not depend on it). `map_tasks`: where the read-back checks run (the point tiles in chunks, the COPC
    files one task each; the report does not depend on it)."""
    errors: list[str] = []
    glbs: list[Path] = []
    seen: set[Path] = set()
    for layer in manifest.get("layers", []):
        if layer.get("tileset"):
            ts = release_dir / layer["tileset"]
            if not ts.is_file():
                errors.append(f"layer {layer['name']}: tileset {layer['tileset']} missing")
                continue
            _walk_tileset(ts.resolve(), errors, seen, glbs)
    gltf_checked = 0
    trusted_resolved = {p.resolve() for p in trusted or ()}
    to_check = sorted(set(glbs) - trusted_resolved)
    wait = (
        start_validation(to_check, jobs=jobs) if check_gltf and to_check and validator_available() else None
    )
    checks: list[str] = []  # the other checks' findings, listed after the validator's (as before)
    try:
        invariants = layer_invariants(release_dir, manifest, checks, reused_layers or set(), map_tasks)
        cityjson = cityjson_errors(release_dir, manifest, checks, reused_layers or set())
        copc = copc_errors(release_dir, manifest, checks, reused_layers or set(), map_tasks)
    finally:
        reports = wait() if wait is not None else []
    for rep in reports:
        gltf_checked += 1
        if rep["errors"]:
            msgs = "; ".join(m.get("message", "") for m in rep["messages"][:3])
            errors.append(f"{rep['file']}: glTF validator: {rep['errors']} errors: {msgs}")
    errors.extend(checks)
    report = {
        "invariants": invariants,
        "tilesets": len(seen),
        "glb": len(set(glbs)),
        "glb_validated": gltf_checked,
        "glb_reused": len(set(glbs) & trusted_resolved),
        "cityjson_validated": cityjson,
        "copc_layers_validated": copc,
        "errors": errors[:200],
        "ok": not errors,
    }
    if errors:
        raise ValidationError(
            f"release failed validation ({len(errors)} problems; nothing published). First: {errors[0]}",
            path=release_dir,
        )
    return report
