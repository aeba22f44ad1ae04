"""`twin build`: plan -> layers (Dask) -> manifest -> validate -> atomic publish.

The one place that sequences the layers. Each layer builder lives in its own module of this package,
takes the BuildContext and returns LayerResults; data passes between layers as files in the release
(e.g. the buildings layer's GeoPackage feeds the overlays).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.buildlog import BuildLog
from pipeline.config.loader import config_hash
from pipeline.config.model import TwinConfig
from pipeline.crs import ProjectFrame, project_frame
from pipeline.errors import TwinError
from pipeline.orchestrate.context import BuildContext, InputFile, LayerResult
from pipeline.orchestrate.inputs import scan_inputs
from pipeline.release.lock import build_lock
from pipeline.release.manifest import MANIFEST, build_id_for, make_manifest
from pipeline.release.publish import (
    current_release,
    promote,
    prune_releases,
    releases_dir,
    staging_dir,
    switch_current,
)
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
    import laspy

    files = [i.path for i in inputs if i.role.startswith("aerial:") or i.role == "mobile"]
    if not files:
        return None
    lo = [float("inf")] * 2
    hi = [float("-inf")] * 2
    for f in files:
        with laspy.open(f) as r:
            h = r.header
            lo = [min(lo[0], h.mins[0]), min(lo[1], h.mins[1])]
            hi = [max(hi[0], h.maxs[0]), max(hi[1], h.maxs[1])]
    return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0)


def plan_frame(cfg: TwinConfig, inputs: list[InputFile]) -> ProjectFrame:
    return project_frame(cfg.crs, None if cfg.crs.frame_origin else _aerial_extent_center(cfg, inputs))


def _layer_builders(ctx: BuildContext) -> list[LayerResult]:
    """Run every enabled layer in order; later layers read earlier layers' files from the release."""
    cfg = ctx.cfg
    lay = cfg.layers
    results: list[LayerResult] = []

    from pipeline.orchestrate import points as points_orch

    if lay.aerial_points.enabled and cfg.sources.aerial:
        latest = cfg.sources.aerial[-1]  # the newest epoch is the published surface
        with ctx.stage("aerial_points"):
            results.append(
                points_orch.build_pointcloud_layer(
                    ctx,
                    name="aerial_points",
                    files=ctx.inputs_for(f"aerial:{latest.epoch}"),
                    layer=lay.aerial_points,
                    crs_override=latest.crs,
                    class_scheme=latest.class_scheme,
                    orthophoto=cfg.sources.orthophoto,
                    out_subdir="aerial_points",
                )
            )
    if lay.mobile_points.enabled and cfg.sources.mobile and cfg.sources.mobile.points:
        with ctx.stage("mobile_points"):
            results.append(
                points_orch.build_pointcloud_layer(
                    ctx,
                    name="mobile_points",
                    files=ctx.inputs_for("mobile"),
                    layer=lay.mobile_points,
                    crs_override=cfg.sources.mobile.crs,
                    class_scheme=cfg.sources.mobile.class_scheme,
                    orthophoto=None,
                    out_subdir="mobile_points",
                )
            )
    for module, func in _OPTIONAL_LAYERS:
        mod = _optional(module)
        if mod is None:
            ctx.warn(f"layer module {module} is not available in this version; skipped")
            continue
        results.extend(getattr(mod, func)(ctx, results))
    return results


# Layer modules after the point clouds, in order: each `func(ctx, previous_results) -> list[LayerResult]`.
_OPTIONAL_LAYERS = [
    ("pipeline.orchestrate.buildings", "build_buildings_layers"),
    ("pipeline.orchestrate.terrain", "build_terrain_layers"),
    ("pipeline.orchestrate.overlays", "build_overlay_layers"),
    ("pipeline.orchestrate.panoramas", "build_panorama_layers"),
    ("pipeline.orchestrate.report", "build_report_layers"),
    ("pipeline.viewer.build", "build_viewer_layers"),
]


def _optional(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def run_build(
    cfg: TwinConfig,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    force: bool = False,
    log: BuildLog | None = None,
) -> BuildResult:
    t0 = time.perf_counter()
    out_dir = cfg.out_dir
    log = log or BuildLog()
    with build_lock(out_dir):
        inputs = scan_inputs(cfg)
        chash = config_hash(cfg)
        build_id = build_id_for(chash, inputs)
        final = releases_dir(out_dir) / build_id
        current = current_release(out_dir)
        if not force and current is not None and current == final.resolve() and (final / MANIFEST).is_file():
            log.info(f"release {build_id} is up to date (inputs and config unchanged)")
            return BuildResult(build_id, final, up_to_date=True, seconds=time.perf_counter() - t0)

        staging = staging_dir(out_dir, build_id)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        blog = BuildLog(staging / "build.log.jsonl", quiet=log.quiet)
        blog.event("build_start", build_id=build_id, config_hash=chash, inputs=len(inputs))
        frame = plan_frame(cfg, inputs)
        ctx = BuildContext(
            cfg=cfg,
            build_id=build_id,
            release_dir=staging,
            frame=frame,
            inputs=inputs,
            log=blog,
            previous_release=current,
        )
        from pipeline.runtime import dask_client

        try:
            with dask_client(cfg.runtime, workers=workers, scheduler=scheduler) as client:
                ctx.client = client
                layers = _layer_builders(ctx)
            warnings = list(ctx.warnings) + [w for lay in layers for w in lay.warnings]
            manifest = make_manifest(
                name=cfg.name,
                build_id=build_id,
                config_hash=chash,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                raw_dir=cfg.raw_dir,
                inputs=inputs,
                layers=layers,
                timings=ctx.timings,
                warnings=warnings,
                frame=frame.to_json(),
                crs=cfg.crs.compound,
            )
            from pipeline.release.validate import validate_release

            with ctx.stage("validate"):
                report = validate_release(staging, manifest)
            manifest["validation"] = report
            manifest["timings"] = ctx.timings
            write_json(staging / MANIFEST, manifest)
            blog.event("build_end", build_id=build_id, seconds=round(time.perf_counter() - t0, 3))
            blog.close()
        except (TwinError, Exception):
            blog.event("build_failed", build_id=build_id)
            blog.close()
            raise
        promote(staging, final)
        switch_current(out_dir, final)
        prune_releases(out_dir, cfg.release.keep)
        return BuildResult(build_id, final, layers, warnings, time.perf_counter() - t0, manifest=manifest)
