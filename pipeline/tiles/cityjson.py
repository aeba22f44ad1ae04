"""CityJSON 2.0 as CityJSONSeq (`.city.jsonl`): the format only (no stages, no Dask).

A CityJSONSeq file is one JSON object per line: first the header (a `CityJSON` object with the
`transform`, `metadata` and empty `CityObjects` / `vertices`), then one `CityJSONFeature` per
building, each with its own integer `vertices` (quantised with the header's transform) and its
CityObjects (the `Building` and its `BuildingPart`s). See https://www.cityjson.org/specs/2.0.0/ and
https://www.cityjson.org/cityjsonseq/.

Input per city object (`CityObjectSpec`): its id, type, attributes, parents/children and at most one
geometry given as polygons over a float vertex array (rings of vertex ids, outer first, holes after,
outward-oriented: exterior counter-clockwise seen from outside) with a semantic surface per polygon.
Output bytes are deterministic: keys sorted, floats rounded to a fixed number of decimals, features in
the order given (the caller sorts them by id), `\\n` line ends.

`validate_cityjsonseq(text)` checks what the CityJSON schema and cjval check on the structure (types,
version, transform, lod, boundary depth, vertex indices, semantics shape, parent/child links,
duplicate and unused vertices) in the release validation stage. The official validator, cjval, runs
on these files in the tests (tests/_cjval.py, installed by `make cjval`; docs/buildings.md).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VERSION = "2.0"
SURFACE_TYPES = ("RoofSurface", "WallSurface", "GroundSurface")  # index = solids.ROOF, WALL, GROUND
CITY_OBJECT_TYPES = {"Building", "BuildingPart"}  # what this writer emits (first-level: Building)
_LOD = re.compile(r"^\d(\.\d)?$")


@dataclass
class SolidGeometry:
    """One `Solid` (exterior shell only): vertices (V, 3) in the CRS, polygons as rings of vertex ids
    (outer first, holes after), semantic index (into `SURFACE_TYPES`) per polygon."""

    vertices: np.ndarray
    polygons: list[list[np.ndarray]]
    semantics: np.ndarray
    lod: str


@dataclass
class CityObjectSpec:
    id: str
    type: str
    attributes: dict[str, Any] = field(default_factory=dict)
    geometry: SolidGeometry | None = None
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


def _clean(v: Any, decimals: int) -> Any:
    """JSON-ready attribute value: NaN/None -> None (dropped by the caller), floats rounded."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return None
        r = round(f, decimals)
        return 0.0 if r == 0 else r
    return str(v)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def header(
    translate: tuple[float, float, float],
    reference_system: str | None,
    *,
    scale: float = 0.001,
    title: str | None = None,
    extent: tuple[float, float, float, float, float, float] | None = None,
) -> str:
    """The first line of a CityJSONSeq file (no newline). `reference_system`: an OGC CRS URL
    (`https://www.opengis.net/def/crs/EPSG/0/<code>`); None = not stated."""
    meta: dict[str, Any] = {"referenceSystem": reference_system} if reference_system else {}
    if title:
        meta["title"] = title
    if extent is not None:
        meta["geographicalExtent"] = [_clean(v, 3) for v in extent]
    return _dumps(
        {
            "type": "CityJSON",
            "version": VERSION,
            "transform": {"scale": [scale, scale, scale], "translate": [float(t) for t in translate]},
            "metadata": meta,
            "CityObjects": {},
            "vertices": [],
        }
    )


def feature(
    objects: list[CityObjectSpec],
    translate: tuple[float, float, float],
    *,
    scale: float = 0.001,
    decimals: int = 3,
) -> str:
    """One `CityJSONFeature` line (no newline); `objects[0]` is the feature's main object (its id is
    the feature id). Vertices are shared within the feature (identical integer positions welded),
    in order of first use."""
    verts: dict[tuple[int, int, int], int] = {}
    out_vertices: list[list[int]] = []
    t = np.asarray(translate, dtype=np.float64)
    city_objects: dict[str, Any] = {}
    for co in objects:
        d: dict[str, Any] = {"type": co.type}
        attrs = {k: _clean(v, decimals) for k, v in co.attributes.items()}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if attrs:
            d["attributes"] = attrs
        if co.parents:
            d["parents"] = list(co.parents)
        if co.children:
            d["children"] = list(co.children)
        if co.geometry is not None:
            g = co.geometry
            q = np.rint((np.asarray(g.vertices, dtype=np.float64) - t) / scale).astype(np.int64)
            remap: dict[int, int] = {}
            for rings in g.polygons:  # only the vertices the rings use, in order of first use
                for ring in rings:
                    for i in np.asarray(ring, dtype=np.int64).tolist():
                        if i in remap:
                            continue
                        key = (int(q[i, 0]), int(q[i, 1]), int(q[i, 2]))
                        j = verts.get(key)
                        if j is None:
                            j = verts[key] = len(out_vertices)
                            out_vertices.append(list(key))
                        remap[i] = j
            shell = []
            for rings in g.polygons:
                surf = []
                for ring in rings:
                    r = [remap[i] for i in np.asarray(ring, dtype=np.int64).tolist()]
                    r = [v for i, v in enumerate(r) if v != r[i - 1]]  # welded neighbours
                    surf.append(r)
                shell.append(surf)
            d["geometry"] = [
                {
                    "type": "Solid",
                    "lod": g.lod,
                    "boundaries": [shell],
                    "semantics": {
                        "surfaces": [{"type": s} for s in SURFACE_TYPES],
                        "values": [[int(s) for s in g.semantics]],
                    },
                }
            ]
        else:
            d["geometry"] = []
        city_objects[co.id] = d
    return _dumps(
        {
            "type": "CityJSONFeature",
            "id": objects[0].id,
            "CityObjects": city_objects,
            "vertices": out_vertices,
        }
    )


def cityjsonseq(head: str, features: list[str]) -> bytes:
    """The file's bytes: header line, then one line per feature, `\\n`-terminated."""
    return ("\n".join([head, *features]) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ reading


def read_cityjsonseq(text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, features) of a CityJSONSeq text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}, []
    return json.loads(lines[0]), [json.loads(ln) for ln in lines[1:]]


def feature_vertices(head: dict[str, Any], feat: dict[str, Any]) -> np.ndarray:
    """A feature's vertices in the CRS (float64, (V, 3)) through the header's transform."""
    tr = head["transform"]
    v = np.asarray(feat["vertices"], dtype=np.float64).reshape(-1, 3)
    return v * np.asarray(tr["scale"]) + np.asarray(tr["translate"])


# --------------------------------------------------------------------------------------- validation


def _check_header(h: Any) -> list[str]:
    errs = []
    if not isinstance(h, dict) or h.get("type") != "CityJSON":
        return ["header: first line is not a CityJSON object"]
    if h.get("version") != VERSION:
        errs.append(f"header: version {h.get('version')!r}, expected {VERSION!r}")
    tr = h.get("transform")
    if not (
        isinstance(tr, dict)
        and all(isinstance(tr.get(k), list) and len(tr[k]) == 3 for k in ("scale", "translate"))
        and all(isinstance(x, (int, float)) for k in ("scale", "translate") for x in tr[k])
    ):
        errs.append("header: transform needs scale and translate (3 numbers each)")
    if h.get("CityObjects") != {} or h.get("vertices") != []:
        errs.append("header: CityObjects and vertices must be empty in a CityJSONSeq header")
    rs = (h.get("metadata") or {}).get("referenceSystem")
    if rs is not None and not re.match(r"^https?://www\.opengis\.net/def/crs/\w+/\d+(\.\d+)?/\w+$", rs):
        errs.append(f"header: metadata.referenceSystem {rs!r} is not an OGC CRS URL")
    extra = set(h) - {"type", "version", "transform", "metadata", "CityObjects", "vertices", "extensions"}
    if extra:
        errs.append(f"header: unknown root properties {sorted(extra)}")
    return errs


def _check_solid(tag: str, g: dict[str, Any], nv: int, used: set[int]) -> list[str]:
    errs = []
    if g.get("type") != "Solid":
        return [f"{tag}: geometry type {g.get('type')!r} (this validator knows Solid only)"]
    if not isinstance(g.get("lod"), str) or not _LOD.match(g["lod"]):
        errs.append(f"{tag}: lod {g.get('lod')!r} is not a string like '2.2'")
    b = g.get("boundaries")
    if not isinstance(b, list) or not b:
        return [*errs, f"{tag}: Solid boundaries must be a list of shells"]
    for si, shell in enumerate(b):
        if not isinstance(shell, list) or not shell:
            errs.append(f"{tag}: shell {si} empty or not a list")
            continue
        for pi, surf in enumerate(shell):
            if not isinstance(surf, list) or not surf:
                errs.append(f"{tag}: shell {si} surface {pi} is not a list of rings")
                continue
            for ring in surf:
                if not isinstance(ring, list) or not all(isinstance(i, int) for i in ring):
                    errs.append(f"{tag}: shell {si} surface {pi}: ring is not a list of vertex ids")
                    continue
                if len(set(ring)) < 3:
                    errs.append(f"{tag}: shell {si} surface {pi}: ring with fewer than 3 vertices")
                if any(i < 0 or i >= nv for i in ring):
                    errs.append(f"{tag}: shell {si} surface {pi}: vertex id out of range")
                used.update(ring)
    sem = g.get("semantics")
    if sem is not None:
        surfaces = sem.get("surfaces")
        values = sem.get("values")
        if not isinstance(surfaces, list) or not all(
            isinstance(s, dict) and isinstance(s.get("type"), str) for s in surfaces
        ):
            errs.append(f"{tag}: semantics.surfaces must be objects with a type")
            surfaces = []
        bad = [s["type"] for s in surfaces if s["type"] not in (*SURFACE_TYPES, "ClosureSurface")]
        if bad:
            errs.append(f"{tag}: semantic surface types {bad} not allowed for a Building")
        if not isinstance(values, list) or len(values) != len(b):
            errs.append(f"{tag}: semantics.values must have one list per shell")
        else:
            for shell, vals in zip(b, values, strict=True):
                if not isinstance(vals, list) or len(vals) != len(shell):
                    errs.append(f"{tag}: semantics.values do not match the shell's surfaces")
                elif any(
                    v is not None and (not isinstance(v, int) or not 0 <= v < len(surfaces)) for v in vals
                ):
                    errs.append(f"{tag}: semantics value out of range")
    return errs


def validate_cityjsonseq(text: str) -> list[str]:
    """Structural errors of a CityJSONSeq text (empty list = valid); duplicate and unused vertices,
    which cjval reports as warnings, are reported here as errors too."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return ["empty file"]
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError as e:
        return [f"line 1: not JSON ({e})"]
    errs = _check_header(head)
    ids: set[str] = set()
    for ln, line in enumerate(lines[1:], start=2):
        try:
            f = json.loads(line)
        except json.JSONDecodeError as e:
            errs.append(f"line {ln}: not JSON ({e})")
            continue
        tag = f"line {ln}"
        if f.get("type") != "CityJSONFeature":
            errs.append(f"{tag}: type {f.get('type')!r}, expected CityJSONFeature")
            continue
        cos = f.get("CityObjects")
        verts = f.get("vertices")
        if not isinstance(cos, dict) or not isinstance(verts, list):
            errs.append(f"{tag}: CityObjects (object) and vertices (list) required")
            continue
        if f.get("id") not in cos:
            errs.append(f"{tag}: feature id {f.get('id')!r} is not one of its CityObjects")
        if not all(isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) for c in v) for v in verts):
            errs.append(f"{tag}: vertices must be integer triples (transform in the header)")
        if len({tuple(v) for v in verts if isinstance(v, list)}) != len(verts):
            errs.append(f"{tag}: duplicate vertices")
        used: set[int] = set()
        for oid, co in cos.items():
            otag = f"{tag} {oid}"
            if oid in ids:
                errs.append(f"{otag}: CityObject id used twice in the file")
            ids.add(oid)
            if co.get("type") not in CITY_OBJECT_TYPES:
                errs.append(f"{otag}: CityObject type {co.get('type')!r} unknown")
            if co.get("type") == "BuildingPart" and not co.get("parents"):
                errs.append(f"{otag}: a BuildingPart needs a parent")
            for p in co.get("parents", []):
                if p not in cos or oid not in cos[p].get("children", []):
                    errs.append(f"{otag}: parent {p!r} missing or does not list it as a child")
            for c in co.get("children", []):
                if c not in cos or oid not in cos[c].get("parents", []):
                    errs.append(f"{otag}: child {c!r} missing or does not list it as a parent")
            if not isinstance(co.get("attributes", {}), dict):
                errs.append(f"{otag}: attributes must be an object")
            geoms = co.get("geometry", [])
            if not isinstance(geoms, list):
                errs.append(f"{otag}: geometry must be a list")
                continue
            for g in geoms:
                errs += _check_solid(otag, g, len(verts), used)
        if len(used) != len(verts):
            errs.append(f"{tag}: {len(verts) - len(used)} unused vertices")
    return errs
