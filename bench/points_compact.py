"""Benchmark: compact point tiles (EXT_meshopt_compression, the default) vs plain tiles (`--no-meshopt`).

    .venv/bin/python -m bench.points_compact [--rounds 3] [--workers 2] [--no-write]

Autzen (../shared/realdata/autzen/autzen_10M.laz) is tiled by `twin points` in rounds that alternate the
order (plain, compact; compact, plain; ...), so that a slow phase of the shared machine hits both alike.
Per run: wall seconds, CPU seconds (user + sys) of **every** process of the run (the bench makes itself a
child subreaper, so the pool's fork server and its workers, which the launcher never waits for, are
reaped here and their CPU time counted), bytes of the tile contents per point, the whole output's bytes,
and the tileset's point count and checksum read back through the tiles (`pipeline.tiles.points_reader`).
Writes bench/results/points_compact.json unless `--no-write`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "points_compact.json"
AUTZEN = REPO.parent / "shared" / "realdata" / "autzen" / "autzen_10M.laz"
BIN = Path(sys.executable).parent
PR_SET_CHILD_SUBREAPER = 36
VARIANTS = {"plain": ["--no-meshopt"], "compact": []}


def _reap_all() -> None:
    """Wait for every descendant that was re-parented to us (orphans of the run)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_all_cpu(cmd: list[str]) -> dict:
    """Run `cmd`; wall seconds and user+sys CPU seconds of its whole process tree."""
    _reap_all()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    _reap_all()  # the fork server and its workers end shortly after the launcher
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "stdout": proc.stdout}


def _sizes(out: Path) -> tuple[int, int]:
    content = total = 0
    for root, _dirs, names in os.walk(out):
        for n in names:
            size = (Path(root) / n).stat().st_size
            total += size
            if n.endswith((".glb", ".pnts")):
                content += size
    return content, total


def one_run(variant: str, out: Path, workers: int) -> dict:
    cmd = [str(BIN / "twin"), "points", str(AUTZEN), "--out", str(out), "--jobs", str(workers), "--json"]
    r = run_all_cpu([*cmd, "--assume-ellipsoidal", *VARIANTS[variant]])
    summary = json.loads(r["stdout"])
    from pipeline.tiles.points_reader import pointcloud_invariants

    inv = pointcloud_invariants(out / "tileset.json")
    content, total = _sizes(out)
    n = summary["points_out"]
    return {
        "variant": variant,
        "seconds": r["seconds"],
        "cpu_seconds": r["cpu_seconds"],
        "points": n,
        "tiles": summary["tiles"],
        "content_bytes": content,
        "total_bytes": total,
        "bytes_per_point": round(content / n, 3),
        "checksum": summary["checksum"],
        "read_back": inv,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.points_compact")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not AUTZEN.is_file():
        print(f"Autzen not found: {AUTZEN}", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: cannot become a child subreaper; CPU of orphaned workers is missed", file=sys.stderr)
    runs = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_points_compact_"))
    try:
        for i in range(args.rounds):
            order = ["plain", "compact"] if i % 2 == 0 else ["compact", "plain"]
            for v in order:
                r = one_run(v, tmp / f"{v}{i}", args.workers)
                shutil.rmtree(tmp / f"{v}{i}")
                r["round"] = i + 1
                runs.append(r)
                print(
                    f"round {i + 1} {v:8s}: wall {r['seconds']:.2f} s, cpu {r['cpu_seconds']:.2f} s, "
                    f"{r['bytes_per_point']:.2f} B/point, {r['total_bytes'] / 2**20:.1f} MiB, "
                    f"checksum {r['checksum']}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summ = {}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        summ[v] = {
            "median_seconds": statistics.median(r["seconds"] for r in rs),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "bytes_per_point": rs[0]["bytes_per_point"],
            "total_bytes": rs[0]["total_bytes"],
            "checksum": rs[0]["checksum"],
        }
    summ["cpu_ratio"] = round(summ["compact"]["median_cpu_seconds"] / summ["plain"]["median_cpu_seconds"], 3)
    summ["wall_ratio"] = round(summ["compact"]["median_seconds"] / summ["plain"]["median_seconds"], 3)
    print(json.dumps(summ, indent=1))
    if not args.no_write:
        res = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other engineers' jobs)",
            "input": str(AUTZEN.relative_to(REPO.parent)),
            "workers": args.workers,
            "summary": summ,
            "runs": runs,
        }
        RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
