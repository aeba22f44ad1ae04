"""Point layers of a build: `build_pointcloud_layer` tiles one layer's files into the release
(pipeline.orchestrate.points_plan / points_run) and adds the statistics the viewer and the report show."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config.sizes import parse_size
from pipeline.orchestrate.executor import build_executor, dask_workers

if TYPE_CHECKING:  # the pipeline layer's types (imported there: `twin points` needs no config model)
    from pipeline.config.model import PointsLayer, RasterSource
    from pipeline.model import BuildContext, InputFile, LayerResult
    from pipeline.stages.points.copc_records import CopcOptions

from pipeline.orchestrate.points_plan import PointTilingOptions
from pipeline.orchestrate.points_run import tile_pointcloud

# ---- pipeline layer --------------------------------------------------------------------------------------


def build_pointcloud_layer(
    ctx: BuildContext,
    *,
    name: str,
    files: list[InputFile],
    layer: PointsLayer,
    crs_override: str | None,
    class_scheme: str,
    orthophoto: RasterSource | None,
    out_subdir: str,
) -> LayerResult:
    """Tile one point layer of the build into ctx.release_dir / out_subdir (tileset.json at its root);
    with the layer's `copc` its COPC files and .vpc from the same pass."""
    from pipeline.model import LayerResult
    from pipeline.orchestrate.cache import build_cache, input_sha256

    t0 = time.perf_counter()
    ortho_path: tuple[str, ...] = ()
    bands: tuple[tuple[str, int], ...] = ()
    if orthophoto is not None and layer.colour_from_orthophoto:
        import glob

        matches = sorted(glob.glob(str(ctx.cfg.raw_dir / orthophoto.path)))
        ortho_path = tuple(matches)
        bands = tuple(sorted(orthophoto.bands.items()))
    copc_out: CopcOptions | None = None  # the COPC output: in the working CRS, the .vpc named after the layer
    if layer.copc:
        from pipeline.crs import working_crs
        from pipeline.stages.points.copc_records import CopcOptions

        copc_out = CopcOptions(vpc_name=name, target_crs=working_crs(ctx.cfg.crs).to_wkt())
    # runtime.memory is per worker; the tiler's budget is the total over all workers
    workers = dask_workers(ctx.client)
    total_memory = parse_size(ctx.cfg.runtime.memory) * workers
    opts = PointTilingOptions(
        crs=crs_override,
        format=layer.format,
        memory=total_memory,
        meshopt=layer.meshopt,
        implicit=layer.implicit,
        class_scheme=class_scheme,
        unknown_classes=layer.unknown_classes,
        orthophoto=ortho_path,
        ortho_bands=bands,
        extra_dimensions=layer.extra_dimension_names,
        attributes=tuple(layer.attributes),
        max_points_per_tile=layer.max_points_per_tile,
        tileset_version=ctx.build_id,
        crs_cfg=ctx.cfg.crs,
        frame=ctx.frame,
        copc=copc_out,
        # incremental builds: the build's content cache (`--force`: entries of earlier builds are misses)
        # and the input hashes that key decode units and bins
        cache=build_cache(ctx),
        input_sha256=tuple(sorted((str(f.path.resolve()), f.sha256) for f in files)),
        ortho_sha256=tuple((p, input_sha256(ctx, p)) for p in ortho_path),
    )
    with ctx.stage(f"points:{name}"):
        summary = tile_pointcloud(
            [f.path for f in files],
            ctx.release_dir / out_subdir,
            opts,
            build_executor(ctx.client),
            ctx.progress,
            workers=workers,
        )
    for n in summary.notes:
        ctx.warn(f"{name}: {n}")
    from pipeline.viewer.classes import class_stats

    js = summary.to_json()
    result = LayerResult(
        name=name,
        kind="pointcloud",
        access=layer.access,
        tileset=f"{out_subdir}/tileset.json",
        stats={
            **{k: js[k] for k in ("points_in", "points_out", "tiles", "depth", "checksum", "bins")},
            **{k: js[k] for k in ("points_per_second", "peak_rss_bytes", "points_header")},
            # header counts of all the layer's files, and why a file's points are not in the tiles
            "not_tiled": [{**t, "file": _raw_relative(ctx, t["file"])} for t in summary.not_tiled],
            # the scheme and the classes present with their point counts (viewer legend, report)
            **class_stats(ctx.release_dir, f"{out_subdir}/tileset.json", summary.class_scheme),
            # how the scheme was chosen; LAS extra dimensions kept (properties `x_<name>`) and those of the
            # inputs left out
            **{k: js[k] for k in ("class_scheme_reason", "extra_dimensions", "extra_dimensions_dropped")},
            # the display range of the viewer's intensity style (the data keep the delivered values)
            **_intensity_stats(ctx.release_dir / out_subdir),
        },
        warnings=list(summary.notes),
        seconds=time.perf_counter() - t0,
    )
    copc = summary.copc
    if copc is not None:  # its files, .vpc and style, and `stats.copc` (points, checksum, files, ...)
        result.files.extend(f"{out_subdir}/{f}" for f in [*copc.files, copc.vpc, copc.style])
        result.stats["copc"] = {k: v for k, v in copc.to_json().items() if k != "seconds"}
    return result


def _intensity_stats(layer_dir: Path) -> dict[str, Any]:
    """`intensity`: {min, max} for the viewer's intensity style: the 1st and 99th percentiles of the
    intensity of the points in the root and level-1 tiles (glb; a spatially even sample of the layer), so
    a 12-bit scanner's 0..4095 is shown with full contrast although the tiles keep the delivered values.
    Empty when the tiles have no readable intensity (pnts, no tiles)."""
    from pipeline.tiles.gltf import accessor_array
    from pipeline.tiles.points_reader import read_point_glb

    vals = []
    for p in sorted((layer_dir / "content").glob("[01]/*.glb")):
        js, binary = read_point_glb(p.read_bytes())
        attrs = js["meshes"][0]["primitives"][0]["attributes"]
        if "_INTENSITY" in attrs:
            vals.append(accessor_array(js, binary, attrs["_INTENSITY"]).astype(np.int64))
    if not vals or not sum(len(v) for v in vals):
        return {}
    lo, hi = np.percentile(np.concatenate(vals), [1.0, 99.0])
    return {"intensity": {"min": int(lo), "max": int(max(hi, lo + 1))}}


def _raw_relative(ctx: BuildContext, path: str) -> str:
    try:
        return Path(path).resolve().relative_to(Path(ctx.cfg.raw_dir).resolve()).as_posix()
    except ValueError:
        return Path(path).name
