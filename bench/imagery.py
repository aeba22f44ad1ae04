"""Benchmark: the orthophoto layer (XYZ pyramid + COG) today vs before, vs gdal2tiles, and incremental.

On one generated 1 km² demo orthophoto (16 DOP tiles of 250 m, 20 cm by default; `--dop-res 0.1` for
the 10 cm Geobasis NRW delivers since 2023), in one run, on a local Dask cluster of 2 workers:

1. `before`: the pyramid as it was before issue 17 (one GDAL warp per XYZ tile at every zoom straight
   from the sources, Pillow PNG at zlib level 6; COG through `read_grid` blocks and a DEFLATE temporary),
   kept here verbatim for the comparison;
2. `clean`: `build_imagery` from an empty cache and no previous release;
3. `unchanged`: again, with the clean build as the previous release (everything reused);
4. `one_tile`: after one of the 16 DOP tiles changed (a 40 m square repainted), with the clean build as
   the previous release; its output is compared byte for byte with a clean build of the changed data;
5. `gdal2tiles.py --processes 2` (Debian gdal-bin) on a VRT of the same tiles (RGB bands), same zooms.

Wall seconds and CPU seconds (user+sys of this process, the Dask workers and child processes: the machine
may be shared, CPU time is the steadier figure). Writes bench/results/imagery.json.
Run: `.venv/bin/python -m bench.imagery [--dop-res 0.2] [--raw DIR] [--keep] [--out JSON]`
(`bench/results/imagery_10cm.json`: `--dop-res 0.1 --out bench/results/imagery_10cm.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "imagery.json"

CONFIG = """\
name: imagery-bench
paths: {{raw: raw, out: out, cache: {cache}}}
crs: {{horizontal: "EPSG:25832", vertical: "EPSG:7837", frame_origin: [362500.0, 5716500.0, 0.0]}}
runtime: {{workers: 2, memory: 1GB, progress: false}}
sources:
  orthophoto: {{path: dop/*.tif, bands: {{red: 1, green: 2, blue: 3, nir: 4}}}}
"""


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall and CPU seconds of a block: this process + the Dask workers + waited-for children."""

    def __init__(self, client: Any):
        self.client = client

    def _workers(self) -> float:
        return sum(self.client.run(_cpu_self).values()) if self.client is not None else 0.0

    def __enter__(self) -> Meter:
        self.w0, self.s0, self.c0, self.t0 = (
            self._workers(),
            _cpu_self(),
            _cpu_children(),
            time.perf_counter(),
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = (self._workers() - self.w0) + (_cpu_self() - self.s0) + (_cpu_children() - self.c0)

    def json(self) -> dict[str, float]:
        return {"wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2)}


def _context(root: Path, name: str, cache: Path, previous: Path | None):
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.crs import project_frame
    from pipeline.model import BuildContext
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.orchestrate.reuse import ReuseState

    cfg_path = root / f"{name}.yaml"
    cfg_path.write_text(CONFIG.format(cache=cache))
    cfg = load_config(cfg_path)
    release = root / "out" / name
    shutil.rmtree(release, ignore_errors=True)
    (root / f"{name}.log.jsonl").unlink(missing_ok=True)
    release.mkdir(parents=True)
    ctx = BuildContext(
        cfg=cfg,
        build_id=name,
        release_dir=release,
        frame=project_frame(cfg.crs),
        inputs=scan_inputs(cfg),
        log=BuildLog(root / f"{name}.log.jsonl", quiet=True),
        previous_release=previous,
    )
    ctx.reuse = ReuseState.open(release, [previous] if previous else [])
    return ctx


# ---- the pyramid and COG as they were before issue 17 (for the comparison only) -------------------


def _before_level(infos, zoom, tiles, rgb):
    from pipeline.stages.imagery import xyz_tile

    return [(x, y, png) for x, y in tiles if (png := xyz_tile(infos, zoom, x, y, rgb)) is not None]


def _before_cog(infos, grid, path: Path, block: int = 2048) -> None:
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    from pipeline.sources.rasters import Grid, read_grid
    from pipeline.stages.imagery import ortho_scale, to_uint8

    bands, scale = infos[0].count, ortho_scale(infos)
    src_tmp, tmp = path.with_name(".before.src.tif"), path.with_name(".before.tmp")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": bands,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "DEFLATE",
    }
    with rasterio.open(src_tmp, "w", **profile) as ds:
        for r0 in range(0, grid.height, block):
            for c0 in range(0, grid.width, block):
                h, w = min(block, grid.height - r0), min(block, grid.width - c0)
                sub = Grid(grid.transform * Affine.translation(c0, r0), w, h, grid.crs)
                r = read_grid(infos, sub, resampling=Resampling.nearest)
                data = np.where(r.valid[None], np.maximum(to_uint8(r.data, scale), 1), 0).astype(np.uint8)
                ds.write(data, window=Window(c0, r0, w, h))
    with rasterio.open(src_tmp) as src:
        rio_copy(
            src, str(tmp), driver="COG", compress="DEFLATE", blocksize=256, overview_resampling="average"
        )
    tmp.replace(path)
    src_tmp.unlink()


def _plan(ctx):
    from rasterio.warp import transform_bounds

    from pipeline.crs import parse_crs
    from pipeline.orchestrate.terrain import ortho_infos
    from pipeline.sources.rasters import Grid, delivery_bounds, native_resolution
    from pipeline.stages.imagery import zoom_range

    cfg = ctx.cfg
    infos = ortho_infos(cfg, [i.path for i in ctx.inputs_for("orthophoto")])
    bounds = delivery_bounds(infos, cfg.crs.horizontal)
    ll = transform_bounds(parse_crs(cfg.crs.horizontal).to_wkt(), "EPSG:4326", *bounds, densify_pts=21)
    lay = cfg.layers.terrain
    zmin, zmax = zoom_range(ll, lay.imagery_min_res_m, lay.imagery_min_zoom, lay.imagery_max_zoom)
    grid = Grid.from_bounds(bounds, native_resolution(infos), cfg.crs.horizontal)
    return infos, ll, zmin, zmax, grid


def _before(ctx) -> dict[str, Any]:
    from pipeline.orchestrate.terrain import run_tasks
    from pipeline.stages.imagery import tiles_for
    from pipeline.tiles.tileset import write_atomic

    infos, ll, zmin, zmax, grid = _plan(ctx)
    rgb = [1, 2, 3]
    out: dict[str, Any] = {}
    with Meter(ctx.client) as m:
        calls, zs = [], []
        for z in range(zmin, zmax + 1):
            level = tiles_for(ll, z)
            for i in range(0, len(level), 32):
                zs.append(z)
                calls.append(((infos, z, level[i : i + 32], rgb), {}))
        n = 0
        for z, part in zip(zs, run_tasks(ctx, _before_level, calls, "before-xyz"), strict=True):
            for x, y, png in part:
                write_atomic(ctx.release_dir / "imagery" / "xyz" / str(z) / str(x) / f"{y}.png", png)
                n += 1
    out["xyz"] = m.json() | {"tiles": n}
    with Meter(ctx.client) as m:
        _before_cog(infos, grid, ctx.release_dir / "imagery" / "orthophoto_cog.tif")
    out["cog"] = m.json()
    out["total"] = {k: round(out["xyz"][k] + out["cog"][k], 2) for k in ("wall_s", "cpu_s")}
    return out


def _build(ctx) -> tuple[dict[str, Any], Any]:
    from pipeline.orchestrate.reuse import reuse_stats
    from pipeline.orchestrate.terrain import build_imagery

    with Meter(ctx.client) as m:
        res = build_imagery(ctx)
    ctx.reuse.write_index()
    ctx.log.close()
    ev = [json.loads(line) for line in ctx.log.path.read_text().splitlines()]
    xyz = next(e for e in ev if e["event"] == "imagery_xyz")
    return m.json() | {
        "tiles": res.stats["xyz_tiles"],
        "tiles_built": xyz["built"],
        "tiles_reused": xyz["reused"],
        "warp_blocks": xyz["warp_blocks"],
        "files_reused": reuse_stats(ctx)["files_reused"],
    }, res


def _xyz_only(ctx) -> dict[str, Any]:
    """The new pyramid alone (no COG), for the comparison with gdal2tiles."""
    from pipeline.orchestrate.imagery import build_xyz_pyramid

    infos, ll, zmin, zmax, _grid = _plan(ctx)
    with Meter(ctx.client) as m:
        r = build_xyz_pyramid(ctx, infos, [1, 2, 3], ll, zmin, zmax)
    return m.json() | {"tiles": len(r.files)}


def _gdal2tiles(raw: Path, work: Path, zmin: int, zmax: int) -> dict[str, Any]:
    exe = shutil.which("gdal2tiles.py") or shutil.which("gdal2tiles")
    if exe is None or shutil.which("gdalbuildvrt") is None:
        return {"skipped": "gdal2tiles.py / gdalbuildvrt not installed (apt-get install gdal-bin)"}
    vrt = work / "dop_rgb.vrt"
    subprocess.run(
        [
            "gdalbuildvrt",
            "-q",
            "-b",
            "1",
            "-b",
            "2",
            "-b",
            "3",
            str(vrt),
            *sorted(map(str, raw.glob("dop/*.tif"))),
        ],
        check=True,
    )
    out = work / "gdal2tiles"
    shutil.rmtree(out, ignore_errors=True)
    version = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.strip()
    cmd = [exe, "--processes", "2", "-z", f"{zmin}-{zmax}", "--xyz", "-w", "none", "-q", str(vrt), str(out)]
    with Meter(None) as m:
        subprocess.run(cmd, check=True)
    tiles = sum(1 for _ in out.rglob("*.png"))
    return m.json() | {"tiles": tiles, "command": " ".join(cmd[1:]), "gdal": version}


def _touch_one_tile(raw: Path) -> str:
    """Repaint a 40 m square in the middle of one DOP tile (same header, new content)."""
    import numpy as np
    import rasterio

    files = sorted(raw.glob("dop/*.tif"))
    f = files[len(files) // 3]
    with rasterio.open(f) as ds:
        profile, data = ds.profile, ds.read()
    n = round(40 / profile["transform"].a)
    r0, c0 = data.shape[1] // 2 - n // 2, data.shape[2] // 2 - n // 2
    data[:, r0 : r0 + n, c0 : c0 + n] = np.array([200, 30, 30, 90], dtype=np.uint8)[
        : data.shape[0], None, None
    ]
    with rasterio.open(f, "w", **profile) as ds:
        ds.write(data)
    return f.name


def _same_files(a: Path, b: Path) -> dict[str, Any]:
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file() and ".twin" not in p.parts)
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and ".twin" not in p.parts)
    diff = [r for r in fa if r in fb and (a / r).read_bytes() != (b / r).read_bytes()]
    return {
        "files": len(fa),
        "same_list": fa == fb,
        "different": diff[:10],
        "identical": fa == fb and not diff,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.imagery")
    ap.add_argument("--dop-res", type=float, default=0.2)
    ap.add_argument("--raw", type=Path, help="use this demo's dop/ (16 tiles) instead of generating one")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument(
        "--out", type=Path, default=RESULTS, help="result JSON (default bench/results/imagery.json)"
    )
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])

    from pipeline.runtime import dask_client

    root = Path(tempfile.mkdtemp(prefix="twin-bench-imagery-"))
    try:
        raw = root / "raw"
        if args.raw:
            shutil.copytree(args.raw / "dop", raw / "dop")
        else:
            from pipeline.sources.demo import generate_demo

            t = time.perf_counter()
            full = root / "demo"
            generate_demo(
                full,
                size_m=1000,
                tile_m=250,
                density=0.5,
                mobile=False,
                progress=False,
                dop_resolution=args.dop_res,
            )
            shutil.copytree(full / "dop", raw / "dop")
            shutil.rmtree(full)
            print(f"demo generated in {time.perf_counter() - t:.1f} s", flush=True)
        n_tiles = len(list(raw.glob("dop/*.tif")))
        res: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg": os.getloadavg(),
            },
            "district_km2": 1.0,
            "dop_tiles": n_tiles,
            "dop_resolution_m": args.dop_res,
        }
        cfg = None
        with dask_client(
            _context(root, "probe", root / "cache-probe", None).cfg.runtime, workers=2
        ) as client:
            client.run(lambda: __import__("pipeline.stages.imagery"))
            # warm the workers (imports, numba cache) so no variant pays them alone
            client.run(lambda: __import__("pipeline.stages._imagery_kernels"))
            ctx = _context(root, "before", root / "cache-before", None)
            ctx.client = client
            _infos, _ll, zmin, zmax, grid = _plan(ctx)
            res["zooms"] = [zmin, zmax]
            res["cog_px"] = [grid.width, grid.height]
            print("before ...", flush=True)
            res["before"] = _before(ctx)
            print(res["before"], flush=True)
            ctx = _context(root, "xyz_only", root / "cache-xyz", None)
            ctx.client = client
            res["xyz_only"] = _xyz_only(ctx)
            print("xyz_only", res["xyz_only"], flush=True)
            ctx = _context(root, "clean", root / "cache", None)
            ctx.client = client
            res["clean"], _ = _build(ctx)
            print("clean", res["clean"], flush=True)
            clean_dir = ctx.release_dir
            ctx = _context(root, "unchanged", root / "cache", clean_dir)
            ctx.client = client
            res["unchanged"], _ = _build(ctx)
            print("unchanged", res["unchanged"], flush=True)
            res["changed_tile"] = _touch_one_tile(raw)
            ctx = _context(root, "one_tile", root / "cache", clean_dir)
            ctx.client = client
            res["one_tile"], _ = _build(ctx)
            print("one_tile", res["one_tile"], flush=True)
            inc_dir = ctx.release_dir
            ctx = _context(root, "clean_changed", root / "cache-changed", None)
            ctx.client = client
            res["clean_changed"], _ = _build(ctx)
            res["one_tile_equals_clean"] = _same_files(inc_dir / "imagery", ctx.release_dir / "imagery")
            cfg = ctx.cfg
        res["gdal2tiles"] = _gdal2tiles(raw, root, zmin, zmax)
        print("gdal2tiles", res["gdal2tiles"], flush=True)
        b, c = res["before"]["total"], res["clean"]
        res["speedup_vs_before"] = {
            "layer_wall": round(b["wall_s"] / c["wall_s"], 2),
            "layer_cpu": round(b["cpu_s"] / c["cpu_s"], 2),
            "xyz_wall": round(res["before"]["xyz"]["wall_s"] / res["xyz_only"]["wall_s"], 2),
            "xyz_cpu": round(res["before"]["xyz"]["cpu_s"] / res["xyz_only"]["cpu_s"], 2),
        }
        g = res["gdal2tiles"]
        if "wall_s" in g:
            res["ours_vs_gdal2tiles"] = {
                "xyz_wall_ratio": round(res["xyz_only"]["wall_s"] / g["wall_s"], 2),
                "xyz_cpu_ratio": round(res["xyz_only"]["cpu_s"] / g["cpu_s"], 2),
            }
        res["one_tile_fraction_of_clean"] = {
            k: round(res["one_tile"][k] / c[k], 3) for k in ("wall_s", "cpu_s")
        }
        del cfg
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")
        print(json.dumps(res, indent=1, default=str))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
