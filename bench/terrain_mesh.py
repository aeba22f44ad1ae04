"""Benchmark: the terrain layer's size per km² by mesh encoding (`layers.terrain.mesh_encoding`).

Generates the 1 km² demo district (16 DGM + 16 DOP tiles of 250 m, as `bench.terrain_textures`), then
builds the terrain layer (`build_terrain`, chunked, default JPEG textures) with

- `float`: float32 positions and UVs, plain buffers (the default; QGIS 3.40 reads only these);
- `compact`: 16-bit positions and UVs (KHR_mesh_quantization) + EXT_meshopt_compression;

and a second `compact` build into a fresh release and cache (byte-identical check). Per encoding: bytes
of the terrain folder per km², of which meshes (GLB bytes minus the embedded images), CPU and wall seconds
of the layer, glTF validator errors over every GLB (when the validator is installed). The decoded compact
vertices are compared with the float ones tile by tile (same vertices, same order): largest horizontal and
vertical difference, and the largest ratio of the vertical difference to the bound (half the tile's
vertical grid step).

Unless `--no-release`: also one full `run_build` of the demo with compact terrain for the whole
release's size per km²; the release size with float terrain is that figure minus the compact terrain folder
plus the float one (only the terrain layer's files differ between the encodings).
Writes bench/results/terrain_mesh.json. Run: `.venv/bin/python -m bench.terrain_mesh [--no-release]` (or `python -m bench.run terrain_mesh`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "terrain_mesh.json"


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _image_bytes(path: Path) -> int:
    from pipeline.tiles.gltf import read_glb

    js, _ = read_glb(path.read_bytes())
    return sum(js["bufferViews"][im["bufferView"]]["byteLength"] for im in js.get("images", []))


def _config(root: Path, name: str, base: dict, encoding: str) -> Path:
    import yaml

    cfg = root / "configs" / f"{name}.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(json.dumps(base))
    doc.setdefault("layers", {}).setdefault("terrain", {})["mesh_encoding"] = encoding
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.terrain_mesh")
    ap.add_argument("--out", type=Path, default=Path("/tmp/twin-bench-terrain-mesh"))
    ap.add_argument(
        "--no-release",
        dest="release",
        action="store_false",
        help="skip the full build (whole release per km²)",
    )
    args = ap.parse_args(argv)

    import yaml

    from bench.terrain import _context
    from pipeline.orchestrate.terrain import build_terrain
    from pipeline.sources.demo import generate_demo
    from pipeline.tiles.terrain_glb import quantisation_step, read_terrain_glb
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    root = args.out
    shutil.rmtree(root, ignore_errors=True)
    raw = root / "data" / "raw"
    generate_demo(raw, size_m=1000, tile_m=250, density=2.0, mobile=False, progress=False, panorama_images=0)
    base = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    out: dict[str, dict] = {}
    for name, enc in (("float", "float"), ("compact", "compact"), ("compact-again", "compact")):
        cfg = _config(root, name, base, enc)
        ctx = _context(cfg, root / name, root / f"cache-{name}")
        t0, c0 = time.perf_counter(), time.process_time()
        build_terrain(ctx)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        terrain = root / name / "terrain"
        glbs = sorted(terrain.rglob("*.glb"))
        total = _tree_bytes(terrain)
        images = sum(_image_bytes(g) for g in glbs)
        errors = sum(r["errors"] for r in validate_glb_files(glbs)) if validator_available() else None
        out[name] = {
            "mesh_encoding": enc,
            "terrain_bytes_per_km2": total,
            "mesh_bytes_per_km2": sum(g.stat().st_size for g in glbs) - images,
            "texture_bytes_per_km2": images,
            "glb_files": len(glbs),
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "gltf_validator_errors": errors,
        }
        print(name, json.dumps(out[name]), flush=True)

    a, b = root / "compact" / "terrain", root / "compact-again" / "terrain"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    identical = files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files
    )
    dxy = dz = ratio = 0.0
    for g in sorted((root / "float" / "terrain").rglob("*.glb")):
        pf, _, _ = read_terrain_glb(g.read_bytes())
        pc, _, _ = read_terrain_glb((a / g.relative_to(root / "float" / "terrain")).read_bytes())
        d = np.abs(pc - pf)
        dxy, dz = max(dxy, float(d[:, :2].max())), max(dz, float(d[:, 2].max()))
        half = quantisation_step(pf.min(axis=0), pf.max(axis=0))[2] / 2  # the float mesh's box
        ratio = max(ratio, float(d[:, 2].max()) / half)
    fl, co = out["float"], out["compact"]
    result: dict = {
        "benchmark": "terrain_mesh",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()} (shared with other jobs)",
        "district_km2": 1.0,
        "variants": {k: out[k] for k in ("float", "compact")},
        "compact_rebuild_byte_identical": identical,
        "compact_vs_float": {
            "terrain_size": round(co["terrain_bytes_per_km2"] / fl["terrain_bytes_per_km2"], 3),
            "mesh_size": round(co["mesh_bytes_per_km2"] / fl["mesh_bytes_per_km2"], 3),
            "max_horizontal_diff_m": round(dxy, 5),
            "max_vertical_diff_m": round(dz, 5),
            "max_vertical_diff_over_bound": round(ratio, 3),
        },
    }
    if args.release:
        from pipeline.buildlog import BuildLog
        from pipeline.config import load_config
        from pipeline.orchestrate.build import run_build

        cfg = _config(root, "release", base, "compact")
        c = load_config(cfg, {"sources.mobile": None})
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_build(c, log=BuildLog(quiet=True))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rel = res.release_dir
        total = _tree_bytes(rel)
        terrain = _tree_bytes(rel / "terrain")
        raw_bytes = _tree_bytes(raw)
        float_total = total - terrain + fl["terrain_bytes_per_km2"]
        result["release"] = {
            "release_bytes_per_km2_compact": total,
            "terrain_bytes_in_release": terrain,
            "release_bytes_per_km2_float": float_total,
            "raw_bytes_per_km2": raw_bytes,
            "release_over_raw_compact": round(total / raw_bytes, 2),
            "release_over_raw_float": round(float_total / raw_bytes, 2),
            "build_wall_s": round(wall, 1),
            "build_cpu_s_this_process": round(cpu, 1),
        }
        print("release", json.dumps(result["release"]), flush=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["compact_vs_float"]), "identical:", identical, flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
