"""Benchmark: raster tile selection over a Ruhr-sized delivery (issue 17, regional scale).

    .venv/bin/python -m bench.tile_selection [--side 67]

`side` x `side` 1-km tiles in EPSG:25832 (67 x 66 ~ the RVR's 4,435 km2 bounding area); times one
`sources.rasters.overlapping` call for a 1-km box (the terrain asks it for every chunk of the region: 512 m
chunks of a 131 km root square, 65,536 chunks, once for the DGM and once for the orthophoto), the same
selection through a `TileIndex` (what the terrain uses) and one `delivery_bounds`. Prints the figures and
the extrapolation; writes nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pyproj import CRS

from pipeline.sources.rasters import RasterInfo, TileIndex, delivery_bounds, overlapping


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=67)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=65_536, help="selections per delivery to extrapolate to")
    args = ap.parse_args()
    crs = CRS.from_user_input("EPSG:25832")
    infos = [
        RasterInfo(
            Path(f"t_{x}_{y}.tif"),
            crs,
            (x * 1e3, y * 1e3, x * 1e3 + 1e3, y * 1e3 + 1e3),
            (1.0, 1.0),
            1,
            "float32",
            None,
        )
        for x in range(300, 300 + args.side)
        for y in range(5650, 5650 + args.side - 1)
    ]
    box = (320_500.0, 5_680_500.0, 321_500.0, 5_681_500.0)
    t = time.perf_counter()
    overlapping(infos, box, "EPSG:25832")
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.repeat):
        sel = overlapping(infos, box, "EPSG:25832")
    per = (time.perf_counter() - t) / args.repeat
    t = time.perf_counter()
    index = TileIndex(infos, "EPSG:25832")
    build = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.repeat * 100):
        assert index.overlapping(box) == sel
    per_index = (time.perf_counter() - t) / (args.repeat * 100)
    t = time.perf_counter()
    delivery_bounds(infos, "EPSG:25832")
    db = time.perf_counter() - t
    print(
        f"{len(infos)} tiles, {len(sel)} selected: first call {first * 1e3:.1f} ms, then {per * 1e3:.2f} ms per call"
    )
    print(f"TileIndex: built in {build * 1e3:.1f} ms, then {per_index * 1e6:.1f} us per call")
    print(f"delivery_bounds {db * 1e3:.1f} ms")
    print(
        f"{args.chunks} chunks x 2 deliveries: {2 * args.chunks * per:.0f} s of selection in the build process, "
        f"{2 * (args.chunks * per_index + build):.1f} s through a TileIndex"
    )


if __name__ == "__main__":
    main()
