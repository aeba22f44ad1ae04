"""Airborne LiDAR simulation: Geobasis-NRW-like ``3dm`` LAZ tiles (LAS 1.2, point format 1).

How the points come about (everything vectorised over points; Python loops only over objects):

* Flight lines run west-east every 500 m at 1000 m above ground, 60 m/s, swath +-300 m (20 % side
  overlap), alternating direction. Every strip samples its part of the tile **uniformly at random**
  (Poisson count, no grid artefacts) with ``density / 1.2`` pulses per m^2, so the mean pulse density is
  `density` and overlap zones carry about twice the single-strip density. GPS time (adjusted standard
  GPS time, global-encoding bit set) follows the along-track position; the scan angle rank is the
  across-track angle; the point source id is the flight line (``100 * epoch_number + line``).
* The first return lands on the highest surface: roof functions of the buildings present in the epoch
  (see ``roofs.py``), cars (boxes with a lower bonnet), tree crowns (ellipsoids) and otherwise the terrain.
  Walls are barely sampled: 35 % of the pulses within 0.3 m outside a footprint hit the facade at a random
  height. Tree pulses have one to three returns: first near the crown top, optional middle return inside
  the crown, last return on the ground (offset along the scan direction, kept only under the crown).
  Ponds return only 30 % of the pulses (specular water), class 9.
* Noise: about 1.5e-5 of the pulses become high outliers (+40..250 m, birds/haze: class 18 "Hochpunkte")
  and as many low outliers (-1.5..12 m, multipath: left as class 1 "unclassified", like the
  "Kellerpunkte" of real deliveries); 0.05 % of the non-ground points stay unclassified (class 1).

AdV classes written (the ``adv`` scheme of the config): 1 unclassified, 2 ground, 9 water, 18 high noise,
20 non-ground (buildings, vegetation, cars, walls). **No building class**: buildings must be found with
the cadastral footprints, as with the real data.

Point density: `density` is the mean density of pulses (first/only returns); with the extra returns under
trees the total is typically 3-8 % higher.

The LAS header: version 1.2, point format 1, scale 0.01 m, offset = tile south-west corner (z 0),
creation date = the flight day, a GeoTIFF GeoKeyDirectory (ProjectedCSTypeGeoKey 25832,
VerticalCSTypeGeoKey 7837) **and** an OGC WKT VLR (WKT1, COMPD_CS "ETRS89 / UTM zone 32N + DHHN2016
height"), so both WKT-preferring and GeoTIFF-key readers get the compound CRS EPSG:25832+7837.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

import laspy
import numpy as np
import pyproj
import shapely
from laspy import LazBackend
from laspy.vlrs.known import GeoKeyDirectoryVlr, GeoKeyEntryStruct, WktCoordinateSystemVlr
from pyproj.enums import WktVersion

from pipeline.sources.demo.city import City, epoch_year
from pipeline.sources.demo.grid import Tile
from pipeline.sources.demo.kernels import counting_order
from pipeline.sources.demo.rasters import landcover_raster
from pipeline.sources.demo.roofs import roof_height

ADV_CLASSES: dict[int, str] = {
    1: "unclassified (also low outliers)",
    2: "ground (Bodenpunkte)",
    9: "water (Gewässerpunkte)",
    18: "high noise (Hochpunkte, Rauschen)",
    20: "non-ground (Nicht-Bodenpunkte: buildings, vegetation, cars)",
}
ASPRS_MOBILE_CLASSES: dict[int, str] = {1: "unclassified", 2: "ground", 5: "high vegetation", 6: "building"}

FLIGHT_ALTITUDE = 1000.0
FLIGHT_SPEED = 60.0
STRIP_SPACING = 500.0
SWATH_HALF = 300.0
TURN_SECONDS = 240.0

# material codes: 0-6 land cover (city.LC_*), then these
MAT_ROOF = {"tile_red": 10, "tile_brown": 11, "tile_dark": 12, "bitumen": 13, "gravel": 14, "green": 15}
MAT_TREE, MAT_CAR, MAT_WALL = 20, 21, 22
# mean and spread of the 16-bit intensity per material
_INTENSITY = np.zeros((32, 2), dtype=np.float64)
for _code, _mean, _sd in (
    (0, 3000, 400),
    (1, 1100, 200),
    (2, 2000, 300),
    (3, 1700, 300),
    (4, 300, 100),
    (5, 2400, 300),
    (6, 2100, 300),
    (10, 1900, 300),
    (11, 1500, 300),
    (12, 800, 200),
    (13, 1000, 200),
    (14, 2600, 300),
    (15, 2800, 400),
    (20, 1500, 500),
    (21, 1800, 900),
    (22, 700, 250),
):
    _INTENSITY[_code] = (_mean, _sd)

COMPOUND_CRS = "EPSG:25832+7837"


def flight_datetime(epoch: str, index: int, hour: int = 10) -> dt.datetime:
    """Day and hour the epoch was flown (spring, leaf-on enough for crowns)."""
    return dt.datetime(epoch_year(epoch, index), 3, 20 + index, hour, tzinfo=dt.UTC)


def adjusted_gps_time(when: dt.datetime) -> float:
    """Adjusted standard GPS time (GPS seconds since 1980-01-06 minus 1e9; 18 leap seconds since 2017)."""
    gps_epoch = dt.datetime(1980, 1, 6, tzinfo=dt.UTC)
    return (when - gps_epoch).total_seconds() + 18.0 - 1e9


class PointIndex:
    """Bucket points into square cells so objects can fetch the points under their bounding box."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float], cell: float = 5.0
    ):
        self.x0, self.y0 = bounds[0], bounds[1]
        self.cell = cell
        self.nx = max(1, int(np.ceil((bounds[2] - bounds[0]) / cell)))
        self.ny = max(1, int(np.ceil((bounds[3] - bounds[1]) / cell)))
        cx = np.clip(((x - self.x0) // cell).astype(np.int64), 0, self.nx - 1)
        cy = np.clip(((y - self.y0) // cell).astype(np.int64), 0, self.ny - 1)
        self.order, self.starts = counting_order(cy * self.nx + cx, self.nx * self.ny)

    def query(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        c0 = max(0, int((x0 - self.x0) // self.cell))
        c1 = min(self.nx - 1, int((x1 - self.x0) // self.cell))
        r0 = max(0, int((y0 - self.y0) // self.cell))
        r1 = min(self.ny - 1, int((y1 - self.y0) // self.cell))
        if c1 < c0 or r1 < r0:
            return np.zeros(0, dtype=np.int64)
        parts = [
            self.order[self.starts[r * self.nx + c0] : self.starts[r * self.nx + c1 + 1]]
            for r in range(r0, r1 + 1)
        ]
        return np.concatenate(parts)


def _strips(tile: Tile, district: tuple[float, float, float, float]) -> list[int]:
    by0 = district[1]
    k0 = int(np.floor((tile.y0 - SWATH_HALF - by0) / STRIP_SPACING - 0.5))
    k1 = int(np.ceil((tile.y1 + SWATH_HALF - by0) / STRIP_SPACING - 0.5))
    out = []
    for k in range(k0, k1 + 1):
        yk = by0 + (k + 0.5) * STRIP_SPACING
        if min(tile.y1, yk + SWATH_HALF) > max(tile.y0, yk - SWATH_HALF):
            out.append(k)
    return out


def _scan_strip(
    rng: np.random.Generator,
    tile: Tile,
    k: int,
    yk: float,
    d_strip: float,
    dx0: float,
    dx1: float,
    t_start: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pulses of flight line `k` inside the tile, generated scan line by scan line in time order.

    Scan lines run across the track every `delta` metres along it; within a line the pulses sweep
    across (zig-zag). Each line is a Poisson sample of the uniform process, its across-track positions
    drawn already sorted (normalised cumulative exponentials), so no sort is needed.
    """
    lo, hi = max(tile.y0, yk - SWATH_HALF), min(tile.y1, yk + SWATH_HALF)
    delta = 1.0 / np.sqrt(d_strip)
    forward = (k + 2) % 2 == 0  # even line numbers fly east
    ax = dx0 - 100.0 if forward else dx1 + 100.0  # along-track origin (run-in 100 m)
    a_lo, a_hi = (tile.x0 - ax, tile.x1 - ax) if forward else (ax - tile.x1, ax - tile.x0)
    lines = np.arange(np.floor(a_lo / delta), np.floor(a_hi / delta) + 1)
    l0 = np.maximum(a_lo, lines * delta)
    width = np.minimum(a_hi, (lines + 1) * delta) - l0
    keep = width > 0
    lines, l0, width = lines[keep], l0[keep], width[keep]
    counts = rng.poisson(d_strip * width * (hi - lo))
    n = int(counts.sum())
    seg = np.repeat(np.arange(len(lines)), counts + 1)
    e = rng.standard_exponential(n + len(lines))
    cs = np.cumsum(e)
    ends = np.cumsum(counts + 1) - 1
    before = np.concatenate([[0.0], cs[ends[:-1]]])
    s = cs - before[seg]
    last = np.zeros(len(seg), dtype=bool)
    last[ends] = True
    u = s[~last] / s[ends][seg[~last]]
    seg = seg[~last]
    odd = (lines[seg] % 2) == 1
    y = np.where(odd, hi - u * (hi - lo), lo + u * (hi - lo))
    y = np.clip(np.floor(y * 100.0) / 100.0, lo, hi - 0.01)
    along = l0[seg] + rng.random(n) * width[seg]
    x = ax + along if forward else ax - along
    x = np.clip(np.floor(x * 100.0) / 100.0, tile.x0, tile.x1 - 0.01)
    frac = (y - (yk - SWATH_HALF)) / (2 * SWATH_HALF)
    frac = np.where(odd, 1.0 - frac, frac)
    t = t_start + (lines[seg] + frac) * (delta / FLIGHT_SPEED)
    return x, y, t


def simulate_aerial(
    city: City, tile: Tile, epoch: int, density: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """All returns of one epoch inside one tile, sorted by GPS time (then return number)."""
    dx0, dy0, dx1, _ = city.bounds
    t0 = adjusted_gps_time(flight_datetime(city.epochs[epoch], epoch))
    run = (dx1 - dx0 + 200.0) / FLIGHT_SPEED + TURN_SECONDS
    d_strip = density / (2 * SWATH_HALF / STRIP_SPACING)
    xs, ys, ts, ks = [], [], [], []
    strips = _strips(tile, city.bounds)
    for j, k in enumerate(strips):
        yk = dy0 + (k + 0.5) * STRIP_SPACING
        x, y, t = _scan_strip(rng, tile, k, yk, d_strip, dx0, dx1, t0 + (k + 1) * run)
        xs.append(x)
        ys.append(y)
        ts.append(t)
        ks.append(np.full(len(x), j, dtype=np.int16))
    x, y, t = (np.concatenate(a) for a in (xs, ys, ts))
    strip_of = np.concatenate(ks)
    yk_of = np.array([dy0 + (k + 0.5) * STRIP_SPACING for k in strips])
    psid_of = np.array([100 * (epoch + 1) + k + 2 for k in strips], dtype=np.uint16)
    n = len(x)
    tan_scan = (y - yk_of[strip_of]) / FLIGHT_ALTITUDE

    zg = city.terrain(x, y)
    z = zg + rng.normal(0.0, 0.02, n)
    cls = np.full(n, 2, dtype=np.uint8)
    res = 1.0
    lc = landcover_raster(city, tile.bounds, res, epoch)
    col = np.clip(((x - tile.x0) / res).astype(np.int64), 0, lc.shape[1] - 1)
    row = np.clip(((tile.y1 - y) / res).astype(np.int64), 0, lc.shape[0] - 1)
    mat = lc[row, col].astype(np.uint8)
    owner = np.full(n, -1, dtype=np.int32)  # >= 0 structure, -2 wall, -3 car, -4 tree
    index = PointIndex(x, y, tile.bounds)

    # buildings
    present = [i for i in city.structures_in(tile.bounds, 0.5) if city.structures[i].present[epoch]]
    for i in present:
        s = city.structures[i]
        idx = index.query(*s.geom.bounds)
        if not len(idx):
            continue
        sel = idx[shapely.contains_xy(s.geom, x[idx], y[idx])]
        if not len(sel):
            continue
        z[sel] = (
            s.base + roof_height(s.roof_in(epoch), s.edges, x[sel], y[sel]) + rng.normal(0.0, 0.03, len(sel))
        )
        cls[sel] = 20
        mat[sel] = MAT_ROOF[s.material]
        owner[sel] = i
    for i in present:
        s = city.structures[i]
        bx0, by0, bx1, by1 = s.geom.bounds
        idx = index.query(bx0 - 0.35, by0 - 0.35, bx1 + 0.35, by1 + 0.35)
        idx = idx[owner[idx] == -1]
        if not len(idx):
            continue
        band = s.geom.buffer(0.3, join_style="mitre")
        sel = idx[shapely.contains_xy(band, x[idx], y[idx])]
        sel = sel[rng.random(len(sel)) < 0.35]
        eave = s.base + s.roof_in(epoch).eave
        z[sel] = zg[sel] + rng.random(len(sel)) * np.maximum(eave - zg[sel], 0.0)
        cls[sel] = 20
        mat[sel] = MAT_WALL
        owner[sel] = -2

    # cars
    c = city.cars[epoch]
    inb = np.flatnonzero(
        (c.x > tile.x0 - 3) & (c.x < tile.x1 + 3) & (c.y > tile.y0 - 3) & (c.y < tile.y1 + 3)
    )
    for k in inb:
        idx = index.query(c.x[k] - 3, c.y[k] - 3, c.x[k] + 3, c.y[k] + 3)
        idx = idx[owner[idx] == -1]
        ddx, ddy = x[idx] - c.x[k], y[idx] - c.y[k]
        along = ddx * c.ux[k] + ddy * c.uy[k]
        across = -ddx * c.uy[k] + ddy * c.ux[k]
        m = (np.abs(along) < c.length[k] / 2) & (np.abs(across) < c.width[k] / 2)
        sel = idx[m]
        h = np.where(np.abs(along[m]) < 0.3 * c.length[k], c.height[k], 0.62 * c.height[k])
        z[sel] = zg[sel] + h + rng.normal(0.0, 0.03, len(sel))
        cls[sel] = 20
        mat[sel] = MAT_CAR
        owner[sel] = -3

    # trees: first return near the crown top, up to three returns
    tr = city.trees
    tsel = np.flatnonzero(
        (tr.x + tr.radius > tile.x0)
        & (tr.x - tr.radius < tile.x1)
        & (tr.y + tr.radius > tile.y0)
        & (tr.y - tr.radius < tile.y1)
    )
    tree_id = np.full(n, -1, dtype=np.int32)
    nret = np.ones(n, dtype=np.uint8)
    if len(tsel):
        ground_at_trunk = city.terrain(tr.x[tsel], tr.y[tsel])
        for k, g0 in zip(tsel, ground_at_trunk, strict=True):
            r = tr.radius[k]
            idx = index.query(tr.x[k] - r, tr.y[k] - r, tr.x[k] + r, tr.y[k] + r)
            idx = idx[(owner[idx] == -1) | (owner[idx] == -3) | (owner[idx] == -4)]
            rho2 = ((x[idx] - tr.x[k]) ** 2 + (y[idx] - tr.y[k]) ** 2) / (r * r)
            m = rho2 < 1.0
            idx, rho2 = idx[m], rho2[m]
            hit = rng.random(len(idx)) < 0.92 - 0.35 * rho2
            idx, rho2 = idx[hit], rho2[hit]
            a = (tr.top[k] - tr.crown_base[k]) / 2
            bottom = g0 + tr.crown_base[k]
            surface = bottom + a + a * np.sqrt(1.0 - rho2)
            z1 = np.maximum(surface - rng.exponential(0.4, len(idx)), bottom)
            up = z1 > z[idx]
            idx, z1 = idx[up], z1[up]
            z[idx] = z1
            cls[idx] = 20
            mat[idx] = MAT_TREE
            owner[idx] = -4
            tree_id[idx] = k
            nret[idx] = rng.choice(np.array([1, 2, 3], dtype=np.uint8), size=len(idx), p=[0.25, 0.5, 0.25])

    # water: specular, most pulses return nothing
    keep = np.ones(n, dtype=bool)
    tb = shapely.box(*tile.bounds)
    for pond, level in city.ponds:
        if not pond.intersects(tb):
            continue
        idx = index.query(*pond.bounds)
        idx = idx[owner[idx] == -1]
        sel = idx[shapely.contains_xy(pond, x[idx], y[idx])]
        z[sel] = level + rng.normal(0.0, 0.015, len(sel))
        cls[sel] = 9
        mat[sel] = 4
        keep[sel[rng.random(len(sel)) >= 0.3]] = False

    # noise and leftovers
    n_hi, n_lo = rng.poisson(1.5e-5 * n), rng.poisson(1.5e-5 * n)
    hi = rng.choice(n, size=min(n_hi, n), replace=False)
    z[hi] += rng.uniform(40.0, 250.0, len(hi))
    cls[hi] = 18
    lo = rng.choice(n, size=min(n_lo, n), replace=False)
    z[lo] -= rng.uniform(1.5, 12.0, len(lo))
    cls[lo] = 1
    ng = np.flatnonzero(cls == 20)
    cls[ng[rng.random(len(ng)) < 5e-4]] = 1

    intensity = _INTENSITY[mat, 0] + _INTENSITY[mat, 1] * rng.standard_normal(n)

    # extra returns under trees
    multi = np.flatnonzero((tree_id >= 0) & (nret >= 2) & keep)
    k_of = tree_id[multi]
    bottom = city.terrain(tr.x[k_of], tr.y[k_of]) + tr.crown_base[k_of] if len(multi) else np.zeros(0)
    mid = multi[nret[multi] == 3]
    mid_bottom = bottom[nret[multi] == 3]
    z_mid = mid_bottom + rng.random(len(mid)) * np.maximum(z[mid] - 0.3 - mid_bottom, 0.0)
    y2 = np.floor((y[multi] + (z[multi] - zg[multi]) * tan_scan[multi]) * 100.0) / 100.0
    under = (
        ((x[multi] - tr.x[k_of]) ** 2 + (y2 - tr.y[k_of]) ** 2 < tr.radius[k_of] ** 2)
        & (y2 >= tile.y0)
        & (y2 < tile.y1)
    )
    gsel = multi[under]
    y2 = y2[under]
    zg2 = city.terrain(x[gsel], y2) + rng.normal(0.0, 0.02, len(gsel))

    first = np.flatnonzero(keep)
    out = {
        "x": np.concatenate([x[first], x[mid], x[gsel]]),
        "y": np.concatenate([y[first], y[mid], y2]),
        "z": np.concatenate([z[first], z_mid, zg2]),
        "gps_time": np.concatenate([t[first], t[mid], t[gsel]]),
        "intensity": np.concatenate(
            [intensity[first], 0.55 * intensity[mid], rng.normal(1300.0, 300.0, len(gsel))]
        ),
        "return_number": np.concatenate(
            [np.ones(len(first), np.uint8), np.full(len(mid), 2, np.uint8), nret[gsel]]
        ),
        "number_of_returns": np.concatenate([nret[first], nret[mid], nret[gsel]]),
        "classification": np.concatenate(
            [cls[first], np.full(len(mid), 20, np.uint8), np.full(len(gsel), 2, np.uint8)]
        ),
        "scan_angle_rank": np.concatenate(
            [np.rint(np.degrees(np.arctan(tan_scan[a]))) for a in (first, mid, gsel)]
        ).astype(np.int8),
        "point_source_id": psid_of[np.concatenate([strip_of[first], strip_of[mid], strip_of[gsel]])],
    }
    out["intensity"] = np.clip(np.rint(out["intensity"]), 0, 65535).astype(np.uint16)
    # stable: returns of one pulse share the GPS time and were concatenated in return order
    order = np.argsort(out["gps_time"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def crs_vlrs() -> list:
    """GeoKeyDirectory (projected 25832 + vertical 7837) and an OGC WKT1 VLR of the compound CRS."""
    crs = pyproj.CRS(COMPOUND_CRS)
    gk = GeoKeyDirectoryVlr()
    keys = [(1024, 1), (1025, 1), (3072, 25832), (3076, 9001), (4096, 7837), (4099, 9001)]
    gk.geo_keys = [GeoKeyEntryStruct(kid, 0, 1, val) for kid, val in keys]
    gk.geo_keys_header.number_of_keys = len(keys)
    return [gk, WktCoordinateSystemVlr(crs.to_wkt(WktVersion.WKT1_GDAL))]


def write_las(
    path: Path,
    pts: dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]],
    *,
    version: str,
    point_format: int,
    offsets: tuple[float, float, float],
    day: dt.date,
    system_identifier: str,
) -> int:
    """Write a LAS/LAZ file atomically (temporary file in the same folder, then one rename); `pts` is
    one dict of columns or an iterable of them (pieces written in turn: memory is one piece, the bytes
    are those of writing their concatenation at once). Returns the number of points written."""
    header = laspy.LasHeader(version=version, point_format=point_format)
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array(offsets)
    header.creation_date = day
    header.system_identifier = system_identifier
    header.generating_software = "ruhrtwin demo generator"
    header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    vlrs = crs_vlrs()
    if point_format >= 6:  # LAS 1.4 point formats 6-10 require WKT and no GeoTIFF keys
        vlrs = vlrs[1:]
        header.global_encoding.wkt = True
    for v in vlrs:
        header.vlrs.append(v)
    pieces = [pts] if isinstance(pts, dict) else pts
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # laspy picks LAZ from the suffix
    count = 0
    try:
        with laspy.LasWriter(
            open(tmp, "wb"),
            header,
            do_compress=path.suffix.lower() == ".laz",
            laz_backend=LazBackend.LazrsParallel,
        ) as writer:
            for piece in pieces:
                las = laspy.LasData(header)
                las.x = piece["x"]
                las.y = piece["y"]
                las.z = piece["z"]
                for name, arr in piece.items():
                    if name not in ("x", "y", "z"):
                        las[name] = arr
                writer.write_points(las.points)
                count += len(las.points)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return count


def write_aerial_tile(path: Path, pts: dict[str, np.ndarray], tile: Tile, city: City, epoch: int) -> None:
    write_las(
        path,
        pts,
        version="1.2",
        point_format=1,
        offsets=(tile.x0, tile.y0, 0.0),
        day=flight_datetime(city.epochs[epoch], epoch).date(),
        system_identifier="RuhrTwin demo ALS",
    )
