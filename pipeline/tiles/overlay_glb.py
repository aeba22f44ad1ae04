"""Feature meshes (overlay polygons, change-coloured buildings) as GLB with 3D Tiles 1.1 metadata.

One triangle primitive per tile (plus, optionally, one line primitive of outlines): POSITION (relative to the tile centre), NORMAL, COLOR_0 (class colour,
linear), _FEATURE_ID_0 -> EXT_mesh_features -> one EXT_structural_metadata property table (one row per
feature). Outlines (e.g. parcel edges) are a LINES primitive of their own, in one fixed colour and without
feature ids, so a 3D Tiles style colouring the features leaves them as they are. Also the small explicit
tileset writer for such layers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.tiles.gltf import (
    ELEMENT_ARRAY_BUFFER,
    LINES,
    TRIANGLES,
    GltfBuilder,
    add_property_table,
    enu_to_gltf,
    metadata_property_schema,
    set_metadata_schema,
)
from pipeline.tiles.terrain_glb import add_material
from pipeline.tiles.tileset import QuadTile, quadtree_tilesets


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
    outline_enu: np.ndarray | None = None,
    outline_segments: np.ndarray | None = None,
    outline_srgb: tuple[int, int, int, int] = (245, 245, 245, 255),
) -> bytes:
    """positions/normals (N,3) ENU float64, triangles (M,3) CCW seen from outside, feature_ids (N,)
    indices into the property table rows, colours_srgb (N,4) uint8. `outline_enu` (L,3) ENU float64 and
    `outline_segments` (K,2) indices into it: line segments drawn in `outline_srgb` (unlit)."""
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
    prims = [prim]
    if outline_enu is not None and outline_segments is not None and len(outline_segments):
        lpos = np.asarray(outline_enu, dtype=np.float64)
        lind = np.asarray(outline_segments).reshape(-1)
        ltype = np.uint16 if len(lpos) < 65535 else np.uint32
        colour = (*(float(v) for v in srgb_to_linear(np.array(outline_srgb[:3]))), 1.0)
        prims.append(
            {
                "attributes": {
                    "POSITION": b.add_accessor(
                        enu_to_gltf(lpos - centre).astype(np.float32), with_bounds=True
                    )
                },
                "indices": b.add_accessor(lind.astype(ltype), target=ELEMENT_ARRAY_BUFFER),
                "material": add_material(b, color=colour, unlit=True),  # type: ignore[arg-type]
                "mode": LINES,
            }
        )
    mesh = b.add_mesh(prims)
    b.add_node(mesh, translation=enu_to_gltf(centre[None, :])[0])
    return b.to_glb()


def grid_tilesets(
    tiles: list[tuple[int, int, str, np.ndarray, np.ndarray]],
    transform: list[float],
    tileset_version: str | None,
    geometric_error: float = 50.0,
) -> dict[str, dict[str, Any]]:
    """Tilesets over the feature tiles of a square grid, (column, row, uri, lo, hi) in the project ENU frame:
    a quadtree over the grid (ADD refinement; its inner tiles have no content and `geometric_error`,
    the feature tiles are its leaves with 0), split into external tilesets every few levels
    (`pipeline.tiles.tileset.quadtree_tilesets`): the root file stays the same size whatever the
    region's, and a viewer loads only the feature tiles near the camera, not every tile of the region.
    {path relative to the layer folder: document}, `tileset.json` first."""
    if not tiles:
        raise ValueError("grid_tilesets: no tiles")
    cols = np.array([t[0] for t in tiles])
    rows = np.array([t[1] for t in tiles])
    c0, r0 = int(cols.min()), int(rows.min())
    span = int(max(cols.max() - c0, rows.max() - r0)) + 1
    depth = max(1, math.ceil(math.log2(span)))  # at least one inner level: the root has no content
    leaves = {(c - c0, r - r0): (uri, lo, hi) for c, r, uri, lo, hi in tiles}

    def node(level: int, tx: int, ty: int) -> QuadTile | None:
        if level == depth:
            leaf = leaves.get((tx, ty))
            if leaf is None:
                return None
            uri, lo, hi = leaf
            return QuadTile(level, tx, ty, np.asarray(lo, float), np.asarray(hi, float), 0.0, uri)
        kids = [node(level + 1, 2 * tx + dx, 2 * ty + dy) for dy in (0, 1) for dx in (0, 1)]
        present = [k for k in kids if k is not None]
        if not present:
            return None
        lo = np.min([k.lo for k in present], axis=0)
        hi = np.max([k.hi for k in present], axis=0)
        return QuadTile(level, tx, ty, lo, hi, float(geometric_error), None, present)

    root = node(0, 0, 0)
    if root is None:  # unreachable: `tiles` is not empty
        raise ValueError("grid_tilesets: no tiles")
    return quadtree_tilesets(
        root,
        transform,
        tileset_version,
        refine="ADD",
        tileset_error=lambda t: 2 * float(geometric_error),
    )
