"""Every point file decoded once per build for all the point products the layers derive from it.

A point product (`pipeline.stages.point_products`) is a cached call `(key parts, point_product, (path,
make, args), {"chunk_points": n})`: the building heights of a tile, its LoD2 roof points, its surface and
density rasters. Run one by one, each would decode the file again (a 1 km LAZ tile at 10 points/m2 costs
about 4-6 CPU seconds to decode, far more than any product made from it).

`fill_once(ctx, calls)` leaves the results of `calls` in the build cache (`paths.cache`): the point
products that are not cached yet are grouped by file and each file becomes ONE task that decodes it once
and feeds all of its products (`feed_points`), storing each result under its own key; any other call is a
task of its own in the same batch. The layers then load the results with `run_cached` as before (hits);
one evicted meanwhile is computed again there, alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.model import BuildContext
from pipeline.orchestrate.cache import Cache, CachedCall, build_cache
from pipeline.orchestrate.executor import build_executor, map_ordered, run_task
from pipeline.stages.point_products import feed_points, point_product


def _file_task(
    cache: Cache, path: str, products: list[tuple[str, Any, tuple]], chunk_points: int | None
) -> None:
    """Task: the products `(key, make, args)` of one point file from one decode, into the cache."""
    results = feed_points(path, [make(path, *args) for _key, make, args in products], chunk_points)
    for (key, _make, _args), res in zip(products, results, strict=True):
        cache.store_key(key, res)


def _call_task(cache: Cache, key: str, fn: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    """Task: one other call into the cache (nothing returned: the result stays on disk)."""
    cache.call_key(key, fn, *args, **kwargs)


def fill_once(ctx: BuildContext, calls: list[CachedCall], name: str) -> list[str]:
    """The cache keys of `calls`, with every result left in the build cache: point products
    (`point_product` calls) of the same file from one decode of it, the other calls as they are, all as
    one batch of tasks on the build's executor (largest files first)."""
    cache = build_cache(ctx)
    keys = [cache.key(kp) for kp, _fn, _a, _kw in calls]
    by_file: dict[str, list[tuple[str, Any, tuple]]] = {}
    chunks: dict[str, int | None] = {}
    others: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for key, (_kp, fn, args, kwargs) in zip(keys, calls, strict=True):
        if key in seen or cache.get(key) is not None:
            continue
        seen.add(key)
        if fn is point_product:
            path, make, margs = args
            by_file.setdefault(str(path), []).append((key, make, margs))
            n = kwargs.get("chunk_points")
            if n is not None:  # the smallest chunk any of the file's products asks for
                chunks[str(path)] = min(n, chunks.get(str(path), n))
        else:
            others.append((_call_task, cache, key, fn, args, kwargs))
    files = sorted(by_file, key=lambda p: (-Path(p).stat().st_size, p))
    items = [(_file_task, cache, p, by_file[p], chunks.get(p)) for p in files] + others
    executor = build_executor(ctx.client) if len(items) > 1 else None
    map_ordered(executor, run_task, items, name=name)
    return keys
