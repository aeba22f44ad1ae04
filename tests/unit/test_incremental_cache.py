"""Content keys and memoised calls used by the per-tile caches (pipeline/orchestrate/cache.py)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import shapely

from pipeline.orchestrate.cache import Cache, content_key, run_cached


@dataclass
class Zones:
    xy: np.ndarray
    geoms: np.ndarray


def test_content_key_hashes_arrays_inside_dataclasses_by_content():
    big = np.zeros(10_000)
    other = big.copy()
    other[5_000] = 1.0  # not visible in the array's printed form ("...")
    g = np.array([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 2, 1)], dtype=object)
    g_same = np.array([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 2, 1)], dtype=object)
    g_other = np.array([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 3, 1)], dtype=object)
    k = content_key(Zones(big, g))
    assert k == content_key(Zones(big.copy(), g_same))  # equal content, other objects: same key
    assert k != content_key(Zones(other, g))
    assert k != content_key(Zones(big, g_other))
    assert content_key(big) != content_key(big.astype(np.float32))


def test_cache_call_and_run_cached_compute_each_key_once(tmp_path):
    cache = Cache(tmp_path / "cache")
    calls: list[int] = []

    def square(x: int) -> np.ndarray:
        calls.append(x)
        return np.arange(x) ** 2

    assert cache.call(["sq", 3], square, 3).tolist() == [0, 1, 4]
    assert cache.call(["sq", 3], square, 3).tolist() == [0, 1, 4]
    assert calls == [3]

    ctx = SimpleNamespace(
        cfg=SimpleNamespace(cache_dir=tmp_path / "cache", runtime=SimpleNamespace()), client=None
    )
    out = run_cached(ctx, [(["sq", n], square, (n,), {}) for n in (3, 4, 3)])  # type: ignore[arg-type]
    assert [o.tolist() for o in out] == [[0, 1, 4], [0, 1, 4, 9], [0, 1, 4]]
    assert calls == [3, 4]  # 3 came from the cache, 4 was computed once


def test_get_or_build_publishes_nothing_when_the_builder_fails(tmp_path):
    cache = Cache(tmp_path / "cache")

    def broken(tmp):
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.get_or_build(["b"], broken)
    assert cache.get(cache.key(["b"])) is None
    assert not list((tmp_path / "cache" / "objects").glob("*/.tmp-*"))
