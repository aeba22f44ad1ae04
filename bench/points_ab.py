"""Benchmark: `twin points` of two code trees back to back (issue 14: "same speed, peak RSS no worse").

    .venv/bin/python -m bench.points_ab --old /tmp/old-worktree [--new .] [--rounds 2] [--jobs 2]
        [--district DIR | --skip-district] [--new-args=--no-meshopt] [--out bench/results/points_ab.json]

Runs old and new alternately (`--rounds` each) on Autzen and on the synthetic district of `bench.points`
(generated into --district if missing), each as `PYTHONPATH=<tree> twin points ...` with the shared venv.
Per run: wall seconds, user + sys CPU of the whole process tree (this process is a child subreaper, so the
fork server and the workers it forks are waited for and counted), and per process (main, fork server,
workers) the peak RSS (`VmHWM`), plus the peak of the summed RSS and of the summed PSS over the tree,
sampled every 20 ms (PSS every 60 ms), and the size of the output written (files, MB). Writes the JSON;
prints one line per run. The machine may be shared: compare CPU seconds, not wall seconds.

Compare the same work: when the medians of the two trees' output sizes differ by more than 1 %, the runs
did not write the same tiles (e.g. 5e55cde's default is plain GLB, today's is meshopt-compressed: give the
old tree `--old-args=--meshopt` or the new one `--new-args=--no-meshopt`) and a warning says so.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.points import AUTZEN, district

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PR_SET_CHILD_SUBREAPER = 36
CLK = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict | None:
    d: dict = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "PPid"):
                    d[k] = int(v.split()[0])
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        d["cpu"] = (int(rest[11]) + int(rest[12])) / CLK
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            d["cmd"] = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError, ValueError):
        return None
    return d


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


def _role(pid: int, ppid: int, cmd: str, main_pid: int) -> str:
    if pid == main_pid:
        return "main"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "forkserver" in cmd:
        return "forkserver" if ppid == main_pid else "worker"
    return "other"


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd`; wall, tree CPU, per-process peak RSS, peak summed RSS and PSS (see the module doc)."""
    me = os.getpid()
    t0 = time.perf_counter()
    c0 = os.times()
    pid = os.fork()
    if pid == 0:  # the child: the command, its output to `log`
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(log.parent)  # not a tree: the fork server (`python -c`) puts its cwd first on sys.path
        os.execve(cmd[0], cmd, env)
    procs: dict[int, dict] = {}
    peak = {"rss": 0, "pss": 0}
    stop = threading.Event()

    def sample() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            rss = pss = 0
            for p in _descendants(me):
                s = _status(p)
                if s is None:
                    continue
                rec = procs.setdefault(p, {"pid": p, "ppid": s.get("PPid", 0), "cmd": "", "hwm": 0})
                if s["cmd"]:  # the latest: between fork and exec a process shows its parent's (exited: none)
                    rec["cmd"] = s["cmd"]
                rec["hwm"] = max(rec["hwm"], s.get("VmHWM", 0))
                rec["cpu"] = s["cpu"]
                rss += s.get("VmRSS", 0)
                if n % 3 == 0:
                    pss += _pss(p)
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            stop.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, st = os.waitpid(pid, 0)
    wall = time.perf_counter() - t0
    while True:  # the fork server and workers, reparented to this subreaper
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.02)
        except ChildProcessError:
            break
    stop.set()
    th.join()
    c1 = os.times()
    per = [
        {
            "role": _role(r["pid"], r["ppid"], r["cmd"], pid),
            "peak_rss_mb": round(r["hwm"] / 1024, 1),
            "cpu_s": round(r.get("cpu", 0.0), 2),
        }
        for r in procs.values()
    ]
    return {
        "returncode": os.waitstatus_to_exitcode(st),
        "wall_s": round(wall, 2),
        "user_s": round(c1.children_user - c0.children_user, 2),
        "sys_s": round(c1.children_system - c0.children_system, 2),
        "cpu_s": round((c1.children_user + c1.children_system) - (c0.children_user + c0.children_system), 2),
        "tree_rss_peak_mb": round(peak["rss"] / 1024, 1),
        "tree_pss_peak_mb": round(peak["pss"] / 1024, 1),
        "processes": sorted(per, key=lambda r: (r["role"], -r["peak_rss_mb"])),
    }


def output_size(path: Path) -> tuple[int, int]:
    """(files, bytes) of everything under `path` (0, 0 when it does not exist)."""
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(root, name))
    return files, size


def same_work(medians: dict[str, dict], tolerance: float = 0.01) -> str | None:
    """A warning when the trees' median output sizes differ by more than `tolerance` (None: same work)."""
    old, new = medians["old"]["out_mb"], medians["new"]["out_mb"]
    if abs(new - old) <= tolerance * max(old, new):
        return None
    return (
        f"old and new wrote different outputs ({old} vs {new} MB): not the same work, the CPU and memory "
        "figures do not compare (e.g. meshopt: --old-args=--meshopt or --new-args=--no-meshopt)"
    )


def _summary(runs: list[dict]) -> dict:
    """Medians over the runs; per role the peak RSS of its largest process (workers: largest and smallest)."""
    out: dict = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "tree_rss_peak_mb")}
    out["tree_pss_peak_mb"] = statistics.median(r["tree_pss_peak_mb"] for r in runs)
    out["out_mb"] = statistics.median(r["out_mb"] for r in runs)
    for role in ("main", "forkserver", "worker"):
        peaks = [
            sorted((p["peak_rss_mb"] for p in r["processes"] if p["role"] == role), reverse=True)
            for r in runs
        ]
        peaks = [p for p in peaks if p]
        if peaks:
            out[f"{role}_peak_rss_mb"] = max(p[0] for p in peaks)
            if role == "worker":
                out["worker_min_peak_rss_mb"] = min(p[-1] for p in peaks)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.points_ab")
    ap.add_argument("--old", type=Path, required=True, help="worktree of the code before (PYTHONPATH)")
    ap.add_argument("--new", type=Path, default=REPO)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--district", type=Path, default=REPO / "data" / "cache" / "bench_points")
    ap.add_argument("--district-points", type=int, default=100_000_000)
    ap.add_argument("--skip-district", action="store_true")
    ap.add_argument("--skip-autzen", action="store_true")
    ap.add_argument("--old-args", default="", help="extra twin points arguments of the old tree")
    ap.add_argument("--new-args", default="", help="extra twin points arguments of the new tree")
    ap.add_argument("--label", default="", help="a name for this set of runs in the JSON")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_points_ab"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "points_ab.json")
    args = ap.parse_args(argv)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("cannot become a child subreaper: fork server CPU would be missed", file=sys.stderr)
        return 1
    sets = []
    if not args.skip_autzen and AUTZEN.is_file():
        sets.append(("autzen_10M", [AUTZEN], ["--assume-ellipsoidal"]))
    if not args.skip_district:
        sets.append(("district", district(args.district, args.district_points), ["--class-scheme", "adv"]))
    trees = {
        "old": (args.old.resolve(), args.old_args.split()),
        "new": (args.new.resolve(), args.new_args.split()),
    }
    res: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "label": args.label,
        "jobs": args.jobs,
        "trees": {k: {"path": str(p), "args": a} for k, (p, a) in trees.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "data": {},
    }
    args.work.mkdir(parents=True, exist_ok=True)
    for tree, _a in trees.values():  # numba's on-disk cache current (a code change recompiles once)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        warm = "import pipeline.stages.points.kernels as k; getattr(k, 'warm_all', lambda: None)()"
        subprocess.run([sys.executable, "-c", warm], env=env, check=True, cwd=args.work)
    for name, files, extra in sets:
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for i in range(args.rounds):
            for which in ("old", "new") if i % 2 == 0 else ("new", "old"):
                tree, targs = trees[which]
                out = args.work / f"{name}_{which}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [
                    str(BIN / "twin"),
                    "points",
                    *map(str, files),
                    "--out",
                    str(out),
                    "--jobs",
                    str(args.jobs),
                ]
                cmd += ["--json", *extra, *targs]
                env = {**os.environ, "PYTHONPATH": str(tree)}
                load = round(os.getloadavg()[0], 1)
                log = args.work / f"{name}_{which}.log"
                r = measure(cmd, env, log)
                r["load_start"] = load
                r["out_files"], size = output_size(out)
                r["out_mb"] = round(size / 2**20, 1)
                shutil.rmtree(out, ignore_errors=True)
                if r["returncode"] != 0:
                    raise RuntimeError(f"{which} failed on {name}: {' '.join(cmd)} (see {log})")
                runs[which].append(r)
                print(
                    f"{name} {which} round {i + 1}: wall {r['wall_s']} s, cpu {r['cpu_s']} s, tree RSS "
                    f"{r['tree_rss_peak_mb']} MB, PSS {r['tree_pss_peak_mb']} MB, load {load}, "
                    f"out {r['out_files']} files {r['out_mb']} MB; "
                    + ", ".join(f"{p['role']} {p['peak_rss_mb']}" for p in r["processes"]),
                    flush=True,
                )
        medians = {k: _summary(v) for k, v in runs.items()}
        warning = same_work(medians)
        if warning:
            print(f"{name}: WARNING: {warning}", file=sys.stderr, flush=True)
        res["data"][name] = {"files": len(files), "runs": runs, "median": medians, "warning": warning}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
