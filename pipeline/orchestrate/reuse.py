"""Incremental builds, release output reuse: unchanged outputs of the previous release are hard-linked.

Every release carries `.twin/outputs.json` mapping each output file (relative path) to the key it was built
from, and each layer to its layer key and LayerResult. When a new build needs an output whose key equals
the key recorded in the previous release (or in a partial staging folder left by a killed build), the file
is hard-linked: byte-identical, not rewritten. Keys come from pipeline.orchestrate.cache (`content_key`,
`layer_config_key`), never from timestamps.

- layer granularity: `reuse_or_build(ctx, "buildings", input_keys, build_fn)`
- file granularity (per tile): `stale = reuse_files(ctx, {relpath: key, ...})`, build only `stale`, then
  `record_outputs(ctx, {relpath: key for relpath in stale})`.

All of this runs in the orchestrating process (the Dask client side).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.model import BuildContext, LayerResult
from pipeline.orchestrate.cache import content_key, layer_config_key, link_or_copy

INDEX_DIR = ".twin"
OUTPUTS_INDEX = "outputs.json"  # release-level: relpath -> key, layer -> {key, results, files}
JOURNAL = "journal.jsonl"  # staging-level, append-only: survives kill -9, used to resume


def read_index(release: Path) -> dict[str, Any]:
    """`.twin/outputs.json` of a published release, or the journal of a partial staging folder."""
    p = release / INDEX_DIR / OUTPUTS_INDEX
    try:
        d = json.loads(p.read_text())
        return {"outputs": dict(d.get("outputs", {})), "layers": dict(d.get("layers", {}))}
    except (OSError, ValueError):
        pass
    idx: dict[str, Any] = {"outputs": {}, "layers": {}}
    j = release / INDEX_DIR / JOURNAL
    try:
        lines = j.read_text().splitlines()
    except OSError:
        return idx
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # torn last line of a killed build
            continue
        idx["outputs"].update(rec.get("outputs", {}))
        if "layer" in rec:
            idx["layers"][rec["layer"]] = rec["entry"]
    return idx


@dataclass
class ReuseSource:
    root: Path
    index: dict[str, Any]


@dataclass
class ReuseState:
    """Per-build bookkeeping, attached to `ctx.reuse` by the build."""

    staging: Path
    sources: list[ReuseSource] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused_files: set[str] = field(default_factory=set)
    reused_layers: list[str] = field(default_factory=list)
    built_layers: list[str] = field(default_factory=list)
    deduped_files: int = 0  # rebuilt but byte-identical to the previous release: hard-linked
    # rebuilt files that are now the very file (same inode) of a published, validated release
    trusted_files: set[str] = field(default_factory=set)
    # `twin build --force`: no layer or file is taken from an earlier release or the content cache
    # (`build_cache` then treats entries older than `started` as missing); rebuilt files whose bytes equal
    # the previous release's are still hard-linked to it (`dedupe_against_previous`)
    force: bool = False
    started: float = 0.0
    # stages run in threads of the build process at the same time (`orchestrate.stages`)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def open(cls, staging: Path, sources: Iterable[Path], *, force: bool = False) -> ReuseState:
        st = cls(staging, force=force, started=time.time())
        for s in sources:
            if s is not None and s.is_dir():
                st.sources.append(ReuseSource(s, read_index(s)))
        (staging / INDEX_DIR).mkdir(parents=True, exist_ok=True)
        return st

    def _journal(self, rec: dict[str, Any]) -> None:
        with self._lock, (self.staging / INDEX_DIR / JOURNAL).open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def find(self, rel: str, key: str) -> Path | None:
        if self.force:
            return None
        for s in self.sources:
            if s.index["outputs"].get(rel) == key:
                p = s.root / rel
                if p.is_file():
                    return p
        return None

    def find_layer(self, name: str, key: str) -> tuple[ReuseSource, dict[str, Any]] | None:
        if self.force:
            return None
        for s in self.sources:
            e = s.index["layers"].get(name)
            if e and e.get("key") == key and all((s.root / f).is_file() for f in e.get("files", [])):
                return s, e
        return None

    def record(self, keys: Mapping[str, str], journal: bool = True) -> None:
        self.outputs.update(keys)
        if journal and keys:
            self._journal({"outputs": dict(keys)})

    def record_layer(self, name: str, entry: dict[str, Any]) -> None:
        self.layers[name] = entry
        self.outputs.update(entry.get("outputs", {}))
        self._journal({"layer": name, "entry": entry, "outputs": entry.get("outputs", {})})

    def write_index(self, extra_outputs: Mapping[str, str] | None = None) -> Path:
        from pipeline.tiles.tileset import write_json

        outputs = dict(self.outputs)
        outputs.update(extra_outputs or {})
        # only files that exist in the release (a layer may have removed a temporary it recorded)
        outputs = {k: outputs[k] for k in sorted(outputs) if (self.staging / k).is_file()}
        layers = {k: self.layers[k] for k in sorted(self.layers)}
        p = self.staging / INDEX_DIR / OUTPUTS_INDEX
        write_json(p, {"version": 1, "outputs": outputs, "layers": layers})
        (self.staging / INDEX_DIR / JOURNAL).unlink(missing_ok=True)
        return p


def _state(ctx: BuildContext) -> ReuseState:
    st = getattr(ctx, "reuse", None)
    if st is None:  # a builder called outside `run_build` (tests, notebooks): reuse only the previous release
        st = ReuseState.open(ctx.release_dir, [ctx.previous_release] if ctx.previous_release else [])
        ctx.reuse = st
    return st


def _walk_files(root: Path, within: Iterable[str] | None = None) -> set[str]:
    """Every file of the release `root` (relative paths), or only those in the top-level folders or files
    `within`."""
    if within is not None:
        out = set()
        for top in within:
            if (root / top).is_file():
                out.add(top)
            elif (root / top).is_dir():
                out |= {f"{top}/{rel}" for rel in _walk_files(root / top)}
        return out
    out = set()
    for dirpath, dirnames, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == INDEX_DIR or rel_dir.startswith(INDEX_DIR + os.sep):
            dirnames[:] = []
            continue
        for f in files:
            if f.startswith(".") and (f.endswith(".tmp") or ".tmp" in f):
                continue
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            out.add(rel.replace(os.sep, "/"))
    return out


def layer_key(ctx: BuildContext, layer_name: str) -> str | None:
    """Key of a layer already built (or reused) in this build: lets later layers depend on it."""
    e = _state(ctx).layers.get(layer_name)
    return e["key"] if e else None


def reuse_or_build(
    ctx: BuildContext,
    layer_name: str,
    input_keys: Any,
    build_fn: Callable[[], LayerResult | list[LayerResult]],
    writes: Iterable[str] | None = None,
) -> list[LayerResult]:
    """Layer-granularity reuse.

    `input_keys`: anything JSON-able that identifies what the layer reads besides its config section,
    e.g. `[inputs_key(files), layer_key(ctx, "buildings")]`. The layer key adds the layer's config
    section, the CRS section, the project frame and the pipeline fingerprint. When a previous release (or
    a killed build's staging folder) holds this layer under the same key, its files are hard-linked into
    the staging release and its LayerResults are returned without calling `build_fn`.

    Otherwise `build_fn()` runs; every file it creates in the release is recorded under the layer (files it
    recorded with `record_outputs`/`reuse_files` keep their finer keys, the rest get a key derived from
    the layer key and the path).

    `writes`: the top-level folders and files of the release the layer writes (required when other stages
    write into the release at the same time: only these are looked at for the layer's new files)."""
    st = _state(ctx)
    within = None if writes is None else tuple(writes)
    key = content_key(layer_config_key(ctx, layer_name), input_keys)
    hit = st.find_layer(layer_name, key)
    if hit is not None:
        src, entry = hit
        for rel in entry["files"]:
            link_or_copy(src.root / rel, st.staging / rel)
        st.reused_files.update(entry["files"])
        st.reused_layers.append(layer_name)
        st.record_layer(layer_name, entry)
        ctx.log.event(
            "layer_reused", layer=layer_name, key=key, files=len(entry["files"]), source=src.root.name
        )
        return [_result_from_json(r) for r in entry["results"]]

    before = _walk_files(st.staging, within)
    t0 = time.perf_counter()
    res = build_fn()
    results = res if isinstance(res, list) else [res]
    after = _walk_files(st.staging, within)
    files = sorted(after - before)
    known = set(files)  # a layer's results name all its files (650,000 XYZ tiles for the Ruhr): no list scans
    for r in results:  # files a builder names explicitly but that existed already (e.g. resumed)
        for rel in [r.tileset, r.style, *r.files]:
            if rel and rel not in known and (st.staging / rel).is_file():
                files.append(rel)
                known.add(rel)
    files.sort()
    deduped = dedupe_against_previous(st, files)
    outputs = {rel: st.outputs.get(rel) or content_key(key, rel) for rel in files}
    # results without timings: the index is part of the release and must not depend on the machine
    entry = {
        "key": key,
        "files": files,
        "outputs": outputs,
        "results": [r.to_json() | {"seconds": 0.0} for r in results],
    }
    st.built_layers.append(layer_name)
    st.deduped_files += deduped
    st.record_layer(layer_name, entry)
    ctx.log.event(
        "layer_built", layer=layer_name, key=key, files=len(files), seconds=round(time.perf_counter() - t0, 3)
    )
    return results


def _same_bytes(a: Path, b: Path, bufsize: int = 1 << 20) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x = fa.read(bufsize)
            if x != fb.read(bufsize):
                return False
            if not x:
                return True


def dedupe_against_previous(st: ReuseState, files: list[str]) -> int:
    """Files a rebuilt layer wrote with exactly the bytes of the same path in the previous release (or a
    resumed build) are replaced by hard links to that file: unchanged outputs keep their inode and are
    not stored twice. Returns how many files were linked."""
    linked = 0
    for rel in files:
        if rel in st.reused_files:
            continue
        dst = st.staging / rel
        for src_root in st.sources:
            src = src_root.root / rel
            try:
                if not src.is_file() or src.stat().st_size != dst.stat().st_size:
                    continue
                if src.samefile(dst):  # hard-linked by the builder (e.g. from the content cache)
                    if not src_root.root.name.startswith("."):  # not a partial (unvalidated) build
                        st.reused_files.add(rel)
                        st.trusted_files.add(rel)
                    break
                if not _same_bytes(src, dst):
                    continue
            except OSError:
                continue
            tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}")
            try:
                os.link(src, tmp)
                os.replace(tmp, dst)
                linked += 1
                if not src_root.root.name.startswith("."):
                    st.trusted_files.add(rel)
            except OSError:
                tmp.unlink(missing_ok=True)
            break
    return linked


def _result_from_json(d: dict[str, Any]) -> LayerResult:
    return LayerResult(
        name=d["name"],
        kind=d["kind"],
        access=d["access"],
        tileset=d.get("tileset"),
        files=list(d.get("files", [])),
        stats=dict(d.get("stats", {})),
        warnings=list(d.get("warnings", [])),
        seconds=0.0,
        style=d.get("style"),
    )


def reuse_files(ctx: BuildContext, keys: Mapping[str, str]) -> list[str]:
    """File-granularity reuse: hard-link every `relpath` whose key equals the key recorded for the same
    path in the previous release (or a killed build's staging folder). Returns the paths that must be
    built, in sorted order. Call `record_outputs(ctx, {path: key})` after writing each of them (or after
    writing all of them), so the next build can reuse them and a killed build can resume."""
    st = _state(ctx)
    stale: list[str] = []
    reused: dict[str, str] = {}
    for rel in sorted(keys):
        key = keys[rel]
        dst = st.staging / rel
        if st.outputs.get(rel) == key and dst.is_file():
            continue  # already present in this staging folder
        src = st.find(rel, key)
        if src is None:
            stale.append(rel)
            continue
        link_or_copy(src, dst)
        reused[rel] = key
    st.reused_files.update(reused)
    st.record(reused)
    return stale


def record_outputs(ctx: BuildContext, keys: Mapping[str, str]) -> None:
    """Record the keys of output files just written (relative to the release directory)."""
    _state(ctx).record(keys)


def reuse_stats(ctx: BuildContext) -> dict[str, Any]:
    st = _state(ctx)
    return {
        "layers_reused": sorted(st.reused_layers),
        "layers_built": sorted(st.built_layers),
        "files_reused": len(st.reused_files),
        "files_rebuilt_identical": st.deduped_files,
        "files_total": len(_walk_files(st.staging)),
    }
