"""Synthetic airborne-laser-scan-like LAS/LAZ files for tests and benchmarks: terrain, buildings, trees.

Deterministic for a given seed. Coordinates in EPSG:25832 (+ DHHN2016 heights, as in NRW deliveries).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_points(
    n: int, *, x0: float = 362_000.0, y0: float = 5_702_000.0, size: float = 1000.0, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = x0 + rng.random(n) * size
    y = y0 + rng.random(n) * size
    ground = 60.0 + 8.0 * np.sin(x / 180.0) + 5.0 * np.cos(y / 130.0)
    cls = np.full(n, 2, dtype=np.uint8)
    z = ground + rng.normal(0.0, 0.03, n)
    # buildings: a 40 m grid of 18 m boxes, 6-25 m high
    bx = np.floor((x - x0) / 40.0)
    by = np.floor((y - y0) / 40.0)
    inb = (((x - x0) % 40.0) < 18.0) & (((y - y0) % 40.0) < 18.0) & (((bx + by) % 3) != 0)
    bh = 6.0 + ((bx * 7 + by * 13) % 20)
    z = np.where(inb, ground + bh + rng.normal(0, 0.02, n), z)
    cls[inb] = 20
    # trees
    tree = (~inb) & (rng.random(n) < 0.15)
    z = np.where(tree, ground + rng.random(n) * 15.0, z)
    cls[tree] = 20
    nret = np.where(tree, rng.integers(1, 4, n), 1).astype(np.uint8)
    ret = np.minimum(rng.integers(1, 4, n), nret).astype(np.uint8)
    order = np.argsort(y // 50.0 * 1e7 + x, kind="stable")  # flight-line-like order
    gps = 3.0e8 + np.arange(n) * 1e-5
    out: dict[str, np.ndarray] = {
        "x": x[order],
        "y": y[order],
        "z": z[order],
        "classification": cls[order],
        "intensity": rng.integers(0, 4096, n).astype(np.uint16),
        "return_number": ret[order],
        "number_of_returns": nret[order],
        "gps_time": gps,
        "point_source_id": (np.arange(n) // max(n // 7, 1)).astype(np.uint16),
    }
    out["red"] = ((out["z"] - 50.0) * 2000.0).clip(0, 65535).astype(np.uint16)
    out["green"] = (out["intensity"].astype(np.uint32) * 16).clip(0, 65535).astype(np.uint16)
    out["blue"] = np.full(n, 30000, dtype=np.uint16)
    return out


def write_las(
    path: Path,
    pts: dict[str, np.ndarray],
    *,
    point_format: int = 3,
    crs: str | None = "EPSG:25832+7837",
    scale: float = 0.01,
    version: str = "1.2",
    chunk_size: int = 50_000,
) -> Path:
    """Write points as LAS or LAZ (by suffix) with laspy's single-threaded lazrs backend."""
    import laspy
    from pyproj import CRS

    h = laspy.LasHeader(point_format=point_format, version=version)
    h.scales = np.array([scale, scale, scale])
    h.offsets = np.array(
        [np.floor(pts["x"].min()), np.floor(pts["y"].min()), np.floor(pts["z"].min())], dtype=np.float64
    )
    if crs:
        c = CRS.from_user_input(crs)
        if c.to_epsg() is not None and not c.is_compound and version != "1.4":
            h.add_crs(c)  # GeoTIFF keys
        else:
            from laspy.vlrs.known import WktCoordinateSystemVlr

            h.vlrs.append(WktCoordinateSystemVlr(c.to_wkt()))
    las = laspy.LasData(h)
    las.x, las.y, las.z = pts["x"], pts["y"], pts["z"]
    dims = set(las.point_format.dimension_names)
    for name in pts:  # every standard LAS field the points carry and the point format has
        if name not in ("x", "y", "z") and name in dims:
            setattr(las, name, pts[name])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".laz":
        # laspy's single-threaded lazrs backend (never the rayon-parallel one) writes chunks of 50,000
        # points; another chunk size takes LASzip variable-size chunks
        las.write(path, do_compress=True, laz_backend=_lazrs_chunked(chunk_size))
    else:
        las.write(path)
    return path


def _lazrs_chunked(chunk_size: int):
    """laspy's single-threaded lazrs backend, writing chunks of `chunk_size` points (variable-size chunks
    unless 50,000: lazrs' writer offers no other fixed size)."""
    import laspy
    import lazrs
    from laspy._compression import lazrsbackend

    if chunk_size == 50_000:
        return laspy.LazBackend.Lazrs

    class Writer(lazrsbackend.LazrsPointWriter):
        def __init__(self, dest, point_format) -> None:
            super().__init__(dest, point_format, parallel=False)
            self.vlr = lazrs.LazVlr.new_for_compression(point_format.id, point_format.num_extra_bytes, True)

        def write_points(self, points) -> None:
            for s in range(0, len(points), chunk_size):
                if s:  # a chunk ends where the next begins (no empty chunk at the end)
                    assert self.compressor is not None
                    self.compressor.finish_current_chunk()
                super().write_points(points[s : s + chunk_size])

    class Backend(lazrsbackend.LazrsBackend):
        def create_writer(self, dest, header):
            return Writer(dest, header.point_format)

    return Backend(parallel=False)
