"""Atomic publish: a release is built in a staging folder, validated, renamed into `releases/<id>`,
and only then does the `current` symlink switch (one `rename`, atomic on POSIX). A failed or killed build
never touches `current`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline.errors import EXIT_RELEASE, TwinError


class ReleaseError(TwinError):
    """Release management problem (nothing to roll back to, unknown release)."""

    exit_code = EXIT_RELEASE


RELEASES = "releases"
CURRENT = "current"
STAGING_PREFIX = ".staging-"
PARTIAL_PREFIX = ".partial-"  # a staging folder of an earlier, unfinished build: a source for resuming


def releases_dir(out_dir: Path) -> Path:
    return out_dir / RELEASES


def staging_dir(out_dir: Path, build_id: str) -> Path:
    return releases_dir(out_dir) / f"{STAGING_PREFIX}{build_id}"


def current_release(out_dir: Path) -> Path | None:
    link = out_dir / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    return target if target.is_dir() else None


def switch_current(out_dir: Path, release: Path) -> None:
    """Point `current` at `release` atomically (relative link, so the tree can be moved or served)."""
    link = out_dir / CURRENT
    tmp = out_dir / f".{CURRENT}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(release, out_dir), tmp)
    os.replace(tmp, link)
    _fsync_dir(out_dir)


def promote(staging: Path, final: Path) -> Path:
    """Rename the validated staging folder to its final name."""
    old = None
    if final.exists():  # a forced rebuild of the same id: move the old copy aside, never delete in place
        old = final.parent / f"{PARTIAL_PREFIX}old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


HISTORY = ".twin/history.json"  # publish order of build ids (newest last) and rolled-back ids


def _read_history_doc(out_dir: Path) -> dict[str, list[str]]:
    try:
        h = json.loads((out_dir / HISTORY).read_text())
        return {
            "published": [str(x) for x in h.get("published", [])],
            "rolled_back": [str(x) for x in h.get("rolled_back", [])],
        }
    except (OSError, ValueError):
        return {"published": [], "rolled_back": []}


def read_history(out_dir: Path) -> list[str]:
    """Build ids in publish order, newest last."""
    return _read_history_doc(out_dir)["published"]


def _write_history(out_dir: Path, doc: dict[str, list[str]]) -> None:
    from pipeline.tiles.tileset import write_json

    write_json(
        out_dir / HISTORY, {"published": doc["published"][-500:], "rolled_back": doc["rolled_back"][-500:]}
    )


def record_published(out_dir: Path, build_id: str) -> None:
    """Append `build_id` to the publish history (moving it to the end if it was published before)."""
    doc = _read_history_doc(out_dir)
    doc["published"] = [i for i in doc["published"] if i != build_id] + [build_id]
    doc["rolled_back"] = [i for i in doc["rolled_back"] if i != build_id]
    _write_history(out_dir, doc)


def list_releases(out_dir: Path) -> list[Path]:
    """Published releases on disk, oldest first (publish order; unknown ones first, by mtime)."""
    rdir = releases_dir(out_dir)
    if not rdir.is_dir():
        return []
    on_disk = {p.name: p for p in rdir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    order = [i for i in read_history(out_dir) if i in on_disk]
    rest = sorted(
        (p for n, p in on_disk.items() if n not in order), key=lambda p: (p.stat().st_mtime, p.name)
    )
    return rest + [on_disk[i] for i in order]


def rollback(out_dir: Path, to: str | None = None) -> tuple[Path | None, Path]:
    """Point `current` at the release published before the current one (or at release `to`).

    The release rolled back from is marked as rolled back (it stays on disk until pruned), so a second
    rollback goes back one more; publishing it again (a new build) clears the mark. Returns
    (previous current, new current)."""
    cur = current_release(out_dir)
    doc = _read_history_doc(out_dir)
    if to is not None:
        target = releases_dir(out_dir) / to
        if not (target / "manifest.json").is_file():
            raise ReleaseError(f"no published release {to!r}", path=releases_dir(out_dir))
    else:
        rels = list_releases(out_dir)
        names = [p.name for p in rels]
        if cur is None or cur.name not in names:
            raise ReleaseError("no current release to roll back from", path=out_dir)
        i = names.index(cur.name)
        older = [p for p in rels[:i] if (p / "manifest.json").is_file() and p.name not in doc["rolled_back"]]
        if not older:
            raise ReleaseError(
                f"release {cur.name} is the oldest one on disk; nothing to roll back to", path=out_dir
            )
        target = older[-1]
    switch_current(out_dir, target)
    if cur is not None and cur.name != target.name:
        doc["rolled_back"] = [i for i in doc["rolled_back"] if i != cur.name] + [cur.name]
    doc["rolled_back"] = [i for i in doc["rolled_back"] if i != target.name]
    _write_history(out_dir, doc)
    return cur, target


def prune_releases(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` releases (never the current one). Returns what was removed."""
    cur = current_release(out_dir)
    rels = list_releases(out_dir)
    removed = []
    for p in rels[: max(0, len(rels) - keep)]:
        if cur is not None and p.resolve() == cur:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    if removed:
        names = {p.name for p in removed}
        doc = _read_history_doc(out_dir)
        _write_history(
            out_dir,
            {
                "published": [i for i in doc["published"] if i not in names],
                "rolled_back": [i for i in doc["rolled_back"] if i not in names],
            },
        )
    return removed


def partial_dirs(out_dir: Path) -> list[Path]:
    """Staging folders left by killed or failed builds (only meaningful while holding the build lock)."""
    rdir = releases_dir(out_dir)
    if not rdir.is_dir():
        return []
    return sorted(
        p for p in rdir.iterdir() if p.is_dir() and p.name.startswith((STAGING_PREFIX, PARTIAL_PREFIX))
    )
