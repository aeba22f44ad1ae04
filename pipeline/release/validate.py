"""Validation stage: a release is only published when every tileset and every glTF in it is valid.

Checks: each tileset JSON against the 3D Tiles 1.1 schemas, every content URI exists, each GLB through the
Khronos glTF validator (when node + gltf-validator are installed), and layer invariants (e.g. the point count
written equals the point count read). Returns a per-file report; raises ValidationError on any error.

The checks are independent tasks (`Task`: tileset documents against the schemas in chunks, point tiles read
back in chunks, one per COPC file, one per CityJSON file), all sent to the executor in one call, largest
first, while the glTF validator's node processes run beside them; this process only reads and follows the
tileset files. The findings and their order are those of running the checks one after another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ValidationError
from pipeline.tiles.tileset import schema_errors
from pipeline.tiles.validate_gltf import start_validation, validator_available


def _discover(
    path: Path, events: list[str | int], seen: set[Path], glbs: list[Path], docs: list[Path]
) -> None:
    """Follow a tileset and the external tilesets it references (one parsed document in memory at a
    time): the walk's problems in `events`, in its order, with the index into `docs` (the tileset files
    read) where a file's schema errors belong; the GLBs it references in `glbs`."""
    if path in seen:
        return
    seen.add(path)
    try:
        ts = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        events.append(f"{path}: unreadable tileset: {e}")
        return
    events.append(len(docs))
    docs.append(path)
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
                events.append(f"{path}: content {uri} does not exist")
            elif target.suffix == ".json":
                _discover(target, events, seen, glbs, docs)
            elif target.suffix == ".glb":
                glbs.append(target)
        stack.extend(tile.get("children", []))


def _walk_tileset(path: Path, errors: list[str], seen: set[Path], glbs: list[Path]) -> None:
    """A tileset and its external tilesets checked in this process (schemas, content URIs)."""
    events: list[str | int] = []
    docs: list[Path] = []
    _discover(path, events, seen, glbs, docs)
    _tileset_findings(events, docs, schema_task(docs), errors)


def _tileset_findings(
    events: list[str | int],
    docs: list[Path],
    schema: list[list[str]],
    errors: list[str],
) -> None:
    for ev in events:
        if isinstance(ev, str):
            errors.append(ev)
        else:
            errors += [f"{docs[ev]}: {e}" for e in schema[ev]]


MapTasks = Callable[[Callable[..., Any], Sequence[tuple[Any, ...]]], list[Any]]
"""[fn(*args) for args in items], in the order of the items, wherever it runs (the build passes
`orchestrate.executor.map_ordered` on its executor: the read-back checks run as independent tasks)."""

TILES_PER_TASK = 64  # point tiles read back by one task (fixed: the tasks do not depend on the workers)


def serial_map(fn: Callable[..., Any], items: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`MapTasks` in this process."""
    return [fn(*args) for args in items]


SCHEMA_DOCS_PER_TASK = 64  # tileset documents checked against the schemas by one task
SCHEMA_COST = 100  # a tileset byte costs about this many point-tile bytes to check (jsonschema)


@dataclass(frozen=True)
class Task:
    """One independent check, `fn(*args)`; `cost` (about the bytes it reads and decodes) orders the tasks,
    largest first, so that a long one does not start last (the findings do not depend on the order)."""

    cost: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]


Finish = Callable[[list[Any], list[str]], Any]
"""Turns the results of a check's tasks (in the order of its tasks) into its findings (appended to the
list) and returns its summary."""

Check = tuple[list[Task], Finish]


def run_task(fn: Callable[..., Any], *args: Any) -> Any:
    """What the executor runs for a `Task`."""
    return fn(*args)


def run_checks(map_tasks: MapTasks, checks: Sequence[Check], errors: list[str]) -> list[Any]:
    """The tasks of every check in one call of `map_tasks`, largest first (no check waits for the last
    task of another), then each check's `Finish` in the order of `checks`: the findings are those of
    running the checks one after another. Returns the checks' summaries."""
    tasks = [t for ts, _ in checks for t in ts]
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    done = map_tasks(run_task, [(tasks[i].fn, *tasks[i].args) for i in order]) if tasks else []
    results: list[Any] = [None] * len(tasks)
    for i, r in zip(order, done, strict=True):
        results[i] = r
    out, start = [], 0
    for ts, finish in checks:
        out.append(finish(results[start : start + len(ts)], errors))
        start += len(ts)
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def schema_task(paths: list[Path]) -> list[list[str]]:
    """The 3D Tiles schema errors of some tileset files (the validator is built once per process; the
    files are read again here, which keeps the build process's memory independent of their number)."""
    out = []
    for p in paths:
        try:
            out.append(schema_errors(json.loads(p.read_text())))
        except (OSError, ValueError) as e:  # it was read by the walk: changed since
            out.append([f"unreadable tileset: {e}"])
    return out


def tileset_check(
    release_dir: Path,
    manifest: dict[str, Any],
    seen: set[Path],
    glbs: list[Path],
    trusted: set[Path] | frozenset[Path] = frozenset(),
) -> Check:
    """Every layer tileset and the external tilesets it references, read and followed here (every
    content URI exists; the GLBs go to `glbs`, the files to `seen`); the documents are checked against
    the schemas by tasks of `SCHEMA_DOCS_PER_TASK`, except `trusted` files (resolved paths: hard-linked
    unchanged from a validated release). Its summary: the number of documents checked."""
    events: list[str | int] = []
    docs: list[Path] = []
    for layer in manifest.get("layers", []):
        if layer.get("tileset"):
            ts = release_dir / layer["tileset"]
            if not ts.is_file():
                events.append(f"layer {layer['name']}: tileset {layer['tileset']} missing")
                continue
            _discover(ts.resolve(), events, seen, glbs, docs)
    check = [i for i, p in enumerate(docs) if p not in trusted]
    step = SCHEMA_DOCS_PER_TASK
    tasks = []
    for i in range(0, len(check), step):
        paths = [docs[k] for k in check[i : i + step]]
        tasks.append(Task(SCHEMA_COST * sum(_size(p) for p in paths), schema_task, (paths,)))

    def finish(results: list[Any], errs: list[str]) -> int:
        schema: list[list[str]] = [[] for _ in docs]  # a trusted document passed before
        for k, e in zip(check, (e for chunk in results for e in chunk), strict=True):
            schema[k] = e
        _tileset_findings(events, docs, schema, errs)
        return len(check)

    return tasks, finish


def tiles_task(files: list[Path]) -> tuple[int, int] | str:
    """(points, checksum) of a chunk of a point tileset's tiles, or why one of them cannot be read."""
    from pipeline.tiles.points_reader import tiles_sum

    try:
        return tiles_sum(files)
    except Exception as e:  # unreadable tile: an error of the release, not of the validator
        return str(e)


def invariants_check(release_dir: Path, manifest: dict[str, Any], skip: set[str]) -> Check:
    """`layer_invariants` as tasks (`TILES_PER_TASK` tiles each) and the `Finish` that compares them."""
    try:
        from pipeline.tiles.points_reader import content_files
    except ImportError:
        return [], lambda _results, _errors: {}
    plans: list[tuple[dict[str, Any], str | tuple[int, int, int]]] = []  # (layer, problem | task range)
    tasks: list[Task] = []
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
        for i in range(0, len(files), TILES_PER_TASK):
            chunk = files[i : i + TILES_PER_TASK]
            tasks.append(Task(sum(_size(f) for f in chunk), tiles_task, (chunk,)))

    def finish(results: list[Any], errors: list[str]) -> dict[str, Any]:
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
                errors.append(
                    f"layer {layer['name']}: tile checksum {inv['checksum']} != {stats['checksum']}"
                )
        return out

    return tasks, finish


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
    return dict(run_checks(map_tasks, [invariants_check(release_dir, manifest, skip)], errors)[0])


COPC_COST = 4  # a COPC byte costs about this many point-tile bytes to check (LAZ decoding)


def copc_check(release_dir: Path, manifest: dict[str, Any], skip: set[str]) -> Check:
    """`copc_errors` as tasks (one per COPC file) and the `Finish` that adds up each layer."""
    from pipeline.tiles.copc_check import CopcReadError, copc_item_errors, vpc_items, vpc_total_errors

    plans: list[tuple[str, list[str], Path, dict[str, Any], tuple[int, int] | None]] = []
    tasks: list[Task] = []
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
        for f in feats:
            href = f.get("assets", {}).get("data", {}).get("href") if isinstance(f, dict) else None
            cost = COPC_COST * _size(vpc.parent / href) if isinstance(href, str) else 0
            tasks.append(Task(cost, copc_item_errors, (vpc, f)))

    def finish(results: list[Any], errors: list[str]) -> int:
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

    return tasks, finish


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
    return int(run_checks(map_tasks, [copc_check(release_dir, manifest, skip)], errors)[0])


def cityjson_task(path: Path) -> list[str]:
    """The first problems of one CityJSONSeq file (`tiles.cityjson.validate_cityjsonseq`)."""
    from pipeline.tiles.cityjson import validate_cityjsonseq

    return validate_cityjsonseq(path.read_text(encoding="utf-8"))[:3]


def cityjson_check(release_dir: Path, manifest: dict[str, Any], skip: set[str]) -> Check:
    """`cityjson_errors` as tasks (one per file)."""
    found: list[str | tuple[str, int]] = []  # a missing file's finding, or (file, task index)
    tasks: list[Task] = []
    for layer in manifest.get("layers", []):
        if layer["name"] in skip:
            continue
        for f in layer.get("files", []):
            if not f.endswith(".city.jsonl"):
                continue
            p = release_dir / f
            if not p.is_file():
                found.append(f"layer {layer['name']}: {f} missing")
                continue
            found.append((f, len(tasks)))
            tasks.append(Task(_size(p), cityjson_task, (p,)))

    def finish(results: list[Any], errors: list[str]) -> int:
        for item in found:
            if isinstance(item, str):
                errors.append(item)
            else:
                errors += [f"{item[0]}: CityJSON: {e}" for e in results[item[1]]]
        return len(tasks)

    return tasks, finish


def cityjson_errors(release_dir: Path, manifest: dict[str, Any], errors: list[str], skip: set[str]) -> int:
    """Every CityJSONSeq file a layer lists (`*.city.jsonl`) through `tiles.cityjson.validate_cityjsonseq`.
    Returns the number of files checked."""
    return int(run_checks(serial_map, [cityjson_check(release_dir, manifest, skip)], errors)[0])


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
    are not sent through the glTF validator again, tilesets not checked against the schemas again; their
    content URIs are checked). `jobs`: glTF validator processes at once; they run
    while the other checks run on `map_tasks` (the report and its order do not depend on it).
    `map_tasks`: where the checks run (`run_checks`: tileset documents and point tiles in chunks, the COPC
    and CityJSON files one task each; the report does not depend on it)."""
    errors: list[str] = []
    glbs: list[Path] = []
    seen: set[Path] = set()
    trusted_resolved = {p.resolve() for p in trusted or ()}
    tilesets, walk_done = tileset_check(release_dir, manifest, seen, glbs, trusted_resolved)
    gltf_checked = 0
    to_check = sorted(set(glbs) - trusted_resolved)
    wait = (
        start_validation(to_check, jobs=jobs) if check_gltf and to_check and validator_available() else None
    )
    skip = reused_layers or set()
    checks: list[str] = []  # the other checks' findings, listed after the validator's (as before)
    try:
        _schema_checked, invariants, cityjson, copc = run_checks(
            map_tasks,
            [
                (tilesets, lambda results, _checks: walk_done(results, errors)),
                invariants_check(release_dir, manifest, skip),
                cityjson_check(release_dir, manifest, skip),
                copc_check(release_dir, manifest, skip),
            ],
            checks,
        )
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
