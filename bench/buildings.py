"""Benchmark: buildings per second end to end (cadastre read + repair, heights from the point cloud,
meshes, tiles + GeoPackage written) on a generated district, on the build's Dask cluster
(`pipeline.runtime.dask_client`, the one a `twin build` starts: same worker settings, same malloc
environment) with `--workers` workers and the default memory budget (`runtime.memory`).

    .venv/bin/python -m bench.buildings [--size 5120] [--density 4] [--workers 2] [--data DIR]

Default: 5.12 km x 5.12 km, 102,400 buildings, about 105 M points in 36 LAZ tiles (synthetic district of
pipeline.stages.buildings.synthetic, generated once and kept in --data). Writes
bench/results/buildings.json: wall time, CPU time of the main process and of the workers (and what it
implies on two idle cores), CPU ms per building, peak RSS of the main process and of each worker
(`--lod 1` for the LoD1 layer alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "buildings.json"


def _cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far [MB] (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _generate(data: Path, size: float, density: float, tile: float) -> dict:
    from pipeline.stages.buildings.synthetic import make_district

    stamp = data / "raw" / "done.json"
    want = {"size": size, "density": density, "tile": tile}
    if stamp.is_file():  # generated before with the same parameters: kept (the stamp adds generate_s)
        done = json.loads(stamp.read_text())
        if {k: done.get(k) for k in want} == want:
            return done
    if (data / "raw").exists():
        shutil.rmtree(data / "raw")
    t0 = time.perf_counter()
    make_district(
        data / "raw", size_m=size, tile_m=tile, density=density, epochs=("2024",), bad_records=False
    )
    want["generate_s"] = round(time.perf_counter() - t0, 1)
    stamp.write_text(json.dumps(want))
    return want


def _warm() -> None:
    """Load the numba kernels of the heights and LoD2 tasks in this process: one small gable roof
    through the roof fit, its solid and the heights kernels (what the first task would pay once)."""
    import numpy as np
    import shapely

    from pipeline.stages.buildings.heights import HeightParams, footprint_heights
    from pipeline.stages.buildings.roofs import fit_roof
    from pipeline.stages.buildings.solids import build_solid, check_solid, roof_partition, solid_mesh

    rng = np.random.default_rng(0)
    fp = shapely.box(0, 0, 12, 8)
    x, y = rng.uniform(0, 12, 800), rng.uniform(0, 8, 800)
    z = 50 - 0.8 * np.abs(y - 4) + rng.normal(0, 0.02, 800)
    solid = build_solid(roof_partition(fit_roof(x, y, z, fp), fp), 40.0)
    check_solid(solid, rings=False)
    solid_mesh(solid)
    pts = {"x": x, "y": y, "z": z, "classification": np.full(800, 20, np.uint8)}
    footprint_heights(np.array([fp], dtype=object), pts, HeightParams())


def run(
    size: float = 5120.0,
    density: float = 4.0,
    tile: float = 1000.0,
    workers: int = 2,
    data: Path | None = None,
    keep_output: bool = False,
    lod: int = 2,
) -> dict:
    import laspy

    from pipeline.buildlog import BuildLog
    from pipeline.config.model import TwinConfig
    from pipeline.crs import project_frame
    from pipeline.model import BuildContext
    from pipeline.orchestrate.buildings import build_buildings_layers
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.runtime import dask_client

    data = data or (REPO / "data" / "cache" / "bench-buildings")
    gen = _generate(data, size, density, tile)
    shutil.rmtree(data / "cache", ignore_errors=True)  # a benchmark of the build, not of its cache
    raw = data / "raw"
    npts = 0
    for f in sorted((raw / "aerial").rglob("*.laz")):
        with laspy.open(f) as r:
            npts += int(r.header.point_count)
    cfg = TwinConfig.model_validate(
        {
            "name": "bench",
            "paths": {"raw": str(raw), "out": str(data / "out"), "cache": str(data / "cache")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": {
                "aerial": [{"epoch": "2024", "points": "aerial/2024/*.laz"}],
                "cadastre": {"path": "alkis/*.gpkg"},
            },
            "layers": {"buildings": {"lod": lod}},
        }
    )
    rel = data / "release"
    if rel.exists():
        shutil.rmtree(rel)
    rel.mkdir(parents=True)
    frame = project_frame(cfg.crs, (400_000.0 + size / 2, 5_700_000.0 + size / 2, 0.0))
    inputs = scan_inputs(cfg)
    with dask_client(cfg.runtime, workers=workers) as client:
        # warm the workers (imports, numba kernels loaded from their cache) outside the timed region
        client.run(_warm)
        ctx = BuildContext(
            cfg=cfg,
            build_id="bench",
            release_dir=rel,
            frame=frame,
            inputs=inputs,
            log=BuildLog(quiet=True),
            client=client,
        )
        cpu_w0 = client.run(_cpu_seconds)
        cpu_m0 = time.process_time()
        t0 = time.perf_counter()
        res = build_buildings_layers(ctx, [])[0]
        seconds = time.perf_counter() - t0
        cpu_main = time.process_time() - cpu_m0
        cpu_w1 = client.run(_cpu_seconds)
        rss_w = client.run(_peak_rss_mb)
    cpu_workers = sum(cpu_w1[k] - cpu_w0.get(k, 0.0) for k in cpu_w1)
    # the CPU is shared with other jobs during development: also report what the consumed CPU time
    # implies on 2 otherwise idle cores (orchestrator serial + worker CPU spread over the workers)
    est = cpu_main + cpu_workers / workers
    out = {
        "benchmark": "buildings",
        "buildings": res.stats["buildings"],
        "points": npts,
        "point_files": len(list((raw / "aerial").rglob("*.laz"))),
        "tiles": res.stats["tiles"],
        "triangles": res.stats["triangles"],
        "seconds": round(seconds, 2),
        "buildings_per_s": round(res.stats["buildings"] / seconds, 1),
        "points_per_s": round(npts / seconds, 1),
        "cpu_seconds_main": round(cpu_main, 2),
        "cpu_seconds_workers": round(cpu_workers, 2),
        "estimated_idle_seconds": round(est, 2),
        "estimated_idle_buildings_per_s": round(res.stats["buildings"] / est, 1),
        "ms_cpu_per_building": round(1000 * (cpu_main + cpu_workers) / res.stats["buildings"], 2),
        # peak RSS per process (the workers' includes their warm-up; budget runtime.memory each)
        "peak_rss_mb_main": round(_peak_rss_mb(), 1),
        "peak_rss_mb_workers": sorted(round(v, 1) for v in rss_w.values()),
        "stages": {k: v for k, v in ctx.timings.items() if k.startswith("buildings")},
        "quality": res.stats["quality"],
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_avg_before": None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "district": {"size_m": size, "density": density, "tile_m": tile, **gen},
        "lod": lod,
        "lod2": res.stats.get("lod2"),
        "target_buildings_per_s": 2000 if lod == 1 else 300,
    }
    if not keep_output:
        shutil.rmtree(rel, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=5120.0, help="district side [m] (16 m lots)")
    ap.add_argument("--density", type=float, default=4.0, help="points per m2")
    ap.add_argument("--tile", type=float, default=1000.0, help="point-cloud tile size [m]")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--lod", type=int, default=2, choices=[1, 2], help="layers.buildings.lod")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/buildings.json")
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    res = run(a.size, a.density, a.tile, a.workers, a.data, lod=a.lod)
    res["load_avg_before"] = round(load, 2)
    print(json.dumps(res, indent=1, ensure_ascii=False))
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    main()
