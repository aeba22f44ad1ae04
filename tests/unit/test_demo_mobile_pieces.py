"""The demo's mobile scans are made and written in pieces (`mobile.simulate_mobile`): the pieces are the
tile's returns in GPS-time order, and the LAZ bytes do not depend on the piece size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.sources.demo import mobile as mob
from pipeline.sources.demo.city import build_city
from pipeline.sources.demo.grid import Tile, tile_grid

BOUNDS = (362000.0, 5716000.0, 362200.0, 5716200.0)
RATE = 300.0  # returns per m of track: a few hundred thousand per 100 m tile


@pytest.fixture(scope="module")
def scene():
    city = build_city(42, BOUNDS, ("2021", "2024"))
    tiles = tile_grid(BOUNDS, 100.0)
    return city, mob.tracks(city), tiles


def _tile_with_most(scene) -> tuple[Tile, list[dict[str, np.ndarray]]]:
    city, tracks, tiles = scene
    best = max(
        ((t, list(mob.simulate_mobile(city, t, tracks, RATE, 42, piece_points=20_000))) for t in tiles),
        key=lambda tp: sum(len(p["x"]) for p in tp[1]),
    )
    return best


def test_pieces_are_the_time_sorted_tile(scene):
    tile, pieces = _tile_with_most(scene)
    assert len(pieces) >= 3  # really in pieces
    assert all(len(p["x"]) >= 20_000 for p in pieces[:-1])
    t = np.concatenate([p["gps_time"] for p in pieces])
    assert np.all(np.diff(t) >= 0)
    city, tracks, _ = scene
    whole = list(mob.simulate_mobile(city, tile, tracks, RATE, 42, piece_points=10**12))
    assert len(whole) == 1
    for key, v in whole[0].items():
        np.testing.assert_array_equal(np.concatenate([p[key] for p in pieces]), v, err_msg=key)


def test_written_bytes_do_not_depend_on_piece_size(scene, tmp_path: Path):
    city, tracks, _ = scene
    tile, _ = _tile_with_most(scene)
    digests = set()
    counts = set()
    for piece in (7_777, 10**12):
        path = tmp_path / f"m{piece}.laz"
        counts.add(
            mob.write_mobile_tile(path, mob.simulate_mobile(city, tile, tracks, RATE, 42, piece), tile, city)
        )
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1 and len(counts) == 1 and counts.pop() > 50_000


def test_chunk_start_time_is_a_lower_bound(scene):
    _city, tracks, _ = scene
    tr = tracks[0]
    for k in range(3):
        s = k * mob.CHUNK + np.array([0.0, 1e-9, 12.5, mob.CHUNK - 1e-9])
        t = mob.profile_time(tr, s, np.array([0, 1, 0, 1]), np.deg2rad(np.array([-75.0, -75.0, 0.0, 70.0])))
        assert t.min() >= mob._chunk_start_time(tr, k)
        assert t[0] == mob._chunk_start_time(tr, k)
