"""The cjval runner (tests/_cjval.py) runs Wine again when Wine itself dies, resuming after the
documents already reported, and fails loudly when it keeps dying; no Wine needed here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import _cjval

VALID = "=== SUMMARY ===\nFile is valid\n"


def _seq(tmp_path: Path, features: int) -> Path:
    head = {"type": "CityJSON", "version": "2.0", "CityObjects": {}, "vertices": []}
    lines = [head] + [
        {"type": "CityJSONFeature", "id": f"b{i}", "CityObjects": {}, "vertices": []} for i in range(features)
    ]
    f = tmp_path / "t.city.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return f


def _fake(monkeypatch: pytest.MonkeyPatch, plan: list[tuple[int, int]]) -> list[int]:
    """Each Wine run answers `reports` documents then exits with `code`; returns docs seen per run."""
    seen: list[int] = []

    def run(cmd, input, **kw):
        docs = input.decode().count("\n")
        seen.append(docs)
        reports, code = plan[len(seen) - 1]
        out = "".join(json.dumps(VALID) + "\n" for _ in range(min(reports, docs)))
        return subprocess.CompletedProcess(cmd, code, out.encode(), b"")

    monkeypatch.setattr(_cjval, "unavailable", lambda: None)
    monkeypatch.setattr(_cjval.subprocess, "run", run)
    return seen


def test_wine_dying_once_is_run_again_from_where_it_stopped(tmp_path, monkeypatch):
    seen = _fake(monkeypatch, [(2, 1), (99, 0)])
    rep = _cjval.cjval(_seq(tmp_path, 4))
    assert seen == [5, 3]  # header + 4 features, then the 3 not yet reported
    assert rep.documents == 5 and rep.errors == [] and rep.warnings == []


def test_wine_dying_every_time_fails_loudly(tmp_path, monkeypatch):
    seen = _fake(monkeypatch, [(0, 1)] * 5)
    with pytest.raises(RuntimeError, match=r"3 attempts.*exit 1 after 0 of 3"):
        _cjval.cjval(_seq(tmp_path, 2))
    assert seen == [3, 3, 3]
