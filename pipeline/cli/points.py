"""`twin points INPUT... --out DIR`: tile point clouds into 3D Tiles (standalone, no project config)."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from pipeline.point_attributes import OPTIONAL as OPTIONAL_ATTRIBUTES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "points",
        help="tile LAS/LAZ/COPC/E57 point clouds into 3D Tiles",
        description="Tile point clouds into a 3D Tiles tileset (glTF points for 1.1, pnts for 1.0).",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="LAS, LAZ, COPC or E57 files")
    p.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    p.add_argument(
        "--crs",
        help="CRS of the inputs, overriding the files' (e.g. EPSG:25832+7837); `local` for unreferenced scans "
        "in a local east-north-up frame placed at --anchor",
    )
    p.add_argument(
        "--anchor",
        metavar="LON,LAT,H",
        help="with --crs local: WGS84 longitude, latitude (degrees) and ellipsoidal height (m) of the scan "
        "frame's origin",
    )
    p.add_argument("--format", choices=["1.1", "1.0"], default="1.1", help="3D Tiles profile (default 1.1)")
    p.add_argument(
        "--jobs", type=_positive_int, help="worker processes, at least 1 (default: CPU count; 1 = in-process)"
    )
    p.add_argument(
        "--memory",
        default="1.5GB",
        help="memory budget of the point bins over all workers (default 1.5GB; ~0.3 GB of process overhead comes on top)",
    )
    p.add_argument("--scheduler", help="attach to an existing Dask scheduler (tcp://HOST:PORT)")
    p.add_argument(
        "--meshopt",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="EXT_meshopt_compression of the 1.1 tiles (default; --no-meshopt: plain, 36 B/point)",
    )
    p.add_argument("--implicit", action="store_true", help="implicit octree tiling with subtrees (1.1)")
    p.add_argument(
        "--class-scheme",
        choices=["auto", "adv", "asprs"],
        default="auto",
        help="classification codes (default auto: inferred from the codes present and NRW/AdV file naming; "
        "the summary says how)",
    )
    p.add_argument("--keep-unknown-classes", action="store_true", help="keep class codes the scheme lacks")
    p.add_argument("--orthophoto", help="RGB(I) raster to colour points that have no RGB")
    p.add_argument(
        "--extra-dim",
        action="append",
        default=None,
        metavar="NAME",
        help="LAS extra dimension (Extra Bytes) to export, repeatable; `none` for none (default: all the "
        "inputs have, listed in the summary); standard fields (intensity, classification, ...) are always "
        "kept and need no --extra-dim",
    )
    p.add_argument(
        "--attribute",
        action="append",
        default=[],
        choices=OPTIONAL_ATTRIBUTES,
        help="also export this LAS field (off by default; repeatable)",
    )
    p.add_argument(
        "--assume-ellipsoidal",
        action="store_true",
        help="inputs without a vertical CRS have ellipsoidal heights, in the unit of their X/Y",
    )
    p.add_argument("--z-unit", choices=["m", "ft", "us-ft"], help="unit of Z when the CRS leaves it open")
    p.add_argument("--max-points", type=int, default=60_000, help="points per leaf tile (default 60000)")
    p.add_argument(
        "--on-bad-tile",
        choices=["stop", "skip"],
        default="stop",
        help="an empty or unreadable input file: stop with an error (default) or skip it with a warning",
    )
    p.add_argument(
        "--outside-header-bounds",
        choices=["use-real", "error"],
        default="use-real",
        help="points outside their file's header bounds: tile them with the real bounds and say so "
        "(default) or refuse the file",
    )
    p.add_argument(
        "--copc",
        action="store_true",
        help="also write OUT/copc/<input>.copc.laz (one per input) and OUT/<OUT name>.vpc, for QGIS",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _crs_option(crs: str | None, anchor: str | None) -> str | None:
    """--crs / --anchor: `local` needs an anchor (-> `local:LON,LAT,H`); an anchor needs `--crs local`."""
    from pipeline.errors import ConfigError

    if crs is not None and crs.strip().lower() == "local":
        if not anchor:
            raise ConfigError("--crs local needs --anchor LON,LAT,H (where the scan's origin lies)")
        from pipeline.sources.pointcloud.crs import LOCAL_PREFIX, parse_anchor

        lon, lat, h = parse_anchor(anchor)
        return f"{LOCAL_PREFIX}{lon!r},{lat!r},{h!r}"
    if anchor:
        raise ConfigError("--anchor is only used with --crs local")
    return crs


def _extra_dims(given: list[str] | None) -> tuple[str, ...] | None:
    """--extra-dim: not given = all (None); `none` = none; else the names (`none` cannot be combined).
    Standard LAS fields the tiles always carry (intensity, classification, ...) are accepted and dropped
    from the list, as in the config's `extra_dimensions`; scan_angle and fields never tiled are refused
    with what to do instead."""
    from pipeline.errors import ConfigError

    if given is None:
        return None
    if "none" in given:
        if len(given) > 1:
            raise ConfigError("--extra-dim none cannot be combined with extra dimension names")
        return ()
    from pipeline.point_attributes import extra_dimensions_only

    try:
        return tuple(dict.fromkeys(extra_dimensions_only(given)))
    except ValueError as e:
        raise ConfigError(f"--extra-dim: {e}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job, `kill`), handled like Ctrl-C: the run's cleanup removes its
    staging folder and stops the workers and their fork server; exit 143 (128 + 15), as `twin build`."""

    exit_code = 143


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), handled as Python does, but a subclass: a plain KeyboardInterrupt that passes
    through code compiled from a string (a dataclass being created while a module imports) makes CPython
    end the process by SIGINT after exit 130 was chosen; exit 130 either way."""


def _terminate(signum, frame) -> None:
    import signal

    if signum == signal.SIGINT:
        raise Interrupted()
    raise Terminated("terminated by SIGTERM")


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _run_with_pool(args)  # (signals reach the main thread only)
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _terminate)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not when started ignoring it)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _terminate)
    try:
        return _run_with_pool(args)
    except Terminated:
        print("twin: terminated (SIGTERM); workers stopped, temporary folder removed", file=sys.stderr)
        return Terminated.exit_code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run_with_pool(args: argparse.Namespace) -> int:
    import os

    # this process never does linear algebra: no BLAS thread pool (OpenBLAS' idle threads spin a while
    # after numpy's import, ~0.08 s of CPU taken from the workers); set before numpy is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if args.jobs:
        jobs = args.jobs
    else:  # pipeline.runtime imports the config model (pydantic, 0.1 s): only when we must ask it
        from pipeline.runtime import default_workers

        jobs = default_workers()
    pool = None
    try:
        with contextlib.ExitStack() as stack:
            if jobs > 1 and not args.scheduler:
                # local workers start first (forked from a server that loads the kernels) and warm up while
                # this process imports and plans
                from pipeline.orchestrate.points_pool import LocalPool

                pool = stack.enter_context(LocalPool(jobs))
            code = _run(args, jobs, pool)
    except BaseException:
        if pool is not None:  # its workers have stopped: what one wrote into the staging folder goes too
            from pipeline.orchestrate.points_run import remove_own_staging

            remove_own_staging(Path(args.out))
        raise
    # at interpreter exit, the final garbage collections need not walk the long-lived objects of
    # numba/pydantic/pyproj (exit 0.25 -> 0.1 s); atexit runs before them, and in-process callers
    # (tests) are unaffected until they exit
    import atexit
    import gc

    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    return code


def _copc_option(args: argparse.Namespace):
    """`--copc`: COPC files + a .vpc named after the output folder, each file in its own CRS."""
    if not args.copc:
        return None
    from pipeline.stages.points.copc_records import CopcOptions

    return CopcOptions(vpc_name=Path(args.out).resolve().name)


def _run(args: argparse.Namespace, jobs: int, pool) -> int:
    from pipeline.config.sizes import parse_size
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.orchestrate.points_run import tile_pointcloud

    opts = PointTilingOptions(
        crs=_crs_option(args.crs, getattr(args, "anchor", None)),
        format=args.format,
        memory=args.memory,
        meshopt=args.meshopt,
        implicit=args.implicit,
        class_scheme=args.class_scheme,
        unknown_classes="keep" if args.keep_unknown_classes else "error",
        orthophoto=args.orthophoto,
        extra_dimensions=_extra_dims(args.extra_dim),
        attributes=tuple(getattr(args, "attribute", ())),
        max_points_per_tile=args.max_points,
        assume_ellipsoidal=args.assume_ellipsoidal,
        z_unit=args.z_unit,
        overwrite=args.overwrite,
        on_bad_file=getattr(args, "on_bad_tile", "stop"),
        outside_header_bounds=getattr(args, "outside_header_bounds", "use-real"),
        copc=_copc_option(args),
    )
    show = not (args.quiet or args.json)
    with _progress_bar(show) as progress:
        if pool is not None or (jobs == 1 and not args.scheduler):
            summary = tile_pointcloud(args.inputs, args.out, opts, pool, progress, workers=jobs)
        else:
            from pipeline.config.model import RuntimeConfig
            from pipeline.runtime import dask_client

            per_worker = f"{max(parse_size(args.memory) // jobs, 256 * 2**20)}B"
            with dask_client(
                RuntimeConfig(memory=per_worker), workers=jobs, scheduler=args.scheduler
            ) as client:
                from pipeline.orchestrate.executor import build_executor, dask_workers

                ex, workers = build_executor(client), dask_workers(client)
                summary = tile_pointcloud(args.inputs, args.out, opts, ex, progress, workers=workers)
    copc = summary.copc
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
        return 0
    from rich.console import Console

    out = Console()
    out.print(
        f"[green]Tiled[/] {summary.points_in:,} points from {summary.files} file(s) into {summary.tiles:,} tiles "
        f"(depth {summary.depth}) in {summary.seconds:.1f} s: {summary.points_per_second / 1e6:.2f} M points/s"
    )
    out.print(
        f"points in {summary.points_in:,} / out {summary.points_out:,}; checksum {summary.checksum:016x}; "
        f"peak memory {summary.peak_rss_bytes / 2**30:.2f} GiB (incl. workers); bins {summary.bins}"
    )
    for n in summary.notes:
        out.print(f"[yellow]note:[/] {n}")
    out_dir = Path(args.out).resolve()
    out.print(f"tileset: {out_dir / 'tileset.json'}")
    if copc is not None:
        out.print(
            f"COPC: {len(copc.files)} file(s), {copc.points:,} points, {copc.bytes / 2**20:.1f} MiB in "
            f"{copc.seconds:.1f} s; virtual point cloud {out_dir / copc.vpc}"
        )
    return 0


@contextlib.contextmanager
def _progress_bar(show: bool):
    """A rich progress bar on stderr, one row per phase; without it (--json, --quiet) rich is not even
    imported (a tenth of the start-up of a short run)."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield progress
