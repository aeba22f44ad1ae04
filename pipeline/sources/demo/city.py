"""Layout of the demo district: streets, blocks, parcels, buildings, trees, cars and their two epochs.

Everything is decided here, once, from one random stream; the tile writers (points, rasters, mobile) only
sample this description. The layout depends on the seed and the district extent, never on the tile size.

The street grid is laid out in a local frame rotated by a small angle about the district centre (real
streets are not grid-north aligned), so blocks at the district edge are clipped into irregular parcels.
Block types: row houses (adjoining, gable roofs), detached houses (rectangles: gable, half-hip, mansard,
hip, pyramid, flat or shed; L-shapes: hip, cross gable or flat; garages, garden sheds), apartment rows
(adjoining, flat, gable or mansard), courtyard blocks (one polygon with a
hole), commercial lots (large flat halls, some multi-part, offices, parking), a school (U-shaped building
and gym) and parks (trees, a pond).

Epoch changes (epoch 1 -> epoch 2), with guaranteed minimum counts so the tiny test district has each:
about 5 % demolished (still in the cadastre), 5 % raised by >= 3 m, 2 % lowered by >= 2.5 m and 5 % new
(about 40 % of them unregistered: no cadastral footprint). The cadastre is the state of epoch 2 (plus the
demolished buildings it has not caught up with, minus the unregistered structures).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import shapely
from shapely import MultiPolygon, Polygon, box
from shapely.affinity import affine_transform
from shapely.geometry.base import BaseGeometry

from pipeline.sources.demo.roofs import (
    CROSS_GABLE,
    FLAT,
    GABLE,
    HALF_HIP,
    HIP,
    MANSARD,
    PYRAMID,
    SHED,
    Roof,
    boundary_edges,
    hip_ridge,
)
from pipeline.sources.demo.terrain import Terrain

# Land cover classes (rasters and point intensities)
LC_GRASS, LC_ASPHALT, LC_SIDEWALK, LC_PAVED, LC_WATER, LC_BARE, LC_SPORTS = 0, 1, 2, 3, 4, 5, 6

# Change classes
UNCHANGED, NEW, DEMOLISHED, RAISED, LOWERED = "unchanged", "new", "demolished", "raised", "lowered"

# ALKIS building functions (AX_Gebaeudefunktion codes; gfkzshh = "31001_<code>")
FUNKTION = {
    "Wohngebäude": 1000,
    "Garage": 2463,
    "Gartenhaus": 1313,
    "Schuppen": 2723,
    "Gebäude für Handel und Dienstleistungen": 2010,
    "Bürogebäude": 2020,
    "Gebäude für Gewerbe und Industrie": 2100,
    "Lagerhalle, Lagerschuppen, Lagerhaus": 2143,
    "Allgemein bildende Schule": 3021,
    "Sport-, Turnhalle": 3211,
    "Tiefgarage": 2465,
}
# AX_Bauteil bauart codes used for `Bauteil` records (gfkzshh = "31002_<code>")
BAUTEIL = {
    "Auskragende/zurückspringende Geschosse": 2610,
    "Geringergeschossiger Gebäudeteil": 1100,
}
UNDERGROUND = "unter der Erdoberfläche"

STREET_NAMES = (
    "Bahnhofstraße",
    "Florastraße",
    "Ebertstraße",
    "Husemannstraße",
    "Kirchstraße",
    "Hauptstraße",
    "Bochumer Straße",
    "Schalker Straße",
    "Overwegstraße",
    "Munckelstraße",
    "Augustastraße",
    "Wildenbruchstraße",
    "Hohenzollernstraße",
    "Von-der-Recke-Straße",
    "Vattmannstraße",
    "Grillostraße",
    "Klosterstraße",
    "Arminstraße",
    "Markenstraße",
    "Ückendorfer Straße",
    "Wanner Straße",
    "Kurt-Schumacher-Straße",
    "Hiberniastraße",
    "Robert-Koch-Straße",
    "Zeppelinallee",
    "Emscherstraße",
    "Bulmker Straße",
    "Virchowstraße",
    "Dessauerstraße",
    "Feldmarkstraße",
    "Rotthauser Straße",
    "Achternbergstraße",
    "Wiehagen",
    "Paulstraße",
    "Marienstraße",
    "Liboriusstraße",
    "Hansemannstraße",
    "Uferstraße",
)
NAME_STEMS = (
    "Amsel",
    "Birken",
    "Buchen",
    "Drossel",
    "Eichen",
    "Erlen",
    "Fichten",
    "Finken",
    "Flieder",
    "Hasel",
    "Holunder",
    "Kastanien",
    "Kiefern",
    "Lerchen",
    "Linden",
    "Meisen",
    "Pappel",
    "Rosen",
    "Schwalben",
    "Tannen",
    "Ulmen",
    "Wacholder",
    "Weiden",
    "Zechen",
    "Stollen",
    "Schacht",
    "Kohlen",
    "Hütten",
    "Gruben",
    "Förder",
)
NAME_SUFFIXES = ("straße", "weg", "allee", "ring", "stieg", "pfad")
GEMARKUNGEN = (
    (3144, "Gelsenkirchen"),
    (3145, "Schalke"),
    (3146, "Bulmke"),
    (3147, "Ückendorf"),
    (3148, "Heßler"),
    (3149, "Rotthausen"),
    (3150, "Hüllen"),
    (3151, "Bismarck"),
    (3152, "Erle"),
    (3153, "Resse"),
    (3154, "Beckhausen"),
    (3155, "Horst"),
    (3156, "Scholven"),
    (3157, "Hassel"),
    (3158, "Buer"),
    (3159, "Feldmark"),
)  # fictional numbers (the first matches the documented example key)

PITCHED_MATERIALS = ("tile_red", "tile_red", "tile_brown", "tile_dark")
FLAT_MATERIALS = ("bitumen", "bitumen", "gravel", "gravel", "green")

BLOCK_TYPES = ("row", "detached", "apartment", "commercial", "courtyard", "school", "park")
BLOCK_WEIGHTS = (0.22, 0.26, 0.18, 0.12, 0.08, 0.04, 0.10)
# guaranteed near the district centre (the tiny district gets each of them)
GUARANTEED_TYPES = ("courtyard", "commercial", "detached", "row", "apartment")


@dataclass
class Structure:
    """One physical building (or the cadastral record of one that does not exist yet/any more)."""

    sid: int
    oid: str
    geom: Polygon | MultiPolygon  # true footprint, world coordinates
    base: float  # absolute base height (lowest terrain at the footprint corners), DHHN2016
    roof: Roof  # epoch-1 roof (or epoch-2 roof for new structures), heights relative to base
    category: str
    material: str
    funktion: str
    in_cadastre: bool = True
    present: tuple[bool, bool] = (True, True)
    change: str = UNCHANGED
    dh: float = 0.0  # roof change epoch 1 -> 2 (raised/lowered)
    anzahlgs: int | None = None
    lagebeztxt: str = ""
    aktualit: str = ""
    cadastre_geom: Polygon | MultiPolygon | None = None  # differs from geom for invalid records
    invalid_reason: str | None = None
    group: int = -1
    has_parts: bool = False  # host of Bauteil/underground records
    edges: np.ndarray | None = None  # boundary segments (hip roofs)

    @property
    def gfkzshh(self) -> str:
        return f"31001_{FUNKTION[self.funktion]}"

    def roof_in(self, epoch_index: int) -> Roof:
        """The roof in epoch 0 or 1 (relative to base)."""
        if epoch_index == 1 and self.dh:
            return self.roof.raised(self.dh)
        return self.roof


@dataclass
class PartRecord:
    """A cadastral record without its own physical structure: a `Bauteil` or an underground building."""

    oid: str
    geom: Polygon
    kind: str  # "bauteil" | "underground"
    funktion: str
    gfkzshh: str
    host_oid: str | None
    lagebeztxt: str
    aktualit: str
    present: tuple[bool, bool] = (True, True)


@dataclass
class Parcel:
    geom: Polygon | MultiPolygon
    flstkennz: str
    gemarkung: str
    flur: int
    flaeche: float
    lagebeztxt: str
    aktualit: str
    is_street: bool = False


@dataclass
class Street:
    sid: int
    name: str
    axis: str  # "h" | "v" in the local frame
    line: tuple[tuple[float, float], tuple[float, float]]  # centreline in world coordinates (clipped)
    width: float
    carriageway: float


@dataclass
class Trees:
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray  # crown radius
    top: np.ndarray  # crown top above the ground at the trunk
    crown_base: np.ndarray  # crown bottom above the ground


@dataclass
class Cars:
    x: np.ndarray
    y: np.ndarray
    ux: np.ndarray  # unit direction of the car's long axis
    uy: np.ndarray
    length: np.ndarray
    width: np.ndarray
    height: np.ndarray
    colour: np.ndarray  # (n, 3) uint8


@dataclass
class City:
    bounds: tuple[float, float, float, float]
    terrain: Terrain
    angle: float  # rotation of the street grid, radians
    epochs: tuple[str, str]
    structures: list[Structure]
    parts: list[PartRecord]
    parcels: list[Parcel]
    streets: list[Street]
    trees: Trees
    cars: tuple[Cars, Cars]
    ponds: list[tuple[Polygon, float]]  # (water polygon, water level)
    landcover: list[tuple[Polygon | MultiPolygon, int, tuple[bool, bool]]]  # priority order
    bbox: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # structure bounds (n, 4)
    _lc_tree: shapely.STRtree | None = field(default=None, repr=False)

    def landcover_in(
        self, bounds: tuple[float, float, float, float], epoch: int
    ) -> list[tuple[Polygon | MultiPolygon, int]]:
        """Land cover polygons touching `bounds` in the given epoch, in priority order (last wins)."""
        if self._lc_tree is None:
            self._lc_tree = shapely.STRtree([g for g, _, _ in self.landcover])
        idx = np.sort(self._lc_tree.query(box(*bounds), predicate="intersects"))
        return [(self.landcover[i][0], self.landcover[i][1]) for i in idx if self.landcover[i][2][epoch]]

    def structures_in(self, bounds: tuple[float, float, float, float], margin: float = 0.0) -> list[int]:
        x0, y0, x1, y1 = bounds
        b = self.bbox
        sel = (
            (b[:, 0] < x1 + margin)
            & (b[:, 2] > x0 - margin)
            & (b[:, 1] < y1 + margin)
            & (b[:, 3] > y0 - margin)
        )
        return [int(i) for i in np.flatnonzero(sel)]


# ---------------------------------------------------------------------------------------------------
# builder (local frame)
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    """A strip of lots facing a street: world = O + u * eu + v * ev (u along the street, v inwards)."""

    ox: float
    oy: float
    eu: tuple[float, float]
    ev: tuple[float, float]
    length: float
    depth: float
    street: int | None
    even: bool  # house numbers on this side are even

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return (self.ox + u * self.eu[0] + v * self.ev[0], self.oy + u * self.eu[1] + v * self.ev[1])

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> Polygon:
        return Polygon([self.pt(u0, v0), self.pt(u1, v0), self.pt(u1, v1), self.pt(u0, v1)])

    def poly(self, uv: list[tuple[float, float]]) -> Polygon:
        return Polygon([self.pt(u, v) for u, v in uv])


@dataclass
class _Proto:
    geom: Polygon | MultiPolygon  # local frame
    roof: Roof  # gable axis in the local frame
    category: str
    material: str
    funktion: str
    lot: int
    present: tuple[bool, bool] = (True, True)
    in_cadastre: bool = True
    group: int = -1
    floors_known: bool = False
    parts: list[tuple[Polygon, str, str]] = field(default_factory=list)  # (geom, kind, funktion)


@dataclass
class _Lot:
    geom: Polygon  # local frame
    street: int | None
    even: bool
    coord: float  # position along the street for numbering
    address: str = ""
    kind: str = "lot"


class _Builder:
    def __init__(
        self,
        rng: np.random.Generator,
        bounds: tuple[float, float, float, float],
        roof_rng: np.random.Generator | None = None,
    ):
        self.rng = rng
        # the catalogue roof variants draw from a stream of their own: the layout stays as it was
        self.roof_rng = roof_rng if roof_rng is not None else np.random.default_rng(0)
        self.bounds = bounds
        x0, y0, x1, y1 = bounds
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.size = max(x1 - x0, y1 - y0)
        self.angle = float(np.deg2rad(rng.uniform(-14.0, 14.0)))
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        # local -> world
        self.to_world = [ca, -sa, sa, ca, self.cx, self.cy]
        # the district in the local frame
        self.district_local = affine_transform(
            box(*bounds), [ca, sa, -sa, ca, -(ca * self.cx + sa * self.cy), -(-sa * self.cx + ca * self.cy)]
        )
        self.half = self.size / 2 * (abs(ca) + abs(sa)) + 5.0
        self.protos: list[_Proto] = []
        self.lots: list[_Lot] = []
        self.streets_local: list[tuple[str, float, float, str]] = []  # (axis, centre, width, name)
        self.street_rects: list[tuple[Polygon, Polygon, int]] = []  # (full, carriageway, street index)
        self.tree_pts: list[tuple[float, float, float, float, float]] = []  # x, y, r, top, base (local)
        self.parking: list[tuple[float, float, float, float]] = []  # x, y, ux, uy (local car slots)
        self.landcover: list[tuple[Polygon, int, tuple[bool, bool]]] = []
        self.ponds: list[Polygon] = []
        self.spots: list[tuple[Polygon, str, int]] = []  # free places for epoch-2 structures
        self.empty_lots: list[_Proto] = []
        self.group_counter = 0
        self._names = self._street_name_pool()

    # -- helpers ----------------------------------------------------------------------------------
    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def _street_name_pool(self) -> list[str]:
        names = list(STREET_NAMES)
        extra = [s + x for x in NAME_SUFFIXES for s in NAME_STEMS]
        order = self.rng.permutation(len(names))
        extra_order = self.rng.permutation(len(extra))
        return [names[i] for i in order] + [extra[i] for i in extra_order]

    def _name(self, i: int) -> str:
        return self._names[i] if i < len(self._names) else f"Straße {i + 1}"

    def add_lot(self, geom: Polygon, frame: _Frame | None, u_mid: float, kind: str = "lot") -> int:
        if frame is None or frame.street is None:
            self.lots.append(_Lot(geom, None, False, 0.0, kind=kind))
        else:
            x, y = frame.pt(u_mid, 0.0)
            axis = self.streets_local[frame.street][0]
            self.lots.append(_Lot(geom, frame.street, frame.even, x if axis == "h" else y, kind=kind))
        return len(self.lots) - 1

    def add(self, proto: _Proto) -> _Proto:
        self.protos.append(proto)
        return proto

    def tree(self, x: float, y: float, r: float | None = None, top: float | None = None) -> None:
        r = self.u(2.0, 4.5) if r is None else r
        top = self.u(7.0, 17.0) if top is None else top
        base = self.u(1.8, min(4.0, top * 0.4))
        self.tree_pts.append((x, y, r, top, base))

    def gable(
        self, f: _Frame, u0: float, v0: float, u1: float, v1: float, eave: float, pitch: float, along_u: bool
    ) -> Roof:
        cx, cy = f.pt((u0 + u1) / 2, (v0 + v1) / 2)
        nx, ny = f.ev if along_u else f.eu
        hw = (v1 - v0) / 2 if along_u else (u1 - u0) / 2
        return Roof(GABLE, eave, eave + math.tan(pitch) * hw, cx, cy, nx, ny, hw)

    def ru(self, a: float, b: float) -> float:
        return float(self.roof_rng.uniform(a, b))

    def catalogue_variant(
        self,
        f: _Frame,
        u0: float,
        v0: float,
        u1: float,
        v1: float,
        roof: Roof,
        along_u: bool,
        weights: dict[str, float],
    ) -> Roof:
        """A rectangle's roof (flat, gable or hip from the layout) turned, with the probabilities in
        `weights` (drawn from `roof_rng`), into another catalogue shape on the same rectangle: shed (from
        flat), half_hip or mansard (from gable), pyramid (from hip)."""
        r = self.roof_rng.random()
        kind, acc = "", 0.0
        for k, w in weights.items():
            acc += w
            if r < acc:
                kind = k
                break
        if not kind:
            return roof
        cx, cy = f.pt((u0 + u1) / 2, (v0 + v1) / 2)
        nx, ny = f.ev if along_u else f.eu
        hw = (v1 - v0) / 2 if along_u else (u1 - u0) / 2
        hl = (u1 - u0) / 2 if along_u else (v1 - v0) / 2
        eave = roof.eave
        if kind == SHED:  # mono-pitch, 6-14 degrees, high side to either side
            sgn = 1.0 if self.roof_rng.random() < 0.5 else -1.0
            rise = math.tan(math.radians(self.ru(6.0, 14.0))) * 2 * hw
            return Roof(SHED, eave, eave + rise, cx, cy, sgn * nx, sgn * ny, hw, hl=hl)
        if kind == PYRAMID:
            return Roof(PYRAMID, eave, eave + roof.slope * hw, cx, cy, nx, ny, hw, hl=hl)
        if kind == HALF_HIP:
            hip = min(self.ru(1.3, 2.3), 0.4 * hl)
            zb = eave + (roof.ridge - eave) * self.ru(0.4, 0.65)
            return Roof(HALF_HIP, eave, roof.ridge, cx, cy, nx, ny, hw, hl=hl, d=hl - hip, zb=zb)
        if kind == MANSARD:  # steep lower (60-72 degrees), shallow upper planes (15-30 degrees)
            d = hw * self.ru(0.45, 0.6)
            zb = eave + math.tan(math.radians(self.ru(60.0, 72.0))) * (hw - d)
            ridge = zb + math.tan(math.radians(self.ru(15.0, 30.0))) * d
            return Roof(MANSARD, eave, ridge, cx, cy, nx, ny, hw, hl=hl, d=d, zb=zb)
        raise ValueError(kind)

    def cross_gable(
        self,
        f: _Frame,
        main: tuple[float, float, float, float],
        wing: tuple[float, float, float, float],
        eave: float,
        pitch: float,
    ) -> Roof:
        """Two gable wings (rectangles u0, v0, u1, v1): the main one with its ridge along u, the side
        wing (reaching through the main one) along v."""
        wings = []
        for (u0, v0, u1, v1), along_u in ((main, True), (wing, False)):
            g = self.gable(f, u0, v0, u1, v1, eave, pitch, along_u)
            hl = (u1 - u0) / 2 if along_u else (v1 - v0) / 2
            wings.append(replace(g, hl=hl))
        return Roof(CROSS_GABLE, eave, max(w.ridge for w in wings), wings=tuple(wings))

    # -- streets and blocks -------------------------------------------------------------------------
    def _positions(self) -> list[tuple[float, float]]:
        # small (test) districts get smaller blocks so that every block type fits
        first, spacing = (
            ((40.0, 100.0), (120.0, 190.0)) if self.size >= 600 else ((25.0, 50.0), (75.0, 100.0))
        )
        out = []
        pos = -self.half + self.u(*first)
        while pos < self.half - 30.0:
            w = float(self.rng.choice([10.0, 12.0, 14.0, 18.0], p=[0.3, 0.35, 0.2, 0.15]))
            out.append((pos, w))
            pos += self.u(*spacing)
        return out

    def layout(self) -> None:
        xs = self._positions()
        ys = self._positions()
        for c, w in xs:
            self.streets_local.append(("v", c, w, self._name(len(self.streets_local))))
        for c, w in ys:
            self.streets_local.append(("h", c, w, self._name(len(self.streets_local))))
        h = self.half
        for i, (axis, c, w, _name) in enumerate(self.streets_local):
            cw = w - 2 * (2.0 if w <= 12 else 3.0)
            if axis == "v":
                full, cwy = box(c - w / 2, -h, c + w / 2, h), box(c - cw / 2, -h, c + cw / 2, h)
            else:
                full, cwy = box(-h, c - w / 2, h, c + w / 2), box(-h, c - cw / 2, h, c + cw / 2)
            self.street_rects.append((full, cwy, i))
            self.landcover.append((full, LC_SIDEWALK, (True, True)))
        for _full, cwy, _ in self.street_rects:
            self.landcover.append((cwy, LC_ASPHALT, (True, True)))
        nv = len(xs)
        x_edges = [-h] + [v for c, w in xs for v in (c - w / 2, c + w / 2)] + [h]
        y_edges = [-h] + [v for c, w in ys for v in (c - w / 2, c + w / 2)] + [h]
        blocks = []
        for j in range(len(ys) + 1):
            for i in range(len(xs) + 1):
                bx0, bx1 = x_edges[2 * i], x_edges[2 * i + 1]
                by0, by1 = y_edges[2 * j], y_edges[2 * j + 1]
                rect = box(bx0, by0, bx1, by1)
                if not rect.intersects(self.district_local):
                    continue
                if rect.intersection(self.district_local).area < 50:
                    self.add_lot(rect, None, 0.0)  # a corner of a block outside: parcel only
                    continue
                sides = {
                    "W": i - 1 if i > 0 else None,
                    "E": i if i < len(xs) else None,
                    "S": nv + j - 1 if j > 0 else None,
                    "N": nv + j if j < len(ys) else None,
                }
                inside = rect.intersection(self.district_local).area / rect.area
                dist = math.hypot((bx0 + bx1) / 2, (by0 + by1) / 2)
                blocks.append((-round(inside, 1), dist, j, i, (bx0, by0, bx1, by1), sides))
        # the most complete blocks get the guaranteed types (the fragile ones first)
        blocks.sort(key=lambda b: (b[0], b[1], b[2], b[3]))
        guaranteed = list(GUARANTEED_TYPES)
        for k, (_ins, _d, _j, _i, block_box, sides) in enumerate(blocks):
            if k < len(guaranteed):
                kind = guaranteed[k]
            else:
                kind = str(self.rng.choice(BLOCK_TYPES, p=BLOCK_WEIGHTS))
            self.block(kind, block_box, sides)
        self.street_trees_and_parking()

    def strips(self, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> list[_Frame]:
        bx0, by0, bx1, by1 = rect
        w, d = bx1 - bx0, by1 - by0
        s, n, west, e = sides["S"], sides["N"], sides["W"], sides["E"]
        south = _Frame(bx0, by0, (1.0, 0.0), (0.0, 1.0), w, d, s, True)
        north = _Frame(bx1, by1, (-1.0, 0.0), (0.0, -1.0), w, d, n, False)
        westf = _Frame(bx0, by1, (0.0, -1.0), (1.0, 0.0), d, w, west, True)
        eastf = _Frame(bx1, by0, (0.0, 1.0), (-1.0, 0.0), d, w, e, False)
        if s is not None and n is not None and d >= 50:
            south.depth = north.depth = d / 2
            return [south, north]
        if s is not None or n is not None:
            return [south if s is not None else north]
        if west is not None and e is not None and w >= 50:
            westf.depth = eastf.depth = w / 2
            return [westf, eastf]
        if west is not None or e is not None:
            return [westf if west is not None else eastf]
        return [south]

    def block(self, kind: str, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> None:
        bx0, by0, bx1, by1 = rect
        w, d = bx1 - bx0, by1 - by0
        if kind == "courtyard" and not (45 <= w <= 175 and 45 <= d <= 175):
            kind = "apartment"
        if kind == "school" and (w < 70 or d < 70):
            kind = "detached"
        if kind in ("row", "detached", "apartment"):
            for f in self.strips(rect, sides):
                if f.depth < 22:
                    self.garden_strip(f)
                elif kind == "row":
                    self.row_strip(f)
                elif kind == "detached":
                    self.detached_strip(f)
                else:
                    self.apartment_strip(f)
        elif kind == "courtyard":
            self.courtyard(rect, sides)
        elif kind == "commercial":
            self.commercial(rect, sides)
        elif kind == "school":
            self.school(rect, sides)
        else:
            self.park(rect, sides)

    def _front_frame(self, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> _Frame:
        """The frame of the street a whole-block lot is addressed to."""
        return self.strips(rect, sides)[0]

    # -- lot strips -----------------------------------------------------------------------------------
    def garden_strip(self, f: _Frame) -> None:
        self.add_lot(f.rect(0, 0, f.length, f.depth), f, f.length / 2)
        for _ in range(int(f.length // 25)):
            self.tree(*f.pt(self.u(3, f.length - 3), self.u(3, max(3.5, f.depth - 3))))

    def row_strip(self, f: _Frame) -> None:
        u = self.u(3.0, 7.0)
        lot_start = 0.0
        last_lot, last_lu0 = -1, 0.0
        while True:
            n = int(self.rng.integers(3, 9))
            widths = [self.u(5.5, 7.5) for _ in range(n)]
            while n >= 3 and u + sum(widths[:n]) > f.length - 3.0:
                n -= 1
            if n < 3:
                break
            widths = widths[:n]
            depth = min(self.u(9.0, 11.5), f.depth - 10.0)
            setback = self.u(3.0, 5.0)
            eave = self.u(5.6, 7.0)
            pitch = np.deg2rad(self.u(35.0, 45.0))
            material = str(self.rng.choice(PITCHED_MATERIALS))
            gap = self.u(4.0, 9.0)
            self.group_counter += 1
            for k, wk in enumerate(widths):
                lu0 = lot_start if k == 0 else u
                lu1 = u + wk + gap / 2 if k == n - 1 else u + wk
                lid = last_lot = self.add_lot(f.rect(lu0, 0, lu1, f.depth), f, (lu0 + lu1) / 2)
                last_lu0 = lu0
                e = eave + (self.u(0.4, 1.0) * (1 if self.chance(0.5) else -1) if self.chance(0.25) else 0.0)
                roof = self.gable(f, u, setback, u + wk, setback + depth, e, pitch, along_u=True)
                p = self.add(
                    _Proto(
                        f.rect(u, setback, u + wk, setback + depth),
                        roof,
                        "row",
                        material,
                        "Wohngebäude",
                        lid,
                        group=self.group_counter,
                    )
                )
                if self.chance(0.12):
                    p.parts.append(
                        (
                            f.rect(u + 0.8, setback, u + wk - 0.8, setback + 1.2),
                            "bauteil",
                            "Auskragende/zurückspringende Geschosse",
                        )
                    )
                self.back_garden(f, lu0, min(lu1, u + wk + 1.0), setback + depth, lid)
                u += wk
            lot_start = u + gap / 2
            u += gap
        if last_lot < 0:
            self.garden_strip(f)
            return
        # the last lot of the strip takes the rest (corner garden)
        self.lots[last_lot].geom = f.rect(last_lu0, 0, f.length, f.depth)

    def back_garden(self, f: _Frame, lu0: float, lu1: float, house_back: float, lid: int) -> None:
        w = lu1 - lu0
        if self.chance(0.35) and w >= 4.0 and f.depth - house_back > 12:
            shed = f.rect(lu0 + 0.6, f.depth - 3.4, lu0 + min(3.1, w - 0.6), f.depth - 0.6)
            reg = self.chance(0.5)
            h = self.u(2.1, 2.5)
            self.add(_Proto(shed, Roof(FLAT, h, h), "shed", "bitumen", "Gartenhaus", lid, in_cadastre=reg))
        free_v0, free_v1 = house_back + 3.0, f.depth - 4.5
        if w >= 8.0 and free_v1 - free_v0 >= 6.5:
            self.spots.append((f.rect(lu0 + 1.0, free_v0, lu1 - 1.0, free_v1), "garden", lid))
        for _ in range(int(self.rng.integers(0, 3))):
            if f.depth - house_back > 8:
                self.tree(
                    *f.pt(self.u(lu0 + 1, lu1 - 1), self.u(house_back + 4, f.depth - 1)),
                    r=self.u(1.8, 3.8),
                    top=self.u(5.0, 13.0),
                )

    def detached_strip(self, f: _Frame) -> None:
        u = 0.0
        while u < f.length - 1.0:
            lw = self.u(15.0, 24.0)
            if f.length - (u + lw) < 12.0:
                lw = f.length - u
            lid = self.add_lot(f.rect(u, 0, u + lw, f.depth), f, u + lw / 2)
            self.detached_lot(f, u, u + lw, lid)
            u += lw

    def detached_lot(self, f: _Frame, lu0: float, lu1: float, lid: int) -> None:
        lw = lu1 - lu0
        side = self.u(2.5, 4.0)
        garage = self.chance(0.5) and lw >= 17.5
        w = min(self.u(9.0, 13.0), lw - 2 * side - (3.6 if garage else 0.0))
        d = min(self.u(8.0, 11.5), f.depth - 14.0)
        setback = self.u(4.0, 7.0)
        if w < 7.0 or d < 7.0:
            self.garden_only(f, lu0, lu1)
            return
        hu0 = lu0 + side
        v0, v1 = setback, setback + d
        empty = self.chance(0.08)
        lshape = self.chance(0.3)
        storeys = 1 if self.chance(0.2) else 2
        pitch = np.deg2rad(self.u(30.0, 45.0))
        if lshape:
            ww = self.u(4.0, max(4.5, w - 3.0))
            wd = self.u(3.5, 6.0)
            geom = f.poly(
                [(hu0, v0), (hu0 + w, v0), (hu0 + w, v1), (hu0 + ww, v1), (hu0 + ww, v1 + wd), (hu0, v1 + wd)]
            )
            if self.chance(0.6):
                eave = self.u(3.0, 3.5) if storeys == 1 else self.u(5.4, 6.4)
                slope = math.tan(pitch)
                roof = Roof(HIP, eave, 0.0, slope=slope)
                material = str(self.rng.choice(PITCHED_MATERIALS))
                if self.roof_rng.random() < 0.7:  # two gable wings instead of the hipped L
                    roof = self.cross_gable(
                        f, (hu0, v0, hu0 + w, v1), (hu0, v0, hu0 + ww, v1 + wd), eave, pitch
                    )
            else:
                eave = self.u(3.3, 3.8) if storeys == 1 else self.u(6.0, 7.2)
                roof = Roof(FLAT, eave, eave)
                material = str(self.rng.choice(FLAT_MATERIALS))
        else:
            geom = f.rect(hu0, v0, hu0 + w, v1)
            r = self.rng.random()
            eave = self.u(3.0, 3.5) if storeys == 1 else self.u(5.4, 6.4)
            material = str(self.rng.choice(PITCHED_MATERIALS))
            if r < 0.5:
                roof = self.gable(f, hu0, v0, hu0 + w, v1, eave, pitch, along_u=w >= d)
                roof = self.catalogue_variant(
                    f, hu0, v0, hu0 + w, v1, roof, w >= d, {HALF_HIP: 0.3, MANSARD: 0.2}
                )
            elif r < 0.85:
                roof = Roof(HIP, eave, 0.0, slope=math.tan(pitch))
                roof = self.catalogue_variant(f, hu0, v0, hu0 + w, v1, roof, w >= d, {PYRAMID: 0.4})
            else:
                eave = self.u(3.3, 3.8) if storeys == 1 else self.u(6.0, 7.2)
                roof = Roof(FLAT, eave, eave)
                material = str(self.rng.choice(FLAT_MATERIALS))
                roof = self.catalogue_variant(f, hu0, v0, hu0 + w, v1, roof, w >= d, {SHED: 0.5})
                if roof.kind == SHED:
                    material = str(self.roof_rng.choice(PITCHED_MATERIALS))
        house = _Proto(geom, roof, "house", material, "Wohngebäude", lid, floors_known=True)
        if empty:
            house.present = (False, True)
            house.category = "new_house"
            self.empty_lots.append(house)
        else:
            self.add(house)
        if garage:
            gu0 = hu0 + w + 0.6
            g = f.rect(gu0, v0 + 0.5, gu0 + 3.0, v0 + 6.5)
            ge = self.u(2.5, 2.9)
            self.add(_Proto(g, Roof(FLAT, ge, ge), "garage", "bitumen", "Garage", lid))
            self.landcover.append((f.rect(gu0, 0.0, gu0 + 3.0, v0 + 0.5), LC_PAVED, (True, True)))
        back = v1 + (6.0 if lshape else 0.0)
        self.back_garden(f, lu0, lu1, back, lid)

    def garden_only(self, f: _Frame, lu0: float, lu1: float) -> None:
        for _ in range(int(self.rng.integers(0, 3))):
            self.tree(*f.pt(self.u(lu0 + 1, lu1 - 1), self.u(2, max(2.5, f.depth - 2))))

    def apartment_strip(self, f: _Frame) -> None:
        u = self.u(0.0, 4.0)
        lot_start = 0.0
        setback = self.u(0.5, 3.0)
        depth = min(self.u(11.0, 14.0), f.depth - 8.0)
        while f.length - u >= 14.0:
            bw = self.u(14.0, 26.0)
            if f.length - (u + bw) < 14.0:
                bw = f.length - u - self.u(0.0, 4.0)
            lu1 = f.length if f.length - (u + bw) < 14.0 else u + bw
            lid = self.add_lot(f.rect(lot_start, 0, lu1, f.depth), f, (lot_start + lu1) / 2)
            geom = f.rect(u, setback, u + bw, setback + depth)
            if self.chance(0.55):
                eave = self.u(9.0, 16.0)
                roof = Roof(FLAT, eave, eave)
                material = str(self.rng.choice(FLAT_MATERIALS))
            else:
                eave = self.u(8.5, 13.0)
                roof = self.gable(
                    f, u, setback, u + bw, setback + depth, eave, np.deg2rad(self.u(30.0, 40.0)), along_u=True
                )
                material = str(self.rng.choice(PITCHED_MATERIALS))
                roof = self.catalogue_variant(
                    f, u, setback, u + bw, setback + depth, roof, True, {MANSARD: 0.3}
                )
            p = self.add(_Proto(geom, roof, "apartment", material, "Wohngebäude", lid, floors_known=True))
            if self.chance(0.15):
                p.parts.append(
                    (
                        f.rect(u + 1.0, setback, u + bw - 1.0, setback + 1.2),
                        "bauteil",
                        "Auskragende/zurückspringende Geschosse",
                    )
                )
            yard_v0 = setback + depth
            if self.chance(0.5):
                self.landcover.append((f.rect(lot_start, yard_v0, lu1, f.depth), LC_PAVED, (True, True)))
                for k in range(int((lu1 - lot_start - 2) // 2.6)):
                    x, y = f.pt(lot_start + 1.5 + 2.6 * k + 1.3, yard_v0 + 4.0)
                    self.parking.append((x, y, f.ev[0], f.ev[1]))
                if self.chance(0.3) and f.depth - yard_v0 > 22:
                    p.parts.append(
                        (
                            f.rect(u + 1.0, yard_v0 + 8.0, u + bw - 1.0, f.depth - 2.0),
                            "underground",
                            "Tiefgarage",
                        )
                    )
            else:
                for _ in range(int(self.rng.integers(0, 4))):
                    if f.depth - yard_v0 > 6:
                        self.tree(*f.pt(self.u(lot_start + 2, lu1 - 2), self.u(yard_v0 + 4, f.depth - 1.5)))
            u += bw
            lot_start = lu1
        if lot_start < f.length - 0.5:
            self.add_lot(f.rect(lot_start, 0, f.length, f.depth), f, (lot_start + f.length) / 2)

    # -- whole blocks ------------------------------------------------------------------------------
    def courtyard(self, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> None:
        bx0, by0, bx1, by1 = rect
        f = self._front_frame(rect, sides)
        lid = self.add_lot(box(*rect), f, f.length / 2)
        s = self.u(0.5, 2.0)
        depth = self.u(11.0, 14.0)
        outer = box(bx0 + s, by0 + s, bx1 - s, by1 - s)
        inner = box(bx0 + s + depth, by0 + s + depth, bx1 - s - depth, by1 - s - depth)
        geom = Polygon(outer.exterior.coords, [inner.exterior.coords[::-1]])
        if self.chance(0.5):
            eave = self.u(10.0, 16.0)
            roof, material = Roof(FLAT, eave, eave), str(self.rng.choice(FLAT_MATERIALS))
        else:
            roof = Roof(HIP, self.u(10.0, 13.0), 0.0, slope=math.tan(np.deg2rad(self.u(30.0, 40.0))))
            material = str(self.rng.choice(PITCHED_MATERIALS))
        p = self.add(_Proto(geom, roof, "courtyard", material, "Wohngebäude", lid, floors_known=True))
        ix0, iy0, ix1, iy1 = inner.bounds
        if self.chance(0.6) and ix1 - ix0 > 20 and iy1 - iy0 > 20:
            p.parts.append(
                (
                    box(ix0 + 3, iy0 + 3, ix1 - 3, iy0 + 3 + min(25.0, iy1 - iy0 - 6)),
                    "underground",
                    "Tiefgarage",
                )
            )
        p.parts.append(
            (
                box(bx0 + s, by0 + s, bx0 + s + depth, by0 + s + depth),
                "bauteil",
                "Geringergeschossiger Gebäudeteil",
            )
        )
        for _ in range(int((ix1 - ix0) * (iy1 - iy0) // 250)):
            self.tree(self.u(ix0 + 3, ix1 - 3), self.u(iy0 + 3, iy1 - 3))
        if ix1 - ix0 > 12 and iy1 - iy0 > 12:
            self.spots.append((box(ix0 + 2, iy1 - 10, ix0 + 12, iy1 - 2), "yard", lid))

    def commercial(self, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> None:
        bx0, by0, bx1, by1 = rect
        w, d = bx1 - bx0, by1 - by0
        f = self._front_frame(rect, sides)
        along_x = w >= d
        length = w if along_x else d
        k = max(1, min(3, int(length // 55)))
        cuts = np.sort(self.rng.uniform(0.3, 0.7, k - 1)) if k > 1 else np.array([])
        bounds_ = [0.0, *list(cuts * length), length]
        first_multi = not any(p.category == "hall" for p in self.protos)
        for a, b in itertools.pairwise(bounds_):
            lot = (bx0 + a, by0, bx0 + b, by1) if along_x else (bx0, by0 + a, bx1, by0 + b)
            lx0, ly0, lx1, ly1 = lot
            lid = self.add_lot(box(*lot), f, f.length / 2)
            self.landcover.append((box(*lot), LC_PAVED, (True, True)))
            m = self.u(6.0, 11.0)
            hx0, hy0 = lx0 + m, ly0 + m + 6.0
            hx1, hy1 = min(lx1 - m, hx0 + 90.0), min(ly1 - m, hy0 + 60.0)
            if hx1 - hx0 < 15 or hy1 - hy0 < 12:
                continue
            eave = self.u(6.0, 12.0)
            roof = Roof(FLAT, eave, eave)
            fun = str(
                self.rng.choice(
                    [
                        "Gebäude für Handel und Dienstleistungen",
                        "Lagerhalle, Lagerschuppen, Lagerhaus",
                        "Gebäude für Gewerbe und Industrie",
                    ]
                )
            )
            if (first_multi or self.chance(0.3)) and hx1 - hx0 > 30:
                first_multi = False
                mid = (hx0 + hx1) / 2
                geom: Polygon | MultiPolygon = MultiPolygon(
                    [box(hx0, hy0, mid - 3.0, hy1), box(mid + 3.0, hy0, hx1, hy1)]
                )
            else:
                geom = box(hx0, hy0, hx1, hy1)
            self.add(_Proto(geom, roof, "hall", str(self.rng.choice(["bitumen", "gravel"])), fun, lid))
            # parking along the front of the lot
            for j in range(int((hx1 - hx0 - 2) // 2.6)):
                self.parking.append((hx0 + 1.3 + 2.6 * j + 1.3, ly0 + m / 2 + 1.0, 0.0, 1.0))
            if lx1 - hx1 >= 13:
                self.spots.append((box(hx1 + 2.0, hy0, lx1 - 2.0, min(hy1, hy0 + 14.0)), "yard", lid))
            if self.chance(0.4) and ly1 - hy1 >= 16:
                oe = self.u(9.0, 15.0)
                oy0 = hy1 + 2.0
                geom2 = Polygon(
                    [
                        (hx0, oy0),
                        (hx0 + 22, oy0),
                        (hx0 + 22, oy0 + 8),
                        (hx0 + 10, oy0 + 8),
                        (hx0 + 10, min(ly1 - 2.0, oy0 + 13)),
                        (hx0, min(ly1 - 2.0, oy0 + 13)),
                    ]
                )
                if geom2.is_valid and hx1 - hx0 > 24:
                    self.add(_Proto(geom2, Roof(FLAT, oe, oe), "office", "gravel", "Bürogebäude", lid))
            for _ in range(int(self.rng.integers(0, 3))):
                self.tree(self.u(lx0 + 2, lx0 + max(2.5, m - 2)), self.u(ly0 + 2, ly1 - 2), r=self.u(2, 3.5))

    def school(self, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> None:
        bx0, by0, bx1, by1 = rect
        f = self._front_frame(rect, sides)
        lid = self.add_lot(box(*rect), f, f.length / 2)
        self.landcover.append((box(*rect), LC_PAVED, (True, True)))
        ymid = (by0 + by1) / 2
        W = min(bx1 - bx0 - 16, 75.0)
        D = min(ymid - by0 - 10, 45.0)
        x0, y0 = (bx0 + bx1) / 2 - W / 2, by0 + 8
        wing = 12.0
        u_shape = Polygon(
            [
                (x0, y0),
                (x0 + W, y0),
                (x0 + W, y0 + D),
                (x0 + W - wing, y0 + D),
                (x0 + W - wing, y0 + wing),
                (x0 + wing, y0 + wing),
                (x0 + wing, y0 + D),
                (x0, y0 + D),
            ]
        )
        eave = self.u(11.0, 13.0)
        self.add(
            _Proto(
                u_shape,
                Roof(FLAT, eave, eave),
                "school",
                "gravel",
                "Allgemein bildende Schule",
                lid,
                floors_known=True,
            )
        )
        gx0, gy0 = bx0 + 8, ymid + 6
        gx1, gy1 = min(bx1 - 8, gx0 + 45), min(by1 - 8, gy0 + 27)
        if gx1 - gx0 > 20 and gy1 - gy0 > 15:
            self.add(
                _Proto(
                    box(gx0, gy0, gx1, gy1), Roof(FLAT, 8.5, 8.5), "gym", "bitumen", "Sport-, Turnhalle", lid
                )
            )
            if bx1 - 8 - (gx1 + 6) > 30:
                self.landcover.append((box(gx1 + 6, gy0, bx1 - 8, by1 - 8), LC_SPORTS, (True, True)))
        for _ in range(6):
            self.tree(self.u(x0 + wing + 3, x0 + W - wing - 3), self.u(y0 + wing + 3, y0 + D + 5))

    def park(self, rect: tuple[float, float, float, float], sides: dict[str, int | None]) -> None:
        bx0, by0, bx1, by1 = rect
        f = self._front_frame(rect, sides)
        lid = self.add_lot(box(*rect), f, f.length / 2, kind="park")
        w, d = bx1 - bx0, by1 - by0
        pond = None
        if w >= 80 and d >= 80 and self.chance(0.7):
            cx, cy = self.u(bx0 + 35, bx1 - 35), self.u(by0 + 35, by1 - 35)
            rx, ry = self.u(12, 25), self.u(8, 18)
            t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            pond = Polygon(np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)])
            self.ponds.append(pond)
        if self.chance(0.4):
            kx, ky = self.u(bx0 + 8, bx1 - 14), self.u(by0 + 8, by1 - 12)
            kiosk = box(kx, ky, kx + 5.0, ky + 4.0)
            if pond is None or kiosk.distance(pond) > 3:
                self.add(
                    _Proto(
                        kiosk,
                        Roof(FLAT, 3.0, 3.0),
                        "kiosk",
                        "bitumen",
                        "Gebäude für Handel und Dienstleistungen",
                        lid,
                    )
                )
        n = int(w * d / 160)
        for _ in range(n):
            x, y = self.u(bx0 + 2, bx1 - 2), self.u(by0 + 2, by1 - 2)
            if pond is not None and pond.buffer(5).contains(shapely.Point(x, y)):
                continue
            self.tree(x, y, r=self.u(2.5, 6.0), top=self.u(8.0, 24.0))

    def street_trees_and_parking(self) -> None:
        h = self.half
        crossings: dict[str, list[tuple[float, float]]] = {"v": [], "h": []}
        for axis, c, w, _ in self.streets_local:
            crossings[axis].append((c, w))
        for axis, c, w, _ in self.streets_local:
            cw = w - 2 * (2.0 if w <= 12 else 3.0)
            others = np.array(crossings["h" if axis == "v" else "v"]).reshape(-1, 2)

            def clear(s: np.ndarray, margin: float, others: np.ndarray = others) -> np.ndarray:
                return np.all(
                    np.abs(s[:, None] - others[None, :, 0]) > others[None, :, 1] / 2 + margin, axis=1
                )

            if self.chance(0.5):
                step = self.u(9.0, 15.0)
                for side in (-1, 1):
                    s = -h + self.u(0, step) + step * np.arange(int(np.ceil(2 * h / step)) + 1)
                    s = s[s < h]
                    off = c + side * (w / 2 - 1.0)
                    for sv in s[clear(s, 8.0)]:
                        x, y = (off, float(sv)) if axis == "v" else (float(sv), off)
                        self.tree(x, y, r=self.u(2.5, 4.2), top=self.u(9.0, 16.0))
            ux, uy = (0.0, 1.0) if axis == "v" else (1.0, 0.0)
            for side in (-1, 1):
                s = -h + self.u(0, 6.0) + 6.0 * np.arange(int(np.ceil(2 * h / 6.0)) + 1)
                s = s[s < h]
                off = c + side * (cw / 2 - 1.1)
                for sv in s[clear(s, 7.0)]:
                    x, y = (off, float(sv)) if axis == "v" else (float(sv), off)
                    self.parking.append((x, y, ux, uy))


# ---------------------------------------------------------------------------------------------------
# finalisation (world frame, changes, cadastre keys)
# ---------------------------------------------------------------------------------------------------


def _oid(rng: np.random.Generator, used: set[str]) -> str:
    alphabet = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    while True:
        s = "DENW36AL" + "".join(alphabet[rng.integers(0, len(alphabet), 8)])
        if s not in used:
            used.add(s)
            return s


def _date(rng: np.random.Generator, y0: int, y1: int) -> str:
    day = int(rng.integers(0, max(1, (y1 - y0) * 365)))
    return str(np.datetime64(f"{y0}-01-01") + np.timedelta64(day, "D"))


def epoch_year(epoch: str, index: int) -> int:
    digits = "".join(c for c in epoch if c.isdigit())
    return int(digits[:4]) if len(digits) >= 4 else 2021 + 3 * index


_G = TypeVar("_G", bound=BaseGeometry)


def _round(geom: _G, decimals: int = 2) -> _G:
    return shapely.transform(geom, lambda c: np.round(c, decimals))


class _Finisher:
    def __init__(self, b: _Builder, terrain: Terrain, epochs: tuple[str, str]):
        self.b = b
        self.rng = b.rng
        self.terrain = terrain
        self.epochs = epochs
        self.y1, self.y2 = epoch_year(epochs[0], 0), epoch_year(epochs[1], 1)
        self.district = box(*b.bounds)
        self.inner = self.district.buffer(-0.5, join_style="mitre")
        self.used_oids: set[str] = set()

    def world(self, g: _G) -> _G:
        return _round(affine_transform(g, self.b.to_world))

    def world_xy(self, x: float, y: float) -> tuple[float, float]:
        a, bb, d, e, xo, yo = self.b.to_world
        return (a * x + bb * y + xo, d * x + e * y + yo)

    def world_dir(self, x: float, y: float) -> tuple[float, float]:
        a, bb, d, e, _, _ = self.b.to_world
        return (a * x + bb * y, d * x + e * y)

    def world_roof(self, r: Roof) -> Roof:
        return r.moved(self.world_xy, self.world_dir)

    def structure(self, p: _Proto, sid: int, lots: list[_Lot]) -> Structure | None:
        geom = self.world(p.geom)
        if not geom.is_valid or not self.inner.contains(geom):
            return None
        corners = shapely.get_coordinates(geom)
        base = round(float(self.terrain(corners[:, 0], corners[:, 1]).min()), 2)
        roof = self.world_roof(p.roof)
        edges = boundary_edges(geom)
        if roof.kind == HIP:
            roof = Roof(HIP, roof.eave, hip_ridge(geom, roof.eave, roof.slope), slope=roof.slope)
        floors = max(1, round(roof.eave / 2.9))
        s = Structure(
            sid=sid,
            oid="",
            geom=geom,
            base=base,
            roof=roof,
            category=p.category,
            material=p.material,
            funktion=p.funktion,
            in_cadastre=p.in_cadastre,
            present=p.present,
            group=p.group,
            anzahlgs=floors if (p.floors_known and self.rng.random() < 0.35) else None,
            lagebeztxt=lots[p.lot].address,
            aktualit=_date(self.rng, 2004, self.y2),
            edges=edges,
        )
        s.has_parts = bool(p.parts)
        return s

    def addresses(self) -> None:
        by_side: dict[tuple[int, bool], list[int]] = {}
        for i, lot in enumerate(self.b.lots):
            if lot.street is not None:
                by_side.setdefault((lot.street, lot.even), []).append(i)
        for (street, even), idx in sorted(by_side.items()):
            idx.sort(key=lambda i: self.b.lots[i].coord)
            name = self.b.streets_local[street][3]
            for k, i in enumerate(idx):
                self.b.lots[i].address = f"{name} {2 * k + (2 if even else 1)}"
        for lot in self.b.lots:
            if not lot.address:
                lot.address = self.b.streets_local[0][3] if self.b.streets_local else "Gelsenkirchen"


def build_city(seed: int, bounds: tuple[float, float, float, float], epochs: tuple[str, str]) -> City:
    """The complete, deterministic description of the demo district."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    terrain = Terrain.from_rng(rng)
    b = _Builder(rng, bounds, np.random.default_rng(np.random.SeedSequence([seed, 2])))
    b.layout()
    fin = _Finisher(b, terrain, epochs)
    fin.addresses()

    # structures present in epoch 1 (and empty-lot houses that appear in epoch 2)
    structures: list[Structure] = []
    part_src: list[tuple[Structure, list[tuple[Polygon, str, str]]]] = []
    for p in b.protos:
        s = fin.structure(p, len(structures), b.lots)
        if s is not None:
            structures.append(s)
            if p.parts:
                part_src.append((s, p.parts))
    candidates_new = [s for p in b.empty_lots if (s := fin.structure(p, -1, b.lots)) is not None]

    _choose_changes(fin, structures, candidates_new)
    for i, s in enumerate(structures):
        s.sid = i
    _assign_oids(fin, structures)
    parts = _parts(fin, part_src, structures)
    _ensure_multipart(structures)
    _make_invalid(fin, structures)

    # trees clear of every structure of any epoch
    trees = _trees(fin, structures)
    cars = (_cars(fin, structures, 0), _cars(fin, structures, 1))
    ponds = [
        (g, round(float(terrain(*shapely.get_coordinates(g).T).min()) - 0.4, 2))
        for g in (fin.world(p) for p in b.ponds)
    ]
    streets = _streets(fin)
    landcover: list[tuple[Polygon | MultiPolygon, int, tuple[bool, bool]]]
    landcover = [(fin.world(g), c, ep) for g, c, ep in b.landcover]
    landcover += [(g, LC_WATER, (True, True)) for g, _ in ponds]
    landcover += [(s.geom.buffer(2.0), LC_BARE, (False, True)) for s in structures if s.change == DEMOLISHED]
    parcels = _parcels(fin, streets)
    bbox = np.array([s.geom.bounds for s in structures]) if structures else np.zeros((0, 4))
    return City(
        bounds=bounds,
        terrain=terrain,
        angle=b.angle,
        epochs=epochs,
        structures=structures,
        parts=parts,
        parcels=parcels,
        streets=streets,
        trees=trees,
        cars=cars,
        ponds=ponds,
        landcover=landcover,
        bbox=bbox,
    )


def _choose_changes(fin: _Finisher, structures: list[Structure], candidates_new: list[Structure]) -> None:
    rng = fin.rng
    b = fin.b
    main = [s for s in structures if s.category not in ("shed", "garage")]
    n_main = max(len(main), 1)
    n_dem = max(1, round(0.05 * n_main))
    n_raise = max(1, round(0.05 * n_main))
    n_lower = max(1, round(0.02 * n_main))
    n_new = max(2, round(0.05 * n_main))
    n_unreg = max(1, round(0.4 * n_new))
    eligible = [s for s in main if s.geom.area >= 40 and not s.has_parts]
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    k = 0
    for s in order[:n_dem]:
        s.change, s.present = DEMOLISHED, (True, False)
        k += 1
    for s in order[k : k + n_raise]:
        s.change, s.dh = RAISED, round(float(rng.uniform(3.0, 4.5)), 2)
        s.aktualit = _date(rng, fin.y1, fin.y2)
        if s.anzahlgs is not None:
            s.anzahlgs += 1
    k += n_raise
    lowered = 0
    for s in order[k:]:
        if lowered >= n_lower:
            break
        dh = -round(float(rng.uniform(2.5, 4.0)), 2)
        if s.roof.eave + dh >= 2.5:
            s.change, s.dh = LOWERED, dh
            lowered += 1
    # new structures: empty detached lots first (registered), then free spots
    new_count = 0
    chosen_new = [candidates_new[i] for i in rng.permutation(len(candidates_new))][: n_new - n_unreg]
    for s in chosen_new:
        s.change, s.present = NEW, (False, True)
        s.aktualit = _date(rng, fin.y1, fin.y2)
        structures.append(s)
        new_count += 1
    spots = [(g, kind, lid) for g, kind, lid in b.spots if fin.inner.contains(fin.world(g))]
    spot_order = [spots[i] for i in rng.permutation(len(spots))]
    n_spots_needed = n_unreg + max(0, n_new - n_unreg - new_count)
    occupied = _Occupied([p.geom for p in b.protos] + [p.geom for p in b.empty_lots])
    placed = 0
    for g, kind, lid in itertools.chain(spot_order, _free_places(fin, occupied)):
        if placed >= n_spots_needed:
            break
        unregistered = placed < n_unreg
        if kind == "garden":
            w, d = rng.uniform(6.0, 8.0), rng.uniform(5.5, 7.0)
            eave = float(rng.uniform(3.0, 4.2))
            fun = "Garage" if rng.random() < 0.5 else "Schuppen"
            cat = "unregistered" if unregistered else "new_shed"
        else:
            w, d = rng.uniform(8.0, 12.0), rng.uniform(6.0, 10.0)
            eave = float(rng.uniform(4.0, 6.5))
            fun = "Lagerhalle, Lagerschuppen, Lagerhaus"
            cat = "unregistered" if unregistered else "new_hall"
        # spots are axis-aligned boxes in the local (street grid) frame
        minx, miny, maxx, maxy = g.bounds
        w, d = min(w, maxx - minx), min(d, maxy - miny)
        cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
        local = box(cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2)
        geom = fin.world(local)
        if geom.area < 30.0 or occupied.near(local, 1.5):
            continue
        occupied.add(local)
        corners = shapely.get_coordinates(geom)
        structures.append(
            Structure(
                sid=-1,
                oid="",
                geom=geom,
                base=round(float(fin.terrain(corners[:, 0], corners[:, 1]).min()), 2),
                roof=Roof(FLAT, round(eave, 2), round(eave, 2)),
                category=cat,
                material="bitumen",
                funktion=fun,
                in_cadastre=not unregistered,
                present=(False, True),
                change=NEW,
                lagebeztxt=b.lots[lid].address,
                aktualit=_date(rng, fin.y1, fin.y2),
                edges=boundary_edges(geom),
            )
        )
        placed += 1


def _free_places(fin: _Finisher, occupied: _Occupied) -> Iterator[tuple[Polygon, str, int]]:
    """Fallback places for epoch-2 structures: random 12 x 10 m boxes in lots, clear of buildings."""
    rng = fin.rng
    lots = [i for i, lot in enumerate(fin.b.lots) if lot.kind in ("lot", "park")]
    for i in [lots[k] for k in rng.permutation(len(lots))]:
        lot = fin.b.lots[i].geom
        minx, miny, maxx, maxy = lot.bounds
        if maxx - minx < 14 or maxy - miny < 12:
            continue
        for _ in range(12):
            cx, cy = rng.uniform(minx + 7, maxx - 7), rng.uniform(miny + 6, maxy - 6)
            cand = box(cx - 6, cy - 5, cx + 6, cy + 5)
            if not lot.buffer(-1.0).contains(cand) or not fin.inner.contains(fin.world(cand)):
                continue
            if occupied.near(cand, 2.5):
                continue
            yield cand, "yard", i
            break


class _Occupied:
    """Footprints already taken (local frame): an STRtree of the layout plus the few added later."""

    def __init__(self, geoms: Sequence[BaseGeometry]):
        self.tree = shapely.STRtree(geoms)
        self.extra: list[BaseGeometry] = []

    def near(self, g: BaseGeometry, distance: float) -> bool:
        if len(self.tree.query(g, predicate="dwithin", distance=distance)):
            return True
        return any(g.distance(o) < distance for o in self.extra)

    def add(self, g: BaseGeometry) -> None:
        self.extra.append(g)


def _ensure_multipart(structures: list[Structure]) -> None:
    """Small districts: make sure one building is a MultiPolygon (a block split by a 3 m passage)."""
    if any(isinstance(s.geom, MultiPolygon) for s in structures):
        return
    pool = [
        s
        for s in structures
        if s.change == UNCHANGED
        and s.in_cadastre
        and not s.has_parts
        and s.category in ("apartment", "house", "hall", "office")
        and isinstance(s.geom, Polygon)
        and len(s.geom.exterior.coords) == 5
    ]
    for s in sorted(pool, key=lambda s: -s.geom.area):
        assert isinstance(s.geom, Polygon)  # the pool holds simple polygons
        c = np.asarray(s.geom.exterior.coords)[:4]
        if np.linalg.norm(c[1] - c[0]) < np.linalg.norm(c[2] - c[1]):
            c = np.roll(c, -1, axis=0)
        length = float(np.linalg.norm(c[1] - c[0]))
        if length < 14:
            continue
        t1, t2 = 0.5 - 1.5 / length, 0.5 + 1.5 / length
        a = Polygon([c[0], c[0] + t1 * (c[1] - c[0]), c[3] + t1 * (c[2] - c[3]), c[3]])
        b = Polygon([c[0] + t2 * (c[1] - c[0]), c[1], c[2], c[3] + t2 * (c[2] - c[3])])
        s.geom = _round(MultiPolygon([a, b]))
        s.edges = boundary_edges(s.geom)
        if s.roof.kind == HIP:
            s.roof = Roof(HIP, s.roof.eave, hip_ridge(s.geom, s.roof.eave, s.roof.slope), slope=s.roof.slope)
        return


def _assign_oids(fin: _Finisher, structures: list[Structure]) -> None:
    n_unreg = 0
    for s in structures:
        if s.in_cadastre:
            s.oid = _oid(fin.rng, fin.used_oids)
        else:
            n_unreg += 1
            s.oid = f"UNREGISTERED_{n_unreg:05d}"


def _parts(
    fin: _Finisher, src: list[tuple[Structure, list[tuple[Polygon, str, str]]]], structures: list[Structure]
) -> list[PartRecord]:
    parts: list[PartRecord] = []
    for host, items in src:
        for g, kind, fun in items:
            geom = fin.world(g)
            if not fin.inner.contains(geom):
                continue
            code = FUNKTION[fun] if kind == "underground" else BAUTEIL[fun]
            prefix = "31001" if kind == "underground" else "31002"
            parts.append(
                PartRecord(
                    oid=_oid(fin.rng, fin.used_oids),
                    geom=geom,
                    kind=kind,
                    funktion=fun,
                    gfkzshh=f"{prefix}_{code}",
                    host_oid=host.oid if kind == "bauteil" else None,
                    lagebeztxt=host.lagebeztxt,
                    aktualit=_date(fin.rng, 2004, fin.y2),
                    present=host.present if kind == "bauteil" else (True, True),
                )
            )
    # guarantee at least one of each kind (small districts)
    for kind in ("bauteil", "underground"):
        if any(p.kind == kind for p in parts):
            continue
        hosts = sorted(
            (s for s in structures if s.in_cadastre and s.change == UNCHANGED and s.geom.area > 60),
            key=lambda s: -s.geom.area,
        )
        if not hosts:
            continue
        h = hosts[0]
        inner = h.geom.buffer(-1.0)
        if isinstance(inner, MultiPolygon):
            inner = max(inner.geoms, key=lambda g: g.area)
        envelope = _round(shapely.affinity.scale(shapely.oriented_envelope(inner), 0.5, 0.5))
        if not isinstance(envelope, Polygon):  # a degenerate host (its envelope is a line)
            continue
        fun = "Tiefgarage" if kind == "underground" else "Geringergeschossiger Gebäudeteil"
        code = FUNKTION[fun] if kind == "underground" else BAUTEIL[fun]
        parts.append(
            PartRecord(
                oid=_oid(fin.rng, fin.used_oids),
                geom=envelope,
                kind=kind,
                funktion=fun,
                gfkzshh=f"{'31001' if kind == 'underground' else '31002'}_{code}",
                host_oid=h.oid if kind == "bauteil" else None,
                lagebeztxt=h.lagebeztxt,
                aktualit=_date(fin.rng, 2004, fin.y2),
            )
        )
        h.has_parts = True
    return parts


def _make_invalid(fin: _Finisher, structures: list[Structure]) -> None:
    """Corrupt the cadastral geometry of four unchanged buildings (the physical building is intact)."""
    rng = fin.rng

    def rect_like(s: Structure) -> bool:
        return isinstance(s.geom, Polygon) and len(s.geom.exterior.coords) == 5 and not s.geom.interiors

    pool = [
        s for s in structures if s.in_cadastre and s.change == UNCHANGED and not s.has_parts and rect_like(s)
    ]
    big = [s for s in pool if s.category not in ("shed", "garage")]
    small = [s for s in pool if s.category in ("shed", "garage")] or big
    big = [big[i] for i in rng.permutation(len(big))]
    small = [small[i] for i in rng.permutation(len(small))]
    picks: list[tuple[Structure, str]] = []
    for kind in ("bowtie", "spike", "hole_outside"):
        if big:
            picks.append((big.pop(), kind))
    for s in small:
        if all(s is not p for p, _ in picks):
            picks.append((s, "too_few_points"))
            break
    for s, kind in picks:
        assert isinstance(s.geom, Polygon)  # rect_like
        c = np.asarray(s.geom.exterior.coords)[:4]
        if kind == "bowtie":
            g = Polygon([c[0], c[2], c[1], c[3], c[0]])
        elif kind == "spike":
            # a digitising spike out of a corner and back to the same (duplicated) vertex
            out = c[1] + (c[1] - c[0]) / np.linalg.norm(c[1] - c[0]) * 2.0
            g = Polygon([c[0], c[1], out, c[1], c[2], c[3], c[0]])
        elif kind == "hole_outside":
            d = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
            o = c[1] + d * 3.0
            n = np.array([-d[1], d[0]])
            hole = [o, o + d, o + d + n, o + n, o][::-1]
            g = Polygon(c, [hole])
        else:
            g = Polygon([c[0], c[1], c[0], c[0]])
        s.cadastre_geom = _round(g)
        s.invalid_reason = shapely.is_valid_reason(s.cadastre_geom)
    # one valid but dirty record: consecutive duplicate vertices
    for s in pool:
        if s.cadastre_geom is None:
            assert isinstance(s.geom, Polygon)  # rect_like
            c = np.asarray(s.geom.exterior.coords)
            s.cadastre_geom = Polygon(np.vstack([c[:2], c[1:2], c[2:]]))
            break


def _trees(fin: _Finisher, structures: list[Structure]) -> Trees:
    pts = fin.b.tree_pts
    if not pts:
        z = np.zeros(0)
        return Trees(z, z, z, z, z)
    arr = np.array(pts)
    x, y = np.array([fin.world_xy(px, py) for px, py in arr[:, :2]]).T
    r, top, base = arr[:, 2].copy(), arr[:, 3], arr[:, 4]
    tree_ = shapely.STRtree([s.geom for s in structures])
    pnts = shapely.points(x, y)
    keep = shapely.contains_xy(fin.district, x, y)
    if len(structures):
        idx, dist = tree_.query_nearest(pnts, return_distance=True, all_matches=False)
        d = np.full(len(x), np.inf)
        d[idx[0]] = dist
        r = np.minimum(r, d - 0.6)
    ponds = [fin.world(p) for p in fin.b.ponds]
    for pond in ponds:
        keep &= ~shapely.contains_xy(pond.buffer(1.0), x, y)
    keep &= r >= 1.5
    # crowns must not overlap the streets' carriageway much: street trees are limited by construction
    x, y, r, top, base = (
        x[keep],
        y[keep],
        np.round(r[keep], 2),
        np.round(top[keep], 2),
        np.round(base[keep], 2),
    )
    base = np.minimum(base, top * 0.45)
    return Trees(np.round(x, 2), np.round(y, 2), r, top, base)


def _cars(fin: _Finisher, structures: list[Structure], epoch: int) -> Cars:
    rng = np.random.default_rng(np.random.SeedSequence([int(fin.rng.integers(0, 2**31)), epoch]))
    slots = np.array(fin.b.parking) if fin.b.parking else np.zeros((0, 4))
    occ = rng.random(len(slots)) < 0.5
    slots = slots[occ]
    x, y = (
        np.array([fin.world_xy(a, b) for a, b in slots[:, :2]]).T
        if len(slots)
        else (np.zeros(0), np.zeros(0))
    )
    ux, uy = (
        np.array([fin.world_dir(a, b) for a, b in slots[:, 2:4]]).T
        if len(slots)
        else (np.zeros(0), np.zeros(0))
    )
    n = len(x)
    length, width = rng.uniform(3.9, 4.9, n), rng.uniform(1.7, 1.95, n)
    height = rng.uniform(1.4, 1.75, n)
    # jitter along the slot
    jitter = rng.uniform(-0.4, 0.4, n)
    x, y = x + jitter * ux, y + jitter * uy
    palette = np.array(
        [
            [200, 200, 205],
            [30, 30, 35],
            [150, 20, 25],
            [60, 70, 90],
            [230, 230, 230],
            [120, 120, 125],
            [20, 60, 120],
            [180, 160, 120],
        ],
        dtype=np.uint8,
    )
    colour = palette[rng.integers(0, len(palette), n)]
    keep = shapely.contains_xy(fin.inner, x, y)
    if len(structures) and n:
        tree_ = shapely.STRtree([s.geom for s in structures])
        hit = tree_.query(shapely.points(x, y), predicate="dwithin", distance=3.0)
        keep[np.unique(hit[0])] = False
    x, y, ux, uy, length, width, height = (
        np.round(a[keep], 3) for a in (x, y, ux, uy, length, width, height)
    )
    return Cars(x, y, ux, uy, length, width, height, colour[keep])


def _streets(fin: _Finisher) -> list[Street]:
    out = []
    h = fin.b.half
    for i, (axis, c, w, name) in enumerate(fin.b.streets_local):
        line = shapely.LineString([(c, -h), (c, h)] if axis == "v" else [(-h, c), (h, c)])
        wl = affine_transform(line, fin.b.to_world).intersection(fin.district)
        if wl.is_empty or wl.length < 5:
            continue
        co = np.round(shapely.get_coordinates(wl), 2)
        cw = w - 2 * (2.0 if w <= 12 else 3.0)
        out.append(Street(i, name, axis, ((co[0, 0], co[0, 1]), (co[-1, 0], co[-1, 1])), w, cw))
    return out


def _parcels(fin: _Finisher, streets: list[Street]) -> list[Parcel]:
    b = fin.b
    rng = fin.rng
    geoms: list[tuple[Polygon | MultiPolygon, str, bool]] = []
    for lot in b.lots:
        g = _round(affine_transform(lot.geom, b.to_world).intersection(fin.district), 3)
        if isinstance(g, Polygon | MultiPolygon) and g.area >= 1.0:
            geoms.append((g, lot.address, False))
    # street parcels: horizontal streets full length, vertical streets split by the horizontal ones
    h_rects = [full for full, _, i in b.street_rects if b.streets_local[i][0] == "h"]
    h_union = shapely.union_all(h_rects) if h_rects else Polygon()
    for full, _, i in b.street_rects:
        axis, name = b.streets_local[i][0], b.streets_local[i][3]
        g = full if axis == "h" else full.difference(h_union)
        for part in getattr(g, "geoms", [g]):
            pw = _round(affine_transform(part, b.to_world).intersection(fin.district), 3)
            if isinstance(pw, Polygon | MultiPolygon) and pw.area >= 1.0:
                geoms.append((pw, name, True))
    x0, y0, _, _ = fin.b.bounds
    keyed = []
    for g, addr, is_street in geoms:
        c = g.representative_point()
        gi = int((c.x - x0) // 2000) + 7 * int((c.y - y0) // 2000)
        flur = 1 + int(((c.x - x0) % 2000) // 500) + 4 * int(((c.y - y0) % 2000) // 500)
        keyed.append((gi % len(GEMARKUNGEN), flur, -round(c.y, 1), round(c.x, 1), g, addr, is_street))
    keyed.sort(key=lambda k: k[:4])
    parcels = []
    counters: dict[tuple[int, int], int] = {}
    prev: Parcel | None = None
    prev_key: tuple[int, int] | None = None
    nenner = 0
    for gi, flur, _ny, _x, g, addr, is_street in keyed:
        no, name = GEMARKUNGEN[gi]
        key = (gi, flur)
        if (
            prev is not None
            and prev_key == key
            and not is_street
            and not prev.is_street
            and rng.random() < 0.12
        ):
            z = counters[key]
            if nenner == 0:
                nenner = 1
                prev.flstkennz = prev.flstkennz[:14] + f"{nenner:04d}" + "__"
            nenner += 1
            nen = f"{nenner:04d}"
        else:
            counters[key] = counters.get(key, 0) + 1
            z = counters[key]
            nenner = 0
            nen = "____"
        kennz = f"05{no:04d}{flur:03d}{z:05d}{nen}__"
        p = Parcel(g, kennz, name, flur, float(round(g.area)), addr, _date(rng, 2004, fin.y2), is_street)
        parcels.append(p)
        prev, prev_key = p, key
    return parcels
