"""Shared pieces of the cadastre readers: the normalised footprint table, rejected-record reports,
ALKIS building-function codes and the geometry repair / filter step.

Every reader returns a `FootprintTable`: a GeoDataFrame in the working CRS (default EPSG:25832) with the
columns of `FOOTPRINT_COLUMNS` (missing values as None / NaN) plus the list of rejected records. Bad
records never raise: they are reported as (file, id, reason) and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

WORKING_CRS = "EPSG:25832"  # only labels an empty result (no file, no geometry): it holds no position
_Frame = TypeVar("_Frame", bound=pd.DataFrame)

# Normalised columns of a footprint table (besides `geometry`).
FOOTPRINT_COLUMNS: dict[str, str] = {
    "oid": "str",  # stable id (ALKIS oid / gml:id)
    "funktion": "str",  # function as text, e.g. "Wohngebäude"
    "gfkzshh": "str",  # function code, e.g. "31001_1000"
    "anzahlgs": "float",  # floors above ground (often empty)
    "gebnutzbez": "str",  # "Gebäude" / "Bauteil"
    "rellage": "str",  # relative position, e.g. "unter der Erdoberfläche"
    "lagebeztxt": "str",  # address text
    "aktualit": "str",  # date of last update
    "dachform": "str",
    "baujahr": "str",
    "objekthoehe": "float",
    "measured_height": "float",  # CityGML measuredHeight (reference models)
    "source_file": "str",
}

# ALKIS AX_Gebaeude.gebaeudefunktion: the codes that matter for a city model (GeoInfoDok 7).
GEBAEUDEFUNKTION: dict[int, str] = {
    1000: "Wohngebäude",
    1010: "Wohnhaus",
    1020: "Wohnheim",
    1100: "Gemischt genutztes Gebäude mit Wohnen",
    1110: "Wohngebäude mit Gemeinbedarf",
    1120: "Wohngebäude mit Handel und Dienstleistungen",
    1130: "Wohngebäude mit Gewerbe und Industrie",
    1220: "Land- und forstwirtschaftliches Wohngebäude",
    1310: "Gebäude zur Freizeitgestaltung",
    1313: "Gartenhaus",
    2000: "Gebäude für Wirtschaft oder Gewerbe",
    2010: "Gebäude für Handel und Dienstleistungen",
    2020: "Bürogebäude",
    2030: "Kreditinstitut",
    2050: "Geschäftsgebäude",
    2056: "Kaufhaus",
    2071: "Hotel, Motel, Pension",
    2081: "Gaststätte, Restaurant",
    2100: "Gebäude für Gewerbe und Industrie",
    2110: "Produktionsgebäude",
    2112: "Betriebsgebäude",
    2120: "Werkstatt",
    2140: "Lagerhalle, Lagerschuppen, Lagerhaus",
    2400: "Betriebsgebäude zu Verkehrsanlagen (allgemein)",
    2460: "Gebäude zum Parken",
    2461: "Parkhaus",
    2462: "Parkdeck",
    2463: "Garage",
    2464: "Fahrzeughalle",
    2465: "Tiefgarage",
    2500: "Gebäude zur Versorgung",
    2510: "Gebäude zur Wasserversorgung",
    2520: "Gebäude zur Elektrizitätsversorgung",
    2523: "Umformer",
    2700: "Gebäude für Land- und Forstwirtschaft",
    2720: "Land- und forstwirtschaftliches Betriebsgebäude",
    2723: "Schuppen",
    2740: "Treibhaus, Gewächshaus",
    3000: "Gebäude für öffentliche Zwecke",
    3010: "Verwaltungsgebäude",
    3020: "Gebäude für Bildung und Forschung",
    3021: "Allgemein bildende Schule",
    3023: "Hochschulgebäude (Fachhochschule, Universität)",
    3040: "Gebäude für religiöse Zwecke",
    3041: "Kirche",
    3050: "Gebäude für Gesundheitswesen",
    3051: "Krankenhaus",
    3060: "Gebäude für soziale Zwecke",
    3065: "Kinderkrippe, Kindergarten, Kindertagesstätte",
    3070: "Gebäude für Sicherheit und Ordnung",
    3071: "Polizei",
    3072: "Feuerwehr",
    3200: "Gebäude für Erholungszwecke",
    3211: "Sport-, Turnhalle",
    3221: "Hallenbad",
    9998: "Nach Quellenlage nicht zu spezifizieren",
}

# Groups used by the default style (colour by function).
FUNCTION_GROUPS = (
    "Wohngebäude",
    "Gemischt",
    "Handel/Dienstleistung",
    "Industrie/Gewerbe",
    "Garage",
    "Öffentlich",
    "Landwirtschaft",
    "Sonstige",
)


def function_code(gfkzshh: str | None) -> int:
    """The 4-digit function code of an ALKIS function key like '31001_1000' (0 = unknown)."""
    if not gfkzshh:
        return 0
    tail = str(gfkzshh).rsplit("_", 1)[-1].strip()
    return int(tail) if tail.isdigit() else 0


def function_group(code: int, text: str | None = None) -> str:
    """Map an ALKIS function code (or, without a code, the function text) to a style group."""
    if code:
        if 1000 <= code < 1100 or code == 1220:
            return "Wohngebäude"
        if 1100 <= code < 1300:
            return "Gemischt"
        if 2460 <= code <= 2465:
            return "Garage"
        if 2000 <= code < 2100:
            return "Handel/Dienstleistung"
        if 2100 <= code < 2700:
            return "Industrie/Gewerbe"
        if 2700 <= code < 2800:
            return "Landwirtschaft"
        if 3000 <= code < 4000:
            return "Öffentlich"
        return "Sonstige"
    t = (text or "").lower()
    for key, group in (
        ("garage", "Garage"),
        ("parkhaus", "Garage"),
        ("gemischt", "Gemischt"),
        ("wohn", "Wohngebäude"),
        ("handel", "Handel/Dienstleistung"),
        ("büro", "Handel/Dienstleistung"),
        ("industrie", "Industrie/Gewerbe"),
        ("gewerbe", "Industrie/Gewerbe"),
        ("öffentlich", "Öffentlich"),
        ("schule", "Öffentlich"),
        ("land", "Landwirtschaft"),
    ):
        if key in t:
            return group
    return "Sonstige"


@dataclass(frozen=True)
class Rejected:
    """One skipped record: which file, which id (or '-' when unknown), why."""

    file: str
    id: str
    reason: str


@dataclass
class FootprintTable:
    """Footprints in the working CRS (normalised columns) and the records that were skipped."""

    gdf: gpd.GeoDataFrame
    rejected: list[Rejected] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.gdf)


def empty_footprints() -> gpd.GeoDataFrame:
    cols = {k: pd.Series(dtype="float64" if v == "float" else "object") for k, v in FOOTPRINT_COLUMNS.items()}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=WORKING_CRS), crs=WORKING_CRS)


def normalise_columns(df: _Frame) -> _Frame:
    """Add the missing normalised columns and coerce their types (text -> str/None, numbers -> float)."""
    out = df.copy()
    for col, kind in FOOTPRINT_COLUMNS.items():
        if col not in out.columns:
            out[col] = np.nan if kind == "float" else None
        elif kind == "float":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        else:
            out[col] = pd.Series(
                [text_or_none(v) for v in out[col].to_numpy()], index=out.index, dtype=object
            )
    return out


@dataclass(frozen=True)
class FootprintFilter:
    """Filters and repair thresholds applied to every reader's output."""

    skip_bauteil: bool = True
    # Bauteil records kept despite skip_bauteil: their bauart (gfkzshh "31002_<bauart>") is one of these
    # (the building parts with a roof of their own, layers.buildings.lod2_part_bauarten)
    keep_bauarten: tuple[int, ...] = ()
    skip_underground: bool = True
    min_area_m2: float = 2.0
    sliver_width_m: float = 0.2  # polygon parts thinner than this (2*area/perimeter) are slivers
    min_part_area_m2: float = 0.5


def text_or_none(v: object) -> str | None:
    """None for missing values (None, NaN, empty), else the stripped text."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    t = str(v).strip()
    return t or None


def _is_underground(rellage: object) -> bool:
    t = text_or_none(rellage)
    if t is None:
        return False
    t = t.lower()
    return "unter" in t or t.strip() == "1200"


def repair_and_filter(
    gdf: gpd.GeoDataFrame, flt: FootprintFilter, rejected: list[Rejected]
) -> gpd.GeoDataFrame:
    """Repair geometry (make_valid, polygonal parts only, slivers removed), apply filters, drop duplicate
    ids; every dropped record is appended to `rejected`. Returns the kept records sorted by oid, with a
    column `repair`: '' (geometry as delivered), `made_valid` (invalid, repaired with make_valid),
    `parts_removed` (slivers or tiny parts dropped) or both, '|'-separated."""
    if len(gdf) == 0:
        return gdf
    n = len(gdf)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    files = gdf["source_file"].fillna("-").to_numpy()
    oids = np.array([text_or_none(v) for v in gdf["oid"].to_numpy()], dtype=object)
    reason = np.full(n, None, dtype=object)  # first reason wins

    def flag(mask: np.ndarray, why: str | Callable[[int], str]) -> None:
        m = mask & (reason == None)  # noqa: E711 (element-wise)
        for i in np.flatnonzero(m):
            reason[i] = why(i) if callable(why) else why

    flag(np.array([o is None for o in oids], dtype=bool), "missing id")
    if flt.skip_bauteil:
        keys = gdf["gfkzshh"] if "gfkzshh" in gdf else [None] * n
        flag(
            np.array(
                [
                    (text_or_none(v) or "").lower() == "bauteil"
                    and function_code(text_or_none(k)) not in flt.keep_bauarten
                    for v, k in zip(gdf["gebnutzbez"], keys, strict=True)
                ],
                dtype=bool,
            ),
            "filtered: Bauteil",
        )
    if flt.skip_underground:
        flag(np.array([_is_underground(v) for v in gdf["rellage"]], dtype=bool), "filtered: underground")
    missing = np.array([g is None for g in geoms], dtype=bool)
    geoms = geoms.copy()
    geoms[missing] = shapely.Polygon()
    flag(missing | shapely.is_empty(geoms), "empty geometry")
    tid = shapely.get_type_id(geoms)
    flag(~np.isin(tid, (3, 6, 7)), lambda i: f"not a polygon ({geoms[i].geom_type})")
    todo = reason == None  # noqa: E711
    g2 = geoms.copy()
    g2[todo] = shapely.force_2d(geoms[todo])
    valid = np.ones(n, dtype=bool)
    valid[todo] = shapely.is_valid(g2[todo])
    fix = todo & ~valid
    if fix.any():
        g2[fix] = shapely.make_valid(g2[fix])
    # polygon parts; sliver removal: tiny or very thin parts (2 * area / perimeter = mean width)
    idx_todo = np.flatnonzero(todo)
    parts, owner = shapely.get_parts(g2[idx_todo], return_index=True)
    owner = idx_todo[owner]
    area = shapely.area(parts)
    polygonal = shapely.get_type_id(parts) == 3
    good = polygonal & (area >= flt.min_part_area_m2)
    good &= 2.0 * area / np.maximum(shapely.length(parts), 1e-9) >= flt.sliver_width_m
    dropped = np.bincount(owner[polygonal & ~good], minlength=n)  # slivers / tiny parts removed
    parts, owner = parts[good], owner[good]
    count = np.bincount(owner, minlength=n)
    flag(
        todo & (count == 0),
        lambda i: "invalid geometry could not be repaired" if not valid[i] else "only slivers",
    )
    out_geoms = np.empty(n, dtype=object)
    single = todo & (count == 1)
    first = np.searchsorted(owner, np.arange(n))
    out_geoms[single] = parts[first[single]]
    multi = np.flatnonzero(todo & (count > 1))
    if multi.size:
        sel = np.isin(owner, multi)
        mp = shapely.multipolygons(parts[sel], indices=np.searchsorted(multi, owner[sel]))
        out_geoms[multi] = mp
    ok = todo & (count > 0)
    out_geoms[ok] = shapely.normalize(out_geoms[ok].astype(object))
    final_area = np.zeros(n)
    final_area[ok] = shapely.area(out_geoms[ok])
    flag(
        ok & (final_area < flt.min_area_m2),
        lambda i: f"area {final_area[i]:.2f} m2 below min_area_m2 {flt.min_area_m2}",
    )
    keep = reason == None  # noqa: E711
    for i in np.flatnonzero(~keep):
        rejected.append(Rejected(str(files[i]), oids[i] or "-", str(reason[i])))

    def reject(i: int, why: str) -> None:
        keep[i] = False
        rejected.append(Rejected(str(files[i]), oids[i] or "-", why))

    # duplicate ids: keep the first occurrence (input order), report the others
    seen: set[str] = set()
    for i in np.flatnonzero(keep):
        if oids[i] in seen:
            reject(int(i), "duplicate id")
        else:
            seen.add(oids[i])
    res = gdf.loc[keep].copy()
    res["geometry"] = gpd.GeoSeries(out_geoms[keep], index=res.index, crs=gdf.crs)
    # what the repair changed in a kept footprint ('' = the delivered geometry, only normalised)
    repair = np.full(n, "", dtype=object)
    repair[fix] = "made_valid"
    sliv = dropped > 0
    repair[sliv] = np.where(fix[sliv], "made_valid|parts_removed", "parts_removed")
    res["repair"] = repair[keep]
    res = res.set_geometry("geometry")
    return res.sort_values("oid", kind="stable").reset_index(drop=True)


def to_working_crs(
    gdf: gpd.GeoDataFrame, override: str | None, path: Path | str, target: object = None
) -> gpd.GeoDataFrame:
    """Reproject to the working CRS `target` (its horizontal part; None: keep the file's own CRS); a file
    without CRS needs the source's `crs:` (never guessed)."""
    from pyproj import CRS

    from pipeline.errors import CrsError

    if override:
        gdf = gdf.set_crs(override, allow_override=True)
    if gdf.crs is None:
        raise CrsError("cadastre file has no CRS; set sources.cadastre.crs", path=path)
    horiz = gdf.crs.sub_crs_list[0] if gdf.crs.is_compound and gdf.crs.sub_crs_list else gdf.crs
    gdf = gdf.set_crs(horiz, allow_override=True)
    if target is None:
        return gdf
    want = CRS.from_user_input(target)
    if want.is_compound and want.sub_crs_list:
        want = next(c for c in want.sub_crs_list if not c.is_vertical)
    if horiz.equals(want) or horiz.to_2d().equals(want.to_2d()):
        return gdf.set_crs(want, allow_override=True)
    out = gdf.to_crs(want)
    if len(out) and not np.isfinite(out.total_bounds).all():
        raise CrsError(
            f"footprints in {horiz.name} cannot be transformed to the working CRS {want.name} (non-finite "
            "coordinates: outside the area either CRS covers?)",
            path=path,
        )
    return out
