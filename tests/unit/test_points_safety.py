"""`twin points` never loses or invents points silently and never leaves processes or staging behind
(issue 12: positions, counts, signals, disk full; issue 13: tolerant readers where the data is honest).

Every case uses small crafted LAS/LAZ files and checks the real outcome: exit code, message, the points read
back from the tiles (count and positions), no `.tmp-*` folder, no surviving process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import laspy
import numpy as np
import pytest
from pyproj import CRS, Transformer

from pipeline.cli.main import main
from pipeline.tiles.points_reader import content_files, tile_positions_mm

REPO = Path(__file__).resolve().parents[2]


def write_las(
    path: Path,
    xyz: np.ndarray,
    *,
    crs: str = "EPSG:25832",
    point_format: int = 6,
    version: str = "1.4",
    rgb: np.ndarray | None = None,
    scale: float = 0.01,
) -> Path:
    """A small LAS/LAZ file (by suffix) with a CRS, ground class and the given positions."""
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.scales = np.array([scale, scale, scale])
    header.offsets = np.floor(xyz.min(axis=0))
    header.add_crs(CRS.from_user_input(crs))
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.classification = np.full(len(xyz), 2, np.uint8)
    las.intensity = np.arange(len(xyz), dtype=np.uint16)
    if rgb is not None:
        las.red, las.green, las.blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    las.write(str(path))
    return path


def cloud(n: int, x0: float, y0: float, z0: float = 100.0, seed: int = 0, size: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [x0 + rng.uniform(0, size, n), y0 + rng.uniform(0, size, n), z0 + rng.uniform(0, 10, n)]
    )


def run_points(*args: str) -> tuple[int, dict | None]:
    """`twin points ... --json --quiet` in this process; (exit code, summary or None)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["points", *args, "--json", "--quiet"])
    out = buf.getvalue()
    return code, (json.loads(out) if code == 0 and out.strip() else None)


def tiled_points(out: Path) -> np.ndarray:
    return np.concatenate([tile_positions_mm(p) for p in content_files(out / "tileset.json")])


def tiled_intensity(out: Path) -> np.ndarray:
    """The `_INTENSITY` attribute of every point, in the order of `tiled_points`."""
    from pipeline.tiles.gltf import decode_meshopt_views, read_glb

    vals = []
    for p in content_files(out / "tileset.json"):
        js, binary = read_glb(p.read_bytes())
        if "EXT_meshopt_compression" in js.get("extensionsUsed", []):  # the default 1.1 tiles
            js, binary = decode_meshopt_views(js, binary)
        acc = js["accessors"][js["meshes"][0]["primitives"][0]["attributes"]["_INTENSITY"]]
        view = js["bufferViews"][acc["bufferView"]]
        rows = np.frombuffer(binary, np.uint8, view["byteLength"], view.get("byteOffset", 0))
        rows = rows.reshape(acc["count"], view["byteStride"])
        off = acc.get("byteOffset", 0)
        vals.append(rows[:, off : off + 2].copy().view("<u2").ravel().astype(np.int64))
    return np.concatenate(vals)


def no_staging(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp-" in p.name]


# ---- a. positions never overflow -----------------------------------------------------------------------


def test_inputs_on_two_continents_are_refused_naming_the_file(tmp_path, capsys):
    germany = write_las(tmp_path / "bochum.las", cloud(2000, 372000, 5707000), crs="EPSG:25832")
    oregon = write_las(tmp_path / "eugene.las", cloud(1000, 493000, 4877000, seed=1), crs="EPSG:26910")
    code, _ = run_points(str(germany), str(oregon), "--out", str(tmp_path / "out"), "--jobs", "1",
                         "--assume-ellipsoidal")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "32-bit millimetres" in err and ("eugene.las" in err or "bochum.las" in err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and no_staging(tmp_path)


def test_inputs_far_from_the_origin_but_close_together_tile_exactly(tmp_path):
    """Oregon alone (UTM 10N, ellipsoidal heights): positions within a millimetre of PROJ's."""
    xyz = cloud(3000, 493000, 4877000, seed=2)
    f = write_las(tmp_path / "eugene.las", xyz, crs="EPSG:26910")
    code, summary = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1", "--assume-ellipsoidal")
    assert code == 0 and summary["points_out"] == 3000
    got = tiled_points(tmp_path / "out") / 1000.0
    assert np.max(np.abs(got)) > 0  # (sanity: real coordinates)
    doc = json.loads((tmp_path / "out" / "pointcloud.json").read_text())
    frame = doc["frame"]
    # expected ENU positions of the (LAS-rounded) input points, per point through PROJ
    las = laspy.read(str(f))
    t = Transformer.from_crs(CRS("EPSG:26910").to_3d(), "EPSG:4978", always_xy=True)
    ex, ey, ez = t.transform(np.asarray(las.x), np.asarray(las.y), np.asarray(las.z))
    from pipeline.frame import ProjectFrame

    pf = ProjectFrame(tuple(frame["origin_ecef"]), frame["lon"], frame["lat"])
    want = pf.ecef_to_enu(ex, ey, ez)
    ids = tiled_intensity(tmp_path / "out")  # the crafted intensity is the point's index in the file
    assert sorted(ids.tolist()) == list(range(3000))
    assert np.max(np.abs(got - want[ids])) < 0.0015


# ---- b. honest point counts ----------------------------------------------------------------------------


def test_same_file_under_two_names_is_tiled_once_with_a_note(tmp_path):
    a = write_las(tmp_path / "a.laz", cloud(5000, 372000, 5707000), crs="EPSG:25832+7837")
    b = tmp_path / "copy_of_a.laz"
    b.write_bytes(a.read_bytes())
    c = write_las(tmp_path / "c.laz", cloud(700, 372100, 5707000, seed=3), crs="EPSG:25832+7837")
    code, summary = run_points(str(a), str(b), str(c), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0
    assert summary["points_in"] == summary["points_out"] == 5700
    assert summary["points_header"] == 10700
    assert summary["not_tiled"] == [
        {
            "file": str(b.resolve()),
            "header_points": 5000,
            "reason": f"identical to {a.resolve()} (same sha256)",
        }
    ]
    assert any("copy_of_a.laz: identical to a.laz" in n for n in summary["notes"])
    assert len(tiled_points(tmp_path / "out")) == 5700


def _patch_point_count(path: Path, count: int) -> None:
    """Overwrite the header's point count (legacy and LAS 1.4 fields) without touching the data."""
    with laspy.open(str(path)) as r:
        version = r.header.version
    with path.open("r+b") as f:
        f.seek(107)
        f.write(int(count).to_bytes(4, "little"))
        if version.minor >= 4:
            f.seek(247)
            f.write(int(count).to_bytes(8, "little"))


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_header_count_lower_than_the_data_is_refused(tmp_path, capsys, suffix):
    f = write_las(tmp_path / f"short{suffix}", cloud(100_709, 372000, 5707000), crs="EPSG:25832+7837")
    _patch_point_count(f, 99_709)
    code, _ = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1")
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"short{suffix}" in err and "99709" in err.replace(",", "")
    assert "Traceback" not in err and no_staging(tmp_path)


def test_malformed_extra_bytes_vlr_is_named(tmp_path, capsys):
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.add_extra_dim(laspy.ExtraBytesParams(name="label", type=np.uint8))
    header.add_crs(CRS.from_user_input("EPSG:25832+7837"))
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([372000.0, 5707000.0, 0.0])
    las = laspy.LasData(header)
    xyz = cloud(500, 372000, 5707000)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.classification = np.full(500, 2, np.uint8)
    las.label = np.arange(500) % 7
    f = tmp_path / "labels.las"
    las.write(str(f))
    data = bytearray(f.read_bytes())
    i = data.find(b"label")
    assert i > 0
    data[i - 2] = 99  # the descriptor's data type (2 bytes before the name): 99 is not a LAS type
    f.write_bytes(bytes(data))
    code, _ = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1", "--extra-dim", "label")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "labels.las" in err and "Extra Bytes" in err
    assert "Traceback" not in err


# ---- c. processes and signals --------------------------------------------------------------------------


def test_invalid_jobs_are_refused(tmp_path):
    f = write_las(tmp_path / "a.las", cloud(100, 372000, 5707000), crs="EPSG:25832+7837")
    for bad in ("-3", "0", "two"):
        p = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", "points", str(f), "--out", str(tmp_path / "o"),
             "--jobs", bad],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert p.returncode == 2 and "--jobs" in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def big_laz(tmp_path_factory) -> Path:
    """A file that keeps two workers busy for a few seconds (about 3 M points)."""
    d = tmp_path_factory.mktemp("big")
    return write_las(d / "big.laz", cloud(3_000_000, 372000, 5707000, size=400), crs="EPSG:25832+7837")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_workers_and_removes_staging(tmp_path, big_laz, sig):
    """A signal while the workers run (the kernels in numba's cache: a cold cache is the next test)."""
    from pipeline.stages.points.kernels import warm_all

    warm_all()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "points", str(big_laz), "--out", str(out), "--jobs", "2",
         "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    )  # fmt: skip
    # wait until the workers run and the staging folder exists
    deadline = time.time() + 60
    kids: list[int] = []
    while time.time() < deadline:
        kids = _descendants(p.pid)
        if len(kids) >= 3 and any(".tmp-" in q.name for q in tmp_path.iterdir()):
            break
        time.sleep(0.05)
    assert len(kids) >= 3, "fork server and two workers expected"
    time.sleep(0.5)
    p.send_signal(sig)
    # communicate() returns only when every holder of the pipes (workers too) has closed them
    _stdout, stderr = p.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert p.returncode == 143 and b"terminated (SIGTERM)" in stderr, stderr.decode()
    else:
        assert p.returncode == 130 and b"interrupted" in stderr, stderr.decode()
    assert b"Traceback" not in stderr
    time.sleep(0.2)
    assert _alive(kids) == []
    assert no_staging(tmp_path) and not out.exists(), sorted(q.name for q in tmp_path.iterdir())


def _kernels_loaded_at(trace: Path) -> float | None:
    """When the fork server had loaded the kernels (its `preload` trace line: start, seconds; the clock of
    `time.perf_counter`, shared by all processes), None if it never had."""
    for line in trace.read_text().splitlines() if trace.exists() else []:
        _pid, what, *rest = line.split()
        if what == "preload":
            return float(rest[0]) + float(rest[1])
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_a_cold_numba_cache_compiles_stops_at_once(tmp_path, sig):
    """With a cold numba cache the fork server compiles the kernels (tens of seconds) while the run plans
    and stages: a signal then ends the run at once, removing the staging and the fork server, instead of
    waiting for the compilation to finish."""
    f = write_las(tmp_path / "a.laz", cloud(20_000, 372000, 5707000), crs="EPSG:25832+7837")
    out, trace = tmp_path / "out", tmp_path / "trace"
    (tmp_path / "numba").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "TWIN_POINTS_TRACE": str(trace)}  # fmt: skip
    with (tmp_path / "stderr").open("wb") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "points", str(f), "--out", str(out), "--jobs", "2",
             "--quiet"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env,
        )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not any(".tmp-" in q.name for q in tmp_path.iterdir()):
        time.sleep(0.05)
    kids = _descendants(p.pid)  # the fork server (compiling) and multiprocessing's resource tracker
    if _kernels_loaded_at(trace) is not None:
        p.kill()
        p.wait()
        pytest.skip("the kernels compiled before the run staged its output: nothing to interrupt")
    p.send_signal(sig)
    p.wait(timeout=600)
    ended = time.perf_counter()
    stderr = (tmp_path / "stderr").read_text()
    assert p.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr, stderr
    loaded = _kernels_loaded_at(trace)
    assert loaded is None or loaded > ended, "the run waited for the compilation"
    deadline = time.time() + 10
    while _alive(kids) and time.time() < deadline:
        time.sleep(0.05)
    assert _alive(kids) == []  # the fork server too, compiling or not
    assert no_staging(tmp_path) and not out.exists(), sorted(q.name for q in tmp_path.iterdir())


def test_sigkill_leaves_no_workers_and_the_next_run_removes_its_staging(tmp_path, big_laz):
    out = tmp_path / "out"
    p = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "points", str(big_laz), "--out", str(out), "--jobs", "2",
         "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    deadline = time.time() + 60
    kids: list[int] = []
    while time.time() < deadline:
        kids = _descendants(p.pid)
        if len(kids) >= 3 and any(".tmp-" in q.name for q in tmp_path.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    p.kill()
    p.communicate(timeout=60)  # would hang while a worker held the pipes
    deadline = time.time() + 10
    while _alive(kids) and time.time() < deadline:
        time.sleep(0.1)
    assert _alive(kids) == []
    stale = [q for q in tmp_path.iterdir() if ".tmp-" in q.name]
    assert stale  # a killed run cannot clean up itself ...
    sentinel = tmp_path / ".out.tmp-notours"
    sentinel.mkdir()
    small = write_las(tmp_path / "small.las", cloud(100, 372000, 5707000), crs="EPSG:25832+7837")
    code, _ = run_points(str(small), "--out", str(out), "--jobs", "1")
    assert code == 0
    # ... the next run into the same --out removes it, and only it
    assert [q.name for q in tmp_path.iterdir() if ".tmp-" in q.name] == [sentinel.name]


def test_disk_full_is_a_clear_error_and_cleans_up(tmp_path):
    """A file-size limit makes the first large write fail (EFBIG), as a full disk would (ENOSPC)."""
    f = write_las(tmp_path / "a.laz", cloud(200_000, 372000, 5707000), crs="EPSG:25832+7837")
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000)); "
        "from pipeline.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        p = subprocess.run(
            [sys.executable, "-c", code, "points", str(f), "--out", str(out), "--jobs", jobs, "--quiet"],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert p.returncode == 9, p.stderr
        assert "no space left" in p.stderr and "Traceback" not in p.stderr
        assert not out.exists() and no_staging(tmp_path)


def test_packing_failure_surfaces_as_itself(tmp_path, monkeypatch):
    """An error while the spill mapping is written is reported as itself, not as `BufferError: cannot close
    exported pointers exist` (the mapping is closed while a traceback still viewed it)."""
    from pipeline.stages.points import kernels

    def boom(*a, **k):
        raise ValueError("packing failed")

    monkeypatch.setattr(kernels, "pack_records", boom)
    f = write_las(tmp_path / "a.las", cloud(1000, 372000, 5707000), crs="EPSG:25832+7837")
    with pytest.raises(ValueError, match="packing failed"):
        from pipeline.orchestrate.points_plan import PointTilingOptions
        from pipeline.orchestrate.points_run import tile_pointcloud

        tile_pointcloud([f], tmp_path / "out", PointTilingOptions())
    assert no_staging(tmp_path)


# ---- d. tolerant where the data is honest --------------------------------------------------------------


def _patch_bounds(path: Path, axis: int, lo: float | None = None, hi: float | None = None) -> None:
    """Overwrite a header min/max (max x at 179, min x at 187, max y 195, min y 203, max z 211, min z 219)."""
    import struct

    with path.open("r+b") as f:
        if hi is not None:
            f.seek(179 + 16 * axis)
            f.write(struct.pack("<d", hi))
        if lo is not None:
            f.seek(187 + 16 * axis)
            f.write(struct.pack("<d", lo))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_points_outside_the_header_bounds_use_the_real_bounds(tmp_path, jobs):
    xyz = cloud(4000, 372000, 5707000, z0=100.0)
    f = write_las(tmp_path / "sample.las", xyz, crs="EPSG:25832+7837")
    z = laspy.read(str(f)).z
    _patch_bounds(f, 2, hi=float(np.sort(z)[-229]))  # 228 points above the header's max z
    g = write_las(tmp_path / "other.laz", cloud(500, 372060, 5707000, seed=4), crs="EPSG:25832+7837")
    code, summary = run_points(str(f), str(g), "--out", str(tmp_path / "out"), "--jobs", jobs)
    assert code == 0
    assert summary["points_in"] == summary["points_out"] == 4500
    assert any(
        "sample.las: points lie outside the header bounds" in n and "z " in n for n in summary["notes"]
    )
    got = tiled_points(tmp_path / "out")
    assert len(got) == 4500
    # the strict policy refuses the file as before
    code, _ = run_points(str(f), "--out", str(tmp_path / "strict"), "--jobs", jobs,
                         "--outside-header-bounds", "error")  # fmt: skip
    assert code == 2 and no_staging(tmp_path)


def test_points_outside_the_header_bounds_are_placed_where_they_are(tmp_path):
    xyz = cloud(2000, 372000, 5707000, z0=100.0)
    f = write_las(tmp_path / "a.las", xyz, crs="EPSG:25832+7837")
    ok = run_points(str(f), "--out", str(tmp_path / "ok"), "--jobs", "1")
    assert ok[0] == 0
    _patch_bounds(f, 0, lo=372010.0)  # points west of the header's min x
    code, summary = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0 and summary["points_out"] == 2000

    # same ECEF positions as the file with honest bounds (frames differ: compare in ECEF)
    def ecef(out: Path) -> np.ndarray:
        fr = json.loads((out / "pointcloud.json").read_text())["frame"]
        from pipeline.frame import ProjectFrame

        pf = ProjectFrame(tuple(fr["origin_ecef"]), fr["lon"], fr["lat"])
        pts = tiled_points(out) / 1000.0
        return pf.enu_to_ecef(pts[np.argsort(tiled_intensity(out))])

    assert np.max(np.abs(ecef(tmp_path / "out") - ecef(tmp_path / "ok"))) < 0.002


def test_zeroed_rgb_is_no_colour(tmp_path):
    xyz = cloud(1500, 372000, 5707000)
    f = write_las(tmp_path / "mms.las", xyz, crs="EPSG:25832+7837", point_format=7,
                  rgb=np.zeros((1500, 3), np.uint16))  # fmt: skip
    code, summary = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert code == 0 and summary["points_out"] == 1500
    assert any("RGB is 0 in every point" in n for n in summary["notes"])
    from pipeline.tiles.gltf import read_glb

    for p in content_files(tmp_path / "out" / "tileset.json"):
        js, _ = read_glb(p.read_bytes())
        assert "COLOR_0" not in js["meshes"][0]["primitives"][0]["attributes"]
    # a file with real colours keeps them
    rgb = np.full((1500, 3), 200, np.uint16)
    g = write_las(tmp_path / "col.las", xyz, crs="EPSG:25832+7837", point_format=7, rgb=rgb)
    code, summary = run_points(str(g), "--out", str(tmp_path / "col"), "--jobs", "1")
    assert code == 0 and not any("RGB is 0" in n for n in summary["notes"])
    p = content_files(tmp_path / "col" / "tileset.json")[0]
    js, _ = read_glb(p.read_bytes())
    assert "COLOR_0" in js["meshes"][0]["primitives"][0]["attributes"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_tile_stops_by_default_and_is_skipped_on_request(tmp_path, capsys, jobs):
    good = write_las(tmp_path / "good.laz", cloud(800, 372000, 5707000), crs="EPSG:25832+7837")
    empty = tmp_path / "empty.laz"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.laz"
    broken.write_bytes(good.read_bytes()[:300])
    code, _ = run_points(str(good), str(empty), "--out", str(tmp_path / "out"), "--jobs", jobs)
    err = capsys.readouterr().err
    assert code == 2 and "empty.laz" in err
    assert not (tmp_path / "out").exists() and no_staging(tmp_path)
    code, summary = run_points(str(good), str(empty), str(broken), "--out", str(tmp_path / "out"),
                               "--jobs", jobs, "--on-bad-tile", "skip")  # fmt: skip
    assert code == 0 and summary["points_out"] == 800
    skipped = {Path(t["file"]).name for t in summary["not_tiled"]}
    assert skipped == {"empty.laz", "broken.laz"}
    assert sum("skipped (--on-bad-tile skip)" in n for n in summary["notes"]) == 2


# ---- CRS labels: diagnoses that point at the fix, an explicit --crs wins -------------------------------


@pytest.mark.parametrize("label", ["EPSG:4978", "EPSG:4979"])
def test_projected_coordinates_labelled_geographic_or_geocentric(tmp_path, capsys, label):
    # UTM coordinates written under a geographic / geocentric label (as in a mislabelled COPC delivery)
    f = write_las(tmp_path / "copc_like.laz", cloud(600, 372000, 5707000), crs=label)
    code, _ = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1", "--assume-ellipsoidal")
    err = capsys.readouterr().err
    assert code == 4, err
    assert "copc_like.laz" in err and "looks mislabelled, coordinates look projected: give --crs" in err
    assert "not supported; reproject" not in err
    code, summary = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1",
                               "--crs", "EPSG:25832+7837")  # fmt: skip
    assert code == 0 and summary["points_out"] == 600


def test_explicit_crs_wins_over_the_area_of_use_check(tmp_path):
    """Coordinates far outside the label's area of use (UTM 32N eastings 2,000 km out: the Black Sea):
    refused as mislabelled from the file's label, kept with a note when --crs says so explicitly."""
    f = write_las(tmp_path / "scan.las", cloud(300, 2_000_000, 5_000_000), crs="EPSG:32632")
    code, _ = run_points(str(f), "--out", str(tmp_path / "file"), "--jobs", "1", "--assume-ellipsoidal")
    assert code == 4  # the file's own label is checked
    code, summary = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1", "--crs", "EPSG:32632",
                               "--assume-ellipsoidal")  # fmt: skip
    assert code == 0 and summary["points_out"] == 300
    assert any("--crs EPSG:32632 kept although" in n for n in summary["notes"])


# ---- the pipeline's path: Dask with one worker (runtime.workers: 1) and the content cache --------------


def test_one_dask_worker_with_cache_and_a_header_that_lies(tmp_path):
    """`runtime.workers: 1` runs the decode on a single Dask worker through the content cache: same bytes
    as in-process, and a unit outside its header bounds is never cached (the second run reuses only
    honest units)."""
    import hashlib

    from pipeline.config.model import CrsConfig, RuntimeConfig
    from pipeline.orchestrate.cache import Cache
    from pipeline.orchestrate.points_plan import PointTilingOptions
    from pipeline.orchestrate.points_run import tile_pointcloud
    from pipeline.runtime import dask_client

    f = write_las(tmp_path / "a.las", cloud(30_000, 372000, 5707000), crs="EPSG:25832+7837")
    g = write_las(tmp_path / "b.laz", cloud(9_000, 372060, 5707000, seed=5), crs="EPSG:25832+7837")
    _patch_bounds(f, 2, hi=105.0)  # about half the points lie above the header's max z
    files = [f, g]
    sha = tuple(sorted((str(p.resolve()), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files))

    def opts(cache):
        return PointTilingOptions(
            crs_cfg=CrsConfig(
                horizontal="EPSG:25832", vertical="EPSG:7837"
            ),  # ETRS89 / UTM 32N + DHHN2016, as the files
            memory="1GB",
            cache=cache,
            input_sha256=sha if cache else (),
        )

    ref = tile_pointcloud(files, tmp_path / "ref", opts(None))
    assert ref.points_out == 39_000 and any("outside the header bounds" in n for n in ref.notes)
    cache = Cache(tmp_path / "cache")
    from pipeline.orchestrate.executor import build_executor

    with dask_client(RuntimeConfig(memory="1GB"), workers=1) as client:
        one = tile_pointcloud(files, tmp_path / "one", opts(cache), build_executor(client))
        again = tile_pointcloud(files, tmp_path / "again", opts(cache), build_executor(client))
    assert one.points_out == again.points_out == 39_000
    assert one.checksum == again.checksum == ref.checksum
    for out in ("one", "again"):
        a = sorted(p.relative_to(tmp_path / out) for p in (tmp_path / out).rglob("*.glb"))
        b = sorted(p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref").rglob("*.glb"))
        assert a == b
        for rel in a:
            assert (tmp_path / out / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_corrupt_chunk_in_one_file_is_skipped_on_request(tmp_path, capsys, jobs):
    """A file whose header reads fine but whose point data is corrupt fails in the decode: stop by default;
    with --on-bad-tile skip the run goes on without it, and nothing of the failed attempt is published."""
    good = write_las(tmp_path / "good.laz", cloud(120_000, 372000, 5707000), crs="EPSG:25832+7837")
    bad = write_las(tmp_path / "bad.laz", cloud(120_000, 372100, 5707000, seed=6), crs="EPSG:25832+7837")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = bytes(4000)  # corrupt chunk bytes (header intact)
    bad.write_bytes(bytes(data))
    code, _ = run_points(str(good), str(bad), "--out", str(tmp_path / "out"), "--jobs", jobs)
    assert code == 2 and "bad.laz" in capsys.readouterr().err
    code, summary = run_points(str(good), str(bad), "--out", str(tmp_path / "out"), "--jobs", jobs,
                               "--on-bad-tile", "skip")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert summary["points_in"] == summary["points_out"] == 120_000
    assert [Path(t["file"]).name for t in summary["not_tiled"]] == ["bad.laz"]
    assert "corrupt LAZ data" in summary["not_tiled"][0]["reason"]
    assert len(tiled_points(tmp_path / "out")) == 120_000
    time.sleep(1.0)  # (tasks of the abandoned attempt that were still running have ended)
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == [
        "content",
        "pointcloud.json",
        "tileset.json",
    ]
    assert no_staging(tmp_path)


def test_header_count_lower_within_the_last_chunk_of_a_layered_laz(tmp_path, capsys):
    """Formats 6-10 store each chunk's point count: a header 509 points short whose chunk count still fits
    (3 chunks of 50,000 either way) is caught from the last chunk."""
    f = write_las(tmp_path / "short.laz", cloud(100_709, 372000, 5707000), crs="EPSG:25832+7837")
    _patch_point_count(f, 100_200)
    code, _ = run_points(str(f), "--out", str(tmp_path / "out"), "--jobs", "1")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "short.laz" in err and "100709" in err.replace(",", "") and "100200" in err.replace(",", "")
