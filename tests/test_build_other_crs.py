"""Other CRSs through config: Autzen (EPSG:2994, international feet, no vertical CRS) builds a valid point layer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pyproj import Transformer

from pipeline.buildlog import BuildLog
from pipeline.config import load_config
from pipeline.orchestrate.build import run_build
from pipeline.orchestrate.points import pointcloud_invariants

pytestmark = pytest.mark.slow

FT = 0.3048

CONFIG = """
name: autzen
paths: {raw: raw, out: out, cache: cache}
crs:
  horizontal: EPSG:2994        # NAD83(HARN) / Oregon GIC Lambert (ft)
  vertical: null               # the survey has no vertical CRS ...
  assume_ellipsoidal_heights: true   # ... and its Z is taken as ellipsoidal height (in the file's feet)
runtime: {workers: 1, progress: false}
sources:
  aerial:
    - {epoch: "2010", points: "*.las", class_scheme: asprs}
layers:
  aerial_points: {colour_from_orthophoto: false}
  viewer: {enabled: false}
"""


def test_autzen_feet_through_config(tmp_path, realdata):
    (tmp_path / "raw").mkdir()
    shutil.copy(realdata / "autzen" / "autzen_class.las", tmp_path / "raw")
    (tmp_path / "twin.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "twin.yaml")
    res = run_build(cfg, workers=1, log=BuildLog(quiet=True))
    manifest = json.loads((res.release_dir / "manifest.json").read_text())
    layer = next(lay for lay in manifest["layers"] if lay["name"] == "aerial_points")
    inv = pointcloud_invariants(res.release_dir / layer["tileset"])
    assert inv["points"] == 110_000 == layer["stats"]["points_in"]

    # the root transform maps the content frame to ECEF; its origin lies in Eugene, Oregon, on the ellipsoid
    ts = json.loads((res.release_dir / layer["tileset"]).read_text())
    m = np.array(ts["root"]["transform"]).reshape(4, 4).T
    lon, lat, h = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True).transform(*m[:3, 3])
    assert -123.2 < lon < -123.0 and 44.0 < lat < 44.1 and abs(h) < 1.0

    # Z went from feet to metres: the tight root box spans the data's height range in metres, not feet
    box = ts["root"]["boundingVolume"]["box"]
    z_lo, z_hi = box[2] - abs(box[11]), box[2] + abs(box[11])
    span_m = z_hi - z_lo
    import laspy

    las = laspy.read(realdata / "autzen" / "autzen_class.las")
    span_ft = float(las.z.max() - las.z.min())
    assert span_m == pytest.approx(span_ft * FT, rel=0.05, abs=2.0)

    # the terrain from ground points uses the same Z unit rule: it lies at the points' ground, not 3.3x above
    terrain = json.loads((res.release_dir / "terrain" / "tileset.json").read_text())
    tb = terrain["root"]["boundingVolume"]["box"]
    t_hi = tb[2] + abs(tb[11])
    assert z_lo - 10.0 < t_hi < z_hi + 1.0
    assert res.seconds < 120, "terrain from a sparse survey must not explode into millions of triangles"
