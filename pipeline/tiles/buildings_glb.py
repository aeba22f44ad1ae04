"""Building tile content: one GLB per tile with per-vertex feature ids and a property table.

3D Tiles 1.1: `EXT_mesh_features` (attribute `_FEATURE_ID_0` -> property table 0) and
`EXT_structural_metadata` (schema with class `building`, one property table per tile).
3D Tiles 1.0 (b3dm payload): the same mesh with a `_BATCHID` attribute and no metadata extensions.

LoD2 tiles carry the surface of every vertex (`surfaces`: 0 roof, 1 wall, 2 ground) as the vertex
attribute `_SURFACE` (UNSIGNED_BYTE); in 1.1 it is also a property attribute of class `building_surface`
(property `surface`, enum `surface_type`: roof / wall / ground), which CesiumJS custom shaders read as
`metadata.surface` (style roofs and walls apart). In 1.0 the attribute is plain glTF (ignored by
viewers that do not know it).

Positions are float32 relative to the tile centre (the node carries the translation), axes converted
from the z-up ENU frame to glTF's y-up. Float columns with NaN are written with a `noData` sentinel;
`read_building_table` applies it back, so what is read equals what was written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.tiles.gltf import (
    ELEMENT_ARRAY_BUFFER,
    TRIANGLES,
    GltfBuilder,
    accessor_array,
    add_property_attribute,
    add_property_table,
    enu_to_gltf,
    metadata_property_schema,
    read_glb,
    set_metadata_schema,
)

CLASS_ID = "building"
SURFACE_CLASS_ID = "building_surface"
SURFACE_ATTRIBUTE = "_SURFACE"
SURFACE_NAMES = ("roof", "wall", "ground")
NO_DATA = -9999.0


def _columns_for_metadata(
    table: dict[str, np.ndarray | list], descriptions: dict[str, str] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encoded columns, schema properties) with NaN -> noData for float columns."""
    cols: dict[str, Any] = {}
    props: dict[str, Any] = {}
    for key, values in table.items():
        extra: dict[str, Any] = {}
        if descriptions and key in descriptions:
            extra["description"] = descriptions[key]
        if isinstance(values, list) or values.dtype.kind in "OUS":
            vals = ["" if v is None else str(v) for v in values]
            cols[key] = vals
            props[key] = metadata_property_schema(vals, **extra)
            continue
        v = np.asarray(values)
        if v.dtype.kind == "f":
            v = v.astype(np.float64)
            if np.isnan(v).any():
                v = np.where(np.isnan(v), NO_DATA, v)
                extra["noData"] = NO_DATA
        elif v.dtype.kind in "iu" and v.dtype.itemsize > 4:
            v = v.astype(np.int32 if v.dtype.kind == "i" else np.uint32)
        cols[key] = v
        props[key] = metadata_property_schema(v, **extra)
    return cols, props


def building_glb(
    positions: np.ndarray,
    normals: np.ndarray,
    indices: np.ndarray,
    feature_ids: np.ndarray,
    center: np.ndarray,
    table: dict[str, np.ndarray | list] | None,
    *,
    profile: str = "1.1",
    descriptions: dict[str, str] | None = None,
    color: tuple[float, float, float, float] = (0.92, 0.9, 0.86, 1.0),
    surfaces: np.ndarray | None = None,
) -> bytes:
    """GLB bytes of one tile: positions (V,3) float64 ENU, normals (V,3), indices (3T,), feature ids (V,),
    optionally the surface of every vertex (V,) (0 roof, 1 wall, 2 ground)."""
    b = GltfBuilder()
    center = np.asarray(center, dtype=np.float64)
    pos = enu_to_gltf(np.asarray(positions, dtype=np.float64) - center).astype(np.float32)
    nor = enu_to_gltf(np.asarray(normals, dtype=np.float64)).astype(np.float32)
    nfeat = int(feature_ids.max()) + 1 if len(feature_ids) else 0
    attrs = {
        "POSITION": b.add_accessor(pos, with_bounds=True),
        "NORMAL": b.add_accessor(nor),
    }
    fid_dtype = np.uint16 if nfeat <= 65535 else np.float32
    fid = b.add_accessor(np.asarray(feature_ids).astype(fid_dtype))
    idx_dtype = np.uint16 if len(pos) <= 65535 else np.uint32
    ind = b.add_accessor(np.asarray(indices).reshape(-1).astype(idx_dtype), target=ELEMENT_ARRAY_BUFFER)
    b.json["materials"] = [
        {
            "pbrMetallicRoughness": {
                "baseColorFactor": list(color),
                "metallicFactor": 0.0,
                "roughnessFactor": 1.0,
            },
            "name": "building",
        }
    ]
    prim: dict[str, Any] = {"attributes": attrs, "indices": ind, "mode": TRIANGLES, "material": 0}
    if surfaces is not None:
        attrs[SURFACE_ATTRIBUTE] = b.add_accessor(np.asarray(surfaces, dtype=np.uint8))
    if profile == "1.0":
        attrs["_BATCHID"] = fid
    else:
        attrs["_FEATURE_ID_0"] = fid
        schema: dict[str, Any] = {"id": "ruhrtwin_buildings", "classes": {}}
        if surfaces is not None:
            schema["enums"] = {
                "surface_type": {
                    "valueType": "UINT8",
                    "values": [{"name": n, "value": i} for i, n in enumerate(SURFACE_NAMES)],
                }
            }
            schema["classes"][SURFACE_CLASS_ID] = {
                "description": "semantic surface of the LoD2 solid a vertex belongs to",
                "properties": {"surface": {"type": "ENUM", "enumType": "surface_type", "required": True}},
            }
        if table is not None:
            cols, props = _columns_for_metadata(table, descriptions)
            schema["classes"] = {CLASS_ID: {"properties": props}, **schema["classes"]}
        if schema["classes"]:
            set_metadata_schema(b, schema)
        if surfaces is not None:
            pa = add_property_attribute(b, SURFACE_CLASS_ID, {"surface": SURFACE_ATTRIBUTE})
            prim.setdefault("extensions", {})["EXT_structural_metadata"] = {"propertyAttributes": [pa]}
        if table is not None:
            count = len(next(iter(table.values())))
            # a column of only empty strings would need a zero-length buffer view (invalid glTF): such
            # columns stay in the schema but are omitted from the table (not required -> empty)
            cols = {k: v for k, v in cols.items() if not (isinstance(v, list) and not any(v))}
            add_property_table(b, CLASS_ID, cols, count, name="buildings")
        prim.setdefault("extensions", {})["EXT_mesh_features"] = {
            "featureIds": [
                {
                    "featureCount": nfeat,
                    "attribute": 0,
                    **({"propertyTable": 0} if table is not None else {}),
                }
            ]
        }
        b.use_extension("EXT_mesh_features")
    mesh = b.add_mesh([prim])
    b.add_node(mesh, translation=enu_to_gltf(center[None, :])[0])
    return b.to_glb()


def read_building_table(glb: bytes) -> dict[str, np.ndarray | list[str]]:
    """The property table of a building GLB (noData applied back as NaN)."""
    js, binary = read_glb(glb)
    ext = js["extensions"]["EXT_structural_metadata"]
    props = ext["schema"]["classes"][CLASS_ID]["properties"]
    table = ext["propertyTables"][0]
    count = table["count"]
    views = js["bufferViews"]

    def view(i: int) -> bytes:
        v = views[i]
        return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    out: dict[str, np.ndarray | list[str]] = {}
    for key, spec in props.items():
        p = table["properties"].get(key)
        if p is None:  # omitted column: only possible for all-empty strings
            out[key] = [""] * count
            continue
        if spec["type"] == "STRING":
            offs = np.frombuffer(view(p["stringOffsets"]), dtype=np.uint32)
            raw = view(p["values"])
            out[key] = [raw[offs[i] : offs[i + 1]].decode("utf-8") for i in range(count)]
        elif spec["type"] == "BOOLEAN":
            bits = np.unpackbits(np.frombuffer(view(p["values"]), dtype=np.uint8), bitorder="little")
            out[key] = bits[:count].astype(bool)
        else:
            dt = {
                "INT8": np.int8,
                "UINT8": np.uint8,
                "INT16": np.int16,
                "UINT16": np.uint16,
                "INT32": np.int32,
                "UINT32": np.uint32,
                "INT64": np.int64,
                "UINT64": np.uint64,
                "FLOAT32": np.float32,
                "FLOAT64": np.float64,
            }[spec["componentType"]]
            arr = np.frombuffer(view(p["values"]), dtype=dt, count=count).copy()
            if "noData" in spec:
                arr = np.where(arr == spec["noData"], np.nan, arr)
            out[key] = arr
    return out


def read_feature_ids(glb: bytes) -> np.ndarray:
    """Per-vertex feature ids of the first primitive (`_FEATURE_ID_0` or `_BATCHID`)."""
    js, binary = read_glb(glb)
    attrs = js["meshes"][0]["primitives"][0]["attributes"]
    key = "_FEATURE_ID_0" if "_FEATURE_ID_0" in attrs else "_BATCHID"
    return accessor_array(js, binary, attrs[key]).astype(np.int64)


def read_surfaces(glb: bytes) -> np.ndarray | None:
    """Per-vertex surface codes (0 roof, 1 wall, 2 ground) of the first primitive, None for LoD1 tiles."""
    js, binary = read_glb(glb)
    attrs = js["meshes"][0]["primitives"][0]["attributes"]
    if SURFACE_ATTRIBUTE not in attrs:
        return None
    return accessor_array(js, binary, attrs[SURFACE_ATTRIBUTE]).astype(np.int64)
