"""Benchmark: point tiling throughput, memory and the decode floor; ours vs py3dtiles.

    .venv/bin/python -m bench.points [--workers 2] [--district-points 100000000] [--skip-py3dtiles]
                                      [--skip-district-py3dtiles] [--skip-district] [--data DIR]
    .venv/bin/python -m bench.points --quick [--repeat 3]   # Autzen only: floor + ours, nothing written
    .venv/bin/python -m bench.points --ratio 2              # Autzen only: ours/py3dtiles/ours rounds

1. Autzen (../shared/realdata/autzen/autzen_10M.laz, 10.65 M points): `twin points` with N workers,
   `py3dtiles convert --srs_out 4978 --jobs N --color_scale 1 --srs_in 2994`, and the decode floor (every
   chunk of the file decompressed by lazrs on N spawned processes, all fields, nothing else).
2. A synthetic district of >= 100 M points in 1 km LAZ tiles (generated once into --data): ours, the floor
   and py3dtiles (CRS read from the files: `--srs_in` must match them; about 10 minutes; skip it with
   `--skip-district-py3dtiles`).

`--quick` measures only the Autzen floor and ours (`--repeat N` times, alternating, best of N) and prints
the ratio without touching the results file or the docs: for comparing changes on a noisy machine.

Wall times are of the whole command (process start, cluster start, writing); peak RSS is the sum over the
process tree (main, scheduler, workers), sampled every 0.1 s. Writes bench/results/points.json and the table
in docs/pointcloud.md (between the BENCH markers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "points.json"
DOC = REPO / "docs" / "pointcloud.md"
AUTZEN = REPO.parent / "shared" / "realdata" / "autzen" / "autzen_10M.laz"
BIN = Path(sys.executable).parent


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += q.memory_info().rss
    return total


def run_measured(cmd: list[str], timeout: float = 3600) -> dict:
    """Run a command; wall seconds, peak RSS of its process tree, exit code, stdout."""
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            stop.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    stop.set()
    th.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {
        "cmd": " ".join(cmd),
        "seconds": round(time.perf_counter() - t0, 2),
        # children that were waited for: for `twin points` only the launcher (its workers are children of
        # the pool's fork server, which nobody waits for); complete for py3dtiles' process tree
        "cpu_seconds": round(cpu, 2),
        "peak_rss_bytes": peak,
        "returncode": proc.returncode,
        "stdout": out,
        "stderr_tail": err[-2000:],
    }


# ---- decode floor -------------------------------------------------------------------------------------


def _decode_units(args: tuple[list, list]) -> int:
    from pipeline.sources.pointcloud.las import decode_raw

    infos, units = args
    n = 0
    for u in units:
        n += len(decode_raw(infos[u.file_index], u))
    return n


def decode_floor(files: list[Path], workers: int) -> dict:
    """Decompress every chunk of the files (all fields) on `workers` spawned processes."""
    import multiprocessing as mp

    from pipeline.sources.pointcloud.header import plan_units, scan_file

    infos = [scan_file(f) for f in files]
    units = plan_units(infos)
    shares = [(infos, units[i::workers]) for i in range(workers)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_decode_units, [(infos, units[:1])] * workers)  # warm up imports
        t0 = time.perf_counter()
        n = sum(pool.map(_decode_units, shares))
        dt = time.perf_counter() - t0
    return {"points": n, "seconds": round(dt, 2), "points_per_second": round(n / dt)}


# ---- ours / py3dtiles -------------------------------------------------------------------------------


def run_ours(files: list[Path], out: Path, workers: int, extra: list[str]) -> dict:
    from pipeline.stages.points.kernels import warm_all

    warm_all()  # numba's on-disk cache is current: no timed run compiles (a one-time cost per code change)
    cmd = [str(BIN / "twin"), "points", *map(str, files), "--out", str(out), "--jobs", str(workers), "--json"]
    r = run_measured(cmd + extra)
    if r["returncode"] != 0:
        raise RuntimeError(f"twin points failed: {r['stderr_tail']}")
    summary = json.loads(r["stdout"])
    n = summary["points_in"]
    return {
        "points": n,
        "seconds": r["seconds"],
        "seconds_in_library": summary["seconds"],
        "cpu_seconds": r["cpu_seconds"],
        "points_per_second": round(n / r["seconds"]),
        "peak_rss_bytes": r["peak_rss_bytes"],
        "peak_rss_library_bytes": summary["peak_rss_bytes"],
        "tiles": summary["tiles"],
        "depth": summary["depth"],
        "bins": summary["bins"],
        "phases": summary["phases"],
        "cmd": r["cmd"],
    }


def run_py3dtiles(file: Path, out: Path, workers: int, srs_in: str | None) -> dict:
    return run_py3dtiles_files([file], out, workers, srs_in)


def run_py3dtiles_files(files: list[Path], out: Path, workers: int, srs_in: str | None) -> dict:
    cmd = [str(BIN / "py3dtiles"), "convert", *map(str, files), "--out", str(out), "--overwrite"]
    cmd += ["--srs_out", "4978", "--jobs", str(workers), "--color_scale", "1"]
    if srs_in:
        cmd += ["--srs_in", srs_in]
    r = run_measured(cmd, timeout=7200)
    res = {k: r[k] for k in ("cmd", "seconds", "peak_rss_bytes", "returncode")}
    if r["returncode"] != 0:
        res["error"] = r["stderr_tail"]
    return res


# ---- synthetic district ----------------------------------------------------------------------------------


def district(data: Path, total_points: int, per_tile: int = 4_000_000) -> list[Path]:
    """1 km x 1 km LAZ tiles of `per_tile` points (4 pts/m2) in EPSG:25832+7837, generated once."""
    from tests._synthetic_las import synthetic_points, write_las

    n_tiles = -(-total_points // per_tile)
    side = int(n_tiles**0.5 + 0.999)
    files = []
    data.mkdir(parents=True, exist_ok=True)
    for i in range(n_tiles):
        ex, ny = 362 + i % side, 5702 + i // side
        f = data / f"3dm_32_{ex}_{ny}_1_nw.laz"
        if not f.is_file():
            pts = synthetic_points(per_tile, x0=ex * 1000.0, y0=ny * 1000.0, size=1000.0, seed=i)
            tmp = f.with_suffix(".tmp.laz")
            write_las(tmp, pts, point_format=1, scale=0.01)
            os.replace(tmp, f)
            print(f"  generated {f.name}", flush=True)
        files.append(f)
    return files


# ---- report ----------------------------------------------------------------------------------------------


def _table(res: dict) -> str:
    rows = [
        "| data set | tool | points | seconds | M points/s | peak RSS (GiB) | vs py3dtiles | vs decode |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("autzen_10M", "autzen_10M.laz"), ("district", "synthetic district")):
        d = res.get(key)
        if not d:
            continue
        floor = d.get("decode_floor")
        p3 = d.get("py3dtiles")
        ours = d["ours"]
        ratio = f"{p3['seconds'] / ours['seconds']:.1f}x faster" if p3 and p3.get("returncode") == 0 else "-"
        vs_dec = f"{ours['seconds'] / floor['seconds']:.2f}x" if floor else "-"
        rows.append(
            f"| {label} | RuhrTwin `twin points` | {ours['points']:,} | {ours['seconds']:.1f} | "
            f"{ours['points'] / ours['seconds'] / 1e6:.2f} | {ours['peak_rss_bytes'] / 2**30:.2f} | {ratio} | "
            f"{vs_dec} |"
        )
        if p3:
            ok = p3.get("returncode") == 0
            rows.append(
                f"| {label} | py3dtiles 12.1.1 convert | {ours['points']:,} | "
                f"{p3['seconds']:.1f}{'' if ok else ' (failed)'} | "
                f"{ours['points'] / p3['seconds'] / 1e6:.2f} | {p3['peak_rss_bytes'] / 2**30:.2f} | 1x | - |"
            )
        if floor:
            rows.append(
                f"| {label} | lazrs decode only (floor) | {floor['points']:,} | {floor['seconds']:.1f} | "
                f"{floor['points_per_second'] / 1e6:.2f} | - | - | 1x |"
            )
    return "\n".join(rows)


def write_doc_table(res: dict) -> None:
    if not DOC.is_file():
        return
    text = DOC.read_text()
    a, b = "<!-- BENCH:points:start -->", "<!-- BENCH:points:end -->"
    if a not in text or b not in text:
        return
    head, rest = text.split(a, 1)
    _, tail = rest.split(b, 1)
    meta = res["machine"]
    block = (
        f"{a}\nMeasured {res['date']} on {meta['cpus']} CPUs ({meta['platform']}), {res['workers']} workers; "
        f"the CPU was shared with other jobs (load average at start {meta['load_start']}).\n\n"
        f"{_table(res)}\n{b}"
    )
    DOC.write_text(head + block + tail)


def quick(workers: int, repeat: int) -> int:
    """Autzen floor and ours, alternating `repeat` times; prints best-of and the ratio. Writes nothing."""
    floors, ours = [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench_points_quick_"))
    try:
        for i in range(repeat):
            floors.append(decode_floor([AUTZEN], workers)["seconds"])
            r = run_ours([AUTZEN], tmp / f"ours{i}", workers, ["--assume-ellipsoidal"])
            shutil.rmtree(tmp / f"ours{i}", ignore_errors=True)
            ours.append(r["seconds"])
            print(
                f"  run {i + 1}: floor {floors[-1]:.2f} s, ours {r['seconds']:.2f} s "
                f"(library {r['seconds_in_library']:.2f} s, phases {r['phases']}, "
                f"peak {r['peak_rss_bytes'] / 2**30:.2f} GiB), ratio {r['seconds'] / floors[-1]:.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    f, o = min(floors), min(ours)
    print(
        f"best: floor {f:.2f} s, ours {o:.2f} s ({AUTZEN_POINTS / o / 1e6:.2f} M/s), ours/floor {o / f:.2f}"
    )
    return 0


AUTZEN_POINTS = 10_653_336


def ratio_rounds(workers: int, rounds: int) -> int:
    """Autzen only: rounds of ours, py3dtiles, ours; prints each ratio (repeatability). Writes nothing."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_points_ratio_"))
    try:
        for i in range(rounds):
            a = run_ours([AUTZEN], tmp / f"a{i}", workers, ["--assume-ellipsoidal"])["seconds"]
            p = run_py3dtiles(AUTZEN, tmp / f"p{i}", workers, "2994")["seconds"]
            b = run_ours([AUTZEN], tmp / f"b{i}", workers, ["--assume-ellipsoidal"])["seconds"]
            print(f"  round {i + 1}: ours {a:.2f} / {b:.2f} s, py3dtiles {p:.2f} s: {p / a:.2f}x / {p / b:.2f}x",
                  flush=True)  # fmt: skip
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.points")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--district-points", type=int, default=100_000_000)
    ap.add_argument("--data", type=Path, default=REPO / "data" / "cache" / "bench_points")
    ap.add_argument("--skip-py3dtiles", action="store_true")
    ap.add_argument("--skip-district", action="store_true")
    ap.add_argument("--skip-autzen", action="store_true")
    ap.add_argument("--skip-district-py3dtiles", action="store_true", help="py3dtiles takes ~10 min there")
    ap.add_argument("--quick", action="store_true", help="Autzen floor + ours only; prints, writes nothing")
    ap.add_argument("--repeat", type=int, default=1, help="--quick: runs (best of)")
    ap.add_argument("--ratio", type=int, default=0, help="Autzen: N rounds of ours/py3dtiles/ours, printed")
    args = ap.parse_args(argv)
    if args.quick:
        return quick(args.workers, max(1, args.repeat))
    if args.ratio:
        return ratio_rounds(args.workers, args.ratio)
    res: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "workers": args.workers,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_start": round(os.getloadavg()[0], 2),
        },
    }
    if RESULTS.is_file():
        try:
            old = json.loads(RESULTS.read_text())
            for k in ("autzen_10M", "district"):
                if k in old:
                    res[k] = old[k]
        except json.JSONDecodeError:
            pass
    tmp = Path(tempfile.mkdtemp(prefix="bench_points_"))
    try:
        if not args.skip_autzen and AUTZEN.is_file():
            print("== autzen_10M: decode floor", flush=True)
            d = {"decode_floor": decode_floor([AUTZEN], args.workers)}
            print(f"   {d['decode_floor']}", flush=True)
            print("== autzen_10M: twin points", flush=True)
            d["ours"] = run_ours([AUTZEN], tmp / "ours", args.workers, ["--assume-ellipsoidal"])
            print(
                f"   {d['ours']['seconds']} s, peak {d['ours']['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True
            )
            if not args.skip_py3dtiles:
                print("== autzen_10M: py3dtiles convert", flush=True)
                d["py3dtiles"] = run_py3dtiles(AUTZEN, tmp / "py3dtiles", args.workers, "2994")
                print(f"   {d['py3dtiles']['seconds']} s rc={d['py3dtiles']['returncode']}", flush=True)
                if d["py3dtiles"]["returncode"] == 0:
                    d["speedup_vs_py3dtiles"] = round(d["py3dtiles"]["seconds"] / d["ours"]["seconds"], 2)
            d["ours_vs_decode"] = round(d["ours"]["seconds"] / d["decode_floor"]["seconds"], 2)
            res["autzen_10M"] = d
            shutil.rmtree(tmp / "ours", ignore_errors=True)
            shutil.rmtree(tmp / "py3dtiles", ignore_errors=True)
        if not args.skip_district:
            print(f"== district: {args.district_points:,} points (generated once in {args.data})", flush=True)
            files = district(args.data, args.district_points)
            d = {"files": len(files), "decode_floor": decode_floor(files, args.workers)}
            print(f"   floor {d['decode_floor']}", flush=True)
            d["ours"] = run_ours(files, tmp / "district", args.workers, ["--class-scheme", "adv"])
            print(
                f"   ours {d['ours']['seconds']} s, peak {d['ours']['peak_rss_bytes'] / 2**30:.2f} GiB",
                flush=True,
            )
            if not (args.skip_py3dtiles or args.skip_district_py3dtiles):
                print("== district: py3dtiles convert (about 10 minutes)", flush=True)
                d["py3dtiles"] = run_py3dtiles_files(files, tmp / "district_py3dtiles", args.workers, None)
                print(f"   {d['py3dtiles']['seconds']} s rc={d['py3dtiles']['returncode']}", flush=True)
                if d["py3dtiles"]["returncode"] == 0:
                    d["speedup_vs_py3dtiles"] = round(d["py3dtiles"]["seconds"] / d["ours"]["seconds"], 2)
                shutil.rmtree(tmp / "district_py3dtiles", ignore_errors=True)
            d["ours_vs_decode"] = round(d["ours"]["seconds"] / d["decode_floor"]["seconds"], 2)
            res["district"] = d
            shutil.rmtree(tmp / "district", ignore_errors=True)
        a, dd = res.get("autzen_10M"), res.get("district")
        if a and dd:
            tpp_a = a["ours"]["seconds"] / a["ours"]["points"]
            tpp_d = dd["ours"]["seconds"] / dd["ours"]["points"]
            res["time_per_point_ratio_district_vs_autzen"] = round(tpp_d / tpp_a, 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    write_doc_table(res)
    print(_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
