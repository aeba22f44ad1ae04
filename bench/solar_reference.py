"""Solar potential on a built release against the slow ray-cast reference, per roof (issue 18's bar: per-roof
results for the demo within 10 % of an independent ray-cast reference on a sample of roofs).

    .venv/bin/python -m bench.solar_reference CONFIG RELEASE [--roofs 12] [--no-write]

CONFIG is the config the release was built with (`layers.solar` enabled, e.g. configs/demo.yaml with
`solar.enabled: true`), RELEASE its published folder. The solar layer is computed again from the build's
cache (same surface model, roof labels and gradients; its buildings table must equal the published
`solar/solar.gpkg`, else the comparison would be of another surface). On a random sample of roofs (labels of
the layer's last aggregation: the LoD2 roof surfaces when the official model gives them, else the
buildings; at least 40 cells each) every other roof cell is computed twice with a reduced sun path and a
80 m horizon: by the fast kernel (`pipeline.stages.solar.irradiation`: horizon sectors, max-pooled far
field, binned sun) and by `irradiation_reference` (marching along every sun direction through the DSM, a
numerical sky dome). Per roof: the mean annual global irradiation of both and their difference. Writes
bench/results/solar_reference.json unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "solar_reference.json"


def _context(cfg_path: Path, release: Path):
    """A BuildContext for the solar layer builder alone (no Dask client), as a build makes it."""
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.crs import project_frame
    from pipeline.model import BuildContext
    from pipeline.orchestrate.build import plan_frame
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.orchestrate.working_crs import resolve_working_crs

    cfg = load_config(cfg_path)
    inputs = scan_inputs(cfg)
    cfg = resolve_working_crs(cfg, inputs)
    frame = project_frame(cfg.crs) if cfg.crs.frame_origin is not None else plan_frame(cfg, inputs)
    return BuildContext(
        cfg=cfg, build_id="bench", release_dir=release, frame=frame, inputs=inputs, log=BuildLog(quiet=True)
    )


def main(argv: list[str] | None = None) -> int:
    import pyogrio

    import pipeline.stages.solar as S
    from pipeline.orchestrate.solar import build_solar_layers

    ap = argparse.ArgumentParser(prog="bench.solar_reference")
    ap.add_argument("config", type=Path)
    ap.add_argument("release", type=Path)
    ap.add_argument("--roofs", type=int, default=12)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    release = args.release.resolve()
    published = release / "solar" / "solar.gpkg"
    if not published.is_file():
        raise SystemExit(f"{published} not found: build the release with layers.solar.enabled")

    captured: dict = {}
    orig_irr, orig_stats = S.irradiation, S.roof_statistics

    def spy_irr(dsm, res, grad, samples, params, mask=None):
        captured.update(dsm=dsm, res=res, grad=grad)
        return orig_irr(dsm, res, grad, samples, params, mask=mask)

    def spy_stats(labels, irr, res, n):
        captured["labels"] = labels
        return orig_stats(labels, irr, res, n)

    S.irradiation, S.roof_statistics = spy_irr, spy_stats
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp) / "release"
            (scratch / "buildings").mkdir(parents=True)
            (scratch / "buildings" / "buildings.gpkg").symlink_to(release / "buildings" / "buildings.gpkg")
            ctx = _context(args.config, scratch)
            t0 = time.process_time()
            [layer] = build_solar_layers(ctx, [])
            layer_cpu = time.process_time() - t0
            again = pyogrio.read_dataframe(scratch / "solar" / "solar.gpkg", layer="solar_buildings", read_geometry=False)  # fmt: skip
    finally:
        S.irradiation, S.roof_statistics = orig_irr, orig_stats
    pub = pyogrio.read_dataframe(published, layer="solar_buildings", read_geometry=False)
    if not np.allclose(again["solar_mean_kwh_m2"], pub["solar_mean_kwh_m2"], equal_nan=True):
        raise SystemExit("the solar layer computed again differs from the published one (other inputs?)")

    dsm, res, grad, labels = captured["dsm"], captured["res"], captured["grad"], captured["labels"]
    cells = np.bincount(labels[labels >= 0].ravel(), minlength=int(labels.max()) + 1)
    big = np.flatnonzero(cells >= 40)
    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(big, size=min(args.roofs, big.size), replace=False))
    params = S.SolarParams(day_step=14, bin_deg=3.0, fine_cells=8, max_distance_m=80.0)
    samples = S.sun_samples(params, layer.stats["lat"], layer.stats["lon"])
    mask = np.isin(labels, sample)
    rows, cols = np.nonzero(mask)
    rows, cols = rows[::2], cols[::2]  # every other roof cell
    t0 = time.process_time()
    fast = S.irradiation(dsm, res, grad, samples, params, mask=mask)
    t1 = time.process_time()
    ref = S.irradiation_reference(
        dsm, res, grad, samples, params, (rows, cols), step=0.2, sky_az=36, sky_el=9
    )
    t2 = time.process_time()
    lab = labels[rows, cols]
    roofs = []
    for b in sample:
        on = lab == b
        f, r = float(fast.global_kwh[rows, cols][on].mean()), float(ref["global_kwh"][on].mean())
        roofs.append({"label": int(b), "cells": int(on.sum()), "kernel_kwh_m2": round(f, 1),
                      "reference_kwh_m2": round(r, 1), "difference": round((f - r) / r, 4)})  # fmt: skip
        print(f"roof {b:5d} ({on.sum():4d} cells): kernel {f:7.1f}, reference {r:7.1f} kWh/m2 ({100 * (f - r) / r:+.2f} %)")  # fmt: skip
    worst = max(abs(x["difference"]) for x in roofs)
    print(f"worst per-roof difference {100 * worst:.2f} % over {len(roofs)} roofs (bar 10 %)")
    out = {
        "benchmark": "solar_reference",
        "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "release": release.name,
        "layer_stats": {
            k: layer.stats[k] for k in ("resolution_m", "cells", "roof_planes") if k in layer.stats
        },
        "sample": {"roofs": len(roofs), "cells": int(rows.size), "min_cells_per_roof": 40},
        "params": {
            "day_step": 14,
            "bin_deg": 3.0,
            "max_distance_m": 80.0,
            "ray_step_cells": 0.2,
            "sky": "36x9",
        },
        "cpu_s": {
            "solar_layer": round(layer_cpu, 1),
            "kernel": round(t1 - t0, 2),
            "reference": round(t2 - t1, 1),
        },
        "worst_difference": worst,
        "roofs": roofs,
        "load_avg": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
    }
    if not args.no_write:
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if worst <= 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
