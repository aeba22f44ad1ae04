"""The one way the package deletes folders: rename to a `.partial-del-*` name first, then delete, and only
what the package itself created.

A deletion is allowed when the package can prove it made the thing:
- it lies strictly inside a folder the caller names as the package's own (`owned_by`: the `releases/`
  folder, the cache's `objects/`, a staging folder, ...), or
- it carries the caller's marker file (`marker`: e.g. `.twin-export` written by `twin publish`).
Anything else raises `UnsafeDeleteError` and nothing is touched.

The rename comes first so that a process killed half-way through a delete never leaves a half-deleted folder
under its real name (a release with missing files that `rollback` could publish): the real name disappears
in one atomic rename, and `finish_deletes(folder)` (run by the next command holding the lock) removes what
a killed delete left behind. Symbolic links are removed as links, never followed.

A leaf module: it imports nothing of the package but `errors`, so every layer may use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import EXIT_RELEASE, TwinError

DELETING_PREFIX = ".partial-del-"  # a folder being deleted (a killed delete leaves it behind)


def pid_alive(pid: int) -> bool:
    """The process exists and has not ended: a killed process stays a zombie (state Z) until its parent
    reaps it, and counts as ended. Without /proc the kernel is asked (zombies then count as alive)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


class UnsafeDeleteError(TwinError):
    """A delete the package cannot prove it owns (a bug or a dangerous path given by the user)."""

    exit_code = EXIT_RELEASE


def _abs_no_follow(p: Path) -> Path:
    """Absolute path with the parents resolved but the last component kept (a link stays a link)."""
    p = Path(os.path.abspath(p))
    return p.parent.resolve() / p.name


def is_inside(path: Path, root: Path) -> bool:
    """`path` lies strictly inside `root` (both made absolute, links in the parents resolved)."""
    path, root = _abs_no_follow(path), Path(root).resolve()
    return root in path.parents


def owns(path: Path, owned_by: Path | Iterable[Path] = (), marker: str | None = None) -> bool:
    roots = [owned_by] if isinstance(owned_by, str | os.PathLike) else list(owned_by)
    if any(is_inside(path, r) for r in roots):
        return True
    if not marker:
        return False
    p = _abs_no_follow(path)
    return not p.is_symlink() and p.is_dir() and (p / marker).is_file()


def remove_owned(path: Path, *, owned_by: Path | Iterable[Path] = (), marker: str | None = None) -> bool:
    """Delete `path` (a folder, a file or a link) if the package owns it (see the module doc).

    Returns False when there was nothing to delete. Raises UnsafeDeleteError, touching nothing, when
    ownership is not proven. A folder is renamed to `.partial-del-<name>-<pid>-<rand>` in its parent first,
    then deleted; if the delete itself fails half-way, the renamed rest is left for `finish_deletes`."""
    path = _abs_no_follow(Path(path))
    if not os.path.lexists(path):
        return False
    if not owns(path, owned_by, marker):
        raise UnsafeDeleteError(
            "refusing to delete a folder the program did not create (no marker file, not inside one of its "
            "own folders)",
            path=path,
        )
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return True
    doomed = path
    if not path.name.startswith(DELETING_PREFIX):
        doomed = path.parent / f"{DELETING_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def finish_deletes(folder: Path) -> list[str]:
    """Remove the `.partial-del-*` leftovers of killed deletes directly inside `folder` (the folder is the
    package's own: only call it on one). Returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(DELETING_PREFIX):
            remove_owned(p, owned_by=folder)
            done.append(p.name)
    return done


def make_world_readable(root: Path) -> None:
    """Folders 0755 and files at least 0644 under `root` (a web server runs as another user); links are
    left alone. Only adds permission bits, never removes any."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        st = os.lstat(dirpath)
        if (st.st_mode & 0o755) != 0o755:
            os.chmod(dirpath, (st.st_mode & 0o7777) | 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not os.path.islink(p) and (st.st_mode & 0o644) != 0o644:
                os.chmod(p, (st.st_mode & 0o7777) | 0o644)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`): a reader of either
    name sees the old or the new thing, never nothing. False where the system or file system cannot (the
    caller then falls back to two renames and repairs a kill in between). The environment variable
    TWIN_NO_RENAME_EXCHANGE=1 forces that fallback (tests, exotic network file systems)."""
    if not sys.platform.startswith("linux") or os.environ.get("TWIN_NO_RENAME_EXCHANGE"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
