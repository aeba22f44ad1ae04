"""A raster delivery's headers are read once a build: the terrain, the imagery and the overlays (several
times) each scanned the orthophoto and the DGM again (~4,400 headers at ~1 ms per scan for the Ruhr)."""

from __future__ import annotations

import copy

import pipeline.orchestrate.terrain as terrain
from pipeline.orchestrate.overlays import ndvi_calls
from tests.unit.test_imagery_pyramid import _ctx, _district


def test_orthophoto_headers_read_once_per_build(tmp_path, monkeypatch):
    ctx = _ctx(_district(tmp_path, 2), "a")
    scans = []
    real = terrain.scan_rasters

    def counting(files, **kw):
        scans.append(len(files))
        return real(files, **kw)

    monkeypatch.setattr(terrain, "scan_rasters", counting)
    first = ndvi_calls(ctx, [])
    stage = copy.copy(ctx)  # what each stage of a build works on (`build._StageContext`)
    again = [ndvi_calls(stage, []) for _ in range(3)]
    assert scans == [4]  # before: one scan per call
    infos = terrain.delivery_infos(stage, "orthophoto")
    assert scans == [4]
    assert all([c[2][0] for c in calls] == [c[2][0] for c in first] for calls in again)
    assert [i.path for i in infos] == [c[2][0].path for c in first]
    infos.clear()  # a caller's list is its own
    assert len(terrain.delivery_infos(ctx, "orthophoto")) == 4
    # another build (a context of its own) reads the headers again
    other = _ctx(tmp_path, "b")
    ndvi_calls(other, [])
    assert scans == [4, 4]
