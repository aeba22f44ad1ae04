"""Panorama locations layer: CSV -> GeoJSON (EPSG:4326, ellipsoidal heights), internal by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyproj import Transformer

from pipeline.buildlog import BuildLog
from pipeline.config.model import TwinConfig
from pipeline.crs import locate_geoid_grid
from pipeline.errors import CrsError, InputError
from pipeline.orchestrate.context import BuildContext, InputFile
from pipeline.orchestrate.panoramas import build_panorama_layers, read_panorama_csv
from pipeline.viewer.sample import sample_frame

ROWS = [
    (1000.5, 362010.0, 5702020.0, 55.2, 90.0, "img_0001"),
    (1001.5, 362015.0, 5702021.5, 55.4, 92.5, "img_0002"),
    (1002.5, 362020.0, 5702023.0, 55.3, 95.0, "img_0003"),
]


def _csv(path: Path, rows=ROWS, header="time,x,y,z,heading,image_id") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def _ctx(tmp_path: Path, files: list[Path], **layer: object) -> BuildContext:
    raw = {
        "name": "t",
        "paths": {
            "raw": str(tmp_path / "raw"),
            "out": str(tmp_path / "out"),
            "cache": str(tmp_path / "cache"),
        },
        "sources": {"mobile": {"panoramas": "pano/*.csv"}},
        "base_dir": str(tmp_path),
    }
    if layer:
        raw["layers"] = {"panoramas": layer}
    cfg = TwinConfig.model_validate(raw)
    rel = tmp_path / "release"
    rel.mkdir()
    return BuildContext(
        cfg=cfg,
        build_id="b",
        release_dir=rel,
        frame=sample_frame(),
        inputs=[InputFile(f, "panoramas", f.stat().st_size, "0" * 64) for f in files],
        log=BuildLog(quiet=True),
    )


def test_panoramas_to_geojson_with_ellipsoidal_heights(tmp_path: Path) -> None:
    f = _csv(tmp_path / "raw" / "pano" / "track.csv")
    ctx = _ctx(tmp_path, [f])
    (res,) = build_panorama_layers(ctx, [])
    assert res.kind == "panoramas" and res.access == "internal"  # licensed for municipal use only
    assert res.files == ["panoramas/panoramas.geojson"]
    assert res.stats["panoramas"] == 3
    gj = json.loads((ctx.release_dir / res.files[0]).read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 3
    # reference: PROJ with the GCG2016 grid, independent of the module's code path
    import pyproj

    pyproj.datadir.append_data_dir(str(locate_geoid_grid(ctx.cfg.crs).parent))
    ref = Transformer.from_crs("EPSG:25832+7837", "EPSG:4979", always_xy=True, allow_ballpark=False)
    for feat, row in zip(gj["features"], ROWS, strict=True):
        lon, lat, h = ref.transform(row[1], row[2], row[3])
        got = feat["geometry"]["coordinates"]
        assert got[0] == pytest.approx(lon, abs=1e-8) and got[1] == pytest.approx(lat, abs=1e-8)
        assert got[2] == pytest.approx(h, abs=0.002)
        assert 40 < got[2] - row[3] < 50  # the quasigeoid in the Ruhr is about 45 m: heights really moved
        assert feat["properties"]["image_id"] == row[5]
        assert feat["properties"]["heading"] == row[4]
    # deterministic bytes
    first = (ctx.release_dir / res.files[0]).read_bytes()
    build_panorama_layers(ctx, [])
    assert (ctx.release_dir / res.files[0]).read_bytes() == first


def test_access_from_config(tmp_path: Path) -> None:
    f = _csv(tmp_path / "raw" / "pano" / "track.csv")
    (res,) = build_panorama_layers(_ctx(tmp_path, [f], access="public"), [])
    assert res.access == "public"


def test_disabled_or_unconfigured_is_a_no_op(tmp_path: Path) -> None:
    f = _csv(tmp_path / "raw" / "pano" / "track.csv")
    assert build_panorama_layers(_ctx(tmp_path, [f], enabled=False), []) == []


@pytest.mark.parametrize(
    ("header", "rows", "record", "text"),
    [
        ("time,x,y,heading,image_id", [(1, 2, 3, 4, "a")], "row 1", "missing column(s) z"),
        (
            "time,x,y,z,heading,image_id",
            [(1, 362000, 5702000, 50, 10, "a"), (2, "abc", 5702000, 50, 10, "b")],
            "row 3",
            "'abc' is not a number",
        ),
        ("time,x,y,z,heading,image_id", [(1, 362000, 5702000, 50, 400, "a")], "row 2", "outside 0..360"),
        ("time,x,y,z,heading,image_id", [(1, 362000, 5702000, "nan", 10, "a")], "row 2", "not finite"),
        ("time,x,y,z,heading,image_id", [(1, 362000, 5702000, 50, 10, "")], "row 2", "image_id is empty"),
        ("time,x,y,z,heading,image_id", [(1, 362000, 5702000)], "row 2", "3 fields"),
    ],
)
def test_bad_csv_names_file_and_row(tmp_path: Path, header: str, rows: list, record: str, text: str) -> None:
    f = _csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(InputError) as ei:
        read_panorama_csv(f)
    assert ei.value.record == record
    assert text in str(ei.value)
    assert "bad.csv" in str(ei.value)


def test_duplicate_image_ids_refused(tmp_path: Path) -> None:
    f = _csv(tmp_path / "raw" / "pano" / "a.csv")
    g = _csv(tmp_path / "raw" / "pano" / "b.csv", ROWS[:1])
    with pytest.raises(InputError, match="img_0001"):
        build_panorama_layers(_ctx(tmp_path, [f, g]), [])


def test_coordinates_in_wrong_crs_refused(tmp_path: Path) -> None:
    # lon/lat degrees in a file declared as UTM metres
    f = _csv(tmp_path / "raw" / "pano" / "deg.csv", [(1, 7.01, 51.45, 50, 10, "a")])
    with pytest.raises(CrsError):
        build_panorama_layers(_ctx(tmp_path, [f]), [])


def test_semicolon_csv_and_extra_columns(tmp_path: Path) -> None:
    p = tmp_path / "semi.csv"
    p.write_text("image_id;time;x;y;z;heading;camera\nq1;5;362000;5702000;50;180;front\n")
    t = read_panorama_csv(p)
    assert t.image_id == ["q1"] and t.x[0] == 362000 and t.heading[0] == 180
