"""A failure while a unit's records are packed into the spill file's mapping reaches the caller as itself,
also when it carries chained exceptions (`raise ... from e`) whose frames viewed the mapping; before, the
mapping's close raised `BufferError: cannot close exported pointers exist` instead."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.points import decode, kernels


class _ChainingKernels:
    @staticmethod
    def pack_records(order, xyz, cols, dst):
        def inner(view):
            raise ValueError(f"inner failure on {len(view)} rows")

        try:
            inner(dst)
        except ValueError as e:
            raise RuntimeError("packing failed") from e

    @staticmethod
    def pack_records_plain(order, xyz, cols, dst):
        raise ValueError("plain failure")


@pytest.mark.parametrize("kernel", ["pack_records", "pack_records_plain"])
def test_packing_failure_with_chained_exceptions_surfaces_as_itself(tmp_path, monkeypatch, kernel):
    monkeypatch.setattr(kernels, "pack_records", getattr(_ChainingKernels, kernel))
    dtype = np.dtype([("x", "<i4"), ("y", "<i4"), ("z", "<i4")])
    n = 10
    path = tmp_path / "u.rec"
    path.write_bytes(bytes(n * dtype.itemsize))
    with open(path, "r+b") as f, pytest.raises((RuntimeError, ValueError)) as info:
        decode._pack_spill(f.fileno(), n, dtype, np.arange(n), np.zeros((n, 3)), {})
    assert not isinstance(info.value, BufferError)
    if kernel == "pack_records":
        assert str(info.value) == "packing failed" and isinstance(info.value.__cause__, ValueError)
        assert info.value.__cause__.__traceback__ is not None  # the traceback is kept, only locals go
    else:
        assert str(info.value) == "plain failure"


def test_a_view_held_after_packing_does_not_fail_the_unit(tmp_path, monkeypatch):
    """Dask's worker profiler samples the workers' frames: one may still hold the packing frame, and with it
    a view of the mapping, when packing returns (CI saw `BufferError` from the mapping's close then)."""
    held = []
    real = kernels.pack_records

    def pack_and_keep_a_view(order, xyz, cols, dst):
        real(order, xyz, cols, dst)
        held.append(dst[:1])  # what a sampled frame's locals keep alive

    monkeypatch.setattr(kernels, "pack_records", pack_and_keep_a_view)
    dtype = np.dtype([("x", "<i4"), ("y", "<i4"), ("z", "<i4")])
    n = 10
    xyz = np.arange(3 * n, dtype=np.int32).reshape(n, 3)
    path = tmp_path / "u.rec"
    path.write_bytes(bytes(n * dtype.itemsize))
    with open(path, "r+b") as f:
        decode._pack_spill(f.fileno(), n, dtype, np.arange(n)[::-1], xyz, {})
    rec = np.fromfile(path, dtype=dtype)
    assert held and rec["x"].tolist() == xyz[::-1, 0].tolist() and rec["z"].tolist() == xyz[::-1, 2].tolist()
