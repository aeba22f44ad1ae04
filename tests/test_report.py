"""Build report: HTML + PNG plots in the release, and the notebook reproducing it (executed with nbclient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import _overlay_district as district

REPO = Path(__file__).resolve().parents[1]


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


def test_report_files(report_release):
    from pipeline.report import PLOTS

    ctx, layers = report_release
    report = layers[-1]
    assert report.kind == "report"
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
        dataclasses.replace(lay, access="internal") if lay.name == "change" else lay for lay in layers[:-1]
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
    build_report_layers(ctx, layers[:-1])  # public again: the fixture's report for later tests
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
    from tests.test_change import DEMO_CONFIG

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
    report = layers[-1]
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
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    ctx, _ = notebook_release
    _ensure_kernel()
    nb = nbformat.read(REPO / "notebooks" / "build_report.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    params[0].source = f"RELEASE = {str(ctx.release_dir)!r}"
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "max |GRZ recomputed - GRZ published|" in text
    diff = float(text.split("max |GRZ recomputed - GRZ published| = ")[1].split()[0])
    assert diff < 1e-3
    assert "rmse" in text
    for name in ("grz_map.png", "change_map.png", "height_residuals.png"):
        assert (tmp_path / "report_plots" / name).is_file()
