"""`paths.out` of a fresh clone holds only `data/out/.gitkeep`: that is an empty output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import TwinError
from pipeline.release.ops import check_out_dir


def test_a_folder_with_only_a_placeholder_is_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gitkeep").touch()
    assert check_out_dir(out) == out


def test_a_placeholder_does_not_hide_foreign_content(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gitkeep").touch()
    (out / "survey.laz").write_bytes(b"not ours")
    with pytest.raises(TwinError) as e:
        check_out_dir(out)
    assert e.value.exit_code == 7
    assert (out / "survey.laz").read_bytes() == b"not ours"
