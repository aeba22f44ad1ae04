"""Minimal, deterministic glTF 2.0 / GLB writer with the 3D Tiles 1.1 metadata extensions.

Why our own: we need byte-identical output, zero-copy numpy buffers and full control over
EXT_structural_metadata / EXT_mesh_features / KHR_mesh_quantization; the format is small.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# glTF componentType codes
BYTE, UNSIGNED_BYTE, SHORT, UNSIGNED_SHORT, UNSIGNED_INT, FLOAT = 5120, 5121, 5122, 5123, 5125, 5126
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
POINTS, LINES, TRIANGLES = 0, 1, 4

_COMPONENT: dict[np.dtype[Any], int] = {
    np.dtype(np.int8): BYTE,
    np.dtype(np.uint8): UNSIGNED_BYTE,
    np.dtype(np.int16): SHORT,
    np.dtype(np.uint16): UNSIGNED_SHORT,
    np.dtype(np.uint32): UNSIGNED_INT,
    np.dtype(np.float32): FLOAT,
}
_TYPE_BY_WIDTH = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}

# Metadata component types (3D Metadata spec) for numpy dtypes
METADATA_COMPONENT = {
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float32): "FLOAT32",
    np.dtype(np.float64): "FLOAT64",
}

# glTF is y-up; 3D Tiles is z-up. Content positions are written as (x, z, -y) of the ENU frame.
Y_UP_FROM_Z_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)


def enu_to_gltf(xyz: np.ndarray) -> np.ndarray:
    """(N,3) z-up ENU -> glTF y-up axes."""
    out = np.empty_like(xyz)
    out[:, 0] = xyz[:, 0]
    out[:, 1] = xyz[:, 2]
    out[:, 2] = -xyz[:, 1]
    return out


def _pad4(b: bytes | bytearray, fill: bytes = b"\x00") -> bytes:
    return bytes(b) + fill * ((4 - len(b) % 4) % 4)


@dataclass
class GltfBuilder:
    """Accumulates one binary buffer and the JSON; `to_glb()` packs them."""

    json: dict[str, Any] = field(
        default_factory=lambda: {"asset": {"version": "2.0", "generator": "RuhrTwin"}}
    )
    _bin: bytearray = field(default_factory=bytearray)

    def _list(self, key: str) -> list:
        return self.json.setdefault(key, [])

    def use_extension(self, name: str, required: bool = False) -> None:
        used = self._list("extensionsUsed")
        if name not in used:
            used.append(name)
        if required:
            req = self._list("extensionsRequired")
            if name not in req:
                req.append(name)

    def add_buffer_view(
        self, data: bytes | np.ndarray, target: int | None = None, stride: int | None = None
    ) -> int:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        # 8-byte alignment satisfies every accessor and metadata alignment rule
        pad = (8 - len(self._bin) % 8) % 8
        self._bin.extend(b"\x00" * pad)
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self._bin), "byteLength": len(raw)}
        if stride is not None:
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        self._bin.extend(raw)
        views = self._list("bufferViews")
        views.append(view)
        return len(views) - 1

    def add_accessor(
        self,
        array: np.ndarray,
        *,
        target: int | None = ARRAY_BUFFER,
        normalized: bool = False,
        with_bounds: bool = False,
        type_: str | None = None,
    ) -> int:
        """Add a (N,) or (N,k) array as its own buffer view + accessor."""
        a = np.ascontiguousarray(array)
        width = 1 if a.ndim == 1 else a.shape[1]
        comp = _COMPONENT[a.dtype]
        stride = None
        if target == ARRAY_BUFFER and (a.itemsize * width) % 4 != 0:
            # vertex attributes need 4-byte aligned strides: pad each element
            padded_width = width + ((4 - (a.itemsize * width) % 4) % 4) // a.itemsize
            p = np.zeros((a.shape[0], padded_width), dtype=a.dtype)
            p[:, :width] = a.reshape(a.shape[0], width)
            stride = padded_width * a.itemsize
            view = self.add_buffer_view(p, target, stride)
        else:
            view = self.add_buffer_view(a, target)
        acc: dict[str, Any] = {
            "bufferView": view,
            "componentType": comp,
            "count": int(a.shape[0]),
            "type": type_ or _TYPE_BY_WIDTH[width],
        }
        if normalized:
            acc["normalized"] = True
        if with_bounds and a.shape[0]:
            r = a.reshape(a.shape[0], width)
            cast = float if comp == FLOAT else int
            acc["min"] = [cast(v) for v in r.min(axis=0)]
            acc["max"] = [cast(v) for v in r.max(axis=0)]
        accs = self._list("accessors")
        accs.append(acc)
        return len(accs) - 1

    def add_mesh(self, primitives: list[dict[str, Any]]) -> int:
        meshes = self._list("meshes")
        meshes.append({"primitives": primitives})
        return len(meshes) - 1

    def add_node(self, mesh: int, *, translation=None, scale=None, matrix=None) -> int:
        node: dict[str, Any] = {"mesh": mesh}
        if matrix is not None:
            node["matrix"] = [float(v) for v in matrix]
        if translation is not None:
            node["translation"] = [float(v) for v in translation]
        if scale is not None:
            node["scale"] = [float(v) for v in scale]
        nodes = self._list("nodes")
        nodes.append(node)
        if "scenes" not in self.json:
            self.json["scenes"] = [{"nodes": []}]
            self.json["scene"] = 0
        self.json["scenes"][0]["nodes"].append(len(nodes) - 1)
        return len(nodes) - 1

    def to_glb(self) -> bytes:
        if self._bin:
            self.json["buffers"] = [{"byteLength": len(_pad4(self._bin))}]
        return b"".join(glb_parts(self.json, self._bin))


def glb_parts(js: dict[str, Any], binary: Any, *, ensure_ascii: bool = False) -> list[Any]:
    """A GLB as pieces (join them, or write one after the other): the header and the JSON chunk, padded with
    spaces so that the BIN chunk's data starts 8-byte aligned (EXT_structural_metadata), then the BIN chunk
    (`binary`: any bytes-like object, not copied; padded to 4 bytes; no chunk when empty)."""
    jb = json.dumps(js, separators=(",", ":"), ensure_ascii=ensure_ascii).encode("utf-8")
    jb += b" " * ((4 - len(jb)) % 8)  # 12 + 8 + len(jb) + 8 is a multiple of 8
    n = memoryview(binary).nbytes
    pad = -n % 4
    head = struct.pack("<4sII", b"glTF", 2, 20 + len(jb) + (8 + n + pad if n else 0))
    head += struct.pack("<I4s", len(jb), b"JSON") + jb
    return [head + struct.pack("<I4s", n + pad, b"BIN\x00"), binary, b"\x00" * pad] if n else [head]


# ---- EXT_structural_metadata helpers -------------------------------------------------------------


def metadata_property_schema(values: np.ndarray | list[str], **extra: Any) -> dict[str, Any]:
    """Schema entry for a property from its values (numeric dtype or list of strings)."""
    if isinstance(values, list) or (isinstance(values, np.ndarray) and values.dtype.kind in "OUS"):
        return {"type": "STRING", **extra}
    if values.dtype == np.bool_:
        return {"type": "BOOLEAN", **extra}
    return {"type": "SCALAR", "componentType": METADATA_COMPONENT[values.dtype], **extra}


def add_property_table(
    b: GltfBuilder,
    class_id: str,
    columns: dict[str, np.ndarray | list[str]],
    count: int,
    name: str | None = None,
) -> int:
    """Encode a property table (numeric, boolean and string columns) into buffer views."""
    props: dict[str, Any] = {}
    for key, values in columns.items():
        if isinstance(values, list) or (isinstance(values, np.ndarray) and values.dtype.kind in "OUS"):
            encoded = [str(v).encode("utf-8") for v in values]
            offsets = np.zeros(len(encoded) + 1, dtype=np.uint32)
            np.cumsum([len(e) for e in encoded], out=offsets[1:])
            props[key] = {
                # a buffer view is at least 1 byte long: a column of empty strings gets one unused byte
                "values": b.add_buffer_view(b"".join(encoded) or b" "),
                "stringOffsets": b.add_buffer_view(offsets),
                "stringOffsetType": "UINT32",
            }
        elif values.dtype == np.bool_:
            props[key] = {"values": b.add_buffer_view(np.packbits(values, bitorder="little"))}
        else:
            props[key] = {"values": b.add_buffer_view(np.ascontiguousarray(values))}
    ext = b.json.setdefault("extensions", {}).setdefault("EXT_structural_metadata", {})
    tables = ext.setdefault("propertyTables", [])
    table: dict[str, Any] = {"class": class_id, "count": int(count), "properties": props}
    if name:
        table["name"] = name
    tables.append(table)
    b.use_extension("EXT_structural_metadata")
    return len(tables) - 1


def set_metadata_schema(b: GltfBuilder, schema: dict[str, Any]) -> None:
    b.json.setdefault("extensions", {}).setdefault("EXT_structural_metadata", {})["schema"] = schema
    b.use_extension("EXT_structural_metadata")


def add_property_attribute(b: GltfBuilder, class_id: str, properties: dict[str, str]) -> int:
    """Map schema properties to vertex attribute names (e.g. {'intensity': '_INTENSITY'})."""
    ext = b.json.setdefault("extensions", {}).setdefault("EXT_structural_metadata", {})
    pas = ext.setdefault("propertyAttributes", [])
    pas.append({"class": class_id, "properties": {k: {"attribute": v} for k, v in properties.items()}})
    b.use_extension("EXT_structural_metadata")
    return len(pas) - 1


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a GLB into its JSON and BIN chunk (used by tests and validation)."""
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2 or total != len(data):
        raise ValueError("not a GLB 2.0 file")
    jlen, _jtype = struct.unpack_from("<I4s", data, 12)
    js = json.loads(data[20 : 20 + jlen])
    binary = b""
    off = 20 + jlen
    if off < len(data):
        blen, _ = struct.unpack_from("<I4s", data, off)
        binary = data[off + 8 : off + 8 + blen]
    return js, binary


def accessor_array(js: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """Read an accessor back as a numpy array (tests)."""
    acc = js["accessors"][index]
    view = js["bufferViews"][acc["bufferView"]]
    dtype = {v: k for k, v in _COMPONENT.items()}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    elem = dtype.itemsize * width
    stride = view.get("byteStride", elem)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    n = int(acc["count"])
    # the last element ends `elem` bytes after its start, not `stride`: an interleaved attribute at a
    # non-zero offset would otherwise read past the end of its buffer view
    need = stride * (n - 1) + elem if n else 0
    if start + need > min(len(binary), view.get("byteOffset", 0) + view["byteLength"]):
        raise ValueError(f"accessor {index} reads past the end of buffer view {acc['bufferView']}")
    buf = np.frombuffer(binary, dtype=np.uint8, count=need, offset=start)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(n, elem), strides=(stride, 1))
    arr = rows.copy().view(dtype).reshape(n, width)
    return arr[:, 0] if width == 1 else arr


def meshopt_vertices(rows: np.ndarray) -> np.ndarray:
    """meshopt vertex codec of the (n, stride) uint8 rows, bitstream version 0 (the one
    EXT_meshopt_compression specifies, whatever the package's default)."""
    import meshoptimizer as mo

    mo.encode_vertex_version(0)
    n, stride = rows.shape
    return np.frombuffer(mo.encode_vertex_buffer(rows, n, stride), np.uint8)


def meshopt_glb(b: GltfBuilder) -> bytes:
    """GLB with EXT_meshopt_compression of the geometry's buffer views: vertex views (target ARRAY_BUFFER)
    by meshopt's vertex codec (mode ATTRIBUTES, bitstream version 0), index views (ELEMENT_ARRAY_BUFFER,
    16 or 32 bit triangle lists) by its index codec (mode TRIANGLES, version 1), the versions
    EXT_meshopt_compression specifies; other views (images) stay as they are. Everything is in buffer 0
    (the BIN chunk); the compressed views refer to a fallback buffer 1 that has no data
    (`fallback: true`), as the extension prescribes."""
    import meshoptimizer as mo

    mo.encode_index_version(1)
    raw = bytes(b._bin)
    views = b.json["bufferViews"]
    element: dict[int, int] = {}  # view -> bytes per element of its accessor (views without byteStride)
    nbytes = {BYTE: 1, UNSIGNED_BYTE: 1, SHORT: 2, UNSIGNED_SHORT: 2, UNSIGNED_INT: 4, FLOAT: 4}
    for a in b.json.get("accessors", []):
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        element[a["bufferView"]] = width * nbytes[a["componentType"]]
    out = bytearray()
    for i, v in enumerate(views):
        arr = np.frombuffer(raw, dtype=np.uint8, count=v["byteLength"], offset=v["byteOffset"])
        target = v.get("target")
        if target not in (ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER):
            out.extend(b"\x00" * ((8 - len(out) % 8) % 8))
            v["byteOffset"] = len(out)
            out.extend(arr.tobytes())
            continue
        ext: dict[str, Any]
        if target == ELEMENT_ARRAY_BUFFER:
            size = element[i]
            count = v["byteLength"] // size
            enc = bytes(mo.encode_index_buffer(arr.view(np.uint16 if size == 2 else np.uint32), count))
            ext = {"byteStride": size, "count": count, "mode": "TRIANGLES"}
        else:
            stride = v.get("byteStride", element[i])
            count = v["byteLength"] // stride
            enc = meshopt_vertices(arr.reshape(count, stride)).tobytes()
            ext = {"byteStride": stride, "count": count, "mode": "ATTRIBUTES"}
        out.extend(b"\x00" * ((4 - len(out) % 4) % 4))
        v["buffer"] = 1
        v["extensions"] = {
            "EXT_meshopt_compression": {"buffer": 0, "byteOffset": len(out), "byteLength": len(enc), **ext}
        }
        out.extend(enc)
    out.extend(b"\x00" * ((8 - len(out) % 8) % 8))
    b.use_extension("EXT_meshopt_compression", required=True)
    b.json["buffers"] = [
        {"byteLength": len(out)},
        {"byteLength": len(raw), "extensions": {"EXT_meshopt_compression": {"fallback": True}}},
    ]
    return b"".join(glb_parts(b.json, out, ensure_ascii=True))


def decode_meshopt_views(js: dict[str, Any], binary: bytes) -> tuple[dict[str, Any], bytes]:
    """Undo EXT_meshopt_compression (validation, tests): returns JSON + BIN with plain buffer views."""
    import meshoptimizer as mo

    views = [dict(v) for v in js["bufferViews"]]  # the only part changed: no deep copy of the rest
    js = {**js, "bufferViews": views}
    out = bytearray()
    for v in views:
        ext = v.get("extensions", {}).get("EXT_meshopt_compression")
        if not ext:
            continue
        data = np.frombuffer(binary, dtype=np.uint8, count=ext["byteLength"], offset=ext["byteOffset"])
        if ext["mode"] == "TRIANGLES":
            dec = np.asarray(mo.decode_index_buffer(ext["count"], ext["byteStride"], data.tobytes()))
        else:
            dec = np.asarray(mo.decode_vertex_buffer(ext["count"], ext["byteStride"], data.tobytes()))
        out.extend(b"\x00" * ((8 - len(out) % 8) % 8))
        v["buffer"] = 0
        v["byteOffset"] = len(out)
        v["byteLength"] = ext["count"] * ext["byteStride"]
        out += np.ascontiguousarray(dec).view(np.uint8).reshape(-1)[: v["byteLength"]].data
        del v["extensions"]
    return js, bytes(out)
