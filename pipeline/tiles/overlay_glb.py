"""Feature meshes (overlay polygons, change-coloured buildings) as GLB with 3D Tiles 1.1 metadata.

One triangle primitive per tile: POSITION (relative to the tile centre), NORMAL, COLOR_0 (class colour,
linear), _FEATURE_ID_0 -> EXT_mesh_features -> one EXT_structural_metadata property table (one row per
feature). Also the small explicit tileset writer for such layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.tiles.gltf import (
    ELEMENT_ARRAY_BUFFER,
    TRIANGLES,
    GltfBuilder,
    add_property_table,
    enu_to_gltf,
    metadata_property_schema,
    set_metadata_schema,
)
from pipeline.tiles.terrain_glb import add_material
from pipeline.tiles.tileset import asset, box_from_bounds


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def feature_mesh_glb(
    positions_enu: np.ndarray,
    normals_enu: np.ndarray,
    triangles: np.ndarray,
    feature_ids: np.ndarray,
    colours_srgb: np.ndarray,
    *,
    class_id: str,
    columns: dict[str, np.ndarray | list[str]],
    class_properties: dict[str, dict[str, Any]] | None = None,
    unlit: bool = False,
    double_sided: bool = False,
) -> bytes:
    """positions/normals (N,3) ENU float64, triangles (M,3) CCW seen from outside, feature_ids (N,)
    indices into the property table rows, colours_srgb (N,4) uint8."""
    pos = np.asarray(positions_enu, dtype=np.float64)
    centre = (pos.min(axis=0) + pos.max(axis=0)) / 2
    b = GltfBuilder()
    attrs = {
        "POSITION": b.add_accessor(enu_to_gltf(pos - centre).astype(np.float32), with_bounds=True),
        "NORMAL": b.add_accessor(enu_to_gltf(np.asarray(normals_enu, dtype=np.float64)).astype(np.float32)),
        "COLOR_0": b.add_accessor(
            np.concatenate(
                [srgb_to_linear(colours_srgb[:, :3]), np.asarray(colours_srgb[:, 3:4], float) / 255], axis=1
            ).astype(np.float32)
        ),
        "_FEATURE_ID_0": b.add_accessor(np.asarray(feature_ids, dtype=np.float32)),
    }
    idx_dtype = np.uint16 if len(pos) < 65535 else np.uint32
    ind = b.add_accessor(np.asarray(triangles, dtype=idx_dtype).reshape(-1), target=ELEMENT_ARRAY_BUFFER)
    mat = add_material(b, unlit=unlit, double_sided=double_sided)
    count = int(max(len(v) for v in columns.values())) if columns else 0
    props: dict[str, Any] = {}
    for key, values in columns.items():
        props[key] = metadata_property_schema(values, **(class_properties or {}).get(key, {}))
    set_metadata_schema(b, {"id": f"{class_id}_schema", "classes": {class_id: {"properties": props}}})
    table = add_property_table(b, class_id, columns, count)
    b.use_extension("EXT_mesh_features")
    prim = {
        "attributes": attrs,
        "indices": ind,
        "material": mat,
        "mode": TRIANGLES,
        "extensions": {
            "EXT_mesh_features": {
                "featureIds": [{"featureCount": count, "attribute": 0, "propertyTable": table}]
            }
        },
    }
    mesh = b.add_mesh([prim])
    b.add_node(mesh, translation=enu_to_gltf(centre[None, :])[0])
    return b.to_glb()


def flat_tileset(
    tiles: list[tuple[str, np.ndarray, np.ndarray]],
    transform: list[float],
    tileset_version: str | None,
    geometric_error: float = 50.0,
) -> dict[str, Any]:
    """Root without content over leaf tiles (uri, lo, hi) in the project ENU frame."""
    lo = np.min([t[1] for t in tiles], axis=0)
    hi = np.max([t[2] for t in tiles], axis=0)
    children = [
        {
            "boundingVolume": {"box": box_from_bounds(tl, th, pad=0.01)},
            "geometricError": 0.0,
            "content": {"uri": u},
        }
        for u, tl, th in tiles
    ]
    return {
        "asset": asset("1.1", tileset_version),
        "geometricError": float(geometric_error * 2),
        "root": {
            "boundingVolume": {"box": box_from_bounds(lo, hi, pad=0.01)},
            "geometricError": float(geometric_error),
            "refine": "ADD",
            "transform": [float(v) for v in transform],
            "children": children,
        },
    }
