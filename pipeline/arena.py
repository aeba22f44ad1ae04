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

Each thread has an arena of its own (a Dask worker may run several tasks at once in threads: one shared
arena would hand two of them the same buffer).

Rules: a buffer is only valid inside the task that asked for it (never return a view of it), names are
namespaced per stage ("dec.*", "bin.*"). Results never depend on the arena: buffers are fully written
before they are read (or explicitly zeroed).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

HEADROOM = 1.125  # grow a little more than asked: unit and bin sizes vary by a few percent
CHUNK = 64 * 2**20  # smallest block taken from the system
_ALIGN = 64


@dataclass(eq=False)
class _Arena:
    chunks: list[np.ndarray] = field(default_factory=list)  # uint8 blocks of touched memory
    top: list[int] = field(default_factory=list)  # bump pointer per chunk
    slots: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (chunk, offset, capacity)

    def carve(self, cap: int) -> tuple[int, int, int]:
        for i, chunk in enumerate(self.chunks):
            if self.top[i] + cap <= chunk.nbytes:
                off = self.top[i]
                self.top[i] += cap
                return i, off, cap
        self.chunks.append(np.empty(max(cap, CHUNK), dtype=np.uint8))
        self.top.append(cap)
        return len(self.chunks) - 1, 0, cap


_LOCAL = threading.local()
_ALL: weakref.WeakSet[_Arena] = weakref.WeakSet()  # every live thread's arena, for release()
_LOCK = threading.Lock()


def _arena() -> _Arena:
    a: _Arena | None = getattr(_LOCAL, "arena", None)
    if a is None:
        a = _LOCAL.arena = _Arena()
        with _LOCK:
            _ALL.add(a)
    return a


def scratch(name: str, shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape`/`dtype` backed by the process's buffer `name`."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    count = 1
    for s in shape:
        count *= int(s)
    nbytes = count * dtype.itemsize
    a = _arena()
    slot = a.slots.get(name)
    if slot is None or slot[2] < nbytes:  # (a grown name leaves its old space unused until a reset)
        cap = -(-max(int(nbytes * HEADROOM), _ALIGN) // _ALIGN) * _ALIGN
        slot = a.slots[name] = a.carve(cap)
    chunk, off, _cap = slot
    return a.chunks[chunk][off : off + nbytes].view(dtype).reshape(shape)


def retire(prefix: str) -> None:
    """The names starting with `prefix` give their space back; with no name left, all of it is free."""
    a = _arena()
    for name in [n for n in a.slots if n.startswith(prefix)]:
        del a.slots[name]
    if not a.slots:
        a.top[:] = [0] * len(a.top)


def release(prefix: str = "") -> None:
    """`retire(prefix)`; with "" the memory of every thread's arena is freed (a layer is done on a
    long-lived worker: no task of it runs any more)."""
    retire(prefix)
    if not prefix:
        with _LOCK:
            arenas = list(_ALL)
        for a in arenas:
            a.slots.clear()
            a.chunks.clear()
            a.top.clear()


def held_bytes() -> int:
    with _LOCK:
        arenas = list(_ALL)
    return sum(c.nbytes for a in arenas for c in a.chunks)
