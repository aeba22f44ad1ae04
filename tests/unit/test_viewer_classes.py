"""Classes present with their point counts, read from the written point tiles (manifest stats)."""

from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
import pytest

from pipeline.orchestrate.points_plan import PointTilingOptions
from pipeline.orchestrate.points_run import tile_pointcloud
from pipeline.viewer.classes import class_stats, layer_classes
from tests._synthetic_las import synthetic_points, write_las


@pytest.fixture(scope="module")
def laz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cls")
    pts = synthetic_points(30_000, size=40.0, seed=11)
    return write_las(d / "small.laz", pts, point_format=3, scale=0.001, chunk_size=10_000)


@pytest.mark.parametrize(
    ("fmt", "meshopt", "scheme"), [("1.1", True, "adv"), ("1.1", False, "adv"), ("1.0", False, None)]
)
def test_counts_equal_the_input(
    laz: Path, tmp_path: Path, fmt: str, meshopt: bool, scheme: str | None
) -> None:
    want = np.bincount(np.asarray(laspy.read(laz).classification), minlength=256)
    assert np.count_nonzero(want) >= 2, "the synthetic cloud must hold several classes"
    out = tmp_path / "ts"
    opts = PointTilingOptions(class_scheme="adv", max_points_per_tile=3000, format=fmt, meshopt=meshopt)
    tile_pointcloud([laz], out, opts)
    tiles = list(out.rglob("*.glb" if fmt == "1.1" else "*.pnts"))
    assert len(tiles) > 1  # counted over several tiles
    if fmt == "1.1":  # the default tiles are meshopt-compressed: counted after decoding them
        assert all((b"EXT_meshopt_compression" in t.read_bytes()[:4000]) == meshopt for t in tiles)
    got = layer_classes(out.parent, "ts/tileset.json")
    assert got is not None
    assert got["classes"] == {str(c): int(want[c]) for c in np.flatnonzero(want)}
    assert got["class_scheme"] == scheme  # GLB: from the tiles' enum; pnts carry no scheme
    stats = class_stats(out.parent, "ts/tileset.json", "adv")
    assert stats == {"class_scheme": "adv", "classes": got["classes"]}
