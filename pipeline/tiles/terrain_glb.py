"""Textured terrain meshes as GLB and the terrain quadtree's tileset.json.

Each tile is one triangle mesh in the project ENU frame, stored relative to the tile centre (node
translation) so float32 positions keep millimetres, with TEXCOORD_0 into one embedded JPEG/PNG orthophoto
texture and an unlit material (the orthophoto already contains the light of the flight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.tiles.gltf import ELEMENT_ARRAY_BUFFER, TRIANGLES, GltfBuilder, enu_to_gltf
from pipeline.tiles.tileset import asset, box_from_bounds

MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


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
) -> bytes:
    """One terrain tile. `positions_enu` (N,3) float64 in the project frame (z up), `triangles` (M,3)
    counter-clockwise seen from above."""
    pos = np.asarray(positions_enu, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or not len(pos) or not len(triangles):
        raise ValueError("terrain tile needs vertices and triangles")
    centre = (pos.min(axis=0) + pos.max(axis=0)) / 2
    local = enu_to_gltf(pos - centre).astype(np.float32)
    b = GltfBuilder()
    attrs: dict[str, int] = {"POSITION": b.add_accessor(local, with_bounds=True)}
    tex_index = None
    if uv is not None and texture is not None:
        attrs["TEXCOORD_0"] = b.add_accessor(np.asarray(uv, dtype=np.float32))
        tex_index = add_image_texture(b, texture, MIME[texture_format])
    idx_dtype = np.uint16 if len(pos) < 65535 else np.uint32
    ind = b.add_accessor(np.asarray(triangles, dtype=idx_dtype).reshape(-1), target=ELEMENT_ARRAY_BUFFER)
    mat = add_material(b, texture=tex_index, color=(1, 1, 1, 1) if tex_index is not None else color)
    mesh = b.add_mesh([{"attributes": attrs, "indices": ind, "material": mat, "mode": TRIANGLES}])
    b.add_node(mesh, translation=enu_to_gltf(centre[None, :])[0])
    return b.to_glb()


@dataclass
class TerrainTileNode:
    """One tile of the terrain quadtree for the tileset writer."""

    level: int
    tx: int
    ty: int
    lo: np.ndarray  # ENU min corner of its content (and children)
    hi: np.ndarray
    geometric_error: float
    uri: str | None
    children: list[TerrainTileNode] = field(default_factory=list)


def terrain_tileset(root: TerrainTileNode, transform: list[float], tileset_version: str | None) -> dict:
    """Explicit quadtree tileset.json (REPLACE refinement; root carries the project frame transform)."""

    def node(t: TerrainTileNode) -> dict[str, Any]:
        d: dict[str, Any] = {
            "boundingVolume": {"box": box_from_bounds(t.lo, t.hi, pad=0.01)},
            "geometricError": float(round(t.geometric_error, 4)),
        }
        if t.uri:
            d["content"] = {"uri": t.uri}
        if t.children:
            d["children"] = [node(c) for c in t.children]
        return d

    r = node(root)
    r["refine"] = "REPLACE"
    r["transform"] = [float(v) for v in transform]
    return {
        "asset": asset("1.1", tileset_version),
        # CesiumJS decides whether to draw the root at all from the tileset's error: keep it at least the
        # size of the data, or the layer vanishes a few hundred metres away on flat terrain.
        "geometricError": float(
            round(max(root.geometric_error * 2, float(np.linalg.norm(root.hi - root.lo))), 4)
        ),
        "root": r,
    }
