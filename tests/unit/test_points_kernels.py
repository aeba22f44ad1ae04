"""Point-tiling kernels: numba versions agree with their numpy references; the lattice is within 1 mm of PROJ."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import CRS

from pipeline.config.model import CrsConfig
from pipeline.crs import ECEF, make_transformer, project_frame
from pipeline.stages.points import kernels as K
from pipeline.stages.points.lattice import lattice_for
from pipeline.stages.points.spill import RecordLayout, cube_for
from pipeline.stages.points.tiling import take_rows
from pipeline.tiles.points_reader import point_hash_numpy
from tests import _points_reference as R


def test_morton_matches_reference():
    rng = np.random.default_rng(1)
    xyz = rng.integers(0, 2**21, size=(5000, 3)).astype(np.int32)
    org = np.zeros(3, np.int64)
    assert np.array_equal(R.morton_keys(xyz, org, 0), R.morton_keys_reference(xyz, org, 0))
    assert np.array_equal(R.morton_keys(xyz, org, 5), R.morton_keys_reference(xyz, org, 5))
    # z-order: the top 3 bits are the octant
    k = R.morton_keys(np.array([[2**20, 0, 0], [0, 2**20, 0], [0, 0, 2**20]], np.int32), org, 0)
    assert list(k >> np.uint64(60)) == [1, 2, 4]


def test_hash_matches_reference_and_spreads():
    rng = np.random.default_rng(2)
    xyz = rng.integers(-(2**30), 2**30, size=(10000, 3)).astype(np.int32)
    h = R.point_hash(xyz)
    assert np.array_equal(h, point_hash_numpy(xyz))
    assert len(np.unique(h)) == len(h)


@pytest.mark.parametrize("b,g,max_points", [(0, 2, 20), (3, 2, 15), (1, 3, 50), (2, 2, 10_000)])
def test_select_levels_matches_reference(b, g, max_points):
    rng = np.random.default_rng(b * 10 + g)
    D = 8
    n = 3000
    # clustered points (a dense corridor + sparse rest) inside one depth-b node
    c = rng.integers(0, 2 ** (D - b), size=(n, 3))
    c[: n // 2, 1] = c[: n // 2, 1] % 3
    c[:10] = c[0]  # duplicates
    xyz = c.astype(np.int32)
    keys = np.sort(R.morton_keys(xyz, np.zeros(3, np.int64), 0))
    # decode positions of sorted keys: hash of key is enough as a priority here
    hashes = R.point_hash(
        np.stack(
            [keys.astype(np.int64) & 0xFFFF, keys.astype(np.int64) >> 16, 0 * keys.astype(np.int64)], 1
        ).astype(np.int32)
    )
    hashes[:10] = hashes[0]
    tmax = D - g
    fast = K.select_levels(keys, hashes, D, b, g, tmax, max_points)
    ref = R.select_levels_reference(keys, hashes, D, b, g, tmax, max_points)
    assert np.array_equal(fast, ref)
    assert (fast >= 0).all()
    # nested: the min-hash point of the whole node is at the coarsest level
    assert fast[np.argmin(hashes)] == fast.min()


def test_take_rows_matches_numpy():
    dt = RecordLayout(True, True, False).dtype
    rng = np.random.default_rng(3)
    rec = np.zeros(1000, dt)
    rec["x"] = rng.integers(0, 1000, 1000)
    rec["gps_time"] = rng.random(1000)
    rec["rgb"] = rng.integers(0, 255, (1000, 3))
    perm = rng.permutation(1000)
    assert take_rows(rec, perm).tobytes() == rec[perm].tobytes()


def test_tile_grid_exact_mm_for_small_tiles():
    rng = np.random.default_rng(4)
    rec = np.zeros(2000, RecordLayout(False, False, False).dtype)
    rec["x"] = rng.integers(-30000, 30000, 2000)
    rec["y"] = rng.integers(0, 50000, 2000)
    rec["z"] = rng.integers(100, 200000, 2000)  # 200 m: step 4 mm
    q = np.empty((2000, 3), np.uint16)
    lo, step, _qmax, _g, cs = K.tile_grid(
        rec, np.arange(2000), np.array([0, 1000]), np.array([1000, 2000]), q
    )
    assert list(step) == [4, 4]
    deq = lo[0] + q[:1000].astype(np.int64) * step[0]
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], 1)[:1000]
    assert np.all((deq <= xyz) & (xyz - deq < step[0]))
    from pipeline.tiles.points_reader import tile_checksum

    assert int(cs[0]) == tile_checksum(deq)


def test_cube_contains_extent():
    c = cube_for(np.array([-1500, -20, 7]), np.array([3000, 40, 9]))
    size = 1 << c.R
    assert all(
        o <= lo and o + size > hi for o, lo, hi in zip(c.origin, (-1500, -20, 7), (3000, 40, 9), strict=True)
    )


def test_lattice_within_a_millimetre_of_proj():
    """Exact PROJ (with the GCG2016 geoid) vs lattice + trilinear interpolation, 1 km NRW tile."""
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    crs = CRS.from_user_input("EPSG:25832+7837")
    frame = project_frame(cfg, (362_500.0, 5_702_500.0, 0.0))
    t = make_transformer(crs, ECEF, cfg)
    mins, maxs = (362_000.0, 5_702_000.0, 30.0), (363_000.0, 5_703_000.0, 180.0)
    lat = lattice_for(crs.to_wkt(), cfg, frame, mins, maxs, 1.0, "test")
    rng = np.random.default_rng(5)
    n = 20000
    scale, offset = (0.001, 0.001, 0.001), (362_000.0, 5_702_000.0, 0.0)
    ix = rng.integers(0, 1_000_000, n).astype(np.int32)
    iy = rng.integers(0, 1_000_000, n).astype(np.int32)
    iz = rng.integers(30_000, 180_000, n).astype(np.int32)
    mm, bad = R.lattice_to_enu_mm(ix, iy, iz, scale, offset, 1.0, lat)
    assert bad == 0
    assert np.array_equal(mm, R.lattice_to_enu_mm_reference(ix, iy, iz, scale, offset, 1.0, lat))
    exact = R.exact_enu(t, frame, ix * 0.001 + offset[0], iy * 0.001 + offset[1], iz * 0.001)
    err = np.abs(mm - exact * 1000.0)
    assert err.max() < 1.0, err.max()  # includes the 0.5 mm rounding to integer millimetres
    # the fused decode kernel: same millimetres, plus extents, out-of-lattice count and Morton keys
    cube = cube_for(mm.min(axis=0) - 5, mm.max(axis=0) + 5)
    org = np.asarray(cube.origin, np.int64)
    shift = cube.R - cube.S
    xs = np.stack([ix, iy, iz], axis=1)[::2]  # strided views, like the fields of raw LAS records
    mm2, keys, bad2, rmin, rmax, lo, hi = K.lattice_to_enu_keys(
        xs[:, 0], xs[:, 1], xs[:, 2], scale, offset, 1.0, lat, org, shift
    )
    assert bad2 == 0 and np.array_equal(mm2, mm[::2])
    assert np.array_equal(keys, R.morton_keys_reference(mm[::2], org, shift))
    assert np.array_equal(rmin, xs.min(axis=0)) and np.array_equal(rmax, xs.max(axis=0))
    assert np.array_equal(lo, mm[::2].min(axis=0)) and np.array_equal(hi, mm[::2].max(axis=0))
    iz_bad = iz[::2].copy()
    iz_bad[7] = 1_900_000  # 1.9 km: above the lattice (1 km height levels)
    _mm, _k, bad3, *_ = K.lattice_to_enu_keys(xs[:, 0], xs[:, 1], iz_bad, scale, offset, 1.0, lat, org, shift)
    assert bad3 == 1
    *_, lo_far, _hi = K.lattice_to_enu_keys(
        xs[:, 0], xs[:, 1], xs[:, 2], scale, offset, 1.0, lat, org + 10**6, 0
    )
    assert np.any(lo_far < org + 10**6)  # outside that cube: the extent tells the caller (the keys are void)


@pytest.mark.parametrize("bits", [20, 50, 63])
def test_sort_order_equals_stable_argsort(bits):
    rng = np.random.default_rng(bits)
    keys = rng.integers(0, 2**bits, 50_000, dtype=np.uint64)
    keys[:5000] = keys[5000:10000]  # duplicates
    keys[100:200] = keys[100] | np.uint64(7)  # same truncated prefix, different low bits
    assert np.array_equal(K.sort_order(keys, bits), np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("complete", [True, False])
def test_pack_records_matches_column_gather(complete):
    """The decode path's record packer equals the column-by-column gather (zero where no column
    fills a field, e.g. NIR here)."""
    rng = np.random.default_rng(3)
    n = 5000
    raw = np.zeros(n, dtype=[("X", "<i4"), ("intensity", "<u2"), ("c", "u1"), ("gps_time", "<f8")])
    raw["intensity"] = rng.integers(0, 60000, n)
    raw["c"] = rng.integers(0, 30, n)
    raw["gps_time"] = rng.random(n) * 1e6
    layout = RecordLayout(has_rgb=True, has_gps=True, has_nir=not complete)
    cols = {
        "x": rng.integers(-(10**6), 10**6, (n, 3)).astype(np.int32),
        "intensity": raw["intensity"],  # strided views into raw records
        "classification": raw["c"],
        "gps_time": raw["gps_time"],
        "point_source_id": rng.integers(0, 9, n).astype(np.uint16),
        "return_number": rng.integers(0, 5, n).astype(np.uint8),
        "number_of_returns": rng.integers(0, 5, n).astype(np.uint8),
        "rgb": rng.integers(0, 255, (n, 3)).astype(np.uint8),
    }
    order = rng.permutation(n)
    dt = layout.dtype
    xyz = cols.pop("x")
    got = np.zeros(n, dt)
    K.pack_records(order, xyz, cols, got)
    assert got.tobytes() == R.gather_reference(dt, order, xyz, cols).tobytes()


def test_keys_and_hashes_match_separate_kernels():
    rng = np.random.default_rng(11)
    rec = np.zeros(3000, dtype=RecordLayout(has_rgb=True, has_gps=False, has_nir=False).dtype)
    for f in ("x", "y", "z"):
        rec[f] = rng.integers(-(2**20), 2**20, len(rec))
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    org = np.array([-(2**20), -(2**20), -(2**20)], np.int64)
    keys, hashes = K.keys_and_hashes(rec["x"], rec["y"], rec["z"], org, 1)
    assert np.array_equal(keys, R.morton_keys_reference(xyz, org, 1))
    assert np.array_equal(hashes, point_hash_numpy(xyz))


def test_pack_records_over_several_blocks_equals_one_gather_per_field():
    """`pack_records` works block by block (GATHER_BLOCK points): over blocks and a remainder, with raw LAS
    views (strided fields, bit fields, 16-bit colour), every record equals the whole-column gather."""
    from pipeline.sources.pointcloud.las import BitField, Rgb16, materialize
    from pipeline.stages.points.kernels.records import GATHER_BLOCK

    rng = np.random.default_rng(17)
    n = 2 * GATHER_BLOCK + 123
    raw = np.frombuffer(
        rng.bytes(n * 17),
        np.dtype([("intensity", "<u2"), ("bits", "u1"), ("gps_time", "<f8"), ("rgb", "<u2", (3,))]),
    )
    layout = RecordLayout(has_rgb=True, has_gps=True, has_nir=False)
    cols = {
        "intensity": raw["intensity"],
        "gps_time": raw["gps_time"],
        "return_number": BitField(raw["bits"], 0, 0x07),
        "number_of_returns": BitField(raw["bits"], 3, 0x07),
        "classification": rng.integers(0, 30, n).astype(np.uint8),
        "rgb": Rgb16(raw["rgb"][:, 0], raw["rgb"][:, 1], raw["rgb"][:, 2], 8),
    }
    xyz = rng.integers(-(2**31), 2**31, (n, 3), dtype=np.int64).astype(np.int32)
    order = rng.permutation(n)
    got = np.zeros(n, layout.dtype)
    K.pack_records(order, xyz, cols, got)
    plain = {k: materialize(v) for k, v in cols.items()}
    assert got.tobytes() == R.gather_reference(layout.dtype, order, xyz, plain).tobytes()
