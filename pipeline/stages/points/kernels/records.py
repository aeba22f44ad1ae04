"""Point kernels: record permutation, tile quantization and checksums, glTF vertex packing and spill record
packing (numba, each with a numpy reference the tests compare against)."""

from __future__ import annotations

import numba as nb
import numpy as np

from pipeline.stages.points.kernels.keys import _mix64

U64 = np.uint64


@nb.njit(cache=True, nogil=True)
def _gather_rows(src, perm, out):
    w = src.shape[1]
    for i in range(perm.shape[0]):
        j = perm[i]
        for k in range(w):
            out[i, k] = src[j, k]


def take_rows(rec: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """rec[perm] for a contiguous structured array (about 10x faster than numpy's structured take)."""
    rec = np.ascontiguousarray(rec)
    out = np.empty(len(perm), dtype=rec.dtype)
    w = rec.dtype.itemsize
    if len(perm) and len(rec):
        _gather_rows(
            rec.view(np.uint8).reshape(len(rec), w),
            np.asarray(perm, dtype=np.int64),
            out.view(np.uint8).reshape(len(out), w),
        )
    return out


@nb.njit(cache=True, inline="always")
def _hash3(x, y, z):
    h = _mix64(U64(np.uint32(x)) + U64(0x9E3779B97F4A7C15))
    h = _mix64(h ^ U64(np.uint32(y)))
    return _mix64(h ^ U64(np.uint32(z)))


@nb.njit(cache=True, nogil=True)
def _quantize_tiles(x, y, z, starts, ends, q, lo, step, qmin, qmax, checksum):
    for t in range(starts.shape[0]):
        s = starts[t]
        e = ends[t]
        mn0, mn1, mn2 = np.int64(x[s]), np.int64(y[s]), np.int64(z[s])
        mx0, mx1, mx2 = mn0, mn1, mn2
        for i in range(s, e):
            a, b, c = np.int64(x[i]), np.int64(y[i]), np.int64(z[i])
            mn0 = min(mn0, a)
            mn1 = min(mn1, b)
            mn2 = min(mn2, c)
            mx0 = max(mx0, a)
            mx1 = max(mx1, b)
            mx2 = max(mx2, c)
        ext = max(mx0 - mn0, max(mx1 - mn1, mx2 - mn2))
        st = np.int64(1)
        while ext // st > 65535:
            st *= 2
        lo[t, 0], lo[t, 1], lo[t, 2] = mn0, mn1, mn2
        step[t] = st
        h = U64(0)
        a0, a1, a2 = np.int64(65535), np.int64(65535), np.int64(65535)
        b0, b1, b2 = np.int64(0), np.int64(0), np.int64(0)
        for i in range(s, e):
            q0 = (np.int64(x[i]) - mn0) // st
            q1 = (np.int64(y[i]) - mn1) // st
            q2 = (np.int64(z[i]) - mn2) // st
            q[i, 0], q[i, 1], q[i, 2] = q0, q1, q2
            a0, a1, a2 = min(a0, q0), min(a1, q1), min(a2, q2)
            b0, b1, b2 = max(b0, q0), max(b1, q1), max(b2, q2)
            h += _hash3(mn0 + q0 * st, mn1 + q1 * st, mn2 + q2 * st)
        qmin[t, 0], qmin[t, 1], qmin[t, 2] = a0, a1, a2
        qmax[t, 0], qmax[t, 1], qmax[t, 2] = b0, b1, b2
        checksum[t] = h


def quantize_tiles(x, y, z, starts, ends):
    """Per tile (slice starts[t]:ends[t]): power-of-two-mm uint16 quantization, bounds and checksum."""
    n, T = len(x), len(starts)
    q = np.empty((n, 3), dtype=np.uint16)
    lo = np.empty((T, 3), dtype=np.int64)
    step = np.empty(T, dtype=np.int64)
    qmin = np.empty((T, 3), dtype=np.int64)
    qmax = np.empty((T, 3), dtype=np.int64)
    checksum = np.empty(T, dtype=np.uint64)
    if T:
        _quantize_tiles(
            x,
            y,
            z,
            np.asarray(starts, np.int64),
            np.asarray(ends, np.int64),
            q,
            lo,
            step,
            qmin,
            qmax,
            checksum,
        )
    return q, lo, step, qmin, qmax, checksum


@nb.njit(cache=True, nogil=True)
def _tile_vertices(
    x, y, z, gps, a16, b16, c16, d16, a8, b8, c8, d8, rec8, perm, starts, ends, copies, rgb_src, rgb_dst,
    lut, gps_col, out8, out16, out32, out32z, lo, step, qmin, qmax, gbase, checksum,
):  # fmt: skip
    for t in range(starts.shape[0]):
        s = starts[t]
        e = ends[t]
        j = perm[s]
        mn0, mn1, mn2 = np.int64(x[j]), np.int64(y[j]), np.int64(z[j])
        mx0, mx1, mx2 = mn0, mn1, mn2
        g = gps[j] if gps_col >= 0 else 0.0
        for i in range(s, e):
            j = perm[i]
            a, b, c = np.int64(x[j]), np.int64(y[j]), np.int64(z[j])
            mn0 = min(mn0, a)
            mn1 = min(mn1, b)
            mn2 = min(mn2, c)
            mx0 = max(mx0, a)
            mx1 = max(mx1, b)
            mx2 = max(mx2, c)
            if gps_col >= 0:
                g = min(g, gps[j])
        ext = max(mx0 - mn0, max(mx1 - mn1, mx2 - mn2))
        sh = np.int64(0)  # the step is a power of two: shifts, not divisions
        while (ext >> sh) > 65535:
            sh += 1
        st = np.int64(1) << sh
        lo[t, 0], lo[t, 1], lo[t, 2] = mn0, mn1, mn2
        step[t] = st
        # the minimum is on the grid, so quantized bounds are 0 .. (max - min) // step
        m0, m1, m2 = (mx0 - mn0) >> sh, (mx1 - mn1) >> sh, (mx2 - mn2) >> sh
        qmin[t, 0], qmin[t, 1], qmin[t, 2] = 0, 0, 0
        qmax[t, 0], qmax[t, 1], qmax[t, 2] = m0, m1, m2
        gbase[t] = g
        h = U64(0)
        for i in range(s, e):
            j = perm[i]
            q0 = (np.int64(x[j]) - mn0) >> sh
            q1 = (np.int64(y[j]) - mn1) >> sh
            q2 = (np.int64(z[j]) - mn2) >> sh
            h += _hash3(mn0 + (q0 << sh), mn1 + (q1 << sh), mn2 + (q2 << sh))
            for k in range(out32.shape[1]):  # padding between attributes stays 0 (deterministic files)
                out32z[i, k] = 0
            out16[i, 0] = np.uint16(q0)  # glTF y-up: (x, z, -y), -y as qmax_y - qy
            out16[i, 1] = np.uint16(q2)
            out16[i, 2] = np.uint16(m1 - q1)
            # typed field copies (2- and 1-byte properties), then any other field byte by byte
            if d16[0] >= 0:
                out16[i, d16[0]] = a16[j]
            if d16[1] >= 0:
                out16[i, d16[1]] = b16[j]
            if d16[2] >= 0:
                out16[i, d16[2]] = c16[j]
            if d8[0] >= 0:
                out8[i, d8[0]] = a8[j]
            if d8[1] >= 0:
                out8[i, d8[1]] = b8[j]
            if d8[2] >= 0:
                out8[i, d8[2]] = c8[j]
            for k in range(copies.shape[0]):
                so = copies[k, 0]
                do = copies[k, 1]
                for bb in range(copies[k, 2]):
                    out8[i, do + bb] = rec8[j, so + bb]
            if rgb_src >= 0:
                for ch in range(3):
                    out8[i, rgb_dst + ch] = lut[rec8[j, rgb_src + ch]]
            if gps_col >= 0:
                out32[i, gps_col] = np.float32(gps[j] - g)
        checksum[t] = h


def tile_vertices(rec, perm, starts, ends, copies, rgb, lut, gps_dst, stride, out):
    """Quantize and interleave the vertices of many tiles in one pass over a bin's records.

    rec: structured records with int32 x, y, z (and float64 gps_time when `gps_dst` >= 0); perm: the
    output order (tile t is perm[starts[t]:ends[t]]); copies: (k, 3) (record offset, vertex offset, bytes);
    rgb: (record offset, vertex offset) of 8-bit sRGB colours converted by `lut`, or None; out: (N, stride)
    uint8 (every byte is written; padding is 0). Returns lo, step, qmin, qmax, gps base and checksum per tile, with
    the same quantization as `quantize_tiles`."""
    n_t = len(starts)
    lo = np.empty((n_t, 3), dtype=np.int64)
    step = np.empty(n_t, dtype=np.int64)
    qmin = np.empty((n_t, 3), dtype=np.int64)
    qmax = np.empty((n_t, 3), dtype=np.int64)
    gbase = np.zeros(n_t, dtype=np.float64)
    checksum = np.empty(n_t, dtype=np.uint64)
    if n_t == 0:
        return lo, step, qmin, qmax, gbase, checksum
    w = rec.dtype.itemsize
    rec8 = rec.view(np.uint8).reshape(len(rec), w)
    # dummies are non-contiguous like the record fields: one compiled specialisation for all layouts
    gps = rec["gps_time"] if gps_dst >= 0 else np.zeros(4, np.float64)[::2]
    # up to three 2-byte and three 1-byte copies become typed field reads (a byte loop per field is slow)
    typed: dict[int, list[tuple[np.ndarray, int]]] = {2: [], 1: []}
    rest = []
    for so, do, nb_ in np.asarray(copies, np.int64).reshape(-1, 3):
        kind = np.uint16 if nb_ == 2 else np.uint8
        if nb_ in typed and len(typed[int(nb_)]) < 3 and do % nb_ == 0:
            view = np.ndarray((len(rec),), dtype=kind, buffer=rec8, offset=int(so), strides=(w,))
            typed[int(nb_)].append((view, int(do) // int(nb_)))
        else:
            rest.append((so, do, nb_))
    slots = []
    for size, dummy in ((2, np.zeros(4, np.uint16)[::2]), (1, np.zeros(4, np.uint8)[::2])):
        got = typed[size] + [(dummy, -1)] * (3 - len(typed[size]))
        slots += [g[0] for g in got] + [np.array([g[1] for g in got], np.int64)]
    _tile_vertices(
        rec["x"],
        rec["y"],
        rec["z"],
        gps,
        *slots,
        rec8,
        np.asarray(perm, np.int64),
        np.asarray(starts, np.int64),
        np.asarray(ends, np.int64),
        np.array(rest, np.int64).reshape(-1, 3),
        -1 if rgb is None else int(rgb[0]),
        -1 if rgb is None else int(rgb[1]),
        lut,
        gps_dst // 4 if gps_dst >= 0 else -1,
        out,
        out.view(np.uint16),
        out.view(np.float32),
        out.view(np.uint32),
        lo,
        step,
        qmin,
        qmax,
        gbase,
        checksum,
    )
    return lo, step, qmin, qmax, gbase, checksum


@nb.njit(cache=True, nogil=True)
def _scatter_bytes(src, order, out, off):
    w = src.shape[1]
    for i in range(order.shape[0]):
        j = order[i]
        for k in range(w):
            out[i, off + k] = src[j, k]


def gather_records_reference(
    dtype: np.dtype, order: np.ndarray, columns: dict[str, np.ndarray]
) -> np.ndarray:
    """Structured records whose field f is columns[f][order], copied column by column (missing fields stay
    zero): the plain reference the record packers are tested against."""
    n = len(order)
    out = np.zeros(n, dtype=dtype)
    ob = out.view(np.uint8).reshape(n, dtype.itemsize)
    order = np.asarray(order, dtype=np.int64)
    fields = dtype.fields
    if fields is None:
        raise ValueError(f"{dtype} is not a record dtype")
    for name, col in columns.items():
        off = fields[name][1]
        src = np.ascontiguousarray(col)
        width = src.dtype.itemsize * (1 if src.ndim == 1 else src.shape[1])
        _scatter_bytes(src.view(np.uint8).reshape(len(src), width), order, ob, off)
    return out


@nb.njit(cache=True, inline="always")
def _put(out, i, o, v, nbytes):
    for b in range(nbytes):  # little-endian bytes of an unsigned integer (constant trip count per call)
        out[i, o + b] = np.uint8((v >> U64(8 * b)) & U64(0xFF))


@nb.njit(
    "void(int64[::1], int32[:, :], int64, uint64[:], int64, uint16[:], uint16[:], uint16[:], int64[::1],"
    " uint8[:], uint8[:], uint8[:], int64[::1], int64[::1], int64[::1],"
    " uint16[:], uint16[:], uint16[:], int64, int64, uint8[:, :])",
    cache=True,
    nogil=True,
)  # one explicit signature (any layout): no compilation per combination of column layouts
def _pack_typed(
    order, xyz, x_dst, a64, d64, a16, b16, c16, d16, a8, b8, c8, d8, sh8, m8, r16, g16, b16c, rgb_shift,
    rgb_dst, out,
):  # fmt: skip
    for i in range(order.shape[0]):
        j = order[i]
        for k in range(3):
            _put(out, i, x_dst + 4 * k, U64(np.uint32(xyz[j, k])), 4)
        if d64 >= 0:
            _put(out, i, d64, a64[j], 8)
        if d16[0] >= 0:
            _put(out, i, d16[0], U64(a16[j]), 2)
        if d16[1] >= 0:
            _put(out, i, d16[1], U64(b16[j]), 2)
        if d16[2] >= 0:
            _put(out, i, d16[2], U64(c16[j]), 2)
        # 1-byte fields, each (source >> shift) & mask: plain bytes or LAS bit fields
        if d8[0] >= 0:
            out[i, d8[0]] = np.uint8((a8[j] >> sh8[0]) & m8[0])
        if d8[1] >= 0:
            out[i, d8[1]] = np.uint8((b8[j] >> sh8[1]) & m8[1])
        if d8[2] >= 0:
            out[i, d8[2]] = np.uint8((c8[j] >> sh8[2]) & m8[2])
        if rgb_dst >= 0:
            out[i, rgb_dst] = np.uint8(r16[j] >> rgb_shift)
            out[i, rgb_dst + 1] = np.uint8(g16[j] >> rgb_shift)
            out[i, rgb_dst + 2] = np.uint8(b16c[j] >> rgb_shift)


@nb.njit(cache=True, nogil=True)
def _put_column(order, col, dst, nbytes, out):
    for i in range(order.shape[0]):
        _put(out, i, dst, U64(col[order[i]]), nbytes)


_SLOTS = {8: 1, 2: 3, 1: 3}  # columns of each size the fused pass reads (the common records fill them)


def pack_typed(order, xyz, x_dst: int, fields: list[tuple[np.ndarray, int]], out: np.ndarray) -> None:
    """out[i] = the record of input point order[i], reading typed (possibly strided) columns: positions
    (N,3) int32 at byte `x_dst`, and `fields` = (column, byte offset in the record), each a 1-D integer or
    float column of 1, 2, 4 or 8 bytes (plain, or a `BitField` of the raw records) or the colour ((N,3)
    uint8, or `Rgb16` channels). One fused pass writes the positions, the colour and up to one 8-byte,
    three 2-byte and three 1-byte columns; every other column (4-byte ones such as the scan angle and the
    extra dimensions, or more of a size) gets a typed pass of its own. Bytes no field names are left as
    they are."""
    from pipeline.sources.pointcloud.las import BitField, Rgb16

    sized: dict[int, list] = {8: [], 2: [], 1: []}
    rgb, more = [], []
    for col, off in fields:
        if isinstance(col, BitField):
            if len(sized[1]) < _SLOTS[1]:
                sized[1].append((col.src.view(np.uint8), off, col.shift, col.mask))
            else:
                more.append((((col.src.view(np.uint8) >> col.shift) & col.mask).astype(np.uint8), off))
        elif isinstance(col, Rgb16):
            rgb.append(((col.red, col.green, col.blue), off, col.shift))
        elif col.ndim == 2 and col.shape[1] == 3 and col.dtype == np.uint8:
            rgb.append(((col[:, 0], col[:, 1], col[:, 2]), off, 0))
        elif col.ndim == 1 and col.dtype.kind in "uif" and col.dtype.itemsize in (1, 2, 4, 8):
            size = col.dtype.itemsize
            view = col.view(f"u{size}")
            if len(sized.get(size, ())) < _SLOTS.get(size, 0):
                view = view if view.flags.writeable else view.copy()  # (the fused pass's signature)
                sized[size].append((view, off) if size > 1 else (view, off, 0, 0xFF))
            else:
                more.append((view, off))
        else:
            raise ValueError(f"pack_typed: no packing for a column of {col.dtype}, shape {col.shape}")
    if len(rgb) > 1 or len(xyz) != len(out):
        raise ValueError("pack_typed: more than one colour, or positions and records of different lengths")
    if rgb and any(c.dtype.itemsize not in (1, 2) for c in rgb[0][0]):
        raise ValueError("pack_typed: colour channels of 8 or 16 bits expected")
    u64, u16, u8 = sized[8], sized[2], sized[1]
    z64, z16, z8 = np.zeros(1, np.uint64), np.zeros(1, np.uint16), np.zeros(1, np.uint8)
    c64, o64 = u64[0] if u64 else (z64, -1)
    c16 = [c for c, _o in u16] + [z16] * (3 - len(u16))
    o16 = np.array([o for _c, o in u16] + [-1] * (3 - len(u16)), np.int64)
    c8 = [c for c, _o, _s, _m in u8] + [z8] * (3 - len(u8))
    o8 = np.array([o for _c, o, _s, _m in u8] + [-1] * (3 - len(u8)), np.int64)
    s8 = np.array([sh for _c, _o, sh, _m in u8] + [0] * (3 - len(u8)), np.int64)
    m8 = np.array([m for _c, _o, _s, m in u8] + [0] * (3 - len(u8)), np.int64)
    if rgb:
        rgb_cols, orgb, rsh = rgb[0]
        chans = [c.astype(np.uint16) if c.dtype.itemsize == 1 else c.view(np.uint16) for c in rgb_cols]
    else:
        chans, orgb, rsh = [z16] * 3, -1, 0
    if len(order):
        order = np.asarray(order, np.int64)
        _pack_typed(
            order, xyz, int(x_dst), c64, int(o64), *c16, o16, *c8, o8, s8, m8, *chans, int(rsh), int(orgb), out,
        )  # fmt: skip
        for col, off in more:
            _put_column(order, col, int(off), col.dtype.itemsize, out)


@nb.njit(cache=True, nogil=True)
def _rgb_max(r, g, b):
    m = np.int64(0)
    for i in range(r.shape[0]):
        m = max(m, max(np.int64(r[i]), max(np.int64(g[i]), np.int64(b[i]))))
    return m


def rgb_max(r, g, b) -> int:
    """The largest value of three colour channels (strided views allowed), one pass."""
    return int(_rgb_max(r, g, b)) if len(r) else 0


@nb.njit(cache=True, nogil=True)
def _byte_histogram(src, shift, mask, out):
    for i in range(src.shape[0]):
        out[(src[i] >> shift) & mask] += 1


def byte_histogram(col) -> np.ndarray:
    """Counts of the 256 values of a uint8 column or `BitField` (class codes present in a unit)."""
    from pipeline.sources.pointcloud.las import BitField

    out = np.zeros(256, np.int64)
    if isinstance(col, BitField):
        src, shift, mask = col.src.view(np.uint8), col.shift, col.mask
    elif np.asarray(col).dtype == np.uint8:
        src, shift, mask = np.asarray(col), 0, 0xFF
    else:  # other integer types (E57 readers): plain counting
        return np.bincount(np.asarray(col, dtype=np.int64), minlength=256)
    if len(src):
        _byte_histogram(src, np.uint8(shift), np.uint8(mask), out)
    return out
