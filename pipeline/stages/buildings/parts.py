"""Building parts (ALKIS `AX_Bauteil`, `gebnutzbez` "Bauteil") as units of the LoD2 reconstruction.

A Bauteil is a part of a building with its own storeys or roof (a lower wing, a tower, a projecting
storey) whose polygon lies inside the building's footprint. With parts, a building's footprint is split
into units: every part clipped to its host building, and the rest of the footprint. Each unit gets its
own roof fit (its own roof shape, planes, heights); the building's LoD2 roof is the union of its units'
roof faces (`solids.merge_partitions`: noded, so the solid gets step walls where the parts' roofs meet at
different heights). Only Bauteile with a roof of their own become units (`roof_parts`, by the ALKIS
bauart code); a part whose unit has too few roof points joins the rest of its building's footprint
(`join_parts`), and so does a rest of a footprint too small for a roof (to a part). Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry


@dataclass
class Units:
    """The reconstruction units: geometry, the building (index) each belongs to, the part (index into
    the part records, -1 for the rest of the footprint)."""

    geoms: np.ndarray
    building: np.ndarray
    part: np.ndarray


def assign_parts(buildings: np.ndarray, parts: np.ndarray, min_share: float = 0.5) -> np.ndarray:
    """Host building (index) of every part: the building covering the largest share of it, at least
    `min_share` of the part's area; -1 when none (the part then stays out: reported by the caller)."""
    buildings = np.asarray(buildings, dtype=object)
    parts = np.asarray(parts, dtype=object)
    host = np.full(len(parts), -1, dtype=np.int64)
    if not len(parts) or not len(buildings):
        return host
    pi, bi = shapely.STRtree(buildings).query(parts, predicate="intersects")
    if not pi.size:
        return host
    share = shapely.area(shapely.intersection(parts[pi], buildings[bi])) / np.maximum(
        shapely.area(parts[pi]), 1e-12
    )
    order = np.lexsort((bi, -share, pi))  # per part: largest share first, then the lowest index
    pi, bi, share = pi[order], bi[order], share[order]
    first = np.ones(len(pi), dtype=bool)
    first[1:] = pi[1:] != pi[:-1]
    ok = first & (share >= min_share)
    host[pi[ok]] = bi[ok]
    return host


def roof_parts(keys: Any, bauarten: Any) -> np.ndarray:
    """Which Bauteile have a roof of their own: the AX_Bauteil bauart code of their ALKIS function key
    (gfkzshh `31002_<bauart>`) is one of `bauarten`. A record without a code is not a roof part."""
    from pipeline.sources.cadastre.common import function_code

    codes = {int(c) for c in bauarten}
    return np.asarray([function_code(None if k is None else str(k)) in codes for k in keys], dtype=bool)


JOIN_REASONS = ("no_points", "too_few_points")  # a unit without enough roof points joins a neighbour


def units_to_join(reasons: np.ndarray, units: Units, n_buildings: int) -> np.ndarray:
    """Per unit: it failed for lack of roof points (`reasons`: the unit's fallback reason, '' when
    fitted) and its building has other units to join (the rule `join_parts` is applied with)."""
    failed = np.isin(np.asarray(reasons).astype(str), JOIN_REASONS)
    return failed & (np.bincount(units.building, minlength=n_buildings) > 1)[units.building]


def join_parts(
    host: np.ndarray, units: Units, failed: np.ndarray, absorb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Units that failed (`failed`, per unit: too few roof points) join their neighbours: a part is
    taken out (host -1: re-split, it is part of the rest of its building's footprint again); the rest
    of a footprint that has parts is given to the part it shares the longest edge with (`absorb`, per
    building, for `split_units`). Returns the new (host, absorb)."""
    host = np.asarray(host, dtype=np.int64).copy()
    absorb = np.asarray(absorb, dtype=bool).copy()
    failed = np.asarray(failed, dtype=bool)
    host[units.part[failed & (units.part >= 0)]] = -1
    split = np.bincount(units.building, minlength=len(absorb)) > 1
    rest = units.building[failed & (units.part < 0)]
    absorb[rest[split[rest]]] = True
    return host, absorb


def split_units(
    buildings: np.ndarray,
    parts: np.ndarray,
    host: np.ndarray,
    min_area_m2: float = 1.0,
    absorb: np.ndarray | None = None,
) -> Units:
    """Units in building order: a building without parts is one unit (its footprint); a building with
    parts gets one unit per part (clipped to the footprint and to the parts before it, in part order)
    and one for the rest of the footprint. Pieces under `min_area_m2` are left to their neighbours:
    a part that small is dropped, a rest that small is not a unit. Where `absorb` (per building) is
    set, the rest is no unit either: it goes to the part sharing the longest edge with it."""
    buildings = np.asarray(buildings, dtype=object)
    parts = np.asarray(parts, dtype=object)
    host = np.asarray(host, dtype=np.int64)
    geoms: list[shapely.Geometry] = []
    bidx: list[int] = []
    pidx: list[int] = []
    by_host: dict[int, list[int]] = {}
    for j in np.flatnonzero(host >= 0).tolist():
        by_host.setdefault(int(host[j]), []).append(j)
    for i, g in enumerate(buildings):
        mine = by_host.get(i, [])
        if not mine:
            geoms.append(g)
            bidx.append(i)
            pidx.append(-1)
            continue
        taken: BaseGeometry = shapely.Polygon()
        pieces = []
        for j in mine:
            piece = shapely.difference(shapely.intersection(parts[j], g), taken)
            piece = _polygonal(piece)
            if shapely.area(piece) < min_area_m2:
                continue
            pieces.append((piece, j))
            taken = shapely.union(taken, piece)
        rest = _polygonal(shapely.difference(g, taken))
        if not pieces:
            geoms.append(g)
            bidx.append(i)
            pidx.append(-1)
            continue
        if absorb is not None and absorb[i] and shapely.area(rest) >= min_area_m2:
            shared = [
                shapely.length(shapely.intersection(shapely.boundary(p), shapely.boundary(rest)))
                for p, _ in pieces
            ]
            k = int(np.argmax(shared))
            if shared[k] > 0:
                pieces[k] = (_polygonal(shapely.union(pieces[k][0], rest)), pieces[k][1])
                rest = shapely.Polygon()
        for piece, j in pieces:
            geoms.append(piece)
            bidx.append(i)
            pidx.append(j)
        if shapely.area(rest) >= min_area_m2:
            geoms.append(rest)
            bidx.append(i)
            pidx.append(-1)
    return Units(
        np.asarray(geoms, dtype=object), np.asarray(bidx, dtype=np.int64), np.asarray(pidx, dtype=np.int64)
    )


def _polygonal(g: shapely.Geometry) -> shapely.Geometry:
    """The (Multi)Polygon parts of an overlay result (lines and points of touching edges dropped)."""
    polys = [p for p in shapely.get_parts(g) if isinstance(p, shapely.Polygon) and not p.is_empty]
    if not polys:
        return shapely.Polygon()
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
