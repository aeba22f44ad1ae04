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
from pipeline.model import BuildContext, InputFile
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
        "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},  # a position list declares no CRS
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


# ---- tracks, true headings, images ------------------------------------------------------------------


def test_tracks_split_by_time_gap_or_track_column(tmp_path: Path) -> None:
    from pipeline.orchestrate.panoramas import concat_tables, track_sequence

    rows = [(t, 362000.0 + t, 5702000.0, 55.0, 90.0, f"i{k}") for k, t in enumerate((0, 1, 2, 100, 101, 1.5))]
    f = _csv(tmp_path / "a.csv", rows)
    t = concat_tables([read_panorama_csv(f)], gap_seconds=30.0)
    # sorted by time: 0, 1, 1.5, 2 | 100, 101 -> two runs
    assert t.track_id == ["a:1", "a:1", "a:1", "a:2", "a:2", "a:1"]
    assert track_sequence(t).tolist() == [0, 1, 3, 0, 1, 2]
    g = tmp_path / "b.csv"
    g.write_text(
        "time,x,y,z,heading,image_id,track_id\n5,1,2,3,4,q1,north\n1,1,2,3,4,q2,north\n2,1,2,3,4,q3,x\n"
    )
    t = concat_tables([read_panorama_csv(g)])
    assert t.track_id == ["b:north", "b:north", "b:x"] and track_sequence(t).tolist() == [1, 0, 0]
    g.write_text("time,x,y,z,heading,image_id,track_id\n5,1,2,3,4,q1,\n")
    with pytest.raises(InputError, match="track_id is empty") as ei:
        read_panorama_csv(g)
    assert ei.value.record == "row 2"


def test_true_heading_turns_by_the_meridian_convergence(tmp_path: Path) -> None:
    """UTM 32 west of its central meridian (9° E): the meridians converge towards the central meridian,
    so true north points east of grid north and a grid heading is |convergence| larger than the true
    heading (about 1.55° at 7.0° E, 51.45° N). Reference: PROJ's factors, not the builder's geodesic."""
    import pyproj

    f = _csv(tmp_path / "raw" / "pano" / "track.csv")
    ctx = _ctx(tmp_path, [f])
    build_panorama_layers(ctx, [])
    gj = json.loads((ctx.release_dir / "panoramas/panoramas.geojson").read_text())
    for feat, row in zip(gj["features"], ROWS, strict=True):
        lon, lat, _ = feat["geometry"]["coordinates"]
        gamma = pyproj.Proj("EPSG:25832").get_factors(lon, lat).meridian_convergence
        assert 1.0 < abs(gamma) < 2.0
        assert feat["properties"]["heading_true"] == pytest.approx(row[4] - abs(gamma), abs=0.01)
        assert feat["properties"]["heading"] == row[4]


def test_true_heading_reference_keeps_the_heading(tmp_path: Path) -> None:
    from tests._panorama_release import build_layer, inputs_of, panorama_config, write_demo_panoramas

    _city, rows, _ids = write_demo_panoramas(tmp_path / "raw", count=0)
    cfg = panorama_config(tmp_path, heading_reference="true", panorama_images=None)
    res = build_layer(cfg, tmp_path / "rel", inputs_of(cfg))
    gj = json.loads((tmp_path / "rel" / res.files[0]).read_text())
    assert [f["properties"]["heading_true"] for f in gj["features"]] == [
        round(r[4], 2) for r in rows
    ]  # as in the CSV
    assert "image" not in gj["features"][0]["properties"]  # no images configured


def test_demo_panoramas_with_images(tmp_path: Path) -> None:
    """The tiny demo's list and four images: images copied byte for byte and listed, tracks and sequence
    follow the demo's tracks (one per street, driven one after the other)."""
    from tests._panorama_release import write_panorama_release

    pr = write_panorama_release(tmp_path, with_sample=False)
    res = pr.layer
    assert res.stats["panoramas"] == len(pr.rows) and res.stats["images"] == 4
    imgs = sorted(f for f in res.files if f.endswith(".jpg"))
    assert imgs == sorted(f"panoramas/images/{i}.jpg" for i in pr.image_ids)
    for rel in imgs:
        src = pr.raw / "mobile" / "panoramas" / Path(rel).name
        assert (pr.release / rel).read_bytes() == src.read_bytes()
    gj = json.loads((pr.release / "panoramas/panoramas.geojson").read_text())
    props = {f["id"]: f["properties"] for f in gj["features"]}
    # demo image ids are GSC<year>_<track>_<index along the track>: the builder knows neither
    demo_tracks = {i.split("_")[1] for i in props}
    assert res.stats["tracks"] == len(demo_tracks)
    by_track: dict[str, list[tuple[int, str]]] = {}
    for i, p in props.items():
        by_track.setdefault(p["track"], []).append((p["sequence"], i))
        assert (p["image"] is not None) == (i in pr.image_ids)
    for members in by_track.values():
        members.sort()
        assert [s for s, _ in members] == list(range(len(members)))
        assert len({i.split("_")[1] for _, i in members}) == 1  # one demo track
        idx = [int(i.split("_")[2]) for _, i in members]
        assert idx == sorted(idx)
    seqs = [props[i]["sequence"] for i in pr.image_ids]
    assert seqs == list(range(seqs[0], seqs[0] + 4))  # consecutive along the track
    assert len({props[i]["track"] for i in pr.image_ids}) == 1


def test_bad_and_orphan_images(tmp_path: Path) -> None:
    from PIL import Image

    from tests._panorama_release import build_layer, inputs_of, panorama_config, write_demo_panoramas

    _city, _rows, ids = write_demo_panoramas(tmp_path / "raw", count=1)
    folder = tmp_path / "raw" / "mobile" / "panoramas"
    Image.new("RGB", (64, 32)).save(folder / "not_in_the_list.jpg", "JPEG")
    cfg = panorama_config(tmp_path)
    res = build_layer(cfg, tmp_path / "rel", inputs_of(cfg))
    assert res.stats["images"] == 1
    assert any("1 image(s) have no recording" in w and "not_in_the_list.jpg" in w for w in res.warnings)
    # a 3:2 image is no equirectangular panorama; a PNG named .jpg is refused too
    Image.new("RGB", (60, 40)).save(folder / f"{ids[0]}.jpg", "JPEG")
    with pytest.raises(InputError, match="twice as wide") as ei:
        build_layer(cfg, tmp_path / "rel2", inputs_of(cfg))
    assert ei.value.path is not None and ids[0] in str(ei.value.path)
    Image.new("RGB", (64, 32)).save(folder / f"{ids[0]}.jpg", "PNG")
    with pytest.raises(InputError, match="expected JPEG"):
        build_layer(cfg, tmp_path / "rel3", inputs_of(cfg))
    (folder / f"{ids[0]}.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        build_layer(cfg, tmp_path / "rel4", inputs_of(cfg))


# ---- public export: no image, no position --------------------------------------------------------------


def _position_strings(pr) -> set[str]:
    """The recording positions as they could be written: lon/lat to 5 decimals (about 1 m) and the
    delivery's easting/northing to 1 decimal."""
    gj = json.loads((pr.release / "panoramas/panoramas.geojson").read_text())
    out = set()
    for f in gj["features"]:
        lon, lat, _h = f["geometry"]["coordinates"]
        out |= {f"{lon:.5f}"[:-1], f"{lat:.5f}"[:-1]}  # truncated: matches any longer representation
    for _t, x, y, _z, _h, _i in pr.rows:
        out |= {f"{x:.1f}"[:-2], f"{y:.1f}"[:-2]}
    return out


def test_public_export_has_no_image_and_no_position(tmp_path: Path) -> None:
    from pipeline.cli.main import main
    from pipeline.viewer.build import find_cesium_build, write_viewer
    from tests._panorama_release import write_panorama_release

    pr = write_panorama_release(tmp_path)
    cesium = find_cesium_build()
    if cesium is not None:  # the viewer goes public too (its program names the panorama feature)
        viewer = write_viewer(pr.release, build_id="pano0000", cesium_build=cesium)
        m = json.loads((pr.release / "manifest.json").read_text())
        m["layers"].append(viewer.to_json())
        (pr.release / "manifest.json").write_text(json.dumps(m))
    dest = tmp_path / "public"
    assert main(["publish", "--release", str(pr.release), "--public", str(dest), "--json"]) == 0
    exported = [p for p in dest.rglob("*") if p.is_file()]
    assert exported and not (dest / "panoramas").exists()
    image_bytes = {(pr.release / f).read_bytes() for f in pr.layer.files if f.endswith(".jpg")}
    assert len(image_bytes) == 4
    pm = json.loads((dest / "manifest.json").read_text())
    assert [lay["name"] for lay in pm["layers"] if lay["kind"] == "panoramas"] == []
    assert not [i for i in pm["inputs"] if i["role"].startswith("panoramas")]
    # the public sample layers contain no coordinates of the positions: they lie 14 km apart, so a hit
    # below is a leak, not a coincidence (the sample frame is 362000 E, 5702000 N)
    positions = _position_strings(pr)
    ids = {r[5] for r in pr.rows}
    for p in exported:
        rel = p.relative_to(dest).as_posix()
        if not rel.startswith("viewer/cesium/"):  # CesiumJS's own textures are JPEG files
            assert p.suffix.lower() not in (".jpg", ".jpeg"), rel
        data = p.read_bytes()
        assert data not in image_bytes, rel
        for i in ids:
            assert i.encode() not in data and i not in rel, (rel, i)
        if p.suffix in (".json", ".geojson", ".csv", ".txt", ".html", ".gltf") and "cesium" not in rel:
            text = data.decode("utf-8", "replace")
            for s in positions:
                assert s not in text, (rel, s)


def test_public_export_refuses_a_copied_panorama(tmp_path: Path) -> None:
    """An image of the internal layer copied into a public folder under a harmless name is caught by its
    content (neither its path nor its name gives it away)."""
    from pipeline.release.access import export_public
    from pipeline.release.publish import ReleaseError
    from tests._panorama_release import write_panorama_release

    pr = write_panorama_release(tmp_path)
    img = next(f for f in pr.layer.files if f.endswith(".jpg"))
    (pr.release / "buildings" / "facade.jpg").write_bytes((pr.release / img).read_bytes())
    with pytest.raises(ReleaseError, match=r"buildings/facade\.jpg is a copy of the internal image"):
        export_public(pr.release, tmp_path / "public")
    assert not (tmp_path / "public").exists()


def test_public_export_refuses_a_copied_position_list(tmp_path: Path) -> None:
    """The recording list copied into a public folder under another name is refused: it names the
    layer's images and the list file it was read from (both internal)."""
    from pipeline.release.access import export_public
    from pipeline.release.publish import ReleaseError
    from tests._panorama_release import write_panorama_release

    pr = write_panorama_release(tmp_path)
    gj = (pr.release / "panoramas" / "panoramas.geojson").read_text()
    (pr.release / "buildings" / "stops.geojson").write_text(gj)
    with pytest.raises(ReleaseError, match=r"buildings/stops\.geojson contains"):
        export_public(pr.release, tmp_path / "public")
    assert not (tmp_path / "public").exists()
