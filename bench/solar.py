"""Benchmark: solar potential (annual shaded irradiation per DSM cell) per km2.

    .venv/bin/python -m bench.solar [--size 400] [--res 1.0 0.5] [--roofs-only]

A generated urban surface model (16 m lots: gable and flat roofs 6-24 m, a few 40-60 m towers, tree
blobs, terrain with a gentle slope) of --size x --size metres at each --res; the default sun path (hourly,
1 deg bins) and horizon (72 directions, 500 m, max-pooled far field). Times the numba kernel after a warm-up
on a small grid (compilation excluded), wall and process CPU time (all threads), and writes
bench/results/solar.json with seconds per km2 for all cells and for roof cells only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "solar.json"


def make_dsm(size_m: float, res: float, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic district: DSM (row 0 = north) and the roof mask."""
    rng = np.random.default_rng(seed)
    n = round(size_m / res)
    y, x = np.mgrid[0:n, 0:n]
    east, north = (x + 0.5) * res, size_m - (y + 0.5) * res
    dsm = 60.0 + 0.01 * east + 0.005 * north  # terrain
    roofs = np.zeros((n, n), dtype=bool)
    lot = 16.0
    k = round(lot / res)
    for i in range(int(size_m // lot)):
        for j in range(int(size_m // lot)):
            if rng.random() < 0.25:
                continue  # street / yard
            # the lot's window (rows count from the north)
            win = (slice(n - (j + 1) * k, n - j * k), slice(i * k, (i + 1) * k))
            e, no, z = east[win], north[win], dsm[win]
            x0, y0 = i * lot + rng.uniform(2, 4), j * lot + rng.uniform(2, 4)
            w, d = rng.uniform(8, 11), rng.uniform(8, 11)
            inside = (e >= x0) & (e < x0 + w) & (no >= y0) & (no < y0 + d)
            base = z[inside].min() if inside.any() else 60.0
            h = rng.choice([6.0, 9.0, 12.0, 15.0, 24.0]) if rng.random() > 0.02 else rng.uniform(40, 60)
            if rng.random() < 0.5:  # gable, ridge along x or y
                t = np.tan(np.radians(rng.uniform(25, 45)))
                if rng.random() < 0.5:
                    roof = base + h + 0.5 * d * t - t * np.abs(no - (y0 + d / 2))
                else:
                    roof = base + h + 0.5 * w * t - t * np.abs(e - (x0 + w / 2))
                dsm[win] = np.where(inside, roof, z)
            else:
                dsm[win] = np.where(inside, base + h, z)
            roofs[win] |= inside
    for _ in range(int(size_m * size_m / 2000)):  # trees
        cx, cy, r = rng.uniform(0, size_m), rng.uniform(0, size_m), rng.uniform(2, 5)
        d2 = (east - cx) ** 2 + (north - cy) ** 2
        crown = (d2 < r * r) & ~roofs
        dsm = np.where(crown, np.maximum(dsm, 60.0 + 8 + np.sqrt(np.maximum(r * r - d2, 0))), dsm)
    return dsm, roofs


def run(size_m: float, res: float, roofs_only: bool) -> dict:
    from pipeline.stages.solar import SolarParams, irradiation, sun_samples, surface_gradient

    params = SolarParams()
    s = sun_samples(params, 51.45, 7.01)
    z_small, m_small = make_dsm(40.0, res)
    irradiation(z_small, res, surface_gradient(z_small, res), s, params, mask=m_small)  # compile / load
    dsm, roofs = make_dsm(size_m, res)
    grad = surface_gradient(dsm, res, np.where(roofs, 0, -1))  # roof slopes from roof cells only
    out: dict = {"res_m": res, "cells": int(dsm.size), "roof_cells": int(roofs.sum())}
    for name, mask in (("roofs", roofs), ("all", None)):
        if name == "all" and roofs_only:
            continue
        c0, t0 = time.process_time(), time.perf_counter()
        irr = irradiation(dsm, res, grad, s, params, mask=mask)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        km2 = size_m * size_m / 1e6
        g = irr.global_kwh[roofs]
        out[name] = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "wall_s_per_km2": round(wall / km2, 1),
            "cpu_s_per_km2": round(cpu / km2, 1),
            "roof_mean_kwh_m2": round(float(np.nanmean(g)), 1),
        }
    out["unshaded_horizontal_kwh_m2"] = round(s.global_wh / 1000, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=400.0, help="district side [m]")
    ap.add_argument("--res", type=float, nargs="+", default=[1.0, 0.5], help="DSM cell sizes [m]")
    ap.add_argument("--roofs-only", action="store_true", help="time the roof cells only")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/solar.json")
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    res = {
        "benchmark": "solar",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "size_m": a.size,
        "runs": [run(a.size, r, a.roofs_only) for r in a.res],
        "cpu_count": os.cpu_count(),
        "load_avg_before": round(load, 2),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "note": "cpu_s counts all kernel threads; on a shared machine wall_s is inflated by other jobs",
    }
    print(json.dumps(res, indent=1))
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    main()
