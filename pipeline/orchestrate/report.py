"""Build report layers: the public analysis (report/index.html + PNG plots + report/data/, what the notebook
re-reads) and the internal nightly report (nightly_report/: what changed since the previous release, per-stage
durations, gates, validation, warnings by cause with the affected ids in warnings.csv).

    build_report_layers(ctx, previous) -> [report, nightly_report]
    finish_report(ctx, manifest, seconds)   # after the release gates and validation (pipeline.orchestrate.build)

The layer stage writes both with what is known then; `finish_report` rewrites the nightly files and the
public summary section with the gates' and the validation's results and every stage's duration.

Heights are compared with the demo's ground truth (`<raw>/truth/buildings.csv`, by oid) when present, else
with the official LoD1/LoD2 comparison the buildings layer wrote (buildings/reference_comparison.csv).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model import BuildContext, LayerResult
from pipeline.tiles.tileset import write_atomic


def _residuals(ctx: BuildContext, data) -> pd.DataFrame | None:
    from pipeline.report import height_residuals

    truth = ctx.cfg.raw_dir / "truth" / "buildings.csv"
    if truth.is_file() and data.buildings is not None:
        t = pd.read_csv(truth, dtype={"oid": str})
        res = height_residuals(data.buildings, t, "ground truth")
        if len(res):
            return res
    ref = ctx.release_dir / "buildings" / "reference_comparison.csv"
    if ref.is_file():
        r = pd.read_csv(ref, dtype={"oid": str})
        if {"oid", "height", "ref_height"} <= set(r.columns) and len(r):
            out = pd.DataFrame(
                {"oid": r["oid"], "height": r["height"], "reference": r["ref_height"]}
            ).dropna()
            out["residual"] = (out["height"] - out["reference"]).round(3)
            out["source"] = "official LoD1/LoD2"
            return out.sort_values("oid").reset_index(drop=True)
    return None


def _density(ctx: BuildContext, path) -> bool:
    """Points per DENSITY_CELL_M cell of the newest aerial epoch as a small GeoTIFF (the counts come from
    the overlays' one decoding pass per point file: pipeline.orchestrate.overlays.point_density), written
    in strips of rows summed from the per-file windows: memory is one strip, not the region's grid."""
    from pipeline.orchestrate.overlays import point_density

    dens = point_density(ctx)
    if dens is None:
        return False
    write_counts(path, *dens)
    return True


def write_counts(path, grid, windows, strip_cells: int | None = None) -> None:
    """Point counts as a deflate GeoTIFF (uint32) on `grid`, summed from (row0, col0, counts) windows one
    strip of rows at a time (`strip_cells` cells; the bytes equal one write of the summed grid)."""
    import rasterio
    from rasterio.windows import Window

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="uint32",
        crs=grid.crs,
        transform=grid.transform,
        compress="deflate",
    ) as ds:
        block = ds.block_shapes[0][0]  # whole strips of the file
        cells = DENSITY_STRIP_CELLS if strip_cells is None else strip_cells
        step = max(block, (cells // max(grid.width, 1)) // block * block)
        for s0 in range(0, grid.height, step):
            s1 = min(s0 + step, grid.height)
            strip = np.zeros((s1 - s0, grid.width), dtype=np.int64)
            for r0, c0, c in windows:
                a0, a1 = max(r0, s0), min(r0 + c.shape[0], s1)
                if a1 > a0:
                    strip[a0 - s0 : a1 - s0, c0 : c0 + c.shape[1]] += c[a0 - r0 : a1 - r0]
            ds.write(strip.astype(np.uint32), 1, window=Window(0, s0, grid.width, s1 - s0))


# cells of the density raster written at once (about 32 MB of counts)
DENSITY_STRIP_CELLS = 2**22


# release files each plot reads (plots not listed, e.g. the stage timings, are drawn every time)
PLOT_INPUTS = {
    "height_distribution.png": ("buildings/buildings.gpkg", "change/change.gpkg"),
    "height_residuals.png": ("report/data/residuals.csv",),
    "grz_map.png": ("overlays/parcels.gpkg", "buildings/buildings.gpkg"),
    "change_map.png": ("change/change.gpkg",),
    "model_check_map.png": ("model_check/model_check.gpkg",),
    "point_density.png": ("report/data/point_density.tif",),
}


def _file_sha256(path) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _plot_cached(ctx: BuildContext, name: str, fn, data, path, hidden: Collection[str] = ()) -> None:
    """Draw one plot, memoised in the build cache by the bytes of the release files it reads and the
    internal layers it must not show (`hidden`): an incremental build redraws only the plots whose data
    changed (the PNG is hard-linked, not rewritten)."""
    inputs = PLOT_INPUTS.get(name)
    if inputs is None:
        fn(data, path)
        return
    from pipeline.orchestrate.cache import build_cache

    def build(tmp) -> None:
        fn(data, tmp / name)

    key: list[Any] = ["report-plot-v1", name, [(rel, _file_sha256(ctx.release_dir / rel)) for rel in inputs]]
    if hidden:
        key.append({"hidden": sorted(hidden)})
    cache = build_cache(ctx)
    cache.materialize(cache.key(key), build, {name: path})


def build_report(ctx: BuildContext, previous: list[LayerResult]) -> LayerResult:
    from pipeline.report import PLOTS, ReleaseData, render_html, residual_stats

    out = ctx.release_dir / "report"
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    # The report is a public layer: it must not name internal layers (street scans, panoramas), their
    # files, timings or warnings, or `twin publish --public` would leak them.
    internal = [lay.name for lay in previous if lay.access != "public"]

    def public_text(text: str) -> bool:
        return not any(name in text for name in internal)

    public_layers = [lay for lay in previous if lay.access == "public"]
    layers = [lay.to_json() for lay in public_layers]
    timings = {k: v for k, v in ctx.timings.items() if public_text(k)}
    # nor inputs: a warning naming an input file is not quoted (the nightly report lists it)
    inputs = {n for i in ctx.inputs for n in (i.path.name, i.to_json(ctx.cfg.raw_dir)["path"])}
    warnings = [
        w
        for w in [*ctx.warnings, *(w for lay in public_layers for w in lay.warnings)]
        if public_text(w) and not any(n in w for n in inputs)
    ]
    build = {
        "build_id": ctx.build_id,
        "name": ctx.cfg.name,
        "layers": layers,
        "timings": timings,
        "warnings": warnings,
    }
    write_atomic(data_dir / "build.json", json.dumps(build, indent=1, sort_keys=True).encode())
    files = ["report/data/build.json"]
    if _density(ctx, data_dir / "point_density.tif"):
        files.append("report/data/point_density.tif")
    data = ReleaseData.load(ctx.release_dir, layers=layers, timings=timings, internal=internal)
    res = _residuals(ctx, data)
    if res is not None:
        write_atomic(data_dir / "residuals.csv", res.to_csv(index=False, lineterminator="\n").encode())
        files.append("report/data/residuals.csv")
        data.residuals = res
    images = []
    internal_files = {f for lay in previous if lay.access != "public" for f in [*lay.files, lay.tileset] if f}
    for name, fn in PLOTS.items():
        needs = PLOT_INPUTS.get(name)
        if needs and all(rel in internal_files for rel in needs):
            continue  # a plot of internal data only (e.g. the change map of an internal change layer)
        _plot_cached(ctx, name, fn, data, out / name, internal)
        images.append(name)
        files.append(f"report/{name}")
    html = render_html(data, images, f"RuhrTwin build report: {ctx.cfg.name} ({ctx.build_id})", warnings)
    write_atomic(out / "index.html", html.encode("utf-8"))
    files.append("report/index.html")
    stats = {"plots": len(images), "residuals": residual_stats(res)}
    return LayerResult(name="report", kind="report", access="public", files=sorted(files), stats=stats)


def _provisional_manifest(ctx: BuildContext, layers: list[LayerResult]) -> dict[str, Any]:
    """What the manifest will say, as far as it is known in the layer stage (no gates, no validation)."""
    from pipeline.config.loader import config_hash
    from pipeline.release.manifest import make_manifest
    from pipeline.release.status import now_iso

    return make_manifest(
        name=ctx.cfg.name,
        build_id=ctx.build_id,
        config_hash=config_hash(ctx.cfg),
        created=now_iso(),
        raw_dir=ctx.cfg.raw_dir,
        inputs=ctx.inputs,
        layers=layers,
        timings=dict(ctx.timings),
        warnings=list(ctx.warnings) + [w for lay in layers for w in lay.warnings],
        frame=ctx.frame.to_json(),
        crs=ctx.cfg.crs.compound,
    )


def nightly_layer() -> LayerResult:
    from pipeline.report.nightly import LAYER, PAGE, SUMMARY, WARNINGS_CSV

    # internal: it names inputs, hashes and internal layers; `twin publish --public` leaves it out
    return LayerResult(
        name=LAYER, kind="report", access="internal", files=sorted([PAGE, SUMMARY, WARNINGS_CSV])
    )


_SECTION = re.compile(r'(<section id="build-summary">).*?(</section><!-- /build-summary -->)', re.S)


def write_nightly(
    ctx: BuildContext, manifest: dict[str, Any], seconds: float | None = None
) -> dict[str, Any]:
    """Write the nightly report (nightly_report/) and the public summary (report/index.html section,
    report/data/build.json `summary`) from `manifest`; returns the summary."""
    from pipeline.release.status import read_manifest
    from pipeline.report.nightly import (
        PAGE,
        SUMMARY,
        WARNINGS_CSV,
        build_summary,
        public_summary,
        render_page,
        render_public_section,
        warning_rows,
        warnings_csv,
    )

    root = ctx.release_dir
    prev = ctx.previous_release
    prev_manifest = read_manifest(prev)
    rows = warning_rows(root, manifest)
    summary = build_summary(
        root,
        manifest,
        prev,
        prev_manifest,
        seconds=seconds,
        limits=ctx.cfg.release.gates.max_change.model_dump(),
        rows=rows,
    )
    (root / PAGE).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(root / WARNINGS_CSV, warnings_csv(rows))
    write_atomic(root / SUMMARY, json.dumps(summary, indent=1, sort_keys=True, default=str).encode())
    write_atomic(root / PAGE, render_page(summary).encode("utf-8"))

    pub = public_summary(summary, rows)
    index = root / "report" / "index.html"
    if index.is_file():
        html = index.read_text(encoding="utf-8")
        section = render_public_section(pub)
        new = _SECTION.sub(lambda m: m.group(1) + section + m.group(2), html, count=1)
        if new != html:
            write_atomic(index, new.encode("utf-8"))
    build_json = root / "report" / "data" / "build.json"
    if build_json.is_file():
        doc = json.loads(build_json.read_text())
        doc["summary"] = pub
        write_atomic(build_json, json.dumps(doc, indent=1, sort_keys=True, default=str).encode())
    return summary


def finish_report(ctx: BuildContext, manifest: dict[str, Any], seconds: float | None = None) -> None:
    """After the release gates and the validation: rewrite the nightly report and the public summary with
    their results (no-op when the build has no report layers)."""
    from pipeline.report.nightly import LAYER

    if any(lay.get("name") == LAYER for lay in manifest.get("layers", [])):
        write_nightly(ctx, {**manifest, "timings": dict(ctx.timings)}, seconds)


def build_report_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    t0 = time.perf_counter()
    with ctx.stage("report.render"):
        res = build_report(ctx, previous)
    res.seconds = time.perf_counter() - t0
    nightly = nightly_layer()
    with ctx.stage("report.nightly"):
        write_nightly(ctx, _provisional_manifest(ctx, [*previous, res, nightly]))
    return [res, nightly]
