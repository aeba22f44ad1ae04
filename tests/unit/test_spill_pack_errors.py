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
