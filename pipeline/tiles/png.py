"""PNG writer for image tiles: 8-bit RGB or RGBA, one IDAT, no metadata (deterministic bytes).

Every row uses PNG filter 1 ("Sub": each byte minus the same channel of the pixel to its left), computed
with numpy; the filtered rows are compressed by zlib at a low level. On orthophoto tiles this is about as
small as Pillow's adaptive filtering at zlib level 6 and several times faster. Readable by every PNG
decoder (Pillow, GDAL, browsers).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """(H, W, 3) or (H, W, 4) uint8 -> PNG bytes (colour type 2 or 6, bit depth 8, no interlace)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected (H, W, 3|4) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    h, w, c = pixels.shape
    raw = np.ascontiguousarray(pixels).reshape(h, w * c)
    rows = np.empty((h, w * c + 1), dtype=np.uint8)
    rows[:, 0] = 1  # filter type Sub
    rows[:, 1 : c + 1] = raw[:, :c]
    np.subtract(raw[:, c:], raw[:, :-c], out=rows[:, c + 1 :])  # uint8 wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 6, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + _chunk(b"IEND", b"")
    )
