"""Benchmark: splitting a region's overlay mesh into 250 m feature tiles (issue 17, regional scale).

    .venv/bin/python -m bench.feature_tiles [--sides 10 20] [--to-km2 4435]

A quad per feature every 50 m (400 features per km2; the Ruhr's cadastre has ~340 parcels and buildings
per km2) on a square of `side` km, with outlines; times `write_feature_tiles` with the GLB encoding and
the cache and the tileset writes stubbed out (what is left is the split and the tileset documents) at both
sizes and extrapolates to `--to-km2` with the growth exponent measured between them. Real draped meshes
have ~10x more triangles per feature, so a per-tile pass over the region costs more there. Writes
nothing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

import pipeline.orchestrate.cache as cache_mod
import pipeline.orchestrate.overlays as overlays
import pipeline.tiles.tileset as tileset
from pipeline.stages.overlays.mesh import MeshParts, Outlines


def run(side_km: float) -> tuple[int, float]:
    nx = int(side_km * 20)
    g = np.arange(nx * nx)
    x, y = 50.0 * (g % nx) + 5, 50.0 * (g // nx) + 5
    corners = np.stack(
        [np.stack([x, y]), np.stack([x + 40, y]), np.stack([x + 40, y + 40]), np.stack([x, y + 40])]
    )
    xyz = np.zeros((4 * len(g), 3))
    xyz[:, :2] = corners.transpose(2, 0, 1).reshape(-1, 2)
    base = 4 * g
    tris = np.stack([np.stack([base, base + 1, base + 2], 1), np.stack([base, base + 2, base + 3], 1)], 1)
    mesh = MeshParts(xyz, np.zeros_like(xyz), tris.reshape(-1, 3).astype(np.uint32), np.repeat(g, 4))
    segs = np.stack([base, base + 1], 1)
    outl = Outlines(xyz, segs, np.repeat(g, 4))
    table = pd.DataFrame({"oid": [f"f{i}" for i in g]})
    overlays._feature_tile_cached = lambda ctx, path, a, kw: None
    fake = SimpleNamespace(call=lambda key, fn, xyz, *a: np.asarray(xyz, dtype=np.float64))
    cache_mod.build_cache = lambda ctx: fake
    tileset.write_json = lambda path, doc: None  # file writes are not what is measured
    ctx = SimpleNamespace(
        cfg=SimpleNamespace(crs=None),
        frame=SimpleNamespace(
            to_json=lambda: {}, tile_transform=lambda: [float(v) for v in np.eye(4).reshape(-1)]
        ),
        build_id="bench",
    )
    colours = np.zeros((len(g), 4), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="bench-feature-tiles-") as d:
        t = time.perf_counter()
        _ts, files = overlays.write_feature_tiles(
            ctx,
            Path(d),
            mesh,
            table,
            colours,
            class_id="c",
            columns=["oid"],
            height_crs="x",
            unlit=False,
            outlines=outl,
        )
        dt = time.perf_counter() - t
    return sum(1 for f in files if f.endswith(".glb")), dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sides", type=float, nargs=2, default=[10.0, 20.0])
    ap.add_argument("--to-km2", type=float, default=4435.0)
    args = ap.parse_args()
    (a, b) = args.sides
    (na, ta), (nb, tb) = run(a), run(b)
    k = math.log(tb / ta) / math.log(b * b / (a * a))
    print(f"{a * a:g} km2 {na} tiles {ta:.2f} s, {b * b:g} km2 {nb} tiles {tb:.2f} s: grows as area^{k:.2f}")
    print(
        f"{args.to_km2:g} km2: {tb * (args.to_km2 / (b * b)) ** k:.0f} s of tile splitting in the build process"
    )


if __name__ == "__main__":
    main()
