"""Point kernels: Morton (z-order) keys, the 64-bit point hash (sampling priority and checksums), binary
search in a spill file, and the sort order of keys (numba, each with a numpy reference or a tested twin)."""

from __future__ import annotations

import numba as nb
import numpy as np

U64 = np.uint64


# ---- Morton keys and hashes ---------------------------------------------------------------------------


# bits of an 11-bit value spread to every third bit (16 KB: stays in L1)
_V11 = np.arange(1 << 11, dtype=np.uint64)
_SPREAD11 = np.bitwise_or.reduce([((_V11 >> U64(b)) & U64(1)) << U64(3 * b) for b in range(11)])


@nb.njit(cache=True, inline="always")
def _part1by2(v):
    """Bits 0..20 of v spread to bits 0, 3, 6, ... (two table lookups)."""
    v = v & U64(0x1FFFFF)
    return _SPREAD11[v & U64(0x7FF)] | (_SPREAD11[v >> U64(11)] << U64(33))


@nb.njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


@nb.njit(cache=True, inline="always")
def _morton(a, b, c):
    """The Morton key of cell coordinates a, b, c (each < 2^21)."""
    return _part1by2(U64(a)) | (_part1by2(U64(b)) << U64(1)) | (_part1by2(U64(c)) << U64(2))


@nb.njit(cache=True, inline="always")
def _hash3(x, y, z):
    """The 64-bit hash of a millimetre position (splitmix64 over its int32 coordinates)."""
    h = _mix64(U64(np.uint32(x)) + U64(0x9E3779B97F4A7C15))
    h = _mix64(h ^ U64(np.uint32(y)))
    return _mix64(h ^ U64(np.uint32(z)))


@nb.njit(cache=True, nogil=True)
def _keys_hashes_kernel(x, y, z, origin, shift, keys, hashes):
    for i in range(x.shape[0]):
        a, b, c = np.int64(x[i]), np.int64(y[i]), np.int64(z[i])
        keys[i] = _morton((a - origin[0]) >> shift, (b - origin[1]) >> shift, (c - origin[2]) >> shift)
        hashes[i] = _hash3(a, b, c)


def keys_and_hashes(x, y, z, origin_mm, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Morton keys of `(xyz - origin) >> shift` (each coordinate must fit in 21 bits after the shift) and the
    64-bit hash of each millimetre position, of int32 coordinate columns (strided record fields allowed),
    in one pass."""
    n = len(x)
    keys = np.empty(n, dtype=np.uint64)
    hashes = np.empty(n, dtype=np.uint64)
    _keys_hashes_kernel(x, y, z, np.asarray(origin_mm, np.int64), np.int64(shift), keys, hashes)
    return keys, hashes


@nb.njit(cache=True, nogil=True)
def _lower_bound(x, y, z, origin, shift, lo, hi, target):
    while lo < hi:
        mid = (lo + hi) >> 1
        a, b, c = np.int64(x[mid]) - origin[0], np.int64(y[mid]) - origin[1], np.int64(z[mid]) - origin[2]
        if _morton(a >> shift, b >> shift, c >> shift) < target:
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


def sort_order(keys: np.ndarray, valid_bits: int = 64) -> np.ndarray:
    """Stable argsort of uint64 keys using only `np.sort` on packed (key, index) words.

    Keys are packed with their index; if key bits + index bits exceed 64 the lowest key bits are dropped
    for the packed sort and the (short) runs of equal truncated keys are finished by insertion sort. Equal
    to `np.argsort(keys, kind="stable")` (tested)."""
    n = len(keys)
    idx_bits = max(int(n - 1).bit_length(), 1)
    drop = max(valid_bits + idx_bits - 64, 0)
    packed = keys >> U64(drop)
    packed <<= U64(idx_bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = packed.view(np.int64) & ((1 << idx_bits) - 1)
    if drop:  # the packed words are not needed any more: their key part in place
        _fix_runs(np.right_shift(packed, np.uint64(idx_bits), out=packed), keys, order)
    return order
