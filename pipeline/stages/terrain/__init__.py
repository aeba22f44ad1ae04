"""Terrain: DGM (or rasterised ground points) -> LOD pyramid of textured meshes in the project frame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from pipeline.config.model import CrsConfig
from pipeline.crs import (
    ECEF,
    ProjectFrame,
    has_vertical,
    linear_unit_factor,
    make_transformer,
    parse_crs,
    to_enu_exact,
)
from pipeline.sources.rasters import Bounds, RasterInfo
from pipeline.stages.terrain.pyramid import (
    TerrainPlan,
    level_errors,
    level_vertex_heights,
    plan_terrain,
    tile_grid_mesh,
)
from pipeline.stages.terrain.rasterise import CellAccumulator, cell_stat, fill_all, fill_gaps

__all__ = [
    "CellAccumulator",
    "TerrainPlan",
    "TerrainTileContent",
    "cell_stat",
    "fill_all",
    "fill_gaps",
    "level_errors",
    "level_vertex_heights",
    "normal_to_enu",
    "plan_terrain",
    "terrain_tile",
    "tile_grid_mesh",
]


@dataclass
class TerrainTileContent:
    level: int
    tx: int
    ty: int
    glb: bytes | None
    lo: np.ndarray | None  # ENU bounds of the mesh
    hi: np.ndarray | None
    vertices: int = 0
    triangles: int = 0


@cache
def _to_ecef(source_crs: str, crs_cfg: CrsConfig):
    # building a grid-based transformer costs ~0.5 s: once per process
    return make_transformer(parse_crs(source_crs), ECEF, crs_cfg)


@cache
def z_unit_m(source_crs: str) -> float:
    """Metres per unit of Z. A compound CRS tells PROJ its vertical unit (factor 1); heights of a
    horizontal-only CRS (declared ellipsoidal) are in its horizontal unit, as for point clouds
    (pipeline.sources.pointcloud.crs): a DGM or ground points in US feet must not become metres."""
    crs = parse_crs(source_crs)
    return 1.0 if has_vertical(crs) else linear_unit_factor(crs)


def normal_to_enu(xyh: np.ndarray, source_crs: str, crs_cfg: CrsConfig, frame: ProjectFrame) -> np.ndarray:
    """(N,3) E, N, normal height in `source_crs` -> project ENU via ECEF (geoid applied by PROJ)."""
    t = _to_ecef(source_crs, crs_cfg)
    return to_enu_exact(frame, t, xyh[:, 0], xyh[:, 1], xyh[:, 2] * z_unit_m(source_crs))


def terrain_tile(
    level: int,
    tx: int,
    ty: int,
    vertex_heights: np.ndarray,
    bounds: Bounds,
    *,
    source_crs: str,
    crs_cfg: CrsConfig,
    frame: ProjectFrame,
    ortho: Sequence[RasterInfo] | None = None,
    rgb_bands: Sequence[int] = (1, 2, 3),
    texture_px: int = 256,
    texture_format: str = "jpeg",
    texture_quality: int = 85,
    texture_subsampling: str = "4:4:4",
    skirt: float = 0.0,
    texture: bytes | None = None,
    mesh_encoding: str = "float",
) -> TerrainTileContent:
    """Mesh + texture + GLB of one tile of the pyramid (pure: arrays and paths in, bytes out).

    `texture`: the tile's encoded image when it was made elsewhere (the chunked pyramid); otherwise it is
    read from `ortho`."""
    from pipeline.stages.imagery import texture_for_bounds
    from pipeline.tiles.terrain_glb import terrain_glb

    xyh, uv, tris, _ = tile_grid_mesh(vertex_heights, bounds, skirt)
    if not len(tris):
        return TerrainTileContent(level, tx, ty, None, None, None)
    enu = normal_to_enu(xyh, source_crs, crs_cfg, frame)
    tex = texture
    if tex is None and ortho:
        tex = texture_for_bounds(
            ortho,
            bounds,
            crs_cfg.horizontal,
            texture_px,
            rgb_bands,
            texture_format,
            texture_quality,
            texture_subsampling,
        )
    glb = terrain_glb(
        enu,
        tris,
        uv=uv if tex else None,
        texture=tex,
        texture_format=texture_format,
        mesh_encoding=mesh_encoding,
    )
    return TerrainTileContent(level, tx, ty, glb, enu.min(axis=0), enu.max(axis=0), len(enu), len(tris))
