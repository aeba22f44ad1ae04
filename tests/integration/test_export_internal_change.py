"""Issue 12: `layers.change.access: internal` made every public export fail on false positives.

An internal layer name is a reference only as a whole word (`last_change` in a GeoPackage's schema is not
the layer `change`), and in the viewer's own JSON only as a value naming the layer or a path component
(`viewer/palettes.json` is keyed by the palette of the change classes: a feature, not data). The scanner
must still fail on real references: a public JSON that lists the internal change tileset, a data JSON
keyed by an internal layer, an escaped name. The slow test builds the tiny district with the change and
zoning layers internal and exports it through `twin publish`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.release import access
from pipeline.release.access import LeakMatcher, find_leaks, public_plan
from tests.conftest import REPO

TOKENS = ["change/", "change/tileset.json", "buildings_change.geojson", "mobile/scan_7.laz", "ab" * 32]
NAMES = ["change", "mobile_points"]


# ------------------------------------------------------------------------------------ the matcher


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("last_change DATETIME NOT NULL", []),  # gpkg_contents schema text
        ("buildings_changed exchange changes Change", []),
        ("grz_change/tileset.json", []),  # another folder
        ("old_buildings_change.geojson", []),  # another file
        ("cd" + "ab" * 32, []),  # inside a longer hex string
        ('"layer": "change"', ["change"]),
        ("overlays.change", ["change"]),
        ("../change/tileset.json", ["change", "change/", "change/tileset.json"]),
        ("change/tiles/0.glb", ["change", "change/"]),
        ("see buildings_change.geojson.", ["buildings_change.geojson"]),
        ("raw/mobile/scan_7.laz", ["mobile/scan_7.laz"]),
        ("sha256:" + "ab" * 32, ["ab" * 32]),
        ("mobile_points: 3 scans", ["mobile_points"]),
    ],
)
def test_matcher_counts_whole_references_only(text, expected):
    assert sorted(LeakMatcher(TOKENS, NAMES).in_text(text, names=True)) == sorted(expected)


def test_matcher_without_names_still_finds_paths():
    m = LeakMatcher(TOKENS, NAMES)
    assert m.in_text("the change classes", names=False) == []
    assert m.in_text("my.change/tileset.json x-change/tileset.json", names=False) == []  # other folders
    assert sorted(m.in_text("fetch('../change/tileset.json')", names=False)) == [
        "change/",
        "change/tileset.json",
    ]


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(
            ["change", "change/", "_", "x", " ", "/", ".", "last_change", "ab" * 32, "tileset.json"]
        ),
        max_size=40,
    ),
    block=st.integers(min_value=1, max_value=23),
)
def test_block_reads_find_what_a_whole_read_finds(tmp_path_factory, parts, block):
    """Files are searched in blocks (bounded memory); a reference cut by a block edge is still found and a
    word cut there is not mistaken for one."""
    data = "".join(parts).encode()
    p = tmp_path_factory.mktemp("blocks") / "f.bin"
    p.write_bytes(data)
    m = LeakMatcher(TOKENS, NAMES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(access, "SCAN_BLOCK_BYTES", block)
        assert m.in_file(p, names=True) == sorted(m.in_text(data.decode(), names=True))


# ---------------------------------------------------------------------------- find_leaks on a tree


def _tree(root: Path, files: dict[str, bytes | str | dict]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            content = json.dumps(content)
        p.write_bytes(content.encode() if isinstance(content, str) else content)


CLEAN = {
    "buildings/buildings.gpkg": b"SQLite format 3\0CREATE TABLE gpkg_contents (last_change DATETIME)",
    "buildings/tileset.json": {"root": {"content": {"uri": "tiles/0.glb"}}, "schema": {"id": "changes_v1"}},
    "viewer/palettes.json": {
        "change": {"property": "change_class", "classes": [{"value": "unchanged", "label": "height change"}]}
    },
    "viewer/app.js": "const PAL = { change: {} }; // change classes; panoramas feature",
    "viewer/index.html": "<title>change map</title>",
    "report/index.html": "<th>change</th><td>notebooks/nightly_report.ipynb</td>",
    "report/data/build.json": {"buildings": 31, "notes": "buildings_changed: 2"},
}


def test_clean_tree_has_no_leaks(tmp_path):
    _tree(tmp_path, CLEAN)
    assert find_leaks(tmp_path, TOKENS, NAMES, ["viewer"]) == []


@pytest.mark.parametrize(
    ("rel", "content", "token"),
    [
        # a viewer config listing the internal change tileset
        ("viewer/layers.json", {"layers": [{"tileset": "../change/tileset.json"}]}, "change/tileset.json"),
        ("viewer/layers.json", {"layers": [{"name": "change", "kind": "change"}]}, "change"),
        ("viewer/app.js", "loadTileset('../change/tileset.json')", "change/"),
        # data JSON keyed by an internal layer, also with an escaped name
        ("report/summary.json", {"layers": {"change": {"buildings": 3}}}, "change"),
        ("report/summary.json", '{"layer": "\\u0063hange"}', "change"),
        ("report/data/build.json", {"mobile_points": 5}, "mobile_points"),
        ("buildings/style.json", {"show": "${layer} === 'change'"}, "change"),
        # a GeoPackage with a table of the internal layer; a CSV naming its input
        ("overlays/x.gpkg", b"CREATE TABLE change (fid INTEGER)", "change"),
        ("overlays/inputs.csv", "path\nmobile/scan_7.laz\n", "mobile/scan_7.laz"),
        # a path that names it
        ("extra/change/readme.txt", "nothing", "change"),
    ],
)
def test_real_references_are_found(tmp_path, rel, content, token):
    _tree(tmp_path, {**CLEAN, rel: content})
    hits = find_leaks(tmp_path, TOKENS, NAMES, ["viewer"])
    assert (rel, token) in hits, hits
    assert {f for f, _t in hits} <= {rel, *[rel.rsplit("/", i)[0] for i in range(1, rel.count("/") + 1)]}


def test_public_plan_filters_by_reference_and_hides_internal_counts(tmp_path):
    manifest = {
        "layers": [
            {
                "name": "buildings",
                "kind": "buildings",
                "access": "public",
                "tileset": "buildings/tileset.json",
            },
            {"name": "change", "kind": "change", "access": "internal", "tileset": "change/tileset.json"},
            {"name": "zoning", "kind": "zoning", "access": "internal", "files": ["overlays/zoning.gpkg"]},
            {"name": "parcels", "kind": "overlay", "access": "public", "files": ["overlays/parcels.gpkg"]},
            {"name": "viewer", "kind": "viewer", "access": "public", "files": ["viewer/app.js"]},
        ],
        "inputs": [
            {"path": "alkis/a.gpkg", "role": "cadastre", "size": 1, "sha256": "cd" * 32},
            {"path": "xplan/plan.gml", "role": "zoning", "size": 1, "sha256": "ef" * 32},
        ],
        "timings": {"buildings": 1.0, "overlays.change": 2.0, "buildings:changed_roofs": 3.0, "zoning": 4.0},
        "warnings": [
            "buildings: 2 roofs changed shape",
            "change: 3 unknown areas",
            "zoning: plan without CRS",
        ],
    }
    manifest["layers"][-1]["stats"] = {"layers_shown": 4}
    _tree(
        tmp_path,
        {
            "manifest.json": manifest,
            "buildings/tileset.json": {"root": {}},
            "change/tileset.json": {"root": {}},
            "overlays/zoning.gpkg": b"z",
            "overlays/parcels.gpkg": b"p",
            "viewer/app.js": "",
        },
    )
    plan = public_plan(tmp_path)
    pm = plan["manifest"]
    assert [lay["name"] for lay in pm["layers"]] == ["buildings", "parcels", "viewer"]
    assert pm["layers"][-1]["stats"]["layers_shown"] == 2  # not 4: the count of internal layers is not told
    assert [i["role"] for i in pm["inputs"]] == ["cadastre"]  # the zoning plans feed an internal layer only
    assert "xplan/plan.gml" in plan["tokens"] and "ef" * 32 in plan["tokens"]
    assert list(pm["timings"]) == ["buildings", "buildings:changed_roofs"]
    assert pm["warnings"] == ["buildings: 2 roofs changed shape"]
    assert plan["program_dirs"] == ["viewer"]
    assert sorted(plan["files"]) == ["buildings/tileset.json", "overlays/parcels.gpkg", "viewer/app.js"]


# ------------------------------------------------------------- the tiny district with change internal


def _word(name: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(name.encode()) + rb"(?![A-Za-z0-9_])")


@pytest.fixture(scope="module")
def change_internal(tiny_project, tiny_release, tmp_path_factory) -> tuple[Path, Path]:
    """(config, release) of the tiny district built with `layers.change.access: internal` and an internal
    zoning layer (the demo's XPlanGML plan); the cache of the session's tiny build is reused."""
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.orchestrate.build import run_build

    root = tmp_path_factory.mktemp("change_internal")
    text = (REPO / "configs" / "tiny.yaml").read_text()
    assert text.count("\nlayers:\n") == 1
    text = text.replace(
        "\nlayers:\n",
        "\nlayers:\n  change:\n    access: internal\n  zoning:\n    paths: [xplan/*.gml]\n",
    )
    for key, path in {
        "raw": tiny_project / "data" / "raw",
        "out": root / "out",
        "cache": tiny_project / "data" / "cache",
    }.items():
        text = re.sub(rf"(\n  {key}: ).*\n", rf"\g<1>{path}\n", text, count=1)
    cfg = root / "change_internal.yaml"
    cfg.write_text(text)
    res = run_build(load_config(cfg), workers=2, log=BuildLog(quiet=True))
    return cfg, res.release_dir


@pytest.mark.slow
def test_export_with_internal_change_layer(change_internal, tmp_path, capsys):
    from pipeline.cli.main import main
    from pipeline.release.ops import validate_path

    cfg, release = change_internal
    manifest = json.loads((release / "manifest.json").read_text())
    by_name = {lay["name"]: lay for lay in manifest["layers"]}
    assert by_name["change"]["access"] == "internal" and by_name["zoning"]["access"] == "internal"
    # the false positives of issue 12 are really there: the scanner has to tell them apart
    assert b"last_change" in (release / "buildings" / "buildings.gpkg").read_bytes()
    assert "change" in json.loads((release / "viewer" / "palettes.json").read_text())

    dest = tmp_path / "public"
    code = main(["publish", "--config", str(cfg), "--public", str(dest), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert {"change", "zoning", "mobile_points", "panoramas"} <= set(report["excluded_layers"])

    internal = [lay for lay in manifest["layers"] if lay["access"] != "public"]
    internal_files = {
        f for lay in internal for f in [lay.get("tileset"), lay.get("style"), *lay.get("files", [])] if f
    }
    exported = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert not exported & internal_files
    assert not [f for f in exported if f.split("/")[0] == "change"]
    secrets = {"change/", by_name["change"]["tileset"], by_name["zoning"]["tileset"]}
    for i in manifest["inputs"]:
        if i["role"] in ("mobile", "panoramas", "zoning"):
            secrets |= {i["path"], i["sha256"]}
    names = [_word(lay["name"]) for lay in internal]
    for rel in sorted(exported):
        data = (dest / rel).read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{rel} contains internal {s!r}"
        if rel.endswith((".js", ".css", ".html")) or rel == "viewer/palettes.json":
            continue  # feature words in program code and in the palette keys
        for pat in names:
            assert not pat.search(data), f"{rel} names internal layer {pat.pattern!r}"
    # the viewer of the export: the palette of the change classes is there, the change layer is not
    assert "viewer/palettes.json" in exported and "viewer/index.html" in exported
    palettes = json.loads((dest / "viewer" / "palettes.json").read_text())
    assert palettes["change"]["classes"]
    pm = json.loads((dest / "manifest.json").read_text())
    shown = [lay for lay in pm["layers"] if lay["kind"] != "viewer"]
    assert all(lay["access"] == "public" for lay in pm["layers"]) and "change" not in {
        lay["name"] for lay in shown
    }
    viewer = next(lay for lay in pm["layers"] if lay["kind"] == "viewer")
    assert viewer["stats"]["layers_shown"] == len(shown)
    assert validate_path(dest, check_gltf=False)["ok"]


@pytest.mark.slow
def test_export_refuses_a_public_json_listing_the_internal_change_tileset(change_internal, tmp_path, capsys):
    from pipeline.cli.main import main
    from pipeline.errors import EXIT_RELEASE

    _cfg, release = change_internal
    crafted = tmp_path / "crafted" / release.name
    shutil.copytree(release, crafted, copy_function=shutil.copyfile)  # real copies: the release stays intact
    layers = {"layers": [{"name": "change", "tileset": "../change/tileset.json"}]}
    (crafted / "viewer" / "layers.json").write_text(json.dumps(layers))
    m = json.loads((crafted / "manifest.json").read_text())
    next(lay for lay in m["layers"] if lay["kind"] == "viewer")["files"].append("viewer/layers.json")
    (crafted / "manifest.json").write_text(json.dumps(m))

    dest = tmp_path / "public"
    code = main(["publish", "--release", str(crafted), "--public", str(dest)])
    err = capsys.readouterr().err
    assert code == EXIT_RELEASE, err
    assert "public export refused" in err and "viewer/layers.json" in err and "change/tileset.json" in err
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".public")]  # no temporary left
