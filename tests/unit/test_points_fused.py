"""Fused point-tiler kernels against plain-numpy references.

- `pack_records` (any number of 1-, 2-, 4- and 8-byte columns, also on raw LAS records) vs the column gather;
- `tiling.tile_vertices` vs `quantize` + `pack_vertices` and `tile_grid`; the GLB bytes of the vertices
  vs `encode_glb` (also written to files, also with meshopt, also through `tiling.write_tiles`);
- `spill_lower_bound` / `SpillSearch.node_range` on a spill file (records + sparse index, several index
  steps) vs `np.searchsorted` on the Morton keys;
- `read_ranges`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import laspy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sources.pointcloud.header import WorkUnit, scan_file
from pipeline.sources.pointcloud.las import decode_unit
from pipeline.stages.points import kernels as K
from pipeline.stages.points import spill, tiling
from pipeline.stages.points.classes import enum_schema
from pipeline.stages.points.colour import srgb8_shift
from pipeline.stages.points.spill import (
    CubeSpec,
    RecordLayout,
    SpillSearch,
    cube_for,
    read_ranges,
)
from pipeline.tiles.points_glb import PointSchema, glb_pieces, vertex_dtype
from pipeline.tiles.points_reader import point_hash_numpy, tile_checksum
from tests import _points_reference as R
from tests._points_reference import encode_glb, pack_vertices, quantize

FAST = settings(max_examples=50, deadline=None, database=None)
SMALL = settings(max_examples=25, deadline=None, database=None)

BASE_COLS = ("intensity", "point_source_id", "classification", "return_number", "number_of_returns")


def _schema(layout: RecordLayout) -> PointSchema:
    return PointSchema(layout.attributes, "asprs", enum_schema("asprs"))


def _random_records(rng: np.random.Generator, layout: RecordLayout, n: int, spans) -> np.ndarray:
    """Records with random bytes in every attribute field, positions within `spans` mm per axis (around
    an offset that can be negative) and finite GPS times / extra dimensions."""
    dt = layout.dtype
    rec = np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt).copy()
    for f, span in zip(("x", "y", "z"), spans, strict=True):
        base = int(rng.integers(-(10**8), 10**8))
        rec[f] = base + rng.integers(0, span + 1, n)
    if layout.has_gps:
        rec["gps_time"] = rng.uniform(-1e3, 4e8, n)
    for name in layout.extra_dims:
        rec[f"x_{name}"] = rng.normal(0.0, 100.0, n).astype(np.float32)
    return rec


def _tile_job(layout: RecordLayout, cube: CubeSpec, out_dir: str = "", meshopt: bool = False):
    return tiling.TileJob(cube, out_dir, "1.1", 10**6, _schema(layout), meshopt)


def _tiles(rng: np.random.Generator, n: int, n_tiles: int):
    """A random subset permutation of n records (at least one) cut into up to n_tiles non-empty slices."""
    m = int(rng.integers(1, n + 1))
    perm = rng.permutation(n)[:m].astype(np.int64)
    k = min(n_tiles - 1, m - 1)
    cuts = np.sort(rng.choice(np.arange(1, m), size=k, replace=False)) if k else np.empty(0, np.int64)
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    ends = np.concatenate([cuts, [m]]).astype(np.int64)
    return perm, starts, ends


def _tile_reference(rec: np.ndarray, idx: np.ndarray):
    """The numpy path for one tile: quantize the positions, the attributes of its records."""
    sub = rec[idx]
    xyz = np.stack([sub["x"], sub["y"], sub["z"]], axis=1)
    attrs = {name: sub[name] for name in rec.dtype.names if name not in ("x", "y", "z")}
    return quantize(xyz), attrs, xyz


LAYOUTS = [
    RecordLayout(False, False, False),
    RecordLayout(True, False, False),
    RecordLayout(True, True, False),
    RecordLayout(True, True, True, ("height",)),
    RecordLayout(False, True, True, ("height", "amplitude")),
    RecordLayout(True, False, True, ("a", "b", "c")),
]
# per-axis extents in mm: up to 65535 keeps 1 mm steps, beyond that the step doubles
SPANS = [0, 7, 65_535, 65_536, 131_071, 400_000, 5_000_000]


# ---- 1. pack_records ----------------------------------------------------------------------------------


@st.composite
def _typed_case(draw):
    """Records of random columns: any number of each size, some strided views of a wider array, some signed
    or float, with or without colour."""
    n = draw(st.integers(0, 40))
    kinds = draw(
        st.lists(st.sampled_from(["u1", "i1", "<u2", "<i2", "<u4", "<f4", "<f8", "<u8"]), max_size=9)
    )
    strided = [draw(st.booleans()) for _ in kinds]
    rgb = draw(st.booleans())
    return n, kinds, strided, rgb, draw(st.permutations(range(n))), draw(st.integers(0, 2**32 - 1))


@FAST
@given(_typed_case())
def test_pack_records_matches_column_gather_for_any_columns(case):
    n, kinds, strided, rgb, order, seed = case
    rng = np.random.default_rng(seed)
    fields = [("x", "<i4"), ("y", "<i4"), ("z", "<i4")] + [(f"c{i}", k) for i, k in enumerate(kinds)]
    fields += [("rgb", "u1", (3,))] if rgb else []
    dt = np.dtype(fields)
    cols: dict[str, np.ndarray] = {}
    for i, (k, s) in enumerate(zip(kinds, strided, strict=True)):
        wide = np.frombuffer(
            rng.bytes(n * 16), np.dtype([("a", "u1"), ("v", k), ("pad", "u1", 15 - np.dtype(k).itemsize)])
        )
        cols[f"c{i}"] = wide["v"] if s else wide["v"].copy()
    if rgb:
        cols["rgb"] = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    xyz = rng.integers(-(2**31), 2**31, (n, 3), dtype=np.int64).astype(np.int32)
    out = np.frombuffer(rng.bytes(n * dt.itemsize), dt).copy()
    order = np.asarray(order, np.int64)
    K.pack_records(order, xyz, cols, out)
    assert out.tobytes() == R.gather_reference(dt, order, xyz, cols).tobytes()  # every byte is named here


def test_pack_records_leaves_unnamed_bytes_and_refuses_unknown_columns():
    dt = np.dtype([("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("a", "<f4"), ("gap", "u1", (2,)), ("b", "<u2")])
    rng = np.random.default_rng(5)
    xyz = rng.integers(0, 100, (20, 3)).astype(np.int32)
    a, b = rng.random(20).astype(np.float32), rng.integers(0, 9, 20).astype(np.uint16)
    got = np.full((20, dt.itemsize), 7, np.uint8).view(dt).reshape(20)
    order = rng.permutation(20)
    K.pack_records(order, xyz, {"a": a, "b": b}, got)
    assert np.array_equal(got["a"], a[order]) and np.array_equal(got["b"], b[order])
    assert (got["gap"] == 7).all()
    with pytest.raises(ValueError, match="pack_records"):
        K.pack_records(order, xyz, {"a": np.zeros((20, 2), np.float32)}, got)


# ---- 2. pack_records on raw LAS records ----------------------------------------------------------------

LAS_CASES = [
    (3, RecordLayout(True, True, False, ("height", "amp"))),
    (7, RecordLayout(True, True, True, ("height",))),  # no NIR in format 7: the field stays 0
    (8, RecordLayout(True, True, True, ("height", "amp", "missing"))),  # x_missing stays 0
    (6, RecordLayout(False, True, False)),
    (1, RecordLayout(True, True, False, ("amp",))),  # no colour in format 1 (and no orthophoto)
]


def _las_format(fmt: int) -> laspy.PointFormat:
    pf = laspy.PointFormat(fmt)
    pf.add_extra_dimension(laspy.ExtraBytesParams("height", "f4"))  # a raw field view (float32)
    pf.add_extra_dimension(laspy.ExtraBytesParams("amp", "u2"))  # converted to float32: computed
    return pf


def _decode_like_las(raw: np.ndarray, pf: laspy.PointFormat, extra_dims) -> dict[str, np.ndarray]:
    """What `las.decode_unit` returns for these records (views of the raw fields + computed columns)."""
    bits = raw["bit_fields"]
    if pf.id >= 6:
        ret, nret, cls = bits & np.uint8(0x0F), bits >> np.uint8(4), raw["classification"]
    else:
        ret = bits & np.uint8(0x07)
        nret = (bits >> np.uint8(3)) & np.uint8(0x07)
        cls = raw["raw_classification"] & np.uint8(0x1F)
    d = {
        "_raw": raw,
        "intensity": raw["intensity"],
        "classification": cls,
        "return_number": ret,
        "number_of_returns": nret,
        "point_source_id": raw["point_source_id"],
    }
    names = set(raw.dtype.names)
    for f in ("gps_time", "red", "green", "blue", "nir"):
        if f in names:
            d[f] = raw[f]
    rec = laspy.PackedPointRecord(raw, pf)
    for name in extra_dims:
        if name in pf.extra_dimension_names:
            d["x_" + name] = np.asarray(rec[name], dtype=np.float32)
    return d


def to_srgb8(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """LAS 16-bit colours -> (N,3) 8-bit sRGB, decided per work unit by `srgb8_shift`."""
    rgb = np.stack([red, green, blue], axis=1)
    return (rgb >> srgb8_shift(int(rgb.max()) if rgb.size else 0)).astype(np.uint8)


def _cols_like_decode(d: dict[str, np.ndarray], layout: RecordLayout) -> dict[str, np.ndarray]:
    """The attribute columns `decode._decode` builds from the decoded fields."""
    cols = {name: d[name] for name in BASE_COLS}
    if layout.has_rgb and "red" in d:
        cols["rgb"] = to_srgb8(d["red"], d["green"], d["blue"])
    if layout.has_nir and "nir" in d:
        cols["nir"] = d["nir"]
    if layout.has_gps and "gps_time" in d:
        cols["gps_time"] = d["gps_time"]
    for name in layout.extra_dims:
        if "x_" + name in d:
            cols["x_" + name] = d["x_" + name]
    return cols


def _check_pack(layout: RecordLayout, cols: dict[str, np.ndarray], seed: int):
    rng = np.random.default_rng(seed)
    n = len(next(iter(cols.values())))
    dt = layout.dtype
    xyz = rng.integers(-(2**31), 2**31, (n, 3), dtype=np.int64).astype(np.int32)
    order = rng.permutation(n).astype(np.int64)
    ref = R.gather_reference(dt, order, xyz, cols)
    # the decode path's packer (4-byte extra dimensions included) gives the column gather's bytes
    got = np.zeros(n, dt)
    K.pack_records(order, xyz, cols, got)
    assert got.tobytes() == ref.tobytes()
    # and the fields no column fills are zero
    for name in dt.names:
        if name not in cols and name not in ("x", "y", "z"):
            assert not np.any(got[name]), name


@pytest.mark.parametrize("fmt,layout", LAS_CASES)
def test_pack_raw_las_records_like_the_column_gather(fmt, layout):
    pf = _las_format(fmt)
    dt = pf.dtype()
    rng = np.random.default_rng(fmt)
    n = 777
    raw = np.frombuffer(rng.bytes(n * dt.itemsize), dtype=dt).copy()  # every field random bytes
    if fmt == 7:
        raw["red"] &= np.uint16(0xFF)  # 8-bit colours in the 16-bit fields: the other to_srgb8 branch
    cols = _cols_like_decode(_decode_like_las(raw, pf, layout.extra_dims), layout)
    _check_pack(layout, cols, seed=fmt + 100)


@pytest.mark.parametrize("fmt,layout", LAS_CASES[:3])
def test_pack_decode_unit_output(tmp_path, fmt, layout):
    """The same through a real LAS file and `decode_unit`."""
    pf = _las_format(fmt)
    dt = pf.dtype()
    rng = np.random.default_rng(fmt + 7)
    n = 500
    raw = np.zeros(n, dtype=dt)
    for name in dt.names:
        if name in ("X", "Y", "Z"):
            raw[name] = rng.integers(0, 10**6, n)
        elif name in ("gps_time", "height"):
            raw[name] = rng.uniform(0, 1e6, n)
        else:
            info = np.iinfo(dt.fields[name][0])
            raw[name] = rng.integers(info.min, info.max, n, endpoint=True)
    header = laspy.LasHeader(point_format=pf, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([360_000.0, 5_700_000.0, 0.0])
    las = laspy.LasData(header)
    las.points = laspy.PackedPointRecord(raw.copy(), header.point_format)
    path = tmp_path / f"f{fmt}.las"
    las.write(path)
    info = scan_file(path)
    unit = WorkUnit(0, 0, n, byte_start=info.offset_to_points, byte_len=n * info.point_size)
    from pipeline.sources.pointcloud.las import BitField, Rgb16, materialize

    lazy = decode_unit(info, unit, layout.extra_dims)
    assert any(isinstance(v, BitField) for v in lazy.values())
    d = {k: materialize(v) for k, v in lazy.items()}
    assert d["_raw"].tobytes() == raw.tobytes()
    _check_pack(layout, _cols_like_decode(d, layout), seed=fmt)
    # lazy columns (bit fields and 16-bit colours converted while packing) give the same records
    cols = _cols_like_decode(lazy, layout)
    if "rgb" in cols:
        shift = srgb8_shift(max(int(lazy[c].max()) for c in ("red", "green", "blue")))
        cols["rgb"] = Rgb16(lazy["red"], lazy["green"], lazy["blue"], shift)
    plain = _cols_like_decode(d, layout)
    dt = layout.dtype
    xyz = np.random.default_rng(fmt).integers(-(2**31), 2**31, (n, 3), dtype=np.int64).astype(np.int32)
    order = np.random.default_rng(fmt + 1).permutation(n).astype(np.int64)
    out = np.zeros(n, dt)
    K.pack_records(order, xyz, cols, out)
    assert out.tobytes() == R.gather_reference(dt, order, xyz, plain).tobytes()


# ---- 3. tile_vertices vs quantize + pack_vertices, tile_grid -------------------------------------


def _fused(rec: np.ndarray, layout: RecordLayout, perm, starts, ends):
    schema = _schema(layout)
    vbuf = np.full(
        (int(ends[-1]), vertex_dtype(schema.attributes).itemsize), 0xEE, np.uint8
    )  # padding is zeroed
    return vbuf, tiling.tile_vertices(schema, rec, perm, starts, ends, vbuf)


@FAST
@given(
    layout=st.sampled_from(LAYOUTS),
    n=st.integers(1, 300),
    n_tiles=st.integers(1, 6),
    spans=st.tuples(*[st.sampled_from(SPANS)] * 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_tile_vertices_match_numpy_path(layout, n, n_tiles, spans, seed):
    rng = np.random.default_rng(seed)
    rec = _random_records(rng, layout, n, spans)
    perm, starts, ends = _tiles(rng, n, n_tiles)
    vbuf, (lo, step, qmax, gbase, checksum) = _fused(rec, layout, perm, starts, ends)
    schema = _schema(layout)
    q2 = np.empty((len(perm), 3), np.uint16)  # the pnts path: z-up, into a plain array
    lo2, step2, qmax2, _g2, cs2 = K.tile_grid(rec, perm, starts, ends, q2)
    for arr_fused, arr_tiles in ((lo, lo2), (step, step2), (qmax, qmax2), (checksum, cs2)):
        assert np.array_equal(arr_fused, arr_tiles)
    for t, (s, e) in enumerate(zip(starts, ends, strict=True)):
        qt, attrs, xyz = _tile_reference(rec, perm[s:e])
        packed, base = pack_vertices(qt, attrs, schema)
        assert vbuf[s:e].tobytes() == packed.tobytes(), f"tile {t}"
        assert np.array_equal(lo[t], qt.lo) and step[t] == qt.step
        assert np.array_equal(qmax[t], qt.qmax) and not qt.q.min(axis=0).any()
        assert gbase[t] == base
        assert np.array_equal(q2[s:e], qt.q)
        assert int(checksum[t]) == tile_checksum(qt.positions_mm)
        # the quantization error is below one step
        assert np.all((xyz - qt.positions_mm >= 0) & (xyz - qt.positions_mm < qt.step))


def _glb_case(layout: RecordLayout, seed: int):
    """Records and four tiles: 1 mm steps, 2 mm, 64 mm and a single point."""
    rng = np.random.default_rng(seed)
    parts = [
        _random_records(rng, layout, 200, (60_000, 1_000, 30_000)),
        _random_records(rng, layout, 150, (100_000, 5, 5)),
        _random_records(rng, layout, 120, (4_000_000, 2_500_000, 90_000)),
        _random_records(rng, layout, 1, (0, 0, 0)),
    ]
    rec = np.concatenate(parts)
    sizes = np.array([len(p) for p in parts])
    ends = np.cumsum(sizes)
    starts = ends - sizes
    perm = np.concatenate([rng.permutation(np.arange(s, e)) for s, e in zip(starts, ends, strict=True)])
    return rec, perm.astype(np.int64), starts, ends


@pytest.mark.parametrize("meshopt", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS[2:5])
def test_glb_from_fused_vertices_equals_encode_glb(layout, meshopt):
    rec, perm, starts, ends = _glb_case(layout, seed=int(meshopt) + 3 * LAYOUTS.index(layout))
    vbuf, (lo, step, qmax, gbase, _cs) = _fused(rec, layout, perm, starts, ends)
    assert sorted(step.tolist()) == [1, 1, 2, 64]
    schema = _schema(layout)
    for t, (s, e) in enumerate(zip(starts, ends, strict=True)):
        qt, attrs, _xyz = _tile_reference(rec, perm[s:e])
        ref = encode_glb(qt, attrs, schema, meshopt=meshopt)
        args = (schema, lo[t], int(step[t]), qmax[t], float(gbase[t]))
        assert b"".join(glb_pieces(vbuf[s:e], *args, meshopt=meshopt)) == ref, f"tile {t}"
    # no points: still a whole GLB (its header states its length)
    empty = np.zeros((0, vbuf.shape[1]), np.uint8)
    args = (schema, np.zeros(3, np.int64), 1, np.zeros(3, np.int64), 0.0)
    glb = b"".join(glb_pieces(empty, *args, meshopt=meshopt))
    assert glb[:4] == b"glTF" and int.from_bytes(glb[8:12], "little") == len(glb)


@pytest.mark.parametrize("meshopt", [False, True])
def test_write_tiles_files_equal_encode_glb(tmp_path, meshopt):
    layout = LAYOUTS[3]
    rec, perm, starts, ends = _glb_case(layout, seed=11)
    xyz_all = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    cube = cube_for(xyz_all.min(axis=0), xyz_all.max(axis=0))
    job = _tile_job(layout, cube, str(tmp_path), meshopt)
    level = np.repeat(np.arange(len(starts)), ends - starts)  # tile t at depth t
    tiles = tiling.write_tiles(job, rec, perm, level, starts)
    assert [tr.count for tr in tiles] == (ends - starts).tolist()
    assert [tr.depth for tr in tiles] == list(range(len(starts)))
    for tr, s, e in zip(tiles, starts, ends, strict=True):
        qt, attrs, xyz = _tile_reference(rec, perm[s:e])
        data = (tmp_path / tr.uri).read_bytes()
        assert data == encode_glb(qt, attrs, job.schema, meshopt=meshopt)
        assert tr.lo_mm == tuple(int(v) for v in xyz.min(axis=0))
        assert tr.hi_mm == tuple(int(v) for v in qt.lo + qt.qmax * qt.step)
        assert tr.checksum == tile_checksum(qt.positions_mm)


# ---- keys_and_hashes on strided record fields --------------------------------------


@FAST
@given(n=st.integers(0, 200), shift=st.integers(0, 10), seed=st.integers(0, 2**32 - 1))
def test_keys_and_hashes_match_references(n, shift, seed):
    rng = np.random.default_rng(seed)
    rec = _random_records(rng, RecordLayout(True, True, False), n, (2**21 - 1001,) * 3)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    org = xyz.min(axis=0).astype(np.int64) - rng.integers(0, 1000, 3) if n else np.zeros(3, np.int64)
    keys, hashes = K.keys_and_hashes(rec["x"], rec["y"], rec["z"], org, shift)
    assert np.array_equal(keys, R.morton_keys_reference(xyz, org, shift))
    assert np.array_equal(keys, R.morton_keys(np.ascontiguousarray(xyz), org, shift))
    assert np.array_equal(hashes, point_hash_numpy(xyz))


# ---- 4. spill_lower_bound / node_range ------------------------------------------------------------------


@SMALL
@given(
    n=st.integers(0, 1500),
    span=st.sampled_from([900, 70_000, 5_000_000]),
    clustered=st.booleans(),
    step=st.sampled_from([1, 3, 16, 256]),
    seed=st.integers(0, 2**32 - 1),
)
def test_node_range_matches_searchsorted_on_keys(n, span, clustered, step, seed):
    rng = np.random.default_rng(seed)
    layout = RecordLayout(False, True, False)
    rec = _random_records(rng, layout, n, (span,) * 3)
    if clustered and n:  # many duplicate positions: long runs of equal keys
        rec = rec[rng.integers(0, max(n // 10, 1), n)]
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    cube = cube_for(xyz.min(axis=0), xyz.max(axis=0)) if n else CubeSpec((0, 0, 0), 10)
    org = np.asarray(cube.origin, np.int64)
    keys = R.morton_keys(np.ascontiguousarray(xyz), org, cube.R - cube.S)
    assert np.array_equal(keys, R.morton_keys_reference(xyz, org, cube.R - cube.S))
    order = np.argsort(keys, kind="stable")
    rec, keys = rec[order], keys[order]
    S = cube.S
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(spill, "INDEX_STEP", step):
        path = str(Path(tmp) / "u000000.rec")
        with open(path, "wb") as f:  # the records, then the key of every step-th record
            f.write(rec.tobytes() + keys[::step].tobytes())
        search = SpillSearch(path, layout.dtype, n, cube)
        for _ in range(40):
            depth = int(rng.integers(0, S + 1))
            sh = 3 * (S - depth)
            if n and rng.random() < 0.7:  # a node that holds points (or a neighbour of one)
                prefix = int(keys[rng.integers(0, n)] >> np.uint64(sh)) + int(rng.integers(-1, 2))
                prefix = min(max(prefix, 0), 8**depth - 1)
            else:
                prefix = int(rng.integers(0, 8**depth))
            a = int(np.searchsorted(keys, np.uint64(prefix << sh), side="left"))
            b = int(np.searchsorted(keys, np.uint64((prefix + 1) << sh), side="left"))
            assert search.node_range(depth, prefix, 0, n) == (a, b), (depth, prefix)
            first, last = sorted(int(v) for v in rng.integers(0, n + 1, 2))
            expect = (min(max(a, first), last), min(max(b, first), last))
            assert search.node_range(depth, prefix, first, last) == expect, (depth, prefix, first, last)
            target = int(rng.integers(0, 2**63)) >> int(rng.integers(0, 63))
            want = min(max(int(np.searchsorted(keys, np.uint64(target))), first), last)
            assert search.lower_bound(first, last, target) == want
            lb = K.spill_lower_bound(rec["x"], rec["y"], rec["z"], org, cube.R - cube.S, first, last, target)
            assert lb == want
        if n:  # the eight children of the root partition the file, in order
            bounds = [search.node_range(1, c, 0, n) for c in range(8)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(7))


def test_spill_search_refuses_a_short_index(tmp_path):
    layout = RecordLayout(False, False, False)
    path = tmp_path / "u000000.rec"
    np.zeros(600, layout.dtype).tofile(path)  # 600 records need 3 index keys: none written
    with pytest.raises(OSError, match="short"):
        SpillSearch(str(path), layout.dtype, 600, CubeSpec((0, 0, 0), 10))


# ---- 5. read_ranges -------------------------------------------------------------------------------------


def test_read_ranges(tmp_path):
    layout = RecordLayout(True, True, False, ("h",))
    dt = layout.dtype
    rng = np.random.default_rng(6)
    r1 = _random_records(rng, layout, 20, (1000, 1000, 1000))
    r2 = _random_records(rng, layout, 9, (1000, 1000, 1000))
    p1, p2 = str(tmp_path / "u1.rec"), str(tmp_path / "u2.rec")
    r1.tofile(p1)
    r2.tofile(p2)
    ranges = ((p1, 2, 7), (p2, 0, 9), (p1, 4, 4), (p1, 19, 20))
    expected = np.concatenate([r1[2:7], r2[0:9], r1[19:20]])
    assert read_ranges(ranges, dt).tobytes() == expected.tobytes()
    with pytest.raises(OSError, match="short"):
        read_ranges(((p2, 5, 12),), dt)


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 2**18), st.integers(0, 6)), min_size=1, max_size=300), st.integers(0, 4)
)
def test_order_by_level_is_the_stable_argsort(points, b):
    """`order_by_level` vs np.argsort(level, stable) and the tile runs found with numpy."""
    rng = np.random.default_rng(len(points))
    keys = np.sort(np.array([k for k, _ in points], np.uint64))
    level = np.array([lv for _, lv in points], np.int8)
    hashes = rng.integers(0, 2**63, len(keys)).astype(np.uint64)
    order = rng.permutation(len(keys))
    D, prefix = 7, 5 << 21
    perm, keys_l, hashes_u, level_l, starts, n_upper = K.order_by_level(
        order, keys, hashes, level, prefix, D, b
    )
    by = np.argsort(level, kind="stable")
    assert n_upper == np.count_nonzero(level < b)
    assert np.array_equal(perm, order[by]) and np.array_equal(level_l, level[by])
    assert np.array_equal(keys_l, keys[by] | np.uint64(prefix))
    assert np.array_equal(hashes_u, hashes[by[:n_upper]])
    tile = keys_l >> (np.uint64(3) * (np.uint64(D) - level_l.astype(np.uint64)))
    new = np.ones(len(keys), bool)
    new[1:] = (level_l[1:] != level_l[:-1]) | (tile[1:] != tile[:-1])
    new[:n_upper] = False
    if n_upper < len(keys):
        new[n_upper] = True
    assert np.array_equal(starts, np.flatnonzero(new))


@FAST
@given(st.lists(st.integers(0, 2**40), max_size=300), st.sampled_from([8, 41, 64]))
def test_sort_order_is_the_stable_argsort(keys, bits):
    k = np.asarray(keys, dtype=np.uint64) & np.uint64((1 << bits) - 1 if bits < 64 else 2**64 - 1)
    assert np.array_equal(K.sort_order(k, bits), np.argsort(k, kind="stable"))


@FAST
@given(
    b=st.integers(0, 4),
    g=st.integers(1, 3),
    max_points=st.integers(1, 60),
    n=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_select_levels_matches_reference_random(b, g, max_points, n, seed):
    """The single-pass claim/split level selection equals the level-by-level reference."""
    rng = np.random.default_rng(seed)
    D = 9
    c = rng.integers(0, 2 ** (D - b), size=(n, 3))
    c[: n // 3] = c[0]  # duplicates: ties broken by position
    keys = np.sort(R.morton_keys(c.astype(np.int32), np.zeros(3, np.int64), 0))
    hashes = rng.integers(0, 50, n).astype(np.uint64)  # many equal hashes
    tmax = D - g
    fast = K.select_levels(keys, hashes, D, b, g, tmax, max_points)
    assert np.array_equal(fast, R.select_levels_reference(keys, hashes, D, b, g, tmax, max_points))


@pytest.mark.parametrize("fmt", [1, 3, 6, 7, 8])
def test_laz_units_decode_like_laspy(tmp_path, fmt):
    """LAZ units through both lazrs paths (all fields; layered formats skipping unrequested extra bytes)
    give laspy's values for every field the tiler uses."""
    from pipeline.sources.pointcloud.header import plan_units, scan_file
    from pipeline.sources.pointcloud.las import decode_raw

    pf = laspy.PointFormat(fmt)
    pf.add_extra_dimension(laspy.ExtraBytesParams("height", "f4"))
    header = laspy.LasHeader(point_format=pf, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([360_000.0, 5_700_000.0, 0.0])
    las = laspy.LasData(header)
    n = 120_000  # 3 chunks of 50 000
    rng = np.random.default_rng(fmt)
    las.X = rng.integers(0, 10**6, n)
    las.Y = rng.integers(0, 10**6, n)
    las.Z = rng.integers(0, 10**5, n)
    las.intensity = rng.integers(0, 65535, n)
    las.classification = rng.integers(0, 20, n)
    las.height = rng.uniform(0, 50, n).astype(np.float32)
    if "gps_time" in pf.dimension_names:
        las.gps_time = rng.uniform(0, 1e6, n)
    if "red" in pf.dimension_names:
        las.red = rng.integers(0, 65535, n)
    path = tmp_path / f"p{fmt}.laz"
    las.write(path, laz_backend=laspy.LazBackend.Lazrs)
    ref = laspy.read(path)
    info = scan_file(path)
    units = plan_units([info], points_per_unit=40_000)
    assert len(units) == 3  # 4 units asked for, but units hold whole chunks: one chunk each
    for extra in ((), ("height",)):
        got = np.concatenate([decode_raw(info, u, extra) for u in units])
        for name in ("X", "Y", "Z", "intensity", "gps_time", "red", "green", "blue"):
            if name in pf.dimension_names:
                assert np.array_equal(got[name], np.asarray(ref[name])), name
        cls = got["classification"] if fmt >= 6 else got["raw_classification"] & 0x1F
        assert np.array_equal(cls, np.asarray(ref.classification))
        if extra:
            assert np.array_equal(got["height"], np.asarray(ref.height))


def test_meshopt_encode_is_version_0_and_lossless():
    """The tile encoder writes meshopt bitstream version 0 (the one EXT_meshopt_compression specifies,
    whatever the package's default) and decodes back to the rows, for tiles of any size."""
    import meshoptimizer as mo

    from pipeline.tiles.gltf import meshopt_vertices

    rng = np.random.default_rng(7)
    mo.encode_vertex_version(1)  # another default must not leak into the tiles
    for n, stride in [(10, 36), (70_000, 36), (3, 40), (20_000, 32)]:
        rows = rng.integers(0, 256, (n, stride), dtype=np.uint8)
        rows[:, 6:8] = 0  # padding columns, as in the vertex layout
        rows[:, :2] = np.sort(rows[:, :2], axis=0)
        got = bytes(meshopt_vertices(rows))
        assert got[0] == 0xA0  # version 0
        dec = np.asarray(mo.decode_vertex_buffer(n, stride, got)).view(np.uint8).reshape(n, stride)
        assert np.array_equal(dec, rows)
