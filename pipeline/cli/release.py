"""`twin status | rollback | gc | publish | validate`: operate on the releases of an output folder."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

NO_PROJECT = (
    "no project given: pass --config CONFIG (the YAML the build used) or --out DIR (its output folder, "
    "the one holding releases/ and current)"
)


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="project config (the YAML `twin build` used)")
    p.add_argument("--out", help="output folder with releases/ and current (instead of the config's)")


def _os_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A full disk (exit 9) or a folder the user may not write (exit 7) is a message, not a traceback."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        from pipeline.errors import NoSpaceError
        from pipeline.release.publish import ReleaseError

        try:
            return fn(args)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise NoSpaceError(
                    f"{e.strerror}: the disk is full; free space (`twin gc`), then rerun", path=e.filename
                ) from e
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise ReleaseError(f"cannot write here: {e.strerror}", path=e.filename) from e
            raise

    return wrapper


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="current release, last build result, what changed, warnings")
    _where(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_status)

    p = sub.add_parser("rollback", help="point `current` back at the previous release")
    _where(p)
    p.add_argument("--to", help="build id to roll back to (default: the release published before)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_rollback)

    p = sub.add_parser("gc", help="trim the cache to its budget, delete unfinished builds and old releases")
    _where(p)
    p.add_argument("--budget", help="cache size budget, e.g. 5GB (default: runtime.cache_budget)")
    p.add_argument("--keep", type=int, help="releases to keep (default: release.keep)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_gc)

    p = sub.add_parser("publish", help="export a release without internal layers (access class public)")
    _where(p)
    p.add_argument(
        "--public",
        required=True,
        metavar="DIR",
        help="destination: a new or empty folder, or an earlier export (replaced atomically); anything else "
        "is refused",
    )
    p.add_argument("--release", help="build id or release folder (default: current)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_publish)

    p = sub.add_parser("validate", help="validate a release on disk (schemas, URIs, glTF validator)")
    p.add_argument("release", help="release folder or build id (with --config/--out)")
    p.add_argument("--config", "-c", default=None, help="project config whose paths.out holds the releases")
    p.add_argument("--out", help="output folder with releases/ (instead of the config's)")
    p.add_argument("--no-gltf", action="store_true", help="skip the Khronos glTF validator")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_validate)


def _cfg(args: argparse.Namespace):
    from pipeline.config.loader import load_config
    from pipeline.errors import ConfigError

    if not args.config:
        raise ConfigError(NO_PROJECT)
    return load_config(args.config)


def _out_dir(args: argparse.Namespace) -> Path:
    from pipeline.errors import ConfigError
    from pipeline.release.ops import check_out_dir

    if args.out:
        return check_out_dir(Path(args.out).resolve())
    if not args.config:
        raise ConfigError(NO_PROJECT)
    return check_out_dir(_cfg(args).out_dir)


def _print(args: argparse.Namespace, data: dict, text: str) -> None:
    """Print the result; a reader that closed the pipe early (`| head`) is not an error."""
    try:
        print(json.dumps(data, indent=1, default=str) if args.json else text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit


@_os_errors
def run_status(args: argparse.Namespace) -> int:
    from pipeline.release.status import format_status, release_status
    from pipeline.report.nightly import attach_summary

    st = release_status(_out_dir(args))  # read-only: repairs happen in the commands that take the lock
    _print(args, st, format_status(st, attach_summary(st)))
    last = st.get("last_build") or {}
    return 0 if last.get("state") in (None, "success", "up_to_date", "running") else 1


@_os_errors
def run_rollback(args: argparse.Namespace) -> int:
    from pipeline.release.ops import do_rollback

    r = do_rollback(_out_dir(args), args.to)
    text = "".join(f"repaired: {line}\n" for line in r["repaired"])
    _print(args, r, text + f"rolled back: current is now {r['to']} (was {r['from']})")
    return 0


@_os_errors
def run_gc(args: argparse.Namespace) -> int:
    from pipeline.config.sizes import parse_size
    from pipeline.orchestrate.cache import Cache
    from pipeline.release.ops import collect_garbage

    if args.config:
        cfg = _cfg(args)
        budget = parse_size(args.budget or cfg.runtime.cache_budget)
        out = Path(args.out).resolve() if args.out else cfg.out_dir
        r = collect_garbage(out, Cache(cfg.cache_dir, budget), args.keep or cfg.release.keep)
    else:  # --out only: no cache to trim (its folder is in the config)
        r = collect_garbage(_out_dir(args), None, args.keep)
    c = r["cache"]
    cache = (
        f"cache: {c['before'] / 1e6:.1f} MB -> {c['after'] / 1e6:.1f} MB (budget {c['budget'] / 1e6:.0f} MB, "
        f"{c['removed']} entries removed, {c['kept']} kept)"
        if c
        else "cache: not trimmed (give --config to name it)"
    )
    text = (
        f"{cache}; unfinished builds removed: {len(r['partial_removed'])}; "
        f"old releases removed: {', '.join(r['releases_removed']) or '-'}"
    )
    for line in r["repaired"]:
        text += f"\nrepaired: {line}"
    _print(args, r, text)
    return 0


@_os_errors
def run_publish(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from pipeline.release.access import export_public
    from pipeline.release.ops import resolve_release

    protected: list[Path] = []
    out = None
    if args.config:
        cfg = _cfg(args)
        out = Path(args.out).resolve() if args.out else cfg.out_dir
        protected = [cfg.raw_dir, cfg.out_dir, cfg.cache_dir]
    elif args.out:
        out = _out_dir(args)
    elif not args.release:
        raise ConfigError(NO_PROJECT + ", or --release FOLDER")
    if out is not None:
        protected.append(out)
    rel = resolve_release(out, args.release)
    r = export_public(rel, Path(args.public), protected)
    text = (
        f"exported release {r['release']} to {r['dest']}: {r['files']} files, layers "
        f"{', '.join(r['layers']) or '-'}; left out: {', '.join(r['excluded_layers']) or 'nothing'} "
        f"({r['excluded_files']} files); no reference to internal data found"
    )
    _print(args, r, text)
    return 0


@_os_errors
def run_validate(args: argparse.Namespace) -> int:
    from pipeline.release.ops import resolve_release, validate_path

    out = None
    if args.out:
        out = Path(args.out).resolve()
    elif args.config:
        out = _cfg(args).out_dir
    rel = resolve_release(out, args.release)
    r = validate_path(rel, check_gltf=not args.no_gltf)
    text = (
        f"release {r['release']} is valid: {r['tilesets']} tilesets, {r['glb']} GLB "
        f"({r['glb_validated']} through the glTF validator)"
    )
    _print(args, r, text)
    return 0
