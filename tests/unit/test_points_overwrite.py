"""`twin points --overwrite` replaces only an earlier `twin points` output, never a user's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_points_safety import cloud, run_points, write_las


@pytest.fixture
def las(tmp_path: Path) -> Path:
    return write_las(tmp_path / "a.las", cloud(2000, 400000.0, 5700000.0))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_foreign_folder_and_touches_nothing(las: Path, tmp_path: Path) -> None:
    out = tmp_path / "deliveries"
    (out / "sub").mkdir(parents=True)
    (out / "sentinel.txt").write_text("keep me")
    (out / "sub" / "tileset.json").write_text("{}")  # looks like a tileset, but is not our output
    before = _tree(tmp_path)
    code, _ = run_points(str(las), "--out", str(out), "--overwrite", "--crs", "EPSG:25832+7837")
    assert code == 7
    assert _tree(tmp_path) == before  # nothing deleted, nothing left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_refuses_a_file(las: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    code, _ = run_points(str(las), "--out", str(out), "--overwrite", "--crs", "EPSG:25832+7837")
    assert code == 7
    assert out.read_text() == "keep me"


def test_overwrite_replaces_an_earlier_output(las: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    code, first = run_points(str(las), "--out", str(out), "--crs", "EPSG:25832+7837")
    assert code == 0 and first is not None
    reference = _tree(out)
    code, _ = run_points(str(las), "--out", str(out), "--crs", "EPSG:25832+7837")
    assert code == 2  # not empty, no --overwrite
    (out / "stale.glb").write_bytes(b"old")
    code, second = run_points(str(las), "--out", str(out), "--overwrite", "--crs", "EPSG:25832+7837")
    assert code == 0 and second is not None
    assert _tree(out) == reference  # the stale file went with the old output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.las", "tiles"]  # no .old-* or .tmp-* left


def test_an_empty_out_folder_is_replaced(las: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    out.mkdir()
    code, summary = run_points(str(las), "--out", str(out), "--crs", "EPSG:25832+7837")
    assert code == 0 and summary is not None and (out / "tileset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.las", "tiles"]  # no .old-* left
