"""Build report: HTML + PNG plots in the release, and the notebook reproducing it (executed with nbclient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import _overlay_district as district

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report_release(tmp_path_factory):
    from pipeline.orchestrate.overlays import build_overlay_layers
    from pipeline.orchestrate.report import build_report_layers
    from pipeline.orchestrate.terrain import build_terrain_layers

    root = tmp_path_factory.mktemp("report")
    cfg = district.make_district(root)
    ctx = district.context(cfg, root / "release", **{"layers.terrain.texture_px": 64})
    layers = build_terrain_layers(ctx, [])
    layers += build_overlay_layers(ctx, layers)
    # ground truth for the residual plot: the crafted heights of 2024 (DENW01 10 m etc.)
    truth = root / "raw" / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    rows = ["oid,height"] + [f"{b.oid},{b.h2024}" for b in district.BUILDINGS if b.registered and b.h2024 > 0]
    (truth / "buildings.csv").write_text("\n".join(rows) + "\n")
    # the buildings layer is absent here: give the report a buildings.gpkg like the buildings engineer's
    import geopandas as gpd

    ch = gpd.read_file(ctx.release_dir / "change" / "change.gpkg", layer="buildings_change")
    b = ch[["oid", "geometry"]].assign(height=ch["h_new"])
    (ctx.release_dir / "buildings").mkdir(exist_ok=True)
    b.to_file(ctx.release_dir / "buildings" / "buildings.gpkg", layer="buildings", driver="GPKG")
    report = build_report_layers(ctx, layers)
    return ctx, layers + report


def _report(layers):
    return next(lay for lay in layers if lay.name == "report")


def test_report_files(report_release):
    from pipeline.report import PLOTS

    ctx, layers = report_release
    report = _report(layers)
    assert report.kind == "report" and report.access == "public"
    nightly = layers[-1]
    assert nightly.name == "nightly_report" and nightly.access == "internal"
    assert all((ctx.release_dir / f).is_file() for f in nightly.files)
    out = ctx.release_dir / "report"
    html = (out / "index.html").read_text()
    for name in PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 3000, name
        assert f'src="{name}"' in html
    # tables: change classes and the unregistered review list
    assert "demolished" in html and "U350104_5700103" in html
    # residuals vs the ground truth: crafted heights are recovered within ~10 cm (buildings present in 2024)
    s = report.stats["residuals"]
    assert s["n"] == 4 and s["rmse"] < 0.15
    build = json.loads((out / "data" / "build.json").read_text())
    assert {lay["name"] for lay in build["layers"]} >= {"terrain", "imagery", "parcels", "change"}
    assert "terrain.mesh" in build["timings"]


def test_public_report_leaves_out_an_internal_change_layer(report_release):
    """`layers.change.access: internal`: the public report draws no change map and no change table, and
    no cached plot drawn with the change data is reused (issue 12: every export failed on it)."""
    import dataclasses

    from pipeline.orchestrate.report import build_report_layers

    ctx, layers = report_release
    hidden = [
        dataclasses.replace(lay, access="internal") if lay.name == "change" else lay for lay in layers[:-2]
    ]
    assert any(lay.access == "internal" for lay in hidden)
    report = build_report_layers(ctx, hidden)[0]
    out = ctx.release_dir / "report"
    assert "report/change_map.png" not in report.files and "report/grz_map.png" in report.files
    html = (out / "index.html").read_text()
    assert "U350104_5700103" not in html  # the unregistered-structures review list
    assert "<h2>change classes</h2>" not in html and "<h2>changed buildings</h2>" not in html
    build = json.loads((out / "data" / "build.json").read_text())
    assert "change" not in {lay["name"] for lay in build["layers"]}
    build_report_layers(ctx, layers[:-2])  # public again: the fixture's report for later tests
    assert "<h2>change classes</h2>" in (out / "index.html").read_text()


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory):
    """The tiny demo district (200 m) through buildings, terrain, overlays and report."""
    try:
        import pipeline.sources.demo  # noqa: F401
    except ImportError:
        pytest.skip("demo generator not available")
    from pipeline.orchestrate.overlays import build_overlay_layers
    from pipeline.orchestrate.report import build_report_layers
    from pipeline.orchestrate.terrain import build_terrain_layers
    from tests.unit.test_change import DEMO_CONFIG

    root = tmp_path_factory.mktemp("demo_report")
    district.demo_project(root, DEMO_CONFIG)
    ctx = district.context(
        root / "configs" / "tiny.yaml", root / "release", **{"layers.terrain.texture_px": 64}
    )
    layers = []
    try:
        from pipeline.orchestrate.buildings import build_buildings_layers

        layers += build_buildings_layers(ctx, [])
    except ImportError:
        pass
    layers += build_terrain_layers(ctx, layers)
    layers += build_overlay_layers(ctx, layers)
    layers += build_report_layers(ctx, layers)
    return ctx, layers


def test_demo_report_against_truth(demo_release):
    ctx, layers = demo_release
    report = _report(layers)
    html = (ctx.release_dir / "report" / "index.html").read_text()
    assert "change classes" in html and "parcels top grz" in html
    if (ctx.release_dir / "buildings" / "buildings.gpkg").is_file():
        s = report.stats["residuals"]
        # LoD1 heights of the buildings layer vs the demo's exact roof statistics
        assert s["n"] >= 20 and s["rmse"] < 1.0, s


def _ensure_kernel() -> None:
    import subprocess
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True, capture_output=True
        )


@pytest.fixture(scope="module")
def notebook_release(request):
    """The tiny demo district's release when the demo generator exists, else the crafted district."""
    try:
        import pipeline.sources.demo  # noqa: F401
    except ImportError:
        return request.getfixturevalue("report_release")
    return request.getfixturevalue("demo_release")


@pytest.mark.slow
def test_notebook_reproduces_report(notebook_release, tmp_path):
    """The notebook runs with the dev extras only (nbclient, no nbconvert) through
    notebooks/run_build_report.py, and writes into its output folder only, never into the repository."""
    import importlib.util

    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    ctx, _ = notebook_release
    _ensure_kernel()
    spec = importlib.util.spec_from_file_location(
        "run_build_report", REPO / "notebooks" / "run_build_report.py"
    )
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)

    def repo_files() -> set[str]:  # the notebook's folder and the repository's top level
        return {str(p) for p in (REPO / "notebooks").rglob("*")} | {str(p) for p in REPO.iterdir()}

    before = repo_files()
    out = tmp_path / "report"
    done = runner.run(ctx.release_dir, out)
    assert repo_files() == before, "running the notebook left files in the repository"
    assert done == out / "build_report.ipynb"
    nb = json.loads(done.read_text(encoding="utf-8"))
    text = "\n".join(
        "".join(o.get("text", ""))
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    assert "max |GRZ recomputed - GRZ published|" in text
    diff = float(text.split("max |GRZ recomputed - GRZ published| = ")[1].split()[0])
    assert diff < 1e-3
    assert "rmse" in text
    for name in ("grz_map.png", "change_map.png", "height_residuals.png"):
        assert (out / "report_plots" / name).is_file()


# ------------------------------------------------------------------------------- nightly build report


def test_warning_causes_and_ids():
    """Each kind of warning has its cause; ids and files are taken from the text where it names them."""
    from pipeline.report.nightly import _text_row, classify

    assert classify("filtered: Bauteil") == "bauteil"
    assert classify("filtered: underground") == "underground"
    assert classify(
        "not a building: function 51002_1251 is skipped by layers.buildings.non_building_functions"
    ) == ("non_building")
    assert classify("duplicate id") == "duplicate_id"
    assert classify("invalid geometry could not be repaired") == "unrepairable_geometry"
    assert classify("area 1.20 m2 below min_area_m2 2.0") == "too_small"
    assert classify("AX_Gebaeude: ring not closed") == "unreadable_record"
    assert classify("something nobody has seen before") == "other"
    row = _text_row("skipped corrupt input aerial/2024/a.laz: truncated", "")
    assert (row.cause, row.file) == ("corrupt_input", "aerial/2024/a.laz")
    row = _text_row("plan.gml [GML_42]: invalid geometry (Self-intersection) repaired", "zoning")
    assert (row.cause, row.id, row.file, row.layer) == ("geometry_repaired", "GML_42", "plan.gml", "zoning")
    row = _text_row(
        "duplicate input: dgm/b.tif has the same content as dgm/a.tif; only dgm/a.tif is used", ""
    )
    assert (row.cause, row.file) == ("duplicate_input", "dgm/b.tif")


def test_repaired_footprints_are_flagged():
    """The cadastre reader says which kept footprints it repaired (buildings.gpkg column `repair`)."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from pipeline.sources.cadastre.common import FootprintFilter, normalise_columns, repair_and_filter

    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting: two triangles
    square = shapely.box(20, 0, 30, 10)
    sliver = shapely.MultiPolygon([shapely.box(40, 0, 50, 10), shapely.box(50.5, 0, 50.55, 10)])
    gdf = gpd.GeoDataFrame(
        normalise_columns(pd.DataFrame({"oid": ["B", "A", "C"], "source_file": ["f"] * 3})),
        geometry=[bowtie, square, sliver],
        crs="EPSG:25832",
    )
    rejected = []
    out = repair_and_filter(gdf, FootprintFilter(), rejected)
    assert not rejected
    assert dict(zip(out["oid"], out["repair"], strict=True)) == {
        "A": "",
        "B": "made_valid",
        "C": "parts_removed",
    }


def _add_cadastre_records(gpkg: Path) -> dict[str, str]:
    """Append an underground building and a self-intersecting (repairable) one to the demo cadastre."""
    import geopandas as gpd
    import pyogrio
    import shapely

    layer = "GebauedeBauwerk"
    old = pyogrio.read_dataframe(gpkg, layer=layer)
    x0, y0 = old.total_bounds[:2]
    new = gpd.GeoDataFrame(
        {
            "oid": ["DENWTESTUNTER001", "DENWTESTBOWTIE01"],
            "aktualit": ["2026-01-01"] * 2,
            "gebnutzbez": ["Gebäude"] * 2,
            "funktion": ["Tiefgarage", "Wohngebäude"],
            "gfkzshh": ["31001_2463", "31001_1000"],
            "anzahlgs": [1.0, 2.0],
            "rellage": ["unter der Erdoberfläche", None],
            "lagebeztxt": ["", ""],
        },
        geometry=[
            shapely.MultiPolygon([shapely.box(x0 + 2, y0 + 2, x0 + 12, y0 + 12)]),
            shapely.MultiPolygon(
                [shapely.Polygon([(x0 + 20, y0), (x0 + 30, y0 + 10), (x0 + 30, y0), (x0 + 20, y0 + 10)])]
            ),
        ],
        crs=old.crs,
    )
    pyogrio.write_dataframe(new[old.columns], gpkg, layer=layer, append=True)
    return {"DENWTESTUNTER001": "underground", "DENWTESTBOWTIE01": "footprint_repaired"}


@pytest.fixture(scope="module")
def second_build(tiny_project, tiny_release, tmp_path_factory):
    """The tiny district's release, then a build of a copy with one changed input (the cadastre: one
    underground and one self-intersecting building more) on top of it."""
    import shutil

    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build
    from tests.conftest import load_tiny_config

    proj = tmp_path_factory.mktemp("nightly") / "p"
    shutil.copytree(tiny_project, proj, symlinks=True)  # raw, configs, out (releases, current), cache
    first = (proj / "data" / "out" / "current").resolve()
    assert first.name == tiny_release.name
    added = _add_cadastre_records(proj / "data" / "raw" / "alkis" / "alkis_vereinfacht_demo.gpkg")
    res = run_build(load_tiny_config(proj), workers=2, log=BuildLog(quiet=True))
    assert not res.up_to_date and res.build_id != first.name
    return proj, first, res.release_dir, added


def _summary(release: Path) -> dict:
    return json.loads((release / "nightly_report" / "build_summary.json").read_text())


def _csv(release: Path) -> list[dict[str, str]]:
    import csv

    with (release / "nightly_report" / "warnings.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_nightly_report_of_the_second_build(second_build):
    _proj, first, second, added = second_build
    s = _summary(second)
    manifest = json.loads((second / "manifest.json").read_text())
    # the build: date, id, config hash, previous release, a duration per stage (validation included)
    assert s["build_id"] == second.name and s["created"] == manifest["created"]
    assert s["config_hash"] == manifest["config_hash"] and s["config_changed"] is False
    assert s["previous"]["build_id"] == first.name and s["seconds"] > 0
    stages = {st["stage"]: st["seconds"] for st in s["stages"]}
    assert {"buildings", "report.render", "validate"} <= set(stages) and stages["buildings"] > 0
    s1 = _summary(first)  # the release it replaced has its own report (a first build: nothing compared)
    assert s1["build_id"] == first.name and s1["validation"]["ok"] is True
    assert (s1["previous"] is None) == ("added" not in s1["inputs"])
    # inputs: exactly the cadastre changed
    inp = s["inputs"]
    assert [(i["role"], i["path"]) for i in inp["changed"]] == [
        ("cadastre", "alkis/alkis_vereinfacht_demo.gpkg")
    ]
    assert inp["added"] == [] and inp["removed"] == []
    assert inp["total"] == len(manifest["inputs"])
    # outputs per layer against the previous release: the buildings changed, the point clouds did not
    out = {o["name"]: o for o in s["outputs"]}
    assert out["buildings"]["files_changed"] >= 2  # buildings.gpkg, rejected.csv (+ tiles)
    assert {"buildings/buildings.gpkg", "buildings/rejected.csv"} <= set(out["buildings"]["changed"])
    for name in ("aerial_points", "mobile_points", "terrain"):
        assert (out[name]["files_added"], out[name]["files_changed"], out[name]["files_removed"]) == (0, 0, 0)
    # per-layer file counts are every file of the layer (tileset contents too), as on disk
    for name, folder in (
        ("aerial_points", "aerial_points"),
        ("buildings", "buildings"),
        ("viewer", "viewer"),
    ):
        on_disk = [p for p in (second / folder).rglob("*") if p.is_file()]
        assert out[name]["files"] == len(on_disk), name
    aerial = next(lay for lay in manifest["layers"] if lay["name"] == "aerial_points")
    assert out["aerial_points"]["files"] > len(aerial.get("files", [])) + 1  # the tiles are counted too
    # counts and their deltas: one building more (the bowtie), one rejected record more (the underground
    # one); the gates passed them
    counts = {c["metric"]: c for c in s["counts"]}
    assert counts["buildings"]["delta"] == 1 and counts["buildings"]["gate"] == "ok"
    assert counts["rejected"]["delta"] == 1
    assert counts["points"]["delta"] == 0 and counts["terrain_area"]["delta"] == 0
    assert counts["buildings"]["current"] == manifest["plausibility"]["summary"]["buildings"]
    assert s["validation"]["ok"] is True and s["validation"]["tilesets"] > 0
    # warnings by cause, with the affected ids in the CSV
    rows = _csv(second)
    before = {(r["cause"], r["id"]) for r in _csv(first)}
    for oid, cause in added.items():
        assert (cause, oid) in {(r["cause"], r["id"]) for r in rows}, (oid, cause)
        assert (cause, oid) not in before
    by_cause = {e["cause"]: e for e in s["warnings"]["by_cause"]}
    assert "DENWTESTUNTER001" in by_cause["underground"]["examples"]
    assert (
        by_cause["bauteil"]["count"] == sum(r["cause"] == "bauteil" for r in rows) >= 1
    )  # the demo's Bauteil
    assert s["warnings"]["total"] == len(rows)
    # the repaired footprint is flagged in the published data
    import pyogrio

    b = pyogrio.read_dataframe(
        second / "buildings" / "buildings.gpkg", layer="buildings", read_geometry=False
    )
    flagged = dict(zip(b["oid"], b["repair"], strict=True))
    assert flagged["DENWTESTBOWTIE01"] == "made_valid"
    assert {o for o, r in flagged.items() if r} == {
        r["id"] for r in rows if r["cause"] == "footprint_repaired"
    }
    # `twin status` prints the summary
    from pipeline.release.status import format_status, release_status
    from pipeline.report.nightly import attach_summary

    st = release_status(_proj / "data" / "out")
    text = format_status(st, attach_summary(st))
    assert "inputs: 0 new, 1 changed, 0 removed" in text and "buildings +0 ~" in text
    assert "counts: buildings " in text and "(+1, ok)" in text and "underground " in text
    assert f"nightly report: {second / 'nightly_report' / 'index.html'}" in text
    # the page shows it
    page = (second / "nightly_report" / "index.html").read_text()
    assert "alkis/alkis_vereinfacht_demo.gpkg" in page and "DENWTESTUNTER001" in page
    assert "Validation passed" in page and manifest["config_hash"] in page


@pytest.mark.slow
def test_public_export_keeps_a_public_report(second_build, tmp_path):
    """`twin publish --public`: the export has the public report (with the build summary), not the nightly
    one, and its report names no internal layer, no input and no hash."""
    from pipeline.release.access import export_public

    _proj, _first, second, _added = second_build
    manifest = json.loads((second / "manifest.json").read_text())
    dest = tmp_path / "public"
    export_public(second, dest)
    assert not (dest / "nightly_report").exists()
    html = (dest / "report" / "index.html").read_text()
    assert "<h2>Counts</h2>" in html and "Validation passed" in html  # the summary written after validation
    build = json.loads((dest / "report" / "data" / "build.json").read_text())
    assert {c["metric"]: c["delta"] for c in build["summary"]["counts"]}["buildings"] == 1
    secrets = {lay["name"] for lay in manifest["layers"] if lay["access"] != "public"} | {
        manifest["config_hash"]
    }
    # inputs the public export does not list are internal (the street scans, panoramas): the public report
    # must not name them; public inputs (an orthophoto tile) may name public outputs (its COG)
    public_inputs = {i["path"] for i in json.loads((dest / "manifest.json").read_text())["inputs"]}
    internal_inputs = [i for i in manifest["inputs"] if i["path"] not in public_inputs]
    assert internal_inputs
    for i in internal_inputs:
        secrets |= {i["sha256"], i["path"], Path(i["path"]).name}
    assert "nightly_report" in secrets and "mobile_points" in secrets
    for p in (dest / "report").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"{p.relative_to(dest)} names {s!r}"


def _tiny_layer_release(root: Path, version: str, tiles: dict[str, bytes]) -> dict:
    """A release folder with one tileset layer `t` (tiles named in `tiles`) and a layer entry for it."""
    (root / "t").mkdir(parents=True)
    children = [
        {"geometricError": 0, "boundingVolume": {"box": [0] * 12}, "content": {"uri": n}} for n in tiles
    ]
    ts = {
        "asset": {"version": "1.1", "tilesetVersion": version},
        "geometricError": 1,
        "root": {"children": children},
    }
    (root / "t" / "tileset.json").write_text(json.dumps(ts))
    for name, data in tiles.items():
        (root / "t" / name).write_bytes(data)
    (root / "t" / "extra.json").write_text("{}")  # not referenced, in the layer's own folder: counted
    return {"name": "t", "kind": "terrain", "access": "public", "tileset": "t/tileset.json"}


def test_output_changes_per_layer(tmp_path):
    """Files added / changed / removed per layer; a root tileset that differs only in its stamped build id
    is unchanged; a layer only in the previous release is reported as gone."""
    from pipeline.report.nightly import output_changes

    old = _tiny_layer_release(tmp_path / "a", "A", {"0.glb": b"same", "1.glb": b"old"})
    new = _tiny_layer_release(tmp_path / "b", "B", {"0.glb": b"same", "1.glb": b"new"})
    (tmp_path / "a" / "t" / "old.txt").write_text("gone")
    (tmp_path / "b" / "t" / "new.txt").write_text("added")
    gone = {"name": "g", "kind": "overlay", "access": "public", "files": ["g/x.csv"]}
    (tmp_path / "a" / "g").mkdir()
    (tmp_path / "a" / "g" / "x.csv").write_text("x\n")
    out = {o["name"]: o for o in output_changes(tmp_path / "b", [new], tmp_path / "a", [old, gone])}
    t = out["t"]
    assert t["files"] == 5  # tileset, two tiles, extra.json, new.txt
    assert (t["added"], t["changed"], t["removed"]) == (["t/new.txt"], ["t/1.glb"], ["t/old.txt"])
    assert out["g"]["layer_removed"] and out["g"]["removed"] == ["g/x.csv"]
    first = output_changes(tmp_path / "b", [new], None, [])
    assert first == [{"name": "t", "kind": "terrain", "access": "public", "files": 5}]


def test_counts_show_gate_verdicts():
    """Counts against the previous release with each gate's verdict; a change published with
    `--accept-change` is shown as accepted with the gate's message."""
    from pipeline.report.nightly import count_changes, public_summary

    msg = "buildings dropped from 100 in the previous release to 80 (-20.0%; ...)"
    manifest = {
        "layers": [
            {"name": "buildings", "access": "public", "stats": {"buildings": 80, "rejected": 2}},
            {"name": "aerial_points", "access": "internal", "stats": {"points_out": 10}},
        ],
        "plausibility": {
            "summary": {"buildings": 80, "rejected": 2, "points": 10},
            "previous": {"buildings": 100, "rejected": 2, "points": 10},
            "accepted": [{"gate": "change", "metric": "buildings", "message": msg}],
        },
    }
    limits = {"buildings": 0.1, "points": 0.25}
    rows = {c["metric"]: c for c in count_changes(manifest, None, limits)}
    assert rows["buildings"]["delta"] == -20 and rows["buildings"]["relative"] == -0.2
    assert rows["buildings"]["gate"] == "accepted" and rows["buildings"]["finding"] == msg
    assert rows["points"]["gate"] == "ok" and rows["points"]["delta"] == 0
    # the public summary leaves out the counts of internal layers (here: the points)
    summary = {
        "counts": list(rows.values()),
        "outputs": [
            {"name": "buildings", "access": "public"},
            {"name": "aerial_points", "access": "internal"},
        ],
    }
    assert {c["metric"] for c in public_summary(summary)["counts"]} == {"buildings", "rejected"}
