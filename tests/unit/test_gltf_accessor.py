"""`tiles.gltf.accessor_array` (the reader the tests and the release validator use) on interleaved views."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tiles.gltf import FLOAT, UNSIGNED_BYTE, accessor_array


def _interleaved(n: int) -> tuple[dict, bytes, np.ndarray, np.ndarray]:
    pos = np.arange(n * 3, dtype=np.float32).reshape(n, 3) * 1.5
    rgba = (np.arange(n * 4, dtype=np.uint8).reshape(n, 4) * 7).astype(np.uint8)
    rec = np.zeros(n, dtype=[("p", "<f4", 3), ("c", "u1", 4)])
    rec["p"], rec["c"] = pos, rgba
    binary = rec.tobytes()  # exactly n * 16 bytes: nothing after the last colour
    js = {
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(binary), "byteStride": 16}],
        "accessors": [
            {"bufferView": 0, "byteOffset": 0, "componentType": FLOAT, "count": n, "type": "VEC3"},
            {"bufferView": 0, "byteOffset": 12, "componentType": UNSIGNED_BYTE, "count": n, "type": "VEC4"},
        ],
    }
    return js, binary, pos, rgba


@pytest.mark.parametrize("n", [1, 2, 5])
def test_interleaved_attribute_at_an_offset_reads_within_its_view(n: int) -> None:
    js, binary, pos, rgba = _interleaved(n)
    np.testing.assert_array_equal(accessor_array(js, binary, 0), pos)
    np.testing.assert_array_equal(accessor_array(js, binary, 1), rgba)


def test_accessor_longer_than_its_view_is_an_error() -> None:
    js, binary, _pos, _rgba = _interleaved(3)
    js["accessors"][1]["count"] = 4
    with pytest.raises(ValueError, match="past the end of buffer view 0"):
        accessor_array(js, binary, 1)
