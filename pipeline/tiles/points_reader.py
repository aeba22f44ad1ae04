"""Read our point tiles back (validation, tests): their millimetre positions and the invariants of a point
tileset (point count, order-independent checksum, tile count), for glb (also meshopt-compressed) and pnts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def content_files(tileset_path: str | Path) -> list[Path]:
    """The tile files of a point tileset (external tilesets followed), in a fixed order."""
    tileset_path = Path(tileset_path)
    root = json.loads(tileset_path.read_text())["root"]
    base = tileset_path.parent
    if "implicitTiling" in root:
        ext = root["content"]["uri"].rsplit(".", 1)[-1]
        return sorted((base / "content").rglob(f"*.{ext}"))
    out: list[Path] = []

    def walk(t: dict, base: Path) -> None:
        c = t.get("content")
        if c:
            p = base / c["uri"]
            if p.suffix == ".json":
                walk(json.loads(p.read_text())["root"], p.parent)
            else:
                out.append(p.resolve())
        for ch in t.get("children", []):
            walk(ch, base)

    walk(root, base)
    return out


def read_point_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The glTF JSON and binary chunk of one of our glb point tiles, meshopt views decoded."""
    from pipeline.tiles.gltf import decode_meshopt_views, read_glb

    js, binary = read_glb(data)
    if "EXT_meshopt_compression" in js.get("extensionsUsed", []):
        return decode_meshopt_views(js, binary)
    return js, binary


def tile_positions_mm(path: Path) -> np.ndarray:
    """Millimetre ENU positions of one of our point tiles (glb or pnts)."""
    data = path.read_bytes()
    if data[:4] == b"pnts":
        from pipeline.tiles.pnts import decode_pnts_positions_mm

        return decode_pnts_positions_mm(data)
    from pipeline.tiles.gltf import accessor_array

    js, binary = read_point_glb(data)
    prim = js["meshes"][0]["primitives"][0]
    q = accessor_array(js, binary, prim["attributes"]["POSITION"]).astype(np.int64)
    node = js["nodes"][0]
    t = np.round(np.asarray(node["translation"]) * 1000.0).astype(np.int64)
    g = t + q * round(node["scale"][0] * 1000.0)  # glTF y-up (x, z, -y) back to ENU
    return np.stack([g[:, 0], -g[:, 2], g[:, 1]], axis=1)


def pointcloud_invariants(tileset_path: str | Path) -> dict[str, Any]:
    """Count and checksum of the points in a point tileset (for the release validator and tests).

    The checksum is order-independent (sum of 64-bit hashes of the millimetre positions), so it equals the
    `checksum` recorded at build time in pointcloud.json / the layer stats iff no tile was lost or altered.
    The release validator reads the same sums in chunks on the executor (`content_files`, `tiles_sum`).
    """
    files = content_files(tileset_path)
    total, checksum = tiles_sum(files)
    return {"points": total, "checksum": f"{checksum:016x}", "tiles": len(files)}


def tiles_sum(files: list[Path]) -> tuple[int, int]:
    """(points, checksum mod 2^64) of some tiles of a point tileset: the sums of several chunks of a
    tileset's files add up to its `pointcloud_invariants`."""
    sums = [(len(pos), tile_checksum(pos)) for pos in map(tile_positions_mm, files)]
    return sum(n for n, _ in sums), sum(c for _, c in sums) % (1 << 64)


def point_hash_numpy(xyz_mm: np.ndarray) -> np.ndarray:
    """The 64-bit hash of each point's millimetre position (splitmix64 over x, y, z): what the tiler's
    kernel (`stages.points.kernels.keys_and_hashes`, tested equal) computes for sampling and checksums."""
    from pipeline.tiles.copc_octree import _mix64 as mix

    u = xyz_mm.astype(np.int32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = mix(u[:, 0] + np.uint64(0x9E3779B97F4A7C15))
        h = mix(h ^ u[:, 1])
        return mix(h ^ u[:, 2])


def tile_checksum(positions_mm: np.ndarray) -> int:
    """Order-independent checksum of a tile's (dequantized) millimetre positions."""
    return int(point_hash_numpy(positions_mm).sum(dtype=np.uint64))
