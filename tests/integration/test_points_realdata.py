"""Real third-party samples from ../shared/realdata (skipped when absent): feet, COPC, E57, CRS traps."""

from __future__ import annotations

import json
from pathlib import Path

import laspy
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.orchestrate.points_plan import PointTilingOptions
from pipeline.orchestrate.points_run import tile_pointcloud
from pipeline.tiles.points_reader import pointcloud_invariants, tile_positions_mm

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent"),
]
EDGE = REALDATA / "las_edge_cases"


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["points", *args, "--jobs", "1", "--quiet"])
    return code, capsys.readouterr().err


def test_autzen_feet_to_metres(tmp_path):
    """Autzen: EPSG:2994 international feet, Z in feet, no vertical CRS -> --assume-ellipsoidal."""
    src = REALDATA / "autzen" / "autzen_class.las"
    out = tmp_path / "autzen"
    s = tile_pointcloud([src], out, PointTilingOptions(assume_ellipsoidal=True))
    las = laspy.read(src)
    assert s.points_out == len(las.points) == pointcloud_invariants(out / "tileset.json")["points"]
    assert any("0.3048" in n for n in s.notes)
    pos = np.concatenate([tile_positions_mm(p) for p in (out / "content").rglob("*.glb")]) / 1000.0

    # horizontal spread (rotation invariant: ENU north is not grid north) in metres = feet * 0.3048
    def rms(x, y):
        return float(np.sqrt(np.mean((x - x.mean()) ** 2 + (y - y.mean()) ** 2)))

    lx, ly = np.asarray(las.x, dtype=float), np.asarray(las.y, dtype=float)
    assert rms(pos[:, 0], pos[:, 1]) == pytest.approx(rms(lx, ly) * 0.3048, rel=2e-3)
    zr = (float(las.z.max()) - float(las.z.min())) * 0.3048
    assert np.ptp(pos[:, 2]) == pytest.approx(zr, abs=1.0)  # heights converted from feet too


def test_autzen_without_vertical_refused(tmp_path, capsys):
    code, err = _cli([str(REALDATA / "autzen" / "autzen_class.las"), "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and "autzen_class.las" in err and "vertical" in err


def test_copc_files(tmp_path):
    # NAVD88 heights need a US geoid grid PROJ does not have offline: refused loudly, never ballpark
    from pipeline.errors import CrsError

    with pytest.raises(CrsError, match=r"PROJ needs the grid us_noaa_geoid03|no exact transformation"):
        tile_pointcloud([EDGE / "1.2-with-color.copc.laz"], tmp_path / "navd", PointTilingOptions())
    assert not (tmp_path / "navd").exists()
    cases = (
        ("1.2-with-color.copc.laz", {"crs": "EPSG:2994", "assume_ellipsoidal": True}),
        ("ellipsoid.copc.laz", {"assume_ellipsoidal": True}),
    )
    for name, extra in cases:
        out = tmp_path / name
        s = tile_pointcloud([EDGE / name], out, PointTilingOptions(**extra))
        with laspy.open(EDGE / name) as r:
            assert s.points_out == r.header.point_count
        assert pointcloud_invariants(out / "tileset.json")["checksum"] == f"{s.checksum:016x}"


def test_e57_scans(tmp_path):
    src = REALDATA / "e57" / "bunnyDouble.e57"
    out = tmp_path / "e57"
    s = tile_pointcloud([src], out, PointTilingOptions(crs="EPSG:32632", assume_ellipsoidal=True))
    assert s.points_out == 30571
    tiny = REALDATA / "e57" / "tiny_spherical.e57"
    s2 = tile_pointcloud(
        [tiny], tmp_path / "sph", PointTilingOptions(crs="EPSG:32632", assume_ellipsoidal=True)
    )
    assert s2.points_out > 0


def test_e57_without_crs_refused(tmp_path, capsys):
    code, err = _cli([str(REALDATA / "e57" / "bunnyDouble.e57"), "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and "bunnyDouble.e57" in err and "no CRS" in err


def test_epsg4326_handled_or_refused(tmp_path, capsys):
    """The sample really holds degrees: refused without a vertical datum, handled when heights are declared."""
    src = EDGE / "epsg_4326.las"
    code, err = _cli([str(src), "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and "epsg_4326.las" in err
    code, err = _cli([str(src), "--out", str(tmp_path / "ok"), "--assume-ellipsoidal"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "ok" / "tileset.json").read_text())
    assert doc["root"]["geometricError"] > 0


def test_warsaw_empty_wkt_refused(tmp_path, capsys):
    src = EDGE / "warsaw_small.las"
    code, err = _cli([str(src), "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and "warsaw_small.las" in err and "CRS" in err
    assert not (tmp_path / "x").exists()


def test_no_crs_sample_refused(tmp_path, capsys):
    code, err = _cli([str(EDGE / "1.2-with-color.las"), "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and "no CRS" in err
