"""The orthophoto pyramid's plan over a large delivery: each warp block is tested against the few sources
near it, not against every source (123,000 blocks x 4,422 DOP tiles at zoom 18 for the Ruhr), and gets
exactly the sources, in mosaic order, that testing every source gives."""

from __future__ import annotations

import math

import pipeline.orchestrate.imagery as imagery
from pipeline.orchestrate.imagery import block_sources, reaches
from pipeline.stages.imagery import ORIGIN

Z = 18
SIZE = 2 * ORIGIN / 2**Z


def _boxes(n: int) -> list[tuple[float, float, float, float]]:
    k = 1 / math.cos(math.radians(51.5))
    x0, y0 = 7.6e5, 6.7e6
    # 1-km tiles plus one overlapping, shifted tile: the mosaic order must survive
    out = [
        (x0 + i * 1e3 * k, y0 + j * 1e3 * k, x0 + (i + 1) * 1e3 * k, y0 + (j + 1) * 1e3 * k)
        for i in range(n)
        for j in range(n)
    ]
    out.append((x0 + 333.0, y0 + 777.0, x0 + 1333.0 * k, y0 + 1777.0 * k))
    return out


def _windows(
    boxes: list[tuple[float, float, float, float]],
) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    xa = int((min(b[0] for b in boxes) + ORIGIN) // SIZE) - 1
    xb = int((max(b[2] for b in boxes) + ORIGIN) // SIZE) + 1
    ya = int((ORIGIN - max(b[3] for b in boxes)) // SIZE) - 1
    yb = int((ORIGIN - min(b[1] for b in boxes)) // SIZE) + 1
    return {
        (x, y): (x, y, 2, 2) for x in range(xa - xa % 2, xb + 1, 2) for y in range(ya - ya % 2, yb + 1, 2)
    }


def test_block_sources_equal_testing_every_source() -> None:
    boxes = _boxes(3)
    windows = _windows(boxes)
    for margin in (0.0, 0.5, SIZE / 256 + 0.64):
        got = block_sources(boxes, windows, Z, margin)
        want = {
            b: [k for k in range(len(boxes)) if reaches(boxes[k], w, Z, margin)] for b, w in windows.items()
        }
        assert got == want
        assert any(len(v) > 1 for v in got.values())  # blocks on tile edges have two or more sources


def test_block_sources_test_only_nearby_sources(monkeypatch) -> None:
    boxes = _boxes(8)  # 65 sources
    windows = _windows(boxes)
    calls = 0

    def counting(*a):
        nonlocal calls
        calls += 1
        return reaches(*a)

    monkeypatch.setattr(imagery, "reaches", counting)
    got = block_sources(boxes, windows, Z, 0.5)
    # every source x every block: 65 x ~1,900 = ~125,000 tests; nearby sources: a few per block
    assert calls <= 6 * len(windows) < len(boxes) * len(windows) // 10
    assert sum(map(len, got.values())) <= calls
