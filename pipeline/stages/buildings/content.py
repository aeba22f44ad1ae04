"""One building tile: footprints + heights + attributes -> mesh in the project ENU frame -> GLB / b3dm file.

Runs on a Dask worker: it receives WKB footprints and small arrays, builds its own (cached) PROJ
transformer through the geoid, writes the file atomically and returns the content bounds for the tileset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely

from pipeline.config.model import CrsConfig
from pipeline.crs import ECEF, ProjectFrame, make_transformer, to_enu_exact, working_crs
from pipeline.stages.buildings.meshes import ToLocal, extrude_footprints
from pipeline.tiles.b3dm import b3dm_bytes
from pipeline.tiles.buildings_glb import building_glb
from pipeline.tiles.tileset import write_atomic

if TYPE_CHECKING:
    from pyproj import Transformer

_TRANSFORMERS: dict[str, Transformer] = {}


def enu_transform(frame: ProjectFrame, crs_cfg: CrsConfig) -> ToLocal:
    """(x, y, normal height) in the working CRS -> project ENU, through ECEF and the geoid grid."""
    key = crs_cfg.model_dump_json()
    t = _TRANSFORMERS.get(key)
    if t is None:
        t = make_transformer(working_crs(crs_cfg), ECEF, crs_cfg)
        _TRANSFORMERS[key] = t

    def f(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return to_enu_exact(frame, t, x, y, z)

    return f


def write_building_tile(
    path: str,
    wkb: list[bytes] | np.ndarray,
    base: np.ndarray,
    roof: np.ndarray,
    table: dict[str, np.ndarray | list],
    frame: ProjectFrame,
    crs_cfg: CrsConfig,
    lod2: list[bytes] | None = None,
    *,
    profile: str = "1.1",
    floor: bool = True,
    descriptions: dict[str, str] | None = None,
) -> tuple[list[float], list[float], int]:
    """Write one tile; returns (ENU min corner, ENU max corner, triangle count). `lod2`: per building
    a packed LoD2 roof partition (`solids.pack_partition`) or b"" (LoD1 box); with it the tile carries
    LoD2 solids and the surface of every vertex."""
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    to_local = enu_transform(frame, crs_cfg)
    surfaces = None
    if lod2 is None:
        mesh = extrude_footprints(geoms, base, roof, to_local, floor=floor)
    else:
        from pipeline.stages.buildings.solids import lod2_tile_mesh

        mesh, surfaces = lod2_tile_mesh(
            geoms, np.asarray(base), np.asarray(roof), lod2, to_local, floor=floor
        )
    lo = mesh.positions.min(axis=0)
    hi = mesh.positions.max(axis=0)
    center = np.round((lo + hi) / 2, 2)
    glb = building_glb(
        mesh.positions,
        mesh.normals,
        mesh.indices,
        mesh.feature_ids,
        center,
        table if profile == "1.1" else None,
        profile=profile,
        descriptions=descriptions,
        surfaces=surfaces,
    )
    data = glb if profile == "1.1" else b3dm_bytes(glb, table, len(base))
    write_atomic(Path(path), data)
    return [float(v) for v in lo], [float(v) for v in hi], int(len(mesh.indices) // 3)
