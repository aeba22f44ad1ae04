"""`twin build CONFIG`: build, validate and publish a release."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Callable

from pipeline.config.loader import load_config
from pipeline.release.plausibility import ACCEPTABLE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build, validate and publish a release from a config")
    p.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    p.add_argument("--scheduler", help="attach to an existing Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--jobs", type=int, help="local worker processes (default: CPU count)")
    p.add_argument("--memory", help="memory budget per worker, e.g. 1.5GB")
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild every layer from its inputs, ignoring outputs of earlier releases and the content "
        "cache, validate every file and publish, even when inputs and config are unchanged",
    )
    p.add_argument(
        "--accept-change",
        action="append",
        default=[],
        metavar="METRIC",
        choices=ACCEPTABLE,
        help="publish although a plausibility gate found this change (buildings, parcels, points, "
        "terrain_area, rejected, point_count or all); repeatable; recorded in the manifest",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing while building (the build log keeps every message; errors still go to stderr)",
    )
    p.set_defaults(func=run)


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stop, a scheduler's time limit, `kill`), handled like Ctrl-C: the build records the
    failure in last-build.json, stops its workers and releases the lock; exit 143 (128 + 15)."""

    exit_code = 143


def _sigterm_like_sigint(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        def handler(signum, frame):
            raise Terminated("terminated by SIGTERM")

        try:
            old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (a test calling the CLI from a thread)
            return fn(args)
        try:
            return fn(args)
        except Terminated:
            print("twin: terminated (SIGTERM); the failure is recorded, the lock released", file=sys.stderr)
            return Terminated.exit_code
        finally:
            signal.signal(signal.SIGTERM, old)

    return wrapper


@_sigterm_like_sigint
def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build

    overrides = {"runtime.memory": args.memory} if args.memory else None
    cfg = load_config(args.config, overrides)
    res = run_build(
        cfg,
        scheduler=args.scheduler,
        workers=args.jobs,
        force=args.force,
        log=BuildLog(quiet=args.quiet),
        accept_changes=args.accept_change,
    )
    con = Console(stderr=False)
    if res.up_to_date:
        con.print(f"[green]Up to date:[/] {res.release_dir} (nothing changed since the last build)")
        return 0
    t = Table(title=f"Release {res.build_id}", show_lines=False)
    for col in ("layer", "kind", "access", "summary", "s"):
        t.add_column(col, overflow="fold")
    for lay in res.layers:
        t.add_row(lay.name, lay.kind, lay.access, _summary(lay.stats), f"{lay.seconds:.1f}")
    con.print(t)
    for w in res.warnings:
        con.print(f"[yellow]warning:[/] {w}")
    con.print(
        f"[green]Published[/] {res.release_dir} in {res.seconds:.1f} s; {cfg.out_dir / 'current'} points at it."
    )
    return 0


# The few numbers a GIS user wants per layer, in order of preference.
_SUMMARY_KEYS = (
    "points_out",
    "buildings",
    "parcels",
    "tiles",
    "levels",
    "xyz_tiles",
    "panoramas",
    "plots",
    "rejected",
)


def _summary(stats: dict) -> str:
    parts = []
    for k in _SUMMARY_KEYS:
        v = stats.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        parts.append(f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) else f"{k} {v:.3g}")
    classes = stats.get("classes")
    if isinstance(classes, dict) and classes:
        parts.append(", ".join(f"{c} {n}" for c, n in sorted(classes.items()) if c != "unchanged"))
    return "; ".join(parts[:4]) or "-"
