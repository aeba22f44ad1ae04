"""Benchmark: the terrain mesh pyramid, whole-raster reference vs chunked build, and per-tile reuse.

Generates a 1 km² demo district delivered as 16 DGM and 16 DOP tiles (250 m), then in one process and
alternating (the machine is shared, so each variant runs `--repeat` times and the best is kept):

- `reference`: `build_terrain_reference`, the whole-raster build that every release used before
  (every level from the full model, every tile's texture warped from the orthophoto);
- `chunked`: `build_terrain` (chunks + per-tile reuse) from an empty cache and no previous release;
- `incremental`: one DGM tile changed (a 40 m x 40 m patch raised by 3 m), rebuilt with the clean
  build as previous release and its cache; the result must equal a clean build of the changed data
  byte for byte;
- `no_change`: the same inputs again (everything reused).

CPU seconds are this process's (builds run serially here, without Dask), wall seconds as measured.
Writes bench/results/terrain.json. Targets: chunked >= 5x faster than the reference (CPU per km²);
incremental <= 20 % of the chunked clean build.
Run: `.venv/bin/python -m bench.terrain [--repeat N] [--out DIR]`.
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
RESULTS = REPO / "bench" / "results" / "terrain.json"


def _context(cfg: Path, release: Path, cache: Path):
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.model import BuildContext
    from pipeline.orchestrate.build import plan_frame
    from pipeline.orchestrate.inputs import scan_inputs

    c = load_config(cfg, {"paths.cache": str(cache), "sources.mobile": None})
    inputs = scan_inputs(c)
    return BuildContext(
        cfg=c,
        build_id="bench",
        release_dir=release,
        frame=plan_frame(c, inputs),
        inputs=inputs,
        log=BuildLog(quiet=True),
    )


def _timed(fn, ctx) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    r = fn(ctx)
    return round(time.perf_counter() - t0, 3), round(time.process_time() - c0, 3), r


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _bump(path: Path) -> None:
    import rasterio

    with rasterio.open(path, "r+") as ds:
        a = ds.read(1)
        r, c = a.shape[0] // 2, a.shape[1] // 2
        a[r - 20 : r + 20, c - 20 : c + 20] += 3.0
        ds.write(a, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.terrain")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/twin-bench-terrain"))
    args = ap.parse_args(argv)

    from pipeline.release.manifest import pipeline_fingerprint

    os.environ.setdefault("TWIN_FINGERPRINT", "bench-" + pipeline_fingerprint().split("+", 1)[1])
    from pipeline.orchestrate.terrain import build_terrain, build_terrain_reference
    from pipeline.orchestrate.terrain_mesh import build_terrain_mesh
    from pipeline.sources.demo import generate_demo

    root = args.out
    shutil.rmtree(root, ignore_errors=True)
    raw = root / "data" / "raw"
    t0 = time.perf_counter()
    generate_demo(raw, size_m=1000, tile_m=250, density=2.0, mobile=False, progress=False, panorama_images=0)
    gen_s = time.perf_counter() - t0
    cfg = root / "configs" / "bench.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text((REPO / "configs" / "demo.yaml").read_text())
    dgm = sorted((raw / "dgm").glob("*.tif"))

    runs: dict[str, list[dict]] = {"reference": [], "chunked": []}
    stats = None
    for k in range(args.repeat):
        for name, fn in (("reference", build_terrain_reference), ("chunked", build_terrain)):
            rel = root / f"{name}{k}"
            cache = root / f"cache-{name}{k}"
            wall, cpu, res = _timed(fn, _context(cfg, rel, cache))
            runs[name].append({"wall_s": wall, "cpu_s": cpu})
            if name == "chunked":
                stats = res.stats
            print(f"{name:10s} wall {wall:7.2f} s  cpu {cpu:7.2f} s", flush=True)

    # incremental: the clean chunked build with its index is the previous release
    base = root / "base"
    ctx = _context(cfg, base, root / "cache")
    wall, cpu, (_res, n_base) = _timed(build_terrain_mesh, ctx)
    ctx.reuse.write_index()
    ctx = _context(cfg, root / "same", root / "cache")
    ctx.previous_release = base
    same_wall, same_cpu, (_r, n_same) = _timed(build_terrain_mesh, ctx)
    changed = dgm[5]
    _bump(changed)
    ctx = _context(cfg, root / "incr", root / "cache")
    ctx.previous_release = base
    inc_wall, inc_cpu, (_r, n_inc) = _timed(build_terrain_mesh, ctx)
    clean_wall, clean_cpu, (_r, _n) = _timed(build_terrain_mesh, _context(cfg, root / "clean", root / "c2"))
    identical = _files(root / "incr" / "terrain") == _files(root / "clean" / "terrain")
    print(
        f"incremental wall {inc_wall:.2f} s cpu {inc_cpu:.2f} s: {n_inc.tiles_built}/{n_inc.tiles} tiles, "
        f"{n_inc.mesh_chunks_built}/{n_inc.chunks} mesh chunks; identical to clean: {identical}",
        flush=True,
    )

    best = {n: min(r, key=lambda x: x["cpu_s"]) for n, r in runs.items()}
    best_wall = {n: min(x["wall_s"] for x in r) for n, r in runs.items()}
    result = {
        "benchmark": "terrain",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "district_km2": 1.0,
        "inputs": {"dgm_tiles": len(dgm), "dgm_res_m": 1.0, "dop_tiles": 16, "dop_res_m": 0.2},
        "layer": stats,
        "generate_s": round(gen_s, 1),
        "runs": runs,
        "reference": {"cpu_s_per_km2": best["reference"]["cpu_s"], "wall_s_per_km2": best_wall["reference"]},
        "chunked": {"cpu_s_per_km2": best["chunked"]["cpu_s"], "wall_s_per_km2": best_wall["chunked"]},
        "speedup_cpu": round(best["reference"]["cpu_s"] / best["chunked"]["cpu_s"], 2),
        "speedup_wall": round(best_wall["reference"] / best_wall["chunked"], 2),
        "incremental_one_dgm_tile": {
            "changed": changed.name,
            "clean": {"wall_s": wall, "cpu_s": cpu, "tiles_built": n_base.tiles_built},
            "incremental": {
                "wall_s": inc_wall,
                "cpu_s": inc_cpu,
                "tiles_built": n_inc.tiles_built,
                "tiles": n_inc.tiles,
                "mesh_chunks_built": n_inc.mesh_chunks_built,
                "texture_chunks_built": n_inc.texture_chunks_built,
                "chunks": n_inc.chunks,
            },
            "cpu_share_of_clean": round(inc_cpu / cpu, 3),
            "wall_share_of_clean": round(inc_wall / wall, 3),
            "identical_to_clean_build": identical,
            "clean_build_of_changed_data": {"wall_s": clean_wall, "cpu_s": clean_cpu},
        },
        "no_change": {"wall_s": same_wall, "cpu_s": same_cpu, "tiles_built": n_same.tiles_built},
        "targets": {"speedup": 5.0, "incremental_share": 0.20},
        "note": "CPU of this process (serial builds, no Dask); the machine is shared, best of the repeats",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_cpu", "speedup_wall")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
