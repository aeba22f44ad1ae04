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
- `EXT_mesh_features` with implicit feature IDs (one feature per point) so viewers can pick points.
- Optional `EXT_meshopt_compression` of every vertex buffer view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.stages.points.colour import SRGB8_TO_LINEAR8
from pipeline.tiles.gltf import (
    POINTS,
    GltfBuilder,
    add_property_attribute,
    set_metadata_schema,
)

CLASS_ID = "point"


@dataclass(frozen=True)
class PointSchema:
    """Which properties the tiles carry (same for every tile of a tileset)."""

    class_scheme: str
    class_enum: dict[str, Any]
    has_rgb: bool
    has_gps: bool
    has_nir: bool
    extra_dims: tuple[str, ...] = ()

    def metadata_schema(self) -> dict[str, Any]:
        names = ", ".join(f"{v['value']}={v['name']}" for v in self.class_enum["values"])
        props: dict[str, Any] = {
            "intensity": {"type": "SCALAR", "componentType": "UINT16", "description": "LAS intensity"},
            "classification": {
                "type": "SCALAR",
                "componentType": "UINT8",
                "description": f"{self.class_scheme.upper()} class code (enum 'classification'): {names}",
            },
            "return_number": {"type": "SCALAR", "componentType": "UINT8"},
            "number_of_returns": {"type": "SCALAR", "componentType": "UINT8"},
            "point_source_id": {"type": "SCALAR", "componentType": "UINT16"},
        }
        if self.has_gps:
            props["gps_time"] = {
                "type": "SCALAR",
                "componentType": "FLOAT32",
                "description": "GPS time in seconds; stored relative to the tile's base time (offset)",
            }
        if self.has_nir:
            props["nir"] = {"type": "SCALAR", "componentType": "UINT16", "description": "near infrared"}
        for name in self.extra_dims:
            props[f"x_{name}"] = {"type": "SCALAR", "componentType": "FLOAT32", "description": name}
        return {
            "id": "ruhrtwin_points",
            "classes": {CLASS_ID: {"name": "Point", "properties": props}},
            "enums": {"classification": self.class_enum},
        }


@dataclass
class QuantizedTile:
    """Quantized positions of one tile (millimetres, relative to the project ENU frame)."""

    lo: np.ndarray  # (3,) int64 mm, minimum corner of the quantization grid
    step: int  # mm, power of two
    q: np.ndarray  # (N,3) uint16
    qmax: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))

    @property
    def positions_mm(self) -> np.ndarray:
        return self.lo + self.q.astype(np.int64) * self.step

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        qmin = self.q.min(axis=0).astype(np.int64)
        return self.lo + qmin * self.step, self.lo + self.qmax * self.step


def quantize(xyz_mm: np.ndarray) -> QuantizedTile:
    lo = xyz_mm.min(axis=0).astype(np.int64)
    ext = int((xyz_mm.max(axis=0).astype(np.int64) - lo).max())
    step = 1
    while ext // step > 65535:
        step *= 2
    q = ((xyz_mm.astype(np.int64) - lo) // step).astype(np.uint16)
    return QuantizedTile(lo=lo, step=step, q=q, qmax=q.max(axis=0).astype(np.int64))


def encode_glb(
    qt: QuantizedTile,
    attrs: dict[str, np.ndarray],
    schema: PointSchema,
    *,
    meshopt: bool = False,
) -> bytes:
    """One point tile as GLB bytes. `attrs` holds the record fields of the tile's points (same order)."""
    b = GltfBuilder()
    b.use_extension("KHR_mesh_quantization", required=True)
    n = len(qt.q)
    # glTF y-up: (x, z, -y); the -y axis is stored as qmax_y - qy so everything stays unsigned
    pos = np.empty((n, 3), dtype=np.uint16)
    pos[:, 0] = qt.q[:, 0]
    pos[:, 1] = qt.q[:, 2]
    pos[:, 2] = (qt.qmax[1] - qt.q[:, 1].astype(np.int64)).astype(np.uint16)
    accessors: dict[str, int] = {"POSITION": b.add_accessor(pos, with_bounds=True)}
    if "rgb" in attrs:
        accessors["COLOR_0"] = b.add_accessor(SRGB8_TO_LINEAR8[attrs["rgb"]], normalized=True)
    prop_attr: dict[str, str] = {}
    pa_extra: dict[str, dict[str, Any]] = {}

    def add(prop: str, attr: str, values: np.ndarray) -> None:
        accessors[attr] = b.add_accessor(np.ascontiguousarray(values))
        prop_attr[prop] = attr

    add("intensity", "_INTENSITY", attrs["intensity"])
    add("classification", "_CLASSIFICATION", attrs["classification"])
    add("return_number", "_RETURN_NUMBER", attrs["return_number"])
    add("number_of_returns", "_NUMBER_OF_RETURNS", attrs["number_of_returns"])
    add("point_source_id", "_POINT_SOURCE_ID", attrs["point_source_id"])
    if schema.has_gps:
        t = attrs["gps_time"]
        base = float(t.min()) if n else 0.0
        add("gps_time", "_GPS_TIME", (t - base).astype(np.float32))
        pa_extra["gps_time"] = {"offset": base}
    if schema.has_nir:
        add("nir", "_NIR", attrs["nir"])
    for name in schema.extra_dims:
        add(f"x_{name}", f"_X_{name.upper()}", attrs[f"x_{name}"].astype(np.float32))
    set_metadata_schema(b, schema.metadata_schema())
    pa_index = add_property_attribute(b, CLASS_ID, prop_attr)
    pas = b.json["extensions"]["EXT_structural_metadata"]["propertyAttributes"][pa_index]
    for prop, extra in pa_extra.items():
        pas["properties"][prop].update(extra)
    b.use_extension("EXT_mesh_features")
    prim: dict[str, Any] = {
        "attributes": accessors,
        "mode": POINTS,
        "extensions": {
            "EXT_structural_metadata": {"propertyAttributes": [pa_index]},
            "EXT_mesh_features": {"featureIds": [{"featureCount": int(n)}]},
        },
    }
    mesh = b.add_mesh([prim])
    s = qt.step / 1000.0
    b.add_node(
        mesh,
        translation=[
            qt.lo[0] / 1000.0,
            qt.lo[2] / 1000.0,
            -(qt.lo[1] + qt.qmax[1] * qt.step) / 1000.0,
        ],
        scale=[s, s, s],
    )
    if meshopt:
        _meshopt_compress(b)
    return b.to_glb()


def _meshopt_compress(b: GltfBuilder) -> None:
    """Re-encode every vertex buffer view with EXT_meshopt_compression (ATTRIBUTES mode).

    The uncompressed data moves to a fallback-free buffer 0 (byteLength only, no bytes), the compressed
    streams go into buffer 1 stored in the GLB's BIN chunk, as the extension prescribes.
    """
    import meshoptimizer as mo

    views = b.json["bufferViews"]
    raw = bytes(b._bin)
    out = bytearray()
    for v in views:
        stride = v.get("byteStride")
        length = v["byteLength"]
        data = raw[v["byteOffset"] : v["byteOffset"] + length]
        if stride is None:
            # tightly packed accessors (4-byte float/uint32 or 2x uint16...): the element size is the stride
            stride = _element_size(b.json, views.index(v))
        count = length // stride
        arr = np.frombuffer(data, dtype=np.uint8).reshape(count, stride)
        enc = bytes(mo.encode_vertex_buffer(arr, count, stride))
        pad = (4 - len(out) % 4) % 4
        out.extend(b"\x00" * pad)
        v["extensions"] = {
            "EXT_meshopt_compression": {
                "buffer": 1,
                "byteOffset": len(out),
                "byteLength": len(enc),
                "byteStride": stride,
                "count": count,
                "mode": "ATTRIBUTES",
            }
        }
        out.extend(enc)
    b._bin = bytearray(out)
    b.use_extension("EXT_meshopt_compression", required=True)
    b._meshopt_fallback_length = len(raw)  # type: ignore[attr-defined]


def _element_size(js: dict[str, Any], view_index: int) -> int:
    sizes = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    for a in js["accessors"]:
        if a["bufferView"] == view_index:
            return sizes[a["componentType"]] * widths[a["type"]]
    raise ValueError("buffer view without accessor")


def tile_checksum(positions_mm: np.ndarray) -> int:
    """Order-independent checksum of a tile's (dequantized) millimetre positions."""
    from pipeline.stages.points.kernels import point_hash

    if len(positions_mm) == 0:
        return 0
    h = point_hash(np.ascontiguousarray(positions_mm, dtype=np.int32))
    return int(h.sum(dtype=np.uint64))
