"""E57 scans (terrestrial / mobile scanners): cartesian or spherical points, each scan with its pose.

E57 has no CRS: the scans are in a local frame that the pose places in the file's "world" frame. The
caller must give the CRS of that frame (--crs / `crs:`); a file without one is refused like a LAS without
CRS. Coordinates are doubles: we keep millimetres (scale 0.001) so the downstream path is the same as LAS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit

E57_SCALE = 0.001


def _open(path: Path):
    import pye57

    try:
        return pye57.E57(str(path))
    except Exception as e:
        raise InputError(f"cannot read E57 file: {e}", path=path) from e


def _intensity_limits(hdr) -> tuple[float, float] | None:
    """The scan's declared intensity range (E57 `intensityLimits`), or None."""
    try:
        il = hdr.node["intensityLimits"]
        return float(il["intensityMinimum"].value()), float(il["intensityMaximum"].value())
    except Exception:  # optional in E57
        return None


def intensity_u16(
    it: np.ndarray, limits: tuple[float, float] | None, path: Path, index: int = 0
) -> np.ndarray:
    """E57 intensity as the 16-bit LAS intensity, as delivered (never stretched to the scan's own min-max):
    whole numbers in 0..65535 are kept as they are; other values are mapped from the scan's declared
    `intensityLimits` (the scanner's fixed scale) to 0..65535, or from 0..1 when they lie there and no
    limits are declared; anything else is refused (no silent guess)."""
    if len(it) == 0:
        return np.zeros(0, np.uint16)
    lo_v, hi_v = float(it.min()), float(it.max())
    if lo_v >= 0 and hi_v <= 65535 and np.all(it == np.floor(it)):
        return it.astype(np.uint16)
    if limits is None and lo_v >= 0 and hi_v <= 1:
        limits = (0.0, 1.0)
    if limits is None or not limits[1] > limits[0]:
        raise InputError(
            f"scan {index}: intensity values {lo_v:g}..{hi_v:g} are neither whole numbers in 0..65535 nor "
            "within 0..1, and the scan declares no intensityLimits to map them from",
            path=path,
            record=f"scan {index}",
        )
    lo, hi = limits
    return np.clip(np.rint((it - lo) / (hi - lo) * 65535.0), 0, 65535).astype(np.uint16)


def _scan_xyz(e57, index: int, path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from pye57.utils import convert_spherical_to_cartesian

    hdr = e57.get_header(index)
    fields = set(hdr.point_fields)
    try:
        raw = e57.read_scan_raw(index, ignore_unsupported_fields=True)
    except Exception as e:
        raise InputError(f"cannot read scan {index}: {e}", path=path) from e
    if {"cartesianX", "cartesianY", "cartesianZ"} <= fields:
        xyz = np.stack([raw["cartesianX"], raw["cartesianY"], raw["cartesianZ"]], axis=1).astype(np.float64)
        invalid = raw.get("cartesianInvalidState")
    elif {"sphericalRange", "sphericalAzimuth", "sphericalElevation"} <= fields:
        rae = [raw[f] for f in ("sphericalRange", "sphericalAzimuth", "sphericalElevation")]
        xyz = convert_spherical_to_cartesian(np.stack(rae, axis=1).astype(np.float64))
        invalid = raw.get("sphericalInvalidState")
    else:
        raise InputError(f"scan {index} has neither cartesian nor spherical coordinates", path=path)
    keep = np.ones(len(xyz), dtype=bool) if invalid is None else (np.asarray(invalid) == 0)
    # the pose (pye57: the unit rotation of the pose's quaternion; identity for a zero quaternion)
    rot = hdr.rotation_matrix if np.any(hdr.rotation) else np.eye(3)
    xyz = xyz @ rot.T + np.asarray(hdr.translation, dtype=np.float64)
    xyz = xyz[keep]
    if not np.all(np.isfinite(xyz)):
        raise InputError(
            f"scan {index} contains NaN or infinite coordinates", path=path, record=f"scan {index}"
        )
    attrs: dict[str, np.ndarray] = {}
    if "intensity" in fields:
        it = np.asarray(raw["intensity"], dtype=np.float64)[keep]
        attrs["intensity"] = intensity_u16(it, _intensity_limits(hdr), path, index)
    if {"colorRed", "colorGreen", "colorBlue"} <= fields:
        for src, dst in (("colorRed", "red"), ("colorGreen", "green"), ("colorBlue", "blue")):
            c = np.asarray(raw[src], dtype=np.float64)[keep]
            scale = 257.0 if c.max(initial=0.0) <= 255 else 1.0  # 8-bit colour to 16 bits
            attrs[dst] = np.clip(c * scale, 0, 65535).astype(np.uint16)
    return xyz, attrs


def scan_e57(path: Path) -> PointFileInfo:
    e57 = _open(path)
    counts = []
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    has_rgb = True
    for i in range(e57.scan_count):
        xyz, attrs = _scan_xyz(e57, i, path)  # E57 bounds in headers are optional: compute them
        counts.append(len(xyz))
        lo = np.minimum(lo, xyz.min(axis=0, initial=np.inf))
        hi = np.maximum(hi, xyz.max(axis=0, initial=-np.inf))
        has_rgb = has_rgb and "red" in attrs
    if sum(counts) == 0:
        raise InputError("E57 file holds no points", path=path)
    return PointFileInfo(
        path=path,
        kind="e57",
        count=int(sum(counts)),
        mins=(float(lo[0]), float(lo[1]), float(lo[2])),
        maxs=(float(hi[0]), float(hi[1]), float(hi[2])),
        crs_wkt=None,
        has_rgb=has_rgb,
        has_gps=False,
        has_nir=False,
        scales=(E57_SCALE, E57_SCALE, E57_SCALE),
        scans=tuple(counts),
    )


def decode_e57_unit(info: PointFileInfo, unit: WorkUnit, *_fields, **_options) -> dict[str, np.ndarray]:
    """The points of one scan (`unit.scan`) as `las.decode_unit` names them (E57 has all fields in every
    layer: the LAS options `extra_dims` and `layers` change nothing)."""
    e57 = _open(info.path)
    xyz, attrs = _scan_xyz(e57, unit.scan, info.path)
    n = len(xyz)
    if n != unit.count:  # the file changed after its header scan
        raise InputError(f"expected {unit.count} points from scan {unit.scan}, decoded {n}", path=info.path)
    q = np.floor(xyz / E57_SCALE + 0.5)
    if np.abs(q).max(initial=0) >= 2**31:
        raise InputError("E57 coordinates exceed the millimetre integer range (±2147 km)", path=info.path)
    out: dict[str, np.ndarray] = {
        "X": q[:, 0].astype(np.int32),
        "Y": q[:, 1].astype(np.int32),
        "Z": q[:, 2].astype(np.int32),
        "intensity": attrs.get("intensity", np.zeros(n, np.uint16)),
        "classification": np.zeros(n, np.uint8),
        "return_number": np.ones(n, np.uint8),
        "number_of_returns": np.ones(n, np.uint8),
        "point_source_id": np.full(n, unit.scan, np.uint16),
    }
    if info.has_rgb:
        out |= {c: attrs[c] for c in ("red", "green", "blue")}
    return out
