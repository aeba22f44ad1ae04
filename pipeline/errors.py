"""Typed errors raised at the edge where bad input is read.

Every error carries the file (and record, where there is one) so the CLI can print one clear line and
exit with a documented code. Libraries never print or exit; they raise these.
"""

from __future__ import annotations

from pathlib import Path

# Exit codes documented for schedulers (README "Exit codes").
EXIT_OK = 0
EXIT_INPUT = 2  # bad input data (corrupt file, missing CRS, unknown class code, ...)
EXIT_CONFIG = 3  # invalid configuration
EXIT_CRS = 4  # CRS / geoid grid problem
EXIT_LOCKED = 5  # another build holds the lock
EXIT_VALIDATION = 6  # the built release failed validation; nothing was published
EXIT_RELEASE = 7  # release management: nothing to roll back to, unknown release, export refused
EXIT_IMPLAUSIBLE = 8  # a plausibility gate refused the release (e.g. buildings dropped); nothing published
EXIT_NO_SPACE = 9  # the disk (or a file-size limit) is full; temporary output removed, nothing published
EXIT_INTERNAL = 10  # a bug


class TwinError(Exception):
    """Base class; `exit_code` tells the CLI what to return."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, path: str | Path | None = None, record: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.record = record
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}"
            if self.record is not None:
                where += f" [{self.record}]"
            where += ": "
        return f"{where}{self.message}"


class ConfigError(TwinError):
    exit_code = EXIT_CONFIG


class InputError(TwinError):
    exit_code = EXIT_INPUT


class CrsError(TwinError):
    exit_code = EXIT_CRS


class GeoidGridMissing(CrsError):
    pass


class LockedError(TwinError):
    exit_code = EXIT_LOCKED


class ValidationError(TwinError):
    exit_code = EXIT_VALIDATION


class PlausibilityError(TwinError):
    """The built release is valid but implausible against its inputs or the previous release (a drop or
    jump beyond `release.gates`); nothing was published. `twin build --accept-change METRIC` accepts it."""

    exit_code = EXIT_IMPLAUSIBLE


class NoSpaceError(TwinError):
    """Writing failed because the disk is full (ENOSPC), a quota (EDQUOT) or a file-size limit (EFBIG) was
    hit; the command removed its temporary output and published nothing."""

    exit_code = EXIT_NO_SPACE


def no_space_cause(e: BaseException) -> OSError | None:
    """The OSError in `e`'s chain of causes and contexts that says the disk is full (also when it happened
    in a worker: see NoSpaceError), or None."""
    import errno

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None
