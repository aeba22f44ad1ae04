"""End-to-end point tiling on small synthetic LAS/LAZ: conservation, bounds, accuracy, validators, determinism,
bad input."""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from pathlib import Path

import laspy
import numpy as np
import pytest
from pyproj import CRS

from pipeline.cli.main import main
from pipeline.config.model import CrsConfig
from pipeline.orchestrate.points_plan import PointTilingOptions
from pipeline.orchestrate.points_run import tile_pointcloud
from pipeline.tiles.gltf import read_glb
from pipeline.tiles.points_reader import pointcloud_invariants, tile_positions_mm
from pipeline.tiles.tileset import box_bounds, schema_errors
from tests._synthetic_las import synthetic_points, write_las

N = 120_000
OPTS = dict(class_scheme="adv", max_points_per_tile=4000)


@pytest.fixture(scope="module")
def laz(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pts")
    pts = synthetic_points(N, size=60.0, seed=7)
    return write_las(d / "small.laz", pts, point_format=3, scale=0.001, chunk_size=20_000)


@pytest.fixture(scope="module")
def tiled(laz, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "ts"
    tile_pointcloud([laz], out, PointTilingOptions(**OPTS))
    return out


def _walk(tileset: Path):
    """(tile json, directory of its tileset, parent geometric error) for every tile, through externals."""
    doc = json.loads(tileset.read_text())
    out = []

    def rec(t, base, parent_ge):
        out.append((t, base, parent_ge))
        c = t.get("content")
        if c and c["uri"].endswith(".json"):
            sub = base / c["uri"]
            sd = json.loads(sub.read_text())
            assert sd["root"]["geometricError"] == t["geometricError"]
            for ch in sd["root"].get("children", []):
                rec(ch, sub.parent, t["geometricError"])
            if "content" in sd["root"]:
                out.append((sd["root"], sub.parent, parent_ge))
        for ch in t.get("children", []):
            rec(ch, base, t["geometricError"])

    rec(doc["root"], tileset.parent, doc["geometricError"])
    return doc, out


def _reference_mm(laz: Path, frame) -> np.ndarray:
    """Input positions via the numpy reference of the lattice path (source -> ENU mm)."""
    from pipeline.orchestrate.points_plan import plan_tiling
    from pipeline.sources.pointcloud.header import plan_units
    from pipeline.stages.points.lattice import lattice_for
    from tests._points_reference import lattice_to_enu_mm_reference

    plan = plan_tiling([laz], PointTilingOptions(**OPTS, frame=frame))
    info, fj = plan.infos[0], plan.file_jobs[0]
    las = laspy.read(laz)
    lat = lattice_for(fj.crs_wkt, plan.crs_cfg, plan.frame, info.mins, info.maxs, fj.z_factor, str(laz))
    del plan_units
    return lattice_to_enu_mm_reference(
        np.asarray(las.X), np.asarray(las.Y), np.asarray(las.Z), info.scales, info.offsets, 1.0, lat
    )


def _frame_of(tiled: Path):
    from pipeline.crs import ProjectFrame

    f = json.loads((tiled / "pointcloud.json").read_text())["frame"]
    return ProjectFrame(tuple(f["origin_ecef"]), f["lon"], f["lat"])


def test_every_point_once_count_and_checksum(laz, tiled):
    inv = pointcloud_invariants(tiled / "tileset.json")
    rec = json.loads((tiled / "pointcloud.json").read_text())
    assert inv["points"] == N == rec["points"]
    assert inv["checksum"] == rec["checksum"]
    # the multiset of output positions equals the input's (tiles <= 65 m: 1 mm quantization, exact)
    out = np.concatenate([tile_positions_mm(p) for p in sorted((tiled / "content").rglob("*.glb"))])
    ref = _reference_mm(laz, _frame_of(tiled))
    key = lambda a: a[np.lexsort((a[:, 2], a[:, 1], a[:, 0]))]  # noqa: E731
    assert np.array_equal(key(out), key(ref.astype(np.int64)))


def test_positions_match_pyproj_ecef(laz, tiled):
    frame = _frame_of(tiled)
    las = laspy.read(laz)
    from pipeline.crs import make_transformer

    t = make_transformer(
        CRS.from_user_input("EPSG:25832+7837"),
        "EPSG:4978",
        CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"),
    )
    ex = np.stack(t.transform(np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)), axis=1)
    ref_mm = _reference_mm(laz, frame).astype(np.int64)
    # every output point is one of the reference points (previous test); map them to ECEF
    ecef = frame.enu_to_ecef(ref_mm / 1000.0)
    d = np.linalg.norm(ecef - ex, axis=1)
    assert d.max() < 0.001 + 0.001  # lattice (< 1 mm incl. rounding) + 1 mm quantization step


def test_tiles_inside_bounds_and_geometric_error_decreasing(tiled):
    doc, tiles = _walk(tiled / "tileset.json")
    assert doc["root"]["refine"] == "ADD" and "transform" in doc["root"]
    assert doc["geometricError"] > doc["root"]["geometricError"]
    n = 0
    for t, base, parent_ge in tiles:
        assert 0 < t["geometricError"] < parent_ge
        c = t.get("content")
        if c and not c["uri"].endswith(".json"):
            pos = tile_positions_mm(base / c["uri"]) / 1000.0
            lo, hi = box_bounds(t["boundingVolume"]["box"])
            assert np.all(pos >= lo - 1e-6) and np.all(pos <= hi + 1e-6)
            n += len(pos)
    assert n == N
    assert json.loads((tiled / "pointcloud.json").read_text())["depth"] >= 3


def test_tilesets_pass_schema(tiled):
    files = [tiled / "tileset.json", *sorted((tiled / "tilesets").glob("*.json"))]
    for f in files:
        assert schema_errors(json.loads(f.read_text())) == [], f


def test_glb_metadata_and_validator(tiled):
    glbs = sorted((tiled / "content").rglob("*.glb"))
    js, _ = read_glb(glbs[0].read_bytes())
    assert "KHR_mesh_quantization" in js["extensionsRequired"]
    assert "EXT_meshopt_compression" in js["extensionsRequired"]  # compact tiles are the default
    prim = js["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0
    acc = js["accessors"][prim["attributes"]["POSITION"]]
    assert acc["componentType"] == 5123
    assert js["accessors"][prim["attributes"]["COLOR_0"]]["normalized"] is True
    schema = js["extensions"]["EXT_structural_metadata"]["schema"]
    enum_names = {v["value"]: v["name"] for v in schema["enums"]["classification"]["values"]}
    assert enum_names[2].startswith("Boden") and enum_names[20].startswith("Nicht-Boden")
    pa = js["extensions"]["EXT_structural_metadata"]["propertyAttributes"][0]
    assert set(pa["properties"]) >= {"intensity", "classification", "return_number", "gps_time"}
    assert "offset" in pa["properties"]["gps_time"]
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    if not validator_available():
        pytest.skip("gltf-validator not installed")
    reports = validate_glb_files(glbs)
    bad = [(r["file"], r["messages"]) for r in reports if r["errors"]]
    assert not bad, bad[:2]


def test_glb_styleable_without_orphan_feature_ids(tiled):
    """CesiumJS 1.145 breaks every custom shader / style on primitives whose EXT_mesh_features feature ids
    lack a property table: point primitives carry none; per-point properties are property attributes
    (styles read them as ${classification}, ${intensity}); the BIN chunk is 8-byte aligned."""
    for p in sorted((tiled / "content").rglob("*.glb"))[:20]:
        data = p.read_bytes()
        js, _ = read_glb(data)
        jlen = struct.unpack_from("<I", data, 12)[0]
        assert (20 + jlen) % 8 == 0, p
        assert "EXT_mesh_features" not in js.get("extensionsUsed", []), p
        meta = js["extensions"]["EXT_structural_metadata"]
        classes = meta["schema"]["classes"]
        for prim in js["meshes"][0]["primitives"]:
            ext = prim["extensions"]
            for fid in ext.get("EXT_mesh_features", {}).get("featureIds", []):
                assert "propertyTable" in fid and fid["propertyTable"] < len(meta.get("propertyTables", []))
            (pa_i,) = ext["EXT_structural_metadata"]["propertyAttributes"]
            pa = meta["propertyAttributes"][pa_i]
            assert pa["class"] in classes
            for prop in ("classification", "intensity"):
                assert prop in classes[pa["class"]]["properties"]
                assert pa["properties"][prop]["attribute"] in prim["attributes"]


def test_tileset_geometric_error_covers_the_data(tiled, tmp_path, laz):
    """CesiumJS culls a whole tileset when its tileset-level geometricError is small: it must be at least
    the root box's diagonal, and every tile's error at most its parent's."""
    for ts in (tiled, None):
        if ts is None:
            ts = tmp_path / "impl"
            tile_pointcloud([laz], ts, PointTilingOptions(**OPTS, implicit=True))
        doc = json.loads((ts / "tileset.json").read_text())
        lo, hi = box_bounds(doc["root"]["boundingVolume"]["box"])
        assert doc["geometricError"] >= float(np.linalg.norm(np.asarray(hi) - np.asarray(lo)))
        assert doc["geometricError"] >= doc["root"]["geometricError"] > 0
    _doc, tiles = _walk(tiled / "tileset.json")
    for t, _base, parent_ge in tiles:
        assert t["geometricError"] <= parent_ge


def _tree_hash(d: Path) -> dict[str, str]:
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def test_byte_identical_across_runs(laz, tiled, tmp_path):
    out = tmp_path / "again"
    tile_pointcloud([laz], out, PointTilingOptions(**OPTS))
    assert _tree_hash(out) == _tree_hash(tiled)


def test_byte_identical_whatever_the_bins(laz, tiled, tmp_path):
    """Many small bins (as with a small memory budget) give the same bytes as one big bin."""
    out = tmp_path / "bins"
    s = tile_pointcloud([laz], out, PointTilingOptions(**OPTS, max_bin_points=25_000))
    assert s.bins >= 4
    assert _tree_hash(out) == _tree_hash(tiled)


def test_byte_identical_whatever_the_units(laz, tiled, tmp_path, monkeypatch):
    """The split into decode units is a matter of speed only: other unit sizes give the same bytes."""
    import pipeline.orchestrate.points_run as op
    from pipeline.sources.pointcloud import header

    seen = []

    def small_units(infos):
        units = header.plan_units(infos, points_per_unit=30_000)
        seen.append(len(units))
        return units

    monkeypatch.setattr(op, "plan_units", small_units)
    out = tmp_path / "units"
    tile_pointcloud([laz], out, PointTilingOptions(**OPTS))
    assert seen == [4]  # 6 chunks of 20 000 points, 4 units (the default plan is one unit)
    assert _tree_hash(out) == _tree_hash(tiled)


def test_units_cover_the_file_evenly(laz, tmp_path):
    from pipeline.sources.pointcloud.header import plan_units, scan_file
    from tests._synthetic_las import synthetic_points, write_las

    big = write_las(tmp_path / "b.laz", synthetic_points(230_000, size=60.0, seed=3), point_format=3,
                    scale=0.001, chunk_size=10_000)  # fmt: skip
    infos = [scan_file(laz), scan_file(big)]
    for ppu in (25_000, 40_000, 100_000, 1_000_000):
        units = plan_units(infos, points_per_unit=ppu)
        assert [u.unit_index for u in units] == list(range(len(units)))
        for fi, info in enumerate(infos):
            mine = [u for u in units if u.file_index == fi]
            assert len(mine) == 1 or len(mine) % 2 == 0  # two workers share each file's units equally
            # contiguous, whole chunks, every point once, byte ranges back to back
            assert [c for u in mine for c in u.chunks] == list(info.chunk_table)
            assert sum(u.count for u in mine) == info.count
            for a, b in itertools.pairwise(mine):
                assert b.start == a.start + a.count and b.byte_start == a.byte_start + a.byte_len
            sizes = [u.count for u in mine]
            assert max(sizes) - min(sizes) <= max(n for n, _b in info.chunk_table)  # even within a chunk


@pytest.mark.cluster
@pytest.mark.slow
def test_byte_identical_one_vs_two_workers(laz, tiled, tmp_path):
    from pipeline.config.model import RuntimeConfig
    from pipeline.runtime import dask_client

    out = tmp_path / "two"
    from pipeline.orchestrate.executor import build_executor

    with dask_client(RuntimeConfig(memory="1GB"), workers=2) as client:
        s = tile_pointcloud([laz], out, PointTilingOptions(**OPTS), build_executor(client), workers=2)
    assert s.points_out == N
    assert _tree_hash(out) == _tree_hash(tiled)


def test_local_pool_same_bytes_and_typed_errors(laz, tiled, tmp_path):
    """The standalone pool (spawned workers, no Dask) gives the same bytes; worker errors keep their type."""
    from pipeline.errors import InputError
    from pipeline.orchestrate.points_pool import LocalPool

    out = tmp_path / "pool"
    bad = tmp_path / "bad.laz"
    data = bytearray(laz.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = bytes(4000)  # corrupt chunk bytes: fails in a worker
    bad.write_bytes(bytes(data))
    with LocalPool(2) as pool:
        s = tile_pointcloud([laz], out, PointTilingOptions(**OPTS), pool, workers=2)
        with pytest.raises(InputError, match=r"bad\.laz"):
            tile_pointcloud([bad], tmp_path / "never", PointTilingOptions(**OPTS), pool, workers=2)
    assert s.points_out == N
    assert _tree_hash(out) == _tree_hash(tiled)
    assert not (tmp_path / "never").exists()


def test_local_pool_closes_cleanly_and_aborts_at_once():
    """A closed pool leaves nothing for Python's exit hook to trip over (no "Exception ignored" / "Bad file
    descriptor" on stderr at exit), and an aborted pool stops a running task at once instead of waiting
    for it (a run that failed or was interrupted)."""
    import subprocess
    import sys

    code = (
        "import time\n"
        "from pipeline.orchestrate.points_pool import LocalPool\n"
        "with LocalPool(2) as pool:\n"
        "    assert pool.submit(sum, [1, 2]).result() == 3\n"
        "pool = LocalPool(2)\n"
        "fut = pool.submit(time.sleep, 30)\n"
        "time.sleep(1.0)\n"
        "t0 = time.perf_counter()\n"
        "pool.shutdown(wait=False)\n"
        "print(round(time.perf_counter() - t0, 3))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "Exception ignored" not in r.stderr and "Bad file descriptor" not in r.stderr, r.stderr
    assert float(r.stdout.strip()) < 10, r.stdout  # not the 30 s of the running task


def test_planning_failure_on_the_local_pool_leaves_nothing(laz, tmp_path):
    """A planning error (here: no CRS) on the local pool leaves nothing behind and keeps the pool usable."""
    import time

    from pipeline.errors import CrsError
    from pipeline.orchestrate.points_pool import LocalPool

    nocrs = write_las(tmp_path / "nocrs.laz", synthetic_points(150_000, size=30.0), point_format=1, crs=None,
                      chunk_size=10_000)  # fmt: skip
    with LocalPool(2) as pool:
        t0 = time.perf_counter()
        with pytest.raises(CrsError, match=r"nocrs\.laz"):
            tile_pointcloud([nocrs], tmp_path / "never", PointTilingOptions(**OPTS), pool, workers=2)
        assert time.perf_counter() - t0 < 60
        s = tile_pointcloud([laz], tmp_path / "after", PointTilingOptions(**OPTS), pool, workers=2)
    assert s.points_out == N
    assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after", "nocrs.laz"]  # no staging left over


def test_pnts_profile_read_by_py3dtiles(laz, tmp_path):
    out = tmp_path / "v10"
    tile_pointcloud([laz], out, PointTilingOptions(**OPTS, format="1.0"))
    doc = json.loads((out / "tileset.json").read_text())
    assert doc["asset"]["version"] == "1.0"
    from py3dtiles.tileset.content import read_binary_tile_content

    total = 0
    for p in sorted((out / "content").rglob("*.pnts")):
        tc = read_binary_tile_content(p)
        n = tc.body.feature_table.nb_points()
        pos = tc.body.feature_table.get_feature_position_at(0) if n else None
        assert pos is not None
        total += n
    assert total == N
    assert pointcloud_invariants(out / "tileset.json")["points"] == N


def test_implicit_and_uncompressed(laz, tmp_path, tiled):
    """Implicit tiling with uncompressed tiles (`meshopt=False`): same points and checksum as the default
    compressed explicit tileset, valid glTF, and the default tiles are far smaller (docs/pointcloud.md)."""
    out = tmp_path / "impl"
    tile_pointcloud([laz], out, PointTilingOptions(**OPTS, implicit=True, meshopt=False))
    plain = sorted((out / "content").rglob("*.glb"))
    assert plain and not any(b"EXT_meshopt_compression" in p.read_bytes()[:4000] for p in plain)
    compact_bytes = sum(p.stat().st_size for p in (tiled / "content").rglob("*.glb"))
    assert compact_bytes < 0.4 * sum(p.stat().st_size for p in plain)
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    if validator_available():
        bad = [(r["file"], r["messages"]) for r in validate_glb_files(plain) if r["errors"]]
        assert not bad, bad[:2]
    doc = json.loads((out / "tileset.json").read_text())
    assert doc["root"]["implicitTiling"]["subdivisionScheme"] == "OCTREE"
    assert schema_errors(doc) == []
    sub = (out / "subtrees" / "0.0.0.0.subtree").read_bytes()
    assert sub[:4] == b"subt"
    jlen = struct.unpack_from("<Q", sub, 8)[0]
    sj = json.loads(sub[24 : 24 + jlen])
    assert (
        schema_errors(sj, "Subtree/subtree.schema.json") == []
        if Path("pipeline/data/schema/3d-tiles-1.1-schema/Subtree/subtree.schema.json").exists()
        else True
    )
    inv = pointcloud_invariants(out / "tileset.json")
    assert inv["checksum"] == pointcloud_invariants(tiled / "tileset.json")["checksum"]
    assert inv["points"] == N


# ---- bad input ---------------------------------------------------------------------------------------


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["points", *args, "--jobs", "1", "--quiet"])
    return code, capsys.readouterr().err


def _bad(path: Path, tmp_path: Path, capsys, *extra: str) -> str:
    out = tmp_path / "never"
    code, err = _run_cli([str(path), "--out", str(out), "--class-scheme", "adv", *extra], capsys)
    assert code != 0
    assert path.name in err, err
    assert not out.exists()
    assert not any(p.name.startswith(".never") for p in tmp_path.iterdir())
    return err


def test_bad_input_on_the_local_pool_cli_path(laz, tmp_path, capsys):
    """`twin points --jobs 2` queues its decode tasks before it plans or checks the output: a non-empty
    --out, a truncated LAZ and a file without a CRS still exit with their codes naming the problem, and
    leave the existing output untouched and no staging directory behind."""
    from pipeline.errors import EXIT_CRS, EXIT_INPUT

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    code = main(["points", str(laz), "--out", str(out), "--class-scheme", "adv", "--jobs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "not empty" in err and str(out) in err
    assert [p.name for p in out.iterdir()] == ["old.txt"] and (out / "old.txt").read_text() == "keep"
    data = laz.read_bytes()
    trunc = tmp_path / "truncated.laz"
    trunc.write_bytes(data[: len(data) * 2 // 3])
    nocrs = write_las(tmp_path / "nocrs.laz", synthetic_points(2000, size=20.0), point_format=1, crs=None)
    for bad, words, exit_code in ((trunc, "truncated", EXIT_INPUT), (nocrs, "no CRS", EXIT_CRS)):
        code = main(["points", str(bad), "--out", str(tmp_path / "never"), "--class-scheme", "adv",
                     "--jobs", "2", "--quiet"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == exit_code and bad.name in err and words in err, err
        assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nocrs.laz", "out", "truncated.laz"]


def test_truncated_laz(laz, tmp_path, capsys):
    data = laz.read_bytes()
    p = tmp_path / "truncated.laz"
    p.write_bytes(data[: len(data) * 2 // 3])
    assert "truncated" in _bad(p, tmp_path, capsys)


def test_corrupt_laz(laz, tmp_path, capsys):
    data = bytearray(laz.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    p = tmp_path / "corrupt.laz"
    p.write_bytes(bytes(data))
    _bad(p, tmp_path, capsys)


def test_empty_file(tmp_path, capsys):
    p = tmp_path / "empty.laz"
    p.write_bytes(b"")
    assert "empty" in _bad(p, tmp_path, capsys)


def test_nan_header(tmp_path, capsys):
    pts = synthetic_points(2000, size=20.0)
    p = write_las(tmp_path / "nan.las", pts, point_format=1)
    data = bytearray(p.read_bytes())
    struct.pack_into("<d", data, 131, float("nan"))  # x scale factor (LAS 1.2 header offset 131)
    p.write_bytes(bytes(data))
    assert "NaN" in _bad(p, tmp_path, capsys)


def test_missing_crs(tmp_path, capsys):
    p = write_las(tmp_path / "nocrs.las", synthetic_points(2000, size=20.0), point_format=1, crs=None)
    assert "no CRS" in _bad(p, tmp_path, capsys)


def test_orthophoto_without_crs(tmp_path, capsys):
    """An orthophoto without a CRS is refused before anything is written: exit code of a CRS error, the
    raster named, no output and no staging folder (its tiles are chosen per point file by their bounds)."""
    import rasterio
    from rasterio.transform import from_origin

    from pipeline.errors import EXIT_CRS

    p = write_las(tmp_path / "pf1.las", synthetic_points(2000, size=20.0), point_format=1)
    tif = tmp_path / "nocrs_dop.tif"
    with rasterio.open(
        tif, "w", driver="GTiff", width=8, height=8, count=4, dtype="uint8", transform=from_origin(0, 8, 1, 1)
    ) as dst:
        dst.write(np.zeros((4, 8, 8), dtype=np.uint8))
    out = tmp_path / "never"
    code, err = _run_cli(
        [str(p), "--out", str(out), "--class-scheme", "adv", "--orthophoto", str(tif)], capsys
    )
    assert code == EXIT_CRS, err
    assert "nocrs_dop.tif" in err and "no CRS" in err, err
    assert not out.exists() and not any(q.name.startswith(".never") for q in tmp_path.iterdir())


def test_mislabelled_crs(tmp_path, capsys):
    p = write_las(tmp_path / "wgs84.las", synthetic_points(2000, size=20.0), point_format=1, crs="EPSG:4326")
    # metres under a geographic label: the diagnosis names the fix (issue 13), not a reprojection
    assert "CRS looks mislabelled, coordinates look projected: give --crs" in _bad(
        p, tmp_path, capsys, "--assume-ellipsoidal"
    )


def test_horizontal_only_refused_then_accepted(tmp_path, capsys):
    p = write_las(tmp_path / "utm.las", synthetic_points(3000, size=20.0), point_format=1, crs="EPSG:25832")
    assert "vertical" in _bad(p, tmp_path, capsys)
    code, err = _run_cli(
        [str(p), "--out", str(tmp_path / "ok"), "--class-scheme", "adv", "--assume-ellipsoidal"], capsys
    )
    assert code == 0, err
    assert pointcloud_invariants(tmp_path / "ok" / "tileset.json")["points"] == 3000


def test_unknown_class_code(tmp_path, capsys):
    pts = synthetic_points(3000, size=20.0)
    pts["classification"][5] = 6  # building: ASPRS yes, AdV no
    p = write_las(tmp_path / "cls.las", pts, point_format=1)
    err = _bad(p, tmp_path, capsys)
    assert "[6]" in err
    code, err = _run_cli(
        [str(p), "--out", str(tmp_path / "kept"), "--class-scheme", "adv", "--keep-unknown-classes"], capsys
    )
    assert code == 0, err


def test_orthophoto_colours_and_nir(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    pts = synthetic_points(5000, size=30.0, seed=3)
    p = write_las(tmp_path / "pf1.las", pts, point_format=1)  # NRW: no RGB
    tif = tmp_path / "dop.tif"
    data = np.zeros((4, 64, 64), dtype=np.uint8)
    data[0] = 200
    data[1] = 100
    data[2] = 50
    data[3] = 77
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=4,
        dtype="uint8",
        crs="EPSG:25832",
        transform=from_origin(361_999.0, 5_702_031.0, 0.5, 0.5),
    ) as dst:
        dst.write(data)
    out = tmp_path / "col"
    tile_pointcloud([p], out, PointTilingOptions(**OPTS, orthophoto=str(tif)))
    glb = sorted((out / "content").rglob("*.glb"))[0]
    from pipeline.tiles.gltf import decode_meshopt_views

    js, binary = decode_meshopt_views(*read_glb(glb.read_bytes()))  # the default tiles are compressed
    from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8

    prim = js["meshes"][0]["primitives"][0]
    col = _attr(js, binary, prim["attributes"]["COLOR_0"])
    assert np.all(col[:, 0] == SRGB8_TO_LINEAR8[200]) and np.all(col[:, 2] == SRGB8_TO_LINEAR8[50])
    assert np.all(_attr(js, binary, prim["attributes"]["_NIR"]) == 77)


def _attr(js, binary, index):
    acc = js["accessors"][index]
    view = js["bufferViews"][acc["bufferView"]]
    dt = {5121: np.uint8, 5123: np.uint16, 5126: np.float32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3}[acc["type"]]
    raw = np.frombuffer(binary, np.uint8, view["byteLength"], view["byteOffset"]).reshape(acc["count"], -1)
    off = acc.get("byteOffset", 0)
    vals = raw[:, off : off + np.dtype(dt).itemsize * width].copy().view(dt)
    return vals if width > 1 else vals[:, 0]
