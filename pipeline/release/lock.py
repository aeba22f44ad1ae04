"""One build at a time per output folder: an advisory `flock` that the kernel drops if the process dies."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import LockedError

LOCK_FILE = ".twin.lock"


@contextlib.contextmanager
def build_lock(out_dir: Path) -> Iterator[None]:
    path = out_dir / LOCK_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # paths.out is a file, lies under a file, or is not writable
        from pipeline.release.publish import ReleaseError

        raise ReleaseError(
            f"cannot use the output folder (paths.out / --out): {e.strerror or e}", path=e.filename or out_dir
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            raise LockedError(
                f"another build is running (pid {holder.get('pid', '?')}, started {holder.get('started', '?')}); "
                "wait for it to finish",
                path=path,
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            ).encode(),
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
