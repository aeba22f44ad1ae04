"""Atomic, crash-safe publish: a release is built in a staging folder, validated, renamed into
`releases/<id>`, recorded in the history, and only then does the `current` symlink switch (one `rename`,
atomic on POSIX). A failed or killed build never touches `current`.

Every step is ordered so that a `kill -9` at any point leaves `current` pointing at a complete, validated
release and `rollback` working; `repair(out_dir)` (run by every command that takes the build lock) finishes
or undoes what a killed operation left behind:

- promote of a new id: one rename `.staging-<id>` -> `<id>`;
- promote of an id that already exists (`--force`, or a rebuild after a rollback): one atomic exchange of
  the two folders (Linux `renameat2`); where that is not available: if `current` points at
  it, `current` first switches to the validated staging folder, the old copy moves aside
  (`.partial-old-<id>-*`), the new content is hard-linked into place under a temporary name and renamed to
  `<id>`, and `current` switches back; `repair` turns any interrupted state into "`current` -> `<id>`"
  (old or new content, both validated);
- the history is written before `current` switches (a kill in between leaves a history that names one more
  release, which `rollback` does not need);
- deletes (prune, leftovers) go through `pipeline.fsutil.remove_owned`: the folder is renamed to
  `.partial-del-*` first, so a half-deleted release is never visible under its name;
- `rollback` checks that its target is complete (manifest, every file of its output index, tilesets)
  before it switches.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from pipeline.errors import EXIT_RELEASE, TwinError
from pipeline.fsutil import DELETING_PREFIX, exchange, finish_deletes, remove_owned


class ReleaseError(TwinError):
    """Release management problem (nothing to roll back to, unknown release, refused export)."""

    exit_code = EXIT_RELEASE


RELEASES = "releases"
CURRENT = "current"
STAGING_PREFIX = ".staging-"
PARTIAL_PREFIX = ".partial-"  # a staging folder of an earlier, unfinished build: a source for resuming
OLD_PREFIX = ".partial-old-"  # an earlier copy of a release id being rebuilt (complete, validated)
FAULT_ENV = "TWIN_FAULT_AT"  # tests: `kill -9` this process at the named step (see `fault_point`)


def fault_point(step: str) -> None:
    """Fault injection for the crash tests: when the environment variable TWIN_FAULT_AT names `step`, the
    process sends itself SIGKILL here (no cleanup, no `finally`, like a power cut or the OOM killer).
    `step:N` kills at the N-th time the step is reached (1-based)."""
    want = os.environ.get(FAULT_ENV)
    if not want:
        return
    name, _, nth = want.partition(":")
    if name != step:
        return
    count = _FAULT_COUNTS[step] = _FAULT_COUNTS.get(step, 0) + 1
    if count >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}


def releases_dir(out_dir: Path) -> Path:
    return out_dir / RELEASES


def staging_dir(out_dir: Path, build_id: str) -> Path:
    return releases_dir(out_dir) / f"{STAGING_PREFIX}{build_id}"


def _link_target(out_dir: Path) -> Path | None:
    """Where `current` points (absolute, not checked), or None when there is no link."""
    link = out_dir / CURRENT
    if not link.is_symlink():
        return None
    return (out_dir / os.readlink(link)).absolute()


def current_release(out_dir: Path) -> Path | None:
    link = out_dir / CURRENT
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    return target if target.is_dir() else None


def switch_current(out_dir: Path, release: Path) -> None:
    """Point `current` at `release` atomically (relative link, so the tree can be moved or served)."""
    link = out_dir / CURRENT
    if link.exists() and not link.is_symlink():
        raise ReleaseError(
            "`current` is not a symbolic link (a folder or file made by hand?); move it away, then retry",
            path=link,
        )
    tmp = out_dir / f".{CURRENT}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(release, out_dir), tmp)
    fault_point("switch")
    os.replace(tmp, link)
    _fsync_dir(out_dir)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link copy of a folder tree (same file system; the files are never written in place)."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(Path(root) / f, dst / rel / f)
        dirs.sort()


def promote(staging: Path, final: Path) -> Path:
    """Rename the validated staging folder to its final name; `current` stays valid throughout.

    Does not switch `current` to the new release (the caller records the history first, then switches).
    When `final` exists (a forced rebuild of the same id), the two folders are exchanged atomically; where
    the system cannot and `current` points at `final`, `current` serves the staging copy while the old copy
    moves aside, and ends on `final` again."""
    rdir = final.parent
    out_dir = rdir.parent
    if not final.exists():
        os.rename(staging, final)
        _fsync_dir(rdir)
        fault_point("promote")
        return final
    if exchange(staging, final):  # one atomic swap: `final` is the new release, `staging` the old one
        _fsync_dir(rdir)
        fault_point("promote")
        remove_owned(staging, owned_by=rdir)
        return final
    cur = current_release(out_dir)
    old = rdir / f"{OLD_PREFIX}{final.name}-{os.getpid()}"
    if cur is not None and cur == final.resolve():
        switch_current(out_dir, staging)  # validated: served while `final` is swapped
        fault_point("promote")
        os.rename(final, old)
        fault_point("promote")
        tmp = rdir / f"{DELETING_PREFIX}link-{final.name}-{os.getpid()}"
        _link_tree(staging, tmp)
        fault_point("promote")
        os.rename(tmp, final)
        _fsync_dir(rdir)
        fault_point("promote")
        switch_current(out_dir, final)
        fault_point("promote")
        remove_owned(staging, owned_by=rdir)
    else:  # `final` is not served: move it aside, put the new one in place
        os.rename(final, old)
        fault_point("promote")
        os.rename(staging, final)
        _fsync_dir(rdir)
    fault_point("promote")
    remove_owned(old, owned_by=rdir)
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
    on_disk = {  # a folder without a manifest is not a release (and never pruned)
        p.name: p
        for p in rdir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()
    }
    order = [i for i in read_history(out_dir) if i in on_disk]
    rest = sorted(
        (p for n, p in on_disk.items() if n not in order), key=lambda p: (p.stat().st_mtime, p.name)
    )
    return rest + [on_disk[i] for i in order]


def check_complete(release: Path) -> None:
    """Raise ReleaseError unless `release` is a complete release: a readable manifest, every file of its
    output index (`.twin/outputs.json`) present, every layer's tileset and files present, every tileset
    content URI resolving (no glTF validator: the release passed it when it was built)."""
    from pipeline.errors import ValidationError
    from pipeline.release.manifest import MANIFEST
    from pipeline.release.validate import validate_release

    try:
        manifest = json.loads((release / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ReleaseError(f"not a complete release: {MANIFEST} unreadable ({e})", path=release) from None
    try:
        index = json.loads((release / ".twin" / "outputs.json").read_text())
    except (OSError, ValueError):
        index = {}
    missing = [rel for rel in index.get("outputs", {}) if not (release / rel).is_file()]
    for lay in manifest.get("layers", []):
        missing += [
            f for f in [lay.get("tileset"), *lay.get("files", [])] if f and not (release / f).is_file()
        ]
    if missing:
        raise ReleaseError(
            f"not a complete release: {len(missing)} file(s) missing, first {missing[0]}", path=release
        )
    names = {lay.get("name") for lay in manifest.get("layers", [])}
    try:
        validate_release(release, manifest, check_gltf=False, reused_layers=names)
    except ValidationError as e:
        raise ReleaseError(f"not a complete release: {e.message}", path=release) from None


def rollback(out_dir: Path, to: str | None = None) -> tuple[Path | None, Path]:
    """Point `current` at the release published before the current one (or at release `to`).

    The release rolled back from is marked as rolled back (it stays on disk until pruned), so a second
    rollback goes back one more; publishing it again (a new build) clears the mark. The target is checked
    for completeness first (`check_complete`); an incomplete one is refused and `current` stays.
    Returns (previous current, new current)."""
    cur = current_release(out_dir)
    doc = _read_history_doc(out_dir)
    if to is not None:
        target = releases_dir(out_dir) / to
        if to.startswith(".") or "/" in to or not (target / "manifest.json").is_file():
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
    check_complete(target)
    fault_point("rollback")
    switch_current(out_dir, target)
    fault_point("rollback")
    if cur is not None and cur.name != target.name:
        doc["rolled_back"] = [i for i in doc["rolled_back"] if i != cur.name] + [cur.name]
    doc["rolled_back"] = [i for i in doc["rolled_back"] if i != target.name]
    _write_history(out_dir, doc)
    return cur, target


def prune_releases(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` releases (never the current one). Returns what was removed.

    Each release disappears under its name in one rename (`remove_owned`), so a prune killed half-way leaves
    only complete releases and `.partial-del-*` leftovers that the next command removes."""
    cur = current_release(out_dir)
    rels = list_releases(out_dir)
    removed = []
    for p in rels[: max(0, len(rels) - keep)]:
        if cur is not None and p.resolve() == cur:
            continue
        remove_owned(p, owned_by=releases_dir(out_dir))
        removed.append(p)
        fault_point("prune")
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
    """Staging folders left by killed or failed builds and old copies of rebuilt ids (resume sources; only
    meaningful while holding the build lock). Leftovers of deletes (`.partial-del-*`) are not among them."""
    rdir = releases_dir(out_dir)
    if not rdir.is_dir():
        return []
    cur = current_release(out_dir)
    return sorted(
        p
        for p in rdir.iterdir()
        if p.is_dir()
        and p.name.startswith((STAGING_PREFIX, PARTIAL_PREFIX))
        and not p.name.startswith(DELETING_PREFIX)
        and (cur is None or p.resolve() != cur)
    )


def repair(out_dir: Path) -> list[str]:
    """Finish or undo what a killed release operation left behind (call it holding the build lock).

    - `current` pointing at a staging folder (a forced rebuild killed inside promote): back to `<id>`, whose
      old copy is renamed back first if the kill came after it moved aside;
    - `current` pointing at nothing: at `<id>` again if its moved-aside copy exists, else at the newest
      complete release in the history;
    - the current release missing from the history (an older version switched before recording) is
      appended; the current release is never marked rolled back;
    - old copies of a rebuilt id whose new copy is in place and `.partial-del-*` leftovers of killed
      deletes are removed.
    Returns what it did, one line each (the caller logs them)."""
    done: list[str] = []
    rdir = releases_dir(out_dir)
    if not rdir.is_dir():
        return done
    target = _link_target(out_dir)
    if target is not None and target.parent == rdir.absolute() and target.name.startswith(STAGING_PREFIX):
        final = rdir / target.name[len(STAGING_PREFIX) :]
        if not (final / "manifest.json").is_file():
            _restore_old(rdir, final.name)
        if (final / "manifest.json").is_file():
            switch_current(out_dir, final)
            done.append(f"current switched from the staging folder of an interrupted promote to {final.name}")
    target = _link_target(out_dir)
    if target is not None and not target.is_dir():
        name = target.name
        if target.parent == rdir.absolute() and _restore_old(rdir, name):
            done.append(f"release {name} restored from its copy moved aside by an interrupted promote")
        else:
            for rid in reversed(read_history(out_dir)):
                cand = rdir / rid
                try:
                    check_complete(cand)
                except ReleaseError:
                    continue
                switch_current(out_dir, cand)
                done.append(f"current pointed at a missing release {name}; switched to {rid}")
                break
    cur = current_release(out_dir)
    if cur is not None and cur.parent == rdir.resolve() and not cur.name.startswith("."):
        doc = _read_history_doc(out_dir)
        if cur.name not in doc["published"] or cur.name in doc["rolled_back"]:
            if cur.name not in doc["published"]:
                doc["published"].append(cur.name)
                done.append(f"history: current release {cur.name} recorded as published")
            doc["rolled_back"] = [i for i in doc["rolled_back"] if i != cur.name]
            _write_history(out_dir, doc)
    cur = current_release(out_dir)
    for old in sorted(rdir.iterdir()):
        if old.name.startswith(OLD_PREFIX):
            name = old.name[len(OLD_PREFIX) :].rsplit("-", 1)[0]
        elif old.name.startswith(STAGING_PREFIX):
            name = old.name[len(STAGING_PREFIX) :]
        else:
            continue
        # the old copy of a rebuilt id, or a staging folder whose release is complete (a promote killed
        # after its swap): nothing in it that the release does not have
        if (rdir / name / "manifest.json").is_file() and (cur is None or old.resolve() != cur):
            remove_owned(old, owned_by=rdir)
            done.append(f"removed {old.name} (left by an interrupted promote)")
    for name in finish_deletes(rdir):
        done.append(f"removed {name} (left by an interrupted delete)")
    for tmp in out_dir.glob(f".{CURRENT}.tmp-*"):
        if tmp.is_symlink():  # the new link of an interrupted switch
            remove_owned(tmp, owned_by=out_dir)
            done.append(f"removed {tmp.name} (left by an interrupted switch)")
    return done


def _restore_old(rdir: Path, name: str) -> bool:
    """Rename the newest complete moved-aside copy `.partial-old-<name>-*` back to `<name>`."""
    if (rdir / name).exists():
        return False
    olds = sorted(
        (p for p in rdir.glob(f"{OLD_PREFIX}{name}-*") if (p / "manifest.json").is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not olds:
        return False
    os.rename(olds[0], rdir / name)
    _fsync_dir(rdir)
    return True
