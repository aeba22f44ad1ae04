"""The one point reader (sources/pointcloud/reader.py): chunked reads equal whole-file reads (and laspy's),
the building heights, roof points and terrain rasters do not depend on the chunk size, backends and the
header cache behave."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
import shapely

from pipeline.errors import InputError
from pipeline.sources.pointcloud import reader
from tests._points_reference import read_points
from tests._synthetic_las import synthetic_points, write_las

REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
FIELDS = ("x", "y", "z", "X", "classification", "return_number", "number_of_returns", "intensity")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The same 23,456 points as LAS 1.2 PF 3, LAZ PF 1 (5,000-point chunks) and LAZ 1.4 PF 7."""
    d = tmp_path_factory.mktemp("reader")
    pts = synthetic_points(23_456, size=200.0, seed=3)
    return {
        "las3": write_las(d / "a.las", pts, point_format=3),
        "laz1": write_las(d / "b.laz", pts, point_format=1, chunk_size=5_000),
        "laz7": write_las(d / "c.laz", pts, point_format=7, version="1.4"),
    }


@pytest.mark.parametrize("kind", ["las3", "laz1", "laz7"])
@pytest.mark.parametrize("n", [1, 999, 5_000, 7_777, 23_456, 100_000])
def test_chunks_of_n_points_equal_the_whole_file_and_laspy(files, kind, n):
    import laspy

    path = files[kind]
    if n == 1 and kind != "las3":
        n = 3  # one point per chunk is slow on LAZ; 3 still splits every LAZ chunk
    chunks = list(reader.iter_points(path, FIELDS, n))
    sizes = [len(c["x"]) for c in chunks]
    assert sizes[:-1] == [n] * (len(sizes) - 1) and 0 < sizes[-1] <= n
    las = laspy.read(path)
    for f in FIELDS:
        got = np.concatenate([c[f] for c in chunks])
        want = np.asarray(getattr(las, f))
        assert got.dtype == want.dtype or (f in ("x", "y", "z") and got.dtype == np.float64)
        assert np.array_equal(got, want), f


@pytest.mark.parametrize("kind", ["las3", "laz1"])
def test_point_ranges_split_the_file_into_its_units(files, kind):
    """`points=(start, stop)` reads the units that start in the range: ranges cut anywhere give every
    point exactly once, in order (the street space's read tasks split one file this way)."""
    path = files[kind]
    whole = np.concatenate([c["X"] for c in reader.iter_points(path, ("X",), 4_000)])
    for cuts in ([0, 23_456], [0, 1, 9_000, 23_456], [0, 5_000, 5_001, 17_000, 30_000]):
        parts = [
            np.concatenate([c["X"] for c in reader.iter_points(path, ("X",), 4_000, points=(a, b))] or [[]])
            for a, b in itertools.pairwise(cuts)
        ]
        assert np.array_equal(np.concatenate(parts).astype(whole.dtype), whole)
        assert sum(len(q) > 0 for q in parts) >= 2 or len(cuts) == 2


@pytest.mark.parametrize(
    "name", ["autzen/autzen_class.las", "las_edge_cases/ellipsoid.copc.laz", "las_edge_cases/test1_4.las"]
)
def test_real_files_chunked_equal_laspy(name):
    import laspy

    path = REALDATA / name
    if not path.is_file():
        pytest.skip("../shared/realdata absent")
    chunks = list(reader.iter_points(path, ("x", "y", "z", "classification"), 7_001))
    las = laspy.read(path)
    for f in ("x", "y", "z", "classification"):
        assert np.array_equal(np.concatenate([c[f] for c in chunks]), np.asarray(getattr(las, f)))


def test_e57_through_the_same_reader():
    files = sorted((REALDATA / "e57").glob("*.e57"))
    if not files:
        pytest.skip("../shared/realdata absent")
    info = reader.read_header(files[0])
    assert reader.backend_for(info).name == "pye57"
    got = sum(len(c["x"]) for c in reader.iter_points(info, ("x", "y", "z"), 10_000))
    assert got == info.count


def test_an_e57_scan_that_changed_since_its_header_scan_is_refused():
    files = sorted((REALDATA / "e57").glob("*.e57"))
    if not files:
        pytest.skip("../shared/realdata absent")
    info = reader.read_header(files[0])
    with pytest.raises(InputError, match=f"expected {info.scans[0] + 1} points from scan 0, decoded"):
        reader.decode_unit(info, reader.WorkUnit(0, 0, info.scans[0] + 1, scan=0))


def test_a_missing_field_is_refused(files):
    with pytest.raises(InputError, match="no point field 'nir'"):  # LAS point format 3 has no NIR
        next(reader.iter_points(files["las3"], ("x", "nir"), 1000))


def test_a_missing_backend_library_is_an_input_error(files, monkeypatch):
    monkeypatch.setattr(reader.PointBackend, "is_available", lambda self: self.name != "lazrs")
    with pytest.raises(InputError, match="needs the Python package 'lazrs'"):
        reader.decode_unit(reader.read_header(files["laz1"]), reader.WorkUnit(0, 0, 1))


def test_header_is_read_once_until_the_file_changes(files, tmp_path):
    p = tmp_path / "h.las"
    p.write_bytes(files["las3"].read_bytes())
    a = reader.read_header(p)
    assert reader.read_header(p) is a
    write_las(p, synthetic_points(100, size=10.0, seed=1))
    assert reader.read_header(p).count == 100


def test_chunk_size_follows_the_budget():
    assert reader.chunk_points_for(2 * 2**30) == reader.MAX_CHUNK_POINTS
    assert reader.chunk_points_for(512 * 2**20) == 512 * 2**20 // (8 * 128)
    assert reader.chunk_points_for(1) == 1 << 16


def _footprints() -> np.ndarray:
    # 18 m boxes of the synthetic district's 40 m building grid, plus one straddling two of them
    x0, y0 = 362_000.0, 5_702_000.0
    boxes = [
        shapely.box(x0 + i * 40, y0 + j * 40, x0 + i * 40 + 18, y0 + j * 40 + 18)
        for i in range(5)
        for j in range(5)
    ]
    return np.array([*boxes, shapely.box(x0 + 10, y0 + 10, x0 + 50, y0 + 30)], dtype=object)


@pytest.mark.parametrize("kind", ["laz1", "las3"])
def test_building_heights_do_not_depend_on_the_chunk_size(files, kind):
    from pipeline.stages.buildings.heights import HeightParams, footprint_zones, tile_stats

    params = HeightParams(roof_classes=(20,), ground_classes=(2,))
    zones = footprint_zones(_footprints(), params)
    complete = np.ones(len(zones.roof_area), dtype=bool)
    complete[-1] = False
    whole, whole_rest = tile_stats(str(files[kind]), zones, complete, params)
    assert np.nansum(whole["n_points"]) > 1000  # the footprints hold roof points
    for n in (1_000, 5_000, 9_999):
        got, rest = tile_stats(str(files[kind]), zones, complete, params, chunk_points=n)
        for k, v in whole.items():
            assert np.array_equal(got[k], v, equal_nan=True), k
        assert np.array_equal(rest.roof_ptr, whole_rest.roof_ptr)
        assert np.array_equal(np.sort(rest.roof_z), np.sort(whole_rest.roof_z))
    mean = HeightParams(roof_classes=(20,), ground_classes=(2,), roof_statistic="mean")
    a = tile_stats(str(files[kind]), zones, complete, mean)[0]["roof_sample"]
    b = tile_stats(str(files[kind]), zones, complete, mean, chunk_points=777)[0]["roof_sample"]
    assert np.array_equal(a, b, equal_nan=True)  # the mean too, to the bit


@pytest.mark.parametrize("n", [1_000, 4_321, 23_456])
def test_chunked_samples_come_in_the_whole_file_order(files, n):
    """Not only the same samples: the same order (a mean sums them in that order, to the bit)."""
    from pipeline.stages.buildings.heights import (
        HEIGHT_FIELDS,
        HeightParams,
        collect_samples,
        collect_samples_chunked,
        footprint_zones,
    )

    params = HeightParams(roof_classes=(20,), ground_classes=(2,))
    zones = footprint_zones(_footprints(), params)
    whole = read_points(files["laz1"], HEIGHT_FIELDS)
    want = collect_samples(whole, zones, params)
    got = collect_samples_chunked(reader.iter_points(files["laz1"], HEIGHT_FIELDS, n), zones, params)
    assert len(want.roof_z) > 1000 and len(want.ground_z) > 1000
    for k in ("roof_ptr", "roof_z", "ground_ptr", "ground_z"):
        assert np.array_equal(getattr(got, k), getattr(want, k)), k


def test_roof_points_chunked_equal_the_whole_file(files):
    from pipeline.stages.buildings.heights import HeightParams, iter_points
    from pipeline.stages.buildings.reconstruct import (
        ROOF_FIELDS,
        ReconstructParams,
        collect_roof_points,
        gather_roof_points,
    )

    hp = HeightParams(roof_classes=(20,), ground_classes=(2,))
    params = ReconstructParams()
    geoms = _footprints()
    path = str(files["laz1"])
    pts = {k: np.concatenate([c[k] for c in iter_points(path, fields=ROOF_FIELDS)]) for k in ROOF_FIELDS}
    ptr, idx = collect_roof_points(pts, geoms, params.shrink_m, hp, params.single_returns)
    assert len(idx) > 1000
    for n in (2_000, 5_000, None):
        x, y, z, gptr, gidx = gather_roof_points(path, geoms, hp, params, chunk_points=n)
        assert np.array_equal(gptr, ptr)
        assert np.array_equal(x[gidx], pts["x"][idx])
        assert np.array_equal(y[gidx], pts["y"][idx])
        assert np.array_equal(z[gidx], pts["z"][idx])


def test_terrain_raster_does_not_depend_on_the_chunk_size(files):
    from pipeline.config.model import CrsConfig
    from pipeline.sources.rasters import Grid
    from pipeline.stages.terrain.rasterise import rasterise_point_files

    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    grid = Grid.from_bounds((362_000.0, 5_702_000.0, 362_200.0, 5_702_200.0), 2.0, "EPSG:25832")
    for stat in ("max", "min"):
        whole = rasterise_point_files([files["laz1"]], grid, stat=stat, crs_cfg=cfg)
        part = rasterise_point_files([files["laz1"]], grid, stat=stat, crs_cfg=cfg, chunk_size=3_333)
        assert whole.count.sum() == 23_456
        assert np.array_equal(whole.count, part.count)
        assert np.array_equal(whole.result(), part.result(), equal_nan=True)
    whole = rasterise_point_files([files["laz1"]], grid, stat="mean", crs_cfg=cfg, include_classes=(2,))
    part = rasterise_point_files(
        [files["laz1"]], grid, stat="mean", crs_cfg=cfg, include_classes=(2,), chunk_size=3_333
    )
    assert np.array_equal(whole.count, part.count) and 0 < whole.count.sum() < 23_456
    np.testing.assert_allclose(part.result(), whole.result(), rtol=1e-6, equal_nan=True)


def test_terrain_refuses_a_file_without_crs_like_the_tiler(files, tmp_path):
    from pipeline.config.model import CrsConfig
    from pipeline.errors import CrsError
    from pipeline.sources.rasters import Grid
    from pipeline.stages.terrain.rasterise import rasterise_point_files

    p = write_las(tmp_path / "nocrs.laz", synthetic_points(500, size=50.0), crs=None)
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    grid = Grid.from_bounds((362_000.0, 5_702_000.0, 362_050.0, 5_702_050.0), 2.0, "EPSG:25832")
    with pytest.raises(CrsError, match="no CRS"):
        rasterise_point_files([p], grid, stat="max", crs_cfg=cfg)
    acc = rasterise_point_files([p], grid, stat="max", crs_cfg=cfg, crs_override="EPSG:25832+7837")
    assert acc.count.sum() == 500


@pytest.mark.parametrize(("defect", "says"), [("data type", "data type 99"), ("length", "182 bytes")])
def test_a_malformed_extra_bytes_vlr_is_named(tmp_path, defect, says):
    import struct

    import laspy

    h = laspy.LasHeader(point_format=6, version="1.4")
    h.add_extra_dim(laspy.ExtraBytesParams(name="label", type=np.uint8))
    las = laspy.LasData(h)
    las.x = las.y = las.z = np.arange(10.0)
    p = tmp_path / "labels.las"
    las.write(str(p))
    data = bytearray(p.read_bytes())
    if defect == "data type":
        data[data.find(b"label") - 2] = 99  # the descriptor's data type: 99 is not a LAS type
    else:  # a VLR of 182 bytes: not a whole number of 192-byte descriptors
        i = data.find(b"LASF_Spec".ljust(16, b"\0") + struct.pack("<HH", 4, 192))
        data[i + 18 : i + 20] = struct.pack("<H", 182)
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"labels.las .*Extra Bytes.*malformed Extra Bytes VLR.*{says}"):
        reader.read_header(p)


@pytest.mark.parametrize("scale", [1.0, 2.0])  # a quaternion that is not unit length rotates the same
def test_e57_scan_pose_is_applied(tmp_path, scale):
    """The scan's pose (rotation quaternion, then translation) places its points: 90 degrees about z
    turns (x, y) into (-y, x)."""
    import pye57

    xyz = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.5], [3.0, -1.0, 2.0]])
    data = {"cartesianX": xyz[:, 0], "cartesianY": xyz[:, 1], "cartesianZ": xyz[:, 2]}
    p = tmp_path / "pose.e57"
    c = np.cos(np.pi / 4) * scale
    with pye57.E57(str(p), mode="w") as e:
        e.write_scan_raw(data, rotation=np.array([c, 0.0, 0.0, c]), translation=np.array([10.0, 20.0, 30.0]))
    got = read_points(p, ("x", "y", "z"))
    want = np.stack([-xyz[:, 1], xyz[:, 0], xyz[:, 2]], axis=1) + np.array([10.0, 20.0, 30.0])
    assert np.allclose(np.stack([got["x"], got["y"], got["z"]], axis=1), want, atol=0.0005)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("offset", "value", "says"),
    [
        (100, struct.pack("<I", 0xFFFF_FFF0), "VLRs announced"),  # a garbage VLR count
        (24, bytes([7, 9]), "unsupported LAS version 7.9"),
        (96, struct.pack("<I", 10**9), "point data at byte 1000000000"),
        (94, struct.pack("<H", 100), "header size 100"),
    ],
)
def test_a_damaged_public_header_is_refused_before_laspy_reads_it(tmp_path, offset, value, says):
    """A header whose numbers cannot describe the file fails at once with the file named (laspy itself
    loops over a garbage VLR count for minutes at growing memory)."""
    pts = synthetic_points(100, size=10.0, seed=1)
    p = write_las(tmp_path / "damaged.las", pts, point_format=3)
    data = bytearray(p.read_bytes())
    data[offset : offset + len(value)] = value
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"damaged.las.*{says}"):
        reader.read_header(p)
    # random bytes after the signature: refused too, never a hang
    p.write_bytes(b"LASF" + np.random.default_rng(0).bytes(1020))
    with pytest.raises(InputError, match=r"damaged\.las"):
        reader.read_header(p)


@pytest.mark.parametrize("kind", ["laz1", "laz7"])
def test_a_laz_written_to_a_pipe_reads_like_the_same_file_seekable(files, kind, tmp_path):
    """LASzip's writers that cannot seek back (to a pipe) leave the chunk table offset at -1 and store it in
    the file's last 8 bytes; laspy reads such a file, so must we (the same points). With a trailing offset
    that does not point at a chunk table it is refused as corrupt, naming the file."""
    import laspy

    data = bytearray(files[kind].read_bytes())
    start = laspy.open(files[kind]).header.offset_to_point_data
    (offset,) = struct.unpack_from("<q", data, start)
    struct.pack_into("<q", data, start, -1)
    piped = tmp_path / "piped.laz"
    piped.write_bytes(bytes(data) + struct.pack("<q", offset))
    got = np.concatenate([c["X"] for c in reader.iter_points(piped, ("X", "intensity"), 7_777)])
    want = np.concatenate([c["X"] for c in reader.iter_points(files[kind], ("X", "intensity"), 7_777)])
    assert np.array_equal(got, want) and np.array_equal(got, laspy.read(piped).X)
    bad = tmp_path / "bad.laz"
    bad.write_bytes(bytes(data) + struct.pack("<q", 10**12))
    with pytest.raises(InputError, match=r"bad\.laz.*chunk table offset 1000000000000"):
        reader.read_header(bad)
