"""Release operations behind `twin status / rollback / gc / publish / validate` (one function per command).

Every operation that changes `releases/` or `current` holds the build lock and starts with
`publish.repair`, which finishes or undoes what a killed operation left behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.fsutil import remove_owned
from pipeline.release.lock import build_lock
from pipeline.release.manifest import MANIFEST
from pipeline.release.publish import (
    ReleaseError,
    current_release,
    partial_dirs,
    prune_releases,
    releases_dir,
    repair,
    rollback,
)

OUT_MARKS = ("releases", "current", ".twin", ".twin.lock")  # what a twin output folder holds


# files that keep an empty folder in version control (the repository's data/out/.gitkeep): a folder holding
# only these is empty
PLACEHOLDERS = frozenset({".gitkeep", ".keep"})


def check_out_dir(out_dir: Path, raw_dir: Path | None = None) -> Path:
    """`out_dir` must be a twin output folder, an empty folder or not exist yet: a file, or a folder with
    other things in it (a raw delivery, a project root), is a mistake in `paths.out` / `--out`. With
    `raw_dir`: the two must not overlap (a build would read its own output or write into a delivery)."""
    if raw_dir is not None:
        o, r = out_dir.resolve(), raw_dir.resolve()
        if o == r or r in o.parents or o in r.parents:
            from pipeline.errors import ConfigError

            raise ConfigError(
                f"paths.out ({o}) and paths.raw ({r}) overlap; give the output a folder of its own",
                path=o,
            )
    for p in out_dir.parents:
        if p.exists() and not p.is_dir():
            raise ReleaseError("the output folder (paths.out / --out) lies under a file", path=p)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReleaseError(
            "the output folder (paths.out / --out) is a file, not a folder; point it at the folder that "
            "holds releases/ and current",
            path=out_dir,
        )
    contents = [e for e in out_dir.iterdir() if e.name not in PLACEHOLDERS] if out_dir.is_dir() else []
    if contents and not any((out_dir / m).exists() for m in OUT_MARKS):
        raise ReleaseError(
            "not an output folder of twin (no releases/, current or .twin/ in it); point paths.out / --out "
            "at the folder the build writes to",
            path=out_dir,
        )
    return out_dir


def resolve_release(out_dir: Path | None, ref: str | None) -> Path:
    """A release by path, by build id (under out_dir/releases) or, with no ref, the current one."""
    if ref:
        p = Path(ref)
        if (p / MANIFEST).is_file():
            return p.resolve()
        if out_dir is not None and (releases_dir(out_dir) / ref / MANIFEST).is_file():
            return (releases_dir(out_dir) / ref).resolve()
        raise ReleaseError(f"no release {ref!r} (neither a folder with manifest.json nor a build id)")
    if out_dir is None:
        raise ReleaseError("no release given: pass --release ID/FOLDER with --config or --out")
    check_out_dir(out_dir)
    cur = current_release(out_dir)
    if cur is None:
        raise ReleaseError("no current release", path=out_dir)
    return cur


def do_rollback(out_dir: Path, to: str | None = None) -> dict[str, Any]:
    """Switch `current` back one release (under the build lock, so it never races a build)."""
    check_out_dir(out_dir)
    with build_lock(out_dir):
        repaired = repair(out_dir)
        old, new = rollback(out_dir, to)
    return {"from": old.name if old else None, "to": new.name, "current": str(new), "repaired": repaired}


def collect_garbage(out_dir: Path, cache: Any | None, keep: int | None = None) -> dict[str, Any]:
    """Trim the content cache to its budget (`cache.gc()`, least recently used first; `cache`: a
    `pipeline.orchestrate.cache.Cache`), delete staging folders of dead builds and old releases.

    Deletes only inside the package's own folders (`releases/`, the cache's `objects/`), each folder first
    renamed to `.partial-del-*` (`pipeline.fsutil.remove_owned`)."""
    check_out_dir(out_dir)
    with build_lock(out_dir):
        repaired = repair(out_dir)
        rep = cache.gc().to_json() if cache is not None else None
        partial = partial_dirs(out_dir)
        for p in partial:
            remove_owned(p, owned_by=releases_dir(out_dir))
        pruned = prune_releases(out_dir, keep) if keep else []
    return {
        "cache": rep,
        "partial_removed": [p.name for p in partial],
        "releases_removed": [p.name for p in pruned],
        "repaired": repaired,
    }


def validate_path(release: Path, check_gltf: bool = True) -> dict[str, Any]:
    """Re-validate a release on disk (schemas, content URIs, glTF validator); raises ValidationError."""
    from pipeline.release.validate import validate_release

    try:
        manifest = json.loads((release / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ReleaseError(f"not a release: {MANIFEST} unreadable ({e})", path=release) from None
    report = validate_release(release, manifest, check_gltf=check_gltf)
    return {"release": release.name, **report}
