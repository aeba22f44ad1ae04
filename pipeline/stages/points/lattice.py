"""The reprojection lattice of a point file and the PROJ transformers behind it, cached per process.

The planner builds each file's lattice once (`with_lattice`) and ships it with the file job unless it is
large; a decode task that gets none builds it here (`lattice_for`). pyproj and the lattice builder are
imported on first use: point workers start without PROJ.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from pipeline.errors import TwinError
from pipeline.frame import ProjectFrame

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig
    from pipeline.stages.points.decode import FileJob

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


@functools.lru_cache(maxsize=32)
def lattice_for(
    crs_wkt: str,
    crs_cfg: CrsConfig,
    frame: ProjectFrame,
    mins,
    maxs,
    z_factor: float,
    path: str,
    aoi: tuple[float, float, float, float] | None = None,
):
    from pyproj import CRS

    from pipeline.stages.points.reproject import build_lattice

    return build_lattice(
        _transformer(crs_wkt, crs_cfg, aoi), frame, CRS.from_wkt(crs_wkt), mins, maxs, z_factor, path=path
    )


AOI_PAD_DEG = 0.05  # margin around the files' geographic bounds (lattice nodes reach beyond them)


def area_of_interest(
    crs_wkt: str, boxes: list[tuple[tuple, tuple]]
) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) degrees around the (mins, maxs) boxes given in the CRS, padded; None when
    it cannot be determined (then PROJ searches all candidate operations, as before)."""
    import math

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


def with_lattice(fj: FileJob, frame: ProjectFrame, crs_cfg: CrsConfig) -> FileJob:
    """The file job carrying its lattice (built here once, not in every worker), unless it is large."""
    info = fj.info
    lat = lattice_for(fj.crs_wkt, crs_cfg, frame, info.mins, info.maxs, fj.z_factor, str(info.path), fj.aoi)
    if lat.values.nbytes > MAX_SHIPPED_LATTICE_BYTES:
        return fj
    return dataclasses.replace(fj, lattice=lat)
