"""Full ALKIS NAS XML (AAA model): `AX_Gebaeude` footprints and `AX_Flurstueck` parcels, from complete
deliveries and from NBA updates, streamed with bounded memory.

    buildings, parcels = read_nas_files(files, rejected, crs=None, want_parcels=True)

Inputs (the configured format decides, never the extension): NAS XML files (`.xml`, `.nas`, any name),
gzip-compressed NAS (detected by content) and `.zip` archives holding NAS XML members.

* **Documents.** `AX_Bestandsdatenauszug` (a full extract: `enthaelt/wfs:FeatureCollection/
  gml:featureMember|wfs:member/AX_*`), a bare `wfs:FeatureCollection`, and the update documents
  `AX_NutzerbezogeneBestandsdatenaktualisierung_NBA` (also spelled `..._NAS`) and `AX_Fortfuehrungsauftrag`,
  whose `geaenderteObjekte/wfs:Transaction` holds operations.
* **Operations**, applied in document order: `wfs:Insert` (new objects), `wfsext:Replace` / `wfs:Replace`
  (the object named by the `ogc:FeatureId fid` / `fes:ResourceId rid` of its filter is replaced by the new
  version; the new version keeps the old one's place), `wfs:Delete` (objects of `typeName(s)` named by the
  filter are removed) and `wfs:Update` setting `lebenszeitintervall/.../endet` (the object's life ended: it
  is removed from the current state; `anlass` may accompany it). Any other `wfs:Update` on a building or
  parcel is refused (InputError), never guessed. Ids in filters are the 16-character ALKIS oid, optionally
  followed by the version's timestamp (`DENW..AL0000pewY20120117T143330Z`); objects are matched by oid.
  A delete of an object that was never read is reported in `rejected.csv` (the update does not fit the
  data read before it).
* **Order of files** (`nas_file_order`): complete deliveries first, then update documents by their
  portion date (`portionskennung/.../datum`, before or after the operations), their running number
  (`laufendeNummerVonGesamtzahl`) and finally by path; members of a zip archive in name order at the
  archive's place. Ties and files without a portion date are in path order.
* **Bounded memory.** `lxml.etree.iterparse` only reports the end of AAA-namespace elements and of the
  WFS operation elements; every feature, container and operation is cleared once handled and the
  elements before it are deleted, so memory holds one record plus the result, whatever the file size.
* **Strict about broken XML.** A truncated or otherwise malformed document is an `InputError` naming the
  file (and zip member) and the line; nothing of a partly read cadastre is used. Records that cannot be
  read (bad geometry, unknown srsName) are reported (file, id, reason) and skipped, as before.

Record content: `gml:Arc`/`ArcString`/`Circle` are densified (chord tolerance `arc_tolerance_m`), holes and
multi-surfaces kept, `urn:adv:crs:*` and EPSG srsNames understood (see `gml.py`).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import geopandas as gpd
import numpy as np
import shapely
from lxml import etree

from pipeline.errors import InputError
from pipeline.sources.cadastre.common import (
    GEBAEUDEFUNKTION,
    WORKING_CRS,
    Rejected,
    normalise_columns,
)
from pipeline.sources.cadastre.gml import (
    GmlError,
    find_srs,
    local,
    polygons_of,
    ring_coords,
    srs_dimension,
    srs_to_crs,
)

if TYPE_CHECKING:
    from pyproj import Transformer

_TIMESTAMP = re.compile(r"\d{8}T\d{6}Z$")
_ADV_NS = re.compile(r"adv-online\.de/namespaces/adv/gid/[\d.]+/?$")
LAGE = {"1200": "unter der Erdoberfläche", "1400": "aufgeständert", "1700": "über der Erdoberfläche"}

BUILDING = "AX_Gebaeude"
PARCEL = "AX_Flurstueck"
# elements whose children are features to insert
_CONTAINERS = frozenset({"featureMember", "featureMembers", "member", "Insert"})
_OPERATIONS = frozenset({"Replace", "Delete", "Update"})
# parents of what is released once it ends (besides the objects in _CONTAINERS)
_HOLDERS = frozenset({"FeatureCollection", "Transaction", "enthaelt", "geaenderteObjekte"})
_UPDATE_DOCS = (
    "AX_NutzerbezogeneBestandsdatenaktualisierung",  # _NBA (GeoInfoDok), _NAS
    "AX_Fortfuehrungsauftrag",
)
_WFS_TAGS = [
    "{*}featureMember",
    "{*}featureMembers",
    "{*}member",
    "{*}Insert",
    "{*}Replace",
    "{*}Delete",
    "{*}Update",
    "{*}Transaction",
    "{*}FeatureCollection",
    f"{{*}}{BUILDING}",
    f"{{*}}{PARCEL}",
]
_BUILDING_FIELDS = frozenset(
    {
        "gebaeudefunktion",
        "lageZurErdoberflaeche",
        "anzahlDerOberirdischenGeschosse",
        "objekthoehe",
        "dachform",
        "baujahr",
    }
)
_BUILDING_COLUMNS = (
    "oid",
    "gfkzshh",
    "funktion",
    "anzahlgs",
    "gebnutzbez",
    "rellage",
    "objekthoehe",
    "dachform",
    "baujahr",
    "source_file",
)


# ------------------------------------------------------------------------------------ documents


@dataclass(frozen=True)
class NasDocument:
    """One NAS XML document: a file (plain or gzip) or one member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        """How the document is named in errors, `rejected.csv` and `source_file`."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes] | gzip.GzipFile]:
        """The document's bytes (a zip member or a gzip-compressed file decompressed on the fly)."""
        with contextlib.ExitStack() as stack:
            if self.member is not None:
                zf = stack.enter_context(zipfile.ZipFile(self.path))
                raw: IO[bytes] = stack.enter_context(zf.open(self.member))
            else:
                raw = stack.enter_context(open(self.path, "rb"))
            # peek: a ZipExtFile or a BufferedReader (typeshed types ZipFile.open as a plain IO[bytes])
            if raw.peek(2)[:2] == b"\x1f\x8b":  # type: ignore[attr-defined]
                yield stack.enter_context(gzip.GzipFile(fileobj=raw))
            else:
                yield raw


def nas_documents(path: Path | str) -> list[NasDocument]:
    """The NAS documents of one input file: the file itself, or the XML members of a zip archive."""
    p = Path(path)
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = sorted(
                    n
                    for n in zf.namelist()
                    if not n.endswith("/") and Path(n).suffix.lower() in (".xml", ".nas", ".gz")
                )
        except (zipfile.BadZipFile, OSError) as e:
            raise InputError(f"unreadable zip archive: {e}", path=p) from e
        if not names:
            raise InputError("zip archive holds no NAS XML member (.xml, .nas, .xml.gz)", path=p)
        return [NasDocument(p, n) for n in names]
    return [NasDocument(p)]


def _xml_error(doc: NasDocument, e: etree.XMLSyntaxError) -> InputError:
    line, col = e.position if e.position else (e.lineno or 0, 0)
    msg = re.sub(r",? line \d+, column \d+$", "", (e.msg or str(e)).strip())
    return InputError(
        f"broken NAS XML at line {line}, column {col}: {msg} (truncated or invalid file; "
        "nothing of the cadastre is used)",
        path=doc.label,
    )


def _iterparse(
    source: IO[bytes] | gzip.GzipFile,
    events: tuple[Literal["start-ns", "start", "end"], ...],
    tag: list[str] | None = None,
):
    return etree.iterparse(
        source,
        events=events,
        tag=tag,
        huge_tree=True,
        remove_comments=True,
        resolve_entities=False,
        no_network=True,
    )


@dataclass(frozen=True)
class NasHeader:
    """What decides the order of a document: its kind and, for updates, the portion's date and number."""

    root: str
    is_update: bool
    adv_namespace: str | None
    datum: str = ""
    number: int = 0


def read_header(doc: NasDocument, max_events: int = 20_000) -> NasHeader:
    """Root element, AAA namespace and portion identification, read from the start of the document only."""
    root = ""
    ns: str | None = None
    vals: dict[str, str] = {}
    try:
        with doc.open() as f:
            for n, (ev, el) in enumerate(_iterparse(f, ("start-ns", "start", "end"))):
                if ev == "start-ns":
                    uri = el[1]
                    if ns is None and _ADV_NS.search(uri) and "wfsext" not in uri:
                        ns = uri
                    continue
                name = local(el)
                if ev == "start":
                    if not root:
                        root = name
                        if ns is None and isinstance(el.tag, str) and el.tag.startswith("{"):
                            uri = el.tag[1:].split("}", 1)[0]
                            ns = uri if _ADV_NS.search(uri) else None
                    elif name in ("geaenderteObjekte", "enthaelt", "Transaction", "FeatureCollection"):
                        break
                elif name in ("datum", "laufendeNummerVonGesamtzahl") and el.text:
                    vals.setdefault(name, el.text.strip())
                if n >= max_events:
                    break
    except etree.XMLSyntaxError as e:
        raise _xml_error(doc, e) from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read NAS file: {e}", path=doc.label) from e
    if not root:
        raise InputError("empty NAS file (no root element)", path=doc.label)
    if root.startswith(_UPDATE_DOCS) and "datum" not in vals:  # portion header after the operations?
        vals.update(_portion_from_tail(doc))
    number = vals.get("laufendeNummerVonGesamtzahl", "")
    return NasHeader(
        root=root,
        is_update=root.startswith(_UPDATE_DOCS),
        adv_namespace=ns,
        datum=vals.get("datum", ""),
        number=int(number) if number.isdigit() else 0,
    )


_PORTION = re.compile(rb"<(?:[\w.-]+:)?portionskennung\b.*?</(?:[\w.-]+:)?portionskennung>", re.S)
_PORTION_FIELD = re.compile(rb"<(?:[\w.-]+:)?(datum|laufendeNummerVonGesamtzahl)>\s*([^<]*?)\s*<")


def _portion_from_tail(doc: NasDocument, size: int = 1 << 16) -> dict[str, str]:
    """`datum` and `laufendeNummerVonGesamtzahl` of a portion header that follows the operations, from
    the last `size` bytes of the document (compressed documents are streamed through)."""
    tail = b""
    try:
        with doc.open() as f:
            if doc.member is None and not isinstance(f, gzip.GzipFile):
                f.seek(0, 2)
                f.seek(max(0, f.tell() - size))
                tail = f.read()
            else:
                while chunk := f.read(1 << 20):
                    tail = (tail + chunk)[-size:]
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read NAS file: {e}", path=doc.label) from e
    m = _PORTION.search(tail)
    if not m:
        return {}
    return {k.decode(): v.decode("utf-8", "replace") for k, v in _PORTION_FIELD.findall(m.group(0))}


def nas_file_order(files: Sequence[Path | str]) -> list[tuple[NasDocument, NasHeader]]:
    """The documents of all files in the order they are applied (see the module docstring)."""
    docs: list[tuple[NasDocument, NasHeader]] = []
    for f in sorted(Path(p) for p in files):
        docs += [(d, read_header(d)) for d in nas_documents(f)]
    # complete deliveries first (path order), then updates by portion date, running number, path
    return sorted(
        docs,
        key=lambda dh: (
            dh[1].is_update,
            dh[1].datum if dh[1].is_update else "",
            dh[1].number if dh[1].is_update else 0,
        ),
    )


def verify_nas(path: Path | str) -> None:
    """Check that every document of one NAS input is complete, well-formed XML (the input check of
    `twin build`); raises InputError naming the document and the line of the first problem.

    Parsed by expat without callbacks: C speed, constant memory, nothing kept (the reader itself, on
    libxml2, is stricter still and refuses what it cannot read)."""
    from xml.parsers import expat

    for doc in nas_documents(path):
        parser = expat.ParserCreate(namespace_separator=" ")
        try:
            with doc.open() as f:
                parser.ParseFile(f)
        except expat.ExpatError as e:
            raise InputError(
                f"broken NAS XML at line {e.lineno}, column {e.offset}: {expat.errors.messages[e.code]} "
                "(truncated or invalid file; nothing of the cadastre is used)",
                path=doc.label,
            ) from e
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"cannot read NAS file: {e}", path=doc.label) from e


# ------------------------------------------------------------------------------------ records

_LOCAL: dict[object, str] = {}


def _lname(el: etree._Element) -> str:
    """Local name of an element (cached per tag: called for every parsed element)."""
    tag = el.tag
    name = _LOCAL.get(tag)
    if name is None:
        name = _LOCAL[tag] = local(el)
    return name


def _release(el: etree._Element) -> None:
    """Free a handled element and everything before it under the same parent."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


def _strip_oid(fid: str) -> str:
    t = fid.strip()
    if t.startswith("urn:adv:oid:"):
        t = t.rsplit(":", 1)[-1]
    if len(t) > 16 and _TIMESTAMP.search(t):
        t = t[:16]
    return t


def _oid(el: etree._Element) -> str | None:
    for c in el:
        if _lname(c) == "identifier" and c.text:
            t = c.text.strip()
            return t.rsplit(":", 1)[-1] if t.startswith("urn:adv:oid:") else t
    gid = next((v for k, v in el.attrib.items() if k.endswith("}id") or k == "id"), None)
    if gid and len(gid) > 16 and _TIMESTAMP.search(gid):
        gid = gid[:16]
    return gid


def _text(el: etree._Element, name: str) -> str | None:
    for c in el:
        if _lname(c) == name and c.text and c.text.strip():
            return c.text.strip()
    return None


def _texts(el: etree._Element, names: frozenset[str]) -> dict[str, str]:
    """{name: text} of the first child with a non-empty text, for each of `names` (one pass)."""
    out: dict[str, str] = {}
    for c in el:
        n = _lname(c)
        if n in names and n not in out and c.text:
            t = c.text.strip()
            if t:
                out[n] = t
    return out


# ---- geometry: the common NAS ring (curve members of straight segments, posList) in one numpy parse;
# anything else (arcs, pos, coordinates, orientable curves) goes through gml.py. Same result either way.

_STRAIGHT = frozenset(
    {"Ring", "LinearRing", "curveMember", "Curve", "segments", "LineStringSegment", "LineString", "posList"}
)


def _ring(el: etree._Element, tol: float) -> np.ndarray:
    pls = []
    inner_dim = False
    for e in el.iter():
        n = _lname(e)
        if n not in _STRAIGHT:
            return ring_coords(el, tol)
        if n == "posList":
            pls.append(e)
        if e.get("srsDimension") is not None:
            inner_dim = True
    if not pls:
        return ring_coords(el, tol)
    dim = srs_dimension(el)
    splits = []
    for pl in pls:
        if pl.text is None or (inner_dim and srs_dimension(pl) != dim):
            return ring_coords(el, tol)
        vals = pl.text.split()
        if len(vals) % dim:
            raise GmlError(f"posList has {len(vals)} values, not a multiple of srsDimension {dim}")
        splits.append(vals)
    try:
        flat = np.array([v for vals in splits for v in vals], dtype=np.float64)
    except ValueError as e:
        raise GmlError(f"bad posList: {e}") from e
    pts = flat.reshape(-1, dim)[:, :2]
    counts = np.array([len(v) // dim for v in splits])
    starts = np.cumsum(counts)[:-1]
    starts = starts[(counts[1:] > 0) & (starts > 0)]
    if starts.size:  # a segment starting where the previous one ended: drop the repeated point
        dup = (np.abs(pts[starts] - pts[starts - 1]) <= 1e-9).all(axis=1)
        if dup.any():
            keep = np.ones(len(pts), dtype=bool)
            keep[starts[dup]] = False
            pts = pts[keep]
    if not len(pts):
        raise GmlError("empty ring")
    pts = np.ascontiguousarray(pts)
    if not (np.abs(pts[0] - pts[-1]) <= 1e-6).all():
        raise GmlError(f"ring is not closed ({pts[0].tolist()} != {pts[-1].tolist()})")
    pts[-1] = pts[0]
    if len(pts) < 4:
        raise GmlError(f"ring has only {len(pts)} points")
    return pts


class _Geometry:
    """Feature geometry -> shapely in the working CRS (one transformer per source CRS)."""

    def __init__(self, tol: float, crs_override: str | None, target: str | None) -> None:
        self.tol = tol
        self.crs_override = crs_override
        self.target = target  # None: the CRS of the first geometry read (the files' own)
        self._transformers: dict[str, Transformer] = {}

    def __call__(self, el: etree._Element):
        pos = next((c for c in el if _lname(c) == "position"), None)
        if pos is None:
            raise GmlError("no position (geometry)")
        polys = polygons_of(pos, self.tol, ring=_ring)
        if not polys:
            raise GmlError("position holds no surface")
        geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
        crs = self.crs_override or srs_to_crs(find_srs(pos))
        if crs is None:
            raise GmlError(f"unknown or missing srsName {find_srs(pos)!r}; set sources.cadastre.crs")
        if self.target is None:
            self.target = crs
        if crs != self.target:
            t = self._transformers.get(crs)
            if t is None:
                from pyproj import Transformer

                t = self._transformers[crs] = Transformer.from_crs(crs, self.target, always_xy=True)
            geom = shapely.transform(
                geom,
                lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])),
            )
            if not np.isfinite(shapely.get_coordinates(geom)).all():
                raise GmlError(
                    f"coordinates in {crs} cannot be transformed into the working CRS {self.target}"
                )
        return geom


class _Store:
    """The current state of one feature type: records in insertion order, replace in place, delete."""

    def __init__(self) -> None:
        self.records: list[tuple | None] = []
        self.index: dict[str, int] = {}

    def insert(self, oid: str | None, rec: tuple) -> None:
        if oid:
            self.index[oid] = len(self.records)
        self.records.append(rec)

    def remove(self, oid: str) -> int | None:
        i = self.index.pop(oid, None)
        if i is not None:
            self.records[i] = None
        return i

    def replace(self, oid: str, new_oid: str | None, rec: tuple | None) -> None:
        """Replace the object `oid` by a new version (None: the new version could not be read)."""
        i = self.remove(oid)
        if rec is None:
            return
        if i is None:
            self.insert(new_oid, rec)
        else:
            self.records[i] = rec
            if new_oid:
                self.index[new_oid] = i

    def alive(self) -> list[tuple]:
        return [r for r in self.records if r is not None]


class _Reader:
    def __init__(
        self,
        rejected: list[Rejected],
        crs: str | None,
        arc_tolerance_m: float,
        want_parcels: bool,
        target_crs: str | None = None,
        want_buildings: bool = True,
    ) -> None:
        self.rejected = rejected
        self.geometry = _Geometry(arc_tolerance_m, crs, target_crs)
        self.kinds = ((BUILDING,) if want_buildings else ()) + ((PARCEL,) if want_parcels else ())
        self.stores = {k: _Store() for k in self.kinds}
        self._intern: dict[str, str] = {}

    def _s(self, v: str | None) -> str | None:
        """Repeated attribute values share one string object (memory)."""
        if v is None:
            return None
        return self._intern.setdefault(v, v)

    def record(self, el: etree._Element, kind: str, src: str) -> tuple[str | None, tuple | None]:
        """(oid, record) of one feature; record None (and the reason reported) when it cannot be read."""
        oid = _oid(el)
        try:
            geom = self.geometry(el)
            if kind == BUILDING:
                t = _texts(el, _BUILDING_FIELDS)
                code = t.get("gebaeudefunktion")
                lage = t.get("lageZurErdoberflaeche")
                funktion = (
                    GEBAEUDEFUNKTION.get(int(code), f"Gebäudefunktion {code}")
                    if code and code.isdigit()
                    else None
                )
                return oid, (
                    oid,
                    self._s(f"31001_{code}") if code else None,
                    self._s(funktion),
                    self._s(t.get("anzahlDerOberirdischenGeschosse")),
                    "Gebäude",
                    self._s(LAGE.get(lage or "", lage)),
                    self._s(t.get("objekthoehe")),
                    self._s(t.get("dachform")),
                    self._s(t.get("baujahr")),
                    src,
                    geom,
                )
            key = _text(el, "flurstueckskennzeichen")
            if key is None:
                raise GmlError("AX_Flurstueck without flurstueckskennzeichen")
            return oid, (key, geom)
        except (GmlError, ValueError, shapely.errors.GEOSException) as e:
            self.rejected.append(Rejected(src, oid or "-", f"{kind}: {e}"))
            return oid, None

    # ---------------------------------------------------------------- operations

    def insert(self, el: etree._Element, kind: str, src: str) -> None:
        oid, rec = self.record(el, kind, src)
        if rec is not None:
            self.stores[kind].insert(oid, rec)

    def replace(self, op: etree._Element, src: str) -> None:
        feature = next((c for c in op if local(c) and local(c) != "Filter"), None)
        fids = _filter_ids(op)
        if feature is None or not fids:
            raise InputError(
                f"{local(op)} at line {op.sourceline} without a new object or without a filter id",
                path=src,
            )
        kind = local(feature)
        if kind not in self.stores:
            return
        new_oid, rec = self.record(feature, kind, src)
        for fid in fids:
            self.stores[kind].replace(_strip_oid(fid), new_oid, rec)

    def delete(self, op: etree._Element, src: str, *, ended: bool = False) -> None:
        kinds = _type_names(op)
        if not kinds:
            raise InputError(f"wfs:{local(op)} at line {op.sourceline} without typeName", path=src)
        targets = [k for k in kinds if k in self.stores]
        if not targets:
            return
        if local(op) == "Update":
            names = _update_properties(op)
            if not any(n.endswith("endet") for n in names) or any(
                not (n.endswith("endet") or n.endswith("anlass")) for n in names
            ):
                raise InputError(
                    f"wfs:Update of {', '.join(targets)} at line {op.sourceline} sets {names}; only the "
                    "end of an object's life (lebenszeitintervall/endet, with anlass) is understood",
                    path=src,
                )
        for fid in _filter_ids(op):
            oid = _strip_oid(fid)
            if not any(self.stores[k].remove(oid) is not None for k in targets):
                what = "wfs:Update (endet)" if ended else "wfs:Delete"
                self.rejected.append(
                    Rejected(
                        src,
                        oid,
                        f"{what} of {'/'.join(targets)} that was not read before "
                        "(update files out of order, or an update for another extract?)",
                    )
                )

    # ---------------------------------------------------------------- one document

    def read(self, doc: NasDocument, hdr: NasHeader) -> None:
        src = doc.label
        tags = _tags(hdr)
        try:
            loc = _LOCAL
            with doc.open() as f:
                for _ev, el in _iterparse(f, ("end",), tags):
                    parent = el.getparent()
                    if parent is None:
                        continue
                    pname = loc.get(parent.tag) or _lname(parent)
                    if pname in _CONTAINERS:  # a feature (or a container inside one)
                        name = loc.get(el.tag) or _lname(el)
                        if name in self.stores:
                            self.insert(el, name, src)
                        _release(el)
                    elif pname in _HOLDERS:  # containers, operations, collections: done with them
                        name = loc.get(el.tag) or _lname(el)
                        if pname == "Transaction" and name in _OPERATIONS:
                            if name == "Replace":
                                self.replace(el, src)
                            else:
                                self.delete(el, src, ended=name == "Update")
                        _release(el)
                    # else: a property of an object (most events), read with its object
        except etree.XMLSyntaxError as e:
            raise _xml_error(doc, e) from e
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"cannot read NAS file: {e}", path=src) from e

    # ---------------------------------------------------------------- result

    @property
    def target(self) -> str:
        """The CRS of the geometries: the working CRS given, else the files' own (EPSG:25832 labels a
        result without any geometry)."""
        return self.geometry.target or WORKING_CRS

    def buildings(self) -> gpd.GeoDataFrame:
        recs = self.stores[BUILDING].alive() if BUILDING in self.stores else []
        cols = {c: [r[i] for r in recs] for i, c in enumerate(_BUILDING_COLUMNS)}
        geoms = [r[-1] for r in recs]
        gdf = gpd.GeoDataFrame(
            cols if recs else [], geometry=gpd.GeoSeries(geoms, crs=self.target), crs=self.target
        )
        return normalise_columns(gdf)

    def parcels(self) -> gpd.GeoDataFrame:
        recs = self.stores[PARCEL].alive() if PARCEL in self.stores else []
        return gpd.GeoDataFrame(
            {"flstkennz": np.array([r[0] for r in recs], dtype=object)},
            geometry=gpd.GeoSeries([r[1] for r in recs], crs=self.target),
            crs=self.target,
        )


def _tags(hdr: NasHeader) -> list[str]:
    """End events wanted: every AAA-namespace element (features and their properties; the GML geometry
    inside them is not reported) and the WFS containers and operations."""
    own = [f"{{{hdr.adv_namespace}}}*"] if hdr.adv_namespace else ["{}*"]
    return own + _WFS_TAGS


def _filter_ids(op: etree._Element) -> list[str]:
    out = []
    for f in op:
        if local(f) == "Filter":
            for c in f.iter("{*}FeatureId", "{*}ResourceId", "{*}GmlObjectId"):
                v = (
                    c.get("fid")
                    or c.get("rid")
                    or next((val for k, val in c.attrib.items() if k.endswith("}id")), None)
                )
                if v:
                    out.append(v)
    return out


def _type_names(op: etree._Element) -> list[str]:
    t = op.get("typeNames") or op.get("typeName") or ""
    return [n.rsplit(":", 1)[-1] for n in t.split()]


def _update_properties(op: etree._Element) -> list[str]:
    names = []
    for prop in op:
        if local(prop) == "Property":
            for c in prop:
                if local(c) in ("Name", "ValueReference") and c.text:
                    names.append(c.text.strip())
    return names


def read_nas_files(
    files: Sequence[Path | str],
    rejected: list[Rejected],
    *,
    crs: str | None = None,
    arc_tolerance_m: float = 0.02,
    want_parcels: bool = True,
    target_crs: str | None = None,
    want_buildings: bool = True,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(buildings, parcels) of all NAS files with their updates applied in order; buildings in the
    normalised columns (unfiltered: `repair_and_filter` follows), parcels with flstkennz; geometries in
    `target_crs` (the working CRS; default: the files' own, that of the first geometry), transformed from
    each geometry's srsName (AdV `urn:adv:crs:` names and EPSG codes; `crs` overrides them). A kind not wanted is skipped
    unread (its frame is empty). Raises InputError for broken XML or operations that cannot be applied."""
    reader = _Reader(rejected, crs, arc_tolerance_m, want_parcels, target_crs, want_buildings)
    for doc, hdr in nas_file_order(files):
        reader.read(doc, hdr)
    return reader.buildings(), reader.parcels()


def read_nas(
    path: Path,
    rejected: list[Rejected],
    *,
    crs: str | None = None,
    arc_tolerance_m: float = 0.02,
    want_parcels: bool = True,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(buildings, parcels) of one NAS file (or zip of NAS files)."""
    return read_nas_files(
        [path], rejected, crs=crs, arc_tolerance_m=arc_tolerance_m, want_parcels=want_parcels
    )


__all__ = [
    "NasDocument",
    "NasHeader",
    "nas_documents",
    "nas_file_order",
    "read_header",
    "read_nas",
    "read_nas_files",
    "verify_nas",
]
