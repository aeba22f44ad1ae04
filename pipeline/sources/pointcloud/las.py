"""Decode one work unit of a LAS/LAZ/COPC file: read its byte range, decompress its chunks, unpack fields.

LAZ chunks are decompressed by lazrs' sequential decoder from an in-memory copy of the unit's byte range
(one chunk table, one read): never the rayon-parallel backend, so a process that forks afterwards is safe,
and one Dask worker uses exactly one core.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np

from pipeline.errors import InputError
from pipeline.point_attributes import ATTRIBUTES, EXTRA_NO_DATA
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit


class BitField(NamedTuple):
    """A column computed on the fly as (src >> shift) & mask (src: a uint8 view of the raw records): the
    spill packer extracts return numbers and pre-1.4 classes while it writes, no array in between."""

    src: np.ndarray
    shift: int
    mask: int

    def values(self) -> np.ndarray:
        return ((self.src >> np.uint8(self.shift)) & np.uint8(self.mask)).astype(np.uint8)


class Rgb16(NamedTuple):
    """8-bit sRGB colour computed on the fly from LAS 16-bit channels: channel >> shift (see
    `pipeline.stages.points.colour.srgb8_shift`)."""

    red: np.ndarray
    green: np.ndarray
    blue: np.ndarray
    shift: int

    def values(self) -> np.ndarray:
        rgb = np.stack([self.red, self.green, self.blue], axis=1)
        return (rgb >> self.shift).astype(np.uint8)


# a decoded column: an array, or one the spill packer computes as it writes (`materialize` computes it)
Column = np.ndarray | BitField | Rgb16


def materialize(col: Column) -> np.ndarray:
    """A plain array for a column (lazy BitField / Rgb16 columns are computed)."""
    return col.values() if isinstance(col, (BitField, Rgb16)) else col


def decode_raw(
    info: PointFileInfo,
    unit: WorkUnit,
    extra_dims: tuple[str, ...] = (),
    layers: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Raw point records (laspy dtype) of a unit, in a new array. `layers`: in LAZ formats 6-10,
    decompress only XY/returns, Z and these lazrs layers (the other fields hold garbage)."""
    dtype = info.record_dtype
    assert dtype is not None, "LAS/LAZ infos carry their record dtype"
    if info.kind == "las":
        # read straight into a writable array (the kernels then see the same array types as for LAZ)
        arr = np.fromfile(info.path, dtype, unit.count, offset=unit.byte_start)
        if len(arr) != unit.count:
            raise InputError("file is truncated (point records end early)", path=info.path)
        return arr
    import lazrs

    # A self-contained LAZ "stream" of this unit: [offset of chunk table][chunks][chunk table], read into one
    # buffer (no copies of the compressed bytes) and decompressed sequentially.
    buf = io.BytesIO()  # the unit's chunk table, encoded as LASzip stores it
    lazrs.write_chunk_table(buf, list(unit.chunks), lazrs.LazVlr(info.laszip_vlr))
    table = buf.getvalue()
    stream = np.empty(8 + unit.byte_len + len(table), np.uint8)
    stream[:8].view("<i8")[0] = 8 + unit.byte_len
    with info.path.open("rb", buffering=0) as f:
        f.seek(unit.byte_start)
        got = f.readinto(stream.data[8 : 8 + unit.byte_len])
    if got != unit.byte_len:
        raise InputError("LAZ file is truncated (chunk bytes end early)", path=info.path)
    stream[8 + unit.byte_len :] = np.frombuffer(table, np.uint8)
    dest = np.empty(unit.count * dtype.itemsize, dtype=np.uint8)
    try:
        if info.point_format >= 6 and ((info.extra_dims and not extra_dims) or layers is not None):
            # layered formats: layers nobody asked for are not even decompressed: XY, returns and Z, then
            # `layers` (None: every layer an attribute of the table is read from), the extra bytes if asked
            sel = lazrs.SELECTIVE_DECOMPRESS_XY_RETURNS_CHANNEL | lazrs.SELECTIVE_DECOMPRESS_Z
            for layer in layers if layers is not None else (a.las_layer for a in ATTRIBUTES if a.las_layer):
                sel |= getattr(lazrs, f"SELECTIVE_DECOMPRESS_{layer}")
            if extra_dims:
                sel |= lazrs.SELECTIVE_DECOMPRESS_ALL_EXTRA_BYTES
            selection = lazrs.DecompressionSelection(sel)
            lazrs.LasZipDecompressor(io.BytesIO(stream.data), info.laszip_vlr, selection).decompress_many(
                dest
            )
        else:  # every field (skipping the few unused ones of formats 6-10 measured no faster)
            lazrs.decompress_points(stream.data, info.laszip_vlr, dest, False)
    except Exception as e:
        raise InputError(
            f"corrupt LAZ data in points {unit.start}..{unit.start + unit.count - 1}: {e}", path=info.path
        ) from e
    return dest.view(dtype)


def decode_unit(
    info: PointFileInfo,
    unit: WorkUnit,
    extra_dims: tuple[str, ...] = (),
    layers: tuple[str, ...] | None = None,
) -> dict[str, Column]:
    """Fields of a unit: raw integer X/Y/Z plus attributes (LAS semantics), as views/arrays. Most are
    views of the raw records (`"_raw"`: the record array itself); return numbers and pre-1.4 classes are
    `BitField`s, computed only by whoever needs them (`materialize`, the spill packer). `layers`: see
    `decode_raw` (fields outside them are garbage in formats 6-10)."""
    raw = decode_raw(info, unit, extra_dims, layers)
    bits, v14 = raw["bit_fields"], info.point_format >= 6  # formats 6-10: 4-bit returns, a class byte
    cols: dict[str, Column] = {
        "_raw": raw,
        "X": raw["X"],
        "Y": raw["Y"],
        "Z": raw["Z"],
        "intensity": raw["intensity"],
        "classification": raw["classification"] if v14 else BitField(raw["raw_classification"], 0, 0x1F),
        "return_number": BitField(bits, 0, 0x0F) if v14 else BitField(bits, 0, 0x07),
        "number_of_returns": BitField(bits, 4, 0x0F) if v14 else BitField(bits, 3, 0x07),
        "point_source_id": raw["point_source_id"],
    }
    # the optional standard fields the point format has (`has_gps`, `has_rgb`, `has_nir`)
    cols |= {f: raw[f] for f in ("gps_time", "red", "green", "blue", "nir") if f in (raw.dtype.names or ())}
    nodata, scaled = dict(info.extra_nodata), {n: (s, o) for n, s, o in info.extra_scales}
    for name in extra_dims:
        if name in info.extra_dims:
            r = np.asarray(raw[name])
            r = r[:, 0] if r.ndim > 1 else r  # an array dimension: its first element
            v64 = r.astype(np.float64)
            if name in scaled:  # as laspy scales it: value * scale + offset
                v64 = v64 * scaled[name][0] + scaled[name][1]
            bad = ~np.isfinite(v64) | (np.abs(v64) > np.finfo(np.float32).max)
            if name in nodata:  # the file's no-data value (raw, before scale/offset)
                bad |= r == nodata[name]
            cols["x_" + name] = np.where(bad, EXTRA_NO_DATA, v64).astype(np.float32)
    return cols
