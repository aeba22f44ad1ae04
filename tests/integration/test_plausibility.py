"""Plausibility gates (issue 12, item 2): unit tests of the pure gates and the raster facts, then a
generated bad-input corpus built through `twin build` on a copy of the tiny district.

Every corpus case must end in a clear one-line error with its documented exit code (2 bad input, 4 CRS,
8 plausibility gate), without a traceback, and leave `current` and the published release untouched."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pipeline.config.model import ChangeLimits, GatesConfig
from pipeline.errors import EXIT_IMPLAUSIBLE, InputError
from pipeline.release import plausibility as pl
from pipeline.sources.rasters import _spikes, raster_facts
from tests import _bad_inputs as bad

# ------------------------------------------------------------------------------- pure release gates


def test_change_beyond_limit_refuses_and_names_the_flag():
    prev = {"buildings": 33, "parcels": 42, "points": 1_000_000, "terrain_area": 40_000.0}
    cur = {"buildings": 3, "parcels": 42, "points": 1_200_000, "terrain_area": 30_000.0}
    found = pl.compare_with_previous(prev, cur, ChangeLimits(), "abc123")
    assert [f.metric for f in found] == ["buildings", "terrain_area"]  # points +20 % is within 25 %
    assert "dropped from 33" in found[0].message and "to 3" in found[0].message
    assert "-90.9%" in found[0].message and "abc123" in found[0].message
    msg = pl.refusal_message(found)
    assert "--accept-change buildings" in msg and "--accept-change terrain_area" in msg
    # a jump is refused like a drop
    jump = pl.compare_with_previous({"parcels": 100}, {"parcels": 111}, ChangeLimits(), "")
    assert [f.message.split()[1] for f in jump] == ["jumped"]


def test_change_within_limit_unset_metric_and_empty_previous_pass():
    lim = ChangeLimits(buildings=None)
    assert pl.compare_with_previous({"buildings": 10}, {"buildings": 1}, lim) == []
    assert pl.compare_with_previous({"parcels": 100}, {"parcels": 110}, ChangeLimits()) == []  # exactly 10 %
    assert pl.compare_with_previous({"parcels": 0}, {"parcels": 50}, ChangeLimits()) == []
    assert pl.compare_with_previous({}, {"parcels": 50}, ChangeLimits()) == []


def test_accept_flags_split_findings():
    found = pl.compare_with_previous(
        {"buildings": 10, "parcels": 10}, {"buildings": 1, "parcels": 1}, ChangeLimits()
    )
    refused, ok = pl.split_accepted(found, ["buildings"])
    assert [f.metric for f in refused] == ["parcels"] and [f.metric for f in ok] == ["buildings"]
    refused, ok = pl.split_accepted(found, ["all"])
    assert refused == [] and len(ok) == 2


def test_content_findings_rejected_share_and_point_count():
    g = GatesConfig()
    assert pl.content_findings({"buildings": 31, "rejected": 3}, g, 100, 100) == []
    f = pl.content_findings({"buildings": 3, "rejected": 30}, g, None, None)
    assert [x.metric for x in f] == ["rejected"] and "30 of 33" in f[0].message
    f = pl.content_findings({"buildings": 0, "rejected": 0, "parcels": 0, "points": 5}, g, None, None)
    assert [(x.gate, x.metric) for x in f] == [("empty", "buildings"), ("empty", "parcels")]
    f = pl.content_findings({}, g, 10_000, 9_000)
    assert [x.metric for x in f] == ["point_count"] and "-1,000" in f[0].message


def test_release_summary_from_old_manifest_and_recorded_one():
    layers = [
        {"name": "buildings", "stats": {"buildings": 31, "rejected": 3}},
        {"name": "parcels", "stats": {"parcels": 42}},
        {"name": "aerial_points", "stats": {"points_in": 5, "points_out": 5}},
    ]
    assert pl.release_summary({"layers": layers}) == {
        "buildings": 31,
        "rejected": 3,
        "parcels": 42,
        "points": 5,
    }
    rec = {"layers": layers, "plausibility": {"summary": {"buildings": 1}}}
    assert pl.release_summary(rec) == {"buildings": 1}
    assert pl.release_summary(None) == {}
    assert pl.summarise_layers(layers, 400.0)["terrain_area"] == 400.0


# --------------------------------------------------------------------------------- pure input gates


def test_duplicate_groups():
    files = [("a.laz", "h1"), ("b.laz", "h2"), ("c.laz", "h1"), ("d.laz", "h1")]
    assert pl.duplicate_groups(files) == [["a.laz", "c.laz", "d.laz"]]
    assert pl.duplicate_groups(files[:2]) == []


def test_input_problems_by_kind():
    g = GatesConfig(region=(0, 0, 1000, 1000))
    pts = {"kind": "points", "count": 10, "bounds": [1, 1, 50, 9, 9, 1e6 + 60], "bounds_xy": [1, 1, 9, 9]}
    assert any("height_range_m" in p for p in pl.input_problems(pts, g))
    pts_ok = pts | {"bounds": [1, 1, 50, 9, 9, 60]}
    assert pl.input_problems(pts_ok, g) == []
    far = pts_ok | {"bounds_xy": [5000, 5000, 6000, 6000]}
    assert any("outside the configured region" in p for p in pl.input_problems(far, g))
    assert pl.input_problems(far, GatesConfig()) == []  # no region configured
    dgm = {"kind": "raster", "role": "dgm", "bands": 1, "bands_needed": 1, "cells": 100, "valid": 100}
    assert pl.input_problems(dgm | {"out_of_range": 0, "spikes": 0, "min": 1, "max": 2}, g) == []
    assert "outside" in pl.input_problems(dgm | {"out_of_range": 3, "spikes": 0, "min": 1, "max": 1e30}, g)[0]
    assert "spikes" in pl.input_problems(dgm | {"out_of_range": 0, "spikes": 2, "min": 1, "max": 2}, g)[0]
    assert "hole" in pl.input_problems(dgm | {"valid": 0}, g)[0]
    ortho = {"kind": "raster", "role": "orthophoto", "bands": 2, "bands_needed": 4, "cells": 9, "valid": None}
    assert pl.input_problems(ortho, g) == [
        "raster has 2 band(s) but the config reads band 4 (sources.*.bands)"
    ]
    assert "black" in pl.input_problems(ortho | {"bands": 4, "valid": 9, "black": True}, g)[0]
    vec = {"kind": "vector", "layers": {"B": 0, "F": 3}, "building_layer": "B", "parcel_layer": "F"}
    assert pl.input_problems(vec, g) == ["layer 'B' holds no features (building layer)"]
    vec2 = vec | {"layers": {"B": 1, "F": 3}, "null_ids": 1, "null_id_examples": [7]}
    assert "without an id" in pl.input_problems(vec2, g)[0]


def test_gates_config_is_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="height_range_m"):
        GatesConfig(height_range_m=(100.0, 0.0))
    with pytest.raises(ValidationError, match="region"):
        GatesConfig(region=(10.0, 0.0, 0.0, 5.0))


# ------------------------------------------------------------------------------------- raster facts


def _write_tif(path: Path, a: np.ndarray, nodata=None, res: float = 1.0) -> Path:
    a = a if a.ndim == 3 else a[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=a.shape[2],
        height=a.shape[1],
        count=a.shape[0],
        dtype=a.dtype,
        crs="EPSG:25832",
        transform=Affine(res, 0, 362000, 0, -res, 5716100),
        nodata=nodata,
    ) as ds:
        ds.write(a)
    return path


def _spikes_reference(a: np.ndarray, ok: np.ndarray, s: float) -> int:
    n = 0
    h, w = a.shape
    for r in range(h):
        for c in range(w):
            if not ok[r, c]:
                continue
            nbs = [
                a[rr, cc]
                for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                if 0 <= rr < h and 0 <= cc < w and ok[rr, cc]
            ]
            if nbs and (all(a[r, c] - v > s for v in nbs) or all(a[r, c] - v < -s for v in nbs)):
                n += 1
    return n


@pytest.mark.parametrize("strip_rows", [1, 3, 7, 512])
def test_dgm_facts_match_a_per_cell_reference_across_strips(tmp_path, strip_rows):
    rng = np.random.default_rng(12)
    a = (50 + rng.normal(0, 2, (23, 17))).astype(np.float32)
    a[rng.integers(0, 23, 6), rng.integers(0, 17, 6)] += np.float32(300)  # spikes, some on strip edges
    a[0, 0] -= 400  # a pit in a corner
    a[5, :] = -9999  # a nodata row
    p = _write_tif(tmp_path / "dgm.tif", a, nodata=-9999)
    f = raster_facts(p, role="dgm", spike_m=200.0, strip_rows=strip_rows, working_crs="EPSG:25832")
    ok = a != -9999
    assert f["valid"] == int(ok.sum()) and f["cells"] == a.size
    assert f["spikes"] == _spikes_reference(a.astype(float), ok, 200.0) > 0
    assert f["min"] == pytest.approx(float(a[ok].min())) and f["max"] == pytest.approx(float(a[ok].max()))
    assert f["area_m2"] == int(ok.sum()) and f["out_of_range"] == 0
    assert f["bounds_xy"] == [362000.0, 5716100.0 - 23, 362017.0, 5716100.0]


def test_spike_kernel_ignores_invalid_neighbours():
    a = np.array([[0, 0, 0], [0, 500, 0], [0, 0, 0]], dtype=float)
    ok = np.ones_like(a, dtype=bool)
    assert _spikes(a, ok, 200.0) == 1
    ok[1, 1] = False
    assert _spikes(a, ok, 200.0) == 0


def test_raster_facts_undeclared_nodata_empty_and_black(tmp_path):
    a = np.full((40, 40), 60.0, dtype=np.float32)
    a.reshape(-1)[::97] = 1e30
    f = raster_facts(_write_tif(tmp_path / "a.tif", a), role="dgm", strip_rows=8)
    assert f["out_of_range"] == len(range(0, a.size, 97)) and f["max"] == pytest.approx(1e30)
    f = raster_facts(_write_tif(tmp_path / "b.tif", np.full((9, 9), -1.0, np.float32), nodata=-1), role="dgm")
    assert f["valid"] == 0 and "hole" in pl.input_problems(f, GatesConfig())[0]
    z = np.zeros((4, 30, 30), np.uint8)
    f = raster_facts(_write_tif(tmp_path / "c.tif", z), role="orthophoto", bands_needed=4, strip_rows=4)
    assert f["black"] is True
    z[2, 29, 29] = 1  # one lit pixel in the last strip: not black
    f = raster_facts(_write_tif(tmp_path / "d.tif", z), role="orthophoto", bands_needed=4, strip_rows=4)
    assert f["black"] is False
    f = raster_facts(_write_tif(tmp_path / "e.tif", z[:2].copy()), role="orthophoto", bands_needed=4)
    assert f["bands"] == 2 and pl.input_problems(f, GatesConfig())[0].startswith("raster has 2 band(s)")


# ------------------------------------------------------------------------------------- small pieces


def test_report_histogram_bins_are_bounded():
    from pipeline.report import MAX_HIST_BINS, height_bins

    assert len(height_bins(np.array([3.0, 12.5]))) == 14  # 1 m bins for a normal city
    for top in (1e6 + 50, 1e30):
        edges = height_bins(np.array([3.0, 8.0, top]))
        assert len(edges) <= MAX_HIST_BINS + 2 and edges[-1] >= top


def test_height_plot_of_an_absurd_building_height_is_fast(tmp_path):
    """One aerial tile at Z + 1e6 m made the report build ~10^6 histogram bins (> 600 s, killed)."""
    import time

    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.report import ReleaseData, plot_height_distribution

    heights = [4.0, 9.5, 12.0, 1e6 + 12.0, np.nan]
    b = gpd.GeoDataFrame({"height": heights}, geometry=[box(i, 0, i + 1, 1) for i in range(5)], crs=25832)
    data = ReleaseData(root=tmp_path, buildings=b)
    t0 = time.perf_counter()
    plot_height_distribution(data, tmp_path / "h.png")
    assert time.perf_counter() - t0 < 20 and (tmp_path / "h.png").stat().st_size > 1000


def test_build_id_does_not_change_when_the_cache_moves(tmp_path):
    from pipeline.config import config_hash, load_config
    from pipeline.model import InputFile
    from pipeline.release.manifest import build_id_for

    cfg = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    a = load_config(cfg)
    b = load_config(cfg, {"paths.cache": str(tmp_path / "elsewhere"), "paths.out": str(tmp_path / "o")})
    c = load_config(cfg, {"release.gates.max_change.buildings": 0.5})
    d = load_config(cfg, {"layers.buildings.roof_percentile": 60.0})
    inputs = [InputFile(tmp_path / "x.laz", "aerial:2024", 3, "ab" * 32)]
    assert build_id_for(config_hash(a), inputs) == build_id_for(config_hash(b), inputs)
    assert config_hash(a) == config_hash(c)
    assert config_hash(a) != config_hash(d)  # what shapes outputs still counts


def test_dedupe_skip_keeps_the_first_name_and_warns(tmp_path):
    from pipeline.config import load_config
    from pipeline.model import InputFile
    from pipeline.orchestrate.inputs import dedupe_inputs

    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
    raw = tmp_path / "raw"
    files = [
        InputFile(raw / "aerial/2024/a.laz", "aerial:2024", 3, "11" * 32),
        InputFile(raw / "aerial/2024/b.laz", "aerial:2024", 3, "22" * 32),
        InputFile(raw / "aerial/2024/copy_of_a.laz", "aerial:2024", 3, "11" * 32),
    ]
    skip = load_config(cfg_path, {"paths.raw": str(raw), "release.gates.duplicate_inputs": "skip"})
    kept, warnings = dedupe_inputs(skip, files)
    assert [i.path.name for i in kept] == ["a.laz", "b.laz"]
    assert (
        len(warnings) == 1
        and "aerial/2024/copy_of_a.laz" in warnings[0]
        and "aerial/2024/a.laz" in warnings[0]
    )
    with pytest.raises(InputError, match="same file content") as e:
        dedupe_inputs(load_config(cfg_path, {"paths.raw": str(raw)}), files)
    assert e.value.exit_code == 2


def test_truncated_nas_is_a_bad_input_not_a_partial_read(tmp_path):
    """A NAS file cut at 60 % must be an InputError (it published 3 of 33 buildings with one warning)."""
    from pipeline.sources.cadastre import read_footprints

    from .test_cadastre_readers import X0, Y0, _nas, _pl, simple

    feats = [
        simple(
            f"DENW36AL{n:08d}",
            _pl(
                *(
                    v
                    for dx, dy in ((0, 0), (8, 0), (8, 8), (0, 8), (0, 0))
                    for v in (X0 + 20 * n + dx, Y0 + dy)
                )
            ),
        )
        for n in range(33)
    ]
    assert len(read_footprints([_write(tmp_path / "whole.xml", _nas(feats))], "nas")) == 33
    text = _nas(feats)
    p = tmp_path / "nas.xml"
    p.write_text(text[: int(len(text) * 0.6)], encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_footprints([p], "nas")
    assert e.value.exit_code == 2 and "nas.xml" in str(e.value)


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------- bad-input corpus

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|internal error")


def _tree_digest(release: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(release.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(release).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus_project(tiny_project, tiny_release, tmp_path_factory) -> Path:
    """A copy of the tiny district with its published release (each case damages its own raw copy)."""
    root = tmp_path_factory.mktemp("gates") / "p"
    shutil.copytree(tiny_project, root, symlinks=True)
    return root


def _case_config(project: Path, case: str, extra: str = "") -> Path:
    text = (project / "configs" / "tiny.yaml").read_text()
    text = text.replace("../data/tiny/raw", f"../data/raw_{case}")
    text = text.replace("../data/tiny/out", "../data/out").replace("../data/tiny/cache", "../data/cache")
    cfg = project / "configs" / f"{case}.yaml"
    cfg.write_text(text + extra)
    return cfg


def _build(cfg: Path, capfd, *flags: str) -> tuple[int, str]:
    from pipeline.cli.main import main

    code = main(["build", str(cfg), "--quiet", "--jobs", "1", *flags])
    out, err = capfd.readouterr()
    return code, out + err


def _published(project: Path) -> tuple[Path, str, list[str]]:
    out = project / "data" / "out"
    cur = (out / "current").resolve()
    releases = sorted(p.name for p in (out / "releases").iterdir() if not p.name.startswith("."))
    return cur, _tree_digest(cur), releases


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(bad.CASES))
def test_bad_input_is_refused_with_its_exit_code(corpus_project, case, capfd):
    damage, code, words = bad.CASES[case]
    raw = corpus_project / "data" / f"raw_{case}"
    shutil.copytree(corpus_project / "data" / "raw", raw)
    damage(raw)
    cfg = _case_config(corpus_project, case)
    before = _published(corpus_project)
    got, text = _build(cfg, capfd)
    assert not TRACEBACK.search(text), text[-3000:]
    assert got == code, text[-3000:]
    line = next(ln for ln in text.splitlines() if ln.startswith("twin: error:"))
    for w in words:
        assert w in line, line
    assert _published(corpus_project) == before  # current, its bytes and the release list unchanged


@pytest.mark.slow
def test_region_gate_refuses_inputs_outside_the_configured_region(corpus_project, capfd):
    shutil.copytree(corpus_project / "data" / "raw", corpus_project / "data" / "raw_region")
    extra = "\n  gates:\n    region: [362000, 5716000, 362150, 5716200]\n"
    cfg = _case_config(corpus_project, "region", extra)
    assert "\nrelease:\n" in cfg.read_text()
    before = _published(corpus_project)
    # the gates decide publishing, not bytes: same build id as `current` (up to date) unless forced
    got, text = _build(cfg, capfd)
    assert got == 0 and "Up to date" in text
    got, text = _build(cfg, capfd, "--force")
    assert got == 2 and not TRACEBACK.search(text), text[-3000:]
    assert "outside the configured region" in text
    assert _published(corpus_project) == before


@pytest.mark.slow
def test_buildings_drop_refuses_until_accepted_and_the_flag_is_recorded(corpus_project, capfd):
    """Half the cadastre's buildings gone overnight: exit 8, nothing published; accepted with the flag it
    publishes and the manifest says so."""
    import json

    raw = corpus_project / "data" / "raw_drop"
    shutil.copytree(corpus_project / "data" / "raw", raw)
    bad.half_the_buildings(raw)
    cfg = _case_config(corpus_project, "drop")
    before = _published(corpus_project)
    got, text = _build(cfg, capfd)
    assert got == EXIT_IMPLAUSIBLE and not TRACEBACK.search(text), text[-3000:]
    assert "buildings dropped from 31" in text and "--accept-change buildings" in text
    assert _published(corpus_project) == before
    last = json.loads((corpus_project / "data" / "out" / ".twin" / "last-build.json").read_text())
    assert last["state"] == "failed" and last["exit_code"] == EXIT_IMPLAUSIBLE  # what `twin status` shows
    got, text = _build(cfg, capfd, "--accept-change", "buildings")
    assert got == 0 and not TRACEBACK.search(text), text[-3000:]
    cur = (corpus_project / "data" / "out" / "current").resolve()
    assert cur != before[0]
    rec = json.loads((cur / "manifest.json").read_text())["plausibility"]
    assert rec["accept_flags"] == ["buildings"]
    assert [f["metric"] for f in rec["accepted"]] == ["buildings"]
    assert rec["summary"]["buildings"] < 0.9 * rec["previous"]["buildings"]


def test_public_report_does_not_read_an_internal_layer(tmp_path):
    """`layers.change.access: internal`: the (public) report gets the public layers only and must not plot
    the change layer's data (its change map leaked it into every public export)."""
    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.report import ReleaseData

    (tmp_path / "change").mkdir()
    gdf = gpd.GeoDataFrame(
        {"change_class": ["raised"], "h_new": [9.0]}, geometry=[box(0, 0, 1, 1)], crs=25832
    )
    gdf.to_file(tmp_path / "change" / "change.gpkg", layer="buildings_change", engine="pyogrio")
    public = [{"name": "buildings", "access": "public"}]
    assert ReleaseData.load(tmp_path, layers=public, internal=["change"]).change is None  # the build
    listed = [*public, {"name": "change", "access": "internal"}]
    assert ReleaseData.load(tmp_path, layers=listed).change is None  # a manifest naming it internal
    assert len(ReleaseData.load(tmp_path, layers=public).change) == 1
    assert len(ReleaseData.load(tmp_path).change) == 1


@pytest.mark.slow
def test_a_missing_dgm_tile_is_a_terrain_area_drop(corpus_project, capfd):
    """One of four DGM tiles missing from the delivery: every file is fine, the terrain has a hole of
    25 %: exit 8 naming terrain_area, nothing published."""
    raw = corpus_project / "data" / "raw_nodgm"
    shutil.copytree(corpus_project / "data" / "raw", raw)
    sorted(raw.glob("dgm/*.tif"))[-1].unlink()
    cfg = _case_config(corpus_project, "nodgm")
    before = _published(corpus_project)
    got, text = _build(cfg, capfd)
    assert got == EXIT_IMPLAUSIBLE and not TRACEBACK.search(text), text[-3000:]
    assert "terrain_area dropped from 40,000 m2" in text and "-25.0%" in text
    assert _published(corpus_project) == before
