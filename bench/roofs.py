"""Benchmark and truth check of the LoD2 roof reconstruction on a demo district (`twin demo`).

    .venv/bin/python -m bench.roofs --raw /tmp/demo/raw [--epoch 2024] [--backend numba|numpy] [--parts]

Footprints: the cadastral `Gebäude` records that exist in the epoch (true footprints of the demo city,
rebuilt in process from the delivery's seed); points: the epoch's aerial LAZ, AdV roof candidates (20, 1),
first returns. Reports buildings/s of the fit alone (CPU and wall, one process), roof type correct for
buildings with >= 50 roof points (truth: pipeline.sources.demo roofs, see `truth_type`) with a confusion
table (truth kind -> reconstructed type) and figures per truth kind, and the per-building vertical RMSE
between the fitted and the true roof surface over a 0.5 m grid inside the footprint.

`--parts` (`run_parts`): the same figures with building parts (`layers.buildings.lod2_parts`): the
epoch's `Bauteil` records split their host footprints into units (`stages.buildings.parts`), every unit
gets a roof fit of its own, the units' roof partitions merged into the building's roof
(`solids.merge_partitions`) are compared with the truth and checked as one solid; the roof type of a
building with parts is its units' type when they agree, else multi (as
`orchestrate.buildings_lod2.reconstruct_lod2_parts`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _demo_buildings(raw: Path, epoch: str) -> tuple[Any, int, list, np.ndarray]:
    """The demo city of `raw` (rebuilt from its truth.json), the epoch's index and the cadastre
    buildings present in it (no sheds) with their footprints."""
    from pipeline.sources.demo.city import build_city

    truth = json.loads((raw / "truth" / "truth.json").read_text())
    par = truth["parameters"]
    epochs = tuple(par["epochs"])
    ei = epochs.index(epoch)
    city = build_city(int(par["seed"]), tuple(truth["bounds"]), epochs)
    st = [s for s in city.structures if s.present[ei] and s.in_cadastre and s.category != "shed"]
    return city, ei, st, np.array([s.geom for s in st], dtype=object)


def run(
    raw: Path, epoch: str = "2024", backend: str = "numba", single_returns: bool = True
) -> dict[str, Any]:
    import numpy as np
    import shapely

    from pipeline.sources.demo.roofs import boundary_edges, roof_height
    from pipeline.stages.buildings.heights import HeightParams
    from pipeline.stages.buildings.reconstruct import (
        ROOF_FIELDS,
        ReconstructParams,
        collect_roof_points,
        reconstruct_roofs,
    )
    from pipeline.stages.buildings.roofs import RoofParams
    from tests._points_reference import read_points

    _city, ei, st, geoms = _demo_buildings(raw, epoch)
    laz = sorted((raw / "aerial" / epoch).glob("*.la[sz]"))
    pts: dict[str, list] = {}
    for f in laz:
        for k, v in read_points(f, ROOF_FIELDS).items():
            pts.setdefault(k, []).append(v)
    points = {k: np.concatenate(v) for k, v in pts.items()}
    hp = HeightParams(roof_classes=(20, 1), ground_classes=(2,))
    rp = ReconstructParams(roof=RoofParams(backend=backend), single_returns=single_returns)
    ptr, idx = collect_roof_points(points, geoms, rp.shrink_m, hp, rp.single_returns)
    x, y, z = points["x"], points["y"], points["z"]
    reconstruct_roofs(x, y, z, ptr[:2], idx, geoms[:1], rp)  # compile / warm up
    c0, w0 = time.process_time(), time.perf_counter()
    table = reconstruct_roofs(x, y, z, ptr, idx, geoms, rp)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n_pts = np.diff(ptr)
    from pipeline.stages.buildings.solids import SolidError, build_solid, check_solid, roof_partition

    c1 = time.process_time()
    invalid, solid_fallback = [], []
    for s_, g, fit in zip(st, geoms, table.fits, strict=True):
        if fit.fallback:
            continue
        try:
            sol = build_solid(roof_partition(fit, g), s_.base)
        except SolidError as e:
            solid_fallback.append((s_.oid, str(e)))
            continue
        errs = check_solid(sol)
        if errs:
            invalid.append((s_.oid, errs[:3]))
    solid_cpu = time.process_time() - c1
    rows = []
    for s, g, fit, n in zip(st, geoms, table.fits, n_pts, strict=True):
        roof = s.roof_in(ei)
        want, ok_types = truth_type(roof, g)
        gx, gy = np.meshgrid(
            np.arange(g.bounds[0], g.bounds[2], 0.5) + 0.25, np.arange(g.bounds[1], g.bounds[3], 0.5) + 0.25
        )
        gx, gy = gx.ravel(), gy.ravel()
        inside = shapely.contains_xy(g, gx, gy)
        gx, gy = gx[inside], gy[inside]
        edges = boundary_edges(g) if roof.kind == "hip" else None
        zt = s.base + roof_height(roof, edges, gx, gy)
        rmse = (
            float(np.sqrt(np.mean((fit.height_at(gx, gy) - zt) ** 2))) if not fit.fallback else float("nan")
        )
        got = fit.roof_type if not fit.fallback else f"({fit.fallback})"
        rows.append((s.oid, want, got, got in ok_types, int(n), rmse, fit.fallback, roof.kind))
    big = [r for r in rows if r[4] >= 50]
    correct = sum(r[3] for r in big)
    rm = [r[5] for r in big if np.isfinite(r[5])]
    wrong = [(*r[:3], r[4], round(r[5], 2), r[6]) for r in big if not r[3]]
    confusion: dict[str, dict[str, int]] = {}
    per_kind: dict[str, dict[str, Any]] = {}
    for r in big:
        confusion.setdefault(r[7], {}).setdefault(r[2], 0)
        confusion[r[7]][r[2]] += 1
    for kind in sorted(confusion):
        kr = [r for r in big if r[7] == kind]
        km = [r[5] for r in kr if np.isfinite(r[5])]
        per_kind[kind] = {
            "buildings": len(kr),
            "type_correct": sum(r[3] for r in kr),
            "median_rmse_m": round(float(np.median(km)), 3) if km else None,
        }
    return {
        "benchmark": "roofs",
        "backend": backend,
        "single_returns": single_returns,
        "buildings": len(st),
        "roof_points": int(n_pts.sum()),
        "fit_cpu_s": round(cpu, 3),
        "fit_wall_s": round(wall, 3),
        "buildings_per_s_cpu": round(len(st) / cpu, 1),
        "ms_per_building_cpu": round(1000 * cpu / len(st), 2),
        "with_50_points": len(big),
        "type_correct": correct,
        "type_correct_share": round(correct / max(len(big), 1), 3),
        "median_rmse_m": round(float(np.median(rm)), 3) if rm else None,
        "solids_cpu_s": round(solid_cpu, 3),
        "ms_per_solid_cpu": round(1000 * solid_cpu / len(st), 2),
        "solids_invalid": invalid[:20],
        "solids_not_built": solid_fallback[:20],
        "fallbacks": {k: sum(r[6] == k for r in rows) for k in {r[6] for r in rows} if k},
        "per_truth_kind": per_kind,
        "confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        "wrong": wrong[:40],
    }


def run_parts(
    raw: Path, epoch: str = "2024", bauart_filter: bool = True, join: bool = True
) -> dict[str, Any]:
    """Demo truth with building parts (see the module docstring); `bauart_filter=False` makes every
    Bauteil a unit, `join=False` keeps parts with too few roof points as units (the old behaviour)."""
    import shapely

    from pipeline.config.model import BuildingsLayer
    from pipeline.sources.demo.roofs import boundary_edges, roof_height
    from pipeline.stages.buildings.heights import HeightParams
    from pipeline.stages.buildings.parts import (
        assign_parts,
        join_parts,
        roof_parts,
        split_units,
        units_to_join,
    )
    from pipeline.stages.buildings.reconstruct import (
        ROOF_FIELDS,
        ReconstructParams,
        collect_roof_points,
        reconstruct_roofs,
    )
    from pipeline.stages.buildings.solids import (
        SolidError,
        build_solid,
        check_solid,
        merge_partitions,
        roof_partition,
    )
    from tests._points_reference import read_points

    city, ei, st, geoms = _demo_buildings(raw, epoch)
    bauteile = [p for p in city.parts if p.kind == "bauteil" and p.present[ei]]
    pgeoms = np.array([p.geom for p in bauteile], dtype=object)
    bauarten = (
        BuildingsLayer().lod2_part_bauarten if bauart_filter else [int(p.gfkzshh[-4:]) for p in bauteile]
    )
    host = assign_parts(geoms, pgeoms)
    hosts_bauteil = np.zeros(len(st), dtype=bool)  # buildings holding a Bauteil (a unit or not)
    hosts_bauteil[host[host >= 0]] = True
    host[~roof_parts([p.gfkzshh for p in bauteile], bauarten)] = -1
    pts: dict[str, list] = {}
    for f in sorted((raw / "aerial" / epoch).glob("*.la[sz]")):
        for k, v in read_points(f, ROOF_FIELDS).items():
            pts.setdefault(k, []).append(v)
    points = {k: np.concatenate(v) for k, v in pts.items()}
    hp = HeightParams(roof_classes=(20, 1), ground_classes=(2,))
    rp = ReconstructParams()
    joined = 0
    absorb = np.zeros(len(st), dtype=bool)
    for _pass in range(2):  # as the build: units with too few roof points join their neighbours, once
        units = split_units(geoms, pgeoms, host, absorb=absorb)
        ptr, idx = collect_roof_points(points, units.geoms, rp.shrink_m, hp, rp.single_returns)
        table = reconstruct_roofs(points["x"], points["y"], points["z"], ptr, idx, units.geoms, rp)
        failed = units_to_join(np.array([f.fallback or "" for f in table.fits]), units, len(st))
        if not join or not failed.any():
            break
        joined += int(failed.sum())
        host, absorb = join_parts(host, units, failed, absorb)
    n_pts = np.bincount(units.building, weights=np.diff(ptr), minlength=len(st)).astype(np.int64)
    rows, invalid, not_built = [], [], []
    for i, (s_, g) in enumerate(zip(st, geoms, strict=True)):
        u = np.flatnonzero(units.building == i)
        fits = [table.fits[k] for k in u]
        missing = [f"{f.fallback} ({f.n_points} points)" for f in fits if f.fallback]
        if missing:
            rows.append(
                (s_.oid, "", f"(part_without_roof: {missing[0]})", False, n_pts[i], np.nan, len(u), i)
            )
            continue
        try:
            parts = [roof_partition(f, ug) for f, ug in zip(fits, units.geoms[u], strict=True)]
            part = parts[0] if len(parts) == 1 else merge_partitions(parts)
            errs = check_solid(build_solid(part, s_.base))
        except SolidError as e:
            not_built.append((s_.oid, str(e)))
            continue
        if errs:
            invalid.append((s_.oid, errs[:3]))
        roof = s_.roof_in(ei)
        want, ok_types = truth_type(roof, g)
        gx, gy = np.meshgrid(
            np.arange(g.bounds[0], g.bounds[2], 0.5) + 0.25, np.arange(g.bounds[1], g.bounds[3], 0.5) + 0.25
        )
        gx, gy = gx.ravel(), gy.ravel()
        inside = shapely.contains_xy(g, gx, gy)
        gx, gy = gx[inside], gy[inside]
        zt = s_.base + roof_height(roof, boundary_edges(g) if roof.kind == "hip" else None, gx, gy)
        zf = part.height_at(gx, gy)
        ok = np.isfinite(zf)
        rmse = float(np.sqrt(np.mean((zf[ok] - zt[ok]) ** 2))) if ok.any() else float("nan")
        types = sorted({f.roof_type for f in fits})
        got = types[0] if len(types) == 1 else "multi"
        rows.append((s_.oid, want, got, got in ok_types, n_pts[i], rmse, len(u), i))
    big_rows = [r for r in rows if r[4] >= 50]
    rm = [r[5] for r in big_rows if np.isfinite(r[5])]
    with_parts = [r for r in big_rows if hosts_bauteil[r[7]]]
    pm = [r[5] for r in with_parts if np.isfinite(r[5])]
    return {
        "benchmark": "roofs (building parts)",
        "buildings": len(st),
        "bauteile": len(bauteile),
        "bauteile_with_roof": int(np.sum(roof_parts([p.gfkzshh for p in bauteile], bauarten))),
        "parts_joined": joined,
        "units": len(units.geoms),
        "with_50_points": len(big_rows),
        "type_correct": sum(r[3] for r in big_rows),
        "type_correct_share": round(sum(r[3] for r in big_rows) / max(len(big_rows), 1), 3),
        "median_rmse_m": round(float(np.median(rm)), 3) if rm else None,
        "buildings_with_parts": len(with_parts),  # holding a Bauteil, >= 50 roof points
        "buildings_split": int(np.sum(np.bincount(units.building, minlength=len(st)) > 1)),
        "with_parts_type_correct": sum(r[3] for r in with_parts),
        "with_parts_median_rmse_m": round(float(np.median(pm)), 3) if pm else None,
        "solids_invalid": invalid[:20],
        "solids_not_built": not_built[:20],
        "lod1_fallback": [(r[0], r[2]) for r in rows if r[2].startswith("(")][:20],
        "wrong": [(r[0], r[1], r[2], int(r[4]), round(r[5], 2), r[6]) for r in big_rows if not r[3]][:40],
    }


def truth_type(roof: Any, g: Any) -> tuple[str, set[str]]:
    """The reconstruction's roof type a demo roof should get, and the types counted correct: a hip roof
    on a footprint that is not a rectangle is the demo's straight-skeleton roof (hip or multi); a hip
    on a rectangle whose ridge is shorter than 1 m is as good as a pyramid; the cross gable (two
    gable wings of an L-shaped house) is multi."""
    import shapely

    want = {"cross_gable": "multi"}.get(roof.kind, roof.kind)
    if roof.kind != "hip":
        return want, {want}
    mrr = shapely.minimum_rotated_rectangle(g)
    if abs(shapely.area(mrr) - g.area) >= 1e-3 * g.area:
        return want, {"hip", "multi"}
    c = shapely.get_coordinates(mrr)
    sides = sorted([float(np.hypot(*(c[1] - c[0]))), float(np.hypot(*(c[2] - c[1])))])
    return want, {"hip", "pyramid"} if sides[1] - sides[0] < 1.0 else {"hip"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--epoch", default="2024")
    ap.add_argument("--backend", default="numba", choices=["numba", "numpy"])
    ap.add_argument("--out", type=Path, default=None, help="also write the result here (JSON)")
    ap.add_argument("--all-returns", action="store_true", help="roof candidates from every first return")
    ap.add_argument("--parts", action="store_true", help="building parts (Bauteil) as roof units")
    ap.add_argument("--no-bauart-filter", action="store_true", help="--parts: every Bauteil is a unit")
    ap.add_argument("--no-join", action="store_true", help="--parts: parts with too few points stay units")
    a = ap.parse_args(argv)
    import os
    import platform

    load = os.getloadavg()[0]
    res = (
        run_parts(a.raw, a.epoch, not a.no_bauart_filter, not a.no_join)
        if a.parts
        else run(a.raw, a.epoch, a.backend, not a.all_returns)
    )
    res["load_avg_before"] = round(load, 2)
    res["python"] = platform.python_version()
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
