"""COPC output of the point layers (pipeline/tiles/copc.py, tiles/vpc.py, tiles/copc_check.py,
orchestrate/points_copc.py, stages/points/copc_records.py).

- the writer: laspy's COPC reader reads every node (whole file, per level), every hierarchy entry decodes
  on its own to its point count with its points inside the node's cube, the octree against a plain
  Python reference, byte-identical rewrites, extra bytes / NIR / GPS time round trips;
- a layer: the COPC files hold exactly the input's points (count and checksum of X, Y, Z, class), and
  tiled again by the project's tiler they give the 3D Tiles layer's own count and checksum; positions
  transformed into another CRS agree with PROJ to 1 mm;
- the build: the tiny district's point layers list their COPC files and .vpc in the manifest, the counts
  and checksums agree with the tiles;
- QGIS (marker `qgis`): the .vpc and a .copc.laz load as point-cloud layers and draw points.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
from pathlib import Path

import laspy
import numpy as np
import pytest

from pipeline.tiles.copc import CopcSchema, HeaderInfo, record_dtype, write_copc
from pipeline.tiles.copc_octree import FINE_BITS, GRID_BITS, MAX_DEPTH, _mix64, build_octree, morton_codes


def _layer_copc(inputs, out, opts=None, *, vpc_name, target_crs, executor=None, workers=1):
    """Tile `inputs` into `out` with COPC output (one pass); the run's COPC summary."""
    import dataclasses

    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.orchestrate.points_run import tile_pointcloud
    from pipeline.stages.points.copc_records import CopcOptions

    opts = dataclasses.replace(opts or PointTilingOptions(), copc=CopcOptions(vpc_name, target_crs))
    return tile_pointcloud(inputs, out, opts, executor, workers=workers).copc


def _wkt(code: str = "EPSG:25832+7837") -> str:
    from pyproj import CRS

    return CRS.from_user_input(code).to_wkt()


def _records(n: int, schema: CopcSchema, seed: int = 1, flat: bool = True) -> np.ndarray:
    """Points of a 100 m x 100 m patch in mm (2.5D like an aerial survey unless `flat` is False)."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, record_dtype(schema))
    r["X"] = rng.integers(0, 100_000, n)
    r["Y"] = rng.integers(0, 100_000, n)
    r["Z"] = rng.integers(0, 3_000 if flat else 100_000, n)
    r["intensity"] = rng.integers(0, 65535, n)
    r["bit_fields"] = 0x11
    r["classification"] = rng.choice(np.array([1, 2, 9, 17, 20], np.uint8), n)
    r["point_source_id"] = 7
    r["gps_time"] = np.sort(rng.random(n)) * 1000.0 + 3.0e8
    if schema.has_rgb or schema.has_nir:
        for c in ("red", "green", "blue"):
            r[c] = rng.integers(0, 256, n) * 257
    if schema.has_nir:
        r["nir"] = rng.integers(0, 65535, n)
    for name in schema.extra_dims:
        r[name] = rng.random(n).astype(np.float32)
    return r


def _header(offsets=(362000.0, 5716000.0, 40.0)) -> HeaderInfo:
    return HeaderInfo(
        scales=(0.001, 0.001, 0.001), offsets=offsets, wkt=_wkt(), creation_day=60, creation_year=2024
    )


def _key(X, Y, Z, cls) -> np.ndarray:
    return np.sort(
        np.asarray(X, np.int64) * 2**40 + np.asarray(Y, np.int64) * 2**20 + np.asarray(Z, np.int64) * 32 + cls
    )


def _entries(path: Path) -> list:
    with laspy.CopcReader.open(path) as r:
        return list(r.root_page.entries.values())


# ---- the writer ---------------------------------------------------------------------------------------------


def test_every_node_reads_back_and_holds_the_input(tmp_path):
    schema = CopcSchema(has_rgb=True)
    rec = _records(250_000, schema)
    res = write_copc(tmp_path / "a.copc.laz", rec, _header(), schema, max_node_points=20_000)
    assert res.points == len(rec) and res.nodes > 8
    with laspy.CopcReader.open(tmp_path / "a.copc.laz") as r:
        assert r.header.point_format.id == 7 and r.header.point_count == len(rec)
        assert r.header.parse_crs().name == "ETRS89 / UTM zone 32N + DHHN2016 height"
        pts = r.query()  # every node
        assert len(pts) == len(rec)
        assert np.array_equal(
            _key(pts.X, pts.Y, pts.Z, pts.classification),
            _key(rec["X"], rec["Y"], rec["Z"], rec["classification"]),
        )
        per_level = [len(r.query(level=lv)) for lv in range(15)]  # copc_octree.MAX_DEPTH = 14
        assert all(per_level[:3]) and sum(per_level) == len(rec)  # three levels at least, every point once
        info = r.copc_info  # spacing at the root: cube / 128 (halving per level); the cube holds all
        assert info.spacing == pytest.approx(2 * info.halfsize / 128)
        assert info.halfsize >= (r.header.maxs - r.header.mins).max() / 2
        assert np.allclose(info.center, (r.header.maxs + r.header.mins) / 2)
    # the plain LAZ view (chunk table) holds the same points
    las = laspy.read(tmp_path / "a.copc.laz")
    assert len(las.points) == len(rec)
    assert int(las.header.number_of_points_by_return[0]) == len(rec)
    assert las.header.mins[0] == pytest.approx(362000.0 + rec["X"].min() / 1000)


def test_each_hierarchy_entry_decodes_alone_inside_its_node(tmp_path):
    """Every entry of the hierarchy: its chunk decompresses by itself (lazrs, the entry's offset and size)
    to the entry's point count, every point lies in the entry's cube, and every node's parent exists."""
    import lazrs

    schema = CopcSchema(has_rgb=True, extra_dims=("height",))
    rec = _records(120_000, schema, seed=3, flat=False)
    path = tmp_path / "b.copc.laz"
    write_copc(path, rec, _header(), schema, max_node_points=5_000)
    data = path.read_bytes()
    with laspy.CopcReader.open(path) as r:
        vlr = r.laszip_vlr
        cx, cy, cz = r.copc_info.center
        half = r.copc_info.halfsize
        entries = list(r.root_page.entries.values())
    keys = {(e.key.level, e.key.x, e.key.y, e.key.z) for e in entries}
    total = 0
    dtype = record_dtype(schema)
    for e in entries:
        lv, x, y, z = e.key.level, e.key.x, e.key.y, e.key.z
        if lv > 0:
            assert (lv - 1, x // 2, y // 2, z // 2) in keys
        chunk = data[e.offset : e.offset + e.byte_size]
        out = np.zeros(e.point_count * dtype.itemsize, np.uint8)
        table = io.BytesIO()
        lazrs.write_chunk_table(table, [(e.point_count, e.byte_size)], lazrs.LazVlr(vlr.record_data))
        stream = struct.pack("<q", 8 + len(chunk)) + chunk + table.getvalue()  # a LAZ stream of one chunk
        lazrs.decompress_points(stream, vlr.record_data, out, False)
        pts = out.view(dtype)
        size = 2 * half / 2**lv
        for axis, (name, c, k) in enumerate(zip("XYZ", (cx, cy, cz), (x, y, z), strict=True)):
            v = pts[name] * 0.001 + _header().offsets[axis]
            lo = c - half + k * size
            assert v.min() >= lo - 1e-9 and v.max() <= lo + size + 1e-9
        total += e.point_count
    assert total == len(rec)
    assert len(keys) == len(entries)


def _reference_octree(q: np.ndarray, max_points: int) -> dict[tuple, list[int]]:
    """The octree by its definition, one point at a time (small inputs only)."""
    morton = morton_codes(q)
    h = [(int(v) & 0xFFFFFFFF00000000) | i for i, v in enumerate(_mix64(morton))]
    remaining = list(range(len(q)))
    nodes: dict[tuple, list[int]] = {}
    for level in range(MAX_DEPTH + 1):
        by_node: dict[tuple, list[int]] = {}
        for i in remaining:
            by_node.setdefault(tuple(int(v) >> (FINE_BITS - level) for v in q[i]), []).append(i)
        left = []
        for key, pts in by_node.items():
            if len(pts) <= max_points or level == MAX_DEPTH:
                nodes[(level, *key)] = sorted(pts)
                continue
            best: dict[tuple, int] = {}
            for i in pts:
                cell = tuple(int(v) >> (FINE_BITS - level - GRID_BITS) for v in q[i])
                if cell not in best or h[i] < h[best[cell]]:
                    best[cell] = i
            nodes[(level, *key)] = sorted(best.values())
            left += [i for i in pts if i not in set(best.values())]
        remaining = left
        if not remaining:
            break
    return nodes


@pytest.mark.parametrize("seed", [0, 1])
def test_octree_equals_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    q = rng.integers(0, 2**FINE_BITS, (n, 3)).astype(np.int32)
    q[: n // 4] = q[0]  # a quarter of the points at one position (duplicates go down to the last level)
    q[n // 4 : n // 2, 2] = 5  # a flat part
    tree = build_octree(morton_codes(q), max_node_points=50)
    got = {
        tuple(int(v) for v in tree.keys[i]): tree.index[
            tree.starts[i] : tree.starts[i] + tree.counts[i]
        ].tolist()
        for i in range(len(tree.keys))
    }
    assert got == _reference_octree(q, 50)
    assert sorted(tree.index.tolist()) == list(range(n))  # every point exactly once
    assert max(k[0] for k in got) == MAX_DEPTH  # the duplicates reach the deepest level


def test_rewrite_is_byte_identical_and_fields_round_trip(tmp_path):
    schema = CopcSchema(has_rgb=True, has_nir=True, extra_dims=("height", "amplitude"))
    rec = _records(60_000, schema, seed=5)
    write_copc(tmp_path / "a.copc.laz", rec, _header(), schema, max_node_points=10_000)
    write_copc(tmp_path / "b.copc.laz", rec.copy(), _header(), schema, max_node_points=10_000, threads=3)
    assert (tmp_path / "a.copc.laz").read_bytes() == (tmp_path / "b.copc.laz").read_bytes()
    las = laspy.read(tmp_path / "a.copc.laz")
    assert las.header.point_format.id == 8
    order = np.lexsort((las.points.array["gps_time"],))
    back = las.points.array[order]
    ref = rec[np.argsort(rec["gps_time"], kind="stable")]
    for name in ("X", "Y", "Z", "intensity", "classification", "red", "nir", "gps_time", "point_source_id"):
        assert np.array_equal(back[name], ref[name]), name
    assert np.array_equal(np.asarray(las.height)[order], ref["height"])
    assert np.array_equal(np.asarray(las.amplitude)[order], ref["amplitude"])
    with laspy.CopcReader.open(tmp_path / "a.copc.laz") as r:
        assert r.copc_info.gps_min == rec["gps_time"].min()
        assert r.copc_info.gps_max == rec["gps_time"].max()


def test_file_layout_follows_the_copc_spec(tmp_path):
    schema = CopcSchema()
    rec = _records(5_000, schema)
    write_copc(tmp_path / "c.copc.laz", rec, _header(), schema)
    data = (tmp_path / "c.copc.laz").read_bytes()
    assert data[:4] == b"LASF" and data[24:26] == bytes([1, 4])
    # the COPC info VLR comes first, right after the 375-byte header
    assert data[375 + 2 : 375 + 6] == b"copc" and struct.unpack_from("<H", data, 375 + 18)[0] == 1
    assert data[104] == 6 | 0x80  # point format 6, compressed
    (global_encoding,) = struct.unpack_from("<H", data, 6)
    assert global_encoding & 0x10  # WKT
    assert struct.unpack_from("<I", data, 107)[0] == 0  # legacy point count 0 for formats 6-10
    with laspy.CopcReader.open(tmp_path / "c.copc.laz") as r:
        assert r.copc_info.hierarchy_root_offset + r.copc_info.hierarchy_root_size == len(data)
        assert len(r.root_page.entries) == 1  # 5,000 points: the root is a leaf


def test_refuses_records_of_another_layout(tmp_path):
    rec = _records(100, CopcSchema())
    with pytest.raises(ValueError, match="dtype"):
        write_copc(tmp_path / "x.copc.laz", rec, _header(), CopcSchema(has_rgb=True))
    assert not list(tmp_path.iterdir())


# ---- a point layer ------------------------------------------------------------------------------------------


def _write_las(
    path: Path, n: int, seed: int, x0: float, y0: float = 5716000.0, crs: str = "EPSG:25832+7837"
) -> laspy.LasData:
    from pyproj import CRS

    rng = np.random.default_rng(seed)
    h = laspy.LasHeader(point_format=7, version="1.4")
    h.scales = np.array([0.01, 0.01, 0.01])
    h.offsets = np.array([x0, y0, 0.0])
    h.add_crs(CRS.from_user_input(crs))
    las = laspy.LasData(h)
    las.x = x0 + rng.random(n) * 100.0
    las.y = y0 + rng.random(n) * 100.0
    las.z = 60.0 + rng.random(n) * 20.0
    las.intensity = rng.integers(0, 4000, n)
    las.classification = rng.choice(np.array([1, 2, 6, 9], np.uint8), n)
    las.return_number = np.ones(n, np.uint8)
    las.number_of_returns = np.ones(n, np.uint8)
    las.gps_time = rng.random(n) * 100
    las.red = rng.integers(0, 65535, n)
    las.green = rng.integers(0, 65535, n)
    las.blue = rng.integers(0, 65535, n)
    las.write(path)
    return las


@pytest.fixture(scope="module")
def two_tiles(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("copc_in")
    paths = [d / "tile_a.laz", d / "tile_b.laz"]
    _write_las(paths[0], 70_000, 1, 362000.0)
    _write_las(paths[1], 50_000, 2, 362100.0)
    return paths


def test_layer_copc_holds_the_inputs_and_tiles_like_them(two_tiles, tmp_path):
    from pipeline.orchestrate.points_plan import PointTilingOptions, plan_tiling
    from pipeline.orchestrate.points_run import tile_pointcloud
    from pipeline.tiles.copc_check import copc_checksum, copc_invariants

    opts = PointTilingOptions()
    s = _layer_copc(two_tiles, tmp_path / "layer", opts, vpc_name="layer", target_crs=None)
    assert s.files == [
        "copc/tile_a.copc.laz",
        "copc/tile_b.copc.laz",
        "copc/tile_a.copc.qml",
        "copc/tile_b.copc.qml",
    ]
    assert s.vpc == "layer.vpc" and s.style == "layer.qml" and s.transformed == 0
    assert s.points == 120_000
    # the inputs' own (X, Y, Z, class): the files keep their integer coordinates
    want = 0
    for p in two_tiles:
        las = laspy.read(p)
        want += copc_checksum(las.X, las.Y, las.Z, np.asarray(las.classification))
    assert s.checksum == f"{want % 2**64:016x}"
    assert copc_invariants(tmp_path / "layer" / "layer.vpc") == {
        "points": 120_000,
        "checksum": s.checksum,
        "files": 2,
    }
    # tiled by the project's tiler, the COPC files give the 3D Tiles layer of the inputs (same frame)
    frame = plan_tiling(two_tiles, opts).frame
    from_inputs = tile_pointcloud(two_tiles, tmp_path / "t_in", PointTilingOptions(frame=frame))
    copc = sorted((tmp_path / "layer" / "copc").glob("*.copc.laz"))
    from_copc = tile_pointcloud(copc, tmp_path / "t_copc", PointTilingOptions(frame=frame))
    assert from_copc.points_out == from_inputs.points_out == 120_000
    assert from_copc.checksum == from_inputs.checksum
    # the .vpc: one STAC item per file, counts, native boxes, the CRS as WKT2
    doc = json.loads((tmp_path / "layer" / "layer.vpc").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 2
    f0 = doc["features"][0]
    assert f0["stac_version"] == "1.0.0" and f0["assets"]["data"]["href"] == "./copc/tile_a.copc.laz"
    assert f0["properties"]["pc:count"] == 70_000
    hdr = laspy.open(copc[0]).header
    assert f0["properties"]["proj:bbox"] == [*hdr.mins.tolist(), *hdr.maxs.tolist()]
    assert "DHHN2016" in f0["properties"]["proj:wkt2"]
    assert "proj:epsg" not in f0["properties"]
    assert 6.9 < f0["bbox"][0] < 7.1 and 51.5 < f0["bbox"][1] < 51.6  # lon/lat of the Ruhr
    names = [d["name"] for d in f0["properties"]["pc:schemas"]]
    assert {"X", "Classification", "GpsTime", "Red"} <= set(names)


def test_colours_are_the_tiles_8_bit_colours(two_tiles, tmp_path):
    from pipeline.orchestrate.points_plan import PointTilingOptions

    _layer_copc(two_tiles[:1], tmp_path / "x", PointTilingOptions(), vpc_name="x", target_crs=None)
    src = laspy.read(two_tiles[0])
    out = laspy.read(tmp_path / "x" / "copc" / "tile_a.copc.laz")
    o1 = np.lexsort((src.gps_time, src.X))
    o2 = np.lexsort((out.gps_time, out.X))
    assert np.array_equal(np.asarray(out.red)[o2], (np.asarray(src.red)[o1] >> 8) * 257)
    assert np.array_equal(np.asarray(out.intensity)[o2], np.asarray(src.intensity)[o1])


def test_positions_transformed_into_the_working_crs_agree_with_proj(tmp_path):
    from pyproj import Transformer

    from pipeline.orchestrate.points_plan import PointTilingOptions

    src = tmp_path / "utm33.laz"
    # the district in UTM zone 33 coordinates (a neighbouring state's delivery)
    x0, y0 = Transformer.from_crs("EPSG:25832", "EPSG:25833", always_xy=True).transform(362000.0, 5716000.0)
    _write_las(src, 20_000, 7, round(x0), round(y0), crs="EPSG:25833+7837")
    s = _layer_copc(
        [src], tmp_path / "l", PointTilingOptions(), vpc_name="l", target_crs=_wkt("EPSG:25832+7837")
    )
    assert s.transformed == 1 and s.crs == "ETRS89 / UTM zone 32N + DHHN2016 height"
    out = laspy.read(tmp_path / "l" / "copc" / "utm33.copc.laz")
    assert tuple(out.header.scales) == (0.001, 0.001, 0.001)
    t = Transformer.from_crs("EPSG:25833", "EPSG:25832", always_xy=True)
    ref = laspy.read(src)
    o1 = np.lexsort((np.asarray(ref.gps_time),))
    o2 = np.lexsort((np.asarray(out.gps_time),))
    ex, ey = t.transform(np.asarray(ref.x)[o1], np.asarray(ref.y)[o1])
    assert np.abs(np.asarray(out.x)[o2] - ex).max() <= 0.0005 + 1e-9
    assert np.abs(np.asarray(out.y)[o2] - ey).max() <= 0.0005 + 1e-9
    assert np.abs(np.asarray(out.z)[o2] - np.asarray(ref.z)[o1]).max() <= 0.0005 + 1e-9  # same height datum


# ---- the build ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_build_lists_copc_and_vpc_and_they_match_the_tiles(tiny_release):
    from pipeline.tiles.copc_check import copc_invariants
    from pipeline.tiles.points_reader import pointcloud_invariants

    manifest = json.loads((tiny_release / "manifest.json").read_text())
    layers = [lay for lay in manifest["layers"] if lay["kind"] == "pointcloud"]
    assert {lay["name"] for lay in layers} == {"aerial_points", "mobile_points"}
    for lay in layers:
        name = lay["name"]
        st = lay["stats"]
        files = lay["files"]
        assert f"{name}/{name}.vpc" in files
        copc = [f for f in files if f.endswith(".copc.laz")]
        assert copc and all((tiny_release / f).is_file() for f in files)
        assert (
            st["copc"]["points"]
            == st["points_out"]
            == pointcloud_invariants(tiny_release / lay["tileset"])["points"]
        )
        inv = copc_invariants(tiny_release / name / f"{name}.vpc")
        assert inv == {"points": st["points_out"], "checksum": st["copc"]["checksum"], "files": len(copc)}
        assert st["copc"]["crs"] == "ETRS89 / UTM zone 32N + DHHN2016 height"
        # the classes and their counts equal the tiles'
        counts: dict[int, int] = {}
        for f in copc:
            cls = np.asarray(laspy.read(tiny_release / f).classification)
            for c, k in zip(*np.unique(cls, return_counts=True), strict=True):
                counts[int(c)] = counts.get(int(c), 0) + int(k)
        assert counts == {int(c): k for c, k in st["classes"].items()}


# ---- QGIS ----------------------------------------------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).resolve().parents[1] / "qgis_pointcloud_probe.py"


def _qgis_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    return env


@pytest.mark.qgis
@pytest.mark.slow
def test_qgis_opens_the_vpc_and_a_copc_and_draws_points(tiny_release, tmp_path):
    """Each point layer's .vpc (with its style loaded) and one of its .copc.laz, in QGIS."""
    from pipeline.styles.palettes import point_class_name
    from tests.integration.test_qgis import qgis_version

    v = qgis_version()
    if v is None:
        pytest.skip(f"`import qgis.core` fails under {SYSTEM_PYTHON} (make test installs python3-qgis)")
    manifest = json.loads((tiny_release / "manifest.json").read_text())
    layers = {lay["name"]: lay for lay in manifest["layers"] if lay["kind"] == "pointcloud"}
    assert set(layers) == {"aerial_points", "mobile_points"}
    out_dir = Path(__file__).resolve().parents[2] / "test-artifacts" / "qgis"
    out_dir.mkdir(parents=True, exist_ok=True)
    req: dict = {"layers": []}
    copc_of = {}
    for name in sorted(layers):
        vpc = tiny_release / name / f"{name}.vpc"
        copc = sorted((tiny_release / name / "copc").glob("*.copc.laz"))[0]
        copc_of[name] = copc
        first = laspy.read(copc)  # a window around one of its points, inside one file: QGIS draws points
        x, y = float(np.median(first.x)), float(np.median(first.y))
        req["layers"] += [
            {
                "path": str(vpc),
                "png": str(out_dir / f"{name}_vpc.png"),
                "zoom": [x - 20, y - 20, x + 20, y + 20],
                "style": str(vpc.with_suffix(".qml")),
            },
            {"path": str(copc), "png": str(out_dir / f"{name}_copc.png")},
        ]
    (tmp_path / "req.json").write_text(json.dumps(req))
    r = subprocess.run(
        [SYSTEM_PYTHON, str(PROBE), str(tmp_path / "req.json")],
        capture_output=True,
        text=True,
        env=_qgis_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = {Path(lay["path"]).name: lay for lay in json.loads(r.stdout)["layers"]}
    for name, lay in layers.items():
        v_ = got[f"{name}.vpc"]
        assert v_["valid"], v_
        assert v_["points"] == lay["stats"]["points_out"]
        assert v_["crs_valid"] and "UTM zone 32N" in v_["crs_description"], v_["crs_description"]
        assert {"Classification", "Intensity", "GpsTime"} <= set(v_["attributes"])
        # the layer's style (the .qml beside the .vpc, loaded by hand: QGIS 3.40 applies a default style
        # to a .copc.laz but not to a .vpc): its classes with the scheme's names, noise not drawn
        assert v_["renderer_at_open"] == "classified" and v_["style_loaded"]
        assert [c[0] for c in v_["categories"]] == sorted(int(c) for c in lay["stats"]["classes"])
        scheme = lay["stats"]["class_scheme"]
        assert all(c[1] == f"{c[0]} {point_class_name(scheme, c[0])}" for c in v_["categories"])
        assert all(c[2] == (c[0] not in (7, 18)) for c in v_["categories"])
        z = v_["render_zoom"]
        assert not z["errors"] and z["drawn_pixels"] > 0.01 * 400 * 400 and z["colours"] >= 2, (name, z)
        c = got[copc_of[name].name]
        assert c["valid"] and c["points"] == laspy.open(copc_of[name]).header.point_count
        # a .copc.laz opens with its .copc.qml applied
        assert c["renderer_at_open"] == "classified" and c["categories_at_open"] == v_["categories"]
        r_ = c["render"]
        assert not r_["errors"] and r_["drawn_pixels"] > 0.01 * 400 * 400 and r_["colours"] >= 2, (name, r_)
    # the aerial survey covers its tiles: most of the window is drawn, in several class colours
    a = got["aerial_points.vpc"]
    assert a["render_zoom"]["drawn_pixels"] > 0.2 * 400 * 400 and a["render_zoom"]["colours"] >= 3
    assert layers["aerial_points"]["stats"]["class_scheme"] != "adv" or "2 Boden (ground)" in [
        c[1] for c in a["categories"]
    ]


def test_scan_angle_only_when_the_layer_exports_it(tmp_path):
    from pipeline.orchestrate.points_plan import PointTilingOptions

    src = tmp_path / "in" / "scan.laz"
    src.parent.mkdir()
    las = _write_las(src, 5_000, 11, 362000.0)
    las.scan_angle = np.random.default_rng(0).integers(-5000, 5000, len(las.points)).astype(np.int16)
    las.write(src)
    _layer_copc([src], tmp_path / "off", PointTilingOptions(), vpc_name="off", target_crs=None)
    assert not np.asarray(laspy.read(tmp_path / "off" / "copc" / "scan.copc.laz").scan_angle).any()
    opts = PointTilingOptions(attributes=("scan_angle",))
    _layer_copc([src], tmp_path / "on", opts, vpc_name="on", target_crs=None)
    out = laspy.read(tmp_path / "on" / "copc" / "scan.copc.laz")
    ref = laspy.read(src)
    o1, o2 = np.lexsort((ref.gps_time,)), np.lexsort((out.gps_time,))
    assert np.array_equal(np.asarray(out.scan_angle)[o2], np.asarray(ref.scan_angle)[o1])


def test_layer_rewrite_is_byte_identical_serial_or_parallel(two_tiles, tmp_path):
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.orchestrate.points_pool import LocalPool

    _layer_copc(two_tiles, tmp_path / "a", PointTilingOptions(), vpc_name="l", target_crs=None)
    with LocalPool(2) as pool:  # decode units and one COPC task per file on two processes
        _layer_copc(
            two_tiles,
            tmp_path / "b",
            PointTilingOptions(),
            vpc_name="l",
            target_crs=None,
            executor=pool,
            workers=2,
        )
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(f) for f in files if "copc" in str(f) or str(f).startswith("l.")] == [
        "copc/tile_a.copc.laz",
        "copc/tile_a.copc.qml",
        "copc/tile_b.copc.laz",
        "copc/tile_b.copc.qml",
        "l.qml",
        "l.vpc",
    ]
    # nothing else left behind (records, markers, scratch or .part files): the tiles and their summary
    rest = [str(f) for f in files if not ("copc" in str(f) or str(f).startswith("l."))]
    assert all(f.startswith("content/") or f in ("tileset.json", "pointcloud.json") for f in rest), rest
    assert not [f for f in files if f.suffix in (".rec", ".done", ".part")]
    for f in files:
        if f.name != "pointcloud.json":
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_twin_points_copc_flag(two_tiles, tmp_path, capsys):
    from pipeline.cli.main import main

    out = tmp_path / "city"
    rc = main(["points", *map(str, two_tiles), "--out", str(out), "--copc", "--json", "--jobs", "1"])
    assert rc == 0
    js = json.loads(capsys.readouterr().out)
    assert js["copc"]["points"] == js["points_out"] == 120_000
    assert (
        js["copc"]["vpc"] == "city.vpc" and (out / "city.vpc").is_file() and (out / "tileset.json").is_file()
    )
    assert sorted(p.name for p in (out / "copc").iterdir()) == [
        "tile_a.copc.laz",
        "tile_a.copc.qml",
        "tile_b.copc.laz",
        "tile_b.copc.qml",
    ]


@pytest.mark.slow
def test_public_export_keeps_public_copc_only(tiny_release, tmp_path):
    from pipeline.release.access import export_public

    manifest = json.loads((tiny_release / "manifest.json").read_text())
    access = {lay["name"]: lay["access"] for lay in manifest["layers"]}
    assert access["aerial_points"] == "public" and access["mobile_points"] == "internal"
    export_public(tiny_release, tmp_path / "pub")
    pub = tmp_path / "pub"
    aerial = sorted(p.name for p in (pub / "aerial_points" / "copc").iterdir())
    assert aerial and all(n.endswith((".copc.laz", ".copc.qml")) for n in aerial)
    assert (pub / "aerial_points" / "aerial_points.vpc").is_file()
    assert (pub / "aerial_points" / "aerial_points.qml").is_file()
    assert not (pub / "mobile_points").exists()


def test_a_failure_leaves_nothing_and_an_existing_folder_is_refused(two_tiles, tmp_path, monkeypatch):
    from pipeline.errors import InputError
    from pipeline.orchestrate import points_copc
    from pipeline.orchestrate.points_plan import PointTilingOptions

    real = points_copc.write_copc
    calls = []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real(*a, **kw)

    monkeypatch.setattr(points_copc, "write_copc", failing)
    with pytest.raises(OSError):
        _layer_copc(two_tiles, tmp_path / "layer", PointTilingOptions(), vpc_name="layer", target_crs=None)
    assert calls == [1, 1] and not (tmp_path / "layer").exists()  # no tiles, copc/, .vpc, scratch or .part
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(points_copc, "write_copc", real)
    layer = tmp_path / "layer"
    (layer / "copc").mkdir(parents=True)
    (layer / "copc" / "theirs.txt").write_text("not ours")
    with pytest.raises(InputError, match="not empty"):
        _layer_copc(two_tiles, layer, PointTilingOptions(), vpc_name="layer", target_crs=None)
    assert (layer / "copc" / "theirs.txt").read_text() == "not ours"
    assert sorted(p.name for p in layer.iterdir()) == ["copc"]


@pytest.mark.realdata
def test_real_nrw_tile_keeps_its_coordinates_in_the_working_crs(realdata, tmp_path):
    """A real Geobasis NRW 3D-Messdaten crop (EPSG:25832, AdV classes, no colour, no vertical CRS: the
    project's DHHN2016 is attached): in the working CRS its integers are kept exactly."""
    from pipeline.config.model import CrsConfig
    from pipeline.crs import working_crs
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.tiles.copc_check import copc_checksum, copc_invariants

    src = realdata / "nrw" / "3dm_32_360_5721_crop300_360650_5721600.laz"
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    opts = PointTilingOptions(crs_cfg=cfg, class_scheme="adv", unknown_classes="keep")
    s = _layer_copc([src], tmp_path / "o", opts, vpc_name="nrw", target_crs=working_crs(cfg).to_wkt())
    ref = laspy.read(src)
    assert s.transformed == 0 and s.points == len(ref.points)
    assert s.checksum == f"{copc_checksum(ref.X, ref.Y, ref.Z, np.asarray(ref.classification)):016x}"
    assert copc_invariants(tmp_path / "o" / "nrw.vpc")["checksum"] == s.checksum
    codes, counts = np.unique(np.asarray(ref.classification), return_counts=True)
    assert s.classes == {int(c): int(k) for c, k in zip(codes, counts, strict=True)}
    out = laspy.open(tmp_path / "o" / "copc" / f"{src.stem}.copc.laz").header
    assert ref.header.point_format.id == 6 and out.point_format.id == 6  # no colour in, none out
    assert out.parse_crs().name == "ETRS89 / UTM zone 32N + DHHN2016 height"
    assert tuple(out.scales) == tuple(ref.header.scales) and tuple(out.offsets) == tuple(ref.header.offsets)
    qml = (tmp_path / "o" / "nrw.qml").read_text()
    assert "Boden (ground)" in qml


def test_units_from_the_content_cache_are_decoded_again_for_copc(two_tiles, tmp_path, monkeypatch):
    """A decode unit whose spill file comes from the content cache wrote no COPC records: its decode task
    decodes it again for them, and the COPC files are the same bytes as a run without hits."""
    import hashlib

    from pipeline.orchestrate import points_cache
    from pipeline.orchestrate.cache import Cache
    from pipeline.orchestrate.points_plan import PointTilingOptions

    shas = tuple(sorted((str(p.resolve()), hashlib.sha256(p.read_bytes()).hexdigest()) for p in two_tiles))
    opts = PointTilingOptions(cache=Cache(tmp_path / "cache"), input_sha256=shas)
    calls = {"miss": 0, "hit": 0}
    real = points_cache.decode_to_spill

    def counted(fj, unit, job):  # a miss decodes into its cache entry, a hit's decode into the run's spill
        calls["miss" if Path(job.spill_dir).is_relative_to(tmp_path / "cache") else "hit"] += 1
        return real(fj, unit, job)

    monkeypatch.setattr(points_cache, "decode_to_spill", counted)
    a = _layer_copc(two_tiles, tmp_path / "a", opts, vpc_name="l", target_crs=None)
    first = dict(calls)
    assert first["miss"] >= 2 and first["hit"] == 0  # every unit decoded once, into the cache
    calls.update(miss=0, hit=0)
    b = _layer_copc(two_tiles, tmp_path / "b", opts, vpc_name="l", target_crs=None)
    assert calls == {"miss": 0, "hit": first["miss"]}  # all hits: decoded again for the COPC records only
    assert a.checksum == b.checksum and a.points == b.points == 120_000
    for name in ("copc/tile_a.copc.laz", "copc/tile_b.copc.laz", "l.vpc"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_release_validator_refuses_a_broken_copc(two_tiles, tmp_path):
    """The release validator reads every node of every COPC file of a point layer: a corrupted node, a
    missing file, a wrong count in the manifest or a wrong box in the .vpc refuse the release, naming the
    layer, the file and (for a node) the node."""
    import shutil

    from pipeline.errors import ValidationError
    from pipeline.release.validate import copc_errors, validate_release

    rel = tmp_path / "rel"
    s = _layer_copc(two_tiles, rel / "pts", vpc_name="pts", target_crs=None)
    layer = {
        "name": "pts",
        "kind": "pointcloud",
        "tileset": "pts/tileset.json",
        "stats": {"points_out": 120_000, "copc": {k: v for k, v in s.to_json().items() if k != "seconds"}},
    }
    manifest = {"layers": [layer]}
    errors: list[str] = []
    assert copc_errors(rel, manifest, errors, set()) == 1 and errors == []
    good = rel / "pts" / "copc" / "tile_b.copc.laz"
    keep = tmp_path / "keep.laz"
    shutil.copy2(good, keep)

    # a node's compressed bytes overwritten (the hierarchy is intact): that node cannot be decoded
    import laspy
    from laspy.copc import load_octree_for_query

    with laspy.CopcReader.open(good) as r:
        node = max(load_octree_for_query(r.source, r.copc_info, r.root_page), key=lambda n: n.byte_size)
    data = bytearray(good.read_bytes())
    data[node.offset : node.offset + node.byte_size] = b"\xff" * node.byte_size
    good.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match="COPC") as e:
        validate_release(rel, manifest, check_gltf=False)
    errors = []
    copc_errors(rel, manifest, errors, set())
    k = node.key
    assert any(f"layer pts: COPC: tile_b.copc.laz: node {k.level}-{k.x}-{k.y}-{k.z}" in m for m in errors), (
        errors
    )
    assert "layer pts" in str(e.value)

    # a missing file; a truncated file
    good.unlink()
    errors = []
    copc_errors(rel, manifest, errors, set())
    assert errors == ["layer pts: COPC: pts.vpc: asset ./copc/tile_b.copc.laz does not exist"]
    good.write_bytes(keep.read_bytes()[:5000])
    errors = []
    copc_errors(rel, manifest, errors, set())
    assert len(errors) == 1 and "tile_b.copc.laz" in errors[0], errors
    shutil.copy2(keep, good)

    # the manifest's count or checksum, or the .vpc's box, disagree with the files
    layer["stats"]["copc"]["points"] = 119_999
    errors = []
    copc_errors(rel, manifest, errors, set())
    assert any("COPC points 119999 != tiles 120000" in m for m in errors), errors
    assert any("the COPC files hold 120000 points, the layer 119999" in m for m in errors), errors
    layer["stats"]["copc"]["points"] = 120_000
    vpc = rel / "pts" / "pts.vpc"
    doc = json.loads(vpc.read_text())
    doc["features"][0]["properties"]["proj:bbox"][0] -= 10.0
    vpc.write_text(json.dumps(doc))
    errors = []
    copc_errors(rel, manifest, errors, set())
    assert len(errors) == 1 and "tile_a.copc.laz: the .vpc box" in errors[0], errors
    # a reused layer (validated in an earlier release) is not read again
    errors = []
    assert copc_errors(rel, manifest, errors, {"pts"}) == 0 and errors == []


def test_release_validator_reads_back_in_parallel_like_serially(two_tiles, tmp_path, monkeypatch):
    """The read-back checks run as independent tasks (one per COPC file, chunks of point tiles) on an
    executor: with two worker processes the report (every message, its order, pass/fail) is the serial
    one, for a good release and for one with a corrupted COPC node and an unreadable point tile; the
    node is still named."""
    import dataclasses
    import functools
    import multiprocessing
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    import laspy
    from laspy.copc import load_octree_for_query

    from pipeline.errors import ValidationError
    from pipeline.orchestrate.executor import map_ordered
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.orchestrate.points_run import tile_pointcloud
    from pipeline.release import validate
    from pipeline.stages.points.copc_records import CopcOptions
    from pipeline.tiles.points_reader import content_files

    monkeypatch.setattr(validate, "TILES_PER_TASK", 2)  # several tile chunks per layer
    rel = tmp_path / "rel"
    manifest: dict = {"layers": []}
    for name in ("pts", "more"):  # two layers, two COPC files each
        opts = dataclasses.replace(PointTilingOptions(), copc=CopcOptions(name, None))
        s = tile_pointcloud(two_tiles, rel / name, opts)
        stats = {"points_in": s.points_in, "points_out": s.points_out, "checksum": f"{s.checksum:016x}"}
        stats["copc"] = {k: v for k, v in s.copc.to_json().items() if k != "seconds"}
        manifest["layers"].append({"name": name, "kind": "pointcloud", "tileset": f"{name}/tileset.json"})
        manifest["layers"][-1]["stats"] = stats
    assert len(content_files(rel / "pts" / "tileset.json")) > 2 * validate.TILES_PER_TASK

    def reports(map_tasks) -> tuple[list[str], dict, int]:
        errors: list[str] = []
        inv = validate.layer_invariants(rel, manifest, errors, set(), map_tasks)
        n = validate.copc_errors(rel, manifest, errors, set(), map_tasks)
        return errors, inv, n

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = functools.partial(map_ordered, pool, name="validate")
        good = reports(parallel)
        assert good == reports(validate.serial_map)
        assert good[0] == [] and good[2] == 2
        assert good[1]["pts"]["points"] == good[1]["more"]["points"] == 120_000
        full = validate.validate_release(rel, manifest, check_gltf=False, map_tasks=parallel)
        assert full == validate.validate_release(rel, manifest, check_gltf=False) and full["ok"]

        # a corrupted node in each layer's second file, an unreadable tile in the first layer
        named = []
        for name in ("pts", "more"):
            f = rel / name / "copc" / "tile_b.copc.laz"
            with laspy.CopcReader.open(f) as r:
                node = max(
                    load_octree_for_query(r.source, r.copc_info, r.root_page), key=lambda n: n.byte_size
                )
            data = bytearray(f.read_bytes())
            data[node.offset : node.offset + node.byte_size] = b"\xff" * node.byte_size
            f.write_bytes(bytes(data))
            k = node.key
            named.append(
                f"layer {name}: COPC: tile_b.copc.laz: node {k.level}-{k.x}-{k.y}-{k.z} cannot be read"
            )
        tile = content_files(rel / "pts" / "tileset.json")[3]
        shutil.copy2(tile, tmp_path / "tile")
        tile.write_bytes(b"glTF" + b"\x00" * 20)
        bad = reports(parallel)
        assert bad == reports(validate.serial_map)
        errors = bad[0]
        assert errors[0].startswith("layer pts: cannot read its tiles: "), errors
        assert [e.split(" (")[0] for e in errors[1:]] == named, errors
        with pytest.raises(ValidationError) as par:
            validate.validate_release(rel, manifest, check_gltf=False, map_tasks=parallel)
        with pytest.raises(ValidationError) as ser:
            validate.validate_release(rel, manifest, check_gltf=False)
        assert str(par.value) == str(ser.value) and "3 problems" in str(par.value)


def test_copc_schema_is_derived_from_the_attribute_table():
    """Every attribute of the tiles' table has a COPC field (a new row needs a decision there); the schema
    of a layout follows its attributes."""
    from pipeline.point_attributes import ATTRIBUTES, active
    from pipeline.stages.points.copc_records import LAS_FIELDS, LAS_RECORD_FIELDS, copc_schema

    # a column that is not a plain copy into the LAS field of its name has a rule; the others are LAS fields
    assert set(LAS_FIELDS) <= {a.name for a in ATTRIBUTES}
    assert all(a.name in LAS_FIELDS or a.name in LAS_RECORD_FIELDS for a in ATTRIBUTES)
    # an attribute with no LAS 1.4 field and no rule is refused (it needs a decision for COPC)
    import dataclasses

    from pipeline.errors import TwinError

    odd = dataclasses.replace(ATTRIBUTES[1], name="wavelength")
    with pytest.raises(TwinError, match="wavelength"):
        copc_schema((*active(False, False, False), odd))
    s = copc_schema(active(True, True, True, ("scan_angle",), ("height", "amp")))
    assert (s.has_rgb, s.has_nir, s.extra_dims, s.point_format) == (True, True, ("height", "amp"), 8)
    s = copc_schema(active(False, False, False))
    assert (s.has_rgb, s.has_nir, s.extra_dims, s.point_format) == (False, False, (), 6)


@pytest.mark.realdata
def test_e57_scans_give_copc_with_every_point(realdata, tmp_path):
    """E57 scans (one decode unit per scan, records placed at each scan's first point) come out whole."""
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.tiles.copc_check import copc_invariants

    src = realdata / "e57" / "bunnyDouble.e57"
    opts = PointTilingOptions(crs="EPSG:32632", assume_ellipsoidal=True)
    s = _layer_copc([src], tmp_path / "e", opts, vpc_name="e", target_crs=None)
    assert s.points == 30571
    assert copc_invariants(tmp_path / "e" / "e.vpc") == {"points": 30571, "checksum": s.checksum, "files": 1}
    out = laspy.read(tmp_path / "e" / "copc" / "bunnyDouble.copc.laz")
    assert out.header.parse_crs().to_epsg() == 32632


def test_a_decoder_panic_is_a_finding_naming_the_node(two_tiles, tmp_path, monkeypatch):
    """lazrs panics (pyo3's PanicException, a BaseException) on some corrupt bytes: the check names the
    file and node instead of letting the panic kill the validation worker; Ctrl-C still goes through."""
    import laspy

    from pipeline.tiles.copc_check import CopcReadError, read_copc_nodes

    _layer_copc(two_tiles, tmp_path / "pts", vpc_name="pts", target_crs=None)
    f = tmp_path / "pts" / "copc" / "tile_b.copc.laz"
    assert read_copc_nodes(f)["points"] > 0

    class PanicException(BaseException):  # the name pyo3 gives it; the class lives in pyo3_runtime
        pass

    def panics(self, nodes):
        raise PanicException("range end index 9 out of range")

    monkeypatch.setattr(laspy.CopcReader, "_fetch_and_decompress_points_of_nodes", panics)
    with pytest.raises(CopcReadError, match=r"tile_b.copc.laz: node 0-0-0-0 cannot be read \(PanicException"):
        read_copc_nodes(f)

    def interrupted(self, nodes):
        raise KeyboardInterrupt

    monkeypatch.setattr(laspy.CopcReader, "_fetch_and_decompress_points_of_nodes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_copc_nodes(f)
