"""Raster deliveries of the demo district: DOP10-like RGBI orthophotos and DGM1 terrain tiles.

* Orthophoto (``dop/dop10rgbi_..._<epoch>.tif``): uint8, 4 bands R, G, B, NIR (band descriptions ``red``,
  ``green``, ``blue``, ``nir``), 0.1 m pixels by default (DOP10), EPSG:25832, tiled 256 x 256, deflate. A true
  orthophoto of the *second* epoch: roofs sit exactly on their footprints. Vegetation is bright in NIR and
  dark in red (NDVI about 0.45-0.65), sealed surfaces and roofs have NDVI < 0.1, water is dark in NIR. A few
  flat roofs are green roofs (NDVI about 0.45): a realistic trap for a naive green-share overlay.
* DGM1 (``dgm/dgm1_..._<epoch>.tif``): float32 bare-earth normal heights (DHHN2016) on a 1 m grid, pixel
  centres at x.5, ponds at their water level. The GeoTIFF carries the compound CRS EPSG:25832 + EPSG:7837
  (GDAL reports it as COMPD_CS).

Only the second (current) epoch is delivered as rasters: an orthophoto/DGM folder holds one coverage, as
the real deliveries do; the first epoch exists only as a point cloud.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS as RioCRS
from rasterio.enums import ColorInterp
from rasterio.features import rasterize

from pipeline.sources.demo.city import (
    LC_ASPHALT,
    LC_BARE,
    LC_GRASS,
    LC_PAVED,
    LC_SIDEWALK,
    LC_SPORTS,
    LC_WATER,
    City,
)
from pipeline.sources.demo.grid import Tile
from pipeline.sources.demo.roofs import FLAT, roof_height

# (R, G, B, NIR) of the land cover classes
LANDCOVER_RGBI = {
    LC_GRASS: (62, 104, 52, 178),
    LC_ASPHALT: (84, 84, 88, 72),
    LC_SIDEWALK: (150, 146, 140, 124),
    LC_PAVED: (122, 119, 115, 102),
    LC_WATER: (34, 52, 62, 12),
    LC_BARE: (140, 116, 92, 132),
    LC_SPORTS: (168, 82, 62, 108),
}
ROOF_RGBI = {
    "tile_red": (164, 74, 58, 118),
    "tile_brown": (120, 78, 62, 98),
    "tile_dark": (70, 66, 66, 62),
    "bitumen": (96, 96, 98, 82),
    "gravel": (162, 160, 152, 142),
    "green": (70, 108, 58, 186),
}
TREE_RGBI = (40, 82, 40, 196)
# sun from the south-east, 45 degrees high
_SUN = np.array(
    [
        np.sin(np.deg2rad(150)) * np.cos(np.pi / 4),
        np.cos(np.deg2rad(150)) * np.cos(np.pi / 4),
        np.sin(np.pi / 4),
    ]
)

GTIFF_OPTS = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


def landcover_raster(
    city: City, bounds: tuple[float, float, float, float], res: float, epoch: int
) -> np.ndarray:
    """uint8 land cover classes on a grid of `res` metres over `bounds` (north-up, row 0 = north)."""
    x0, y0, x1, y1 = bounds
    w, h = round((x1 - x0) / res), round((y1 - y0) / res)
    shapes = city.landcover_in(bounds, epoch)
    out = np.full((h, w), LC_GRASS, dtype=np.uint8)
    if shapes:
        rasterize(shapes, out=out, transform=Affine(res, 0.0, x0, 0.0, -res, y1))
    return out


def pixel_centres(bounds: tuple[float, float, float, float], res: float) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = bounds
    xs = x0 + res * (np.arange(round((x1 - x0) / res)) + 0.5)
    ys = y1 - res * (np.arange(round((y1 - y0) / res)) + 0.5)
    return xs, ys


def render_orthophoto(city: City, tile: Tile, epoch: int, res: float, rng: np.random.Generator) -> np.ndarray:
    """(4, H, W) uint8 RGBI image of the tile in the given epoch."""
    bounds = tile.bounds
    lc = landcover_raster(city, bounds, res, epoch)
    table = np.zeros((256, 4), dtype=np.float32)
    for k, v in LANDCOVER_RGBI.items():
        table[k] = v
    img = table[lc].transpose(2, 0, 1).copy()  # (4, H, W) float32
    xs, ys = pixel_centres(bounds, res)
    x0, y1 = bounds[0], bounds[3]
    transform = Affine(res, 0.0, x0, 0.0, -res, y1)
    h, w = lc.shape

    # buildings of this epoch
    idx = [i for i in city.structures_in(bounds) if city.structures[i].present[epoch]]
    if idx:
        label = rasterize(
            [(city.structures[i].geom, i + 1) for i in idx],
            out_shape=(h, w),
            transform=transform,
            dtype="int32",
        )
        for i in idx:
            s = city.structures[i]
            bx0, by0, bx1, by1 = s.geom.bounds
            c0, c1 = max(0, int((bx0 - x0) / res) - 1), min(w, int((bx1 - x0) / res) + 2)
            r0, r1 = max(0, int((y1 - by1) / res) - 1), min(h, int((y1 - by0) / res) + 2)
            if c1 <= c0 or r1 <= r0:
                continue
            win = label[r0:r1, c0:c1] == i + 1
            if not win.any():
                continue
            gx, gy = np.meshgrid(xs[c0:c1], ys[r0:r1])
            roof = s.roof_in(epoch)
            if roof.kind != FLAT:  # pitched roofs shaded by their slope
                z = roof_height(roof, s.edges, gx, gy)
                dzdy, dzdx = np.gradient(z, -res, res)
                n = np.stack([-dzdx, -dzdy, np.ones_like(z)])
                n /= np.linalg.norm(n, axis=0)
                shade = np.clip(np.tensordot(_SUN, n, axes=1) / _SUN[2], 0.45, 1.35)
            else:
                shade = np.ones(win.shape)
            tint = 1.0 + rng.normal(0.0, 0.06)
            colour = np.array(ROOF_RGBI[s.material], dtype=np.float32)
            for b in range(4):
                band = img[b, r0:r1, c0:c1]
                band[win] = (colour[b] * tint * shade)[win]

    # trees (crowns seen from above; the highest crown wins)
    t = city.trees
    sel = np.flatnonzero(
        (t.x + t.radius > bounds[0])
        & (t.x - t.radius < bounds[2])
        & (t.y + t.radius > bounds[1])
        & (t.y - t.radius < bounds[3])
    )
    if len(sel):
        canopy = np.full((h, w), -np.inf, dtype=np.float32)
        for k in sel:
            r = t.radius[k]
            c0, c1 = max(0, int((t.x[k] - r - x0) / res)), min(w, int((t.x[k] + r - x0) / res) + 1)
            r0, r1 = max(0, int((y1 - t.y[k] - r) / res)), min(h, int((y1 - t.y[k] + r) / res) + 1)
            if c1 <= c0 or r1 <= r0:
                continue
            dx = xs[c0:c1][None, :] - t.x[k]
            dy = ys[r0:r1][:, None] - t.y[k]
            rho2 = (dx * dx + dy * dy) / (r * r)
            top = t.top[k] - (t.top[k] - t.crown_base[k]) * 0.5 * (1 - np.sqrt(np.clip(1 - rho2, 0, 1)))
            m = (rho2 < 1.0) & (top > canopy[r0:r1, c0:c1])
            if not m.any():
                continue
            canopy[r0:r1, c0:c1][m] = top[m]
            shade = np.clip(0.85 + 0.35 * (dx * _SUN[0] + dy * _SUN[1]) / r - 0.25 * rho2, 0.5, 1.25)
            leaf = 1.0 + rng.normal(0.0, 0.08)
            for b in range(4):
                band = img[b, r0:r1, c0:c1]
                band[m] = (TREE_RGBI[b] * (shade if b < 3 else np.sqrt(shade)) * leaf)[m]

    # cars
    c = city.cars[epoch]
    inb = (c.x > bounds[0] - 3) & (c.x < bounds[2] + 3) & (c.y > bounds[1] - 3) & (c.y < bounds[3] + 3)
    shapes = []
    for k in np.flatnonzero(inb):
        ux, uy = c.ux[k], c.uy[k]
        hl, hw = c.length[k] / 2, c.width[k] / 2
        pts = [
            (c.x[k] + a * hl * ux - b * hw * uy, c.y[k] + a * hl * uy + b * hw * ux)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        shapes.append((shapely.Polygon(pts), int(k) + 1))
    if shapes:
        lab = rasterize(shapes, out_shape=(h, w), transform=transform, dtype="int32")
        m = lab > 0
        col = c.colour[lab[m] - 1].astype(np.float32)
        img[0][m], img[1][m], img[2][m] = col[:, 0], col[:, 1], col[:, 2]
        img[3][m] = 0.8 * col[:, 0] + 10.0

    img += rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_orthophoto(path: Path, img: np.ndarray, tile: Tile, res: float, epoch: str) -> None:
    _, h, w = img.shape
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with rasterio.open(
        tmp,
        "w",
        width=w,
        height=h,
        count=4,
        dtype="uint8",
        crs=RioCRS.from_epsg(25832),
        transform=Affine(res, 0.0, tile.x0, 0.0, -res, tile.y1),
        photometric="RGB",
        predictor=2,
        **GTIFF_OPTS,
    ) as dst:
        dst.write(img)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
        for i, name in enumerate(("red", "green", "blue", "nir"), start=1):
            dst.set_band_description(i, name)
        dst.update_tags(PRODUCT="DOP10 RGBI (RuhrTwin demo)", EPOCH=epoch, BANDS="R,G,B,NIR")
    os.replace(tmp, path)


def render_dgm(city: City, tile: Tile, res: float = 1.0) -> np.ndarray:
    """(H, W) float32 terrain heights at the pixel centres; ponds at their water level."""
    xs, ys = pixel_centres(tile.bounds, res)
    gx, gy = np.meshgrid(xs, ys)
    z = city.terrain(gx, gy)
    tb = shapely.box(*tile.bounds)
    for pond, level in city.ponds:
        if pond.intersects(tb):
            m = shapely.contains_xy(pond, gx, gy)
            z[m] = level
    return np.round(z, 2).astype(np.float32)


def write_dgm(path: Path, z: np.ndarray, tile: Tile, res: float, epoch: str) -> None:
    h, w = z.shape
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with rasterio.open(
        tmp,
        "w",
        width=w,
        height=h,
        count=1,
        dtype="float32",
        crs=RioCRS.from_user_input("EPSG:25832+7837"),
        transform=Affine(res, 0.0, tile.x0, 0.0, -res, tile.y1),
        predictor=3,
        **GTIFF_OPTS,
    ) as dst:
        dst.write(z[None])
        dst.set_band_description(1, "terrain height (DHHN2016 normal height, m)")
        dst.update_tags(PRODUCT="DGM1 (RuhrTwin demo)", EPOCH=epoch, HEIGHT_SYSTEM="DHHN2016 (EPSG:7837)")
    os.replace(tmp, path)
