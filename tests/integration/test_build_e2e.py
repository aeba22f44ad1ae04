"""End to end: `twin build` of the tiny district publishes a complete, valid release."""

from __future__ import annotations

import json

import pytest

from pipeline.tiles.tileset import schema_errors, schema_validator

pytestmark = pytest.mark.slow


def test_release_is_published(tiny_release):
    out = tiny_release.parent.parent
    assert (out / "current").resolve() == tiny_release.resolve()
    manifest = json.loads((tiny_release / "manifest.json").read_text())
    assert manifest["build_id"] == tiny_release.name
    assert len(manifest["config_hash"]) == 16
    assert all({"path", "size", "sha256", "role"} <= set(i) for i in manifest["inputs"])
    assert manifest["validation"]["ok"] is True
    names = {lay["name"]: lay for lay in manifest["layers"]}
    for required in ("aerial_points", "buildings"):
        assert required in names, f"layer {required} missing: {sorted(names)}"
    for lay in manifest["layers"]:
        assert lay["access"] in ("public", "internal")
        if lay.get("tileset"):
            assert (tiny_release / lay["tileset"]).is_file()
    assert names.get("mobile_points", {"access": "internal"})["access"] == "internal"


def test_every_tileset_validates_against_shared_schema(tiny_release, shared_spec):
    validator = schema_validator("tileset.schema.json", shared_spec)  # the spec copy in ../shared
    tilesets = [p for p in tiny_release.rglob("*.json") if p.name.startswith("tileset")]
    assert tilesets, "no tileset.json in the release"
    for ts in tilesets:
        doc = json.loads(ts.read_text())
        errs = [e.message for e in validator.iter_errors(doc)]
        assert not errs, f"{ts}: {errs[:3]}"
        assert not schema_errors(doc)
        assert doc["asset"]["version"] in ("1.0", "1.1")


def test_rebuild_is_up_to_date(tiny_project, tiny_release):
    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build
    from tests.conftest import load_tiny_config

    cfg = load_tiny_config(tiny_project)
    res = run_build(cfg, workers=1, log=BuildLog(quiet=True))
    assert res.up_to_date and res.build_id == tiny_release.name
