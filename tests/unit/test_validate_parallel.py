"""The glTF validator runs in several node processes at once: the reports are those of one process, in the
order of the files (a broken file among valid ones is reported at its place)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tiles.overlay_glb import feature_mesh_glb
from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

pytestmark = pytest.mark.skipif(not validator_available(), reason="node + gltf-validator not installed")


def _glb(k: int) -> bytes:
    pos = np.array([[0, 0, 0], [1 + k, 0, 0], [0, 1, 0]], dtype=np.float64)
    nrm = np.tile([0.0, 0.0, 1.0], (3, 1))
    return feature_mesh_glb(
        pos,
        nrm,
        np.array([[0, 1, 2]]),
        np.zeros(3, dtype=np.int64),
        np.full((3, 4), 200, dtype=np.uint8),
        class_id="parcel",
        columns={"key": [f"p{k}"]},
    )


def test_parallel_reports_equal_one_process(tmp_path):
    paths = []
    for k in range(7):
        p = tmp_path / f"t{k}.glb"
        p.write_bytes(_glb(k) if k != 4 else b"glTF" + b"\x00" * 20)
        paths.append(p)
    one = validate_glb_files(paths, batch=200, jobs=1)
    many = validate_glb_files(paths, batch=2, jobs=3)
    assert many == one
    assert [r["file"].rsplit("/", 1)[-1] for r in many] == [p.name for p in paths]
    assert [bool(r["errors"]) for r in many] == [k == 4 for k in range(7)]
