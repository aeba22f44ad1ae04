"""Hot loops of the point tiler (numba, `cache=True`), each with a pure-numpy reference version the tests
compare against. One module per concern; this package exports them all (`kernels.X`).

- `lattice_to_enu_mm`: trilinear interpolation of an exact PROJ lattice (source CRS -> project ENU),
  straight from the file's integer coordinates to integer millimetres.
- `morton_keys`: 3D Morton (z-order) keys of integer cell coordinates.
- `point_hash`: deterministic 64-bit hash of a point's millimetre position (the sampling priority).
- `select_levels`: the nested min-hash level of detail of one bin (see docs/pointcloud.md).
"""

from __future__ import annotations

import numpy as np

from pipeline.stages.points.kernels.enu import (
    lattice_to_enu_keys,
    lattice_to_enu_mm,
    lattice_to_enu_mm_reference,
)
from pipeline.stages.points.kernels.keys import (
    keys_and_hashes,
    morton_keys,
    morton_keys_reference,
    point_hash,
    sort_order,
    spill_lower_bound,
)
from pipeline.stages.points.kernels.lod import (
    apply_level_order,
    level_order,
    select_levels,
    select_levels_reference,
)
from pipeline.stages.points.kernels.records import (
    byte_histogram,
    gather_records_reference,
    pack_typed,
    quantize_tiles,
    rgb_max,
    take_rows,
    tile_vertices,
)

__all__ = [
    "apply_level_order",
    "byte_histogram",
    "gather_records_reference",
    "keys_and_hashes",
    "lattice_to_enu_keys",
    "lattice_to_enu_mm",
    "lattice_to_enu_mm_reference",
    "level_order",
    "morton_keys",
    "morton_keys_reference",
    "pack_typed",
    "point_hash",
    "quantize_tiles",
    "rgb_max",
    "select_levels",
    "select_levels_reference",
    "sort_order",
    "spill_lower_bound",
    "take_rows",
    "tile_vertices",
    "warm_all",
]


def warm_all() -> None:
    """Load every kernel from numba's on-disk cache (or compile and cache it once) with the argument types
    the stages pass: strided int32 record fields, writable arrays. Worker pools call this at start, the
    benchmark before timing, so no timed run pays for compilation after the kernels' source changed."""
    from types import SimpleNamespace

    rec = np.zeros(4, dtype=[("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("c", "u1")])
    x, y, z = rec["x"], rec["y"], rec["z"]
    lat = SimpleNamespace(lo=np.zeros(3), step=np.ones(3), values=np.zeros((2, 2, 2, 3)))
    org = np.zeros(3, np.int64)
    xyz, _k, _b, *_ = lattice_to_enu_keys(x, y, z, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 1.0, lat, org, 0)
    morton_keys(xyz, org, 0)
    point_hash(xyz)
    keys, hashes = keys_and_hashes(x, y, z, org, 0)
    spill_lower_bound(x, y, z, org, 0, 0, 4, 1)
    ro = rec.copy()
    ro.setflags(write=False)  # spill files are memory-mapped read-only
    spill_lower_bound(ro["x"], ro["y"], ro["z"], org, 0, 0, 4, 1)
    sort_order(keys, 64)  # with dropped bits: the run fix-up kernel
    sort_order(keys, 2)
    select_levels(np.sort(keys), hashes, 8, 0, 2, 6, 10)
    level_order(np.zeros(4, np.int8))
    apply_level_order(np.arange(4), np.arange(4), np.zeros(4, np.uint64), np.zeros(4, np.int8), 0, 8, 0)
    take_rows(rec, np.arange(4))
    p = np.zeros((4, 40), np.uint8)
    xyz4 = np.zeros((4, 3), np.int32)
    g = np.zeros(4, np.float64)
    pack_typed(
        np.arange(4),
        xyz4,
        0,
        [(g, 12), (rec["c"], 20), (np.zeros((4, 3), np.uint8), 21), (g.astype(np.float32), 24)],
        p,
    )
    r16 = np.zeros(4, dtype=[("a", "<u2"), ("b", "u1")])
    pack_typed(np.arange(4), xyz4, 0, [(r16["a"], 12), (r16["b"], 14)], p)
    rgb_max(r16["a"], r16["a"], r16["a"])
    byte_histogram(r16["b"])
    byte_histogram(np.zeros(4, np.uint8))
    quantize_tiles(x, y, z, np.array([0]), np.array([4]))
    from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8

    vrec = np.zeros(4, dtype=[("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("gps_time", "<f8"), ("c", "u1")])
    for gps_dst in (-1, 8):
        tile_vertices(
            vrec,
            np.arange(4),
            np.array([0]),
            np.array([4]),
            np.array([[20, 12, 1]]),
            (20, 13),
            SRGB8_TO_LINEAR8,
            gps_dst,
            16,
            np.zeros((4, 16), np.uint8),
        )
