"""A fast synthetic district for building tests and the benchmark (no dependency on the demo generator).

Regular lots of `lot_m` metres, one rectangular building per lot (flat or gable roof, random size and
height), gently sloping terrain, noise points (cars, bushes) outside the buildings. Writes:

    <out>/alkis/district.gpkg       GebauedeBauwerk + Flurstueck (EPSG:25832), plus a few bad records
    <out>/aerial/<epoch>/*.laz      LAS 1.4 PF 6, EPSG:25832+7837, AdV classes (2 ground, 20 non-ground)
    <out>/truth/buildings.csv       oid, roof_type, base, eave, ridge, truth_roof (= the roof surface's
                                    exact percentile over the shrunk footprint), truth_height

Points are uniform random at `density` per m2 (no per-point Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ORIGIN = (400_000.0, 5_700_000.0)
BAD_RECORDS = 4  # records in the GeoPackage that must be rejected


@dataclass(frozen=True)
class District:
    oid: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    base: np.ndarray  # terrain height at the building (flat ground under each lot)
    eave: np.ndarray  # above base
    ridge: np.ndarray  # above base (== eave for flat roofs)
    gable: np.ndarray  # bool
    size_m: float


def terrain(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 60.0 + 0.004 * (x - ORIGIN[0]) + 0.002 * (y - ORIGIN[1])


def layout(size_m: float, lot_m: float = 16.0, seed: int = 7) -> District:
    rng = np.random.default_rng(seed)
    n = int(size_m // lot_m)
    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="xy")
    ix, iy = ix.ravel(), iy.ravel()
    m = ix.size
    w = rng.uniform(0.45, 0.8, m) * lot_m
    d = rng.uniform(0.45, 0.8, m) * lot_m
    ox = rng.uniform(0.08, 1.0, m) * (lot_m - w) * 0.9 + 0.5
    oy = rng.uniform(0.08, 1.0, m) * (lot_m - d) * 0.9 + 0.5
    x0 = ORIGIN[0] + ix * lot_m + ox
    y0 = ORIGIN[1] + iy * lot_m + oy
    x1, y1 = x0 + w, y0 + d
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    base = np.round(terrain(cx, cy), 2)
    eave = np.round(rng.uniform(3.0, 15.0, m), 2)
    gable = rng.random(m) < 0.4
    ridge = np.where(gable, eave + np.round(rng.uniform(2.0, 5.0, m), 2), eave)
    oid = np.array([f"DENW{k:012d}" for k in range(m)], dtype=object)
    return District(oid, x0, y0, x1, y1, base, eave, ridge, gable, size_m)


def roof_z(dist: District, k: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Roof surface height at (x, y) of building k (gable ridge along the longer side)."""
    x0, y0, x1, y1 = dist.x0[k], dist.y0[k], dist.x1[k], dist.y1[k]
    along_x = (x1 - x0) >= (y1 - y0)
    hw = np.where(along_x, (y1 - y0) / 2, (x1 - x0) / 2)
    dd = np.where(along_x, np.abs(y - (y0 + y1) / 2), np.abs(x - (x0 + x1) / 2))
    frac = np.clip(1.0 - dd / np.maximum(hw, 1e-9), 0.0, 1.0)
    rel = np.where(dist.gable[k], dist.eave[k] + (dist.ridge[k] - dist.eave[k]) * frac, dist.eave[k])
    return dist.base[k] + rel


def _building_at(dist: District, lot_m: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = int(dist.size_m // lot_m)
    ix = np.floor((x - ORIGIN[0]) / lot_m).astype(np.int64)
    iy = np.floor((y - ORIGIN[1]) / lot_m).astype(np.int64)
    ok = (ix >= 0) & (iy >= 0) & (ix < n) & (iy < n)
    k = np.where(ok, iy * n + ix, 0)
    inside = ok & (x >= dist.x0[k]) & (x < dist.x1[k]) & (y >= dist.y0[k]) & (y < dist.y1[k])
    return np.where(inside, k, -1)


def write_points(
    dist: District,
    out: Path,
    epoch: str,
    tile_m: float,
    density: float,
    lot_m: float = 16.0,
    seed: int = 1,
    roof_offset: float = 0.0,
) -> list[Path]:
    import laspy
    import pyproj

    rng = np.random.default_rng(seed)
    crs = pyproj.CRS("EPSG:25832+7837")
    nt = int(np.ceil(dist.size_m / tile_m))
    paths = []
    (out / "aerial" / epoch).mkdir(parents=True, exist_ok=True)
    for ty in range(nt):
        for tx in range(nt):
            ax, ay = ORIGIN[0] + tx * tile_m, ORIGIN[1] + ty * tile_m
            wx = min(tile_m, dist.size_m - tx * tile_m)
            wy = min(tile_m, dist.size_m - ty * tile_m)
            npts = int(wx * wy * density)
            x = ax + rng.random(npts) * wx
            y = ay + rng.random(npts) * wy
            k = _building_at(dist, lot_m, x, y)
            on = k >= 0
            z = terrain(x, y) + rng.normal(0, 0.03, npts)
            z[on] = roof_z(dist, k[on], x[on], y[on]) + roof_offset + rng.normal(0, 0.03, int(on.sum()))
            cls = np.where(on, 20, 2).astype(np.uint8)
            noise = (~on) & (rng.random(npts) < 0.05)
            z[noise] += rng.uniform(0.5, 8.0, int(noise.sum()))
            cls[noise] = 20
            h = laspy.LasHeader(point_format=6, version="1.4")
            h.scales = np.array([0.01, 0.01, 0.01])
            h.offsets = np.array([ax, ay, 0.0])
            h.add_crs(crs)
            las = laspy.LasData(h)
            las.x, las.y, las.z = x, y, z
            las.classification = cls
            las.return_number = np.ones(npts, np.uint8)
            las.number_of_returns = np.ones(npts, np.uint8)
            p = out / "aerial" / epoch / f"3dm_32_{int(ax)}_{int(ay)}_{epoch}.laz"
            las.write(p)
            paths.append(p)
    return paths


def write_cadastre(dist: District, out: Path, lot_m: float = 16.0, bad_records: bool = True) -> Path:
    import geopandas as gpd
    import pyogrio
    import shapely

    geoms = shapely.box(dist.x0, dist.y0, dist.x1, dist.y1)
    m = len(geoms)
    rng = np.random.default_rng(3)
    codes = rng.choice([1000, 1000, 1000, 2463, 2010, 2100, 3021], size=m)
    names = {
        1000: "Wohngebäude",
        2463: "Garage",
        2010: "Gebäude für Handel und Dienstleistungen",
        2100: "Gebäude für Gewerbe und Industrie",
        3021: "Allgemein bildende Schule",
    }
    floors = np.where(rng.random(m) < 0.3, np.round(dist.eave / 3.0), np.nan)
    df: dict[str, list[Any]] = {
        "oid": list(dist.oid),
        "gebnutzbez": ["Gebäude"] * m,
        "funktion": [names[int(c)] for c in codes],
        "gfkzshh": [f"31001_{int(c)}" for c in codes],
        "anzahlgs": floors.tolist(),
        "rellage": [None] * m,
        "lagebeztxt": [f"Teststraße {i}" for i in range(m)],
        "aktualit": ["2023-01-01"] * m,
    }
    g = list(geoms)
    if bad_records:
        x, y = ORIGIN[0] - 100, ORIGIN[1] - 100
        extra = [
            (
                "BAD0000000000001",
                shapely.Polygon([(x, y), (x + 10, y + 10), (x + 10, y), (x, y + 10)]),
                "Gebäude",
                None,
            ),
            ("BAD0000000000002", shapely.box(x, y + 20, x + 30, y + 20.05), "Gebäude", None),  # sliver
            (dist.oid[0], shapely.box(x + 40, y, x + 50, y + 10), "Gebäude", None),  # duplicate id
            ("BAD0000000000004", shapely.box(x + 60, y, x + 70, y + 10), "Bauteil", None),
            (
                "BAD0000000000005",
                shapely.box(x + 80, y, x + 90, y + 10),
                "Gebäude",
                "unter der Erdoberfläche",
            ),
        ]
        for oid, geom, nutz, lage in extra:
            df["oid"].append(oid)
            df["gebnutzbez"].append(nutz)
            df["funktion"].append("Wohngebäude")
            df["gfkzshh"].append("31001_1000")
            df["anzahlgs"].append(np.nan)
            df["rellage"].append(lage)
            df["lagebeztxt"].append("")
            df["aktualit"].append("2023-01-01")
            g.append(geom)
    bld = gpd.GeoDataFrame(df, geometry=g, crs="EPSG:25832")
    n = int(dist.size_m // lot_m)
    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="xy")
    lx = ORIGIN[0] + ix.ravel() * lot_m
    ly = ORIGIN[1] + iy.ravel() * lot_m
    parcels = gpd.GeoDataFrame(
        {"flstkennz": [f"05{k:012d}______" for k in range(lx.size)]},
        geometry=shapely.box(lx, ly, lx + lot_m, ly + lot_m),
        crs="EPSG:25832",
    )
    p = out / "alkis" / "district.gpkg"
    p.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(bld, p, layer="GebauedeBauwerk", driver="GPKG")
    pyogrio.write_dataframe(parcels, p, layer="Flurstueck", driver="GPKG", append=False)
    return p


def truth_table(
    dist: District, shrink_m: float = 0.5, percentile: float = 75.0, samples: int = 60
) -> pd.DataFrame:
    """Exact roof percentile over the shrunk footprint (dense regular sampling of the surface)."""
    u = (np.arange(samples) + 0.5) / samples
    gx, gy = np.meshgrid(u, u, indexing="xy")
    gx, gy = gx.ravel(), gy.ravel()
    m = len(dist.oid)
    sx0, sy0 = dist.x0 + shrink_m, dist.y0 + shrink_m
    sx1, sy1 = dist.x1 - shrink_m, dist.y1 - shrink_m
    roof = np.empty(m)
    for a in range(0, m, 2000):  # chunks: bounded memory for large districts
        b = min(m, a + 2000)
        x = sx0[a:b, None] + gx[None, :] * (sx1 - sx0)[a:b, None]
        y = sy0[a:b, None] + gy[None, :] * (sy1 - sy0)[a:b, None]
        k = np.repeat(np.arange(a, b), gx.size)
        z = roof_z(dist, k, x.ravel(), y.ravel()).reshape(b - a, -1)
        roof[a:b] = np.percentile(z, percentile, axis=1)
    rows = {
        "oid": dist.oid,
        "roof_type": np.where(dist.gable, "gable", "flat"),
        "base": dist.base,
        "eave": dist.eave,
        "ridge": dist.ridge,
        "truth_roof": roof,
        "truth_height": roof - dist.base,
    }
    return pd.DataFrame(rows)


def make_district(
    out: Path,
    size_m: float = 200.0,
    tile_m: float = 100.0,
    density: float = 8.0,
    epochs: tuple[str, ...] = ("2024",),
    lot_m: float = 16.0,
    bad_records: bool = True,
    truth: bool = True,
) -> District:
    out = Path(out)
    dist = layout(size_m, lot_m)
    write_cadastre(dist, out, lot_m, bad_records)
    for i, ep in enumerate(epochs):
        # older epochs: roofs 2 m lower (lets the tests see per-epoch statistics differ)
        write_points(
            dist, out, ep, tile_m, density, lot_m, seed=11 + i, roof_offset=-2.0 * (len(epochs) - 1 - i)
        )
    if truth:
        (out / "truth").mkdir(parents=True, exist_ok=True)
        truth_table(dist).to_csv(out / "truth" / "buildings.csv", index=False)
    return dist
