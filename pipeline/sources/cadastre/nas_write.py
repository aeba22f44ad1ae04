"""Write ALKIS NAS XML: complete deliveries (`AX_Bestandsdatenauszug`), NBA updates
(`AX_NutzerbezogeneBestandsdatenaktualisierung_NBA` with `wfs:Transaction`) and large synthetic deliveries
for benchmarks. Used by the tests, the NAS benchmark and to turn the demo's GeoPackage into NAS.

    write_bestandsdatenauszug(path, buildings, parcels)      # GeoDataFrames -> one NAS file
    write_nba(path, inserts=..., replaces=..., deletes=..., datum="2025-01-31T00:00:00Z", number=1)
    synthesize_nas(path, target_bytes)                       # repeated, shifted building/parcel records

Records look like the ones of state deliveries (GeoInfoDok 6.0 NAS): `gml:identifier`, life-time
interval, model type, occasion, relations (`xlink:href`), `position` as `gml:Surface` / `gml:PolygonPatch`
whose rings are `gml:Ring` / `gml:curveMember` / `gml:Curve` with one `gml:LineStringSegment` per edge,
multi-part footprints as `gml:MultiSurface`. Coordinates in millimetres (3 decimals).

Building columns used (all optional but `oid`, `geometry`): `gfkzshh` (`31001_<code>`) or `funktion_code`,
`anzahlgs`, `rellage` (text containing "unter" -> lageZurErdoberflaeche 1200), `gebnutzbez` ("Bauteil"
records are written as `AX_Bauteil`, which the reader does not take as buildings), `dachform`,
`baujahr`, `objekthoehe`. Parcel columns: `oid` (optional), `flstkennz`, `geometry`.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import shapely

NS_60 = "http://www.adv-online.de/namespaces/adv/gid/6.0"
SRS_UTM32 = "urn:adv:crs:ETRS89_UTM32"
_STAMP = "20200101T000000Z"

_HEAD_BDA = """<?xml version="1.0" encoding="UTF-8"?>
<AX_Bestandsdatenauszug xmlns="{ns}" xmlns:gml="http://www.opengis.net/gml/3.2" \
xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:wfs="http://www.adv-online.de/namespaces/adv/gid/wfs" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:ogc="http://www.adv-online.de/namespaces/adv/gid/ogc">
<empfaenger><AA_Empfaenger><direkt>true</direkt></AA_Empfaenger></empfaenger>
<ausgabeform>application/xml</ausgabeform>
<koordinatenangaben><AA_Koordinatenreferenzsystemangaben><crs xlink:href="{srs}"/>\
<anzahlDerNachkommastellen>3</anzahlDerNachkommastellen><standard>true</standard>\
</AA_Koordinatenreferenzsystemangaben></koordinatenangaben>
<enthaelt><wfs:FeatureCollection gml:id="_FC0001">
"""
_TAIL_BDA = "</wfs:FeatureCollection></enthaelt>\n</AX_Bestandsdatenauszug>\n"

_HEAD_NBA = """<?xml version="1.0" encoding="UTF-8"?>
<AX_NutzerbezogeneBestandsdatenaktualisierung_NBA xmlns="{ns}" xmlns:gml="http://www.opengis.net/gml/3.2" \
xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:wfs="http://www.adv-online.de/namespaces/adv/gid/wfs" \
xmlns:wfsext="http://www.adv-online.de/namespaces/adv/gid/wfsext" \
xmlns:ogc="http://www.adv-online.de/namespaces/adv/gid/ogc">
<empfaenger><AA_Empfaenger><direkt>true</direkt></AA_Empfaenger></empfaenger>
<ausgabeform>application/xml</ausgabeform>
<profilkennung>RUHRTWIN_TEST</profilkennung>
<portionskennung><AX_Portionskennung><profilkennung>RUHRTWIN_TEST</profilkennung>\
<datum>{datum}</datum><laufendeNummerVonGesamtzahl>{number}</laufendeNummerVonGesamtzahl>\
<gesamtzahl>{total}</gesamtzahl></AX_Portionskennung></portionskennung>
<koordinatenangaben><AA_Koordinatenreferenzsystemangaben><crs xlink:href="{srs}"/>\
<anzahlDerNachkommastellen>3</anzahlDerNachkommastellen><standard>true</standard>\
</AA_Koordinatenreferenzsystemangaben></koordinatenangaben>
<geaenderteObjekte><wfs:Transaction version="1.0.0" service="WFS">
"""
_TAIL_NBA = "</wfs:Transaction></geaenderteObjekte>\n</AX_NutzerbezogeneBestandsdatenaktualisierung_NBA>\n"


def _pl(coords: np.ndarray) -> str:
    return " ".join(f"{x:.3f} {y:.3f}" for x, y in coords[:, :2])


def _ring(coords: np.ndarray, gid: str) -> str:
    segs = "".join(
        f"<gml:LineStringSegment><gml:posList>{_pl(coords[i : i + 2])}</gml:posList></gml:LineStringSegment>"
        for i in range(len(coords) - 1)
    )
    return (
        f'<gml:Ring><gml:curveMember><gml:Curve gml:id="{gid}"><gml:segments>{segs}</gml:segments>'
        "</gml:Curve></gml:curveMember></gml:Ring>"
    )


def _patch(poly: shapely.Polygon, gid: str) -> str:
    out = [f"<gml:exterior>{_ring(np.asarray(poly.exterior.coords), gid + 'e')}</gml:exterior>"]
    for k, hole in enumerate(poly.interiors):
        out.append(f"<gml:interior>{_ring(np.asarray(hole.coords), f'{gid}i{k}')}</gml:interior>")
    return "".join(out)


def surface_xml(geom, gid: str, srs: str = SRS_UTM32) -> str:
    """`position` content of a polygon or multi-polygon."""
    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    if len(polys) == 1:
        return (
            f'<gml:Surface gml:id="{gid}" srsName="{srs}"><gml:patches><gml:PolygonPatch>'
            f"{_patch(polys[0], gid + 'p')}</gml:PolygonPatch></gml:patches></gml:Surface>"
        )
    members = "".join(
        f'<gml:surfaceMember><gml:Polygon gml:id="{gid}m{k}">{_patch(p, f"{gid}m{k}p")}</gml:Polygon>'
        "</gml:surfaceMember>"
        for k, p in enumerate(polys)
    )
    return f'<gml:MultiSurface gml:id="{gid}" srsName="{srs}">{members}</gml:MultiSurface>'


def _head(oid: str, stamp: str, anlass: str = "000000") -> str:
    return (
        f'<gml:identifier codeSpace="http://www.adv-online.de/">urn:adv:oid:{oid}</gml:identifier>'
        f"<lebenszeitintervall><AA_Lebenszeitintervall><beginnt>{_iso(stamp)}</beginnt>"
        "</AA_Lebenszeitintervall></lebenszeitintervall>"
        "<modellart><AA_Modellart><advStandardModell>DLKM</advStandardModell></AA_Modellart></modellart>"
        f"<anlass>{anlass}</anlass>"
    )


def _iso(stamp: str) -> str:
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"


def _text(v: object) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        import pandas as pd

        if v is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    t = str(v).strip()
    return t or None


def building_xml(rec: dict, stamp: str = _STAMP, srs: str = SRS_UTM32) -> str:
    """One `AX_Gebaeude` (or `AX_Bauteil` for Bauteil records) element."""
    oid = str(rec["oid"])
    kind = "AX_Bauteil" if (_text(rec.get("gebnutzbez")) or "").lower() == "bauteil" else "AX_Gebaeude"
    code = _text(rec.get("funktion_code"))
    gfk = _text(rec.get("gfkzshh"))
    if code is None and gfk and "_" in gfk:
        code = gfk.rsplit("_", 1)[-1]
    attrs = []
    if kind == "AX_Bauteil":
        attrs.append(f"<bauart>{code or '1000'}</bauart>")
    elif code:
        attrs.append(f"<gebaeudefunktion>{code}</gebaeudefunktion>")
    n = _text(rec.get("anzahlgs"))
    if n:
        attrs.append(f"<anzahlDerOberirdischenGeschosse>{int(float(n))}</anzahlDerOberirdischenGeschosse>")
    if "unter" in (_text(rec.get("rellage")) or "").lower():
        attrs.append("<lageZurErdoberflaeche>1200</lageZurErdoberflaeche>")
    for key, tag in (("objekthoehe", "objekthoehe"), ("dachform", "dachform"), ("baujahr", "baujahr")):
        v = _text(rec.get(key))
        if v:
            attrs.append(f"<{tag}>{v}</{tag}>")
    attrs.append(f'<zeigtAuf xlink:href="urn:adv:oid:{oid[:8]}LB{oid[-6:]}"/>')
    return (
        f'<{kind} gml:id="{oid}{stamp}">{_head(oid, stamp)}'
        f"<position>{surface_xml(rec['geometry'], f'o{oid}', srs)}</position>{''.join(attrs)}</{kind}>"
    )


def parcel_xml(rec: dict, stamp: str = _STAMP, srs: str = SRS_UTM32) -> str:
    """One `AX_Flurstueck` element (attributes derived from the 20-character flstkennz)."""
    key = str(rec["flstkennz"])
    oid = _text(rec.get("oid")) or f"DENW{zlib.crc32(key.encode()):012d}"
    land, gmk, flur = key[0:2], key[2:6], key[6:9]
    zaehler, nenner = key[9:14].lstrip("0") or "0", key[14:18].strip("_").lstrip("0")
    area = rec["geometry"].area
    nen = f"<nenner>{nenner}</nenner>" if nenner else ""
    return (
        f'<AX_Flurstueck gml:id="{oid}{stamp}">{_head(oid, stamp)}'
        f"<position>{surface_xml(rec['geometry'], f'o{oid}', srs)}</position>"
        f"<gemarkung><AX_Gemarkung_Schluessel><land>{land}</land><gemarkungsnummer>{gmk}"
        "</gemarkungsnummer></AX_Gemarkung_Schluessel></gemarkung>"
        f"<flurnummer>{int(flur) if flur.isdigit() else 0}</flurnummer>"
        f"<flurstuecksnummer><AX_Flurstuecksnummer><zaehler>{zaehler}</zaehler>{nen}"
        "</AX_Flurstuecksnummer></flurstuecksnummer>"
        f"<flurstueckskennzeichen>{key}</flurstueckskennzeichen>"
        f'<amtlicheFlaeche uom="m2">{area:.0f}</amtlicheFlaeche>'
        "<abweichenderRechtszustand>false</abweichenderRechtszustand>"
        f"<zeitpunktDerEntstehung>{_iso(stamp)[:10]}</zeitpunktDerEntstehung>"
        f"<gemeindezugehoerigkeit><AX_Gemeindekennzeichen><land>{land}</land><regierungsbezirk>5"
        "</regierungsbezirk><kreis>13</kreis><gemeinde>000</gemeinde></AX_Gemeindekennzeichen>"
        "</gemeindezugehoerigkeit>"
        f'<istGebucht xlink:href="urn:adv:oid:{oid[:8]}BS{oid[-6:]}"/>'
        f'<zeigtAuf xlink:href="urn:adv:oid:{oid[:8]}LB{oid[-6:]}"/>'
        "</AX_Flurstueck>"
    )


def _records(gdf) -> Iterator[dict]:
    if gdf is None:
        return
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    for row, geom in zip(gdf[cols].itertuples(index=False), gdf.geometry.values, strict=True):
        d = dict(zip(cols, row, strict=True))
        d["geometry"] = geom
        yield d


def _atomic_write(path: Path, chunks: Iterable[str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


def write_bestandsdatenauszug(path: Path, buildings=None, parcels=None, *, srs: str = SRS_UTM32) -> None:
    """A complete NAS delivery (`gml:featureMember` per object) of building and parcel GeoDataFrames."""

    def chunks() -> Iterator[str]:
        yield _HEAD_BDA.format(ns=NS_60, srs=srs)
        for rec in _records(parcels):
            yield f"<gml:featureMember>{parcel_xml(rec, srs=srs)}</gml:featureMember>\n"
        for rec in _records(buildings):
            yield f"<gml:featureMember>{building_xml(rec, srs=srs)}</gml:featureMember>\n"
        yield _TAIL_BDA

    _atomic_write(path, chunks())


def write_nba(
    path: Path,
    *,
    inserts=None,
    replaces=None,
    deletes: Iterable[tuple[str, str]] = (),
    ended: Iterable[tuple[str, str]] = (),
    datum: str = "2025-01-31T00:00:00Z",
    number: int = 1,
    total: int = 1,
    stamp: str = "20250131T000000Z",
    old_stamp: str = _STAMP,
    srs: str = SRS_UTM32,
) -> None:
    """An NBA update: `wfs:Insert` of the `inserts` buildings, `wfsext:Replace` of the `replaces` buildings
    (same oid, new version `stamp` replacing `old_stamp`), `wfs:Delete` of `deletes` [(typeName, oid)] and
    `wfs:Update` ending the life of `ended` [(typeName, oid)]."""

    def chunks() -> Iterator[str]:
        yield _HEAD_NBA.format(ns=NS_60, srs=srs, datum=datum, number=number, total=total)
        recs = list(_records(inserts))
        if recs:
            yield "<wfs:Insert>\n"
            for rec in recs:
                yield building_xml(rec, stamp, srs) + "\n"
            yield "</wfs:Insert>\n"
        for rec in _records(replaces):
            yield (
                f'<wfsext:Replace vendorId="AdV" safeToIgnore="false">{building_xml(rec, stamp, srs)}'
                f'<ogc:Filter><ogc:FeatureId fid="{rec["oid"]}{old_stamp}"/></ogc:Filter></wfsext:Replace>\n'
            )
        for type_name, oid in deletes:
            yield (
                f'<wfs:Delete typeName="{type_name}"><ogc:Filter><ogc:FeatureId fid="{oid}{old_stamp}"/>'
                "</ogc:Filter></wfs:Delete>\n"
            )
        for type_name, oid in ended:
            yield (
                f'<wfs:Update typeName="{type_name}"><wfs:Property>'
                "<wfs:Name>adv:lebenszeitintervall/adv:AA_Lebenszeitintervall/adv:endet</wfs:Name>"
                f"<wfs:Value>{datum}</wfs:Value></wfs:Property><wfs:Property><wfs:Name>adv:anlass</wfs:Name>"
                "<wfs:Value>010102</wfs:Value></wfs:Property>"
                f'<ogc:Filter><ogc:FeatureId fid="{oid}{old_stamp}"/></ogc:Filter></wfs:Update>\n'
            )
        yield _TAIL_NBA

    _atomic_write(path, chunks())


# ------------------------------------------------------------------------------------ synthetic


def _template(seed: int) -> tuple[list[dict], list[dict]]:
    """One 100 m x 100 m block: 4 x 4 parcels of 25 m, each with one building (4-12 vertices, some
    with a courtyard hole, some L-shaped), relative coordinates."""
    rng = np.random.default_rng(seed)
    buildings, parcels = [], []
    codes = ["1000", "1010", "2463", "2020", "1120", "2100", "3021"]
    for i in range(4):
        for j in range(4):
            x, y = 25.0 * i, 25.0 * j
            parcel = shapely.Polygon(
                [(x, y), (x + 12.5, y), (x + 25, y), (x + 25, y + 25), (x, y + 25), (x, y + 12.5)]
            )
            w, h = rng.uniform(8, 16), rng.uniform(8, 16)
            bx, by = x + rng.uniform(2, 23 - w), y + rng.uniform(2, 23 - h)
            kind = (i * 4 + j) % 4
            geom: shapely.Geometry
            if kind == 1:  # L-shape
                geom = shapely.Polygon(
                    [
                        (bx, by),
                        (bx + w, by),
                        (bx + w, by + h / 2),
                        (bx + w / 2, by + h / 2),
                        (bx + w / 2, by + h),
                        (bx, by + h),
                    ]
                )
            elif kind == 2:  # courtyard
                geom = shapely.box(bx, by, bx + w, by + h).difference(
                    shapely.box(bx + w / 3, by + h / 3, bx + 2 * w / 3, by + 2 * h / 3)
                )
            else:  # rectangle with intermediate vertices, as surveyed
                geom = shapely.box(bx, by, bx + w, by + h).segmentize(w / 3)
            buildings.append(
                {
                    "geometry": geom,
                    "gfkzshh": f"31001_{codes[(i + 3 * j) % len(codes)]}",
                    "anzahlgs": [1, 2, 3, None][j],
                    "dachform": ["1000", "3100", "2100", None][i],
                }
            )
            parcels.append({"geometry": parcel, "zaehler": i * 4 + j + 1})
    return buildings, parcels


def synthesize_nas(
    path: Path,
    target_bytes: int,
    *,
    other_kb_per_record: float = 0.0,
    x0: float = 360_000.0,
    y0: float = 5_710_000.0,
    seed: int = 0,
) -> dict[str, int]:
    """A complete NAS delivery of at least `target_bytes`: the template block repeated on a grid of
    100 m blocks (shifted copies, unique oids). `other_kb_per_record` adds objects the buildings layer
    does not read (boundary points `AX_PunktortAU`, boundary lines `AX_BesondereFlurstuecksgrenze`,
    text placements `AP_PTO`), about that many kB per building or parcel: real deliveries are mostly
    such objects (a state's 120 MB test delivery held 3,196 buildings and parcels, ~37 kB of file per
    record); 0 gives the worst case for memory, a file of buildings and parcels only.
    Returns {"buildings": n, "parcels": n, "other": n, "bytes": n}."""
    tb, tp = _template(seed)
    path = Path(path)
    n_b = n_p = n_o = 0
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_HEAD_BDA.format(ns=NS_60, srs=SRS_UTM32))
        block = 0
        cols = 200  # blocks per row: 20 km wide
        while f.tell() < target_bytes:
            dx = x0 + 100.0 * (block % cols)
            dy = y0 + 100.0 * (block // cols)
            start = f.tell()
            _write_block(f, tb, tp, dx, dy, block)
            n_b += len(tb)
            n_p += len(tp)
            goal = f.tell() + other_kb_per_record * 1000 * (len(tb) + len(tp))
            k = 0
            while f.tell() < goal and f.tell() - start < 10**9:
                f.write(_other_xml(block, k, dx, dy))
                k += 1
            n_o += k
            block += 1
        f.write(_TAIL_BDA)
        size = f.tell()
    os.replace(tmp, path)
    return {"buildings": n_b, "parcels": n_p, "other": n_o, "bytes": size}


def _other_xml(block: int, k: int, dx: float, dy: float) -> str:
    """One object of a type the buildings layer ignores (cycling through three kinds)."""
    oid = f"DENW36AL{block:06d}{k % 256:02X}"
    x, y = dx + (k * 7.3) % 100, dy + (k * 3.1) % 100
    head = _head(oid, _STAMP)
    kind = k % 3
    if kind == 0:
        return (
            f'<gml:featureMember><AX_PunktortAU gml:id="{oid}{_STAMP}">{head}'
            f'<position><gml:Point gml:id="p{oid}" srsName="{SRS_UTM32}"><gml:pos>{x:.3f} {y:.3f}'
            "</gml:pos></gml:Point></position><kartendarstellung>true</kartendarstellung>"
            "<qualitaetsangaben><AX_DQPunktort><herkunft><LI_Lineage><processStep><LI_ProcessStep>"
            "<description>Erhebung</description></LI_ProcessStep></processStep></LI_Lineage></herkunft>"
            "<genauigkeitsstufe>2100</genauigkeitsstufe><vertrauenswuerdigkeit>1100"
            "</vertrauenswuerdigkeit></AX_DQPunktort></qualitaetsangaben>"
            f'<istTeilVon xlink:href="urn:adv:oid:{oid[:8]}GP{oid[-6:]}"/></AX_PunktortAU></gml:featureMember>\n'
        )
    if kind == 1:
        return (
            f'<gml:featureMember><AX_BesondereFlurstuecksgrenze gml:id="{oid}{_STAMP}">{head}'
            f'<position><gml:LineString gml:id="l{oid}" srsName="{SRS_UTM32}"><gml:posList>'
            f"{x:.3f} {y:.3f} {x + 12.5:.3f} {y:.3f}</gml:posList></gml:LineString></position>"
            "<artDerFlurstuecksgrenze>3000</artDerFlurstuecksgrenze></AX_BesondereFlurstuecksgrenze>"
            "</gml:featureMember>\n"
        )
    return (
        f'<gml:featureMember><AP_PTO gml:id="{oid}{_STAMP}">{head}'
        f'<position><gml:Point gml:id="t{oid}" srsName="{SRS_UTM32}"><gml:pos>{x:.3f} {y:.3f}</gml:pos>'
        "</gml:Point></position><art>ZAE_NEN</art><drehwinkel>0.000</drehwinkel>"
        "<horizontaleAusrichtung>zentrisch</horizontaleAusrichtung><vertikaleAusrichtung>Basis"
        f'</vertikaleAusrichtung><dientZurDarstellungVon xlink:href="urn:adv:oid:{oid[:8]}FS{oid[-6:]}"/>'
        "</AP_PTO></gml:featureMember>\n"
    )


def _write_block(f: IO[str], tb: list[dict], tp: list[dict], dx: float, dy: float, block: int) -> None:
    gem, flur = 4000 + block // 1000, block % 1000
    for k, p in enumerate(tp):
        rec = {
            "oid": f"DENW36AL{block:06d}F{k:01X}",
            "flstkennz": f"05{gem:04d}{flur:03d}{p['zaehler']:05d}______",
            "geometry": shapely.transform(p["geometry"], lambda c: c + np.array([dx, dy])),
        }
        f.write(f"<gml:featureMember>{parcel_xml(rec)}</gml:featureMember>\n")
    for k, b in enumerate(tb):
        rec = dict(b, oid=f"DENW36AL{block:06d}G{k:01X}")
        rec["geometry"] = shapely.transform(b["geometry"], lambda c: c + np.array([dx, dy]))
        f.write(f"<gml:featureMember>{building_xml(rec)}</gml:featureMember>\n")
