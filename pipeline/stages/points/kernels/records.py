"""Point kernels: tile quantization and checksums, and typed column gathers (spill records, glTF vertices),
numba."""

from __future__ import annotations

import numba as nb
import numpy as np

from pipeline.sources.pointcloud.las import BitField, Rgb16
from pipeline.stages.points.kernels.keys import _hash3

U64 = np.uint64


@nb.njit(cache=True, nogil=True)
def _tile_grid(x, y, z, perm, starts, ends, gps, yup, q, gout, lo, step, qmax, gbase, checksum):
    for t in range(starts.shape[0]):
        s = starts[t]
        e = ends[t]
        j = perm[s]
        mn0, mn1, mn2 = np.int64(x[j]), np.int64(y[j]), np.int64(z[j])
        mx0, mx1, mx2 = mn0, mn1, mn2
        g = gps[j] if gps.shape[0] else 0.0
        for i in range(s, e):
            j = perm[i]
            a, b, c = np.int64(x[j]), np.int64(y[j]), np.int64(z[j])
            mn0 = min(mn0, a)
            mn1 = min(mn1, b)
            mn2 = min(mn2, c)
            mx0 = max(mx0, a)
            mx1 = max(mx1, b)
            mx2 = max(mx2, c)
            if gps.shape[0]:
                g = min(g, gps[j])
        ext = max(mx0 - mn0, max(mx1 - mn1, mx2 - mn2))
        sh = np.int64(0)  # the step is a power of two: shifts, not divisions
        while (ext >> sh) > 65535:
            sh += 1
        lo[t, 0], lo[t, 1], lo[t, 2] = mn0, mn1, mn2
        step[t] = np.int64(1) << sh
        # the minimum is on the grid, so quantized bounds are 0 .. (max - min) // step
        m0, m1, m2 = (mx0 - mn0) >> sh, (mx1 - mn1) >> sh, (mx2 - mn2) >> sh
        qmax[t, 0], qmax[t, 1], qmax[t, 2] = m0, m1, m2
        gbase[t] = g
        h = U64(0)
        for i in range(s, e):
            j = perm[i]
            q0 = (np.int64(x[j]) - mn0) >> sh
            q1 = (np.int64(y[j]) - mn1) >> sh
            q2 = (np.int64(z[j]) - mn2) >> sh
            h += _hash3(mn0 + (q0 << sh), mn1 + (q1 << sh), mn2 + (q2 << sh))
            if yup:  # glTF y-up: (x, z, -y), -y as qmax_y - qy
                q[i, 0], q[i, 1], q[i, 2] = q0, q2, m1 - q1
            else:
                q[i, 0], q[i, 1], q[i, 2] = q0, q1, q2
            if gps.shape[0]:
                gout[i] = np.float32(gps[j] - g)
        checksum[t] = h


def tile_grid(rec, perm, starts, ends, q, yup: bool = False, gout=None):
    """Quantize the tiles of a bin's records in one pass: tile t is rec[perm[starts[t]:ends[t]]].

    Per tile: the minimum corner `lo` (mm), a power-of-two step (mm) that fits its extent in 16 bits, the
    quantized maximum (the minimum is 0), the smallest GPS time and the checksum of the quantized positions.
    Writes the quantized positions to q (N, 3) (with `yup`: glTF's (x, z, -y), as qmax_y - qy) and, when
    `gout` is given, each GPS time relative to its tile's smallest into it (float32)."""
    n_t = len(starts)
    lo = np.empty((n_t, 3), dtype=np.int64)
    step = np.empty(n_t, dtype=np.int64)
    qmax = np.empty((n_t, 3), dtype=np.int64)
    gbase = np.zeros(n_t, dtype=np.float64)
    checksum = np.empty(n_t, dtype=np.uint64)
    gps = rec["gps_time"] if gout is not None else np.zeros(0)
    _tile_grid(
        rec["x"], rec["y"], rec["z"], np.asarray(perm, np.int64), np.asarray(starts, np.int64),
        np.asarray(ends, np.int64), gps, yup, q, np.zeros(0, np.float32) if gout is None else gout, lo, step,
        qmax, gbase, checksum,
    )  # fmt: skip
    return lo, step, qmax, gbase, checksum


@nb.njit(cache=True, nogil=True)
def _gather(src, order, out):
    for i in range(order.shape[0]):
        out[i] = src[order[i]]


@nb.njit(cache=True, nogil=True)
def _gather_bits(src, order, shift, mask, out):
    for i in range(order.shape[0]):
        out[i] = (src[order[i]] >> shift) & mask


@nb.njit(cache=True, nogil=True)
def _gather_lut(src, order, lut, out):
    for i in range(order.shape[0]):
        out[i] = lut[src[order[i]]]


def gather(src, order, out, lut=None) -> None:
    """out[i] = src[order[i]] (or lut[src[order[i]]]) for 1-D or (N, k) columns, strided views allowed."""
    order = np.asarray(order, np.int64)
    if src.ndim == 2:
        for k in range(src.shape[1]):
            gather(src[:, k], order, out[:, k], lut)
    elif lut is not None:
        _gather_lut(src, order, lut, out)
    else:
        _gather(src.astype(out.dtype, copy=False), order, out)


# points per block of `pack_records`: the random rows of the source a block reads (~0.5 MB) stay in the
# CPU cache from one field to the next (one pass per field over a ~500 k point unit: twice the CPU)
GATHER_BLOCK = 4096


def pack_records(order, xyz, cols: dict, rec: np.ndarray) -> None:
    """rec[i] = the record of input point order[i]: positions (N, 3) int32 into x, y, z and each column
    into its field: a plain column (converted to the field's type), a `BitField` of the raw records, `Rgb16`
    channels or (N, 3) uint8 colours. Fields no column names are left as they are. One typed gather per
    field, block by block (GATHER_BLOCK)."""
    if len(xyz) != len(rec):
        raise ValueError("pack_records: positions and records of different lengths")
    order = np.asarray(order, np.int64)
    cols = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], **cols}
    for name, col in cols.items():  # plain columns checked and converted once, not per block
        if not isinstance(col, (BitField, Rgb16)):
            dst = rec[name]
            if col.shape[1:] != dst.shape[1:]:
                raise ValueError(
                    f"pack_records: a column of shape {col.shape} for the field {name} {dst.dtype}"
                )
            cols[name] = col.astype(dst.dtype, copy=False)
    for s in range(0, len(order), GATHER_BLOCK):
        o, r = order[s : s + GATHER_BLOCK], rec[s : s + GATHER_BLOCK]
        for name, col in cols.items():
            dst = r[name]
            if isinstance(col, BitField):
                _gather_bits(col.src.view(np.uint8), o, np.uint8(col.shift), np.uint8(col.mask), dst)
            elif isinstance(col, Rgb16):
                for k, ch in enumerate((col.red, col.green, col.blue)):
                    _gather_bits(ch, o, ch.dtype.type(col.shift), ch.dtype.type(0xFF), dst[:, k])
            else:
                gather(col, o, dst)
