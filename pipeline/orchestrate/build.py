"""`twin build`: plan -> verify inputs -> layers (Dask) -> stamp -> manifest -> validate -> atomic publish.

The one place that sequences the layers. Each layer builder lives in its own module of this package,
takes the BuildContext and returns LayerResults; data passes between layers as files in the release
(e.g. the buildings layer's GeoPackage feeds the overlays).

Incremental: every layer unit runs inside `reuse_or_build` with a key made of the content hashes of the
inputs it reads, its config sections, the keys of the layer units it depends on, the project frame and the
pipeline fingerprint; an unchanged unit is hard-linked from the previous release (or from the staging
folder of a killed build, which is how a rerun resumes). Inside a unit, builders can reuse single files
with `pipeline.orchestrate.reuse.reuse_files`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.buildlog import BuildLog
from pipeline.config.loader import config_hash
from pipeline.config.model import TwinConfig
from pipeline.crs import ProjectFrame, project_frame
from pipeline.errors import EXIT_INTERNAL
from pipeline.fsutil import make_world_readable, remove_owned
from pipeline.model import BuildContext, InputFile, LayerResult
from pipeline.orchestrate.cache import content_key, inputs_key
from pipeline.orchestrate.class_schemes import resolve_class_schemes
from pipeline.orchestrate.executor import build_executor, map_ordered
from pipeline.orchestrate.inputs import dedupe_inputs, gate_inputs, scan_inputs, verify_inputs
from pipeline.orchestrate.reuse import INDEX_DIR, ReuseState, layer_key, reuse_or_build, reuse_stats
from pipeline.orchestrate.stages import Stage, run_stages
from pipeline.orchestrate.working_crs import resolve_working_crs
from pipeline.release.lock import build_lock
from pipeline.release.manifest import MANIFEST, build_id_for, make_manifest
from pipeline.release.ops import check_out_dir
from pipeline.release.publish import (
    PARTIAL_PREFIX,
    STAGING_PREFIX,
    current_release,
    fault_point,
    list_releases,
    partial_dirs,
    promote,
    prune_releases,
    record_published,
    releases_dir,
    repair,
    staging_dir,
    switch_current,
)
from pipeline.release.status import input_changes, now_iso, read_manifest, write_last_build
from pipeline.tiles.tileset import write_json


@dataclass
class BuildResult:
    build_id: str
    release_dir: Path
    layers: list[LayerResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    up_to_date: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)


def _aerial_extent_center(cfg: TwinConfig, inputs: list[InputFile]) -> tuple[float, float, float] | None:
    from pipeline.orchestrate.terrain import las_bounds

    # header extents in the working CRS (files in another CRS, e.g. UTM 33 tiles in a UTM 32 project)
    overrides = {f"aerial:{ep.epoch}": ep.crs for ep in cfg.sources.aerial}
    if cfg.sources.mobile is not None:
        overrides["mobile"] = cfg.sources.mobile.crs
    bounds = [las_bounds([i.path], cfg.crs, overrides[i.role]) for i in inputs if i.role in overrides]
    if not bounds:
        return None
    lo = [min(b[0] for b in bounds), min(b[1] for b in bounds)]
    hi = [max(b[2] for b in bounds), max(b[3] for b in bounds)]
    return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0)


def plan_frame(cfg: TwinConfig, inputs: list[InputFile]) -> ProjectFrame:
    """The project frame, memoised in the build cache by the CRS section and the extent centre (creating
    the PROJ transformers with the geoid grid takes about a second)."""
    from pipeline.orchestrate.cache import Cache

    centre = None if cfg.crs.frame_origin else _aerial_extent_center(cfg, inputs)
    return Cache.for_config(cfg).call(["project-frame-v1", cfg.crs, centre], project_frame, cfg.crs, centre)


@dataclass(frozen=True)
class LayerUnit:
    """One call of a layer module and what its outputs depend on (for layer-level reuse).

    `roles`: input roles it reads (prefix match, e.g. "aerial" covers "aerial:2024"); `config`: sections of
    `cfg.layers` (and `sources`) it reads; `after`: earlier units whose release files it reads. A module
    may override its entry with a module attribute `LAYER_DEPENDS = {"roles": [...], "config": [...],
    "after": [...]}`."""

    name: str
    module: str
    func: str
    roles: tuple[str, ...]
    config: tuple[str, ...]
    after: tuple[str, ...] = ()
    # roles that depend on the config (e.g. terrain reads the aerial ground points only without a DGM)
    roles_fn: Callable[[TwinConfig], tuple[str, ...]] | None = None
    # the top-level release folders (or files) it writes: units with none in common may run at the same
    # time (`orchestrate.stages`); None = anywhere in the release (the unit runs alone)
    writes: tuple[str, ...] | None = None


# the release folders of the point layers (tiles, COPC and the tiler's work folder)
POINT_WRITES = {"aerial_points": ("aerial_points",), "mobile_points": ("mobile_points",)}


# Layer modules after the point clouds, in order: each `func(ctx, previous_results) -> list[LayerResult]`.
_OPTIONAL_LAYERS = [
    LayerUnit(
        "buildings",
        "pipeline.orchestrate.buildings",
        "build_buildings_layers",
        ("cadastre", "aerial", "dgm", "orthophoto", "reference"),
        ("buildings",),
        writes=("buildings",),
    ),
    LayerUnit(
        "model_check",
        "pipeline.orchestrate.model_check",
        "build_model_check_layers",
        ("reference",),
        ("model_check", "buildings"),
        ("buildings",),
        writes=("model_check",),
    ),
    LayerUnit(
        "terrain",
        "pipeline.orchestrate.terrain",
        "build_terrain_layers",
        ("dgm", "orthophoto", "aerial"),
        ("terrain",),
        roles_fn=lambda cfg: ("dgm", "orthophoto") if cfg.sources.dgm else ("dgm", "orthophoto", "aerial"),
        writes=("terrain", "imagery"),
    ),
    LayerUnit(
        "overlays",
        "pipeline.orchestrate.overlays",
        "build_overlay_layers",
        ("cadastre", "orthophoto", "aerial", "dgm"),
        ("overlays", "change", "terrain", "buildings"),
        ("buildings",),
        writes=("overlays", "change"),
    ),
    LayerUnit(
        "zoning",
        "pipeline.orchestrate.zoning",
        "build_zoning_layers",
        ("cadastre", "zoning"),
        ("zoning", "buildings"),
        ("buildings",),
        writes=("overlays",),  # overlays/zoning*: never beside the overlays unit
    ),
    LayerUnit(
        "solar",
        "pipeline.orchestrate.solar",
        "build_solar_layers",
        ("cadastre", "aerial", "dgm"),
        ("solar",),
        ("buildings",),
        writes=("solar",),
    ),
    LayerUnit(
        "panoramas",
        "pipeline.orchestrate.panoramas",
        "build_panorama_layers",
        ("panoramas", "mobile"),
        ("panoramas",),
        writes=("panoramas",),
    ),
    LayerUnit(
        "street_space",
        "pipeline.orchestrate.street_space",
        "build_street_space_layers",
        ("panoramas", "mobile", "cadastre"),
        ("street_space",),
        writes=("street_space",),
    ),
    LayerUnit(
        "report",
        "pipeline.orchestrate.report",
        "build_report_layers",
        ("aerial", "cadastre", "dgm", "orthophoto", "mobile", "panoramas", "reference"),
        ("buildings", "overlays", "change", "terrain"),
        ("*",),
    ),
    LayerUnit(
        "viewer",
        "pipeline.viewer.build",
        "build_viewer_layers",
        (),
        ("viewer",),
        ("*",),
    ),
]


def _optional(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def _unit_key_parts(ctx: BuildContext, unit: LayerUnit, done: list[str]) -> dict[str, Any]:
    cfg = ctx.cfg
    roles = unit.roles_fn(cfg) if unit.roles_fn else unit.roles
    files = [i for i in ctx.inputs if any(i.role == r or i.role.startswith(r + ":") for r in roles)]
    after = done if "*" in unit.after else [a for a in unit.after if a in done]
    return {
        "inputs": inputs_key(files),
        "config": {c: getattr(cfg.layers, c, None) for c in unit.config},
        "sources": cfg.sources,
        "access": {c: getattr(getattr(cfg.layers, c, None), "access", None) for c in unit.config},
        "after": {a: layer_key(ctx, a) for a in after},
        "on_bad_tile": cfg.release.on_bad_tile,
    }


LayerJob = Callable[[BuildContext, list[LayerResult]], list[LayerResult] | None]


def _layer_jobs(ctx: BuildContext) -> list[tuple[Stage, LayerJob]]:
    """The build's layer units as stages (`pipeline.orchestrate.stages`), in their serial order: each with
    the units whose release files it reads (`after`) and the release folders it writes (`writes`), and
    the call that builds (or reuses) its layers from the results of the units it depends on."""
    cfg = ctx.cfg
    lay = cfg.layers
    jobs: list[tuple[Stage, LayerJob]] = []
    names: list[str] = []  # units that run (not the skipped ones), in order
    by_unit: dict[str, list[LayerResult]] = {}  # filled by each unit's thread before its dependents start

    def warn_only(message: str) -> LayerJob:
        def job(c: BuildContext, _prev: list[LayerResult]) -> None:
            c.warn(message)

        return job

    points_orch = None
    if (lay.aerial_points.enabled and cfg.sources.aerial) or (
        lay.mobile_points.enabled and cfg.sources.mobile and cfg.sources.mobile.points
    ):
        points_orch = _optional("pipeline.orchestrate.points")
        if points_orch is None:
            msg = "layer module pipeline.orchestrate.points is not available in this version; skipped"
            jobs.append((Stage("points (skipped)", writes=()), warn_only(msg)))

    if points_orch is not None and lay.aerial_points.enabled and cfg.sources.aerial:
        latest = cfg.sources.aerial[-1]  # the newest epoch is the published surface

        def aerial(c: BuildContext, _prev: list[LayerResult]) -> list[LayerResult]:
            files = c.inputs_for(f"aerial:{latest.epoch}")
            ortho = c.inputs_for("orthophoto") if lay.aerial_points.colour_from_orthophoto else []
            with c.stage("aerial_points"):
                by_unit["aerial_points"] = new = reuse_or_build(
                    c,
                    "aerial_points",
                    {
                        "points": inputs_key(files),
                        "orthophoto": inputs_key(ortho),
                        "source": latest,
                        "ortho_cfg": cfg.sources.orthophoto,
                    },
                    lambda: points_orch.build_pointcloud_layer(
                        c,
                        name="aerial_points",
                        files=files,
                        layer=lay.aerial_points,
                        crs_override=latest.crs,
                        class_scheme=latest.class_scheme,
                        orthophoto=cfg.sources.orthophoto,
                        out_subdir="aerial_points",
                    ),
                    writes=POINT_WRITES["aerial_points"],
                )
            return new

        jobs.append((Stage("aerial_points", writes=POINT_WRITES["aerial_points"]), aerial))
        names.append("aerial_points")
    mobile = cfg.sources.mobile
    if points_orch is not None and lay.mobile_points.enabled and mobile is not None and mobile.points:

        def mobile_points(c: BuildContext, _prev: list[LayerResult]) -> list[LayerResult]:
            assert mobile is not None
            files = c.inputs_for("mobile")
            with c.stage("mobile_points"):
                by_unit["mobile_points"] = new = reuse_or_build(
                    c,
                    "mobile_points",
                    {"points": inputs_key(files), "source": mobile},
                    lambda: points_orch.build_pointcloud_layer(
                        c,
                        name="mobile_points",
                        files=files,
                        layer=lay.mobile_points,
                        crs_override=mobile.crs,
                        class_scheme=mobile.class_scheme,
                        orthophoto=None,
                        out_subdir="mobile_points",
                    ),
                    writes=POINT_WRITES["mobile_points"],
                )
            return new

        # not beside the aerial points: each point layer sizes its bins for the whole memory budget of
        # the workers (orchestrate/points_plan.py), so two at once could need twice the budget
        after = tuple(n for n in ("aerial_points",) if n in names)
        jobs.append((Stage("mobile_points", after, POINT_WRITES["mobile_points"]), mobile_points))
        names.append("mobile_points")
    for unit in _OPTIONAL_LAYERS:
        mod = _optional(unit.module)
        if mod is None:
            msg = f"layer module {unit.module} is not available in this version; skipped"
            jobs.append((Stage(f"{unit.name} (skipped)", writes=()), warn_only(msg)))
            continue
        dep = getattr(mod, "LAYER_DEPENDS", None)
        if dep:
            unit = LayerUnit(
                unit.name,
                unit.module,
                unit.func,
                tuple(dep.get("roles", unit.roles)),
                tuple(dep.get("config", unit.config)),
                tuple(dep.get("after", unit.after)),
                None if "roles" in dep else unit.roles_fn,
                unit.writes,
            )
        after = tuple(names) if "*" in unit.after else tuple(a for a in unit.after if a in names)

        def run_unit(
            c: BuildContext, prev: list[LayerResult], unit: LayerUnit = unit, after: tuple[str, ...] = after
        ) -> list[LayerResult]:
            fn = getattr(_optional(unit.module), unit.func)
            key_parts = _unit_key_parts(c, unit, list(after))
            # the upstream results a module depends on are part of its key (names, stats, tilesets)
            key_parts["results"] = [r.to_json() | {"seconds": 0} for a in after for r in by_unit[a]]
            with c.stage(unit.name):
                new = reuse_or_build(
                    c, unit.name, key_parts, functools.partial(fn, c, prev), writes=unit.writes
                )
            by_unit[unit.name] = new
            return new

        jobs.append((Stage(unit.name, after, unit.writes), run_unit))
        names.append(unit.name)
    return jobs


@dataclass
class _StageContext:
    """A stage's view of the build (`ctx`): the same build, with warnings and timings of its own that
    start from what the stages before it committed; `commit` adds what it logged to the build's."""

    ctx: BuildContext
    warnings_before: int
    timings_before: dict[str, float]

    @classmethod
    def of(cls, build: BuildContext) -> _StageContext:
        c = copy.copy(build)
        c.warnings = list(build.warnings)
        c.timings = dict(build.timings)
        return cls(c, len(c.warnings), dict(c.timings))

    def commit(self, build: BuildContext) -> None:
        build.warnings.extend(self.ctx.warnings[self.warnings_before :])
        for name, seconds in self.ctx.timings.items():
            dt = seconds - self.timings_before.get(name, 0.0)
            if name not in self.timings_before or dt:
                build.timings[name] = round(build.timings.get(name, 0.0) + dt, 3)


def stages_at_once(workers: int) -> int:
    """Stages that run at the same time: one per worker (their tasks keep it busy) and one more that can
    do its region-level work in the build process meanwhile."""
    return max(1, workers) + 1


def _layer_builders(ctx: BuildContext, parallel: int = 1) -> list[LayerResult]:
    """Run every enabled layer, up to `parallel` at once as their dependencies allow (later layers read
    earlier layers' files from the release); the results, warnings and timings are in the serial order."""
    jobs = _layer_jobs(ctx)
    stages = [st for st, _job in jobs]
    by_name = dict(zip((st.name for st in stages), jobs, strict=True))
    needs: dict[str, list[str]] = {}  # every unit a unit depends on, directly or not
    for st in stages:
        closure = set(st.after).union(*(needs[a] for a in st.after))
        needs[st.name] = [s.name for s in stages if s.name in closure]
    contexts: dict[str, _StageContext] = {}
    results: list[LayerResult] = []
    finished: dict[str, list[LayerResult]] = {}  # set in a unit's thread before its dependents start

    def run(name: str) -> list[LayerResult] | None:
        sc = contexts[name] = _StageContext.of(ctx)
        prev = [r for a in needs[name] for r in finished.get(a, [])]
        new = by_name[name][1](sc.ctx, prev)
        finished[name] = new or []
        return new

    def commit(name: str, new: list[LayerResult] | None) -> None:
        contexts.pop(name).commit(ctx)
        results.extend(new or [])

    run_stages(stages, run, parallel=parallel, commit=commit)
    return results


def _check_attributed(ctx: BuildContext) -> None:
    """Every file the layers wrote belongs to a layer of the release index (a unit that writes outside
    its `LayerUnit.writes` would leave files no incremental build knows about): else a bug, exit 10."""
    from pipeline.orchestrate.reuse import _walk_files

    st = ctx.reuse
    known = {f for entry in st.layers.values() for f in entry.get("files", [])}
    stray = sorted(_walk_files(st.staging) - known - {"build.log.jsonl"})
    if stray:
        raise RuntimeError(
            f"{len(stray)} release files belong to no layer (a layer unit writes outside its "
            f"`writes` folders): {', '.join(stray[:5])}"
        )


def stamp_tileset_versions(ctx: BuildContext, layers: list[LayerResult]) -> list[str]:
    """Set `asset.tilesetVersion` = build id in every layer's root tileset (CesiumJS appends it to content
    URLs, so a new release busts caches). Child tilesets keep their bytes (their URLs inherit the query).
    Rewrites atomically (never in place: the file may be a hard link into the previous release)."""
    import json

    from pipeline.tiles.tileset import dumps, write_atomic

    st = ctx.reuse
    stamped = []
    for lay in layers:
        if not lay.tileset or not lay.tileset.endswith(".json"):
            continue
        path = ctx.release_dir / lay.tileset
        if not path.is_file():
            continue  # validation reports it
        ts = json.loads(path.read_text())
        asset = ts.setdefault("asset", {"version": "1.1"})
        if asset.get("tilesetVersion") == ctx.build_id:
            if st is not None and lay.tileset in st.reused_files:
                # hard-linked from a release of this very build id (a rebuild after a rollback or a
                # killed promote): stamped already, but its key must say so, as a clean build's does
                old = st.outputs.get(lay.tileset, "")
                st.record({lay.tileset: content_key(old, "tilesetVersion", ctx.build_id)})
            continue
        asset["tilesetVersion"] = ctx.build_id
        write_atomic(path, dumps(ts))
        if st is not None:
            old = st.outputs.get(lay.tileset, "")
            st.record({lay.tileset: content_key(old, "tilesetVersion", ctx.build_id)})
            st.reused_files.discard(lay.tileset)
        stamped.append(lay.tileset)
    return stamped


def _release_gates(
    cfg: TwinConfig,
    manifest: dict[str, Any],
    prev_manifest: dict[str, Any] | None,
    input_summary: dict[str, Any],
    accept_changes: Sequence[str],
) -> dict[str, Any]:
    """The release against its inputs and the previous release (`pipeline.release.plausibility`): raises
    PlausibilityError (exit 8) on a finding not accepted; returns the manifest's `plausibility` record."""
    from pipeline.errors import PlausibilityError
    from pipeline.release.plausibility import (
        refusal_message,
        release_findings,
        release_summary,
        split_accepted,
        summarise_layers,
    )

    summary = summarise_layers(manifest["layers"], input_summary.get("terrain_area"))
    aerial = next((lay for lay in manifest["layers"] if lay["name"] == "aerial_points"), None)
    header_points = points_in = None
    if aerial is not None and cfg.sources.aerial and "points_in" in aerial.get("stats", {}):
        header_points = input_summary["header_points"].get(f"aerial:{cfg.sources.aerial[-1].epoch}")
        # points the layer explains it did not tile (e.g. an identical copy): `not_tiled` of the tiler
        explained = sum(int(n.get("header_points") or 0) for n in aerial["stats"].get("not_tiled", []))
        points_in = int(aerial["stats"]["points_in"]) + explained
    previous = release_summary(prev_manifest)
    findings = release_findings(
        current=summary,
        previous=previous,
        gates=cfg.release.gates,
        previous_name=(prev_manifest or {}).get("build_id", ""),
        header_points=header_points,
        points_in=points_in,
    )
    refused, accepted = split_accepted(findings, accept_changes)
    if refused:
        raise PlausibilityError(refusal_message(refused))
    return {
        "summary": summary,
        "previous": previous or None,
        "accepted": [f.to_json() for f in accepted],
        "accept_flags": sorted(set(accept_changes)),
    }


def _take_over_partials(out_dir: Path) -> list[Path]:
    """Rename staging folders of killed/failed builds to `.partial-*` (newest first): resume sources."""
    found = []
    for d in partial_dirs(out_dir):
        if d.name.startswith(STAGING_PREFIX):
            target = d.parent / (PARTIAL_PREFIX + d.name[len(STAGING_PREFIX) :])
            if target.exists():
                remove_owned(target, owned_by=out_dir / "releases")
            os.replace(d, target)
            d = target
        found.append(d)
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return found


class _HeldSignals:
    """SIGTERM and SIGINT are recorded, not acted on, inside the `with` block; `deliver()` then acts on
    them (the handlers in place before run again), at a point where the caller can clean up."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.got: list[int] = []
        self.old: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.old = {s: signal.signal(s, lambda signum, _f: self.got.append(signum)) for s in self.SIGNALS}

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)

    def deliver(self) -> None:
        for s in dict.fromkeys(self.got):
            signal.raise_signal(s)


def _no_space(e: BaseException, out_dir: Path, record: dict[str, Any]) -> BaseException:
    """A build that failed because the disk is full becomes a NoSpaceError, and its staging folder is
    removed (keeping it for a resume would keep the disk full)."""
    from pipeline.errors import NoSpaceError, no_space_cause

    seen = no_space_cause(e)
    if seen is None and not isinstance(e, NoSpaceError):
        return e
    if record.get("build_id"):
        staging = staging_dir(out_dir, record["build_id"])
        if current_release(out_dir) != staging.resolve():  # not while `current` serves it (promote)
            with contextlib.suppress(OSError):
                remove_owned(staging, owned_by=releases_dir(out_dir))
        record.pop("staging_log", None)
    if isinstance(e, NoSpaceError):
        return e
    assert seen is not None
    return NoSpaceError(
        f"the disk is full ({seen.strerror}); the unfinished release was removed, nothing was published. "
        "Free space (`twin gc`), then rebuild",
        path=seen.filename or out_dir,
    )


def _keep_failed_log(out_dir: Path, record: dict[str, Any]) -> str | None:
    """The build log of a failed build, copied next to last-build.json (the staging folder it was written
    in is renamed or removed by the next build), or None when the build failed before it had a log."""
    src = record.pop("staging_log", None)
    if not src or not Path(src).is_file():
        return None
    dst = out_dir / ".twin" / "failed-build.log.jsonl"
    try:
        shutil.copyfile(src, dst)
    except OSError:
        return src
    return str(dst)


def run_build(
    cfg: TwinConfig,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    force: bool = False,
    log: BuildLog | None = None,
    accept_changes: Sequence[str] = (),
) -> BuildResult:
    """Build, validate and publish a release; records the outcome in `out/.twin/last-build.json`.

    `accept_changes`: plausibility findings to publish anyway (metrics of `pipeline.release.plausibility`,
    e.g. "buildings"; recorded in the manifest)."""
    t0 = time.perf_counter()
    out_dir = cfg.out_dir
    log = log or BuildLog()
    check_out_dir(out_dir, cfg.raw_dir)  # a file or a foreign folder: exit 7; overlapping raw: exit 3
    with build_lock(out_dir):
        record: dict[str, Any] = {
            "state": "running",
            "pid": os.getpid(),
            "started": now_iso(),
            "name": cfg.name,
            "config_dir": str(cfg.base_dir),
            "scheduler": scheduler or cfg.runtime.scheduler,
        }
        write_last_build(out_dir, record)
        try:
            res = _run_locked(
                cfg,
                scheduler=scheduler,
                workers=workers,
                force=force,
                log=log,
                record=record,
                accept_changes=accept_changes,
            )
        except BaseException as exc:
            record["log"] = _keep_failed_log(out_dir, record)  # before a full disk's staging goes
            e = _no_space(exc, out_dir, record)
            code = getattr(e, "exit_code", 130 if isinstance(e, KeyboardInterrupt) else EXIT_INTERNAL)
            if record["log"] and not Path(record["log"]).is_file():
                record["log"] = None  # never name a log that does not exist
            record.update(
                state="failed",
                finished=now_iso(),
                seconds=round(time.perf_counter() - t0, 3),
                error=str(e) or type(e).__name__,
                error_type=type(e).__name__,
                exit_code=code,
            )
            with contextlib.suppress(OSError):  # a full disk: `twin status` then reports the pid as killed
                write_last_build(out_dir, record)
            if e is not exc:
                raise e from exc
            raise
        record.update(
            state="up_to_date" if res.up_to_date else "success",
            finished=now_iso(),
            seconds=round(time.perf_counter() - t0, 3),
            build_id=res.build_id,
            release=str(res.release_dir),
            warnings=res.warnings,
            exit_code=0,
        )
        res.seconds = time.perf_counter() - t0
        write_last_build(out_dir, record)
        return res


def _local_jobs(cfg: TwinConfig, workers: int | None, scheduler: str | None) -> int:
    """Processes this machine runs at once after the layers (the glTF validator): the local workers'
    count, one per CPU without one (also when the layers ran on a cluster: its workers are elsewhere)."""
    from pipeline.runtime import default_workers

    if scheduler or cfg.runtime.scheduler:
        return default_workers()
    return max(1, workers or cfg.runtime.workers or default_workers())


def _run_locked(
    cfg: TwinConfig,
    *,
    scheduler: str | None,
    workers: int | None,
    force: bool,
    log: BuildLog,
    record: dict[str, Any],
    accept_changes: Sequence[str] = (),
) -> BuildResult:
    t0 = time.perf_counter()
    out_dir = cfg.out_dir
    for line in repair(out_dir):  # what a killed promote / rollback / prune left behind
        log.info(f"repaired: {line}")
    inputs, duplicate_warnings = dedupe_inputs(cfg, scan_inputs(cfg))
    cfg = resolve_working_crs(cfg, inputs)  # crs: auto -> the inputs' own CRS
    chash = config_hash(cfg)
    build_id = build_id_for(chash, inputs)
    record["build_id"] = build_id
    final = releases_dir(out_dir) / build_id
    current = current_release(out_dir)
    prev_manifest = read_manifest(current)
    changes: dict[str, Any] = {
        "previous": current.name if current else None,
        "inputs": input_changes(prev_manifest, [i.to_json(cfg.raw_dir) for i in inputs]),
        "config_changed": bool(prev_manifest and prev_manifest.get("config_hash") != chash),
    }
    record["changes"] = changes
    if not force and current is not None and current == final.resolve() and (final / MANIFEST).is_file():
        log.info(f"release {build_id} is up to date (inputs and config unchanged)")
        return BuildResult(build_id, final, up_to_date=True, seconds=time.perf_counter() - t0)

    partials = _take_over_partials(out_dir)
    staging = staging_dir(out_dir, build_id)
    staging.mkdir(parents=True)
    blog = BuildLog(staging / "build.log.jsonl", quiet=log.quiet)
    record["log"] = str(final / "build.log.jsonl")
    record["staging_log"] = str(staging / "build.log.jsonl")
    blog.event(
        "build_start",
        build_id=build_id,
        config_hash=chash,
        inputs=len(inputs),
        previous=changes["previous"],
        resume_from=[p.name for p in partials],
    )
    if partials:
        blog.info(f"resuming: reusing finished outputs of {len(partials)} unfinished build(s)")
    from pipeline.runtime import dask_client

    closer: threading.Thread | None = None
    cluster: Any = None  # the Dask client's context manager while its cluster is up after the layers
    try:
        client_cm = dask_client(cfg.runtime, workers=workers, scheduler=scheduler)
        held = _HeldSignals()
        with held:  # a SIGTERM/Ctrl-C while Dask starts would leave half a cluster behind
            client = client_cm.__enter__()
        try:
            held.deliver()  # here the cluster is closed again on the way out
            good, bad = verify_inputs(cfg, inputs, client)
            input_summary = gate_inputs(cfg, good, client)  # plausibility of every input (exit 2)
            frame = plan_frame(cfg, good)
            schemes = resolve_class_schemes(cfg, good)  # `class_scheme: auto` decided before any layer
            for epoch, (scheme, why) in schemes.items():
                if why != "given":
                    blog.info(f"aerial epoch {epoch}: class scheme {scheme.upper()} ({why})")
            ctx = BuildContext(
                cfg=cfg,
                build_id=build_id,
                release_dir=staging,
                frame=frame,
                inputs=good,
                log=blog,
                client=client,
                previous_release=current,
                class_schemes=schemes,
            )
            # reuse sources: unfinished builds (resume), the current release, then older/rolled-back ones
            others = [
                p for p in reversed(list_releases(out_dir)) if current is None or p.resolve() != current
            ]
            ctx.reuse = ReuseState.open(
                staging, [*partials, *([current] if current else []), *others], force=force
            )  # --force: every layer rebuilt from its inputs, the content cache bypassed
            for w in duplicate_warnings:
                ctx.warn(w)
            for f, why in bad:
                ctx.warn(
                    f"skipped corrupt input {f.to_json(cfg.raw_dir)['path']}: {why}",
                    path=str(f.path),
                    role=f.role,
                )
            from pipeline.orchestrate.executor import dask_workers

            layers = _layer_builders(ctx, parallel=stages_at_once(dask_workers(client)))
            _check_attributed(ctx)
        except BaseException:
            client_cm.__exit__(*sys.exc_info())
            raise
        # the cluster stays up for the validation's read-back tasks (`map_tasks` below), then its workers
        # shut down (about a second) while this process writes the report
        ctx.client = None
        cluster = client_cm
        validate_map = functools.partial(
            map_ordered, build_executor(client), name="validate", progress=ctx.progress
        )
        with ctx.stage("stamp"):
            stamp_tileset_versions(ctx, layers)
        warnings = list(ctx.warnings) + [w for lay in layers for w in lay.warnings]
        manifest = make_manifest(
            name=cfg.name,
            build_id=build_id,
            config_hash=chash,
            created=now_iso(),
            raw_dir=cfg.raw_dir,
            inputs=inputs,
            layers=layers,
            timings=ctx.timings,
            warnings=warnings,
            frame=frame.to_json(),
            crs=cfg.crs.compound,
            extra={"skipped_inputs": [f.to_json(cfg.raw_dir) | {"problem": why} for f, why in bad]}
            if bad
            else None,
        )
        manifest["plausibility"] = _release_gates(cfg, manifest, prev_manifest, input_summary, accept_changes)
        from pipeline.release.validate import validate_release

        # hard-linked from a validated release: by key, from the content cache or after an identical rebuild
        trusted = {staging / rel for rel in ctx.reuse.reused_files | ctx.reuse.trusted_files}
        if force:  # --force validates every file again
            trusted = set()
        with ctx.stage("validate"):
            report = validate_release(
                staging,
                manifest,
                check_gltf=cfg.release.validate_gltf,
                trusted=trusted,
                reused_layers=set(ctx.reuse.reused_layers),
                jobs=_local_jobs(cfg, workers, scheduler),
                map_tasks=validate_map,
            )
        cluster = None
        closer = threading.Thread(target=client_cm.__exit__, args=(None, None, None), name="twin-dask-close")
        closer.start()
        manifest["validation"] = report
        from pipeline.orchestrate.report import finish_report

        with ctx.stage("report.summary"):  # the nightly report with the gates' and validation's results
            finish_report(ctx, manifest, seconds=time.perf_counter() - t0)
        manifest["timings"] = ctx.timings
        write_json(staging / MANIFEST, manifest)
        ctx.reuse.write_index()
        changes["reuse"] = reuse_stats(ctx)
        write_json(staging / INDEX_DIR / "build-record.json", {"build_id": build_id, "changes": changes})
        blog.event(
            "build_end", build_id=build_id, seconds=round(time.perf_counter() - t0, 3), **changes["reuse"]
        )
        blog.close()
    except BaseException as e:
        if cluster is not None:
            cluster.__exit__(*sys.exc_info())
        if closer is not None:
            closer.join()
        blog.event("build_failed", build_id=build_id, error=str(e), error_type=type(e).__name__)
        blog.close()
        raise
    if closer is not None:
        closer.join()
    if cfg.release.world_readable:  # a web server runs as another user (some writers create 0700 folders)
        make_world_readable(staging)
        rdir = releases_dir(out_dir)  # and the folder that holds the releases (made by the build)
        os.chmod(rdir, os.stat(rdir).st_mode & 0o7777 | 0o755)
    # crash-safe order (see pipeline.release.publish): promote, record the history, then switch `current`
    promote(staging, final)
    record_published(out_dir, build_id)
    fault_point("record")
    switch_current(out_dir, final)
    fault_point("switch")
    record.pop("staging_log", None)
    for p in partials:
        remove_owned(p, owned_by=releases_dir(out_dir))
    prune_releases(out_dir, cfg.release.keep)
    return BuildResult(build_id, final, layers, warnings, time.perf_counter() - t0, manifest=manifest)
