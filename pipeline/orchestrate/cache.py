"""Incremental builds: a content-addressed cache and reuse of unchanged release outputs.

Two mechanisms, both keyed by content (never by timestamps):

1. **Intermediate cache** under `cfg.cache_dir/objects/`: `Cache.get_or_build(key_parts, builder)` returns
   the path of a file or directory built once per key. Keys are sha256 digests of canonical JSON of the key
   parts (input sha256s, config sections, the project frame) plus the pipeline fingerprint (version + hash
   of the pipeline's source code). Safe for concurrent Dask workers on one machine or a shared filesystem:
   each builder writes to a private temporary name, then one rename publishes the entry. `twin gc` trims
   the cache to its size budget, least recently used first.

2. **Release output reuse**: every release carries `.twin/outputs.json` mapping each output file (relative
   path) to the key it was built from, and each layer to its layer key and LayerResult. When a new build
   needs an output whose key equals the key recorded in the previous release (or in a partial staging
   folder left by a killed build), the file is hard-linked: byte-identical, not rewritten.

   - layer granularity: `reuse_or_build(ctx, "buildings", input_keys, build_fn)`
   - file granularity (per tile): `stale = reuse_files(ctx, {relpath: key, ...})`, build only `stale`,
     then `record_outputs(ctx, {relpath: key for relpath in stale})`.

All of this runs in the orchestrating process (the Dask client side); only `Cache.get_or_build` may also be
called on workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pickle
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.model import BuildContext, InputFile, LayerResult
from pipeline.orchestrate.executor import build_executor, map_ordered
from pipeline.release.manifest import pipeline_fingerprint

INDEX_DIR = ".twin"
OUTPUTS_INDEX = "outputs.json"  # release-level: relpath -> key, layer -> {key, results, files}
JOURNAL = "journal.jsonl"  # staging-level, append-only: survives kill -9, used to resume
DEFAULT_CACHE_BUDGET = 20 * 10**9


# ---------------------------------------------------------------------------------------------- keys


def _canonical(obj: Any) -> Any:
    if isinstance(obj, InputFile):
        return {"input": obj.path.name, "role": obj.role, "sha256": obj.sha256}
    if isinstance(obj, Path):
        return {"path": obj.as_posix()}
    if hasattr(obj, "model_dump"):  # pydantic config section
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_json"):
            return obj.to_json()
        # field by field (not dataclasses.asdict): nested arrays are hashed, never printed
        return {
            "@" + type(obj).__name__: {
                f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            }
        }
    if isinstance(obj, bytes):
        return {"sha256": hashlib.sha256(obj).hexdigest()}
    if isinstance(obj, set | frozenset):
        return sorted(_canonical(o) for o in obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical(o) for o in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    try:
        import numpy as np

        if isinstance(obj, np.ndarray) and obj.dtype.kind == "O":  # e.g. shapely geometries: by content
            return {"objects": list(obj.shape), "items": [_canonical(o) for o in obj.ravel()]}
        if isinstance(obj, np.ndarray):
            return {
                "ndarray": obj.dtype.str,
                "shape": obj.shape,
                "sha256": hashlib.sha256(obj.tobytes()).hexdigest(),
            }
        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    try:
        import shapely

        if isinstance(obj, shapely.Geometry):
            return {"wkb": hashlib.sha256(shapely.to_wkb(obj, output_dimension=3)).hexdigest()}
    except ImportError:  # pragma: no cover
        pass
    from dask.base import tokenize

    return {"token": tokenize(obj)}


def content_key(*parts: Any) -> str:
    """sha256 (32 hex digits) of the canonical JSON of `parts`; deterministic across processes and hosts.

    Paths enter as given (pass InputFile objects or hashes, not absolute paths, when a key must not depend
    on where the project sits)."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def inputs_key(inputs: Iterable[InputFile]) -> str:
    """Key of a set of input files (order-independent, by role, name and content)."""
    return content_key(sorted((i.role, i.path.name, i.sha256) for i in inputs))


def layer_config_key(ctx: BuildContext, layer_name: str) -> str:
    """Key of what every output of a layer depends on besides its inputs: the layer's config section,
    the CRS section, the project frame and the pipeline fingerprint."""
    section = getattr(ctx.cfg.layers, layer_name, None)
    return content_key(pipeline_fingerprint(), layer_name, section, ctx.cfg.crs, ctx.frame.to_json())


# ------------------------------------------------------------------------------- intermediate cache


@dataclass
class GcReport:
    budget: int
    before: int
    after: int
    removed: int
    kept: int
    removed_tmp: int = 0

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _tree_size(p: Path) -> int:
    if p.is_symlink() or p.is_file():
        return p.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(p):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _remove(p: Path, objects: Path) -> None:
    """Delete a cache entry or temporary (only ever inside the cache's own `objects/`)."""
    from pipeline.fsutil import remove_owned

    with contextlib.suppress(OSError):
        remove_owned(p, owned_by=objects)


class Cache:
    """Content-addressed store: `objects/<k[:2]>/<k>` is a file or a directory built by one builder call."""

    def __init__(self, root: Path, budget: int = DEFAULT_CACHE_BUDGET, refresh_before: float | None = None):
        self.root = Path(root)
        self.budget = budget
        # `twin build --force`: an entry last written before this time (the build's start) is a miss and
        # is rebuilt and replaced; entries written during the build are hits (also across workers)
        self.refresh_before = refresh_before

    @classmethod
    def for_config(cls, cfg: Any) -> Cache:
        budget = DEFAULT_CACHE_BUDGET
        size = getattr(cfg.runtime, "cache_budget", None)
        if size:
            from pipeline.config.sizes import parse_size

            budget = parse_size(size)
        return cls(cfg.cache_dir, budget)

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    def path_for(self, key: str) -> Path:
        return self.objects / key[:2] / key

    def key(self, key_parts: Any) -> str:
        parts = key_parts if isinstance(key_parts, list | tuple) else [key_parts]
        return content_key(pipeline_fingerprint(), *parts)

    def _stale(self, p: Path) -> bool:
        if self.refresh_before is None:
            return False
        try:
            return p.stat().st_mtime < self.refresh_before
        except OSError:
            return True

    def get(self, key: str) -> Path | None:
        p = self.path_for(key)
        if p.exists() and not self._stale(p):
            with contextlib.suppress(OSError):
                os.utime(p)  # LRU clock for `gc`
            return p
        return None

    def get_or_build(self, key_parts: Any, builder: Callable[[Path], Any]) -> Path:
        """Path of the cached entry for `key_parts`; built by `builder(tmp_path)` on a miss.

        `builder` must create `tmp_path` (a file or a directory) and nothing else; the entry becomes visible
        by one atomic rename, so a killed builder never leaves a half entry behind."""
        return self.get_or_build_key(self.key(key_parts), builder)

    def get_or_build_key(self, key: str, builder: Callable[[Path], Any]) -> Path:
        """`get_or_build` with a key already computed by `Cache.key`."""
        hit = self.get(key)
        if hit is not None:
            return hit
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            builder(tmp)
            if not tmp.exists():
                raise RuntimeError(f"cache builder for {key} did not create its output")
            if self.refresh_before is not None:
                os.utime(tmp)  # fresh for this build even if the builder copied an old file's times
            try:
                os.rename(tmp, final)
            except OSError as e:  # another worker won the race: keep theirs
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise
                if self._stale(final):  # a forced rebuild replaces the old entry (a directory)
                    old = final.parent / f".tmp-old-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                    os.rename(final, old)
                    os.rename(tmp, final)
                    _remove(old, self.objects)
                else:
                    _remove(tmp, self.objects)
        except BaseException:
            _remove(tmp, self.objects)
            raise
        return final

    def materialize(
        self,
        key: str,
        build: Callable[[Path], Any],
        dst: Mapping[str, Path | str] | Callable[[Path], Mapping[str, Path | str]],
    ) -> Path:
        """The one way a file comes out of the store into a release: the entry for `key` (a directory;
        on a miss `build(tmp_dir)` fills a fresh folder), then every `name: path` of `dst` hard-linked
        from the entry's file `name` (`link_or_copy`). `dst` may be a function of the entry when the names
        are written in it (a point bin's tiles). Returns the entry (for the metadata a builder left)."""

        def fill(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            build(tmp)

        entry = self.get_or_build_key(key, fill)
        for name, path in (dst(entry) if callable(dst) else dst).items():
            link_or_copy(entry / name, Path(path))
        return entry

    def call(self, key_parts: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, memoised in the cache under `key_parts` (the result is pickled).

        `key_parts` must name everything the result depends on (input sha256s, parameters), never paths
        alone. Runs on workers too (the Cache object is small and picklable)."""

        return self.call_key(self.key(key_parts), fn, *args, **kwargs)

    def call_key(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call` with a key already computed by `Cache.key`."""

        def build(tmp: Path) -> None:
            res = fn(*args, **kwargs)
            with tmp.open("wb") as f:
                pickle.dump(res, f, protocol=pickle.HIGHEST_PROTOCOL)

        p = self.get_or_build_key(key, build)
        with p.open("rb") as f:
            return pickle.load(f)

    def load(self, key: str) -> tuple[bool, Any]:
        """(True, result) when a `call` result is cached under `key`, else (False, None)."""
        p = self.get(key)
        if p is None or not p.is_file():
            return False, None
        try:
            with p.open("rb") as f:
                return True, pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            return False, None

    def entries(self) -> list[tuple[Path, float, int]]:
        """(path, last use, size) of every entry."""
        out: list[tuple[Path, float, int]] = []
        if not self.objects.is_dir():
            return out
        for sub in self.objects.iterdir():
            if not sub.is_dir():
                continue
            for e in sub.iterdir():
                if e.name.startswith("."):  # temporaries, leftovers of killed deletes
                    continue
                with contextlib.suppress(OSError):
                    out.append((e, e.lstat().st_mtime, _tree_size(e)))
        return out

    def usage(self) -> int:
        return sum(s for _p, _t, s in self.entries())

    def gc(self, budget: int | None = None, tmp_age_s: float = 6 * 3600) -> GcReport:
        """Remove least recently used entries until the cache fits `budget` bytes; also stale temporaries."""
        budget = self.budget if budget is None else budget
        removed_tmp = 0
        if self.objects.is_dir():
            now = time.time()
            for t in [*self.objects.glob("*/.tmp-*"), *self.objects.glob("*/.partial-del-*")]:
                with contextlib.suppress(OSError):
                    if now - t.lstat().st_mtime > tmp_age_s:
                        _remove(t, self.objects)
                        removed_tmp += 1
        ents = sorted(self.entries(), key=lambda e: (e[1], e[0].name))
        total = before = sum(s for _p, _t, s in ents)
        removed = 0
        for p, _t, s in ents:
            if total <= budget:
                break
            _remove(p, self.objects)
            total -= s
            removed += 1
        return GcReport(budget, before, total, removed, len(ents) - removed, removed_tmp)


# ------------------------------------------------------------------------------ release output reuse


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


def link_or_copy(src: Path, dst: Path) -> None:
    """Put the file `src` at `dst` (replacing what is there) as a hard link, or a copy where the file system
    has none: the same bytes, never rewritten."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        if dst.samefile(src):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # other filesystem or no hardlinks: a copy is still byte-identical
        shutil.copyfile(src, dst)


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

    @classmethod
    def open(cls, staging: Path, sources: Iterable[Path], *, force: bool = False) -> ReuseState:
        st = cls(staging, force=force, started=time.time())
        for s in sources:
            if s is not None and s.is_dir():
                st.sources.append(ReuseSource(s, read_index(s)))
        (staging / INDEX_DIR).mkdir(parents=True, exist_ok=True)
        return st

    def _journal(self, rec: dict[str, Any]) -> None:
        with (self.staging / INDEX_DIR / JOURNAL).open("a", encoding="utf-8") as f:
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


def _walk_files(root: Path) -> set[str]:
    out: set[str] = set()
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
) -> list[LayerResult]:
    """Layer-granularity reuse.

    `input_keys`: anything JSON-able that identifies what the layer reads besides its config section,
    e.g. `[inputs_key(files), layer_key(ctx, "buildings")]`. The layer key adds the layer's config
    section, the CRS section, the project frame and the pipeline fingerprint. When a previous release (or
    a killed build's staging folder) holds this layer under the same key, its files are hard-linked into
    the staging release and its LayerResults are returned without calling `build_fn`.

    Otherwise `build_fn()` runs; every file it creates in the release is recorded under the layer (files it
    recorded with `record_outputs`/`reuse_files` keep their finer keys, the rest get a key derived from
    the layer key and the path)."""
    st = _state(ctx)
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

    before = _walk_files(st.staging)
    t0 = time.perf_counter()
    res = build_fn()
    results = res if isinstance(res, list) else [res]
    after = _walk_files(st.staging)
    files = sorted(after - before)
    for r in results:  # files a builder names explicitly but that existed already (e.g. resumed)
        for rel in [r.tileset, r.style, *r.files]:
            if rel and rel not in files and (st.staging / rel).is_file():
                files.append(rel)
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


def feature_hashes(gdf: Any, id_column: str | None = None) -> dict[str, str]:
    """Content hash (16 hex digits) of every feature of a GeoDataFrame: geometry WKB + all attributes.

    Keyed by `id_column` (e.g. ALKIS `oid`, `flstkennz`) or the row position. A tile of buildings or
    parcels can then be keyed by the hashes of the features it holds:
    `content_key(layer_config_key(ctx, "buildings"), sorted(h[i] for i in ids_in_tile))`, so a cadastre
    update rebuilds only the tiles whose features changed."""
    import pandas as pd
    import shapely

    geom = gdf.geometry.values
    wkb = shapely.to_wkb(geom, output_dimension=3) if len(gdf) else []
    attrs = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    attr_hash = (
        pd.util.hash_pandas_object(attrs.astype(str), index=False).to_numpy() if len(attrs.columns) else None
    )
    ids = gdf[id_column].astype(str).tolist() if id_column else [str(i) for i in range(len(gdf))]
    out: dict[str, str] = {}
    for k, fid in enumerate(ids):
        h = hashlib.sha256(bytes(wkb[k]) if wkb[k] is not None else b"")
        if attr_hash is not None:
            h.update(int(attr_hash[k]).to_bytes(8, "little"))
        out[fid] = h.hexdigest()[:16]
    return out


def reuse_stats(ctx: BuildContext) -> dict[str, Any]:
    st = _state(ctx)
    return {
        "layers_reused": sorted(st.reused_layers),
        "layers_built": sorted(st.built_layers),
        "files_reused": len(st.reused_files),
        "files_rebuilt_identical": st.deduped_files,
        "files_total": len(_walk_files(st.staging)),
    }


def cached_call(
    cache: Cache | None, key_parts: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Module-level form of `Cache.call` for task submission; `cache=None` just calls `fn`."""
    if cache is None:
        return fn(*args, **kwargs)
    return cache.call(key_parts, fn, *args, **kwargs)


def build_cache(ctx: BuildContext) -> Cache:
    """The build's intermediate cache (`paths.cache`, budget `runtime.cache_budget`)."""
    c = getattr(ctx, "_twin_cache", None)
    if c is None:
        c = Cache.for_config(ctx.cfg)
        st = getattr(ctx, "reuse", None)
        if st is not None and st.force:
            c.refresh_before = st.started
        with contextlib.suppress(AttributeError, TypeError):
            ctx._twin_cache = c
    return c


def input_sha256(ctx: BuildContext, path: Path | str) -> str:
    """sha256 of an input file of this build (from the input scan; hashed here if it is not an input)."""
    want = Path(path).resolve()
    index = getattr(ctx, "_twin_sha_by_path", None)
    if index is None or len(index) != len(ctx.inputs):
        index = {i.path.resolve(): i.sha256 for i in ctx.inputs}  # input paths are resolved already
        with contextlib.suppress(AttributeError, TypeError):
            ctx._twin_sha_by_path = index
    if want in index:
        return index[want]
    h = hashlib.sha256()
    with want.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _call_key(cache: Cache, key: str, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    return cache.call_key(key, fn, *args, **kwargs)


# (key parts, function, positional arguments, keyword arguments) of one `run_cached` call
CachedCall = tuple[Any, Callable[..., Any], tuple, dict[str, Any]]


def run_cached(
    ctx: BuildContext,
    calls: list[CachedCall],
    name: str = "cached",
) -> list[Any]:
    """Run `fn(*args, **kwargs)` for every `(key_parts, fn, args, kwargs)`, memoised in the build cache.

    Keys are computed here; cached results are loaded in this process and only the misses are submitted
    to the Dask workers (or run here without a client), so an incremental build pays for the changed
    inputs only. Results in call order."""
    cache = build_cache(ctx)
    keys = [cache.key(kp) for kp, _fn, _a, _k in calls]
    out: list[Any] = [None] * len(calls)
    misses: list[int] = []
    for i, key in enumerate(keys):
        hit, res = cache.load(key)
        if hit:
            out[i] = res
        else:
            misses.append(i)
    executor = build_executor(ctx.client) if len(misses) > 1 else None
    items = [(cache, keys[i], calls[i][1], calls[i][2], calls[i][3]) for i in misses]
    for i, r in zip(misses, map_ordered(executor, _call_key, items, name=name), strict=True):
        out[i] = r
    return out
