"""Class scheme and classes present (with point counts) of a point layer, read from its tiles.

The viewer's legend lists exactly the classes a layer holds, named in the layer's scheme (AdV or ASPRS).
`twin build` adds them to each point layer's manifest stats (`class_scheme`, `classes`: code -> points)
right after the layer's tiles are written (`class_stats`), counted in those tiles: GLB tiles (the classification property attribute, scheme from
the tiles' `classification` enum) and pnts tiles (the batch table's `classification`). Every point lies in
exactly one tile (additive refinement), so the counts add up to the layer's points. Meshopt-compressed
tiles (EXT_meshopt_compression, the default) are decoded first (`points_glb.decode_meshopt_views`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}


class Unreadable(Exception):
    """A tile whose classification cannot be read (compressed, or not a tile this module knows)."""


def _glb_classes(data: bytes) -> tuple[np.ndarray, str | None]:
    magic, _version, _total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF":
        raise Unreadable("not a GLB")
    jlen = struct.unpack_from("<I", data, 12)[0]
    js = json.loads(data[20 : 20 + jlen])
    bin_off = 20 + jlen + 8
    if "EXT_meshopt_compression" in js.get("extensionsUsed", []):
        from pipeline.tiles.points_glb import decode_meshopt_views

        blen = struct.unpack_from("<I", data, 20 + jlen)[0]
        js, data = decode_meshopt_views(js, data[bin_off : bin_off + blen])
        bin_off = 0
    meta = js.get("extensions", {}).get("EXT_structural_metadata", {})
    schema = meta.get("schema", {})
    enum_name = schema.get("enums", {}).get("classification", {}).get("name", "")
    scheme = enum_name.split()[0].lower() if enum_name else None
    hist = np.zeros(256, dtype=np.int64)
    for mesh in js.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if prim.get("mode", 4) != 0:
                continue
            pa = prim.get("extensions", {}).get("EXT_structural_metadata", {}).get("propertyAttributes", [])
            attr = None
            for i in pa:
                prop = meta.get("propertyAttributes", [])[i].get("properties", {}).get("classification")
                if prop:
                    attr = prop["attribute"]
            if attr is None or attr not in prim["attributes"]:
                raise Unreadable("no classification attribute")
            acc = js["accessors"][prim["attributes"][attr]]
            view = js["bufferViews"][acc["bufferView"]]
            dt = np.dtype(_DTYPES[acc["componentType"]])
            stride = view.get("byteStride", dt.itemsize)
            start = bin_off + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
            n = int(acc["count"])
            if n == 0:
                continue
            raw = np.frombuffer(data, dtype=np.uint8, count=(n - 1) * stride + dt.itemsize, offset=start)
            vals = np.lib.stride_tricks.as_strided(raw, shape=(n, dt.itemsize), strides=(stride, 1))
            codes = np.ascontiguousarray(vals).view(dt).ravel().astype(np.int64)
            hist += np.bincount(codes, minlength=256)[:256]
    return hist, scheme


def _pnts_classes(data: bytes) -> np.ndarray:
    _magic, _v, _total, ftj, ftb, btj, btb = struct.unpack_from("<4sIIIIII", data, 0)
    ft = json.loads(data[28 : 28 + ftj])
    bt = json.loads(data[28 + ftj + ftb : 28 + ftj + ftb + btj]) if btj else {}
    n = int(ft["POINTS_LENGTH"])
    ref = bt.get("classification") or bt.get("Classification")
    if not isinstance(ref, dict) or n == 0:
        raise Unreadable("no classification in the batch table")
    dt = np.dtype(np.uint16 if ref.get("componentType") == "UNSIGNED_SHORT" else np.uint8)
    off = 28 + ftj + ftb + btj + int(ref["byteOffset"])
    codes = np.frombuffer(data, dtype=dt, count=n, offset=off).astype(np.int64)
    del btb
    return np.bincount(codes, minlength=256)[:256]


def layer_classes(release_dir: Path, tileset_rel: str) -> dict[str, Any] | None:
    """{"class_scheme": "adv"|"asprs"|None, "classes": {"<code>": points}} of a point layer, or None when
    its tiles cannot be read."""
    folder = (release_dir / tileset_rel).parent
    hist = np.zeros(256, dtype=np.int64)
    scheme = None
    try:
        for p in sorted(folder.rglob("*")):
            suffix = p.suffix.lower()
            if suffix not in (".glb", ".pnts") or not p.is_file():
                continue
            with open(p, "rb") as f:
                data = f.read()
            if suffix == ".glb":
                h, s = _glb_classes(data)
                scheme = scheme or s
            else:
                h = _pnts_classes(data)
            hist += h
    except Unreadable:
        return None
    codes = np.flatnonzero(hist)
    return {"class_scheme": scheme, "classes": {str(int(c)): int(hist[c]) for c in codes}}


def class_stats(release_dir: Path, tileset_rel: str, scheme: str) -> dict[str, Any]:
    """Manifest stats of a point layer just written: `class_scheme` (the configured scheme) and `classes`
    (code -> points, counted in the tiles; left out when the tiles cannot be read)."""
    found = layer_classes(release_dir, tileset_rel)
    out: dict[str, Any] = {"class_scheme": scheme}
    if found is not None:
        out["classes"] = found["classes"]
    return out
