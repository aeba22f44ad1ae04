"""Reading a point layer's COPC files and `.vpc` back, node by node (laspy's COPC reader): the invariants
the build reports (`copc_invariants`) and the release validator's check (`vpc_errors`).

`vpc_errors` returns one clear message per problem: a missing or unreadable .vpc, an asset outside the
layer folder or missing, a COPC file whose header, hierarchy or any node cannot be read, a node whose
decoded point count differs from its hierarchy entry, a file whose count differs from its `pc:count` or
header, a `proj:bbox` that is not the file's header box, a `proj:wkt2` that is not the file's CRS, and a
layer total (points, checksum) that differs from what the manifest says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def copc_checksum(X: np.ndarray, Y: np.ndarray, Z: np.ndarray, classification: np.ndarray) -> int:
    """Order-independent checksum of points (raw integer coordinates as stored + class): the sum mod 2^64
    of a 64-bit hash per point. Equal for two files iff (with overwhelming probability) they hold the same
    multiset of (X, Y, Z, class)."""
    from pipeline.tiles.copc_octree import _mix64

    u = np.uint64
    v = X.astype(np.int64).view(u) * u(0x9E3779B97F4A7C15)
    v += Y.astype(np.int64).view(u) * u(0xC2B2AE3D27D4EB4F)
    v += Z.astype(np.int64).view(u) * u(0x165667B19E3779F9)
    v += classification.astype(u) * u(0x27D4EB2F165667C5)
    return int(_mix64(v).sum(dtype=u))


class CopcReadError(Exception):
    """A COPC file or its .vpc cannot be read as the layer says (the message names the file and node)."""


def _is_decoder_panic(e: BaseException) -> bool:
    """lazrs (Rust, through pyo3) turns a panic on corrupt bytes into `pyo3_runtime.PanicException`, a
    BaseException that `except Exception` lets through; it is a finding about the file like any other."""
    return type(e).__name__ == "PanicException"


def read_copc_nodes(path: Path) -> dict[str, Any]:
    """Every node of a COPC file, one at a time through laspy's COPC reader: points, checksum, nodes,
    header box and CRS. Raises CopcReadError naming the node that fails."""
    import laspy
    from laspy.copc import load_octree_for_query

    try:
        reader = laspy.CopcReader.open(path)
    except Exception as e:
        raise CopcReadError(f"{path.name}: not a readable COPC file ({type(e).__name__}: {e})") from e
    with reader as r:
        try:
            nodes = load_octree_for_query(r.source, r.copc_info, r.root_page)
        except Exception as e:
            raise CopcReadError(f"{path.name}: unreadable hierarchy ({type(e).__name__}: {e})") from e
        total, checksum = 0, 0
        for node in sorted(nodes, key=lambda n: n.offset):
            k = node.key
            name = f"node {k.level}-{k.x}-{k.y}-{k.z}"
            try:
                pts = r._fetch_and_decompress_points_of_nodes([node])
            except BaseException as e:
                if not (isinstance(e, Exception) or _is_decoder_panic(e)):
                    raise
                raise CopcReadError(f"{path.name}: {name} cannot be read ({type(e).__name__}: {e})") from e
            if len(pts) != node.point_count:
                raise CopcReadError(
                    f"{path.name}: {name} holds {len(pts)} points, its entry says {node.point_count}"
                )
            total += len(pts)
            checksum += copc_checksum(pts.X, pts.Y, pts.Z, np.asarray(pts.classification))
        hdr = r.header
        if total != hdr.point_count:
            raise CopcReadError(
                f"{path.name}: the nodes hold {total} points, the header says {hdr.point_count}"
            )
        try:
            crs = hdr.parse_crs()
        except Exception:
            crs = None
        return {
            "points": total,
            "checksum": checksum % (1 << 64),
            "nodes": len(nodes),
            "mins": [float(v) for v in hdr.mins],
            "maxs": [float(v) for v in hdr.maxs],
            "crs": crs,
        }


def _features(vpc_path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(vpc_path.read_text(encoding="utf-8"))
        feats = doc["features"]
        assert isinstance(feats, list)
        return feats
    except Exception as e:
        raise CopcReadError(f"{vpc_path.name}: not a readable virtual point cloud ({e})") from e


def _asset(vpc_path: Path, f: dict[str, Any]) -> Path:
    try:
        href = f["assets"]["data"]["href"]
    except (KeyError, TypeError) as e:
        raise CopcReadError(f"{vpc_path.name}: an item has no data asset") from e
    target = (vpc_path.parent / href).resolve()
    if not target.is_relative_to(vpc_path.parent.resolve()):
        raise CopcReadError(f"{vpc_path.name}: asset {href} lies outside the layer folder")
    if not target.is_file():
        raise CopcReadError(f"{vpc_path.name}: asset {href} does not exist")
    return target


def copc_invariants(vpc_path: str | Path) -> dict[str, Any]:
    """Points and checksum over every COPC file of a .vpc, read node by node through laspy's COPC reader;
    the checksum adds per file, so it equals the layer's `copc.checksum`. Raises CopcReadError."""
    vpc_path = Path(vpc_path)
    total, checksum, feats = 0, 0, _features(vpc_path)
    for f in feats:
        got = read_copc_nodes(_asset(vpc_path, f))
        if got["points"] != f["properties"]["pc:count"]:
            href = f["assets"]["data"]["href"]
            raise CopcReadError(
                f"{href}: {got['points']} points read, the .vpc says {f['properties']['pc:count']}"
            )
        total += got["points"]
        checksum += got["checksum"]
    return {"points": total, "checksum": f"{checksum % (1 << 64):016x}", "files": len(feats)}


def vpc_items(vpc_path: Path) -> list[dict[str, Any]]:
    """The items of a layer's .vpc (one per COPC file). Raises CopcReadError."""
    return _features(vpc_path)


def copc_item_errors(vpc_path: Path, f: dict[str, Any]) -> tuple[list[str], int, int]:
    """One .vpc item's COPC file read back node by node and compared with the item: (problems, points,
    checksum); the points and checksum are 0 when the file cannot be read. Independent of the other items
    (the release validator runs one task per file)."""
    from pyproj import CRS

    try:
        path = _asset(vpc_path, f)
        got = read_copc_nodes(path)
    except CopcReadError as e:
        return [str(e)], 0, 0
    errors: list[str] = []
    props = f.get("properties", {})
    href = f["assets"]["data"]["href"]
    if props.get("pc:count") != got["points"]:
        errors.append(f"{href}: {got['points']} points, the .vpc says {props.get('pc:count')}")
    box = props.get("proj:bbox")
    want = [*got["mins"], *got["maxs"]]
    if not isinstance(box, list) or len(box) != 6 or not np.allclose(box, want, rtol=0, atol=1e-6):
        errors.append(f"{href}: the .vpc box {box} is not the file's header box {want}")
    try:
        same = got["crs"] is not None and CRS.from_wkt(props.get("proj:wkt2", "")).equals(got["crs"])
    except Exception:
        same = False
    if not same:
        errors.append(f"{href}: the .vpc CRS (proj:wkt2) is not the file's CRS")
    return errors, got["points"], got["checksum"]


def vpc_total_errors(
    vpc_path: Path,
    items: list[tuple[list[str], int, int]],
    want_points: int | None,
    want_checksum: str | None,
) -> list[str]:
    """The problems of a .vpc from its items' `copc_item_errors` (in the .vpc's order): theirs, then (only
    when there are none) the layer totals against the manifest's."""
    errors = [e for errs, _, _ in items for e in errs]
    if not errors:
        total = sum(n for _, n, _ in items)
        if want_points is not None and total != want_points:
            errors.append(f"{vpc_path.name}: the COPC files hold {total} points, the layer {want_points}")
        cs = f"{sum(c for _, _, c in items) % (1 << 64):016x}"
        if want_checksum and cs != want_checksum:
            errors.append(f"{vpc_path.name}: COPC checksum {cs} != the manifest's {want_checksum}")
    return errors


def vpc_errors(vpc_path: Path, want_points: int | None, want_checksum: str | None) -> list[str]:
    """The problems of a layer's .vpc and its COPC files (empty: readable node by node, and as stated)."""
    try:
        feats = vpc_items(vpc_path)
    except CopcReadError as e:
        return [str(e)]
    items = [copc_item_errors(vpc_path, f) for f in feats]
    return vpc_total_errors(vpc_path, items, want_points, want_checksum)
