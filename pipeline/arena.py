"""Per-process scratch memory that tasks reuse instead of allocating fresh arrays.

Why: on virtual machines, memory the guest has not touched recently costs a page fault that the
hypervisor must back (measured 1.3-2.6 ms per MB on the benchmark VM, about 10x a warm copy), and glibc
returns large freed arrays to the kernel at once. A worker that decodes 20 units of 0.5 M points would
fault ~40 MB per task; with the arena it faults them once.

How: buffers are carved from a few large blocks ("chunks") by a bump pointer and stay assigned to their
name from task to task. A worker that moves to another stage `retire`s the names of the stage it leaves;
once no name is left, every chunk is free again and the new stage's buffers are carved from the same,
already-touched memory (decoding a 0.5 M point unit and binning 0.8 M points need ~60 and ~110 MB: a
worker's first bin used to fault all of its 110 MB, +0.15 s). Chunks are only freed by `release()`.

Rules: a buffer is only valid inside the task that asked for it (never return a view of it), names are
namespaced per stage ("dec.*", "bin.*"). Results never depend on the arena: buffers are fully written
before they are read (or explicitly zeroed).
"""

from __future__ import annotations

import numpy as np

HEADROOM = 1.125  # grow a little more than asked: unit and bin sizes vary by a few percent
CHUNK = 64 * 2**20  # smallest block taken from the system
_ALIGN = 64

_CHUNKS: list[np.ndarray] = []  # uint8 blocks of touched memory
_TOP: list[int] = []  # bump pointer per chunk
_SLOTS: dict[str, tuple[int, int, int]] = {}  # name -> (chunk, offset, capacity)


def _carve(cap: int) -> tuple[int, int, int]:
    for i, chunk in enumerate(_CHUNKS):
        if _TOP[i] + cap <= chunk.nbytes:
            off = _TOP[i]
            _TOP[i] += cap
            return i, off, cap
    _new_chunk(max(cap, CHUNK))
    _TOP[-1] = cap
    return len(_CHUNKS) - 1, 0, cap


def _new_chunk(nbytes: int) -> None:
    _CHUNKS.append(np.empty(nbytes, dtype=np.uint8))
    _TOP.append(0)


def scratch(name: str, shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape`/`dtype` backed by the process's buffer `name`."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    count = 1
    for s in shape:
        count *= int(s)
    nbytes = count * dtype.itemsize
    slot = _SLOTS.get(name)
    if slot is None or slot[2] < nbytes:  # (a grown name leaves its old space unused until a reset)
        cap = -(-max(int(nbytes * HEADROOM), _ALIGN) // _ALIGN) * _ALIGN
        slot = _SLOTS[name] = _carve(cap)
    chunk, off, _cap = slot
    return _CHUNKS[chunk][off : off + nbytes].view(dtype).reshape(shape)


def retire(prefix: str) -> None:
    """The names starting with `prefix` give their space back; with no name left, all of it is free."""
    for name in [n for n in _SLOTS if n.startswith(prefix)]:
        del _SLOTS[name]
    if not _SLOTS:
        _TOP[:] = [0] * len(_TOP)


def release(prefix: str = "") -> None:
    """`retire(prefix)`; with "" the memory itself is freed (a layer is done on a long-lived worker)."""
    retire(prefix)
    if not prefix:
        _CHUNKS.clear()
        _TOP.clear()


def held_bytes() -> int:
    return sum(c.nbytes for c in _CHUNKS)
