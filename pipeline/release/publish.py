"""Atomic publish: a release is built in a staging folder, validated, renamed into `releases/<id>`,
and only then does the `current` symlink switch (one `rename`, atomic on POSIX). A failed or killed build
never touches `current`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

RELEASES = "releases"
CURRENT = "current"
STAGING_PREFIX = ".staging-"


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
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(final.parent)
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


def prune_releases(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` releases (never the current one). Returns what was removed."""
    rdir = releases_dir(out_dir)
    if not rdir.is_dir():
        return []
    cur = current_release(out_dir)
    rels = [p for p in rdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    rels.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for p in rels[keep:]:
        if cur is not None and p.resolve() == cur:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
