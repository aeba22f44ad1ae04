"""GeoSmartChange stand-in: equirectangular 360° panorama images at the recording positions.

Each image is rendered from the generated street scene of the second epoch (the mobile mapping run):
terrain coloured by land cover, buildings (facades in the colours of the mobile scans, with window
rows, and roofs) and tree crowns (ellipsoids) under a plain sky; parked cars are left out, as in the
mobile scans. The scene is sampled on a 0.25 m
height field around the positions and drawn column by column (one column per azimuth): the march along
each column's ray keeps the highest elevation angle seen so far, so a pixel shows the first surface whose
top rises above its elevation ("voxel space" rendering); crowns are slabs floating above the ground.

Image layout (what the tests rely on): ``mobile/panoramas/<image_id>.jpg``, 2:1 equirectangular,
the horizontal centre is the recording's ``heading`` (degrees clockwise from grid north, the
``heading`` column of ``panoramas.csv``), bearings increase to the right, the top row looks at the
zenith; the camera centre is the row's ``z``. A wall pixel between the windows shows its building's
facade colour (``mobile.FACADE_COLOURS``) exactly (before JPEG compression), dimmed by at most 2 % at
12 m (aerial perspective). The files carry GPano XMP (projection, pose heading) as street-level
panoramas commonly do. Same arguments -> byte-identical JPEG files.

Only `count` positions get an image (a stretch of consecutive positions of one track, the one nearest
the district centre): rendering every 5 m of every street would take minutes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.features import rasterize

from pipeline.sources.demo.city import City
from pipeline.sources.demo.mobile import FACADE_COLOURS, panorama_records
from pipeline.sources.demo.rasters import LANDCOVER_RGBI, ROOF_RGBI, TREE_RGBI, landcover_raster
from pipeline.sources.demo.roofs import roof_height

IMAGE_WIDTH = 2048  # equirectangular: height = width / 2
DEFAULT_IMAGE_COUNT = 8
VIEW_RANGE = 120.0  # metres of scene around each position
RES = 0.25  # height field cell size (m)
JPEG_QUALITY = 90
SKY_HORIZON = np.array([206.0, 222.0, 238.0])
SKY_ZENITH = np.array([92.0, 142.0, 212.0])
VEHICLE_RGB = np.array([38.0, 40.0, 46.0])  # the recording vehicle's roof at the nadir
NADIR_DEG = -72.0
WINDOW_FACTOR = 0.35
KIND_GROUND, KIND_BUILDING = 0, 1


def facade_colour(structure_index: int) -> np.ndarray:
    """The facade colour (RGB 0..255) of a structure, as in the mobile scans."""
    return FACADE_COLOURS[(structure_index * 7919) % len(FACADE_COLOURS)]


def is_window(rel_height: np.ndarray, along: np.ndarray) -> np.ndarray:
    """Window pattern of the facades: rows 1.0-2.3 m above each 3 m storey, 1.4 m of every 2.6 m."""
    r = rel_height % 3.0
    return (r > 1.0) & (r < 2.3) & ((along % 2.6) < 1.4)


def image_rows(city: City, count: int) -> list[int]:
    """Indices (into `mobile.panoramas(city)`) of the positions that get an image: `count` consecutive
    positions of the track passing nearest the district centre, centred on its nearest position."""
    recs = panorama_records(city)
    if count <= 0 or not recs:
        return []
    x0, y0, x1, y1 = city.bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xy = np.array([(r[1][1], r[1][2]) for r in recs])
    k = int(np.argmin(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy)))
    tid = recs[k][0]
    same = [i for i, r in enumerate(recs) if r[0] == tid]
    pos = same.index(k)
    lo = max(0, min(pos - count // 2, len(same) - count))
    return same[lo : lo + count]


class Scene:
    """Height field of the epoch-2 street scene around a set of positions (what the camera can see)."""

    def __init__(self, city: City, xs: np.ndarray, ys: np.ndarray):
        self.city = city
        x0 = np.floor((xs.min() - VIEW_RANGE) / RES) * RES
        y1 = np.ceil((ys.max() + VIEW_RANGE) / RES) * RES
        w = int(np.ceil((xs.max() + VIEW_RANGE - x0) / RES))
        h = int(np.ceil((y1 - (ys.min() - VIEW_RANGE)) / RES))
        self.x0, self.y1, self.w, self.h = float(x0), float(y1), w, h
        bounds = (x0, y1 - h * RES, x0 + w * RES, y1)
        transform = Affine(RES, 0.0, x0, 0.0, -RES, y1)
        px = x0 + RES * (np.arange(w) + 0.5)
        py = y1 - RES * (np.arange(h) + 0.5)
        gx, gy = np.meshgrid(px, py)
        ground = city.terrain(gx, gy).astype(np.float64)
        self.ground = ground
        top = ground.copy()
        kind = np.zeros((h, w), dtype=np.uint8)
        rgb = np.zeros((h, w, 3), dtype=np.float32)
        lc = landcover_raster(city, bounds, RES, 1)
        table = np.zeros((256, 3), dtype=np.float32)
        for k, v in LANDCOVER_RGBI.items():
            table[k] = v[:3]
        rgb[:] = table[lc]

        # tree crowns: ellipsoids floating above the ground, one slab [lo, hi] per cell (the larger wins)
        slab_lo = np.full((h, w), np.inf)
        slab_hi = np.full((h, w), -np.inf)
        slab_rgb = np.zeros((h, w, 3), dtype=np.float32)
        t = city.trees
        sel = np.flatnonzero(
            (t.x + t.radius > bounds[0])
            & (t.x - t.radius < bounds[2])
            & (t.y + t.radius > bounds[1])
            & (t.y - t.radius < bounds[3])
        )
        for k in sel:
            r = t.radius[k]
            c0, c1 = max(0, int((t.x[k] - r - x0) / RES)), min(w, int((t.x[k] + r - x0) / RES) + 1)
            r0, r1 = max(0, int((y1 - t.y[k] - r) / RES)), min(h, int((y1 - t.y[k] + r) / RES) + 1)
            if c1 <= c0 or r1 <= r0:
                continue
            dx = px[c0:c1][None, :] - t.x[k]
            dy = py[r0:r1][:, None] - t.y[k]
            q = np.sqrt(np.clip(1 - (dx * dx + dy * dy) / (r * r), 0, 1))
            semi = (t.top[k] - t.crown_base[k]) / 2
            zc = float(city.terrain(t.x[k], t.y[k])) + t.crown_base[k] + semi
            lo, hi = zc - semi * q, zc + semi * q
            m = (q > 0) & (hi - lo > slab_hi[r0:r1, c0:c1] - slab_lo[r0:r1, c0:c1])
            slab_lo[r0:r1, c0:c1][m] = lo[m]
            slab_hi[r0:r1, c0:c1][m] = hi[m]
            shade = 0.75 + 0.35 * q
            slab_rgb[r0:r1, c0:c1][m] = (np.array(TREE_RGBI[:3], dtype=np.float32) * shade[..., None])[m]
        self.slab_lo, self.slab_hi, self.slab_rgb = slab_lo, slab_hi, slab_rgb

        # buildings of the second epoch: label raster, roof heights
        ids = [i for i in city.structures_in(bounds) if city.structures[i].present[1]]
        self.label = np.zeros((h, w), dtype=np.int32)
        n = len(city.structures) + 1
        self.eave = np.zeros(n)
        self.base = np.zeros(n)
        self.facade = np.zeros((n, 3))
        if ids:
            self.label = rasterize(
                [(city.structures[i].geom, i + 1) for i in ids],
                out_shape=(h, w),
                transform=transform,
                dtype="int32",
            )
            for i in ids:
                s = city.structures[i]
                roof = s.roof_in(1)
                self.eave[i + 1] = s.base + roof.eave
                self.base[i + 1] = s.base
                self.facade[i + 1] = facade_colour(i)
                bx0, by0, bx1, by1 = s.geom.bounds
                c0, c1 = max(0, int((bx0 - x0) / RES) - 1), min(w, int((bx1 - x0) / RES) + 2)
                r0, r1 = max(0, int((y1 - by1) / RES) - 1), min(h, int((y1 - by0) / RES) + 2)
                if c1 <= c0 or r1 <= r0:
                    continue
                m = self.label[r0:r1, c0:c1] == i + 1
                if not m.any():
                    continue
                zz = s.base + roof_height(roof, s.edges, *np.meshgrid(px[c0:c1], py[r0:r1]))
                top[r0:r1, c0:c1][m] = zz[m]
                kind[r0:r1, c0:c1][m] = KIND_BUILDING
                rgb[r0:r1, c0:c1][m] = np.array(ROOF_RGBI[s.material][:3], dtype=np.float32)
        self.top, self.kind, self.rgb = top, kind, rgb
        self._flat: tuple[np.ndarray, ...] | None = None
        # the facades' window columns run along the street grid
        self.cos_a, self.sin_a = float(np.cos(city.angle)), float(np.sin(city.angle))

    def _camera(self, heading: float, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Column bearings (radians), row elevations (degrees) and the march distances."""
        height = width // 2
        d = [0.4]  # fine near the camera, coarser far away
        while d[-1] < VIEW_RANGE:
            d.append(d[-1] + max(0.1, 0.012 * d[-1]))
        bearing = np.radians(heading + (np.arange(width) + 0.5) * 360.0 / width - 180.0)
        elev = 90.0 - (np.arange(height) + 0.5) * 180.0 / height
        return bearing, elev, np.asarray(d)

    @staticmethod
    def _sky(elev: np.ndarray) -> np.ndarray:
        t = np.clip(elev / 90.0, 0.0, 1.0)[:, None] ** 0.6
        return np.rint(SKY_HORIZON * (1 - t) + SKY_ZENITH * t)

    def render(self, x: float, y: float, z: float, heading: float, width: int = IMAGE_WIDTH) -> np.ndarray:
        """(width / 2, width, 3) uint8 equirectangular image seen from (x, y, z), centred on `heading`."""
        from pipeline.sources.demo.streetview_kernels import render_columns_nb

        bearing, elev, dist = self._camera(heading, width)
        out = np.empty((len(elev), width, 3), dtype=np.uint8)
        if self._flat is None:  # once per scene: the kernel's contiguous float64 views
            self._flat = (
                np.ascontiguousarray(self.top.ravel()),
                np.ascontiguousarray(self.kind.ravel()),
                self.rgb.reshape(-1, 3).astype(np.float64),
                np.ascontiguousarray(self.label.ravel()),
                np.ascontiguousarray(self.slab_lo.ravel()),
                np.ascontiguousarray(self.slab_hi.ravel()),
                self.slab_rgb.reshape(-1, 3).astype(np.float64),
            )
        render_columns_nb(
            *self._flat,
            self.eave,
            self.base,
            self.facade,
            self.x0,
            self.y1,
            self.w,
            self.h,
            RES,
            float(x),
            float(y),
            float(z),
            bearing,
            dist,
            np.tan(np.radians(elev)),
            elev < NADIR_DEG,
            self._sky(elev),
            SKY_HORIZON,
            VEHICLE_RGB,
            self.cos_a,
            self.sin_a,
            WINDOW_FACTOR,
            out,
        )
        return out

    def render_numpy(self, x: float, y: float, z: float, heading: float, width: int = 256) -> np.ndarray:
        """Pure-numpy reference of `render`, pixel by pixel: each pixel shows the first march sample along
        its ray that lies inside a solid (below the cell's top) or a crown slab (slow: small widths)."""
        bearing, elev, dist = self._camera(heading, width)
        height = len(elev)
        tan_e = np.tan(np.radians(elev))
        sky_rgb = self._sky(elev)
        out = np.zeros((height, width, 3))
        top, lo, hi = self.top.ravel(), self.slab_lo.ravel(), self.slab_hi.ravel()
        rgb, srgb = (
            self.rgb.reshape(-1, 3).astype(np.float64),
            self.slab_rgb.reshape(-1, 3).astype(np.float64),
        )
        kind, label = self.kind.ravel(), self.label.ravel()
        for c in range(width):
            sx = x + np.sin(bearing[c]) * dist
            sy = y + np.cos(bearing[c]) * dist
            cell = np.clip(((self.y1 - sy) / RES).astype(np.int64), 0, self.h - 1) * self.w + np.clip(
                ((sx - self.x0) / RES).astype(np.int64), 0, self.w - 1
            )
            ray_z = z + dist[None, :] * tan_e[:, None]  # (height, ns)
            solid = tan_e[:, None] <= ((top[cell] - z) / dist)[None, :]
            slab = (ray_z >= lo[cell][None, :]) & (ray_z <= hi[cell][None, :])
            inside = solid | slab
            j = np.argmax(inside, axis=1)
            any_hit = inside.any(axis=1)
            cj = cell[j]
            dd = dist[j]
            zhit = ray_z[np.arange(height), j]
            col = np.where(solid[np.arange(height), j][:, None], rgb[cj], srgb[cj])
            lab = label[cj]
            wall = solid[np.arange(height), j] & (kind[cj] == KIND_BUILDING) & (zhit < self.eave[lab])
            along = (sx[j] * self.cos_a + sy[j] * self.sin_a) + (-sx[j] * self.sin_a + sy[j] * self.cos_a)
            f = np.where(is_window(zhit - self.base[lab], along), WINDOW_FACTOR, 1.0)
            col = np.where(wall[:, None], self.facade[lab] * f[:, None], col)
            fade = np.minimum(0.35, dd / 600.0)[:, None]
            col = np.floor(col * (1 - fade) + SKY_HORIZON * fade + 0.5)
            out[:, c] = np.where(any_hit[:, None], col, sky_rgb)
        out[elev < NADIR_DEG] = VEHICLE_RGB
        return np.clip(out, 0, 255).astype(np.uint8)


def _xmp(heading: float, width: int) -> bytes:
    """GPano XMP: the metadata street-level 360° images carry (projection, pose heading)."""
    h = width // 2
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:GPano="http://ns.google.com/photos/1.0/panorama/">'
        "<GPano:ProjectionType>equirectangular</GPano:ProjectionType>"
        "<GPano:UsePanoramaViewer>True</GPano:UsePanoramaViewer>"
        f"<GPano:PoseHeadingDegrees>{heading:.2f}</GPano:PoseHeadingDegrees>"
        f"<GPano:FullPanoWidthPixels>{width}</GPano:FullPanoWidthPixels>"
        f"<GPano:FullPanoHeightPixels>{h}</GPano:FullPanoHeightPixels>"
        f"<GPano:CroppedAreaImageWidthPixels>{width}</GPano:CroppedAreaImageWidthPixels>"
        f"<GPano:CroppedAreaImageHeightPixels>{h}</GPano:CroppedAreaImageHeightPixels>"
        "<GPano:CroppedAreaLeftPixels>0</GPano:CroppedAreaLeftPixels>"
        "<GPano:CroppedAreaTopPixels>0</GPano:CroppedAreaTopPixels>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def encode_jpeg(img: np.ndarray, heading: float) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(
        buf, "JPEG", quality=JPEG_QUALITY, optimize=False, xmp=_xmp(heading, img.shape[1])
    )
    return buf.getvalue()


def write_panorama_images(
    folder: Path,
    city: City,
    rows: list[tuple[float, float, float, float, float, str]],
    count: int = DEFAULT_IMAGE_COUNT,
    width: int = IMAGE_WIDTH,
) -> list[Path]:
    """Render and write the images of `count` positions of `rows` (`mobile.panoramas(city)`)."""
    pick = image_rows(city, count)
    if not pick:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    xs = np.array([rows[i][1] for i in pick])
    ys = np.array([rows[i][2] for i in pick])
    scene = Scene(city, xs, ys)
    out = []
    for i in pick:
        _t, x, y, z, heading, image_id = rows[i]
        heading = round(heading, 2)  # as written to panoramas.csv
        path = folder / f"{image_id}.jpg"
        path.write_bytes(encode_jpeg(scene.render(x, y, z, heading, width), heading))
        out.append(path)
    return out
