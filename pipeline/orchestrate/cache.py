"""Incremental builds: the content-addressed cache (intermediate results and files built once per key).

Entries live under `cfg.cache_dir/objects/`: `Cache.get_or_build(key_parts, builder)` returns the path of a
file or directory built once per key. Keys are sha256 digests of canonical JSON of the key parts (input
sha256s, config sections, the project frame) plus the pipeline fingerprint (version + hash of the
pipeline's source code), never timestamps. Safe for concurrent Dask workers on one machine or a shared
filesystem: each builder writes to a private temporary name, then one rename publishes the entry. `twin gc`
trims the cache to its size budget, least recently used first. `Cache.materialize` hard-links an entry's
files into a release; `run_cached` memoises a list of calls and runs the misses on the build's executor.

The reuse of unchanged outputs of the previous release is pipeline.orchestrate.reuse. `Cache.get_or_build`
and `Cache.call` may also be called on workers.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.model import BuildContext, InputFile
from pipeline.orchestrate.executor import build_executor, map_ordered
from pipeline.release.manifest import pipeline_fingerprint

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


def _pickle_to(tmp: Path, value: Any) -> None:
    """A `call` result's entry file: `value` pickled."""
    with tmp.open("wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


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
        p = self.get_or_build_key(key, lambda tmp: _pickle_to(tmp, fn(*args, **kwargs)))
        with p.open("rb") as f:
            return pickle.load(f)

    def store_key(self, key: str, value: Any) -> Path:
        """`value`, already computed, as the `call` result under `key` (what `call_key` and `load` read;
        an entry already there is kept)."""
        return self.get_or_build_key(key, lambda tmp: _pickle_to(tmp, value))

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
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run `fn(*args, **kwargs)` for every `(key_parts, fn, args, kwargs)`, memoised in the build cache.

    Keys are computed here; cached results are loaded in this process and only the misses are submitted
    to the Dask workers (or run here without a client), so an incremental build pays for the changed
    inputs only. Results in call order; with `on_result(i, result)` each result is handed over as it is
    loaded or arrives and not kept (the list returned holds None: results need not fit in memory at once)."""
    cache = build_cache(ctx)
    keys = [cache.key(kp) for kp, _fn, _a, _k in calls]
    out: list[Any] = [None] * len(calls)
    misses: list[int] = []
    for i, key in enumerate(keys):
        hit, res = cache.load(key)
        if not hit:
            misses.append(i)
        elif on_result is not None:
            on_result(i, res)
        else:
            out[i] = res
        del res
    executor = build_executor(ctx.client) if len(misses) > 1 else None
    items = [(cache, keys[i], calls[i][1], calls[i][2], calls[i][3]) for i in misses]
    if on_result is not None:
        map_ordered(executor, _call_key, items, name=name, on_result=lambda j, r: on_result(misses[j], r))
        return out
    for i, r in zip(misses, map_ordered(executor, _call_key, items, name=name), strict=True):
        out[i] = r
    return out
