"""Point-cloud tiling, running: a plan (pipeline.orchestrate.points_plan) tiled on an executor.

Decode units to spill files (parallel) -> plan bins (keys only) -> bins to tiles (parallel) -> tiles above
the bins -> tileset.json -> atomic rename into place. The decode units and bins run as the tasks of
pipeline.orchestrate.points_cache, through the content cache when the run has one (`opts.cache`,
incremental builds); with `opts.copc` the decode also writes the COPC records (pipeline.orchestrate.points_copc).

Only paths, offsets and small records travel between processes; every worker reads its own byte ranges.
The tasks run on one `concurrent.futures.Executor` (pipeline.orchestrate.executor: the local process pool,
a Dask cluster's executor) or in this process; the output is byte-identical on all of them.

The run writes into a staging folder beside `--out` and publishes it in place of `--out` at the end,
replacing only an earlier output of `twin points`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError, NoSpaceError, no_space_cause
from pipeline.fsutil import UnsafeDeleteError, pid_alive, remove_owned
from pipeline.orchestrate.executor import Executor, Progress, call, map_ordered, run_task
from pipeline.orchestrate.points_cache import bin_key, decode_key, decode_unit, tile_bin
from pipeline.orchestrate.points_plan import (
    Plan,
    PointTilingOptions,
    Replan,
    max_bin_points,
    plan_tiling,
    replan_if_needed,
)
from pipeline.sources.pointcloud.header import plan_units
from pipeline.stages.points.classes import enum_schema
from pipeline.stages.points.decode import DecodeJob
from pipeline.stages.points.tiling import (
    TileJob,
    TileRecord,
    plan_bins,
    process_upper,
)


@dataclass
class TilingSummary:
    points_in: int = 0
    points_out: int = 0
    tiles: int = 0
    depth: int = 0
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    files: int = 0
    bins: int = 0
    checksum: int = 0
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    # point accounting: the header counts of every file given, and why a file's points were not tiled
    # (an identical copy of another input, or skipped as unreadable); points_header - points_in is the sum
    # of the points of the files listed here
    points_header: int = 0
    not_tiled: list[dict[str, Any]] = field(default_factory=list)
    # the class scheme used and how it was chosen ("given" or what `auto` inferred it from)
    class_scheme: str = ""
    class_scheme_reason: str = ""
    # the LAS extra dimensions kept (metadata properties `x_<name>`), and those of the inputs left out
    extra_dimensions: list[str] = field(default_factory=list)
    extra_dimensions_dropped: list[str] = field(default_factory=list)
    copc: Any = None  # orchestrate.points_copc.CopcSummary when COPC files were written

    @property
    def points_per_second(self) -> float:
        return self.points_in / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "copc"}
        out.update(
            seconds=round(self.seconds, 3),
            points_per_second=round(self.points_per_second),
            checksum=f"{self.checksum:016x}",
            phases={k: round(v, 3) for k, v in self.phases.items()},
        )
        return out | ({"copc": self.copc.to_json()} if self.copc is not None else {})


@contextlib.contextmanager
def peak_rss(interval: float = 0.1, rescan: int = 10) -> Iterator[Callable[[], int]]:
    """Inside: the RSS of this process and all its children (the workers) sampled in a thread; yields a
    function that returns the peak. The children are looked up every `rescan` samples only: psutil finds
    them by reading the stat file of every process of the machine (2-3 ms of CPU, most in the kernel, at
    170 processes); the RSS of the known ones is read at every sample."""
    import psutil

    peak = 0
    stop = threading.Event()
    me = psutil.Process()
    procs: list[psutil.Process] = []

    def sample(i: int = 0) -> None:
        nonlocal peak, procs
        if i % rescan == 0:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                procs = [me, *me.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_info().rss
        peak = max(peak, total)

    def run() -> None:
        i = 1
        while not stop.wait(interval):
            sample(i)
            i += 1

    sample()
    sampler = threading.Thread(target=run, daemon=True)
    sampler.start()
    try:
        yield lambda: peak
    finally:
        stop.set()
        sampler.join()
        sample()


# ---- execution ----------------------------------------------------------------------------------------


def _resolve_class_scheme(opts: PointTilingOptions, plan: Plan, codes: list[int]) -> tuple[str, str]:
    """The class scheme of the run and why (`auto`: inferred from all the codes decoded and the file names,
    then the codes checked against it, as a given scheme's are while decoding)."""
    from pipeline.stages.points.classes import check_classes, infer_class_scheme

    if opts.class_scheme != "auto":
        return opts.class_scheme, "given"
    scheme, reason = infer_class_scheme(codes, [i.path.name for i in plan.infos])
    check_classes(
        np.asarray(codes, dtype=np.int64),
        scheme,
        opts.unknown_classes == "keep",
        path=", ".join(i.path.name for i in plan.infos[:3]) + (" ..." if len(plan.infos) > 3 else ""),
        record=f"class scheme inferred as {scheme.upper()}: {reason}",
    )
    return scheme, f"auto: {reason}"


def _run_tiling(
    plan: Plan,
    staging: Path,
    opts: PointTilingOptions,
    executor: Executor | None,
    workers: int,
    progress: Progress | None,
    attempt: int,
    replan: bool,
) -> TilingSummary:
    """One attempt of the run in `staging/.work<attempt>`: the tiles, tileset and `pointcloud.json` (and
    with `opts.copc` the COPC files) in `staging`; `replan`: raise `Replan` when the decode found headers
    that do not describe their data."""
    from pipeline.tiles.implicit import build_tree, tree_depth, write_explicit, write_implicit
    from pipeline.tiles.points_glb import PointSchema
    from pipeline.tiles.tileset import write_json

    summary = TilingSummary(files=len(plan.infos), notes=list(plan.notes))
    t0 = time.perf_counter()
    work = staging / f".work{attempt}"
    spill = work / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    side = None  # without COPC output this process never imports the COPC writer (its numba kernels)
    if opts.copc is not None:  # the decode tasks write the COPC records too
        side = dataclasses.replace(opts.copc, dir=str(work / "copc"), override=opts.crs)
        Path(side.dir).mkdir()
    units = plan_units(plan.infos)
    summary.points_in = sum(i.count for i in plan.infos)
    summary.not_tiled = [
        {"file": d, "header_points": i.count, "reason": f"identical to {i.path} (same sha256)"}
        for i in plan.infos
        for d in i.duplicates
    ] + [
        {"file": p, "header_points": None, "reason": f"skipped: {why}"}
        for p, why in sorted(plan.skipped.items())
    ]
    summary.points_header = summary.points_in + sum(i.count * len(i.duplicates) for i in plan.infos)
    keep_unknown = opts.unknown_classes == "keep"
    djob = DecodeJob(
        plan.frame,
        plan.crs_cfg.model_dump_json(),
        plan.layout,
        opts.class_scheme,
        keep_unknown,
        str(spill),
        plan.cube,
        opts.outside_header_bounds,
        side,
    )

    # incremental builds (`opts.cache`): the same tasks through the content cache
    jobs = [(plan.file_jobs[u.file_index], u, djob) for u in units]
    decode_items = [(*j, opts.cache, decode_key(opts, *j)) for j in jobs]
    parts = map_ordered(executor, decode_unit, decode_items, name="decode", progress=progress)
    summary.phases["decode"] = time.perf_counter() - t0
    if replan:
        replan_if_needed(plan, units, parts)
    codes = sorted({c for p in parts for c in p.class_codes})
    scheme, reason = _resolve_class_scheme(opts, plan, codes)
    summary.class_scheme, summary.class_scheme_reason = scheme, reason
    summary.extra_dimensions = list(plan.layout.extra_dims)
    summary.extra_dimensions_dropped = sorted(
        {d for i in plan.infos for d in i.extra_dims} - set(plan.layout.extra_dims)
    )
    t1 = time.perf_counter()
    max_bin = max_bin_points(opts, workers, summary.points_in)
    bins = call(
        executor, plan_bins, parts, plan.cube, plan.layout.dtype, max_bin, min(plan.cube.S, plan.cube.tmax)
    )
    summary.bins = len(bins)
    class_enum = enum_schema(scheme, codes if keep_unknown else None)
    schema = PointSchema(plan.layout.attributes, scheme, class_enum)
    meshopt = opts.meshopt and opts.format == "1.1"
    tjob = TileJob(plan.cube, str(staging), opts.format, opts.max_points_per_tile, schema, meshopt)
    # biggest bins first: better packing of the workers
    order = sorted(range(len(bins)), key=lambda i: (-bins[i].count, i))
    unit_keys = {p.rec_path: it[4] for p, it in zip(parts, decode_items, strict=True)}
    tile_items = [
        (bins[i], tjob, str(work), opts.cache, bin_key(opts, bins[i], tjob, unit_keys)) for i in order
    ]
    # without a cache, a spill file is deleted as soon as the last bin reading it is done: its pages are
    # freed while the other bins run (spatially sorted inputs free most of them early), not all at the end
    refs = collections.Counter(path for bn in bins for path, _a, _b in bn.ranges)
    results: list[Any] = [None] * len(bins)  # the BinResult of every bin, in bin order

    copc: list[tuple[Any, ...]] = []
    if side is not None:
        from pipeline.orchestrate.points_copc import copc_tasks, layer_copc, write_file_copc

        # threads compressing a file's nodes: the workers left idle by fewer files
        threads = max(1, workers // len(plan.infos))
        copc = [(write_file_copc, *args) for args in copc_tasks(plan, side, staging, threads)]
    # the COPC files need only the decoded records: their tasks (one per input file, the longest of the
    # run) go to the workers first, beside the bins, so a large file's COPC task never runs alone at the end
    files: list[Any] = [None] * len(copc)
    totals, done = {"copc": len(copc), "tile": len(tile_items)}, {"copc": 0, "tile": 0}

    def finished(k: int, res: Any) -> None:  # each phase's progress and seconds as if run on its own
        phase = "copc" if k < len(copc) else "tile"
        if phase == "copc":
            files[k] = res
        else:
            i = order[k - len(copc)]
            results[i] = res
            for path, _a, _b in bins[i].ranges if opts.cache is None else ():  # else: entries of the cache
                refs[path] -= 1
                if refs[path] == 0:
                    with contextlib.suppress(OSError):
                        os.remove(path)
        done[phase] += 1
        if progress:
            progress(phase, done[phase], totals[phase])
        # the tiles as before (with the bin planning), the COPC files from when their tasks were submitted
        summary.phases[phase] = time.perf_counter() - (t1 if phase == "tile" else t_map)

    if progress:
        for phase in (p for p in totals if totals[p]):
            progress(phase, 0, totals[phase])
    tasks = copc + [(tile_bin, *it) for it in tile_items]
    t_map = time.perf_counter()
    map_ordered(executor, run_task, tasks, name="tile", on_result=finished)
    summary.phases.setdefault("tile", time.perf_counter() - t1)
    if side is not None:
        summary.copc = layer_copc(plan, side, files, staging, scheme, summary.phases.get("copc", 0.0))
        summary.notes += summary.copc.notes
    t2 = time.perf_counter()
    # the spill files are done with: free their pages while the upper tiles and the tileset are written
    dropper = threading.Thread(target=shutil.rmtree, args=(spill,), kwargs={"ignore_errors": True})
    dropper.start()
    tiles: list[TileRecord] = [t for r in results for t in r.tiles]
    tiles += call(executor, process_upper, results, tjob)
    tiles.sort(key=lambda t: (t.depth, t.ix, t.iy, t.iz))
    summary.tiles = len(tiles)
    summary.points_out = sum(t.count for t in tiles)
    summary.checksum = int(sum(t.checksum for t in tiles) % (1 << 64))
    if summary.points_out != summary.points_in:
        raise RuntimeError(f"tiling lost points: {summary.points_in} in, {summary.points_out} out")
    root = build_tree(tiles)
    summary.depth = tree_depth(root)
    common: dict[str, Any] = {
        "spacing": plan.cube.spacing_m,
        "transform": plan.frame.tile_transform(),
        "version": opts.format,  # "1.1" or "1.0" (checked by tile_pointcloud)
        "tileset_version": opts.tileset_version,
    }
    if opts.implicit:
        cube_lo_m = np.asarray(plan.cube.origin, np.float64) / 1000.0
        ext = "glb" if opts.format == "1.1" else "pnts"
        write_implicit(
            root, staging, cube_lo_m=cube_lo_m, cube_size_m=plan.cube.size_m, content_ext=ext, **common
        )
    else:
        write_explicit(root, staging, **common)
    dropper.join()
    shutil.rmtree(work, ignore_errors=True)
    write_json(
        staging / OUTPUT_MARKER,
        {
            "points": summary.points_out,
            "checksum": f"{summary.checksum:016x}",
            "tiles": summary.tiles,
            "depth": summary.depth,
            "frame": plan.frame.to_json(),
            "cube": {"origin_mm": list(plan.cube.origin), "log2_size_mm": plan.cube.R},
        },
    )
    summary.phases["upper+tileset"] = time.perf_counter() - t2
    return summary


def _run_attempts(
    inputs: list[Path],
    plan: Plan,
    staging: Path,
    opts: PointTilingOptions,
    executor: Executor | None,
    workers: int,
    progress: Progress | None,
) -> TilingSummary:
    """`_run_tiling`, run again with corrected file descriptions when the decode found headers that do not
    describe their data (`Replan`), or without a file whose data is unreadable when bad files are skipped
    (`on_bad_file="skip"`). Valid inputs run once. Each further attempt works in a fresh `.work<n>` folder:
    tasks of an abandoned attempt that are still running can never write into it."""
    notes: list[str] = []  # of the replan (a second pass must not find anything to correct)
    run_opts, attempt = opts, 0
    while True:
        try:
            summary = _run_tiling(plan, staging, run_opts, executor, workers, progress, attempt, not notes)
            summary.notes[:0] = notes
            return summary
        except Replan as r:  # once more, corrected
            infos, more = r.args
            notes += more
            run_opts = dataclasses.replace(opts, outside_header_bounds="error")
        except InputError as e:
            if opts.on_bad_file != "skip" or len(plan.infos) < 2:
                raise
            bad = [i for i in plan.infos if str(i.path) in str(e)]
            if len(bad) != 1:
                raise
            plan.skipped[str(bad[0].path)] = e.message.replace(f"{bad[0].path}: ", "", 1)
            infos = [i for i in plan.infos if i.path != bad[0].path]
        shutil.rmtree(staging / f".work{attempt}", ignore_errors=True)
        attempt += 1
        plan = plan_tiling(inputs, run_opts, infos=infos, skipped=plan.skipped)


def tile_pointcloud(
    inputs: list[Path],
    out_dir: Path,
    opts: PointTilingOptions,
    executor: Executor | None = None,
    progress: Progress | None = None,
    *,
    workers: int = 1,
) -> TilingSummary:
    """Tile point-cloud files into a 3D Tiles tileset in `out_dir` (written atomically: nothing on error).

    The tasks run on `executor` (`pipeline.orchestrate.executor`: a `LocalPool`, a Dask client's
    `build_executor`, or None: in this process); `workers` (the executor's number of processes) sizes the
    bins to the memory budget. The output never depends on either."""
    out_dir = Path(out_dir).resolve()
    t0 = time.perf_counter()
    with peak_rss() as peak:
        staging = None
        try:
            check_replaceable(out_dir, opts.overwrite)
            if opts.format not in ("1.1", "1.0"):
                raise InputError(f"unknown output format {opts.format!r} (1.1 or 1.0)")
            plan = plan_tiling(inputs, opts)
            staging = make_staging(out_dir)
            summary = _run_attempts(inputs, plan, staging, opts, executor, workers, progress)
            publish(staging, out_dir, opts.overwrite)
        except BaseException as e:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if no_space_cause(e) is not None:
                raise NoSpaceError(
                    f"no space left while tiling ({e}); the temporary folder was removed and nothing was "
                    "published: free space (the run needs about the input's decoded size plus the tiles) "
                    "or choose another --out",
                    path=out_dir,
                ) from e
            raise
    summary.seconds = time.perf_counter() - t0
    summary.peak_rss_bytes = peak()
    return summary


# ---- the output folder --------------------------------------------------------------------------------


def make_staging(out_dir: Path) -> Path:
    """The directory a run writes into, beside `out_dir` (renamed into place when complete):
    `.<out>.tmp-<pid>-<random>`. Staging folders of this name whose process no longer exists (runs killed
    by SIGKILL, power loss; the pid in the name proves which run made it) are removed first; a folder whose
    pid is alive, or any other name, is left alone."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_staging(out_dir, lambda pid: pid != os.getpid() and not pid_alive(pid))
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))


def remove_own_staging(out_dir: Path) -> None:
    """This process's staging folders of `out_dir`, removed once its workers have stopped: a run that
    fails (or is stopped) removes its staging folder at once, but a worker still writing into it can
    leave a part behind."""
    _remove_staging(Path(out_dir).resolve(), lambda pid: pid == os.getpid())


def _remove_staging(out_dir: Path, whose: Callable[[int], bool]) -> None:
    """The staging folders of `out_dir` (`make_staging`'s names) whose pid `whose` accepts."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.tmp-(\d+)-[A-Za-z0-9_]+$")
    with contextlib.suppress(OSError):
        for p in out_dir.parent.iterdir():
            m = pattern.match(p.name)
            if m and whose(int(m[1])) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)


# `--overwrite` replaces only an earlier output of this command: a folder holding the run summary it
# writes (`pointcloud.json`) and a tileset. Anything else (a user's folder, a delivery) is refused.
OUTPUT_MARKER = "pointcloud.json"


def check_replaceable(out_dir: Path, overwrite: bool) -> None:
    """Raise unless `out_dir` is missing, empty, or (with `overwrite`) an earlier `twin points` output."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UnsafeDeleteError("--out exists and is not a folder; nothing was written", path=out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise InputError("output directory exists and is not empty (use --overwrite)", path=out_dir)
    if not ((out_dir / OUTPUT_MARKER).is_file() and (out_dir / "tileset.json").is_file()):
        raise UnsafeDeleteError(
            "--overwrite replaces only an earlier `twin points` output (pointcloud.json + tileset.json); "
            "this folder is something else and was left untouched: choose an empty or new --out",
            path=out_dir,
        )


def publish(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """`staging` renamed to `out_dir`, replacing (checked again: `check_replaceable`) an empty folder or an
    earlier output."""
    check_replaceable(out_dir, overwrite)
    if out_dir.exists() and any(out_dir.iterdir()):
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        remove_owned(old, marker=OUTPUT_MARKER)
    else:
        os.replace(staging, out_dir)
