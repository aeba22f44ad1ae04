"""The public export of the real tiny district release contains nothing of its internal layers.

Independent of the exporter's own leak check: greps every exported file (bytes and path) for the names,
folders and files of the internal layers (street scans, panoramas) and for the names and hashes of the
inputs only they read; checks that the exported manifest (what the viewer reads) lists public layers only
and that every tileset URI of the export resolves inside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_public_export_of_tiny_release(tiny_release, tmp_path):
    from pipeline.release.access import export_public
    from pipeline.release.ops import validate_path

    manifest = json.loads((tiny_release / "manifest.json").read_text())
    internal = [lay for lay in manifest["layers"] if lay["access"] == "internal"]
    assert {lay["name"] for lay in internal} >= {"mobile_points"}, "tiny config must have internal layers"
    dest = tmp_path / "public"
    report = export_public(tiny_release, dest)
    assert set(report["excluded_layers"]) == {lay["name"] for lay in internal}

    secrets: set[str] = set()
    for lay in internal:
        secrets.add(lay["name"])
        for rel in [lay.get("tileset"), lay.get("style"), *lay.get("files", [])]:
            if rel:
                secrets.add(rel)
                if "/" in rel:
                    secrets.add(rel.split("/", 1)[0] + "/")
    for i in manifest["inputs"]:
        if i["role"] in ("mobile", "panoramas"):
            secrets |= {i["path"], Path(i["path"]).name, i["sha256"]}
    code = (".js", ".css", ".html")  # viewer program code may name the *feature* "panoramas"
    for p in dest.rglob("*"):
        rel = p.relative_to(dest).as_posix()
        for s in secrets:
            assert s not in rel, f"{rel}: path names internal {s!r}"
        if p.is_file():
            data = p.read_bytes()
            for s in secrets:
                if p.suffix in code and s in {lay["name"] for lay in internal}:
                    continue
                assert s.encode() not in data, f"{rel} contains internal {s!r}"
    pm = json.loads((dest / "manifest.json").read_text())
    assert all(lay["access"] == "public" for lay in pm["layers"])
    assert not [i for i in pm["inputs"] if i["role"] in ("mobile", "panoramas")]
    assert validate_path(dest, check_gltf=False)["ok"]


def test_tiny_release_is_world_readable(tiny_release):
    """A web server running as another user can serve every folder and file (`aerial_points/` was 0700)."""
    import stat

    for p in [tiny_release, *tiny_release.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        want = 0o755 if p.is_dir() else 0o644
        assert mode & want == want, (p.relative_to(tiny_release), oct(mode))
