"""Class scheme and classes present (with point counts) of a point layer, read from its tiles.

The viewer's legend lists exactly the classes a layer holds, named in the layer's scheme (AdV or ASPRS).
`twin build` adds them to each point layer's manifest stats (`class_scheme`, `classes`: code -> points)
right after the layer's tiles are written (`class_stats`), counted in those tiles: GLB tiles (the classification property attribute, scheme from
the tiles' `classification` enum) and pnts tiles (the batch table's `classification`). Every point lies in
exactly one tile (additive refinement), so the counts add up to the layer's points. Meshopt-compressed
tiles (EXT_meshopt_compression, the default) are read by `tiles.points_reader.read_point_glb`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np


class Unreadable(Exception):
    """A tile whose classification cannot be read (compressed, or not a tile this module knows)."""


def _glb_classes(data: bytes) -> tuple[np.ndarray, str | None]:
    from pipeline.tiles.gltf import accessor_array
    from pipeline.tiles.points_reader import read_point_glb

    try:
        js, binary = read_point_glb(data)
    except ValueError as e:
        raise Unreadable(str(e)) from e
    meta = js.get("extensions", {}).get("EXT_structural_metadata", {})
    enum_name = meta.get("schema", {}).get("enums", {}).get("classification", {}).get("name", "")
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
            codes = accessor_array(js, binary, prim["attributes"][attr]).astype(np.int64)
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
