"""Truth of the street space for the mobile scans: ``truth/street_space.csv``.

One row per street and 0.5 m station along its centreline, in the direction its scan track is driven
(east / north, see mobile.tracks), with the centreline point ``x, y`` at the station's middle:

=========================  ===========================================================================
column                     meaning
=========================  ===========================================================================
street, track              street name and its track number (mobile.tracks)
s                          station (m) from the street's start, the middle of the 0.5 m slice
x, y                       centreline point
carriageway_width_m        kerb to kerb (the sidewalks stand mobile.KERB_HEIGHT above the carriageway;
                           2.3 m at the kerb extensions of mobile.narrowings)
sidewalk_left_width_m      kerb to street parcel edge, left / right of the driving direction
sidewalk_right_width_m
junction                   1 where the slice (with 1 m margin) touches another street's parcel band or
                           the cross-section (street width + 1 m) leaves the district: widths there
                           are not the street's
clearance_m                lowest tree crown underside above the carriageway within the slice, at least
                           MIN_OVERHEAD_M above the terrain (empty: nothing overhead)
clearance_inner_m          the same over the carriageway narrowed by INNER_M (0.25 m) on both sides:
                           where it differs, the clearance hinges on the exact kerb line (a crown edge)
=========================  ===========================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely

from pipeline.sources.demo.city import City
from pipeline.sources.demo.mobile import narrowings, tracks

STATION_M = 0.5
MIN_OVERHEAD_M = 2.0
INNER_M = 0.25
_GRID = 0.05


def street_space_truth(city: City) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    tr_ = city.trees
    district = shapely.box(*city.bounds)
    by_name = {t.name: t for t in tracks(city)}
    narrow = narrowings(city)
    for si, st in enumerate(city.streets):
        track = by_name.get(st.name)
        if track is None:
            continue
        (ax, ay), (bx, by) = st.line
        if (bx - ax) + (by - ay) < 0:
            ax, ay, bx, by = bx, by, ax, ay
        length = float(np.hypot(bx - ax, by - ay))
        ux, uy = (bx - ax) / length, (by - ay) / length
        n = int(np.floor(length / STATION_M))
        s = (np.arange(n) + 0.5) * STATION_M
        x, y = ax + s * ux, ay + s * uy
        # junctions: other streets' bands, and cross-sections leaving the district
        junction = np.zeros(n, dtype=bool)
        for other in city.streets:
            if other is st:
                continue
            (oax, oay), (obx, oby) = other.line
            ol = float(np.hypot(obx - oax, oby - oay))
            od = np.abs(-(x - oax) * (oby - oay) / ol + (y - oay) * (obx - oax) / ol)
            junction |= od < other.width / 2 + 1.0 + STATION_M
        half = st.width / 2 + 1.0
        for sg in (1.0, -1.0):
            ex, ey = x - sg * half * uy, y + sg * half * ux
            junction |= ~shapely.contains_xy(district, ex, ey)
        # the left kerb per station (a kerb extension moves it inwards)
        cw = st.carriageway
        left_kerb = np.full(n, cw / 2)
        for i_st, s0, s1, kerb in narrow:
            if i_st == si:
                left_kerb[(s >= s0) & (s < s1)] = kerb
        # clearance: tree crown undersides over the carriageway, sampled on a 5 cm grid
        clear = np.full(n, np.inf)
        inner = np.full(n, np.inf)  # the same on the carriageway narrowed by INNER_M on both sides
        for q in range(len(tr_.x)):
            ds = (tr_.x[q] - ax) * ux + (tr_.y[q] - ay) * uy
            dc = -(tr_.x[q] - ax) * uy + (tr_.y[q] - ay) * ux
            r = tr_.radius[q]
            if abs(dc) - r >= cw / 2:
                continue
            gs = np.arange(max(0.0, ds - r), min(length, ds + r), _GRID) + _GRID / 2
            gd = np.arange(-cw / 2, cw / 2, _GRID) + _GRID / 2
            S, D = np.meshgrid(gs, gd, indexing="ij")
            rho2 = ((S - ds) ** 2 + (D - dc) ** 2) / r**2
            m = rho2 < 1.0
            if not m.any():
                continue
            S, D, rho2 = S[m], D[m], rho2[m]
            a = (tr_.top[q] - tr_.crown_base[q]) / 2
            zc = city.terrain(tr_.x[q], tr_.y[q]) + tr_.crown_base[q] + a
            kerb_at = left_kerb[np.clip((S / STATION_M).astype(np.int64), 0, n - 1)]
            on_road = kerb_at - D > 0
            S, D, rho2, kerb_at = S[on_road], D[on_road], rho2[on_road], kerb_at[on_road]
            px, py = ax + S * ux - D * uy, ay + S * uy + D * ux
            h = zc - a * np.sqrt(1.0 - rho2) - city.terrain(px, py)
            ok = h >= MIN_OVERHEAD_M
            idx = np.clip((S[ok] / STATION_M).astype(np.int64), 0, n - 1)
            np.minimum.at(clear, idx, h[ok])
            ok &= (D + cw / 2 > INNER_M) & (kerb_at - D > INNER_M)
            idx = np.clip((S[ok] / STATION_M).astype(np.int64), 0, n - 1)
            np.minimum.at(inner, idx, h[ok])
        side = (st.width - cw) / 2
        right_kerb = -cw / 2
        for i in range(n):
            rows.append(
                {
                    "street": st.name,
                    "track": track.tid,
                    "s": f"{s[i]:.2f}",
                    "x": f"{x[i]:.3f}",
                    "y": f"{y[i]:.3f}",
                    "carriageway_width_m": f"{left_kerb[i] - right_kerb:.2f}",
                    "sidewalk_left_width_m": f"{st.width / 2 - left_kerb[i]:.2f}",
                    "sidewalk_right_width_m": f"{side:.2f}",
                    "junction": int(junction[i]),
                    "clearance_m": f"{clear[i]:.3f}" if np.isfinite(clear[i]) else "",
                    "clearance_inner_m": f"{inner[i]:.3f}" if np.isfinite(inner[i]) else "",
                }
            )
    return rows


def write_street_space_truth(path: Path, city: City) -> int:
    rows = street_space_truth(city)
    cols = list(rows[0]) if rows else ["street"]
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(rows)
