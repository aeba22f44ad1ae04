"""Benchmark: full build vs incremental build after one of >= 16 input tiles changed.

Generates a demo district with `tile_m` small enough for >= 16 aerial tiles, builds it from scratch
(empty out/ and cache/), then changes one aerial point tile (a new 'structure': points of a 10 m x 10 m
patch raised by 4 m, same extent and point count) and builds again. Also times the no-change rebuild
("up to date") and, when the demo has DGM tiles, a rebuild after one changed DGM tile.

The pipeline fingerprint is pinned (`TWIN_FINGERPRINT`) to the code as it was when the run started, so
edits made in the work tree during the run do not turn the incremental builds into full ones.

Writes bench/results/incremental.json. Target: incremental <= 20% of the full build.
Run: `.venv/bin/python -m bench.incremental` (or via `make bench`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "incremental.json"
TARGET = 0.20


def _config_text() -> str:
    for name in ("tiny.yaml", "demo.yaml"):
        p = REPO / "configs" / name
        if p.is_file():
            return p.read_text()
    raise SystemExit("configs/tiny.yaml (or demo.yaml) is missing: the demo config has not landed yet")


def _project(root: Path, size_m: float, tile_m: float, density: float) -> Path:
    from pipeline.sources.demo import generate_demo

    raw = root / "data" / "raw"
    generate_demo(raw, size_m=size_m, tile_m=tile_m, density=density, progress=False)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    cfg = root / "configs" / "bench.yaml"
    cfg.write_text(_config_text())
    return cfg


def _overrides() -> dict:
    o = {"paths.raw": "../data/raw", "paths.out": "../data/out", "paths.cache": "../data/cache"}
    try:  # several orthophoto tiles are mosaicked through GDAL's VRT (osgeo); without it, no colouring
        import osgeo  # noqa: F401
    except ImportError:
        o["layers.aerial_points.colour_from_orthophoto"] = False
    return o


def _load(cfg: Path):
    from pipeline.config import load_config

    return load_config(cfg, _overrides())


def _build(cfg: Path, workers: int):
    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build

    t0 = time.perf_counter()
    res = run_build(_load(cfg), workers=workers, log=BuildLog(quiet=True))
    dt = time.perf_counter() - t0
    rec = {}
    p = res.release_dir / ".twin" / "build-record.json"
    if p.is_file():
        rec = json.loads(p.read_text()).get("changes", {})
    timings = (res.manifest or {}).get("timings", {})
    return res, dt, rec, timings


def change_point_tile(path: Path) -> None:
    """Raise the points of a 10 m x 10 m patch in the middle of the tile by 4 m (same count, same extent)."""
    import laspy
    import numpy as np

    las = laspy.read(path)
    x, y = np.asarray(las.x), np.asarray(las.y)
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    sel = (np.abs(x - cx) < 5) & (np.abs(y - cy) < 5)
    z = np.asarray(las.z).copy()
    z[sel] += 4.0
    las.z = z
    las.update_header()
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    las.write(tmp)
    os.replace(tmp, path)


def change_raster_tile(path: Path, delta: float = 2) -> None:
    """Add `delta` to a 10 x 10 cell patch in the middle of band 1 (integer bands saturate, never wrap)."""
    import numpy as np
    import rasterio

    with rasterio.open(path, "r+") as ds:
        a = ds.read(1)
        h, w = a.shape
        patch = a[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5]
        if a.dtype.kind in "ui":
            info = np.iinfo(a.dtype)
            patch[...] = np.clip(patch.astype(np.int64) + int(delta), info.min, info.max)
        else:
            patch += np.asarray(delta, dtype=a.dtype)
        ds.write(a, 1)


def run(
    out_root: Path | None = None,
    size_m: float = 400.0,
    tile_m: float = 100.0,
    density: float = 8.0,
    workers: int = 2,
) -> dict:
    out_root = out_root or (REPO / "data" / "bench" / "incremental")
    # all builds of one run must see one pipeline version: other engineers may edit the shared work tree
    # while the benchmark runs, and any edit would change the fingerprint and invalidate every cached result
    from pipeline.release.manifest import pipeline_fingerprint

    os.environ.setdefault("TWIN_FINGERPRINT", "bench-" + pipeline_fingerprint().split("+", 1)[1])
    shutil.rmtree(out_root, ignore_errors=True)
    out_root.mkdir(parents=True)
    cfg_path = _project(out_root, size_m, tile_m, density)
    cfg = _load(cfg_path)
    from pipeline.orchestrate.inputs import source_files

    files = source_files(cfg)
    aerial = sorted(p for role, p in files if role.startswith("aerial:"))
    latest_epoch = cfg.sources.aerial[-1].epoch if cfg.sources.aerial else None
    latest = sorted(p for role, p in files if role == f"aerial:{latest_epoch}")
    dgm = sorted(p for role, p in files if role == "dgm")
    if len(latest) < 16:
        raise SystemExit(f"only {len(latest)} aerial tiles in the newest epoch; need >= 16 (smaller tile_m)")

    _full, t_full, _rec, timings_full = _build(cfg_path, workers)
    _same, t_noop, _r, _t = _build(cfg_path, workers)

    changed = latest[len(latest) // 2]
    change_point_tile(changed)
    _incr, t_incr, rec_incr, timings_incr = _build(cfg_path, workers)

    result: dict = {
        "district": {"size_m": size_m, "tile_m": tile_m, "density": density},
        "workers": workers,
        "aerial_tiles_total": len(aerial),
        "aerial_tiles_newest_epoch": len(latest),
        "full_s": round(t_full, 2),
        "up_to_date_s": round(t_noop, 2),
        "changed_point_tile": changed.name,
        "incremental_point_tile_s": round(t_incr, 2),
        "ratio_point_tile": round(t_incr / t_full, 3),
        "reuse_point_tile": rec_incr.get("reuse", {}),
        "timings_full": timings_full,
        "timings_point_tile": timings_incr,
        "target_ratio": TARGET,
        "config_overrides": {k: v for k, v in _overrides().items() if not k.startswith("paths.")},
    }
    if dgm and len(dgm) >= 2:
        d = dgm[len(dgm) // 2]
        change_raster_tile(d)
        _r3, t_dgm, rec_dgm, timings_dgm = _build(cfg_path, workers)
        result.update(
            {
                "dgm_tiles": len(dgm),
                "changed_dgm_tile": d.name,
                "incremental_dgm_tile_s": round(t_dgm, 2),
                "ratio_dgm_tile": round(t_dgm / t_full, 3),
                "reuse_dgm_tile": rec_dgm.get("reuse", {}),
                "timings_dgm_tile": timings_dgm,
            }
        )
    result["meets_target_point_tile"] = result["ratio_point_tile"] <= TARGET
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    res = run(workers=int(argv[0]) if argv else 2)
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("timings")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
