"""Hot loops of the point tiler (numba), each with a pure-numpy reference version the tests compare against.

- `lattice_to_enu_mm`: trilinear interpolation of an exact PROJ lattice (source CRS -> project ENU),
  straight from the file's integer coordinates to integer millimetres.
- `morton_keys`: 3D Morton (z-order) keys of integer cell coordinates.
- `point_hash`: deterministic 64-bit hash of a point's millimetre position (the sampling priority).
- `select_levels`: the nested min-hash level of detail of one bin (see docs/pointcloud.md).
"""

from __future__ import annotations

import numba as nb
import numpy as np

U64 = np.uint64


def _new(_name: str, shape, dtype) -> np.ndarray:
    """The default `alloc` of the wrappers that take one: a fresh array (stages pass reused buffers)."""
    return np.empty(shape, dtype=dtype)


# ---- reprojection ------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _lattice_keys_kernel(
    ix, iy, iz, scale, offset, zf, lo, step, values, tol, origin, kshift, out, keys, ext
):
    """Trilinear interpolation of the lattice straight from the file's integer coordinates to integer ENU
    millimetres (out), fused with the checks and keys of a decode unit: the number of points outside the
    lattice (returned), the raw integer min/max (ext[0:3], ext[3:6]), the ENU min/max (ext[6:9], ext[9:12])
    and Morton keys of (xyz - origin) >> kshift (only written when every point lies in the cube
    [origin, origin + 2^21 << kshift))."""
    bad = 0
    n = ix.shape[0]
    big = np.int64(1) << 62
    r0, r1, r2 = big, big, big
    R0, R1, R2 = -big, -big, -big
    e0, e1, e2 = big, big, big
    E0, E1, E2 = -big, -big, -big
    lim = np.int64(1) << (np.int64(21) + kshift)
    outside = False
    nx, ny, nz = values.shape[0], values.shape[1], values.shape[2]
    # the 8 corner values of the current lattice cell (points in file order stay in one 50 m cell for
    # long runs): reloaded only when the cell changes
    corner = np.empty((3, 8), dtype=values.dtype)
    pcx, pcy, pcz = -1, -1, -1
    for i in range(n):
        xi = np.int64(ix[i])
        yi = np.int64(iy[i])
        zi = np.int64(iz[i])
        r0 = min(r0, xi)
        r1 = min(r1, yi)
        r2 = min(r2, zi)
        R0 = max(R0, xi)
        R1 = max(R1, yi)
        R2 = max(R2, zi)
        sx = xi * scale[0] + offset[0]
        sy = yi * scale[1] + offset[1]
        sz = (zi * scale[2] + offset[2]) * zf
        fx = (sx - lo[0]) / step[0]
        fy = (sy - lo[1]) / step[1]
        fz = (sz - lo[2]) / step[2]
        if fx < -tol or fy < -tol or fz < -tol or fx > nx - 1 + tol or fy > ny - 1 + tol or fz > nz - 1 + tol:
            bad += 1
        cx = min(max(int(np.floor(fx)), 0), nx - 2)
        cy = min(max(int(np.floor(fy)), 0), ny - 2)
        cz = min(max(int(np.floor(fz)), 0), nz - 2)
        if cx != pcx or cy != pcy or cz != pcz:
            for k in range(3):
                corner[k, 0] = values[cx, cy, cz, k]
                corner[k, 1] = values[cx + 1, cy, cz, k]
                corner[k, 2] = values[cx, cy + 1, cz, k]
                corner[k, 3] = values[cx + 1, cy + 1, cz, k]
                corner[k, 4] = values[cx, cy, cz + 1, k]
                corner[k, 5] = values[cx + 1, cy, cz + 1, k]
                corner[k, 6] = values[cx, cy + 1, cz + 1, k]
                corner[k, 7] = values[cx + 1, cy + 1, cz + 1, k]
            pcx, pcy, pcz = cx, cy, cz
        tx = fx - cx
        ty = fy - cy
        tz = fz - cz
        for k in range(3):
            c00 = corner[k, 0] + (corner[k, 1] - corner[k, 0]) * tx
            c10 = corner[k, 2] + (corner[k, 3] - corner[k, 2]) * tx
            c01 = corner[k, 4] + (corner[k, 5] - corner[k, 4]) * tx
            c11 = corner[k, 6] + (corner[k, 7] - corner[k, 6]) * tx
            c0 = c00 + (c10 - c00) * ty
            c1 = c01 + (c11 - c01) * ty
            v = c0 + (c1 - c0) * tz
            out[i, k] = np.int32(np.floor(v * 1000.0 + 0.5))
        a = np.int64(out[i, 0])
        b = np.int64(out[i, 1])
        c = np.int64(out[i, 2])
        e0 = min(e0, a)
        e1 = min(e1, b)
        e2 = min(e2, c)
        E0 = max(E0, a)
        E1 = max(E1, b)
        E2 = max(E2, c)
        a -= origin[0]
        b -= origin[1]
        c -= origin[2]
        if a < 0 or b < 0 or c < 0 or a >= lim or b >= lim or c >= lim:
            outside = True
        elif not outside:
            keys[i] = (
                _part1by2(U64(a >> kshift))
                | (_part1by2(U64(b >> kshift)) << U64(1))
                | (_part1by2(U64(c >> kshift)) << U64(2))
            )
    ext[0], ext[1], ext[2], ext[3], ext[4], ext[5] = r0, r1, r2, R0, R1, R2
    ext[6], ext[7], ext[8], ext[9], ext[10], ext[11] = e0, e1, e2, E0, E1, E2
    return bad


def lattice_to_enu_mm(ix, iy, iz, scale, offset, zf, lattice) -> tuple[np.ndarray, int]:
    """(N,3) int32 ENU millimetres and the number of points outside the lattice (= outside header bounds):
    `lattice_to_enu_keys` without the keys."""
    xyz, _keys, bad, *_ext = lattice_to_enu_keys(
        ix, iy, iz, scale, offset, zf, lattice, np.zeros(3, np.int64), 0
    )
    return xyz, bad


def lattice_to_enu_keys(ix, iy, iz, scale, offset, zf, lattice, origin_mm, key_shift, out=None, keys=None):
    """ENU millimetres from the lattice + `morton_keys` of them, in one pass, with the unit's extents.

    Returns (xyz int32 (N,3), keys uint64 (N,) (None if a point lies outside the cube), bad,
    raw_min (3,), raw_max (3,), enu_min (3,), enu_max (3,)); the extents are int64 (empty input: +-2^62).
    `out` / `keys` may be given (e.g. scratch buffers) to be written instead of new arrays."""
    n = len(ix)
    out = np.empty((n, 3), dtype=np.int32) if out is None else out
    keys = np.empty(n, dtype=np.uint64) if keys is None else keys
    ext = np.empty(12, dtype=np.int64)
    origin = np.asarray(origin_mm, np.int64)
    bad = _lattice_keys_kernel(
        ix,
        iy,
        iz,
        np.asarray(scale, np.float64),
        np.asarray(offset, np.float64),
        float(zf),
        lattice.lo,
        lattice.step,
        lattice.values,
        1e-6,
        origin,
        np.int64(key_shift),
        out,
        keys,
        ext,
    )
    e = ext.reshape(4, 3)
    inside = n == 0 or (np.all(e[2] >= origin) and np.all(e[3] - origin < (1 << (21 + key_shift))))
    return out, (keys if inside else None), int(bad), e[0], e[1], e[2], e[3]


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


# ---- Morton keys and hashes ---------------------------------------------------------------------------


def _spread_table(bits: int) -> np.ndarray:
    out = np.zeros(1 << bits, dtype=np.uint64)
    for b in range(bits):
        out |= ((np.arange(1 << bits, dtype=np.uint64) >> np.uint64(b)) & np.uint64(1)) << np.uint64(3 * b)
    return out


_SPREAD11 = _spread_table(11)  # bits of an 11-bit value spread to every third bit (16 KB: stays in L1)


@nb.njit(cache=True, inline="always")
def _part1by2(v):
    """Bits 0..20 of v spread to bits 0, 3, 6, ... (two table lookups)."""
    v = v & U64(0x1FFFFF)
    return _SPREAD11[v & U64(0x7FF)] | (_SPREAD11[v >> U64(11)] << U64(33))


@nb.njit(cache=True, nogil=True)
def _morton_kernel(xyz, origin, shift, out):
    for i in range(xyz.shape[0]):
        x = U64((np.int64(xyz[i, 0]) - origin[0]) >> shift)
        y = U64((np.int64(xyz[i, 1]) - origin[1]) >> shift)
        z = U64((np.int64(xyz[i, 2]) - origin[2]) >> shift)
        out[i] = _part1by2(x) | (_part1by2(y) << U64(1)) | (_part1by2(z) << U64(2))


def morton_keys(xyz_mm: np.ndarray, origin_mm: np.ndarray, shift: int) -> np.ndarray:
    """Morton keys of `(xyz - origin) >> shift` (each coordinate must fit in 21 bits after the shift)."""
    out = np.empty(len(xyz_mm), dtype=np.uint64)
    _morton_kernel(xyz_mm, np.asarray(origin_mm, np.int64), np.int64(shift), out)
    return out


def morton_keys_reference(xyz_mm: np.ndarray, origin_mm: np.ndarray, shift: int) -> np.ndarray:
    c = ((xyz_mm.astype(np.int64) - np.asarray(origin_mm, np.int64)) >> shift).astype(np.uint64)
    key = np.zeros(len(c), dtype=np.uint64)
    for bit in range(21):
        for axis in range(3):
            key |= ((c[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return key


@nb.njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


@nb.njit(cache=True, nogil=True)
def _hash_kernel(xyz, out):
    for i in range(xyz.shape[0]):
        h = _mix64(U64(np.uint32(xyz[i, 0])) + U64(0x9E3779B97F4A7C15))
        h = _mix64(h ^ U64(np.uint32(xyz[i, 1])))
        h = _mix64(h ^ U64(np.uint32(xyz[i, 2])))
        out[i] = h


def point_hash(xyz_mm: np.ndarray) -> np.ndarray:
    out = np.empty(len(xyz_mm), dtype=np.uint64)
    _hash_kernel(xyz_mm, out)
    return out


@nb.njit(cache=True, nogil=True)
def _keys_hashes_kernel(x, y, z, origin, shift, keys, hashes):
    for i in range(x.shape[0]):
        a, b, c = np.int64(x[i]), np.int64(y[i]), np.int64(z[i])
        keys[i] = (
            _part1by2(U64((a - origin[0]) >> shift))
            | (_part1by2(U64((b - origin[1]) >> shift)) << U64(1))
            | (_part1by2(U64((c - origin[2]) >> shift)) << U64(2))
        )
        h = _mix64(U64(np.uint32(np.int32(a))) + U64(0x9E3779B97F4A7C15))
        h = _mix64(h ^ U64(np.uint32(np.int32(b))))
        hashes[i] = _mix64(h ^ U64(np.uint32(np.int32(c))))


def keys_and_hashes(x, y, z, origin_mm, shift: int, keys=None, hashes=None) -> tuple[np.ndarray, np.ndarray]:
    """`morton_keys` and `point_hash` of int32 coordinate columns (may be strided record fields), one pass
    (into `keys` / `hashes` when given)."""
    n = len(x)
    keys = np.empty(n, dtype=np.uint64) if keys is None else keys
    hashes = np.empty(n, dtype=np.uint64) if hashes is None else hashes
    if n:
        _keys_hashes_kernel(x, y, z, np.asarray(origin_mm, np.int64), np.int64(shift), keys, hashes)
    return keys, hashes


@nb.njit(cache=True, nogil=True)
def _lower_bound(x, y, z, origin, shift, lo, hi, target):
    while lo < hi:
        mid = (lo + hi) >> 1
        k = (
            _part1by2(U64((np.int64(x[mid]) - origin[0]) >> shift))
            | (_part1by2(U64((np.int64(y[mid]) - origin[1]) >> shift)) << U64(1))
            | (_part1by2(U64((np.int64(z[mid]) - origin[2]) >> shift)) << U64(2))
        )
        if k < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def spill_lower_bound(x, y, z, origin_mm, shift: int, first: int, last: int, target: int) -> int:
    """First index in [first, last) whose Morton key of `(xyz - origin) >> shift` is >= target (the
    records are sorted by that key); `last` if none."""
    return int(
        _lower_bound(x, y, z, np.asarray(origin_mm, np.int64), np.int64(shift), first, last, U64(target))
    )


# ---- level of detail ----------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _claim_cells(keys, hashes, level, lo, hi, shift, t):
    """For each cell (run of equal keys >> shift) in [lo, hi): its min-hash point gets level t if free."""
    i = lo
    while i < hi:
        k = keys[i] >> shift
        best = i
        j = i + 1
        while j < hi and (keys[j] >> shift) == k:
            if hashes[j] < hashes[best]:
                best = j
            j += 1
        if level[best] < 0:
            level[best] = t
        i = j


@nb.njit(cache=True, nogil=True)
def _select_kernel(keys, hashes, D, b, g, tmax, max_points, level):
    n = keys.shape[0]
    t0 = b - g
    if t0 < 0:
        t0 = 0
    # tiles above the bin (depth < b): their cells at depth t + g >= b lie inside the bin. One pass for
    # all of these levels: the cells are nested, so a point that wins a coarse cell also wins every finer
    # cell containing it; giving each winner the coarsest level it wins equals claiming level by level
    # (each level only claims free points)
    nl = b - t0
    if nl > 0:
        cur = np.empty(nl, np.uint64)
        win = np.full(nl, -1, np.int64)
        for i in range(n):
            k = keys[i]
            h = hashes[i]
            for m in range(nl):
                c = k >> U64(3 * (D - (t0 + m + g)))
                w = win[m]
                if w < 0 or c != cur[m]:
                    if w >= 0 and (level[w] < 0 or level[w] > t0 + m):
                        level[w] = t0 + m
                    cur[m] = c
                    win[m] = i
                elif h < hashes[w]:
                    win[m] = i
        for m in range(nl):
            w = win[m]
            if w >= 0 and (level[w] < 0 or level[w] > t0 + m):
                level[w] = t0 + m
    # tiles inside the bin, top-down with an explicit stack of (range, level, free points in it). One
    # pass per node claims its cells and splits it into children, counting their free points on the way
    # (cells at depth t + g >= t + 1 never straddle two children)
    cap = 8 * (tmax - b + 2) + 16
    s_lo = np.empty(cap, np.int64)
    s_hi = np.empty(cap, np.int64)
    s_t = np.empty(cap, np.int64)
    s_free = np.empty(cap, np.int64)
    remaining = 0
    for i in range(n):
        if level[i] < 0:
            remaining += 1
    s_lo[0] = 0
    s_hi[0] = n
    s_t[0] = b
    s_free[0] = remaining
    sp = 1
    while sp > 0:
        sp -= 1
        lo = s_lo[sp]
        hi = s_hi[sp]
        t = s_t[sp]
        remaining = s_free[sp]
        if remaining == 0:
            continue
        if remaining <= max_points or t >= tmax:
            for i in range(lo, hi):
                if level[i] < 0:
                    level[i] = t
            continue
        cshift = U64(3 * (D - (t + g)))
        chshift = U64(3 * (D - (t + 1)))
        child_lo = lo
        child_key = keys[lo] >> chshift
        child_free = 0
        i = lo
        while i < hi:
            k = keys[i] >> cshift
            best = i
            free = 0
            j = i
            while j < hi and (keys[j] >> cshift) == k:
                if hashes[j] < hashes[best]:
                    best = j
                if level[j] < 0:
                    free += 1
                j += 1
            ck = keys[i] >> chshift
            if ck != child_key:
                s_lo[sp] = child_lo
                s_hi[sp] = i
                s_t[sp] = t + 1
                s_free[sp] = child_free
                sp += 1
                child_lo = i
                child_key = ck
                child_free = 0
            if level[best] < 0:
                level[best] = t
                free -= 1
            child_free += free
            i = j
        s_lo[sp] = child_lo
        s_hi[sp] = hi
        s_t[sp] = t + 1
        s_free[sp] = child_free
        sp += 1


def select_levels(
    keys: np.ndarray, hashes: np.ndarray, D: int, b: int, g: int, tmax: int, max_points: int, alloc=_new
) -> np.ndarray:
    """Tile depth of every point of one bin (keys sorted ascending, depth-D Morton keys).

    A point's depth is the coarsest tile level l whose grid cell (octree depth l + g) has it as min-hash
    point, unless a tile with at most `max_points` remaining points (or at depth `tmax`) takes all of them.
    Levels < b belong to tiles above the bin; see docs/pointcloud.md for why this is partition-independent.
    """
    if g < 1:
        raise ValueError("select_levels: the sampling grid needs at least 1 bit (g >= 1)")
    level = alloc("level", len(keys), np.int8)
    level.fill(-1)
    if len(keys):
        _select_kernel(keys, hashes, D, b, g, tmax, max_points, level)
    return level


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


# ---- record permutation and tile quantization ----------------------------------------------------------


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


def pack_typed(order, xyz, x_dst: int, fields: list[tuple[np.ndarray, int]], out: np.ndarray) -> bool:
    """out[i] = the record of input point order[i] in one pass, reading typed (possibly strided) columns:
    positions (N,3) int32 at byte `x_dst`, and `fields` = (column, byte offset in the record) with at most
    one 8-byte, three 2-byte, three 1-byte columns (plain, or `BitField`s of the raw records) and one colour
    ((N,3) uint8, or `Rgb16` channels). Returns False (nothing written) when the fields do not fit those
    slots; the caller then uses `pack_rows`. Bytes no field names are left as they are."""
    from pipeline.sources.pointcloud.las import BitField, Rgb16

    u64, u16, u8, rgb = [], [], [], []
    for col, off in fields:
        if isinstance(col, BitField):
            u8.append((col.src.view(np.uint8), off, col.shift, col.mask))
        elif isinstance(col, Rgb16):
            rgb.append(((col.red, col.green, col.blue), off, col.shift))
        elif col.ndim == 2 and col.shape[1] == 3 and col.dtype == np.uint8:
            rgb.append(((col[:, 0], col[:, 1], col[:, 2]), off, 0))
        elif col.ndim == 1 and col.dtype.itemsize == 8 and col.dtype.kind in "uif":
            u64.append((col.view(np.uint64), off))
        elif col.ndim == 1 and col.dtype.itemsize == 2 and col.dtype.kind in "ui":
            u16.append((col.view(np.uint16), off))
        elif col.ndim == 1 and col.dtype.itemsize == 1 and col.dtype.kind in "ui":
            u8.append((col.view(np.uint8), off, 0, 0xFF))
        else:
            return False
    if len(u64) > 1 or len(u16) > 3 or len(u8) > 3 or len(rgb) > 1 or len(xyz) != len(out):
        return False
    if rgb and any(c.dtype.itemsize not in (1, 2) for c in rgb[0][0]):
        return False
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
        try:
            _pack_typed(
                np.asarray(order, np.int64), xyz, int(x_dst), c64, int(o64), *c16, o16, *c8, o8, s8, m8,
                *chans, int(rsh), int(orgb), out,
            )  # fmt: skip
        except TypeError:  # argument types outside the one compiled signature: nothing was written
            return False
    return True


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


def pack_rows(
    order: np.ndarray,
    sources: list[tuple[np.ndarray, np.ndarray]],
    out: np.ndarray,
    scratch: np.ndarray | None = None,
) -> None:
    """out[i] = the bytes of input row order[i], assembled field by field from row sources.

    `sources`: (rows (N, w) uint8, spec (k, 3) of (source byte offset, output byte offset, width)); `out`:
    (len(order), record size) uint8; bytes no spec names become 0. The rows are first interleaved in input
    order (sequential numpy block copies) into `scratch` ((N, record size) uint8, e.g. a reused buffer),
    then permuted as whole rows in one numba pass: about 3x faster than a per-field gather in numba
    (whose variable-width byte loops check every index). Used to build the spill records straight from
    the raw LAS records + the reprojected positions, in sorted order."""
    width = out.shape[1]
    n_in = len(sources[0][0]) if sources else 0
    rin = np.zeros((n_in, width), np.uint8) if scratch is None else scratch
    if rin.shape != (n_in, width):
        raise ValueError("pack_rows: scratch has the wrong shape")
    covered = np.zeros(width, dtype=bool)
    for rows, spec in sources:
        for so, do, w in np.asarray(spec, np.int64).reshape(-1, 3):
            rin[:, do : do + w] = rows[:, so : so + w]
            covered[do : do + w] = True
    if scratch is not None and not covered.all():
        rin[:, ~covered] = 0
    if len(order):
        _gather_rows(rin, np.asarray(order, np.int64), out)


@nb.njit(cache=True, nogil=True)
def _fix_runs(trunc, keys, order):
    """Within runs of equal truncated keys, stable insertion sort of `order` by the full keys."""
    n = order.shape[0]
    i = 0
    while i < n:
        j = i + 1
        while j < n and trunc[j] == trunc[i]:
            j += 1
        if j - i > 1:
            for a in range(i + 1, j):
                o = order[a]
                k = keys[o]
                c = a - 1
                while c >= i and keys[order[c]] > k:
                    order[c + 1] = order[c]
                    c -= 1
                order[c + 1] = o
        i = j


def sort_order(keys: np.ndarray, valid_bits: int = 64, alloc=_new) -> np.ndarray:
    """Stable argsort of uint64 keys using only `np.sort` on packed (key, index) words.

    Keys are packed with their index; if key bits + index bits exceed 64 the lowest key bits are dropped
    for the packed sort and the (short) runs of equal truncated keys are finished by insertion sort. Equal
    to `np.argsort(keys, kind="stable")` (tested). `alloc(name, shape, dtype)` provides the arrays (e.g.
    reused scratch buffers; the result is "order")."""
    n = len(keys)
    if n == 0:
        return np.empty(0, np.int64)
    idx_bits = max(int(n - 1).bit_length(), 1)
    drop = max(valid_bits + idx_bits - 64, 0)
    packed = alloc("sort.packed", n, np.uint64)
    _pack_index(keys, U64(drop), U64(idx_bits), packed)
    packed.sort()
    order = alloc("order", n, np.int64)
    _unpack_index(packed, U64(idx_bits), order)
    if drop:  # the packed words are not needed any more: their key part in place
        _fix_runs(np.right_shift(packed, np.uint64(idx_bits), out=packed), keys, order)
    return order


@nb.njit(cache=True, nogil=True)
def _pack_index(keys, drop, idx_bits, out):
    for i in range(keys.shape[0]):
        out[i] = ((keys[i] >> drop) << idx_bits) | U64(i)


@nb.njit(cache=True, nogil=True)
def _unpack_index(packed, idx_bits, out):
    mask = (U64(1) << idx_bits) - U64(1)
    for i in range(packed.shape[0]):
        out[i] = np.int64(packed[i] & mask)


@nb.njit(cache=True, nogil=True)
def _level_order(level, out):
    counts = np.zeros(129, np.int64)
    for i in range(level.shape[0]):
        counts[np.int64(level[i]) + 1] += 1
    for v in range(1, 129):
        counts[v] += counts[v - 1]
    for i in range(level.shape[0]):
        lv = np.int64(level[i])
        out[counts[lv]] = i
        counts[lv] += 1


@nb.njit(cache=True, nogil=True)
def _apply_level_order(order, by_level, keys, level, prefix, D, start, perm, keys_l, level_l, starts):
    n = by_level.shape[0]
    for i in range(n):
        k = by_level[i]
        perm[i] = order[k]
        keys_l[i] = keys[k] | prefix
        level_l[i] = level[k]
    m = 0
    for i in range(start, n):
        lv = np.int64(level_l[i])
        if i == start:
            starts[m] = i
            m += 1
            continue
        sh = U64(3 * (D - lv))
        if lv != np.int64(level_l[i - 1]) or (keys_l[i] >> sh) != (keys_l[i - 1] >> sh):
            starts[m] = i
            m += 1
    return m


def apply_level_order(order, by_level, keys, level, prefix: int, D: int, start: int, alloc=_new):
    """perm = order[by_level], keys[by_level] | prefix, level[by_level] in one pass, and the first index
    of every tile (run of equal level and tile id at that level) from `start` on."""
    n = len(by_level)
    perm = alloc("perm", n, np.int64)
    keys_l = alloc("keys_l", n, np.uint64)
    level_l = alloc("level_l", n, np.int8)
    starts = alloc("starts", max(n - start, 0) + 1, np.int64)
    m = (
        _apply_level_order(
            order,
            by_level,
            keys,
            level,
            U64(prefix),
            np.int64(D),
            np.int64(start),
            perm,
            keys_l,
            level_l,
            starts,
        )
        if n
        else 0
    )
    return perm, keys_l, level_l, starts[:m]


def level_order(level: np.ndarray, alloc=_new) -> np.ndarray:
    """`np.argsort(level, kind="stable")` for int8 levels 0..127 (a counting sort: one pass + one scatter)."""
    out = alloc("by_level", len(level), np.int64)
    if len(level):
        if int(level.min()) < 0:
            raise ValueError("level_order: negative level")
        _level_order(level, out)
    return out


def warm_all() -> None:
    """Load every kernel from numba's on-disk cache (or compile and cache it once) with the argument types
    the stages pass: strided int32 record fields, writable arrays. Worker pools call this at start, the
    benchmark before timing, so no timed run pays for compilation after the kernels' source changed."""
    from types import SimpleNamespace

    rec = np.zeros(4, dtype=[("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("c", "u1")])
    x, y, z = rec["x"], rec["y"], rec["z"]
    lat = SimpleNamespace(lo=np.zeros(3), step=np.ones(3), values=np.zeros((2, 2, 2, 3)))
    org = np.zeros(3, np.int64)
    xyz, _k, _b, *_ = lattice_to_enu_keys(x, y, z, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 1.0, lat, org, 0)
    morton_keys(xyz, org, 0)
    point_hash(xyz)
    keys, hashes = keys_and_hashes(x, y, z, org, 0)
    spill_lower_bound(x, y, z, org, 0, 0, 4, 1)
    ro = rec.copy()
    ro.setflags(write=False)  # spill files are memory-mapped read-only
    spill_lower_bound(ro["x"], ro["y"], ro["z"], org, 0, 0, 4, 1)
    sort_order(keys, 64)  # with dropped bits: the run fix-up kernel
    sort_order(keys, 2)
    select_levels(np.sort(keys), hashes, 8, 0, 2, 6, 10)
    level_order(np.zeros(4, np.int8))
    apply_level_order(np.arange(4), np.arange(4), np.zeros(4, np.uint64), np.zeros(4, np.int8), 0, 8, 0)
    take_rows(rec, np.arange(4))
    rows = rec.view(np.uint8).reshape(4, -1)
    pack_rows(np.arange(4), [(rows, np.array([[0, 0, 4]]))], np.zeros_like(rows))
    p = np.zeros((4, 40), np.uint8)
    xyz4 = np.zeros((4, 3), np.int32)
    g = np.zeros(4, np.float64)
    pack_typed(np.arange(4), xyz4, 0, [(g, 12), (rec["c"], 20), (np.zeros((4, 3), np.uint8), 21)], p)
    r16 = np.zeros(4, dtype=[("a", "<u2"), ("b", "u1")])
    pack_typed(np.arange(4), xyz4, 0, [(r16["a"], 12), (r16["b"], 14)], p)
    rgb_max(r16["a"], r16["a"], r16["a"])
    byte_histogram(r16["b"])
    byte_histogram(np.zeros(4, np.uint8))
    quantize_tiles(x, y, z, np.array([0]), np.array([4]))
    from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8

    vrec = np.zeros(4, dtype=[("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("gps_time", "<f8"), ("c", "u1")])
    for gps_dst in (-1, 8):
        tile_vertices(
            vrec,
            np.arange(4),
            np.array([0]),
            np.array([4]),
            np.array([[20, 12, 1]]),
            (20, 13),
            SRGB8_TO_LINEAR8,
            gps_dst,
            16,
            np.zeros((4, 16), np.uint8),
        )
