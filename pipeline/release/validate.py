"""Validation stage: a release is only published when every tileset and every glTF in it is valid.

Checks: each tileset JSON against the 3D Tiles 1.1 schemas, every content URI exists, each GLB through the
Khronos glTF validator (when node + gltf-validator are installed), and layer invariants (e.g. the point count
written equals the point count read). Returns a per-file report; raises ValidationError on any error.
"""

from __future__ import annotations

import json
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


def layer_invariants(
    release_dir: Path, manifest: dict[str, Any], errors: list[str], skip: set[str]
) -> dict[str, Any]:
    """Point clouds: the points and checksum in the written tiles equal what the layer says it read
    (`pipeline.tiles.points_reader.pointcloud_invariants`). Layers reused unchanged are not re-read."""
    out: dict[str, Any] = {}
    for layer in manifest.get("layers", []):
        if layer.get("kind") != "pointcloud" or not layer.get("tileset") or layer["name"] in skip:
            continue
        stats = layer.get("stats", {})
        if "points_in" not in stats:
            continue
        try:
            from pipeline.tiles.points_reader import pointcloud_invariants
        except ImportError:
            return out
        ts = release_dir / layer["tileset"]
        if not ts.is_file():
            continue  # reported as missing by the tileset check
        try:
            inv = pointcloud_invariants(ts)
        except Exception as e:  # unreadable tile: an error of the release, not of the validator
            errors.append(f"layer {layer['name']}: cannot read its tiles: {e}")
            continue
        out[layer["name"]] = inv
        if inv["points"] != stats["points_in"]:
            errors.append(
                f"layer {layer['name']}: {inv['points']} points in the tiles but {stats['points_in']} read"
            )
        if stats.get("checksum") and inv["checksum"] != stats["checksum"]:
            errors.append(f"layer {layer['name']}: tile checksum {inv['checksum']} != {stats['checksum']}")
    return out


def copc_errors(release_dir: Path, manifest: dict[str, Any], errors: list[str], skip: set[str]) -> int:
    """Every point layer's COPC files and .vpc (`stats.copc`), read back node by node
    (`pipeline.tiles.copc_check.vpc_errors`): all nodes readable, counts and checksum equal to the
    manifest's (and the COPC points equal to the tiles'), the .vpc's files exist with their boxes and CRS.
    Returns the number of layers checked."""
    from pipeline.tiles.copc_check import vpc_errors

    n = 0
    for layer in manifest.get("layers", []):
        copc = layer.get("stats", {}).get("copc")
        if layer.get("kind") != "pointcloud" or not copc or layer["name"] in skip:
            continue
        name = layer["name"]
        tiled = layer["stats"].get("points_out")
        if tiled is not None and copc.get("points") != tiled:
            errors.append(f"layer {name}: the manifest's COPC points {copc.get('points')} != tiles {tiled}")
        vpc = release_dir / Path(layer["tileset"]).parent / copc.get("vpc", "")
        if not copc.get("vpc") or not vpc.is_file():
            errors.append(f"layer {name}: COPC: virtual point cloud {copc.get('vpc')!r} missing")
            continue
        errors += [
            f"layer {name}: COPC: {e}" for e in vpc_errors(vpc, copc.get("points"), copc.get("checksum"))
        ]
        n += 1
    return n


def cityjson_errors(release_dir: Path, manifest: dict[str, Any], errors: list[str], skip: set[str]) -> int:
    """Every CityJSONSeq file a layer lists (`*.city.jsonl`) through `tiles.cityjson.validate_cityjsonseq`
    (and cjvalpy when installed). Returns the number of files checked."""
    from pipeline.tiles.cityjson import cjvalpy_available, cjvalpy_errors, validate_cityjsonseq

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
            errs = validate_cityjsonseq(text) + (cjvalpy_errors(text) if cjvalpy_available() else [])
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
) -> dict[str, Any]:
    """`trusted`: files hard-linked unchanged from a release that passed validation (GLBs among them
    are not sent through the glTF validator again). `jobs`: glTF validator processes at once; they run
    while this process checks the layer invariants, CityJSON and COPC files (the report and its order
    do not depend on it)."""
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
        invariants = layer_invariants(release_dir, manifest, checks, reused_layers or set())
        cityjson = cityjson_errors(release_dir, manifest, checks, reused_layers or set())
        copc = copc_errors(release_dir, manifest, checks, reused_layers or set())
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
