"""Point products: results that need every point of one file in file order, made in one decode of it.

The build derives several results from each aerial point file: the samples of the building heights
(`buildings.heights.HeightSampler`), the LoD2 roof points (`buildings.reconstruct.RoofPointGatherer`)
and the surface and density rasters (`terrain.rasterise.FileRasters`). Decoding a LAZ file costs far more
than any of them, so each is a *point product*: an object made as `make(path, *args)` that names the
point `fields` it needs, takes the file's chunks one by one (`add`) and then gives its `result()`.

`feed_points(path, products)` decodes the file once, through the one point reader
(`sources.pointcloud.reader.iter_points`, the union of the fields, memory one chunk), and hands every
chunk to every product; `point_product(path, make, args)` is one product alone (the cached call of a
product). The build runs the products of one file as one task (`pipeline.orchestrate.point_products`).

A product must not change the arrays of a chunk (the products of a file share them) and gets a dict of
its own fields (it may rebind keys). Its result must not depend on how the file is cut into chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


class PointProduct(Protocol):
    """One result computed from every point of one file, fed in file order."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The point fields `add` reads (`reader.iter_points` names); () = the file is not needed."""
        ...

    def add(self, pts: dict[str, np.ndarray]) -> None: ...

    def result(self) -> Any: ...


def feed_points(path: str, products: Sequence[PointProduct], chunk_points: int | None = None) -> list[Any]:
    """The results of `products`, all fed from ONE decode of the point file `path` in chunks of
    `chunk_points` points (default `reader.MAX_CHUNK_POINTS`); a file no product needs is not read."""
    from pipeline.sources.pointcloud import reader

    fields = tuple(dict.fromkeys(f for p in products for f in p.fields))
    live = [p for p in products if p.fields]
    if live:
        for pts in reader.iter_points(path, fields, chunk_points or reader.MAX_CHUNK_POINTS):
            for p in live:
                p.add({f: pts[f] for f in p.fields})
    return [p.result() for p in products]


def point_product(
    path: str, make: Callable[..., PointProduct], args: tuple, chunk_points: int | None = None
) -> Any:
    """The result of the product `make(path, *args)` alone (a decode of the file for it)."""
    return feed_points(path, [make(path, *args)], chunk_points)[0]
