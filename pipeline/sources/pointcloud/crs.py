"""The CRS of a point-cloud file and the unit of its Z values. Never guesses.

Rules (documented in docs/pointcloud.md):
- CRS from --crs / `crs:` if given, else from the file (WKT VLR or GeoTIFF keys), else refused.
- A compound CRS (horizontal + vertical) is trusted: PROJ converts both units and the geoid.
- A horizontal-only CRS gets the project's vertical datum (`crs.vertical`) attached when the project
  declares one; if the horizontal unit is not the metre, the unit of Z is then ambiguous (feet? metres?)
  and the file is refused unless `z_unit` says it.
- A horizontal-only CRS without a project vertical datum is refused unless heights are declared
  ellipsoidal (`--assume-ellipsoidal` / `crs.assume_ellipsoidal_heights`); Z is then taken in the
  horizontal unit (what LAS writers in feet do), or in `z_unit` if given.
- Coordinates outside the CRS's area of use are refused (a file tagged EPSG:4326 that holds metres).
- `local:LON,LAT,H` (`twin points --crs local --anchor LON,LAT,H`): an unreferenced scan in a local
  engineering frame (metres, x east, y north, z up) whose origin is the anchor (WGS84 longitude, latitude,
  ellipsoidal height); placed exactly (PROJ's topocentric conversion), any file CRS ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyproj import CRS

from pipeline.crs import (
    check_area_of_use,
    has_vertical,
    horizontal_of,
    linear_unit_factor,
    parse_crs,
    resolve_source_crs,
)
from pipeline.errors import CrsError
from pipeline.sources.pointcloud.header import PointFileInfo

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig

Z_UNITS = {"m": 1.0, "ft": 0.3048, "us-ft": 1200.0 / 3937.0}


@dataclass(frozen=True)
class FileCrs:
    crs: CRS  # 3D-capable CRS handed to PROJ
    z_factor: float  # multiply the file's Z by this before PROJ
    note: str = ""


def _vertical_unit(crs: CRS) -> float:
    """Metres per unit of the CRS's vertical part (the last one listed; 1.0 without one)."""
    units = [linear_unit_factor(s) for s in crs.sub_crs_list or [] if s.is_vertical]
    return units[-1] if units else 1.0


LOCAL_PREFIX = "local:"
LOCAL_NAME = "twin local ENU frame at anchor"


def parse_anchor(text: str) -> tuple[float, float, float]:
    """`LON,LAT,H` (degrees WGS84, metres above the ellipsoid) -> floats; CrsError when malformed."""
    try:
        lon, lat, h = (float(v) for v in text.split(","))
    except ValueError:
        raise CrsError(f"anchor {text!r} is not LON,LAT,H (e.g. 7.2160,51.4818,95.0)") from None
    if not all(math.isfinite(v) for v in (lon, lat, h)) or abs(lat) > 90 or abs(lon) > 180:
        raise CrsError(f"anchor {text!r}: longitude must lie in -180..180 and latitude in -90..90")
    return lon, lat, h


def local_crs(anchor: tuple[float, float, float]) -> CRS:
    """The CRS recorded for a local-frame scan: a 3D orthographic projection about the anchor (its x/y are
    the tangent plane's east/north) named after the anchor; `local_anchor` recognises it and the tiler
    places its points with the exact topocentric conversion (z up from the anchor, not the ellipsoid)."""
    lon, lat, h = anchor
    base = CRS.from_proj4(f"+proj=ortho +lat_0={lat!r} +lon_0={lon!r} +x_0=0 +y_0=0 +ellps=WGS84 +units=m")
    d = base.to_3d().to_json_dict()
    d["name"] = f"{LOCAL_NAME} {lon!r},{lat!r},{h!r}"
    return CRS.from_json_dict(d)


def local_anchor(crs: CRS) -> tuple[float, float, float] | None:
    """The anchor of a `local_crs`, or None for any other CRS."""
    if not crs.name.startswith(LOCAL_NAME + " "):
        return None
    return parse_anchor(crs.name[len(LOCAL_NAME) + 1 :])


def resolve_file_crs(
    info: PointFileInfo, override: str | None, cfg: CrsConfig, z_unit: str | None = None
) -> FileCrs:
    path = info.path
    if z_unit is not None and z_unit not in Z_UNITS:
        raise CrsError(f"unknown Z unit {z_unit!r} (use one of {sorted(Z_UNITS)})", path=path)
    if override is not None and override.startswith(LOCAL_PREFIX):
        anchor = parse_anchor(override[len(LOCAL_PREFIX) :])
        zf = Z_UNITS[z_unit] if z_unit else 1.0
        note = f"local frame at anchor {anchor[0]!r},{anchor[1]!r},{anchor[2]!r} (x east, y north, z up)"
        if info.crs_wkt:
            note += f"; the file's own CRS ({parse_crs(info.crs_wkt, path=path).name}) is ignored"
        return FileCrs(local_crs(anchor), zf, note)
    if info.crs_error and not override:
        raise CrsError(
            f"the file's CRS record cannot be read ({info.crs_error}); set the CRS with --crs / `crs:`",
            path=path,
        )
    if not (override or info.crs_wkt):
        raise CrsError(
            "file has no CRS (no WKT / GeoTIFF keys); set it with --crs or the source's `crs:` in the config",
            path=path,
        )
    given = parse_crs(override or info.crs_wkt or "", path=path)  # the file's WKT was written by PROJ
    horiz = horizontal_of(given)
    hfac = linear_unit_factor(horiz)
    if not override:
        _check_label(info, given)
    if given.is_geocentric:
        raise CrsError("geocentric point clouds are not supported; reproject to a projected CRS", path=path)
    xy = (info.mins[0], info.mins[1], info.maxs[0], info.maxs[1])
    area_note = ""
    try:
        check_area_of_use(horiz, xy, path=path)
    except CrsError as e:
        if not override:
            raise
        # an explicit --crs / `crs:` wins over every check of the file's own label; said in the summary
        area_note = f"--crs {override} kept although {e.message.split('; ')[0]}"
    if has_vertical(given):
        # compound (or geographic 3D): PROJ knows the vertical unit; a z_unit only rescales when asked
        zf = 1.0 if z_unit is None else Z_UNITS[z_unit] / _vertical_unit(given)
        return FileCrs(given, zf, area_note)
    if cfg.vertical is not None and not cfg.assume_ellipsoidal_heights:
        crs = resolve_source_crs(given, None, cfg, path=path)
        if abs(hfac - 1.0) > 1e-12 and z_unit is None:
            raise CrsError(
                f"ambiguous units: the CRS {horiz.name!r} is in {horiz.axis_info[0].unit_name} without a "
                f"vertical CRS, and the project's vertical datum {cfg.vertical} is in metres; say which unit "
                "Z is in (--z-unit m|ft|us-ft) or give a compound CRS with --crs / `crs:`",
                path=path,
            )
        note = "; ".join(n for n in (f"vertical {cfg.vertical} attached", area_note) if n)
        return FileCrs(crs, (Z_UNITS[z_unit] if z_unit else 1.0) / _vertical_unit(crs), note)
    if not cfg.assume_ellipsoidal_heights:
        raise CrsError(
            f"the CRS {horiz.name!r} has no vertical component, so the heights' datum is unknown; give a "
            "compound CRS (e.g. --crs EPSG:25832+7837) or declare the heights ellipsoidal with "
            "--assume-ellipsoidal",
            path=path,
        )
    zf = Z_UNITS[z_unit] if z_unit else hfac
    note = "" if abs(zf - 1.0) < 1e-12 else f"Z taken as ellipsoidal height in units of {zf} m"
    note = "; ".join(n for n in (note, area_note) if n)
    return FileCrs(given.to_3d(), zf, note)


EARTH_RADIUS_RANGE_M = (6.30e6, 6.42e6)  # distance of any point near the surface from the Earth's centre


def _check_label(info: PointFileInfo, crs: CRS) -> None:
    """A file labelled geographic or geocentric whose coordinates cannot be degrees / geocentric metres
    (projected-looking eastings and northings, heights near the ground) is mislabelled: say so, and that
    --crs is the fix (reprojecting such a file would wreck it)."""
    lo, hi = info.mins, info.maxs
    looks = f"x {lo[0]:.2f}..{hi[0]:.2f}, y {lo[1]:.2f}..{hi[1]:.2f}, z {lo[2]:.2f}..{hi[2]:.2f}"
    if crs.is_geocentric:
        c = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
        r = math.sqrt(sum(v * v for v in c))
        if EARTH_RADIUS_RANGE_M[0] <= r <= EARTH_RADIUS_RANGE_M[1]:
            return
        what = (
            f"geocentric ({crs.name}), but the coordinates ({looks}) lie {r / 1000:,.0f} km from the "
            "Earth's centre"
        )
    elif crs.is_geographic:
        if lo[0] >= -180 and hi[0] <= 360 and lo[1] >= -90 and hi[1] <= 90:
            return
        what = f"geographic ({crs.name}), but the coordinates ({looks}) are not degrees"
    else:
        return
    raise CrsError(
        f"the file's CRS says {what}: the CRS looks mislabelled, coordinates look projected: give --crs "
        "(the delivery's projected CRS, e.g. --crs EPSG:25832+7837); do not reproject the file",
        path=info.path,
    )
