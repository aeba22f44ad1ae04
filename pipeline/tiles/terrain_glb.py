"""Textured terrain meshes as GLB and the terrain quadtree's tileset.json.

Each tile is one triangle mesh in the project ENU frame with TEXCOORD_0 into one embedded JPEG/PNG/WebP
orthophoto texture and an unlit material (the orthophoto already contains the light of the flight; no
normals). Two encodings of the mesh (`layers.terrain.mesh_encoding`):

- `compact`: `KHR_mesh_quantization` + `EXT_meshopt_compression`. Positions are unsigned 16-bit
  integers on a grid spanning the tile's box in each axis; the node's translation (the box's minimum) and
  per-axis scale (its size / 65535) dequantise them, so the error is at most half a grid step per axis:
  size / 131070 (1 mm per 131 m of the box's height range, 3.9 mm horizontally for a 512 m tile). UVs are
  normalized unsigned 16-bit (1/131070 of the texture). Indices 16-bit (32-bit above 65535 vertices). Every
  buffer view is then compressed by meshopt (vertex codec for the attributes, index codec for the
  triangles), as the point tiles are (`pipeline.tiles.gltf.meshopt_glb`).
- `float` (default): float32 positions relative to the tile centre (node translation), float32 UVs, plain
  buffers. The default because QGIS (3.40, tiled-scene layers) reads neither KHR_mesh_quantization nor
  EXT_meshopt_compression: it draws nothing of a compact tile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.tiles.gltf import (
    ELEMENT_ARRAY_BUFFER,
    TRIANGLES,
    GltfBuilder,
    accessor_array,
    decode_meshopt_views,
    enu_to_gltf,
    meshopt_glb,
    read_glb,
)
from pipeline.tiles.tileset import LEVELS_PER_FILE, QuadTile, quadtree_tilesets

MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
MESH_ENCODINGS = ("compact", "float")
Q16 = 65535  # largest unsigned 16-bit value: the quantisation grid has Q16 steps per axis


def quantisation_step(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Grid step per axis of a box for 16-bit positions (a flat axis gets a 1 mm box: never scale 0)."""
    return np.maximum(np.asarray(hi, np.float64) - np.asarray(lo, np.float64), 1e-3) / Q16


def add_image_texture(b: GltfBuilder, image: bytes, mime: str) -> int:
    """Embed an image in the binary chunk; returns the texture index (clamped, linear filtering)."""
    view = b.add_buffer_view(image)
    images = b.json.setdefault("images", [])
    images.append({"bufferView": view, "mimeType": mime})
    samplers = b.json.setdefault("samplers", [])
    if not samplers:
        samplers.append({"magFilter": 9729, "minFilter": 9729, "wrapS": 33071, "wrapT": 33071})
    textures = b.json.setdefault("textures", [])
    if mime == "image/webp":  # EXT_texture_webp (CesiumJS reads it; required: no fallback image)
        textures.append({"sampler": 0, "extensions": {"EXT_texture_webp": {"source": len(images) - 1}}})
        b.use_extension("EXT_texture_webp", required=True)
    else:
        textures.append({"sampler": 0, "source": len(images) - 1})
    return len(textures) - 1


def add_material(
    b: GltfBuilder,
    *,
    texture: int | None = None,
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    unlit: bool = True,
    double_sided: bool = False,
    name: str | None = None,
) -> int:
    pbr: dict[str, Any] = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    if texture is not None:
        pbr["baseColorTexture"] = {"index": texture}
    if tuple(color) != (1.0, 1.0, 1.0, 1.0):
        pbr["baseColorFactor"] = [float(c) for c in color]
    mat: dict[str, Any] = {"pbrMetallicRoughness": pbr}
    if name:
        mat["name"] = name
    if double_sided:
        mat["doubleSided"] = True
    if color[3] < 1.0:
        mat["alphaMode"] = "BLEND"
    if unlit:
        mat["extensions"] = {"KHR_materials_unlit": {}}
        b.use_extension("KHR_materials_unlit")
    materials = b.json.setdefault("materials", [])
    materials.append(mat)
    return len(materials) - 1


def terrain_glb(
    positions_enu: np.ndarray,
    triangles: np.ndarray,
    *,
    uv: np.ndarray | None = None,
    texture: bytes | None = None,
    texture_format: str = "jpeg",
    color: tuple[float, float, float, float] = (0.62, 0.6, 0.55, 1.0),
    mesh_encoding: str = "float",
) -> bytes:
    """One terrain tile. `positions_enu` (N,3) float64 in the project frame (z up), `triangles` (M,3)
    counter-clockwise seen from above, `uv` (N,2) in [0, 1]; `mesh_encoding` see the module docstring."""
    pos = np.asarray(positions_enu, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or not len(pos) or not len(triangles):
        raise ValueError("terrain tile needs vertices and triangles")
    if mesh_encoding not in MESH_ENCODINGS:
        raise ValueError(f"unknown terrain mesh encoding {mesh_encoding!r} (one of {MESH_ENCODINGS})")
    compact = mesh_encoding == "compact"
    b = GltfBuilder()
    if compact:
        g = enu_to_gltf(pos)
        lo = g.min(axis=0)
        step = quantisation_step(lo, g.max(axis=0))
        q = np.rint((g - lo) / step).astype(np.uint16)
        b.use_extension("KHR_mesh_quantization", required=True)
        attrs: dict[str, int] = {"POSITION": b.add_accessor(q, with_bounds=True)}
    else:
        centre = (pos.min(axis=0) + pos.max(axis=0)) / 2
        local = enu_to_gltf(pos - centre).astype(np.float32)
        attrs = {"POSITION": b.add_accessor(local, with_bounds=True)}
    tex_index = None
    if uv is not None and texture is not None:
        if compact:
            quv = np.rint(np.clip(np.asarray(uv, np.float64), 0.0, 1.0) * Q16).astype(np.uint16)
            attrs["TEXCOORD_0"] = b.add_accessor(quv, normalized=True)
        else:
            attrs["TEXCOORD_0"] = b.add_accessor(np.asarray(uv, dtype=np.float32))
        tex_index = add_image_texture(b, texture, MIME[texture_format])
    idx = np.asarray(triangles, dtype=np.uint32).reshape(-1)
    if compact:  # triangles in vertex-cache order: meshopt's index codec then needs 2.3x fewer bytes
        idx = _vertex_cache_order(idx, len(pos))
    idx_dtype = np.uint16 if len(pos) < 65535 else np.uint32
    ind = b.add_accessor(idx.astype(idx_dtype), target=ELEMENT_ARRAY_BUFFER)
    mat = add_material(b, texture=tex_index, color=(1, 1, 1, 1) if tex_index is not None else color)
    mesh = b.add_mesh([{"attributes": attrs, "indices": ind, "material": mat, "mode": TRIANGLES}])
    if compact:
        b.add_node(mesh, translation=lo, scale=step)
        return meshopt_glb(b)
    b.add_node(mesh, translation=enu_to_gltf(centre[None, :])[0])
    return b.to_glb()


def _vertex_cache_order(indices: np.ndarray, vertex_count: int) -> np.ndarray:
    """The triangle list reordered for the GPU's vertex cache (meshopt; deterministic): neighbouring
    triangles follow each other, which is what meshopt's index codec compresses well. Vertices keep their
    order (reordering them too saves another 8 % on a 65 x 65 grid: not worth a second permutation)."""
    import meshoptimizer as mo

    out = np.empty_like(indices, dtype=np.uint32)
    mo.optimize_vertex_cache(out, np.ascontiguousarray(indices, dtype=np.uint32), len(indices), vertex_count)
    return out


def read_terrain_glb(data: bytes) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A terrain tile back as (positions (N,3) float64 in the project ENU frame, UVs (N,2) float64 or
    None, triangles (M,3) int64), whatever its mesh encoding (validation, tests, benchmarks)."""
    js, binary = read_glb(data)
    if "EXT_meshopt_compression" in js.get("extensionsUsed", []):
        js, binary = decode_meshopt_views(js, binary)
    prim = js["meshes"][0]["primitives"][0]
    node = js["nodes"][0]

    def attribute(index: int) -> np.ndarray:
        raw = accessor_array(js, binary, index)
        a = raw.astype(np.float64)
        if js["accessors"][index].get("normalized"):
            a /= float(np.iinfo(raw.dtype).max)
        return a

    pos = attribute(prim["attributes"]["POSITION"]) * np.asarray(node.get("scale", [1.0, 1.0, 1.0]))
    pos += np.asarray(node.get("translation", [0.0, 0.0, 0.0]))
    enu = np.column_stack([pos[:, 0], -pos[:, 2], pos[:, 1]])  # glTF y-up -> ENU z-up
    uv = attribute(prim["attributes"]["TEXCOORD_0"]) if "TEXCOORD_0" in prim["attributes"] else None
    tris = accessor_array(js, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
    return enu, uv, tris


TerrainTileNode = QuadTile  # one tile of the terrain quadtree for the tileset writer


def terrain_tilesets(
    root: TerrainTileNode,
    transform: list[float],
    tileset_version: str | None,
    levels_per_file: int = LEVELS_PER_FILE,
) -> dict[str, dict[str, Any]]:
    """Explicit quadtree tilesets of the terrain, {path relative to the layer folder: document}
    (`pipeline.tiles.tileset.quadtree_tilesets`, REPLACE refinement)."""
    # CesiumJS decides whether to draw the root at all from the tileset's error: keep it at least the size
    # of the data, or the layer vanishes a few hundred metres away on flat terrain.
    return quadtree_tilesets(
        root,
        transform,
        tileset_version,
        refine="REPLACE",
        tileset_error=lambda t: max(t.geometric_error * 2, float(np.linalg.norm(t.hi - t.lo))),
        levels_per_file=levels_per_file,
    )
