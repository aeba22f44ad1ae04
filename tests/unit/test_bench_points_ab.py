"""bench.points_ab: the output size of a run and the same-work check of an A/B (no runs here)."""

from __future__ import annotations

from bench.points_ab import output_size, same_work


def test_output_size_counts_every_file_below(tmp_path):
    (tmp_path / "content" / "0").mkdir(parents=True)
    (tmp_path / "tileset.json").write_bytes(b"x" * 10)
    (tmp_path / "content" / "0" / "0_0_0.glb").write_bytes(b"y" * 2000)
    assert output_size(tmp_path) == (2, 2010)
    assert output_size(tmp_path / "missing") == (0, 0)


def test_same_work_warns_when_the_trees_wrote_different_outputs():
    # 5e55cde's plain GLB tiles vs today's meshopt-compressed ones (Autzen: 368 vs 80 MB)
    warning = same_work({"old": {"out_mb": 368.0}, "new": {"out_mb": 79.6}})
    assert warning is not None and "368.0 vs 79.6 MB" in warning and "--old-args=--meshopt" in warning
    assert same_work({"old": {"out_mb": 79.6}, "new": {"out_mb": 79.6}}) is None
    assert same_work({"old": {"out_mb": 100.0}, "new": {"out_mb": 100.9}}) is None  # within 1 %
    assert same_work({"old": {"out_mb": 100.0}, "new": {"out_mb": 102.0}}) is not None
