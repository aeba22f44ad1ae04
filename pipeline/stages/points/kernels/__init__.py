"""Hot loops of the point tiler (numba, `cache=True`; tests/_points_reference.py holds plain references
the tests compare them against). One module per concern; this package exports them all (`kernels.X`).

- `lattice_to_enu_keys` (enu): trilinear interpolation of an exact PROJ lattice (source CRS -> project
  ENU), straight from the file's integer coordinates to integer millimetres, with Morton keys.
- `keys_and_hashes` (keys): 3D Morton (z-order) keys and the deterministic 64-bit hash of a point's
  millimetre position (the sampling priority), the sort order of keys, binary search in a spill file.
- `select_levels`, `order_by_level` (lod): the nested min-hash level of detail of one bin (see
  docs/pointcloud.md) and its points in tile order.
- `tile_grid`, `gather`, `pack_records` (records): tile quantization and checksums, typed column gathers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.stages.points.kernels.enu import lattice_to_enu_keys
from pipeline.stages.points.kernels.keys import keys_and_hashes, sort_order, spill_lower_bound
from pipeline.stages.points.kernels.lod import order_by_level, select_levels
from pipeline.stages.points.kernels.records import gather, pack_records, tile_grid


def warm_all() -> None:
    """Load every kernel from numba's on-disk cache (or compile and cache it once) with the argument types
    the stages pass: strided int32 record fields, writable arrays. Worker pools call this at start, the
    benchmark before timing, so no timed run pays for compilation after the kernels' source changed."""
    from types import SimpleNamespace

    rec = np.zeros(4, dtype=[("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("c", "u1")])
    x, y, z = rec["x"], rec["y"], rec["z"]
    lat = SimpleNamespace(lo=np.zeros(3), step=np.ones(3), values=np.zeros((2, 2, 2, 3)))
    org = np.zeros(3, np.int64)
    for c in ((x, y, z), (x.copy(), y.copy(), z.copy())):  # LAS record fields, E57 columns
        xyz, _k, _b, *_ = lattice_to_enu_keys(*c, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 1.0, lat, org, 0)
    keys, hashes = keys_and_hashes(x, y, z, org, 0)
    spill_lower_bound(x, y, z, org, 0, 0, 4, 1)  # records read from a spill file (writable)
    sort_order(keys, 64)  # with dropped bits: the run fix-up kernel too
    select_levels(np.sort(keys), hashes, 8, 0, 2, 6, 10)
    order_by_level(np.arange(4), keys, hashes, np.zeros(4, np.int8), 0, 8, 0)
    r16 = np.zeros(4, dtype=[("a", "<u2"), ("b", "u1")])  # strided 16-bit LAS colour fields
    from pipeline.point_attributes import ATTRIBUTES, OPTIONAL
    from pipeline.sources.pointcloud.las import BitField, Rgb16
    from pipeline.stages.points.spill import RecordLayout
    from pipeline.tiles.points_glb import SRGB8_TO_LINEAR8, vertex_dtype

    layout = RecordLayout(True, True, True, ("e",), OPTIONAL)  # every field (a subset loads nothing new)
    src = np.zeros(4, layout.dtype)
    # the columns as the decode passes them: strided fields of the raw records; returns (and the
    # classes of LAS formats 0-5) as bit fields and 16-bit colour, both computed while packing;
    # computed columns (opt-in attributes, extra dimensions) contiguous
    cols: dict[str, Any] = {a.name: src[a.name] for a in layout.attributes}
    pack_records(np.arange(4), xyz, cols, src.copy())
    contiguous = {k: np.ascontiguousarray(v) for k, v in cols.items()}  # E57 columns
    pack_records(np.arange(4), xyz, contiguous, src.copy())
    bits = BitField(src["classification"], 0, 0x0F)
    cols.update(classification=bits, return_number=bits, number_of_returns=bits)
    for a in layout.attributes:
        if a.from_las is not None or a not in ATTRIBUTES:
            cols[a.name] = np.ascontiguousarray(src[a.name])
    cols["rgb"] = Rgb16(r16["a"], r16["a"], r16["a"], 8)
    pack_records(np.arange(4), xyz, cols, src.copy())
    vert = np.zeros(4, vertex_dtype(layout.attributes))
    for gps in (vert["_GPS_TIME"], None):
        tile_grid(src, np.arange(4), np.array([0]), np.array([4]), vert["POSITION"], True, gps)
    tile_grid(src, np.arange(4), np.array([0]), np.array([4]), np.zeros((4, 3), np.uint16))
    for a in layout.attributes:
        if a.name != "gps_time":
            gather(src[a.name], np.arange(4), vert[a.attr], SRGB8_TO_LINEAR8 if a.name == "rgb" else None)
