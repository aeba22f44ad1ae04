"""Per-process scratch buffers that tasks reuse instead of allocating fresh arrays.

Why: on virtual machines, memory the guest has not touched recently costs a page fault that the
hypervisor must back (measured 1.5-2.6 ms per MB on the benchmark VM, about 10x a warm copy), and glibc
returns large freed arrays to the kernel at once. A worker that decodes 20 units of 0.5 M points would
fault ~40 MB per task; with the arena it faults them once.

Rules: a buffer is only valid inside the task that asked for it (never return a view of it), names are
namespaced per stage ("dec.*", "bin.*"). A worker switching stages `retire`s the buffers of the stage it
leaves: they stay allocated in a pool and the next stage's buffers are carved from them (best fit) before
any fresh memory is taken (the first bin of a worker faulted ~19 MB fresh, +0.1 s, before this).
`release(prefix)` really frees (all of it, pool included, with ""). Results never depend on the arena:
buffers are fully written before they are read (or explicitly zeroed).
"""

from __future__ import annotations

import numpy as np

_BUFS: dict[str, np.ndarray] = {}
_POOL: list[np.ndarray] = []  # retired buffers, any name may take one over
HEADROOM = 1.125  # grow a little more than asked: unit and bin sizes vary by a few percent


def scratch(name: str, shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape`/`dtype` backed by the process's buffer `name`."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    count = 1
    for s in shape:
        count *= int(s)
    nbytes = count * dtype.itemsize
    buf = _BUFS.get(name)
    if buf is None or buf.nbytes < nbytes:
        _BUFS.pop(name, None)  # drop the old one first: never hold both
        fits = [i for i, b in enumerate(_POOL) if b.nbytes >= nbytes]
        if fits:  # the smallest retired buffer that fits (already-touched memory)
            buf = _POOL.pop(min(fits, key=lambda i: _POOL[i].nbytes))
        else:
            buf = np.empty(max(int(nbytes * HEADROOM), 64), dtype=np.uint8)
        _BUFS[name] = buf
    return buf[:nbytes].view(dtype).reshape(shape)


def retire(prefix: str) -> None:
    """The buffers whose names start with `prefix` go to the pool (kept, for other names to reuse)."""
    for name in [n for n in _BUFS if n.startswith(prefix)]:
        _POOL.append(_BUFS.pop(name))


def release(prefix: str = "") -> None:
    """Free the buffers whose names start with `prefix` (all of them and the pool with "")."""
    for name in [n for n in _BUFS if n.startswith(prefix)]:
        del _BUFS[name]
    if not prefix:
        _POOL.clear()


def held_bytes() -> int:
    return sum(b.nbytes for b in _BUFS.values()) + sum(b.nbytes for b in _POOL)
