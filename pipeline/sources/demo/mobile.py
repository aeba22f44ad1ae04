"""GeoSmartChange stand-in: mobile-mapping scans along the streets and the panorama recording list.

* One vehicle track per street (right-hand lane, 1.8 m right of the centreline), driven one after the
  other at 8 m/s in the second epoch's summer. Two profile scanners (left/right) 2.6 m above the road sweep
  planes perpendicular to the track: every return is a ray at a random elevation angle (-75..+70 degrees)
  that stops at the first thing it meets: the terrain, a building facade (up to the eave), or a tree crown.
  Rays that pass over the eaves or reach beyond 30 m lateral range give no return. The sidewalks stand
  KERB_HEIGHT (0.12 m) above the carriageway in these scans (a kerb the aerial terrain does not model);
  two streets have a 20 m kerb extension that leaves 2.3 m of carriageway (`narrowings`). Uniform angles make
  the density fall off with distance: very dense corridors along the tracks, sparse at 30 m.
* Files ``mobile/gsc_<epoch>_<tile stem>.laz`` on the aerial tile grid: LAS 1.4, point format 7 (RGB,
  GPS time), classes ASPRS 1 unclassified, 2 ground, 5 high vegetation, 6 building (facades),
  point source id = ``2 * track + channel`` (channel 1 left, 2 right scanner), scan angle = elevation
  angle, CRS as WKT (EPSG:25832+7837). Points are cut exactly at the tile bounds.
* ``mobile/panoramas.csv``: ``time,x,y,z,heading,image_id`` every 5 m along every track; time is
  adjusted standard GPS time (the same time base as the scans), z the camera centre (2.5 m above
  the road, DHHN2016), heading in degrees clockwise from grid north.

Generation is tile by tile: a track is cut into 25 m chunks, each with its own random stream
(seed, track, chunk), so a chunk regenerated for a neighbouring tile yields the same points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from pipeline.sources.demo.city import City, Street, epoch_year
from pipeline.sources.demo.grid import Tile
from pipeline.sources.demo.points import adjusted_gps_time, write_las
from pipeline.sources.demo.rasters import LANDCOVER_RGBI, landcover_raster

SPEED = 8.0
SENSOR_HEIGHT = 2.6
CAMERA_HEIGHT = 2.5
RANGE = 30.0
CHUNK = 25.0
LANE_OFFSET = 1.8
PANORAMA_STEP = 5.0
PROFILE_STEP = 0.05  # 160 profiles per second at 8 m/s
KERB_HEIGHT = 0.12  # sidewalks stand this much above the carriageway (mobile scans only)
NARROWING_WIDTH = 2.3  # carriageway left at a kerb extension (too narrow for a 2.55 m vehicle)
NARROWING_LENGTH = 20.0
_RASTER_RES = 0.25
_STEP = 0.25  # marching step along a profile
_KEEP_FRACTION = 0.55  # share of rays that return something (for the rate calibration)
PIECE_POINTS = 1_000_000  # returns per piece handed to the LAZ writer (bounds the generator's memory)

FACADE_COLOURS = np.array(
    [[222, 208, 182], [236, 234, 226], [168, 84, 62], [150, 150, 146], [198, 170, 128], [120, 60, 50]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Track:
    tid: int
    name: str
    x0: float
    y0: float
    ux: float
    uy: float
    length: float
    t_start: float

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x0 + s * self.ux, self.y0 + s * self.uy


def tracks(city: City) -> list[Track]:
    """One track per street, right-hand lane, driven one after another."""
    when = dt.datetime(epoch_year(city.epochs[1], 1), 6, 10, 8, 0, tzinfo=dt.UTC)
    t = adjusted_gps_time(when)
    out: list[Track] = []
    for st in city.streets:
        (ax, ay), (bx, by) = st.line
        if (bx - ax) + (by - ay) < 0:  # drive east / north
            ax, ay, bx, by = bx, by, ax, ay
        length = float(np.hypot(bx - ax, by - ay))
        ux, uy = (bx - ax) / length, (by - ay) / length
        # right-hand lane: offset to the right of the driving direction
        x0, y0 = ax + LANE_OFFSET * uy, ay - LANE_OFFSET * ux
        out.append(Track(len(out), st.name, x0, y0, ux, uy, length, t))
        t += length / SPEED + 90.0
    return out


def track_length(city: City) -> float:
    return float(sum(t.length for t in tracks(city)))


def panoramas(city: City) -> list[tuple[float, float, float, float, float, str]]:
    """Rows of ``panoramas.csv``: (time, x, y, z, heading, image_id)."""
    return [row for _tid, row in panorama_records(city)]


def panorama_records(city: City) -> list[tuple[int, tuple[float, float, float, float, float, str]]]:
    """(track id, row) of every panorama, in file order."""
    year = epoch_year(city.epochs[1], 1)
    rows = []
    for tr in tracks(city):
        s = np.arange(0.0, tr.length, PANORAMA_STEP)
        x, y = tr.at(s)
        z = city.terrain(x, y) + CAMERA_HEIGHT
        heading = float(np.degrees(np.arctan2(tr.ux, tr.uy)) % 360.0)
        x0, y0, x1, y1 = city.bounds
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        for i in np.flatnonzero(inside):
            rows.append(
                (
                    tr.tid,
                    (
                        tr.t_start + s[i] / SPEED,
                        float(x[i]),
                        float(y[i]),
                        float(z[i]),
                        heading,
                        f"GSC{year}_{tr.tid:04d}_{i:05d}",
                    ),
                )
            )
    return rows


def write_panoramas(path: Path, rows: list[tuple[float, float, float, float, float, str]]) -> None:
    lines = ["time,x,y,z,heading,image_id"]
    lines += [f"{t:.3f},{x:.3f},{y:.3f},{z:.3f},{h:.2f},{iid}" for t, x, y, z, h, iid in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _segment_range(tr: Track, box: tuple[float, float, float, float]) -> tuple[float, float] | None:
    line = shapely.LineString([(tr.x0, tr.y0), (tr.x0 + tr.length * tr.ux, tr.y0 + tr.length * tr.uy)])
    part = line.intersection(shapely.box(*box))
    if part.is_empty:
        return None
    c = shapely.get_coordinates(part)
    s = (c[:, 0] - tr.x0) * tr.ux + (c[:, 1] - tr.y0) * tr.uy
    return float(s.min()), float(s.max())


def simulate_mobile(
    city: City,
    tile: Tile,
    all_tracks: list[Track],
    rate_per_m: float,
    seed: int,
    piece_points: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Mobile-mapping returns inside one tile (epoch 2 scene) in GPS-time order, in pieces of about
    `piece_points` (default PIECE_POINTS; nothing when no track comes near).

    The tile's returns in GPS-time order are the stable time sort of the 25 m chunks' returns in
    (track, chunk) order. A chunk's returns are no earlier than its lower bound (`_chunk_start_time`),
    so once a chunk is made, every return before the smallest bound of the chunks still to come is
    final: it is sorted (with the returns held back so far, stable) and handed on. The pieces'
    concatenation is that global sort; memory is about one piece plus one chunk, whatever the tile's
    point count."""
    margin = RANGE + 1.0
    ext = (tile.x0 - margin, tile.y0 - margin, tile.x1 + margin, tile.y1 + margin)
    near = [(tr, r) for tr in all_tracks if (r := _segment_range(tr, ext)) is not None]
    if not near:
        return
    piece_points = PIECE_POINTS if piece_points is None else piece_points
    # obstacle raster: building ids (index + 1) of the epoch-2 scene around the tile
    ex0 = np.floor(ext[0] / _RASTER_RES) * _RASTER_RES
    ey1 = np.ceil(ext[3] / _RASTER_RES) * _RASTER_RES
    w = int(np.ceil((ext[2] - ex0) / _RASTER_RES))
    h = int(np.ceil((ey1 - ext[1]) / _RASTER_RES))
    transform = Affine(_RASTER_RES, 0.0, ex0, 0.0, -_RASTER_RES, ey1)
    ids = [i for i in city.structures_in(ext) if city.structures[i].present[1]]
    label = (
        rasterize(
            [(city.structures[i].geom, i + 1) for i in ids],
            out_shape=(h, w),
            transform=transform,
            dtype="int32",
        )
        if ids
        else np.zeros((h, w), dtype=np.int32)
    )
    nstruct = len(city.structures)
    top = np.zeros(nstruct + 1)
    base = np.zeros(nstruct + 1)
    fac_col = np.zeros((nstruct + 1, 3))
    for i in ids:
        st = city.structures[i]
        top[i + 1] = st.base + st.roof_in(1).eave
        base[i + 1] = st.base
        fac_col[i + 1] = FACADE_COLOURS[(i * 7919) % len(FACADE_COLOURS)]
    lc = landcover_raster(city, ext, 1.0, 1)
    lc_col = np.zeros((256, 3))
    for k, v in LANDCOVER_RGBI.items():
        lc_col[k] = v[:3]
    tr_ = city.trees
    steps = np.arange(1, int(RANGE / _STEP) + 1) * _STEP
    narrow = narrowings(city)

    chunks = [(tr, k) for tr, (s_lo, s_hi) in near for k in range(int(s_lo // CHUNK), int(s_hi // CHUNK) + 1)]
    # later[j]: no return of the chunks after j is earlier than this
    bounds = np.array([_chunk_start_time(tr, k) for tr, k in chunks] + [np.inf])
    later = np.minimum.accumulate(bounds[::-1])[::-1][1:]
    held: list[dict[str, np.ndarray]] = []  # returns made, not yet final (a sorted one + the new chunk)
    ready: list[dict[str, np.ndarray]] = []  # final returns in order, not yet handed on
    nready = 0
    for j, (tr, k) in enumerate(chunks):
        if held:
            # the returns made so far that no later chunk can precede, in (time, order made) order
            t = np.concatenate([h["gps_time"] for h in held])
            order = np.argsort(t, kind="stable")
            cut = int(np.searchsorted(t[order], later[j - 1], side="left"))
            merged = {key: np.concatenate([h[key] for h in held])[order] for key in held[0]}
            if cut:
                ready.append({key: v[:cut] for key, v in merged.items()})
                nready += cut
            held = [{key: v[cut:] for key, v in merged.items()}] if cut < len(t) else []
            if nready >= piece_points:
                yield _concat(ready)
                ready, nready = [], 0
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, tr.tid, k]))
        n = int(rng.poisson(rate_per_m * CHUNK / _KEEP_FRACTION))
        s = k * CHUNK + rng.random(n) * CHUNK
        side = rng.integers(0, 2, n)
        phi = np.deg2rad(rng.uniform(-75.0, 70.0, n))
        penetrate = rng.exponential(0.3, n)
        noise = rng.normal(0.0, 0.01, n)
        unclassified = rng.random(n) < 1e-3
        ok = (s >= 0) & (s <= tr.length)
        s, side, phi, penetrate, noise = s[ok], side[ok], phi[ok], penetrate[ok], noise[ok]
        unclassified = unclassified[ok]
        if not len(s):
            continue
        sign = np.where(side == 0, 1.0, -1.0)  # +1 left, -1 right of the driving direction
        nx, ny = -tr.uy * sign, tr.ux * sign
        px, py = tr.at(s)
        zs = city.terrain(px, py) + SENSOR_HEIGHT
        # first building along each profile, sampled every 0.5 m of track
        s_samp = k * CHUNK + (np.arange(int(CHUNK / 0.5)) + 0.5) * 0.5
        sx, sy = tr.at(s_samp)
        db = np.full((2, len(s_samp)), np.inf)
        bid = np.zeros((2, len(s_samp)), dtype=np.int64)
        for j, sg in enumerate((1.0, -1.0)):
            mx = sx[:, None] + steps[None, :] * (-tr.uy * sg)
            my = sy[:, None] + steps[None, :] * (tr.ux * sg)
            col = ((mx - ex0) / _RASTER_RES).astype(np.int64)
            row = ((ey1 - my) / _RASTER_RES).astype(np.int64)
            inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
            lab = np.where(inside, label[np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)], 0)
            hit = lab > 0
            first = np.argmax(hit, axis=1)
            anyhit = hit.any(axis=1)
            db[j] = np.where(anyhit, steps[first] - _STEP / 2, np.inf)
            bid[j] = np.where(anyhit, lab[np.arange(len(s_samp)), first], 0)
        si = np.clip(((s - k * CHUNK) / 0.5).astype(np.int64), 0, len(s_samp) - 1)
        d_b = db[side, si]
        b_id = bid[side, si]
        tan_phi = np.tan(phi)
        d_g = np.where(phi < 0, SENSOR_HEIGHT / np.maximum(-tan_phi, 1e-6), np.inf)
        # trees: ray / ellipsoid intersection in the profile plane
        d_t = np.full(len(s), np.inf)
        tsel = np.flatnonzero(
            (
                np.abs((tr_.x - tr.x0) * tr.ux + (tr_.y - tr.y0) * tr.uy - (k + 0.5) * CHUNK)
                < CHUNK / 2 + tr_.radius
            )
            & (np.abs(-(tr_.x - tr.x0) * tr.uy + (tr_.y - tr.y0) * tr.ux) < RANGE + tr_.radius)
        )
        for q in tsel:
            ds = (tr_.x[q] - px) * tr.ux + (tr_.y[q] - py) * tr.uy
            f = 1.0 - (ds / tr_.radius[q]) ** 2
            m = f > 0
            if not m.any():
                continue
            a = (tr_.top[q] - tr_.crown_base[q]) / 2
            zc = city.terrain(tr_.x[q], tr_.y[q]) + tr_.crown_base[q] + a
            dc = (tr_.x[q] - px) * nx + (tr_.y[q] - py) * ny
            rr = tr_.radius[q] * np.sqrt(np.where(m, f, 1.0))
            aa = a * np.sqrt(np.where(m, f, 1.0))
            cphi, sphi = np.cos(phi), np.sin(phi)
            # ((t cos - dc)/rr)^2 + ((zs + t sin - zc)/aa)^2 = 1
            qa = (cphi / rr) ** 2 + (sphi / aa) ** 2
            qb = 2 * (-dc * cphi / rr**2 + (zs - zc) * sphi / aa**2)
            qc = (dc / rr) ** 2 + ((zs - zc) / aa) ** 2 - 1.0
            disc = qb * qb - 4 * qa * qc
            hit = m & (disc > 0)
            t1 = np.where(hit, (-qb - np.sqrt(np.where(hit, disc, 0.0))) / (2 * qa), np.inf)
            t1 = np.where(t1 > 0, t1, np.inf)
            d_t = np.minimum(d_t, t1 * cphi)
        d_hit = np.minimum(np.minimum(d_g, d_b), d_t)
        kind = np.where(d_hit == d_t, 5, np.where(d_hit == d_b, 6, 2))
        z_at = zs + d_hit * tan_phi
        valid = np.isfinite(d_hit) & (d_hit <= RANGE)
        valid &= ~((kind == 6) & (z_at > top[b_id]))  # ray passes over the eave: no return
        d_hit = np.where(kind == 5, d_hit + penetrate * np.cos(phi), d_hit)
        x = px + d_hit * nx
        y = py + d_hit * ny
        valid &= (x >= tile.x0) & (x < tile.x1) & (y >= tile.y0) & (y < tile.y1)
        if not valid.any():
            continue
        sel = np.flatnonzero(valid)
        x, y, kind = np.floor(x[sel] * 100) / 100, np.floor(y[sel] * 100) / 100, kind[sel]
        zg = city.terrain(x, y) + sidewalk_raise(city, x, y, narrow)
        z = np.where(kind == 2, zg, np.maximum(zs[sel] + d_hit[sel] * tan_phi[sel], zg)) + noise[sel]
        # colours
        col = np.clip(((x - ex0) / 1.0).astype(np.int64), 0, lc.shape[1] - 1)
        row = np.clip(((ey1 - y) / 1.0).astype(np.int64), 0, lc.shape[0] - 1)
        rgb = lc_col[lc[row, col]]
        fac = kind == 6
        if fac.any():
            b = b_id[sel][fac]
            rel = z[fac] - base[b]
            window = ((rel % 3.0) > 1.0) & ((rel % 3.0) < 2.3) & ((s[sel][fac] % 2.6) < 1.4)
            rgb[fac] = fac_col[b] * np.where(window, 0.35, 1.0)[:, None]
        veg = kind == 5
        rgb[veg] = np.array([52.0, 96.0, 44.0]) * (0.8 + 0.4 * rng.random(veg.sum()))[:, None]
        cls = np.where(unclassified[sel], 1, kind).astype(np.uint8)
        intensity = np.where(kind == 2, 1400, np.where(kind == 6, 2200, 900)) + rng.normal(0, 200, len(sel))
        held.append(
            {
                "x": x,
                "y": y,
                "z": z,
                "gps_time": profile_time(tr, s[sel], side[sel], phi[sel]),
                "classification": cls,
                "point_source_id": (2 * tr.tid + 1 + side[sel]).astype(np.uint16),
                "scan_angle": np.rint(np.degrees(phi[sel]) / 0.006).astype(np.int16),
                "intensity": np.clip(np.rint(intensity), 0, 65535).astype(np.uint16),
                "red": (np.clip(rgb[:, 0], 0, 255) * 257).astype(np.uint16),
                "green": (np.clip(rgb[:, 1], 0, 255) * 257).astype(np.uint16),
                "blue": (np.clip(rgb[:, 2], 0, 255) * 257).astype(np.uint16),
            }
        )
    if held:
        t = np.concatenate([h["gps_time"] for h in held])
        order = np.argsort(t, kind="stable")
        ready.append({key: np.concatenate([h[key] for h in held])[order] for key in held[0]})
        nready += len(t)
    if nready:
        yield _concat(ready)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _chunk_start_time(tr: Track, k: int) -> float:
    """A lower bound of the GPS times of chunk k's returns on track `tr`: `profile_time` at the chunk's
    start, left scanner, lowest elevation angle (the same float operations, each monotonic in its
    inputs, so no return of the chunk can round below it)."""
    return float(profile_time(tr, np.array([k * CHUNK]), np.array([0]), np.array([np.deg2rad(-75.0)]))[0])


def driving_line(st: Street) -> tuple[float, float, float, float, float]:
    """(ax, ay, ux, uy, length) of a street's centreline in its driving direction (east / north)."""
    (ax, ay), (bx, by) = st.line
    if (bx - ax) + (by - ay) < 0:
        ax, ay, bx, by = bx, by, ax, ay
    length = float(np.hypot(bx - ax, by - ay))
    return ax, ay, (bx - ax) / length, (by - ay) / length, length


def narrowings(city: City) -> list[tuple[int, float, float, float]]:
    """Kerb extensions (the left sidewalk widened into the carriageway, leaving NARROWING_WIDTH of road)
    on the first two streets that have a NARROWING_LENGTH stretch at least 10 m from any junction and
    the district edge: (index into city.streets, s0, s1, left kerb offset from the centreline), s along
    the driving line. They exist in the mobile scans only (the land cover still shows asphalt)."""
    out: list[tuple[int, float, float, float]] = []
    district = shapely.box(*city.bounds).buffer(-2.0)
    for i, st in enumerate(city.streets):
        ax, ay, ux, uy, length = driving_line(st)
        for s0 in np.arange(15.0, length - NARROWING_LENGTH - 10.0, 10.0):
            s = np.arange(s0 - 10.0, s0 + NARROWING_LENGTH + 10.0, 1.0)
            x, y = ax + s * ux, ay + s * uy
            ok = all(
                shapely.contains_xy(district, x + k * st.width / 2 * -uy, y + k * st.width / 2 * ux).all()
                for k in (-1.0, 1.0)
            )
            for other in city.streets:
                if other is st or not ok:
                    continue
                oax, oay, oux, ouy, _ = driving_line(other)
                od = np.abs(-(x - oax) * ouy + (y - oay) * oux)
                ok = bool(np.all(od > other.width / 2 + 2.0))
            if ok:
                out.append(
                    (i, float(s0), float(s0 + NARROWING_LENGTH), -st.carriageway / 2 + NARROWING_WIDTH)
                )
                break
        if len(out) == 2:
            break
    return out


def sidewalk_raise(
    city: City, x: np.ndarray, y: np.ndarray, narrow: list[tuple[int, float, float, float]] | None = None
) -> np.ndarray:
    """Height of the kerbed sidewalks above the terrain at (x, y): KERB_HEIGHT on a street's sidewalk
    band (between carriageway edge and street parcel edge) and on the kerb extensions (`narrowings`),
    0 elsewhere and on every carriageway."""
    sidewalk = np.zeros(len(x), dtype=bool)
    carriageway = np.zeros(len(x), dtype=bool)
    for st in city.streets:
        (ax, ay), (bx, by) = st.line
        length = float(np.hypot(bx - ax, by - ay))
        d = np.abs(-(x - ax) * (by - ay) / length + (y - ay) * (bx - ax) / length)
        carriageway |= d < st.carriageway / 2
        sidewalk |= d < st.width / 2
    extension = np.zeros(len(x), dtype=bool)
    for i, s0, s1, kerb in narrowings(city) if narrow is None else narrow:
        st = city.streets[i]
        ax, ay, ux, uy, _ = driving_line(st)
        s = (x - ax) * ux + (y - ay) * uy
        d = -(x - ax) * uy + (y - ay) * ux
        extension |= (s >= s0) & (s < s1) & (d >= kerb) & (d < st.width / 2)
    return np.where((sidewalk & ~carriageway) | extension, KERB_HEIGHT, 0.0)


def profile_time(tr: Track, s: np.ndarray, side: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """GPS time of a return: profiles every PROFILE_STEP m along the track, swept by angle within."""
    line = np.floor(s / PROFILE_STEP)
    sweep = 0.5 * side + 0.5 * (phi + np.deg2rad(75.0)) / np.deg2rad(145.0)
    return tr.t_start + (line + sweep) * (PROFILE_STEP / SPEED)


def write_mobile_tile(
    path: Path, pts: dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]], tile: Tile, city: City
) -> int:
    """Write one tile's returns (one dict or pieces in order, see `simulate_mobile`); the point count."""
    return write_las(
        path,
        pts,
        version="1.4",
        point_format=7,
        offsets=(tile.x0, tile.y0, 0.0),
        day=dt.date(epoch_year(city.epochs[1], 1), 6, 10),
        system_identifier="RuhrTwin demo MMS",
    )
