"""Issue 13 policies of `twin points` for real deliveries: LAS extra dimensions (all kept by default, listed,
no-data declared, never inf), the class scheme `auto`, intensity as delivered (E57), and the real samples in
../shared/realdata tiled through options alone.

Crafted files (laspy) and their tiles read back; every test checks an outcome that a regression changes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import laspy
import numpy as np
import pytest
from pyproj import CRS

from pipeline.errors import InputError
from pipeline.point_attributes import EXTRA_NO_DATA
from pipeline.stages.points.classes import infer_class_scheme
from pipeline.tiles.gltf import read_glb
from tests.unit.test_points_safety import cloud, run_points

REALDATA = Path(__file__).resolve().parents[2] / "../shared/realdata"


def write_las_extra(path: Path, n: int = 3000, classes=(2,), extra: bool = True, seed: int = 0) -> Path:
    """A LAS 1.4 file (EPSG:25832+7837) with classes cycling through `classes` and, with `extra`, two
    extra dimensions: `label` (uint8) and `height` (float64, Extra Bytes no_data -9999; every 10th point
    has it, point 5 holds 1e300, beyond float32)."""
    xyz = cloud(n, 372000, 5707000, seed=seed)
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.floor(xyz.min(axis=0))
    header.add_crs(CRS.from_user_input("EPSG:25832+7837"))
    if extra:
        header.add_extra_dims(
            [
                laspy.ExtraBytesParams("label", "u1"),
                laspy.ExtraBytesParams("height", "f8", no_data=[-9999.0]),
            ]
        )
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.classification = np.resize(np.asarray(classes, np.uint8), n)
    las.intensity = np.arange(n, dtype=np.uint16)
    if extra:
        las.label = (np.arange(n) % 7).astype(np.uint8)
        h = np.arange(n, dtype=np.float64) * 0.5
        h[::10] = -9999.0
        h[5] = 1e300
        las.height = h
    las.write(str(path))
    return path


def _glbs(out: Path) -> list[Path]:
    return sorted((out / "content").rglob("*.glb"))


def _column(out: Path, attr: str) -> np.ndarray:
    vals = []
    for p in _glbs(out):
        js, binary = read_glb(p.read_bytes())
        if "EXT_meshopt_compression" in js.get("extensionsUsed", []):
            from pipeline.tiles.gltf import decode_meshopt_views

            js, binary = decode_meshopt_views(js, binary)
        prim = js["meshes"][0]["primitives"][0]
        acc = js["accessors"][prim["attributes"][attr]]
        view = js["bufferViews"][acc["bufferView"]]
        n, stride = acc["count"], view["byteStride"]
        dtype = np.dtype({5126: "<f4", 5123: "<u2", 5121: "u1"}[acc["componentType"]])
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        idx = start + np.arange(n)[:, None] * stride + np.arange(dtype.itemsize)
        vals.append(np.frombuffer(binary, np.uint8)[idx].copy().view(dtype).ravel())
    return np.concatenate(vals)


def _attributes(out: Path) -> set[str]:
    js, _ = read_glb(_glbs(out)[0].read_bytes())
    return set(js["meshes"][0]["primitives"][0]["attributes"])


def _properties(out: Path) -> dict:
    js, _ = read_glb(_glbs(out)[0].read_bytes())
    return js["extensions"]["EXT_structural_metadata"]["schema"]["classes"]["point"]["properties"]


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(d).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ---- extra dimensions ----------------------------------------------------------------------------------


def test_extra_dimensions_all_kept_by_default_with_declared_no_data(tmp_path):
    src = write_las_extra(tmp_path / "mms.las")
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0 and s is not None
    assert s["extra_dimensions"] == ["label", "height"] and s["extra_dimensions_dropped"] == []
    assert {"_X_LABEL", "_X_HEIGHT"} <= _attributes(tmp_path / "out")
    props = _properties(tmp_path / "out")
    assert props["x_height"]["noData"] == EXTRA_NO_DATA and props["x_label"]["noData"] == EXTRA_NO_DATA
    height = _column(tmp_path / "out", "_X_HEIGHT")
    label = _column(tmp_path / "out", "_X_LABEL")
    assert len(height) == 3000 and np.all(np.isfinite(height))
    # 300 no-data points (every 10th) plus the one beyond float32 carry the declared value, no other
    assert int(np.sum(height == np.float32(EXTRA_NO_DATA))) == 301
    assert sorted(set(label.astype(int).tolist())) == list(range(7))
    expected = np.arange(3000) * 0.5
    valid = np.ones(3000, bool)
    valid[::10] = False
    valid[5] = False
    assert np.allclose(np.sort(height[height != np.float32(EXTRA_NO_DATA)]), np.sort(expected[valid]))


def test_extra_dim_none_and_by_name(tmp_path):
    src = write_las_extra(tmp_path / "mms.las")
    code, s = run_points(str(src), "--out", str(tmp_path / "none"), "--jobs", "1", "--extra-dim", "none")
    assert code == 0 and s is not None
    assert s["extra_dimensions"] == [] and s["extra_dimensions_dropped"] == ["height", "label"]
    assert not {a for a in _attributes(tmp_path / "none") if a.startswith("_X_")}
    code, s = run_points(str(src), "--out", str(tmp_path / "one"), "--jobs", "1", "--extra-dim", "label")
    assert code == 0 and s is not None
    assert s["extra_dimensions"] == ["label"] and s["extra_dimensions_dropped"] == ["height"]
    attrs = _attributes(tmp_path / "one")
    assert "_X_LABEL" in attrs and "_X_HEIGHT" not in attrs


def test_extra_dim_naming_a_standard_field_is_accepted_quietly(tmp_path, capsys):
    """`--extra-dim intensity` (a standard LAS field, always in the tiles) is no extra dimension: accepted
    without an "extra dimensions not found" note, intensity still tiled; scan_angle is refused with the
    option that asks for it."""
    src = write_las_extra(tmp_path / "mms.las")
    out = tmp_path / "std"
    code, s = run_points(
        str(src), "--out", str(out), "--jobs", "1", "--extra-dim", "intensity", "--extra-dim", "label"
    )
    assert code == 0 and s is not None
    assert s["extra_dimensions"] == ["label"] and s["extra_dimensions_dropped"] == ["height"]
    assert not [n for n in s["notes"] if "not found" in n], s["notes"]
    assert "_INTENSITY" in _attributes(out) and "_X_LABEL" in _attributes(out)
    code, s = run_points(
        str(src), "--out", str(tmp_path / "angle"), "--jobs", "1", "--extra-dim", "scan_angle"
    )
    assert code == 3 and s is None
    assert "--extra-dim: 'scan_angle' is a standard LAS field" in capsys.readouterr().err


def test_default_output_of_files_without_extra_dims_is_unchanged(tmp_path):
    """Defaults (all extra dims, scheme auto) give the same bytes as the former explicit choices
    (no extra dims, ASPRS) for a file without extra dimensions and with ASPRS-compatible codes."""
    src = write_las_extra(tmp_path / "plain.las", extra=False, classes=(2, 6))
    code, s = run_points(str(src), "--out", str(tmp_path / "default"), "--jobs", "1")
    assert code == 0 and s is not None and s["class_scheme"] == "asprs"
    code, s2 = run_points(str(src), "--out", str(tmp_path / "explicit"), "--jobs", "1",
                          "--extra-dim", "none", "--class-scheme", "asprs")  # fmt: skip
    assert code == 0 and s2 is not None and s2["class_scheme_reason"] == "given"
    assert s["checksum"] == s2["checksum"]
    assert _tree_hash(tmp_path / "default") == _tree_hash(tmp_path / "explicit")


def test_copc_declares_the_extra_dimensions_no_data(tmp_path):
    src = write_las_extra(tmp_path / "mms.las")
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1", "--copc")
    assert code == 0 and s is not None
    las = laspy.read(next((tmp_path / "out" / "copc").glob("*.copc.laz")))
    declared = {
        st.name.rstrip(b"\0").decode(): (int(st.options) & 1, float(st.no_data[0]))
        for v in las.header.vlrs
        for st in (getattr(v, "extra_bytes_structs", None) or [])
    }
    assert declared == {"label": (1, EXTRA_NO_DATA), "height": (1, EXTRA_NO_DATA)}
    height = np.asarray(las["height"])
    assert np.all(np.isfinite(height)) and int(np.sum(height == np.float32(EXTRA_NO_DATA))) == 301


def test_config_extra_dimensions_all_none_or_names():
    from pipeline.config.model import PointsLayer

    assert PointsLayer().extra_dimension_names is None
    assert PointsLayer(extra_dimensions="none").extra_dimension_names == ()
    assert PointsLayer(extra_dimensions=["label"]).extra_dimension_names == ("label",)
    with pytest.raises(ValueError):
        PointsLayer(extra_dimensions="some")


# ---- class scheme auto ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "names", "scheme", "why"),
    [
        ([2, 20, 26], ["tile.laz"], "adv", "AdV scheme"),
        ([1, 2, 6], ["tile.laz"], "asprs", "ASPRS scheme"),
        ([1, 2, 17], ["3dm_32_291_5744_1_nw.laz"], "adv", "NRW/AdV naming"),
        ([2], ["dom_nw.las"], "adv", "NRW/AdV naming"),
        ([2], ["tile.laz"], "asprs", "LAS standard"),
        ([2, 6], ["3dm_32_291_5744_1_nw.laz"], "asprs", "ASPRS scheme"),
    ],
)
def test_infer_class_scheme(codes, names, scheme, why):
    got, reason = infer_class_scheme(codes, names)
    assert got == scheme and why in reason


def test_infer_class_scheme_refuses_contradicting_codes():
    with pytest.raises(InputError, match=r"AdV-only.*ASPRS-only"):
        infer_class_scheme([6, 20], ["x.laz"])


def test_auto_scheme_in_the_summary_and_the_metadata(tmp_path):
    src = write_las_extra(tmp_path / "tile.las", extra=False, classes=(2, 20, 26))
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0 and s is not None
    assert s["class_scheme"] == "adv" and s["class_scheme_reason"].startswith("auto: codes [20, 26]")
    assert _properties(tmp_path / "out")["classification"]["description"].startswith("ADV class code")


def test_auto_scheme_with_contradicting_codes_is_an_input_error(tmp_path, capsys):
    src = write_las_extra(tmp_path / "tile.las", extra=False, classes=(6, 20))
    code, _ = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1")
    err = capsys.readouterr().err
    assert code == 2 and "--class-scheme" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ---- intensity as delivered ----


def test_las_intensity_is_stored_as_delivered_and_the_stretch_is_only_a_display_range(tmp_path):
    from pipeline.orchestrate.points import _intensity_stats

    src = write_las_extra(tmp_path / "scan.las", extra=False)  # intensity 0..2999 (a 12-bit scanner)
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0 and s is not None
    stored = np.sort(_column(tmp_path / "out", "_INTENSITY").astype(np.int64))
    assert stored.tolist() == list(range(3000))  # not stretched to 0..65535
    # the viewer's intensity style gets the display range (1st-99th percentile of the upper tiles)
    rng = _intensity_stats(tmp_path / "out")["intensity"]
    assert 0 <= rng["min"] < 100 and 2900 < rng["max"] <= 2999


# ---- intensity as delivered (E57) ------------------------------------------------------------------------


def test_e57_intensity_is_kept_as_delivered_not_stretched():
    from pipeline.sources.pointcloud.e57 import intensity_u16

    p = Path("scan.e57")
    whole = np.array([10.0, 200.0, 4095.0])
    assert intensity_u16(whole, None, p).tolist() == [10, 200, 4095]  # not stretched to 0..65535
    # floats map from the declared limits (the scanner's scale), not the scan's own min-max
    got = intensity_u16(np.array([0.25, 0.5]), (0.0, 1.0), p)
    assert got.tolist() == [16384, 32768]
    got = intensity_u16(np.array([-1024.5, 0.5, 1023.5]), (-2048.0, 2047.0), p)
    assert got.tolist() == [round(v / 4095 * 65535) for v in (1023.5, 2048.5, 3071.5)]
    with pytest.raises(InputError, match="intensityLimits"):
        intensity_u16(np.array([-3.5, 7.25]), None, p)


# ---- real deliveries through options alone ---------------------------------------------------------------

_REAL = [
    # (file, options, expected class scheme)
    ("nrw/3dm_32_291_5744_1_nw_subset.laz", ["--crs", "EPSG:25832+7837"], "adv"),
    # reclassified by a third party into ASPRS codes (plus user codes 33-41): ASPRS despite the NRW name
    (
        "nrw/3dm_32_360_5721_crop300_360650_5721600.laz",
        ["--crs", "EPSG:25832+7837", "--keep-unknown-classes"],
        "asprs",
    ),
    ("autzen/autzen_class.las", ["--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/autzen-utm.las", ["--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/1.2-with-color.las", ["--crs", "EPSG:2994", "--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/test_utm17.las", ["--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/test1_4.las", ["--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/epsg_4326.las", ["--assume-ellipsoidal"], "asprs"),
    # an empty WKT record: the CRS is given (Poland CS92, where its coordinates lie)
    ("las_edge_cases/warsaw_small.las", ["--crs", "EPSG:2180", "--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/1.2-with-color.copc.laz", ["--crs", "EPSG:2994", "--assume-ellipsoidal"], "asprs"),
    ("las_edge_cases/ellipsoid.copc.laz", ["--assume-ellipsoidal"], "asprs"),
]


@pytest.mark.parametrize(("rel", "options", "scheme"), _REAL, ids=[r[0] for r in _REAL])
def test_real_samples_tile_through_options_alone(tmp_path, rel, options, scheme):
    src = REALDATA / rel
    if not src.exists():
        pytest.skip(f"{src} not available (../shared/realdata)")
    with laspy.open(src) as r:
        header_count = int(r.header.point_count)
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), *options)
    assert code == 0 and s is not None
    assert s["points_in"] == s["points_out"] == s["points_header"] == header_count
    assert s["class_scheme"] == scheme, s["class_scheme_reason"]


# ---- local engineering frame (unreferenced scans) -------------------------------------------------------

_E57 = ["bunnyDouble.e57", "testWithNormals.e57", "tiny_pc_and_images.e57", "tiny_spherical.e57"]


@pytest.mark.parametrize("name", _E57)
def test_real_e57_scans_tile_in_a_local_frame(tmp_path, name):
    src = REALDATA / "e57" / name
    if not src.exists():
        pytest.skip(f"{src} not available (../shared/realdata)")
    import pye57

    e57 = pye57.E57(str(src))
    header_count = sum(int(e57.get_header(i).point_count) for i in range(e57.scan_count))
    invalid = 0  # points the scan itself flags invalid (E57 `*InvalidState` != 0) are not points
    for i in range(e57.scan_count):
        raw = e57.read_scan_raw(i, ignore_unsupported_fields=True)
        state = raw.get("cartesianInvalidState", raw.get("sphericalInvalidState"))
        invalid += 0 if state is None else int(np.count_nonzero(np.asarray(state) != 0))
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1",
                         "--crs", "local", "--anchor", "7.2160,51.4818,95")  # fmt: skip
    assert code == 0 and s is not None
    assert s["points_in"] == s["points_out"] == s["points_header"] == header_count - invalid
    assert s["class_scheme"] == "asprs"  # E57 has no classes: all 0, ASPRS "never classified"
    assert any("local frame at anchor 7.216,51.4818,95.0" in n for n in s["notes"])


def _write_unreferenced(path: Path, xyz: np.ndarray) -> Path:
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([0.0, 0.0, 0.0])
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.classification = np.full(len(xyz), 1, np.uint8)
    las.write(str(path))
    return path


def test_local_frame_places_points_east_north_up_at_the_anchor(tmp_path):
    import json

    from pyproj import Transformer

    from pipeline.tiles.points_reader import content_files, tile_positions_mm

    rng = np.random.default_rng(3)
    local = np.round(rng.uniform([-40, -30, -2], [60, 80, 25], (4000, 3)), 3)
    src = _write_unreferenced(tmp_path / "scan.las", local)
    lon, lat, h = 7.2160, 51.4818, 95.0
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1",
                         "--crs", "local", "--anchor", f"{lon},{lat},{h}")  # fmt: skip
    assert code == 0 and s is not None and s["points_in"] == 4000
    ts = json.loads((tmp_path / "out" / "tileset.json").read_text())
    m = np.asarray(ts["root"]["transform"], dtype=np.float64).reshape(4, 4).T  # column-major
    enu = np.concatenate([tile_positions_mm(p) for p in content_files(tmp_path / "out" / "tileset.json")])
    enu = enu.astype(np.float64) / 1000.0
    ecef = enu @ m[:3, :3].T + m[:3, 3]
    to_local = Transformer.from_pipeline(
        f"+proj=pipeline +step +proj=topocentric +lon_0={lon} +lat_0={lat} +h_0={h} +ellps=WGS84"
    )
    back = np.column_stack(to_local.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2]))
    # every scan point comes back where it was, to the tiles' millimetre (1 mm grid of a rotated frame)
    nearest, dist = [], []
    for chunk in np.array_split(back, 8):
        d = np.linalg.norm(chunk[:, None, :] - local[None, :, :], axis=2)
        nearest.append(np.argmin(d, axis=1))
        dist.append(np.min(d, axis=1))
    assert np.max(np.concatenate(dist)) < 0.002
    assert len(np.unique(np.concatenate(nearest))) == len(local)
    # the origin of the scan is the anchor: the point nearest (0, 0, 0) stays there
    i = int(np.argmin(np.linalg.norm(local, axis=1)))
    j = int(np.argmin(np.linalg.norm(back - local[i], axis=1)))
    assert np.linalg.norm(back[j] - local[i]) < 0.003


def test_local_crs_needs_an_anchor_and_an_anchor_needs_local(tmp_path, capsys):
    src = _write_unreferenced(tmp_path / "scan.las", np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    code, _ = run_points(str(src), "--out", str(tmp_path / "a"), "--jobs", "1", "--crs", "local")
    assert code == 3 and "--anchor" in capsys.readouterr().err
    code, _ = run_points(str(src), "--out", str(tmp_path / "b"), "--jobs", "1", "--crs", "EPSG:25832+7837",
                         "--anchor", "7,51,0")  # fmt: skip
    assert code == 3 and "--crs local" in capsys.readouterr().err
    code, _ = run_points(str(src), "--out", str(tmp_path / "c"), "--jobs", "1", "--crs", "local",
                         "--anchor", "7,151,0")  # fmt: skip
    assert code == 4 and "latitude" in capsys.readouterr().err


def test_explicit_epsg_is_never_refused_as_mislabelled(tmp_path, capsys):
    """Coordinates far outside the CRS's area of use: refused when the file says the CRS, tiled with a
    note when --crs says so (the user knows the delivery)."""
    from tests.unit.test_points_safety import write_las

    src = write_las(tmp_path / "far.las", cloud(3000, 2_600_000, 5_707_000), crs="EPSG:25832")
    code, _ = run_points(str(src), "--out", str(tmp_path / "file"), "--jobs", "1", "--assume-ellipsoidal")
    assert code == 4 and "probably mislabelled" in capsys.readouterr().err
    code, s = run_points(str(src), "--out", str(tmp_path / "given"), "--jobs", "1", "--crs", "EPSG:32632",
                         "--assume-ellipsoidal")  # fmt: skip
    assert code == 0 and s is not None and s["points_in"] == 3000
    assert any("--crs EPSG:32632 kept although" in n for n in s["notes"])


def test_build_manifest_states_scheme_and_extra_dimensions(tiny_release):
    """Each point layer of a build says its class scheme, how it was chosen and its extra dimensions."""
    import json

    manifest = json.loads((tiny_release / "manifest.json").read_text())
    layers = {lay["name"]: lay["stats"] for lay in manifest["layers"] if lay["kind"] == "pointcloud"}
    assert set(layers) == {"aerial_points", "mobile_points"}
    # the tiny config names the schemes (adv aerial, asprs mobile); its LAS files have no Extra Bytes
    assert layers["aerial_points"]["class_scheme"] == "adv"
    assert layers["mobile_points"]["class_scheme"] == "asprs"
    for st in layers.values():
        assert st["class_scheme_reason"] == "given"
        assert st["extra_dimensions"] == [] and st["extra_dimensions_dropped"] == []
        # the intensity display range of the viewer style (the tiles keep the delivered values)
        assert 0 <= st["intensity"]["min"] < st["intensity"]["max"] <= 65535


def test_local_frame_with_copc_records_the_local_frame_crs(tmp_path):
    """`--crs local --copc` used to stop with an internal error (`local:...` is no PROJ string): the COPC
    file keeps the scan's own coordinates and records the east-north-up frame about the anchor."""
    from pipeline.sources.pointcloud.crs import local_anchor

    rng = np.random.default_rng(5)
    local = np.round(rng.uniform([-20, -10, -1], [30, 40, 12], (3000, 3)), 3)
    src = _write_unreferenced(tmp_path / "scan.las", local)
    code, s = run_points(str(src), "--out", str(tmp_path / "out"), "--jobs", "1", "--copc",
                         "--crs", "local", "--anchor", "7.2160,51.4818,95")  # fmt: skip
    assert code == 0 and s is not None and s["points_in"] == 3000
    las = laspy.read(next((tmp_path / "out" / "copc").glob("*.copc.laz")))
    assert len(las.points) == 3000
    got = np.column_stack([las.x, las.y, las.z])
    assert np.allclose(np.sort(got, axis=0), np.sort(local, axis=0), atol=0.0011)
    assert local_anchor(las.header.parse_crs()) == (7.2160, 51.4818, 95.0)
