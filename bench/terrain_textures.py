"""Benchmark: the terrain layer's size per km² by texture encoding (`layers.terrain.texture_format`,
`texture_quality`, `texture_subsampling`), with the glTF validator's verdict and the texture error.

Generates the 1 km² demo district (16 DGM + 16 DOP tiles of 250 m, DOP 0.2 m), then builds the terrain
layer (`build_terrain`, chunked) once per encoding:

- `png`: lossless (the error reference);
- `jpeg-85-444`: JPEG quality 85, no chroma subsampling (the encoding before this benchmark);
- `jpeg-80-420`: JPEG quality 80, 4:2:0 (the default now);
- `webp-80`: WebP quality 80 (glTF `EXT_texture_webp`).

Per encoding: bytes of the terrain folder per km², texture bytes, seconds, glTF validator errors over every
GLB (when the validator is installed), and the error of the decoded textures against the PNG build (mean
absolute error and PSNR over all pixels of all tiles). Writes bench/results/terrain_textures.json.
Run: `.venv/bin/python -m bench.terrain_textures [--out DIR]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import struct
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "terrain_textures.json"

VARIANTS = {
    "png": {"texture_format": "png"},
    "jpeg-85-444": {"texture_format": "jpeg", "texture_quality": 85, "texture_subsampling": "4:4:4"},
    "jpeg-80-420": {"texture_format": "jpeg", "texture_quality": 80, "texture_subsampling": "4:2:0"},
    "webp-80": {"texture_format": "webp", "texture_quality": 80},
}


def _glb_texture(path: Path) -> tuple[np.ndarray, int] | None:
    """The embedded texture of a terrain GLB, decoded (H, W, 3), and its encoded size."""
    from PIL import Image

    data = path.read_bytes()
    jlen = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + jlen])
    if not doc.get("images"):
        return None
    bin_start = 20 + jlen + 8
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    raw = data[
        bin_start + view.get("byteOffset", 0) : bin_start + view.get("byteOffset", 0) + view["byteLength"]
    ]
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")), len(raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.terrain_textures")
    ap.add_argument("--out", type=Path, default=Path("/tmp/twin-bench-terrain-textures"))
    args = ap.parse_args(argv)

    from bench.terrain import _context
    from pipeline.orchestrate.terrain import build_terrain
    from pipeline.sources.demo import generate_demo
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    root = args.out
    shutil.rmtree(root, ignore_errors=True)
    raw = root / "data" / "raw"
    generate_demo(raw, size_m=1000, tile_m=250, density=2.0, mobile=False, progress=False, panorama_images=0)
    import yaml

    base = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    out: dict[str, dict] = {}
    ref: dict[str, np.ndarray] = {}
    for name, over in VARIANTS.items():
        cfg = root / "configs" / f"{name}.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(json.dumps(base))
        doc.setdefault("layers", {}).setdefault("terrain", {}).update(over)
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        ctx = _context(cfg, root / name, root / f"cache-{name}")
        t0, c0 = time.perf_counter(), time.process_time()
        build_terrain(ctx)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        glbs = sorted((root / name / "terrain").rglob("*.glb"))
        total = sum(p.stat().st_size for p in (root / name / "terrain").rglob("*") if p.is_file())
        tex_bytes, err_sum, sq_sum, n_px = 0, 0.0, 0.0, 0
        for g in glbs:
            got = _glb_texture(g)
            if got is None:
                continue
            img, size = got
            tex_bytes += size
            key = str(g.relative_to(root / name))
            if name == "png":
                ref[key] = img
            else:
                d = img.astype(np.float64) - ref[key].astype(np.float64)
                err_sum += float(np.abs(d).sum())
                sq_sum += float((d * d).sum())
                n_px += d.size
        errors = None
        if validator_available():
            errors = sum(r["errors"] for r in validate_glb_files(glbs))
        mse = sq_sum / n_px if n_px else 0.0
        out[name] = {
            "settings": over,
            "terrain_bytes_per_km2": total,
            "texture_bytes": tex_bytes,
            "glb_files": len(glbs),
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "gltf_validator_errors": errors,
            "mean_abs_error_vs_png": round(err_sum / n_px, 3) if n_px else 0.0,
            "psnr_db_vs_png": round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else None,
        }
        print(name, json.dumps(out[name]), flush=True)
    before = out["jpeg-85-444"]["terrain_bytes_per_km2"]
    result = {
        "benchmark": "terrain_textures",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()} (shared with other jobs)",
        "district_km2": 1.0,
        "inputs": {"dgm_tiles": 16, "dop_tiles": 16, "dop_res_m": 0.2, "texture_px": 256},
        "variants": out,
        "size_vs_before": {k: round(v["terrain_bytes_per_km2"] / before, 3) for k, v in out.items()},
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["size_vs_before"]), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
