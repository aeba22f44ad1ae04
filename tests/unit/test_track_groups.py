"""Panorama tracks grouped by one sort (`panoramas.track_groups`): the same records per track, the same
track order (sorted ids) and the same sequence numbers as comparing every record with every track id."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.orchestrate.panoramas import track_groups


def _reference(ids: list[str]) -> dict[str, np.ndarray]:
    arr = np.array(ids, dtype=object)
    return {t: np.flatnonzero(arr == t) for t in sorted(set(ids))}


@pytest.mark.parametrize("seed", range(5))
def test_groups_equal_the_per_track_comparison(seed):
    rng = np.random.default_rng(seed)
    names = [f"run{k}:{rng.integers(0, 9)}" for k in range(rng.integers(1, 40))] + [
        "Ä:1",
        "a:1",
        "a:10",
        "a:2",
    ]
    ids = [names[i] for i in rng.integers(0, len(names), rng.integers(1, 3000))]
    got, want = track_groups(ids), _reference(ids)
    assert list(got) == list(want)
    for t in want:
        assert got[t].tolist() == want[t].tolist()


def test_no_records_no_tracks():
    assert track_groups([]) == {}
