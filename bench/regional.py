"""Benchmark: regional builds at realistic NRW densities (issue 17's bars, measured in one run).

For each district size (default 1, 4 and 16 km²) the demo generator writes a district with 1 km NRW tiles
(`3dm_32_<E>_<N>_1_nw_<year>.laz`, `dop10rgbi_...`, `dgm1_...`), DOP at 10 cm and aerial points at
`--density` pulses/m² (default 10, 10-25 is what recent NRW flights deliver); then `twin build` runs in a
child process with an empty out/ and cache/. Measured per size:

- wall time and CPU time (user + sys of the build and every worker it reaped) of the clean build, per km²;
- time per stage (the manifest's `timings`), per km²;
- peak RSS of the largest process (the build or one of its workers, as GNU time reports it);
- release size per km² (every file of the published release, bytes as stored) next to the raw deliveries.

Optional parts (each costs at least one more build of the district):

- `--incremental SIZE`: on the SIZE km² district, change one tile of each input kind in turn (aerial LAZ:
  a 10 m patch raised by 4 m; DGM: a 10 x 10 cell bump of 2 m; DOP: a 10 x 10 pixel patch; cadastre: one
  building footprint moved by 0.5 m) and rebuild after each change; the ratio to the clean build is the
  bar (<= 20 %). Then a clean build of the changed inputs into a fresh out/ and cache/ is compared file by
  file with the incremental release (manifest, report and the build's own bookkeeping excluded).
- `--scaling SIZE`: clean builds of the SIZE km² district with 1 and with 2 local workers (bar: >= 1.7x).
- `--scheduler tcp://HOST:PORT`: also a clean build of every size on that existing Dask cluster;
  `--scheduler local`: on a cluster this bench starts by hand for that build, the way one is started on a
  real cluster (`dask scheduler` and `dask worker --nworkers W --nthreads 1`, both with `--preload
  pipeline.cluster_preload`, on 127.0.0.1; W = `--workers` or one per CPU) and stops after it; its
  CPU and peak RSS are counted with the build's (an existing cluster's are not).

The first clean build of a size serves as the incremental runs' base and as the scaling run with the same
number of workers (`--workers`), so no identical build is run twice; the other scaling build and the
external one run right after it (into an out/ and cache/ of their own), before the incremental runs
change the inputs. `--keep` leaves each district in `--work`; `--reuse`
builds such a district again without generating it (with the options it was generated with; after
`--incremental` its inputs carry the changed tiles).

Writes bench/results/regional.json (one record per run, the bars evaluated). No timing assertions in tests.

    .venv/bin/python -m bench.regional                       # 1, 4, 16 km², no incremental/scaling
    .venv/bin/python -m bench.regional --sizes 1 4 --incremental 4 --scaling 4
    .venv/bin/python -m bench.run regional                    # the same through `make bench` (defaults)

The machine's load is recorded with the figures: on a shared machine, compare the CPU times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.incremental import change_point_tile, change_raster_tile

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "regional.json"
# the bars of issue 17
BAR_S_PER_KM2 = 35.0
BAR_SIZE_DRIFT = 0.20
BAR_INCREMENTAL = 0.20
BAR_TWO_WORKERS = 1.7
# files of a release that legitimately differ between two builds of the same inputs (build bookkeeping:
# timings, dates, the build log); everything else must be byte-identical
VOLATILE = ("manifest.json", "report/", "nightly_report/", ".twin/", "build.log", "last-build.json")


def _config_text() -> str:
    return (REPO / "configs" / "demo.yaml").read_text()


def _generate(root: Path, km2: float, tile_m: float, density: float, dop_res: float) -> tuple[Path, float]:
    from pipeline.sources.demo import generate_demo

    raw = root / "data" / "raw"
    side = math.sqrt(km2) * 1000.0
    t0 = time.perf_counter()
    generate_demo(raw, size_m=side, tile_m=tile_m, density=density, dop_resolution=dop_res, progress=False)
    dt = time.perf_counter() - t0
    (root / "configs").mkdir(parents=True, exist_ok=True)
    cfg = root / "configs" / "bench.yaml"
    cfg.write_text(_config_text())
    return cfg, dt


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _timer() -> str:
    # GNU time measures from a small process of its own: a child forked from this (large) bench process
    # would report this process's memory high-water mark as its own (Linux keeps it across exec)
    timer = shutil.which("time") or "/usr/bin/time"
    if not Path(timer).is_file():
        raise SystemExit("bench.regional needs GNU time (Debian package `time`) to measure peak RSS")
    return timer


def _rusage(stderr: str) -> tuple[float, float]:
    """(user + sys seconds, peak RSS MB) from GNU time's TWIN-RUSAGE line."""
    line = next((ln for ln in reversed(stderr.splitlines()) if ln.startswith("TWIN-RUSAGE ")), None)
    if line is None:
        raise SystemExit(f"bench: no GNU time figures in the process's output:\n{stderr[-2000:]}")
    user, sys_, max_kb = (float(v) for v in line.split()[1:])
    return user + sys_, max_kb / 1024.0


def _build(cfg: Path, workers: int | None, scheduler: str | None = None) -> dict[str, Any]:
    """One `twin build` in a child process; wall, CPU and the peak RSS of the largest process it reaped.
    `scheduler="local"`: on a cluster started here for it (`_own_cluster`), whose processes are counted."""
    if scheduler == "local":
        with _own_cluster(cfg.parent, workers) as (address, usage):
            r = _build(cfg, None, address)
        cpu, rss = zip(*usage, strict=True)
        return r | {
            "cpu_s": round(r["cpu_s"] + sum(cpu), 2),
            "peak_rss_mb": round(max(r["peak_rss_mb"], *rss), 1),
        }
    cmd = [str(Path(sys.executable).with_name("twin")), "build", str(cfg), "--quiet"]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    elif workers:
        cmd += ["--jobs", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run([_timer(), "-f", "TWIN-RUSAGE %U %S %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"twin build {cfg} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    cpu, rss = _rusage(proc.stderr)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(rss, 1)}


@contextlib.contextmanager
def _own_cluster(
    work: Path, workers: int | None, preload: bool = True
) -> Iterator[tuple[str, list[tuple[float, float]]]]:
    """`dask scheduler` + `dask worker --nworkers W --nthreads 1` on 127.0.0.1, both with the preload
    `pipeline.cluster_preload`, each under GNU time; yields (address, usage) and fills `usage` with
    (CPU s, peak RSS MB) of the scheduler and the workers once they are stopped (SIGTERM). `preload=False`:
    Dask's default settings (for comparison)."""
    import psutil

    dask_cli = str(Path(sys.executable).with_name("dask"))
    sched_file = work / "bench-scheduler.json"
    sched_file.unlink(missing_ok=True)
    from pipeline.runtime import default_workers

    n = workers or default_workers()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    timed = [_timer(), "-f", "TWIN-RUSAGE %U %S %M", dask_cli]
    logs = [work / "bench-scheduler.log", work / "bench-workers.log"]  # Dask's logs, then GNU time's line

    def start(args: list[str], log: Path) -> subprocess.Popen:
        with log.open("w") as f:
            return subprocess.Popen([*timed, *args], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=f)

    sched_args = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)]
    pre = ["pipeline.cluster_preload"] if preload else []
    procs = [start(["scheduler", *sched_args, *(f"--preload={m}" for m in pre)], logs[0])]
    usage: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise SystemExit("bench: dask scheduler did not start")
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        worker_args = ["--nworkers", str(n), "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
        procs.append(
            start(["worker", address, *worker_args, *(f"--preload-nanny={m}" for m in pre)], logs[1])
        )
        from distributed import Client

        with Client(address, timeout="60s") as c:
            c.wait_for_workers(n, timeout=120)
        yield address, usage
    finally:
        for p in reversed(procs):  # the dask process under each GNU time, workers first
            with contextlib.suppress(psutil.NoSuchProcess):  # (a scheduler that did not start has ended)
                for child in psutil.Process(p.pid).children():
                    child.terminate()
        for p, log in zip(procs, logs, strict=False):
            p.wait(timeout=60)
            usage.append(_rusage(log.read_text()))


def _build_elsewhere(
    root: Path, cfg: Path, label: str, workers: int | None, scheduler: str | None = None
) -> dict[str, Any]:
    """A clean build into an out/ and cache/ of its own (removed after it): the district's own stay for
    the incremental runs."""
    out, cache = root / "data" / f"out-{label}", root / "data" / f"cache-{label}"
    r = _build(_with_paths(cfg, out, cache), workers, scheduler)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return r


def _release(root: Path) -> Path:
    return (root / "data" / "out" / "current").resolve()


def _manifest(release: Path) -> dict[str, Any]:
    return json.loads((release / "manifest.json").read_text())


def _per_km2(d: dict[str, float], km2: float) -> dict[str, float]:
    return {k: round(v / km2, 2) for k, v in d.items() if isinstance(v, int | float)}


def _with_paths(cfg: Path, out: Path, cache: Path) -> Path:
    """A copy of the bench config writing to another out/ and cache/ (same raw inputs)."""
    text = cfg.read_text()
    text = text.replace("out: ../data/out", f"out: {out}").replace("cache: ../data/cache", f"cache: {cache}")
    if f"out: {out}" not in text or f"cache: {cache}" not in text:
        raise SystemExit("bench: configs/demo.yaml no longer has `out: ../data/out` / `cache: ../data/cache`")
    p = cfg.with_name(cfg.stem + "-" + out.name + ".yaml")
    p.write_text(text)
    return p


# -- changes of one input tile per kind ------------------------------------------------------------------


def _change_cadastre(gpkg: Path, tile_centre: tuple[float, float]) -> str:
    """Move the footprint nearest to `tile_centre` by 0.5 m east; returns its id."""
    import geopandas as gpd
    import pyogrio
    from shapely import affinity
    from shapely.geometry import Point

    layers = [str(n) for n, _ in pyogrio.list_layers(gpkg)]
    layer = next(
        n for n in layers if "gebaeude" in n.lower() or "gebauede" in n.lower() or "building" in n.lower()
    )
    gdf = gpd.read_file(gpkg, layer=layer)
    i = int(gdf.geometry.distance(Point(*tile_centre)).idxmin())
    gdf.loc[i, "geometry"] = affinity.translate(gdf.geometry.loc[i], xoff=0.5)
    tmp = gpkg.with_name(gpkg.stem + ".tmp.gpkg")
    shutil.copy2(gpkg, tmp)
    gdf.to_file(tmp, layer=layer, driver="GPKG")
    os.replace(tmp, gpkg)
    idcol = next((c for c in gdf.columns if c.lower() in ("gml_id", "id", "oid")), None)
    return str(gdf.loc[i, idcol]) if idcol else str(i)


def _middle(paths: list[Path]) -> Path:
    return sorted(paths)[len(paths) // 2]


def _diff_releases(a: Path, b: Path) -> list[str]:
    def files(root: Path) -> dict[str, Path]:
        return {
            str(p.relative_to(root)): p
            for p in root.rglob("*")
            if p.is_file()
            and not any(str(p.relative_to(root)).startswith(v) or p.name == v for v in VOLATILE)
        }

    fa, fb = files(a), files(b)
    out = sorted(set(fa) ^ set(fb))
    out += sorted(k for k in set(fa) & set(fb) if fa[k].read_bytes() != fb[k].read_bytes())
    return out


def _incremental(root: Path, cfg: Path, full: dict[str, Any], workers: int | None) -> dict[str, Any]:
    raw = root / "data" / "raw"
    res: dict[str, Any] = {"clean_s": full["wall_s"], "clean_cpu_s": full["cpu_s"], "changes": {}}
    aerial_epochs = sorted(p for p in (raw / "aerial").iterdir() if p.is_dir())
    kinds: list[tuple[str, Path, Any]] = [
        ("aerial_laz", _middle(list(aerial_epochs[-1].glob("*.laz"))), change_point_tile),
        ("dgm", _middle(list((raw / "dgm").glob("*.tif"))), lambda p: change_raster_tile(p, 2)),
        ("dop", _middle(list((raw / "dop").glob("*.tif"))), lambda p: change_raster_tile(p, 40)),
    ]
    for kind, path, change in kinds:
        change(path)
        r = _build(cfg, workers)
        res["changes"][kind] = {"file": path.name, **r, "ratio": round(r["wall_s"] / full["wall_s"], 3)}
    gpkgs = sorted((raw / "alkis").glob("*.gpkg"))
    if gpkgs:
        dgm = _middle(list((raw / "dgm").glob("*.tif")))
        import rasterio

        with rasterio.open(dgm) as ds:
            b = ds.bounds
        bid = _change_cadastre(gpkgs[0], ((b.left + b.right) / 2, (b.bottom + b.top) / 2))
        r = _build(cfg, workers)
        res["changes"]["cadastre"] = {"building": bid, **r, "ratio": round(r["wall_s"] / full["wall_s"], 3)}
    clean_cfg = _with_paths(cfg, root / "data" / "out-clean", root / "data" / "cache-clean")
    _build(clean_cfg, workers)
    diff = _diff_releases(_release(root), (root / "data" / "out-clean" / "current").resolve())
    res["identical_to_clean_build"] = not diff
    res["differing_files"] = diff[:50]
    res["meets_bar"] = all(c["ratio"] <= BAR_INCREMENTAL for c in res["changes"].values()) and not diff
    return res


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    from pipeline.release.manifest import pipeline_fingerprint

    # one pipeline version for every build of the run, whatever happens in the work tree meanwhile
    os.environ.setdefault("TWIN_FINGERPRINT", "bench-" + pipeline_fingerprint().split("+", 1)[1])
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
        "density_pts_m2": args.density,
        "dop_resolution_m": args.dop_res,
        "tile_m": args.tile_m,
        "workers": args.workers,
        "sizes": {},
    }
    for km2 in args.sizes:
        root = work / f"{km2:g}km2"
        gen_s: float | None = None
        if args.reuse and (root / "configs" / "bench.yaml").is_file():  # a --keep run's district
            cfg = root / "configs" / "bench.yaml"
            for d in root.glob("data/*"):
                if d.name != "raw":
                    shutil.rmtree(d)
        else:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            print(f"regional: generating {km2:g} km² ...", flush=True)
            cfg, gen_s = _generate(root, km2, args.tile_m, args.density, args.dop_res)
        raw_bytes = _tree_bytes(root / "data" / "raw")
        print(f"regional: building {km2:g} km² ...", flush=True)
        full = _build(cfg, args.workers)
        rel = _release(root)
        timings = _manifest(rel).get("timings", {})
        rec: dict[str, Any] = {
            "generate_s": round(gen_s, 1) if gen_s is not None else "reused",
            **full,
            "s_per_km2": round(full["wall_s"] / km2, 2),
            "cpu_s_per_km2": round(full["cpu_s"] / km2, 2),
            "stage_s": timings,
            "stage_s_per_km2": _per_km2(timings, km2),
            "raw_mb_per_km2": round(raw_bytes / km2 / 1e6, 1),
            "release_mb_per_km2": round(_tree_bytes(rel) / km2 / 1e6, 1),
        }
        if args.scaling is not None and math.isclose(km2, args.scaling):
            from pipeline.runtime import default_workers

            one: dict[str, Any] = {}
            for w in (1, 2):
                if w == (args.workers or default_workers()):  # the clean build above was this one
                    one[str(w)] = {**full, "same_as": "the clean build"}
                else:
                    one[str(w)] = _build_elsewhere(root, cfg, f"{w}w", w)
            one["speedup_2_vs_1"] = round(one["1"]["wall_s"] / one["2"]["wall_s"], 2)
            one["meets_bar"] = one["speedup_2_vs_1"] >= BAR_TWO_WORKERS
            rec["scaling"] = one
        if args.scheduler:
            rec["external_scheduler"] = _build_elsewhere(root, cfg, "external", args.workers, args.scheduler)
            rec["external_scheduler"]["speedup"] = round(
                full["wall_s"] / rec["external_scheduler"]["wall_s"], 2
            )
        if args.incremental is not None and math.isclose(km2, args.incremental):
            rec["incremental"] = _incremental(root, cfg, full, args.workers)
        result["sizes"][f"{km2:g}"] = rec
        print(json.dumps({k: v for k, v in rec.items() if "stage" not in k}, indent=1), flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sizes = result["sizes"]
    s_km2 = {k: v["s_per_km2"] for k, v in sizes.items()}
    rss = {k: v["peak_rss_mb"] for k, v in sizes.items()}
    result["bars"] = {
        "s_per_km2_at_largest": s_km2[max(sizes, key=float)] if sizes else None,
        "meets_35_s_per_km2": bool(sizes) and s_km2[max(sizes, key=float)] <= BAR_S_PER_KM2,
        "per_km2_drift_largest_vs_smallest": (
            round(s_km2[max(sizes, key=float)] / s_km2[min(sizes, key=float)] - 1, 3)
            if len(sizes) > 1
            else None
        ),
        "peak_rss_drift_largest_vs_smallest": (
            round(rss[max(sizes, key=float)] / rss[min(sizes, key=float)] - 1, 3) if len(sizes) > 1 else None
        ),
    }
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return result


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench.regional", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1.0, 4.0, 16.0], help="district sizes in km²")
    ap.add_argument("--density", type=float, default=10.0, help="aerial pulses per m² (NRW: 10-25)")
    ap.add_argument("--dop-res", type=float, default=0.1, help="orthophoto pixel size in m (NRW DOP10: 0.1)")
    ap.add_argument("--tile-m", type=float, default=1000.0, help="delivery tile size (NRW: 1000 m)")
    ap.add_argument("--workers", type=int, default=None, help="local workers (default: one per CPU)")
    ap.add_argument(
        "--incremental", type=float, default=None, metavar="KM2", help="incremental runs at this size"
    )
    ap.add_argument("--scaling", type=float, default=None, metavar="KM2", help="1 vs 2 workers at this size")
    ap.add_argument(
        "--scheduler",
        default=None,
        help="also build on this Dask scheduler (tcp://HOST:PORT), or `local`: on one started here for it",
    )
    ap.add_argument("--work", default=str(REPO / "data" / "bench" / "regional"), help="scratch folder")
    ap.add_argument("--keep", action="store_true", help="keep each district's data and release")
    ap.add_argument(
        "--reuse", action="store_true", help="build the districts a --keep run left in --work (same options)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    res = run(parse(sys.argv[1:] if argv is None else argv))
    print(json.dumps(res["bars"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
