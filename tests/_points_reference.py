"""Plain numpy/Python references of the point kernels (small inputs; the tests compare the kernels
against them) and thin wrappers the tests use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.sources.pointcloud import reader
from pipeline.stages.points import kernels as K
from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8, PointSchema, glb_pieces, vertex_dtype


def morton_keys(xyz_mm: np.ndarray, origin_mm, shift: int) -> np.ndarray:
    """Morton keys of `(xyz - origin) >> shift` by the tiler's kernel."""
    return K.keys_and_hashes(xyz_mm[:, 0], xyz_mm[:, 1], xyz_mm[:, 2], origin_mm, shift)[0]


def point_hash(xyz_mm: np.ndarray) -> np.ndarray:
    """The 64-bit point hash by the tiler's kernel."""
    return K.keys_and_hashes(xyz_mm[:, 0], xyz_mm[:, 1], xyz_mm[:, 2], np.zeros(3, np.int64), 0)[1]


def morton_keys_reference(xyz_mm: np.ndarray, origin_mm: np.ndarray, shift: int) -> np.ndarray:
    c = ((xyz_mm.astype(np.int64) - np.asarray(origin_mm, np.int64)) >> shift).astype(np.uint64)
    key = np.zeros(len(c), dtype=np.uint64)
    for bit in range(21):
        for axis in range(3):
            key |= ((c[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return key


def lattice_to_enu_mm(ix, iy, iz, scale, offset, zf, lattice) -> tuple[np.ndarray, int]:
    """(N,3) int32 ENU millimetres and the number of points outside the lattice (= outside header bounds):
    `lattice_to_enu_keys` without the keys."""
    xyz, _keys, bad, *_ext = K.lattice_to_enu_keys(
        ix, iy, iz, scale, offset, zf, lattice, np.zeros(3, np.int64), 0
    )
    return xyz, bad


def lattice_to_enu_mm_reference(ix, iy, iz, scale, offset, zf, lattice) -> np.ndarray:
    """Numpy version of `lattice_to_enu_mm` (tests)."""
    s = np.stack(
        [
            ix * scale[0] + offset[0],
            iy * scale[1] + offset[1],
            (iz * scale[2] + offset[2]) * zf,
        ],
        axis=1,
    )
    f = (s - lattice.lo) / lattice.step
    shape = np.array(lattice.values.shape[:3])
    c = np.clip(np.floor(f).astype(np.int64), 0, shape - 2)
    t = f - c
    v = lattice.values
    acc = np.zeros((len(ix), 3))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    (t[:, 0] if dx else 1 - t[:, 0])
                    * (t[:, 1] if dy else 1 - t[:, 1])
                    * (t[:, 2] if dz else 1 - t[:, 2])
                )
                acc += w[:, None] * v[c[:, 0] + dx, c[:, 1] + dy, c[:, 2] + dz]
    return np.floor(acc * 1000.0 + 0.5).astype(np.int32)


def select_levels_reference(
    keys: np.ndarray, hashes: np.ndarray, D: int, b: int, g: int, tmax: int, max_points: int
) -> np.ndarray:
    """Plain numpy/python version of `select_levels` (tests; small inputs)."""
    n = len(keys)
    level = np.full(n, -1, dtype=np.int8)

    def claim(idx: np.ndarray, t: int) -> None:
        if len(idx) == 0:
            return
        cells = keys[idx] >> np.uint64(3 * (D - (t + g)))
        order = np.lexsort((idx, hashes[idx], cells))  # by cell, then hash, then position in sort
        first = np.ones(len(order), dtype=bool)
        first[1:] = cells[order][1:] != cells[order][:-1]
        winners = idx[order[first]]
        free = winners[level[winners] < 0]
        level[free] = t

    for t in range(max(0, b - g), b):
        claim(np.arange(n), t)

    def visit(idx: np.ndarray, t: int) -> None:
        rem = idx[level[idx] < 0]
        if len(rem) == 0:
            return
        if len(rem) <= max_points or t >= tmax:
            level[rem] = t
            return
        claim(idx, t)
        child = keys[idx] >> np.uint64(3 * (D - (t + 1)))
        for c in np.unique(child):
            visit(idx[child == c], t + 1)

    visit(np.arange(n), b)
    return level


def gather_reference(dtype: np.dtype, order, xyz: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Records whose fields are xyz[order] and columns[f][order] (missing fields zero)."""
    out = np.zeros(len(order), dtype=dtype)
    for k, f in enumerate("xyz"):
        out[f] = xyz[order, k]
    for name, col in columns.items():
        out[name] = np.asarray(col)[order]
    return out


def exact_enu(transformer, frame, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-point PROJ reference of the lattice (metres)."""
    ex, ey, ez = transformer.transform(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    return frame.ecef_to_enu(np.asarray(ex), np.asarray(ey), np.asarray(ez))


@dataclass
class QuantizedTile:
    """Quantized positions of one tile (millimetres, relative to the project ENU frame)."""

    lo: np.ndarray  # (3,) int64 mm, minimum corner of the quantization grid
    step: int  # mm, power of two
    q: np.ndarray  # (N,3) uint16
    qmax: np.ndarray  # (3,) int64, the maximum of q per axis (the minimum is 0)

    @property
    def positions_mm(self) -> np.ndarray:
        return self.lo + self.q.astype(np.int64) * self.step


def quantize(xyz_mm: np.ndarray) -> QuantizedTile:
    """The tiler's quantization (`tiling.tile_vertices`, `kernels.tile_grid`) in numpy: the smallest power of
    two millimetres that fits the tile's largest extent into uint16."""
    lo = xyz_mm.min(axis=0).astype(np.int64)
    ext = int((xyz_mm.max(axis=0).astype(np.int64) - lo).max())
    step = 1
    while ext // step > 65535:
        step *= 2
    q = ((xyz_mm.astype(np.int64) - lo) // step).astype(np.uint16)
    return QuantizedTile(lo, step, q, q.max(axis=0).astype(np.int64))


def pack_vertices(
    qt: QuantizedTile, attrs: dict[str, np.ndarray], schema: PointSchema
) -> tuple[np.ndarray, float]:
    """The interleaved vertex bytes (n, stride) of one tile and its GPS base time (numpy version of
    `pipeline.stages.points.tiling.tile_vertices`)."""
    n = len(qt.q)
    packed = np.zeros(n, dtype=vertex_dtype(schema.attributes))
    # glTF y-up: (x, z, -y); -y stored as qmax_y - qy (unsigned)
    pos = np.empty((n, 3), dtype=np.uint16)
    pos[:, 0] = qt.q[:, 0]
    pos[:, 1] = qt.q[:, 2]
    pos[:, 2] = (qt.qmax[1] - qt.q[:, 1].astype(np.int64)).astype(np.uint16)
    packed["POSITION"] = pos
    base = 0.0
    for a in schema.attributes:
        if a.name == "gps_time":
            t = np.asarray(attrs["gps_time"], dtype=np.float64)
            base = float(t.min()) if n else 0.0
            packed[a.attr] = (t - base).astype(np.float32)
        elif a.name == "rgb":
            packed[a.attr] = SRGB8_TO_LINEAR8[attrs["rgb"]]
        else:
            packed[a.attr] = np.asarray(attrs[a.name]).astype(a.vertex_dtype, copy=False)
    return packed.view(np.uint8).reshape(n, packed.dtype.itemsize), base


def encode_glb(
    qt: QuantizedTile, attrs: dict[str, np.ndarray], schema: PointSchema, *, meshopt: bool = False
) -> bytes:
    """One point tile as GLB bytes from its record fields `attrs` (numpy path: `pack_vertices`)."""
    packed, base = pack_vertices(qt, attrs, schema)
    return b"".join(glb_pieces(packed, schema, qt.lo, qt.step, qt.qmax, base, meshopt=meshopt))


def read_points(path, fields=("x", "y", "z", "classification")) -> dict[str, np.ndarray]:
    """Every point of a file at once (`reader.iter_points` concatenated; the pipeline reads in chunks)."""
    chunks = list(reader.iter_points(path, fields))
    return {f: np.concatenate([c[f] for c in chunks]) for f in fields}
