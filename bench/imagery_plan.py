"""Benchmark: the orthophoto pyramid's plan over a Ruhr-sized delivery (issue 17, regional scale).

    .venv/bin/python -m bench.imagery_plan [--side 67] [--zoom 18] [--sample 200]

`side` x `side - 1` 1-km DOP tiles (67 x 66 ~ the RVR's 4,435 km2 bounding area) as web-mercator boxes at
51.5 N, the warp blocks (2 x 2 tiles of `zoom`, as at 10 and 20 cm) of their leaf tiles and the subtrees
(8 x 8 leaf tiles) the first pass groups them into. Times `block_sources` (sources of every block) and the
grouping of blocks by subtree, and, on `sample` blocks / subtrees extrapolated to all, the former scans:
every source tested against every block, every block against every subtree. Writes nothing.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

from pipeline.orchestrate.imagery import block_sources, finest_tile_sources, reaches
from pipeline.stages.imagery import ORIGIN


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=67)
    ap.add_argument("--zoom", type=int, default=18)
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    k = 1 / math.cos(math.radians(51.5))  # web-mercator metres per ground metre
    x0, y0 = 7.0e5 * k / 1.1, 6.7e6  # somewhere near the Ruhr; the figures do not depend on it
    boxes = [
        (x0 + i * 1e3 * k, y0 + j * 1e3 * k, x0 + (i + 1) * 1e3 * k, y0 + (j + 1) * 1e3 * k)
        for i in range(args.side)
        for j in range(args.side - 1)
    ]
    z, w = args.zoom, 2
    size = 2 * ORIGIN / 2**z
    margin = 4 * 0.1 * k + size / 256
    xa, xb = int((boxes[0][0] + ORIGIN) // size), int((boxes[-1][2] + ORIGIN) // size)
    ya, yb = int((ORIGIN - boxes[-1][3]) // size), int((ORIGIN - boxes[0][1]) // size)
    leaf = {(x, y) for x in range(xa, xb + 1) for y in range(ya, yb + 1)}
    t = time.perf_counter()
    finest_tile_sources(boxes, z, leaf, margin)
    fts = time.perf_counter() - t
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for x, y in sorted(leaf):
        blocks[(x - x % w, y - y % w)].append((x, y))
    windows = {b: (min(t[0] for t in ts), min(t[1] for t in ts), w, w) for b, ts in blocks.items()}
    warp_blocks = sorted(windows)
    t = time.perf_counter()
    src = block_sources(boxes, windows, z, margin)
    new_src = time.perf_counter() - t
    sample = warp_blocks[:: max(1, len(warp_blocks) // args.sample)]
    t = time.perf_counter()
    for b in sample:
        assert [n for n in range(len(boxes)) if reaches(boxes[n], windows[b], z, margin)] == src[b]
    old_src = (time.perf_counter() - t) / len(sample) * len(warp_blocks)
    d, span = 3, 8
    t = time.perf_counter()
    blocks_of: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for b in warp_blocks:
        blocks_of[(b[0] >> d, b[1] >> d)].append(b)
    new_mine = time.perf_counter() - t
    subtrees = sorted(blocks_of)
    ssample = subtrees[:: max(1, len(subtrees) // args.sample)]
    t = time.perf_counter()
    for rx, ry in ssample:
        bx, by = rx * span, ry * span
        mine = [b for b in warp_blocks if bx <= b[0] < bx + span and by <= b[1] < by + span]
        assert mine == blocks_of[(rx, ry)]
    old_mine = (time.perf_counter() - t) / len(ssample) * len(subtrees)
    print(
        f"{len(boxes)} sources, {len(leaf)} leaf tiles of zoom {z}, {len(warp_blocks)} warp blocks, {len(subtrees)} subtrees"
    )
    print(f"finest_tile_sources {fts:.2f} s (unchanged)")
    print(
        f"sources of the blocks: every source x every block {old_src:.0f} s (extrapolated), block_sources {new_src:.2f} s"
    )
    print(
        f"blocks of the subtrees: every block x every subtree {old_mine:.0f} s (extrapolated), one pass {new_mine:.3f} s"
    )


if __name__ == "__main__":
    main()
