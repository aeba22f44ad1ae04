"""XPlanGML zoning plans (Bebauungspläne, XPlanung 5.x and 6.x) -> plans, building areas, buildable
areas and building lines as GeoDataFrames in the working CRS.

    read_plans(paths, target_crs) -> ZoningPlans(plans, areas, lines, warnings)

What is read (everything else in the file is skipped, but counted in `ZoningPlans.skipped`):

* ``BP_Plan``: name, number, legal status (`rechtsstand`), scope (`raeumlicherGeltungsbereich`).
* ``BP_BaugebietsTeilFlaeche`` (spelled ``BP_BaugebietsTeilflaeche`` too) -> `areas` with
  ``kind = "building_area"``; ``BP_UeberbaubareGrundstuecksFlaeche`` -> ``kind = "buildable_area"``.
  Both carry the measures of use: GRZ, GR (m2), GFZ, GF (m2), Z (full storeys), each with its
  ``min`` / ``max`` / ``zwingend`` (mandatory: min = max) variants, and the height limits of
  ``hoehenangabe`` / ``XP_Hoehenangabe``: ``bezugspunkt`` (1000 TH eaves, 2000 FH ridge, 3000 OK top,
  5000 HBA, 6000 GBH building height -> ``gh``, 6500 WH wall height -> ``th``), ``hoehenbezug``
  (1000 absolutNHN, 1100 absolutNN, 1200 absolutDHHN, 2000 relativGelaendeoberkante, ...), ``h`` (max),
  ``hMin``, ``hMax``, ``hZwingend``. Direct elements ``FH``/``FHmax``/``GHmin``/``TH``/... are read too
  (their reference height is unknown unless the object also has a hoehenangabe for it).
* ``BP_BauGrenze`` / ``BP_BauLinie`` (and 6.x ``BP_BaugrenzeLinie`` / ``BP_BaulinieLinie``) -> `lines`.

Every child element of an area is either a column or listed in the area's ``other`` column (JSON), so no
attribute is dropped silently. The CRS comes from each geometry's ``srsName`` (else the file's envelope,
else `crs_override`); coordinates are transformed with pyproj (easting first, as XPlanGML writes them) and
checked against the CRS's area of use. Plans are streamed feature by feature (lxml.iterparse), so memory
holds the features read, not the document. Zipped plans (``*.zip`` with ``*.gml`` members) are read
member by member.

Errors: anything that cannot be read (unknown CRS, bad number, broken geometry, unknown unit) raises
InputError naming the file (``archive.zip!member.gml``) and the gml:id.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from lxml import etree

from pipeline.errors import CrsError, InputError
from pipeline.sources.cadastre.gml import (
    GmlError,
    _curve_coords,
    local,
    polygons_of,
    srs_to_crs,
)

# feature types read, by local name -> (table, kind)
AREA_TYPES = {
    "BP_BaugebietsTeilFlaeche": "building_area",
    "BP_BaugebietsTeilflaeche": "building_area",
    "BP_UeberbaubareGrundstuecksFlaeche": "buildable_area",
}
LINE_TYPES = {
    "BP_BauGrenze": "baugrenze",
    "BP_BaugrenzeLinie": "baugrenze",
    "BP_BauLinie": "baulinie",
    "BP_BaulinieLinie": "baulinie",
}
PLAN_TYPE = "BP_Plan"
BEREICH_TYPE = "BP_Bereich"

# measures of use: element name -> column (lower case; min/max/zwingend variants)
MEASURES = ("GRZ", "GR", "GFZ", "GF", "Z")
MEASURE_COLUMNS: dict[str, str] = {}
for _m in MEASURES:
    MEASURE_COLUMNS[_m] = f"{_m.lower()}_max"
    MEASURE_COLUMNS[f"{_m}max"] = f"{_m.lower()}_max"
    MEASURE_COLUMNS[f"{_m}min"] = f"{_m.lower()}_min"
    MEASURE_COLUMNS[f"{_m}zwingend"] = f"{_m.lower()}_zwingend"
    MEASURE_COLUMNS[f"{_m}_Ausn"] = f"{_m.lower()}_ausn"
AREA_UNITS = {"GR": "m2", "GF": "m2"}

# height kinds: TH eaves, FH ridge, GH total / top of the building
HEIGHT_KINDS = ("th", "fh", "gh")
BEZUGSPUNKT = {
    "1000": "th",  # TH Traufhöhe
    "2000": "fh",  # FH Firsthöhe
    "3000": "gh",  # OK Oberkante
    "5000": "gh",  # HBA Höhe baulicher Anlagen
    "6000": "gh",  # GBH Gebäudehöhe
    "6500": "th",  # WH Wandhöhe (top of the wall, like the eaves)
}
# reference points read but not a limit of the building's height (clearance, plinth, floor level, ...)
BEZUGSPUNKT_OTHER = {
    "3500": "LH",
    "4000": "SH",
    "4500": "EFH",
    "5500": "UK",
    "6600": "GOK",
}
HOEHENBEZUG = {
    "1000": "absolutNHN",
    "1100": "absolutNN",
    "1200": "absolutDHHN",
    "2000": "relativGelaendeoberkante",
    "2500": "relativGehwegOberkante",
    "3000": "relativBezugshoehe",
    "3500": "relativStrasse",
    "4000": "relativEFH",
}
_DIRECT_HEIGHT = re.compile(r"^(TH|FH|GH|OK|WH)(min|max|Min|Max|zwingend|Zwingend)?$")
_DIRECT_KIND = {"TH": "th", "WH": "th", "FH": "fh", "GH": "gh", "OK": "gh"}

# children read structurally (geometry, links, bounding box) or as columns of their own
STRUCTURAL = {
    "boundedBy",
    "position",
    "gehoertZuBereich",
    "gehoertZuBP_Bereich",
    "wirdDargestelltDurch",
    "hoehenangabe",
}
LENGTH_UNITS = {"m", "urn:adv:uom:m", "meter", "metre"}
AREA_UNITS_OK = {"m2", "m²", "urn:adv:uom:m2", "sqm"}

XPLAN_NS = re.compile(r"^http://www\.xplanung\.de/xplangml/(\d+)/(\d+)$")


@dataclass
class ZoningPlans:
    """What `read_plans` found, all in the target CRS.

    plans: plan_id, name, nummer, rechtsstand, version, source, src_crs, transform_accuracy_m, geometry
           (the scope, `raeumlicherGeltungsbereich`; None when the plan has none)
    areas: plan_id, gml_id, kind (building_area | buildable_area), feature_type, ebene, rechtscharakter,
           art (besondereArtDerBaulNutzung), <measure>_min/_max/_zwingend/_ausn, <th|fh|gh>_min/_max and
           <th|fh|gh>_ref (the hoehenbezug name, "" when not given), heights (JSON of every
           XP_Hoehenangabe), other (JSON of the remaining attributes), source, geometry
    lines: plan_id, gml_id, kind (baugrenze | baulinie), feature_type, ebene, rechtscharakter, source,
           geometry
    """

    plans: gpd.GeoDataFrame
    areas: gpd.GeoDataFrame
    lines: gpd.GeoDataFrame
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # other feature types, by name


@dataclass
class _Feature:
    type: str
    gml_id: str
    props: dict[str, Any]
    geometry: Any
    crs: str
    bereich: list[str]
    source: str


# ---- small parsing helpers ----------------------------------------------------------------------------


def _href(el: etree._Element) -> str:
    h = el.get("{http://www.w3.org/1999/xlink}href") or ""
    return h[1:] if h.startswith("#") else h


def _gml_id(el: etree._Element) -> str:
    for k, v in el.attrib.items():
        if k.endswith("}id") or k == "id":
            return v
    return ""


def _number(el: etree._Element, what: str, source: str, gid: str, units: set[str] | None) -> float:
    text = (el.text or "").strip()
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a number", path=source, record=gid) from None
    if not np.isfinite(v):
        raise InputError(f"{what}: {text!r} is not a finite number", path=source, record=gid)
    uom = el.get("uom")
    if units is not None and uom is not None and uom.strip() not in units:
        raise InputError(
            f"{what}: unit {uom!r} is not supported (expected one of {sorted(units)})",
            path=source,
            record=gid,
        )
    return v


def _text(el: etree._Element) -> str:
    return " ".join((el.text or "").split())


def _empty_row(kind: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: np.nan for c in sorted(set(MEASURE_COLUMNS.values()))}
    for k in HEIGHT_KINDS:
        row[f"{k}_min"] = np.nan
        row[f"{k}_max"] = np.nan
        row[f"{k}_ref"] = ""
    row["kind"] = kind
    return row


def _set_limit(row: dict[str, Any], col: str, v: float, source: str, gid: str, name: str) -> None:
    old = row.get(col)
    if old is not None and np.isfinite(old) and old != v:
        raise InputError(
            f"{name}: two different values for {col} ({old:g} and {v:g}) on one object",
            path=source,
            record=gid,
        )
    row[col] = v


def _hoehenangabe(ha: etree._Element, source: str, gid: str) -> dict[str, Any]:
    """One XP_Hoehenangabe as a dict of its values (codes kept as given)."""
    out: dict[str, Any] = {}
    for c in ha:
        ln = local(c)
        if not ln:
            continue
        if ln in ("h", "hMin", "hMax", "hZwingend"):
            out[ln] = _number(c, f"XP_Hoehenangabe/{ln}", source, gid, LENGTH_UNITS)
        elif ln in ("hoehenbezug", "bezugspunkt", "abweichenderHoehenbezug", "abweichenderBezugspunkt"):
            out[ln] = _text(c)
        else:
            out[ln] = _text(c)
    return out


def _apply_heights(row: dict[str, Any], angaben: list[dict[str, Any]], source: str, gid: str) -> None:
    """Height limits of the XP_Hoehenangabe list into <kind>_min/_max/_ref (and the raw list as JSON)."""
    for a in angaben:
        bp = a.get("bezugspunkt")
        if bp is None or bp not in BEZUGSPUNKT:
            continue  # vertical extent of the object, or a reference point that is no height limit
        kind = BEZUGSPUNKT[bp]
        hb = a.get("hoehenbezug")
        ref = HOEHENBEZUG.get(hb, f"unknown code {hb}") if hb else ""
        if a.get("abweichenderHoehenbezug"):
            ref = f"abweichend: {a['abweichenderHoehenbezug']}"
        if row[f"{kind}_ref"] and ref and row[f"{kind}_ref"] != ref:
            raise InputError(
                f"hoehenangabe: {kind.upper()} given against two references ({row[f'{kind}_ref']}, {ref})",
                path=source,
                record=gid,
            )
        row[f"{kind}_ref"] = row[f"{kind}_ref"] or ref
        if "hZwingend" in a:
            _set_limit(row, f"{kind}_min", a["hZwingend"], source, gid, "hoehenangabe")
            _set_limit(row, f"{kind}_max", a["hZwingend"], source, gid, "hoehenangabe")
        if "hMin" in a:
            _set_limit(row, f"{kind}_min", a["hMin"], source, gid, "hoehenangabe")
        for k in ("hMax", "h"):
            if k in a:
                _set_limit(row, f"{kind}_max", a[k], source, gid, "hoehenangabe")


# ---- geometry -----------------------------------------------------------------------------------------


def _geometry(pos: etree._Element, want: str, source: str, gid: str, tol: float) -> Any:
    """Polygonal (want='area') or linear (want='line') geometry of a `position`-like element."""
    geoms = [c for c in pos if local(c)]
    if not geoms:
        raise InputError("position without geometry", path=source, record=gid)
    try:
        if want == "area":
            polys: list[shapely.Polygon] = []
            for g in geoms:
                polys.extend(polygons_of(g, tol))
            if not polys:
                raise GmlError(f"no polygon in <{local(geoms[0])}>")
            return shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0]
        lines: list[shapely.LineString] = []
        for g in geoms:
            lines.extend(_lines_of(g, tol))
        if not lines:
            raise GmlError(f"no curve in <{local(geoms[0])}>")
        return shapely.MultiLineString(lines) if len(lines) > 1 else lines[0]
    except GmlError as e:
        raise InputError(f"geometry cannot be read: {e}", path=source, record=gid) from None


def _lines_of(el: etree._Element, tol: float) -> list[shapely.LineString]:
    name = local(el)
    if name in ("MultiCurve", "CompositeCurve") or name.endswith("Member") or name == "curveMembers":
        out: list[shapely.LineString] = []
        if name == "CompositeCurve":
            parts: list[np.ndarray] = []
            _curve_coords(el, tol, parts)
            return [shapely.LineString(np.concatenate(parts))] if parts else []
        for c in el:
            if local(c):
                out.extend(_lines_of(c, tol))
        return out
    parts = []
    _curve_coords(el, tol, parts)
    if not parts:
        return []
    pts = np.concatenate(parts)
    if len(pts) < 2:
        raise GmlError(f"<{name}> has fewer than two points")
    return [shapely.LineString(pts)]


# ---- streaming ----------------------------------------------------------------------------------------


@contextmanager
def _open_members(path: Path) -> Iterator[list[tuple[str, Any]]]:
    """(display name, opener) of every GML document in `path` (a .gml/.xml file or a zip of them)."""
    if path.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise InputError(f"not a readable zip archive: {e}", path=path) from None
        try:
            names = sorted(
                n for n in zf.namelist() if n.lower().endswith((".gml", ".xml")) and not n.endswith("/")
            )
            if not names:
                raise InputError("zip archive holds no .gml/.xml plan", path=path)
            yield [(f"{path}!{n}", (lambda n=n: zf.open(n))) for n in names]
        finally:
            zf.close()
    else:
        yield [(str(path), (lambda: open(path, "rb")))]  # noqa: SIM115 (the caller opens it in a `with`)


def _iter_features(fh: IO[bytes], source: str, tol: float, crs_override: str | None) -> Iterator[_Feature]:
    """Stream the features of one XPlanGML document; yields the wanted ones, counts the rest."""
    version: str | None = None
    doc_srs: str | None = None
    ctx = etree.iterparse(fh, events=("start", "end"), huge_tree=True, remove_comments=True)
    depth = 0
    root = None
    try:
        for event, el in ctx:
            if event == "start":
                depth += 1
                if depth == 1:
                    root = el
                    for uri in (el.nsmap or {}).values():
                        m = XPLAN_NS.match(uri or "")
                        if m:
                            version = f"{m.group(1)}.{m.group(2)}"
                    if version is None:
                        raise InputError(
                            "not an XPlanGML document (no http://www.xplanung.de/xplangml/<major>/<minor> "
                            "namespace on the root element)",
                            path=source,
                        )
                    if version.split(".")[0] not in ("5", "6"):
                        raise InputError(
                            f"XPlanGML {version} is not supported (5.x and 6.x are)", path=source
                        )
                continue
            depth -= 1
            ln = local(el)
            if depth == 1 and ln == "boundedBy" and doc_srs is None:
                env = next((c for c in el if local(c) == "Envelope"), None)
                doc_srs = env.get("srsName") if env is not None else None
            if depth != 2:
                continue
            parent = el.getparent()
            if parent is None or local(parent) not in ("featureMember", "featureMembers", "member"):
                continue
            yield from _feature(el, ln, version or "", source, tol, doc_srs, crs_override)
            # bounded memory: drop the feature and everything parsed before it
            el.clear(keep_tail=False)
            while el.getprevious() is not None:
                del parent[0]
            if root is not None and local(parent) != "featureMembers":
                while parent.getprevious() is not None:
                    del root[0]
    except etree.XMLSyntaxError as e:
        raise InputError(f"XML cannot be parsed: {e}", path=source) from None
    if version is None:
        raise InputError("empty document", path=source)


def _feature(
    el: etree._Element,
    ln: str,
    version: str,
    source: str,
    tol: float,
    doc_srs: str | None,
    crs_override: str | None,
) -> Iterator[_Feature]:
    wanted = ln in AREA_TYPES or ln in LINE_TYPES or ln in (PLAN_TYPE, BEREICH_TYPE)
    if not wanted:
        yield _Feature(ln, _gml_id(el), {}, None, "", [], source)  # counted as skipped
        return
    gid = _gml_id(el)
    if not gid:
        raise InputError(f"<{ln}> without gml:id", path=source)
    geom_srs: set[str] = set()
    envelope_srs = None
    for e in el.iter():
        srs_name = e.get("srsName") if isinstance(e.tag, str) else None
        if srs_name:
            if local(e) == "Envelope":
                envelope_srs = envelope_srs or srs_name
            else:
                geom_srs.add(srs_to_crs(srs_name) or srs_name)
    if len(geom_srs) > 1:
        raise InputError(
            f"geometries in several CRS {sorted(geom_srs)} in one object", path=source, record=gid
        )
    srs = next(iter(geom_srs), None) or envelope_srs or doc_srs
    crs = srs_to_crs(srs) if srs else None
    if crs is None:
        crs = crs_override
    has_geometry = any(local(c) in ("position", "raeumlicherGeltungsbereich") for c in el)
    if crs is None and has_geometry:
        raise InputError(
            f"unknown or missing srsName {srs!r}; set the CRS of the zoning plans in the config",
            path=source,
            record=gid,
        )
    bereich = [
        _href(c) for c in el if local(c) in ("gehoertZuBereich", "gehoertZuBP_Bereich", "gehoertZuPlan")
    ]
    props: dict[str, Any] = {"version": version}
    geom = None
    if ln == BEREICH_TYPE:
        yield _Feature(ln, gid, props, None, crs or "", bereich, source)
        return
    if ln == PLAN_TYPE:
        for c in el:
            cl = local(c)
            if cl in ("name", "nummer", "rechtsstand", "planArt"):
                props[cl] = _text(c)
            elif cl == "raeumlicherGeltungsbereich":
                geom = _geometry(c, "area", source, gid, tol)
            elif cl == "bereich":
                bereich.append(_href(c))
        yield _Feature(ln, gid, props, geom, crs or "", bereich, source)
        return
    kind = AREA_TYPES.get(ln) or LINE_TYPES[ln]
    row: dict[str, Any] = _empty_row(kind) if ln in AREA_TYPES else {"kind": kind}
    other: dict[str, Any] = {}
    angaben: list[dict[str, Any]] = []
    for c in el:
        cl = local(c)
        if not cl:
            continue
        if cl == "position":
            geom = _geometry(c, "area" if ln in AREA_TYPES else "line", source, gid, tol)
        elif cl == "hoehenangabe":
            for ha in c:
                if local(ha) == "XP_Hoehenangabe":
                    angaben.append(_hoehenangabe(ha, source, gid))
        elif cl in STRUCTURAL:
            continue
        elif cl in ("ebene",):
            row["ebene"] = int(_number(c, cl, source, gid, None))
        elif cl == "rechtscharakter":
            row["rechtscharakter"] = _text(c)
        elif cl == "besondereArtDerBaulNutzung" and ln in AREA_TYPES:
            row["art"] = _text(c)
        elif ln in AREA_TYPES and cl in MEASURE_COLUMNS:
            base = cl.split("_")[0].removesuffix("min").removesuffix("max").removesuffix("zwingend")
            units = AREA_UNITS_OK if AREA_UNITS.get(base) == "m2" else None
            v = _number(c, cl, source, gid, units)
            col = MEASURE_COLUMNS[cl]
            if col.endswith("_zwingend"):
                measure = col.removesuffix("_zwingend")
                _set_limit(row, f"{measure}_min", v, source, gid, cl)
                _set_limit(row, f"{measure}_max", v, source, gid, cl)
            _set_limit(row, col, v, source, gid, cl)
        elif ln in AREA_TYPES and _DIRECT_HEIGHT.match(cl):
            m = _DIRECT_HEIGHT.match(cl)
            assert m is not None
            k = _DIRECT_KIND[m.group(1)]
            suffix = (m.group(2) or "max").lower()
            v = _number(c, cl, source, gid, LENGTH_UNITS)
            if suffix in ("min", "zwingend"):
                _set_limit(row, f"{k}_min", v, source, gid, cl)
            if suffix in ("max", "zwingend"):
                _set_limit(row, f"{k}_max", v, source, gid, cl)
        else:
            # kept, not interpreted: complex values as their text content
            val = _text(c) if len(c) == 0 else " ".join(" ".join(c.itertext()).split())
            if c.get("{http://www.w3.org/1999/xlink}href"):
                val = "#" + _href(c)
            other.setdefault(cl, []).append(val)
    if geom is None:
        raise InputError(f"<{ln}> without position (geometry)", path=source, record=gid)
    if ln in AREA_TYPES:
        _apply_heights(row, angaben, source, gid)
        row["heights"] = json.dumps(angaben, sort_keys=True, ensure_ascii=False) if angaben else ""
    row["other"] = json.dumps(other, sort_keys=True, ensure_ascii=False) if other else ""
    row.update(props)
    yield _Feature(ln, gid, row, geom, crs or "", bereich, source)


# ---- CRS ----------------------------------------------------------------------------------------------


def _transform(geoms: list[Any], src: str, dst: str, source: str, gids: list[str]) -> tuple[list[Any], float]:
    """Geometries from `src` to `dst` (easting first); checks the area of use of `src`."""
    from pyproj import CRS, Transformer

    try:
        scrs = CRS.from_user_input(src)
    except Exception as e:  # pyproj raises CRSError
        raise CrsError(f"unknown CRS {src!r}: {e}", path=source) from None
    arr = np.array(geoms, dtype=object)
    aou = scrs.area_of_use
    lon = lat = np.zeros(0)
    if len(arr):
        to_ll = Transformer.from_crs(scrs, "EPSG:4326", always_xy=True)
        b = shapely.bounds(arr)
        lon, lat = to_ll.transform(
            np.concatenate([b[:, 0], b[:, 2]]), np.concatenate([b[:, 1], b[:, 3]]), errcheck=False
        )
        lon = np.asarray(lon)
        lat = np.asarray(lat)
    if aou is not None and len(arr):
        margin = 1.0  # degrees
        bad = ~(
            np.isfinite(lon)
            & np.isfinite(lat)
            & (lon >= aou.west - margin)
            & (lon <= aou.east + margin)
            & (lat >= aou.south - margin)
            & (lat <= aou.north + margin)
        )
        if bad.any():
            k = int(np.flatnonzero(bad)[0]) % len(arr)
            raise InputError(
                f"coordinates lie outside the area of use of {src} ({aou.name}): wrong srsName or "
                "swapped axes (XPlanGML writes easting first)",
                path=source,
                record=gids[k],
            )
    if CRS.from_user_input(dst) == scrs:
        return list(arr), 0.0
    from pyproj.transformer import AreaOfInterest, TransformerGroup

    aoi = None
    if len(arr):
        aoi = AreaOfInterest(float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))
    # the best operation PROJ can run for the plan's area, never a ballpark one (no datum shift)
    with warnings.catch_warnings():
        # "best transformation is not available": reported below with the accuracy actually reached
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(scrs, dst, always_xy=True, allow_ballpark=False, area_of_interest=aoi)
    if not group.transformers:
        raise CrsError(f"no usable transformation {src} -> {dst} (only ballpark ones)", path=source)
    t = group.transformers[0]
    out = shapely.transform(arr, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(shapely.bounds(out)).all():
        raise CrsError(f"transforming {src} -> {dst} failed ({t.description})", path=source)
    acc = float(t.accuracy) if t.accuracy is not None else -1.0
    return list(out), acc


def verify_plan(path: Path | str) -> str | None:
    """Read a plan file (or every plan of a zip) completely as XML: None when it is well-formed XPlanGML
    5.x/6.x, else the problem in one line (the input check before a build; geometry and CRS are checked
    when the layer reads the plan)."""
    try:
        with _open_members(Path(path)) as members:
            for source, opener in members:
                with opener() as fh:
                    root = None
                    for event, el in etree.iterparse(fh, events=("start", "end"), huge_tree=True):
                        if event == "start":
                            if root is None:
                                root = el
                                majors = [
                                    m.group(1)
                                    for u in (el.nsmap or {}).values()
                                    if (m := XPLAN_NS.match(u or ""))
                                ]
                                if not majors:
                                    return f"{source}: not an XPlanGML document"
                                major = majors[0]
                                if major not in ("5", "6"):
                                    return f"{source}: XPlanGML {major}.x is not supported (5.x and 6.x are)"
                            continue
                        if root is not None and el.getparent() is root:
                            el.clear(keep_tail=False)
                            while el.getprevious() is not None:
                                del root[0]
    except InputError as e:
        return e.message
    except etree.XMLSyntaxError as e:
        return f"XML cannot be parsed: {e}"
    return None


# ---- entry --------------------------------------------------------------------------------------------


def plan_files(paths: Iterable[Path]) -> list[Path]:
    """The plan files among `paths` (.gml, .xml, .zip), sorted; others are an InputError."""
    out = []
    for p in sorted(Path(x) for x in paths):
        if p.suffix.lower() not in (".gml", ".xml", ".zip"):
            raise InputError("a zoning plan must be .gml, .xml or a .zip of them", path=p)
        if not p.is_file():
            raise InputError("zoning plan file does not exist", path=p)
        out.append(p)
    return out


def read_plans(
    paths: Iterable[Path | str],
    target_crs: str = "EPSG:25832",
    *,
    crs_override: str | None = None,
    arc_tolerance_m: float = 0.01,
) -> ZoningPlans:
    """Read XPlanGML plans (files or zips) into plans, areas and lines in `target_crs`."""
    feats: list[_Feature] = []
    skipped: Counter[str] = Counter()
    notes: list[str] = []
    for path in plan_files(Path(p) for p in paths):
        with _open_members(path) as members:
            for source, opener in members:
                with opener() as fh:
                    for f in _iter_features(fh, source, arc_tolerance_m, crs_override):
                        if (
                            f.type in AREA_TYPES
                            or f.type in LINE_TYPES
                            or f.type in (PLAN_TYPE, BEREICH_TYPE)
                        ):
                            feats.append(f)
                        else:
                            skipped[f.type] += 1
    return _assemble(feats, target_crs, notes, dict(sorted(skipped.items())))


def _assemble(
    feats: list[_Feature], target_crs: str, notes: list[str], skipped: dict[str, int]
) -> ZoningPlans:
    # plans and the Bereich -> plan links, per source document
    plan_of_bereich: dict[tuple[str, str], str] = {}
    plans_by_source: dict[str, list[str]] = {}
    sources_of: dict[str, list[str]] = {}
    for f in feats:
        if f.type == PLAN_TYPE:
            sources_of.setdefault(f.gml_id, []).append(f.source)
    seen_plans: dict[str, str] = {}  # plan_id -> source
    for f in feats:
        if f.type == PLAN_TYPE:
            pid = f.gml_id
            if len(sources_of[f.gml_id]) > 1:
                # the same gml:id in several documents (e.g. a plan and its amendment): keep both, apart
                pid = f"{f.gml_id}@{f.source.replace(chr(92), '/').rsplit('/', 1)[-1]}"
                if pid in seen_plans:
                    raise InputError(
                        f"BP_Plan {f.gml_id} is given twice in {f.source}", path=f.source, record=f.gml_id
                    )
                notes.append(
                    f"{f.source}: BP_Plan {f.gml_id} is also in {[s for s in sources_of[f.gml_id] if s != f.source]}; "
                    f"this one is called {pid}"
                )
            seen_plans[pid] = f.source
            f.props["plan_id"] = pid
            plans_by_source.setdefault(f.source, []).append(pid)
            for b in f.bereich:
                plan_of_bereich[(f.source, b)] = pid
    plan_by_gml = {(f.source, f.gml_id): f.props["plan_id"] for f in feats if f.type == PLAN_TYPE}
    for f in feats:
        if f.type == BEREICH_TYPE:
            for b in f.bereich:  # gehoertZuPlan
                if (f.source, b) in plan_by_gml:
                    plan_of_bereich[(f.source, f.gml_id)] = plan_by_gml[(f.source, b)]

    def plan_id(f: _Feature) -> str:
        for b in f.bereich:
            p = plan_of_bereich.get((f.source, b))
            if p:
                return p
        ps = plans_by_source.get(f.source, [])
        if len(ps) == 1:
            return ps[0]
        if not ps:
            raise InputError("plan content without a BP_Plan in the document", path=f.source, record=f.gml_id)
        raise InputError(
            "cannot tell which of the document's BP_Plan this object belongs to (no gehoertZuBereich)",
            path=f.source,
            record=f.gml_id,
        )

    # transform per (source, crs)
    groups: dict[tuple[str, str], list[_Feature]] = {}
    for f in feats:
        if f.geometry is not None:
            groups.setdefault((f.source, f.crs), []).append(f)
    accuracy: dict[str, float] = {}
    for (source, crs), fs in sorted(groups.items()):
        out, acc = _transform([f.geometry for f in fs], crs, target_crs, source, [f.gml_id for f in fs])
        for f, g in zip(fs, out, strict=True):
            f.geometry = g
        accuracy[source] = max(accuracy.get(source, 0.0), acc)
        if acc < 0 or acc > 0.5:
            notes.append(
                f"{source}: {crs} -> {target_crs} "
                + (f"accurate to about {acc:g} m" if acc >= 0 else "of unknown accuracy")
                + " (PROJ has no grid-based transformation, e.g. BeTA2007 for DHDN, at hand)"
            )

    # validity: repaired with a warning, never silently
    for f in feats:
        g = f.geometry
        if g is not None and not shapely.is_valid(g):
            notes.append(f"{f.source} [{f.gml_id}]: invalid geometry ({shapely.is_valid_reason(g)}) repaired")
            fixed = shapely.make_valid(g)
            if f.type in AREA_TYPES or f.type == PLAN_TYPE:
                polys = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
                fixed = shapely.union_all(polys) if polys else shapely.Polygon()
            f.geometry = fixed

    plan_rows = []
    for f in feats:
        if f.type == PLAN_TYPE:
            plan_rows.append(
                {
                    "plan_id": f.props["plan_id"],
                    "gml_id": f.gml_id,
                    "name": f.props.get("name", ""),
                    "nummer": f.props.get("nummer", ""),
                    "rechtsstand": f.props.get("rechtsstand", ""),
                    "planart": f.props.get("planArt", ""),
                    "version": f.props["version"],
                    "source": f.source,
                    "src_crs": f.crs,
                    "transform_accuracy_m": accuracy.get(f.source, 0.0),
                    "geometry": f.geometry,
                }
            )
    area_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    for f in feats:
        if f.type in AREA_TYPES or f.type in LINE_TYPES:
            row = {
                "plan_id": plan_id(f),
                "gml_id": f.gml_id,
                "feature_type": f.type,
                "ebene": f.props.get("ebene", 0),
                "rechtscharakter": f.props.get("rechtscharakter", ""),
                **{k: v for k, v in f.props.items() if k not in ("ebene", "rechtscharakter")},
                "source": f.source,
                "geometry": f.geometry,
            }
            (area_rows if f.type in AREA_TYPES else line_rows).append(row)
    plans = _gdf(plan_rows, target_crs, PLAN_COLUMNS)
    areas = _gdf(area_rows, target_crs, AREA_COLUMNS)
    lines = _gdf(line_rows, target_crs, LINE_COLUMNS)
    return ZoningPlans(plans=plans, areas=areas, lines=lines, warnings=notes, skipped=skipped)


PLAN_COLUMNS = [
    "plan_id",
    "gml_id",
    "name",
    "nummer",
    "rechtsstand",
    "planart",
    "version",
    "source",
    "src_crs",
    "transform_accuracy_m",
]
AREA_COLUMNS = [
    "plan_id",
    "gml_id",
    "kind",
    "feature_type",
    "ebene",
    "rechtscharakter",
    "art",
    *sorted(set(MEASURE_COLUMNS.values())),
    *[f"{k}_{s}" for k in HEIGHT_KINDS for s in ("min", "max", "ref")],
    "heights",
    "other",
    "version",
    "source",
]
LINE_COLUMNS = [
    "plan_id",
    "gml_id",
    "kind",
    "feature_type",
    "ebene",
    "rechtscharakter",
    "other",
    "version",
    "source",
]
_STR_COLUMNS = {"art", "rechtscharakter", "heights", "other", "th_ref", "fh_ref", "gh_ref"}


def _gdf(rows: list[dict[str, Any]], crs: str, columns: list[str]) -> gpd.GeoDataFrame:
    df = pd.DataFrame(rows, columns=[*columns, "geometry"])
    for c in columns:
        if c in _STR_COLUMNS:
            df[c] = df[c].astype(object).fillna("").astype(str)
    if "ebene" in df:
        df["ebene"] = df["ebene"].fillna(0).astype(np.int64)
    df = df.sort_values([c for c in ("plan_id", "gml_id") if c in df]).reset_index(drop=True)
    return gpd.GeoDataFrame(df, geometry="geometry", crs=crs)
