"""Release operations behind `twin status / rollback / gc / publish / validate` (one function per command)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.release.lock import build_lock
from pipeline.release.manifest import MANIFEST
from pipeline.release.publish import (
    ReleaseError,
    current_release,
    partial_dirs,
    prune_releases,
    releases_dir,
    rollback,
)


def resolve_release(out_dir: Path | None, ref: str | None) -> Path:
    """A release by path, by build id (under out_dir/releases) or, with no ref, the current one."""
    if ref:
        p = Path(ref)
        if (p / MANIFEST).is_file():
            return p.resolve()
        if out_dir is not None and (releases_dir(out_dir) / ref / MANIFEST).is_file():
            return (releases_dir(out_dir) / ref).resolve()
        raise ReleaseError(f"no release {ref!r} (neither a folder with manifest.json nor a build id)")
    cur = current_release(out_dir) if out_dir is not None else None
    if cur is None:
        raise ReleaseError("no current release", path=out_dir)
    return cur


def do_rollback(out_dir: Path, to: str | None = None) -> dict[str, Any]:
    """Switch `current` back one release (under the build lock, so it never races a build)."""
    with build_lock(out_dir):
        old, new = rollback(out_dir, to)
    return {"from": old.name if old else None, "to": new.name, "current": str(new)}


def collect_garbage(
    out_dir: Path, cache_dir: Path, cache_budget: int, keep: int | None = None
) -> dict[str, Any]:
    """Trim the cache to its budget (LRU), delete staging folders of dead builds and old releases."""
    from pipeline.orchestrate.cache import Cache

    with build_lock(out_dir):
        rep = Cache(cache_dir, cache_budget).gc()
        partial = partial_dirs(out_dir)
        for p in partial:
            shutil.rmtree(p, ignore_errors=True)
        pruned = prune_releases(out_dir, keep) if keep else []
    return {
        "cache": rep.to_json(),
        "partial_removed": [p.name for p in partial],
        "releases_removed": [p.name for p in pruned],
    }


def validate_path(release: Path, check_gltf: bool = True) -> dict[str, Any]:
    """Re-validate a release on disk (schemas, content URIs, glTF validator); raises ValidationError."""
    from pipeline.release.validate import validate_release

    manifest = json.loads((release / MANIFEST).read_text())
    report = validate_release(release, manifest, check_gltf=check_gltf)
    return {"release": release.name, **report}
