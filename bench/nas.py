"""Benchmark: the streaming NAS reader on a large synthetic delivery (memory and time per MB).

    .venv/bin/python -m bench.nas [--mb 1024] [--other-kb 32] [--worst-mb 200] [--data DIR] [--keep]

Generates (in --data, default /tmp/ruhrtwin-bench-nas; deleted afterwards unless --keep) complete NAS
deliveries by repeating and shifting a 100 m block of 16 AX_Flurstueck and 16 AX_Gebaeude records
(`pipeline.sources.cadastre.nas_write.synthesize_nas`, ~2.3 kB per record as in state deliveries):

* `realistic`: --mb MB with --other-kb kB of other object types (boundary points and lines, text
  placements) per building or parcel, close to a real state delivery (~37 kB of file per building or
  parcel);
* `buildings_and_parcels_only`: --worst-mb MB of nothing but buildings and parcels (the worst case: the
  result itself, ~1.2 kB per record in memory, grows with the file).

Each is measured in fresh processes (peak RSS = the process's high-water mark, imports included):

* `verify`: the input check of `twin build` (`verify_nas`: the whole file parsed, nothing kept);
* `read_nas_files`: buildings and parcels in one pass (the reader alone);
* `build_cadastre`: what the buildings layer does: `read_footprints` (read, repair, filter, sort) and
  `read_parcels`.

Writes bench/results/nas.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "nas.json"

_CHILD = r"""
import json, resource, sys, time
import os
t_import = time.perf_counter()
from pipeline.sources.cadastre import read_footprints, read_parcels
from pipeline.sources.cadastre.nas import read_nas_files, verify_nas
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mode, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter(); c0 = time.process_time()
out = {}
if mode == "verify":
    verify_nas(path)
elif mode == "read_nas_files":
    b, p = read_nas_files([path], [])
    out = {"buildings": len(b), "parcels": len(p)}
else:
    t = read_footprints([path], "nas", target_crs="EPSG:25832")  # as the buildings layer: working CRS
    p = read_parcels([path], "nas", target_crs="EPSG:25832")
    out = {"buildings": len(t.gdf), "parcels": len(p), "rejected": len(t.rejected)}
out.update(
    wall_s=time.perf_counter() - t0,
    cpu_s=time.process_time() - c0,
    peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    rss_after_imports_mb=base / 1024,
)
print(json.dumps(out))
"""


def _measure(mode: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path)], capture_output=True, text=True, env=env, check=False
    )
    if r.returncode:
        raise RuntimeError(f"{mode} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _delivery(mb: float, other_kb: float, data: Path, keep: bool) -> dict:
    from pipeline.sources.cadastre.nas_write import synthesize_nas

    path = data / f"synthetic_{int(mb)}mb_other{other_kb:g}kb.xml"
    stamp = path.with_suffix(".json")
    if path.is_file() and stamp.is_file():
        gen = json.loads(stamp.read_text())
    else:
        t0 = time.perf_counter()
        gen = synthesize_nas(path, int(mb * 1e6), other_kb_per_record=other_kb)
        gen["generate_s"] = round(time.perf_counter() - t0, 1)
        stamp.write_text(json.dumps(gen))
    size_mb = gen["bytes"] / 1e6
    print(f"== {path.name}: {size_mb:.0f} MB, {gen}", flush=True)
    runs = {}
    for mode in ("verify", "read_nas_files", "build_cadastre"):
        m = _measure(mode, path)
        m["ms_per_mb"] = round(1000 * m["wall_s"] / size_mb, 1)
        m["mb_per_s"] = round(size_mb / m["wall_s"], 2)
        for k in ("wall_s", "cpu_s", "peak_rss_mb", "rss_after_imports_mb"):
            m[k] = round(m[k], 1)
        runs[mode] = m
        print(f"  {mode}: {json.dumps(m)}", flush=True)
    if not keep:
        path.unlink()
        stamp.unlink()
    return {
        "file_mb": round(size_mb, 1),
        "other_kb_per_record": other_kb,
        "records": {k: gen[k] for k in ("buildings", "parcels", "other")},
        "generate_s": gen.get("generate_s"),
        "runs": runs,
    }


def run(
    mb: float = 1024.0,
    other_kb: float = 32.0,
    worst_mb: float = 200.0,
    data: Path | None = None,
    keep: bool = False,
) -> dict:
    data = data or Path("/tmp/ruhrtwin-bench-nas")
    data.mkdir(parents=True, exist_ok=True)
    load = round(os.getloadavg()[0], 2)
    deliveries = {"realistic": _delivery(mb, other_kb, data, keep)}
    if worst_mb > 0:
        deliveries["buildings_and_parcels_only"] = _delivery(worst_mb, 0.0, data, keep)
    result = {
        "benchmark": "nas",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": load,
        "deliveries": deliveries,
        "target": "peak RSS under 300 MB for a 1 GB NAS",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.nas", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1024.0, help="size of the realistic synthetic NAS file")
    ap.add_argument(
        "--other-kb", type=float, default=32.0, help="kB of other objects per building/parcel (realistic)"
    )
    ap.add_argument(
        "--worst-mb", type=float, default=200.0, help="size of the buildings-and-parcels-only file (0: skip)"
    )
    ap.add_argument("--data", type=Path, default=None, help="where the synthetic file is kept")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic file for the next run")
    args = ap.parse_args(argv)
    res = run(args.mb, args.other_kb, args.worst_mb, args.data, args.keep)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
