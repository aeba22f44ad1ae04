"""Point tiles as glTF 2.0 `POINTS` (3D Tiles 1.1 content).

- Positions: uint16 (`KHR_mesh_quantization`), dequantized by the node's translation and scale. The
  quantization step is a power of two millimetres: 1 mm for tiles up to 65.5 m, so deep tiles keep the
  exact millimetre positions; coarse tiles are snapped to their (small compared to the tile's point
  spacing) step. glTF is y-up: ENU (x, y, z) is written as (x, z, -y).
- `COLOR_0`: normalized uint8 RGB in linear space (converted from the sRGB of LAS/orthophotos).
- Per-point properties as `EXT_structural_metadata` property attributes (`_INTENSITY`, `_CLASSIFICATION`,
  ...). GPS time (float64 in LAS) is stored as FLOAT32 seconds relative to a per-tile base, which is the
  property attribute's `offset` (float64 in the JSON). Classification is UINT8 (glTF accessors have no enum
  type); the scheme's class names are in the schema's `enums` and the property description.
- No `EXT_mesh_features`: feature IDs without a property table break CesiumJS custom shaders and styles
  (it looks up `propertyTables[featureId.propertyTable]`); styles read the property attributes directly
  (`${classification}`, `${intensity}`).
- Optional `EXT_meshopt_compression` of every vertex buffer view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.point_attributes import PointAttribute, active, metadata_properties, vertex_order
from pipeline.tiles.gltf import (
    ARRAY_BUFFER,
    FLOAT,
    POINTS,
    UNSIGNED_BYTE,
    UNSIGNED_SHORT,
    GltfBuilder,
    add_property_attribute,
    glb_parts,
    set_metadata_schema,
)

CLASS_ID = "point"


# 8-bit sRGB -> 8-bit linear (glTF COLOR_0 is linear; pnts RGB stays sRGB)
_SRGB = np.arange(256) / 255.0
_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4)
SRGB8_TO_LINEAR8 = np.round(_LINEAR * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class PointSchema:
    """Which properties the tiles carry (same for every tile of a tileset)."""

    class_scheme: str
    class_enum: dict[str, Any]
    has_rgb: bool
    has_gps: bool
    has_nir: bool
    extra_dims: tuple[str, ...] = ()

    optional: tuple[str, ...] = ()  # opt-in attributes of the table (e.g. "scan_angle")

    @property
    def attributes(self) -> tuple[PointAttribute, ...]:
        return active(self.has_rgb, self.has_gps, self.has_nir, self.optional, self.extra_dims)

    def metadata_schema(self) -> dict[str, Any]:
        names = ", ".join(f"{v['value']}={v['name']}" for v in self.class_enum["values"])
        desc = f"{self.class_scheme.upper()} class code (enum 'classification'): {names}"
        return {
            "id": "ruhrtwin_points",
            "classes": {
                CLASS_ID: {"name": "Point", "properties": metadata_properties(self.attributes, desc)}
            },
            "enums": {"classification": self.class_enum},
        }


@dataclass
class QuantizedTile:
    """Quantized positions of one tile (millimetres, relative to the project ENU frame)."""

    lo: np.ndarray  # (3,) int64 mm, minimum corner of the quantization grid
    step: int  # mm, power of two
    q: np.ndarray  # (N,3) uint16
    qmin: np.ndarray  # (3,) int64, the minimum of q per axis
    qmax: np.ndarray  # (3,) int64, the maximum

    @property
    def positions_mm(self) -> np.ndarray:
        return self.lo + self.q.astype(np.int64) * self.step

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo + self.qmin * self.step, self.lo + self.qmax * self.step


def quantize(xyz_mm: np.ndarray) -> QuantizedTile:
    lo = xyz_mm.min(axis=0).astype(np.int64)
    ext = int((xyz_mm.max(axis=0).astype(np.int64) - lo).max())
    step = 1
    while ext // step > 65535:
        step *= 2
    q = ((xyz_mm.astype(np.int64) - lo) // step).astype(np.uint16)
    return QuantizedTile(lo, step, q, q.min(axis=0).astype(np.int64), q.max(axis=0).astype(np.int64))


@dataclass(frozen=True)
class VertexAttr:
    """One vertex attribute of the interleaved point vertex buffer."""

    attr: str  # glTF attribute name
    prop: str | None  # metadata property it carries (None: POSITION, COLOR_0)
    field: str  # record field it comes from ("" for POSITION)
    ctype: str  # numpy dtype of one component
    width: int  # components (1 or 3)
    offset: int  # byte offset in the vertex
    normalized: bool = False


def vertex_layout(schema: PointSchema) -> tuple[tuple[VertexAttr, ...], int]:
    """The interleaved vertex layout of a tileset's point tiles and its stride (bytes per point): POSITION,
    then the attributes in `point_attributes.vertex_order`, every one starting on a 4-byte boundary, as
    glTF requires of vertex attributes."""
    out, off = [VertexAttr("POSITION", None, "", "<u2", 3, 0)], 6
    for a in vertex_order(schema.attributes):
        off = (off + 3) // 4 * 4
        prop = a.name if a.metadata else None
        out.append(VertexAttr(a.attr, prop, a.name, a.vertex_dtype.str, a.width, off, a.normalized))
        off += a.vertex_dtype.itemsize * a.width
    return tuple(out), (off + 3) // 4 * 4


def vertex_dtype(schema: PointSchema) -> np.dtype:
    """The vertex layout as a structured dtype (fields named by their glTF attribute)."""
    layout, stride = vertex_layout(schema)
    formats = [(np.dtype(a.ctype), (a.width,)) if a.width > 1 else np.dtype(a.ctype) for a in layout]
    return np.dtype(
        {
            "names": [a.attr for a in layout],
            "formats": formats,
            "offsets": [a.offset for a in layout],
            "itemsize": stride,
        }
    )


def pack_vertices(
    qt: QuantizedTile, attrs: dict[str, np.ndarray], schema: PointSchema
) -> tuple[np.ndarray, float]:
    """The interleaved vertex bytes (n, stride) of one tile and its GPS base time (numpy version; the
    tiler uses `pipeline.stages.points.tiling.tile_vertices`, tested equal)."""
    layout, stride = vertex_layout(schema)
    n = len(qt.q)
    packed = np.zeros(n, dtype=vertex_dtype(schema))
    base = 0.0
    for a in layout:
        if a.attr == "POSITION":  # glTF y-up: (x, z, -y); -y stored as qmax_y - qy (unsigned)
            pos = np.empty((n, 3), dtype=np.uint16)
            pos[:, 0] = qt.q[:, 0]
            pos[:, 1] = qt.q[:, 2]
            pos[:, 2] = (qt.qmax[1] - qt.q[:, 1].astype(np.int64)).astype(np.uint16)
            packed[a.attr] = pos
        elif a.attr == "_GPS_TIME":
            t = np.asarray(attrs["gps_time"], dtype=np.float64)
            base = float(t.min()) if n else 0.0
            packed[a.attr] = (t - base).astype(np.float32)
        elif a.attr == "COLOR_0":
            packed[a.attr] = SRGB8_TO_LINEAR8[attrs["rgb"]]
        else:
            packed[a.attr] = np.asarray(attrs[a.field]).astype(a.ctype, copy=False)
    return packed.view(np.uint8).reshape(n, stride), base


def encode_glb(
    qt: QuantizedTile,
    attrs: dict[str, np.ndarray],
    schema: PointSchema,
    *,
    meshopt: bool = False,
) -> bytes:
    """One point tile as GLB bytes. `attrs` holds the record fields of the tile's points (same order).

    All vertex attributes are interleaved in one buffer view, each on a 4-byte boundary (36 bytes per point
    with colour and GPS time; EXT_meshopt_compression removes most of the padding).
    """
    packed, base = pack_vertices(qt, attrs, schema)
    return glb_from_vertices(packed, schema, qt.lo, qt.step, qt.qmin, qt.qmax, base, meshopt=meshopt)


def glb_from_vertices(
    packed: np.ndarray, schema: PointSchema, lo, step: int, qmin, qmax, gps_base: float, *, meshopt=False
) -> bytes:
    """The GLB of one tile from its interleaved vertex bytes `packed` (n, stride) uint8 (see
    `vertex_layout`), its quantization grid (`lo` mm, `step` mm), quantized bounds and GPS base time."""
    return b"".join(bytes(p) for p in _glb_pieces(packed, schema, lo, step, qmin, qmax, gps_base, meshopt))


def write_glb_from_vertices(
    path, packed: np.ndarray, schema: PointSchema, lo, step, qmin, qmax, gps_base, *, meshopt=False
) -> None:
    """`glb_from_vertices` written to `path` without assembling the file in memory."""
    with open(path, "wb") as f:
        for part in _glb_pieces(packed, schema, lo, step, qmin, qmax, gps_base, meshopt):
            f.write(part)


def _glb_json(n: int, schema: PointSchema, lo, step, qmin, qmax, gps_base) -> dict[str, Any]:
    """The glTF JSON of a tile of `n` points whose vertex rows are the one buffer view (at offset 0)."""
    layout, stride = vertex_layout(schema)
    b = GltfBuilder()
    b.use_extension("KHR_mesh_quantization", required=True)
    view = {"buffer": 0, "byteOffset": 0, "byteLength": n * stride, "byteStride": stride}
    b.json["bufferViews"] = [{**view, "target": ARRAY_BUFFER}]
    accs = b.json.setdefault("accessors", [])
    comp = {1: UNSIGNED_BYTE, 2: UNSIGNED_SHORT}
    for a in layout:
        cdt = np.dtype(a.ctype)
        acc: dict[str, Any] = {
            "bufferView": 0,
            "byteOffset": a.offset,
            "componentType": FLOAT if cdt == np.float32 else comp[cdt.itemsize],
            "count": int(n),
            "type": {1: "SCALAR", 3: "VEC3"}[a.width],
        }
        if a.normalized:
            acc["normalized"] = True
        if a.attr == "POSITION" and n:  # pos = (qx, qz, qmax_y - qy)
            acc["min"] = [int(qmin[0]), int(qmin[2]), 0]
            acc["max"] = [int(qmax[0]), int(qmax[2]), int(qmax[1] - qmin[1])]
        accs.append(acc)
    set_metadata_schema(b, schema.metadata_schema())
    # the metadata properties in vertex order
    pa_index = add_property_attribute(b, CLASS_ID, {a.prop: a.attr for a in layout if a.prop})
    if schema.has_gps:
        pas = b.json["extensions"]["EXT_structural_metadata"]["propertyAttributes"][pa_index]
        pas["properties"]["gps_time"]["offset"] = gps_base
    prim: dict[str, Any] = {
        "attributes": {a.attr: i for i, a in enumerate(layout)},
        "mode": POINTS,
        "extensions": {"EXT_structural_metadata": {"propertyAttributes": [pa_index]}},
    }
    s = step / 1000.0
    translation = [lo[0] / 1000.0, lo[2] / 1000.0, -(lo[1] + qmax[1] * step) / 1000.0]
    b.add_node(b.add_mesh([prim]), translation=translation, scale=[s, s, s])
    return b.json


def _meshopt_encode(rows: np.ndarray) -> np.ndarray:
    """meshopt vertex codec of the (n, stride) uint8 rows, bitstream version 0 (the one
    EXT_meshopt_compression specifies, whatever the package's default)."""
    import meshoptimizer as mo

    mo.encode_vertex_version(0)
    n, stride = rows.shape
    return np.frombuffer(mo.encode_vertex_buffer(rows, n, stride), np.uint8)


def _glb_pieces(packed: np.ndarray, schema, lo, step, qmin, qmax, gps_base, meshopt: bool) -> list[Any]:
    """The GLB as pieces (join them, or hand them to `os.writev`): header + JSON chunk, then the vertex
    rows as the BIN chunk (not copied) and its padding. With `meshopt` (and points), the rows are encoded by
    meshopt's vertex codec (bitstream version 0 and mode ATTRIBUTES, as EXT_meshopt_compression specifies):
    buffer 0 (the BIN chunk) holds the stream, the view refers to the data-less fallback buffer 1."""
    n, stride = packed.shape
    js = _glb_json(n, schema, lo, step, qmin, qmax, gps_base)
    payload = np.ascontiguousarray(packed)
    if meshopt and n:
        payload = _meshopt_encode(payload)
        ext = {"buffer": 0, "byteOffset": 0, "byteLength": len(payload), "byteStride": stride, "count": n}
        js["bufferViews"][0].update(
            buffer=1, extensions={"EXT_meshopt_compression": {**ext, "mode": "ATTRIBUTES"}}
        )
        js["extensionsUsed"].append("EXT_meshopt_compression")
        js["extensionsRequired"].append("EXT_meshopt_compression")
    js["buffers"] = [{"byteLength": payload.nbytes + (-payload.nbytes % 4)}]
    if meshopt and n:
        js["buffers"].append(
            {"byteLength": n * stride, "extensions": {"EXT_meshopt_compression": {"fallback": True}}}
        )
    return glb_parts(js, payload.reshape(-1).data)
