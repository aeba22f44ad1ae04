"""Classes present with their point counts, read from the written point tiles (manifest stats)."""

from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
import pytest

from pipeline.orchestrate.points import PointTilingOptions, tile_pointcloud
from pipeline.sources.pointcloud.synthetic import synthetic_points, write_las
from pipeline.viewer.classes import class_stats, layer_classes


@pytest.fixture(scope="module")
def laz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cls")
    pts = synthetic_points(30_000, size=40.0, seed=11)
    return write_las(d / "small.laz", pts, point_format=3, scale=0.001, chunk_size=10_000)


@pytest.mark.parametrize(("fmt", "scheme"), [("1.1", "adv"), ("1.0", None)])
def test_counts_equal_the_input(laz: Path, tmp_path: Path, fmt: str, scheme: str | None) -> None:
    want = np.bincount(np.asarray(laspy.read(laz).classification), minlength=256)
    assert np.count_nonzero(want) >= 2, "the synthetic cloud must hold several classes"
    out = tmp_path / "ts"
    tile_pointcloud([laz], out, PointTilingOptions(class_scheme="adv", max_points_per_tile=3000, format=fmt))
    assert len(list(out.rglob("*.glb" if fmt == "1.1" else "*.pnts"))) > 1  # counted over several tiles
    got = layer_classes(out.parent, "ts/tileset.json")
    assert got is not None
    assert got["classes"] == {str(c): int(want[c]) for c in np.flatnonzero(want)}
    assert got["class_scheme"] == scheme  # GLB: from the tiles' enum; pnts carry no scheme
    stats = class_stats(out.parent, "ts/tileset.json", "adv")
    assert stats == {"class_scheme": "adv", "classes": got["classes"]}


def test_meshopt_tiles_leave_counts_out(laz: Path, tmp_path: Path) -> None:
    out = tmp_path / "ts"
    try:
        tile_pointcloud([laz], out, PointTilingOptions(class_scheme="adv", meshopt=True))
    except Exception as e:  # meshopt encoder not installed
        pytest.skip(f"meshopt tiling unavailable: {e}")
    assert layer_classes(out.parent, "ts/tileset.json") is None
    assert class_stats(out.parent, "ts/tileset.json", "adv") == {"class_scheme": "adv"}
