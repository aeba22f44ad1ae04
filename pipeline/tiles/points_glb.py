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

from pipeline.point_attributes import PointAttribute, metadata_properties, vertex_order
from pipeline.tiles.gltf import _COMPONENT, ARRAY_BUFFER, POINTS, glb_parts

CLASS_ID = "point"
MESHOPT = "EXT_meshopt_compression"


# 8-bit sRGB -> 8-bit linear (glTF COLOR_0 is linear; pnts RGB stays sRGB)
_SRGB = np.arange(256) / 255.0
_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4)
SRGB8_TO_LINEAR8 = np.round(_LINEAR * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class PointSchema:
    """What every tile of a tileset carries: its attributes (`point_attributes.active`) and class scheme."""

    attributes: tuple[PointAttribute, ...]
    class_scheme: str
    class_enum: dict[str, Any]

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


def vertex_dtype(attrs: tuple[PointAttribute, ...]) -> np.dtype:
    """The interleaved vertex of a tileset's point tiles, fields named by their glTF attribute: POSITION
    (3 x uint16), then the attributes in `point_attributes.vertex_order`, every one starting on a 4-byte
    boundary, as glTF requires of vertex attributes; the stride (itemsize) is a multiple of 4 too."""
    names, formats, offsets, off = ["POSITION"], [np.dtype(("<u2", 3))], [0], 6
    for a in vertex_order(attrs):
        off = (off + 3) // 4 * 4
        names.append(a.attr)
        formats.append(np.dtype((a.vertex_dtype, a.width)) if a.width > 1 else a.vertex_dtype)
        offsets.append(off)
        off += a.vertex_dtype.itemsize * a.width
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": (off + 3) // 4 * 4})


def glb_pieces(packed: np.ndarray, schema: PointSchema, lo, step, qmax, gps_base, *, meshopt=False):
    """The GLB of one tile from its interleaved vertex bytes `packed` (n, stride) uint8 (see `vertex_dtype`),
    its quantization grid (`lo` mm, `step` mm), quantized maximum (the minimum is 0) and GPS base time, as
    pieces (join them, or write one after the other): header + JSON chunk, then the vertex rows as the BIN
    chunk (not copied) and its padding. With `meshopt` (and points), the rows are encoded by meshopt's vertex
    codec (bitstream version 0 and mode ATTRIBUTES, as EXT_meshopt_compression specifies): buffer 0 (the BIN
    chunk) holds the stream, the view refers to the data-less fallback buffer 1."""
    n, stride = packed.shape
    order = vertex_order(schema.attributes)
    fields = dict(vertex_dtype(schema.attributes).fields or {})  # glTF attribute -> (dtype, offset)
    payload = np.ascontiguousarray(packed)
    view = dict(buffer=0, byteOffset=0, byteLength=n * stride, byteStride=stride, target=ARRAY_BUFFER)
    used, required = ["KHR_mesh_quantization", "EXT_structural_metadata"], ["KHR_mesh_quantization"]
    fallback: list[dict[str, Any]] = []
    if meshopt and n:
        from pipeline.tiles.gltf import meshopt_vertices

        payload = meshopt_vertices(payload)
        ext = {"buffer": 0, "byteOffset": 0, "byteLength": len(payload), "byteStride": stride, "count": n}
        view.update(buffer=1, extensions={MESHOPT: {**ext, "mode": "ATTRIBUTES"}})
        used.append(MESHOPT)
        required.append(MESHOPT)
        fallback = [{"byteLength": n * stride, "extensions": {MESHOPT: {"fallback": True}}}]
    accessors = []
    for name, a in zip(fields, (None, *order), strict=True):  # POSITION, then the attributes
        ftype, offset = fields[name][:2]
        acc: dict[str, Any] = {
            "bufferView": 0,
            "byteOffset": offset,
            "componentType": _COMPONENT[ftype.base],
            "count": int(n),
            "type": "VEC3" if ftype.shape else "SCALAR",
        }
        if a is not None and a.normalized:
            acc["normalized"] = True
        if a is None and n:  # pos = (qx, qz, qmax_y - qy)
            acc["min"] = [0, 0, 0]
            acc["max"] = [int(qmax[0]), int(qmax[2]), int(qmax[1])]
        accessors.append(acc)
    props: dict[str, dict[str, Any]] = {a.name: {"attribute": a.attr} for a in order if a.metadata}
    if "gps_time" in props:
        props["gps_time"]["offset"] = gps_base
    s = step / 1000.0
    translation = [lo[0] / 1000.0, lo[2] / 1000.0, -(lo[1] + qmax[1] * step) / 1000.0]
    metadata = {
        "schema": schema.metadata_schema(),
        "propertyAttributes": [{"class": CLASS_ID, "properties": props}],
    }
    prim = {
        "attributes": {name: i for i, name in enumerate(fields)},
        "mode": POINTS,
        "extensions": {"EXT_structural_metadata": {"propertyAttributes": [0]}},
    }
    js = {
        "asset": {"version": "2.0", "generator": "RuhrTwin"},
        "extensionsUsed": used,
        "extensionsRequired": required,
        "bufferViews": [view],
        "accessors": accessors,
        "extensions": {"EXT_structural_metadata": metadata},
        "meshes": [{"primitives": [prim]}],
        "nodes": [{"mesh": 0, "translation": [float(v) for v in translation], "scale": [s, s, s]}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
        "buffers": [{"byteLength": payload.nbytes + (-payload.nbytes % 4)}, *fallback],
    }
    return glb_parts(js, payload.reshape(-1).data)
