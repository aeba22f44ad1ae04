"""Point tiles as `.pnts` (3D Tiles 1.0 profile, for QGIS and older clients).

Feature table: POINTS_LENGTH, RTC_CENTER (the tile's minimum corner) and POSITION as float32 metres relative
to it (the tile's quantized millimetre positions, recovered exactly by rounding; POSITION_QUANTIZED would
halve the size but py3dtiles 12 cannot read it), RGB (sRGB uint8, as pnts prescribes). Batch table (binary):
the metadata attributes of `pipeline.point_attributes` in table order with their spill types (intensity,
classification, return_number, number_of_returns, point_source_id, gps_time as DOUBLE, nir, opt-in
attributes, extra dimensions). Positions are in the tile frame (ENU, z-up); the root tile carries the ENU->ECEF
transform like the 1.1 tilesets.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from pipeline.tiles.b3dm import HEADER, _json_padded
from pipeline.tiles.points_glb import PointSchema


def _component(dt: np.dtype) -> str:
    """The batch table componentType of a numpy dtype (INT, UNSIGNED_SHORT, DOUBLE, ...)."""
    if dt.kind == "f":
        return {4: "FLOAT", 8: "DOUBLE"}[dt.itemsize]
    return ("UNSIGNED_" if dt.kind == "u" else "") + {1: "BYTE", 2: "SHORT", 4: "INT"}[dt.itemsize]


def _bin_chunk(parts: dict[str, np.ndarray]) -> tuple[bytes, dict[str, int]]:
    """The parts one after the other, each (and the end) padded to 8 bytes, and their offsets by name."""
    out, offsets = bytearray(), {}
    for name, p in parts.items():
        out += bytes(-len(out) % 8)
        offsets[name] = len(out)
        out += np.ascontiguousarray(p).tobytes()
    return bytes(out + bytes(-len(out) % 8)), offsets


def encode_pnts(lo, step: int, q: np.ndarray, rows: np.ndarray, schema: PointSchema) -> bytes:
    """One pnts tile: `q` (n, 3) uint16 positions on the grid of `step` mm from `lo` (mm, the RTC centre),
    `rows` the records of its points (same order; fields of `schema`'s attributes)."""
    rel = (q.astype(np.int64) * step).astype(np.float64) / 1000.0
    ft_parts = {"POSITION": rel.astype(np.float32)}
    if "rgb" in (rows.dtype.names or ()):
        ft_parts["RGB"] = rows["rgb"].astype(np.uint8)
    ft_bin, ft_off = _bin_chunk(ft_parts)
    ft: dict[str, Any] = {
        "POINTS_LENGTH": len(q),
        "RTC_CENTER": [float(v) / 1000.0 for v in lo],
        **{name: {"byteOffset": off} for name, off in ft_off.items()},
    }
    # the batch table: every metadata attribute of the table, in table order, as stored in the spill
    cols = {
        a.name: np.asarray(rows[a.name]).astype(a.spill, copy=False) for a in schema.attributes if a.metadata
    }
    bt_bin, bt_off = _bin_chunk(cols)
    bt = {
        name: {"byteOffset": off, "componentType": _component(cols[name].dtype), "type": "SCALAR"}
        for name, off in bt_off.items()
    }
    ft_json = _json_padded(ft, HEADER)
    bt_json = _json_padded(bt, HEADER + len(ft_json) + len(ft_bin))
    total = HEADER + len(ft_json) + len(ft_bin) + len(bt_json) + len(bt_bin)
    header = struct.pack("<4sIIIIII", b"pnts", 1, total, len(ft_json), len(ft_bin), len(bt_json), len(bt_bin))
    return header + ft_json + ft_bin + bt_json + bt_bin


def decode_pnts_positions_mm(data: bytes) -> np.ndarray:
    """Millimetre positions of a pnts written by `encode_pnts` (validation / invariants)."""
    (ftj,) = struct.unpack_from("<I", data, 12)
    ft = json.loads(data[HEADER : HEADER + ftj])
    n = ft["POINTS_LENGTH"]
    off = HEADER + ftj + ft["POSITION"]["byteOffset"]
    rel = np.frombuffer(data, dtype=np.float32, count=3 * n, offset=off).reshape(n, 3).astype(np.float64)
    lo = np.round(np.array(ft["RTC_CENTER"]) * 1000.0).astype(np.int64)
    return lo + np.round(rel * 1000.0).astype(np.int64)
