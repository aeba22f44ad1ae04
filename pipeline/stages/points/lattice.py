"""The reprojection lattice of a point file: source CRS -> project ENU millimetres through an exact PROJ
lattice plus trilinear interpolation (`kernels.lattice_to_enu_keys`).

PROJ is evaluated exactly on lattice nodes (default every 50 m horizontally, nodes anchored to a global grid
in the source CRS so every work unit of a file uses identical node values); the numba kernel interpolates
between them. The map source -> ECEF is exactly linear in the height, and over 50 m the curvature terms stay
far below a millimetre (tested against per-point pyproj in tests/unit/test_points_kernels.py).

The planner builds each file's lattice once (`shipped_lattice`) and ships it with the file job unless it is
large; a decode task that gets none builds it here (`lattice_for`). The transformers are cached per process;
pyproj is imported on first use: point workers start without PROJ.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import CrsError, TwinError
from pipeline.frame import Lattice, ProjectFrame

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig
    from pipeline.stages.points.decode import FileJob

LATTICE_SPACING_M = 50.0
MAX_LATTICE_NODES = 2_000_000
MAX_SHIPPED_LATTICE_BYTES = 4 * 2**20  # larger lattices are rebuilt by each worker instead of pickled


@functools.lru_cache(maxsize=32)
def _transformer(crs_wkt: str, crs_cfg: CrsConfig, aoi: tuple[float, float, float, float] | None = None):
    from pyproj import CRS, Transformer

    from pipeline.crs import ECEF, make_transformer
    from pipeline.sources.pointcloud.crs import local_anchor

    crs = CRS.from_wkt(crs_wkt)
    anchor = local_anchor(crs)
    if anchor is not None:  # a local engineering frame: east-north-up about the anchor, exactly
        lon, lat, h = anchor
        return Transformer.from_pipeline(
            f"+proj=pipeline +step +inv +proj=topocentric +lon_0={lon!r} +lat_0={lat!r} +h_0={h!r} +ellps=WGS84"
        )
    return make_transformer(crs, ECEF, crs_cfg, area_of_interest=aoi)


AOI_PAD_DEG = 0.05  # margin around the files' geographic bounds (lattice nodes reach beyond them)


def area_of_interest(
    crs_wkt: str, boxes: list[tuple[tuple, tuple]]
) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) degrees around the (mins, maxs) boxes given in the CRS, padded; None when
    it cannot be determined (then PROJ searches all candidate operations, as before)."""
    from pyproj import CRS, Transformer
    from pyproj.exceptions import ProjError

    try:
        crs = CRS.from_wkt(crs_wkt)
        h = crs.sub_crs_list[0] if crs.is_compound and crs.sub_crs_list else crs
        geo = h.geodetic_crs
        if geo is None:
            return None
        t = Transformer.from_crs(h, geo, always_xy=True)  # transform_bounds needs the CRSs, not a pipeline
        w, s, e, n = math.inf, math.inf, -math.inf, -math.inf
        for mins, maxs in boxes:
            b = t.transform_bounds(mins[0], mins[1], maxs[0], maxs[1], densify_pts=21)
            w, s, e, n = min(w, b[0]), min(s, b[1]), max(e, b[2]), max(n, b[3])
    except (ProjError, ValueError, IndexError):
        return None
    if not all(math.isfinite(v) for v in (w, s, e, n)) or w > e or s > n or e - w > 90:
        return None
    p = AOI_PAD_DEG
    return (max(w - p, -180.0), max(s - p, -90.0), min(e + p, 180.0), min(n + p, 90.0))


def ecef_transformer_for(crs_wkt: str, crs_cfg: CrsConfig, path=None, aoi=None):
    """The (cached) source -> ECEF transformer of a CRS: creating one costs PROJ 0.3-0.4 s (0.05 s with
    an area of interest)."""
    try:
        return _transformer(crs_wkt, crs_cfg, aoi)
    except TwinError as e:
        if e.path is None and path is not None:
            raise type(e)(e.message, path=path, record=e.record) from e
        raise


def shipped_lattice(fj: FileJob, frame: ProjectFrame, crs_cfg: CrsConfig) -> Lattice | None:
    """The lattice the planner ships with a file job (built here once, not in every worker); None if large."""
    info = fj.info
    lat = lattice_for(fj.crs_wkt, crs_cfg, frame, info.mins, info.maxs, fj.z_factor, str(info.path), fj.aoi)
    return None if lat.values.nbytes > MAX_SHIPPED_LATTICE_BYTES else lat


@functools.lru_cache(maxsize=32)
def lattice_for(
    crs_wkt: str,
    crs_cfg: CrsConfig,
    frame: ProjectFrame,
    mins: tuple[float, float, float],
    maxs: tuple[float, float, float],
    z_factor: float,
    path: str,
    aoi: tuple[float, float, float, float] | None = None,
) -> Lattice:
    """Exact ENU values on a lattice covering the box [mins, maxs] (source units; Z before z_factor); cached
    per process, `path` names the file in errors."""
    from pyproj import CRS

    from pipeline.crs import linear_unit_factor

    transformer = _transformer(crs_wkt, crs_cfg, aoi)
    crs = CRS.from_wkt(crs_wkt)
    s = LATTICE_SPACING_M / (111_000.0 if crs.is_geographic else linear_unit_factor(crs))
    while True:  # the spacing doubles until the lattice has at most MAX_LATTICE_NODES nodes
        x0, x1 = math.floor(mins[0] / s) * s, math.ceil(maxs[0] / s) * s
        y0, y1 = math.floor(mins[1] / s) * s, math.ceil(maxs[1] / s) * s
        nx = max(2, round((x1 - x0) / s) + 1)
        ny = max(2, round((y1 - y0) / s) + 1)
        if nx * ny * 2 <= MAX_LATTICE_NODES:
            break
        s *= 2
    # heights: the map is linear in h, two levels on a coarse global grid suffice
    zs = 1000.0
    zlo, zhi = mins[2] * z_factor, maxs[2] * z_factor
    z0 = math.floor(zlo / zs) * zs
    z1 = max(math.ceil(zhi / zs) * zs, z0 + zs)
    nz = max(2, round((z1 - z0) / zs) + 1)
    gx = x0 + s * np.arange(nx)
    gy = y0 + s * np.arange(ny)
    gz = z0 + zs * np.arange(nz)
    X, Y, Z = np.meshgrid(gx, gy, gz, indexing="ij")
    ex, ey, ez = transformer.transform(X.ravel(), Y.ravel(), Z.ravel())
    enu = frame.ecef_to_enu(np.asarray(ex), np.asarray(ey), np.asarray(ez))
    if not np.all(np.isfinite(enu)):
        raise CrsError(
            f"PROJ cannot transform the file's extent from {crs.name} (outside the geoid grid or the CRS's "
            "valid area?)",
            path=path,
        )
    return Lattice(
        lo=np.array([x0, y0, z0], dtype=np.float64),
        step=np.array([s, s, zs], dtype=np.float64),
        values=np.ascontiguousarray(enu.reshape(nx, ny, nz, 3)),
    )
