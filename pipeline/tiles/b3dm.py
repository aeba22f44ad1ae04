"""Batched 3D Model (b3dm) for the 3D Tiles 1.0 profile: header, feature table, batch table, GLB.

The batch table is JSON (one array per attribute, NaN -> null); every section is padded so the next one
starts on an 8-byte boundary, as the 1.0 specification requires.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

HEADER = 28


def _json_padded(obj: Any, offset: int) -> bytes:
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    pad = (8 - (offset + len(raw)) % 8) % 8
    return raw + b" " * pad


def _jsonable(values: Any) -> list:
    if isinstance(values, list):
        return [None if v is None else str(v) for v in values]
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if not math.isfinite(v) else float(v) for v in arr.tolist()]
    if arr.dtype.kind == "b":
        return [bool(v) for v in arr.tolist()]
    if arr.dtype.kind in "iu":
        return [int(v) for v in arr.tolist()]
    return [None if v is None else str(v) for v in arr.tolist()]


def b3dm_bytes(glb: bytes, batch_table: dict[str, Any], batch_length: int) -> bytes:
    ft = _json_padded({"BATCH_LENGTH": int(batch_length)}, HEADER)
    bt = _json_padded({k: _jsonable(v) for k, v in batch_table.items()}, HEADER + len(ft))
    body = ft + bt
    glb_padded = glb + b"\x00" * ((8 - len(glb) % 8) % 8)
    total = HEADER + len(body) + len(glb_padded)
    header = struct.pack("<4sIIIIII", b"b3dm", 1, total, len(ft), 0, len(bt), 0)
    return header + body + glb_padded


def read_b3dm(data: bytes) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """(feature table JSON, batch table JSON, GLB) of a b3dm (tests)."""
    magic, version, total, ftj, ftb, btj, btb = struct.unpack_from("<4sIIIIII", data, 0)
    if magic != b"b3dm" or version != 1 or total != len(data):
        raise ValueError("not a b3dm 1 file")
    off = HEADER
    ft = json.loads(data[off : off + ftj])
    off += ftj + ftb
    bt = json.loads(data[off : off + btj]) if btj else {}
    off += btj + btb
    glb = data[off:]
    glb = glb[: struct.unpack_from("<I", glb, 8)[0]]
    return ft, bt, glb
