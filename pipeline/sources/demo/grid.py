"""Tile grid and file naming of the demo deliveries (the Geobasis NRW 1 km scheme, generalised).

Names follow Geobasis NRW: ``<product>_32_<E>_<N>_<size>_nw_<epoch>.<ext>`` with the UTM zone (32),
the south-west corner and the tile size.

* 1 km tiles (or any whole-km size on a km-aligned grid): E and N in **kilometres**, size in km, e.g.
  ``3dm_32_362_5716_1_nw_2021.laz`` -- exactly the state product naming.
* Smaller tiles (the default demo uses 500 m, the test district 100 m): E and N in **metres** and the size
  in km written with ``%g``, e.g. ``3dm_32_362500_5716000_0.5_nw_2021.laz`` or
  ``dgm1_32_362100_5716000_0.1_nw_2024.tif``. Readers must take the extent from the file header, never
  from the name; the name is only unique and sortable.

Tiles at the district edge are clipped to the district (only when the district side is not a multiple of
the tile size); their name keeps the nominal south-west corner of the grid cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    ix: int
    iy: int
    x0: float
    y0: float
    x1: float
    y1: float
    stem: str  # "32_<E>_<N>_<size>"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height


def tile_stem(e: float, n: float, tile_m: float) -> str:
    if tile_m % 1000 == 0 and e % 1000 == 0 and n % 1000 == 0:
        return f"32_{int(e // 1000)}_{int(n // 1000)}_{int(tile_m // 1000)}"
    return f"32_{round(e)}_{round(n)}_{tile_m / 1000:g}"


def tile_grid(bounds: tuple[float, float, float, float], tile_m: float) -> list[Tile]:
    """Tiles covering the district, row-major from the south-west, clipped to the district."""
    x0, y0, x1, y1 = bounds
    nx = math.ceil((x1 - x0) / tile_m - 1e-9)
    ny = math.ceil((y1 - y0) / tile_m - 1e-9)
    tiles = []
    for iy in range(ny):
        for ix in range(nx):
            e, n = x0 + ix * tile_m, y0 + iy * tile_m
            tiles.append(
                Tile(ix, iy, e, n, min(e + tile_m, x1), min(n + tile_m, y1), tile_stem(e, n, tile_m))
            )
    return tiles


def aerial_name(tile: Tile, epoch: str) -> str:
    return f"3dm_{tile.stem}_nw_{epoch}.laz"


def dop_name(tile: Tile, epoch: str) -> str:
    return f"dop10rgbi_{tile.stem}_nw_{epoch}.tif"


def dgm_name(tile: Tile, epoch: str) -> str:
    return f"dgm1_{tile.stem}_nw_{epoch}.tif"


def mobile_name(tile: Tile, epoch: str) -> str:
    return f"gsc_{epoch}_{tile.stem}.laz"
