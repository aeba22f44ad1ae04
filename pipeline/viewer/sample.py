"""A tiny synthetic release (box buildings + a few thousand points) for viewer tests and demos.

Written with the project's own format writers (GltfBuilder, tileset helpers), in the same shape a real
build produces: manifest.json at the root, one folder per layer, every tileset's root tile carrying the
project frame's `transform`. It lets the viewer and the server be tested before (and independently of)
the full pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.model import CrsConfig
from pipeline.crs import ProjectFrame, project_frame
from pipeline.tiles.gltf import (
    ELEMENT_ARRAY_BUFFER,
    POINTS,
    TRIANGLES,
    GltfBuilder,
    add_property_attribute,
    add_property_table,
    enu_to_gltf,
    set_metadata_schema,
)
from pipeline.tiles.tileset import asset, box_from_bounds, write_atomic, write_json

# Project frame of the sample: Essen, 1 km grid corner (ETRS89/UTM32N + DHHN2016).
SAMPLE_ORIGIN = (362000.0, 5702000.0, 0.0)
SAMPLE_CRS = ("EPSG:25832", "EPSG:7837")
GROUND_Z = 60.0  # terrain height in the frame (normal height of the district)


@dataclass(frozen=True)
class SampleBuilding:
    oid: str
    parcel_key: str
    function: str
    centre: tuple[float, float]  # ENU east, north (m)
    size: tuple[float, float]  # width east, depth north (m)
    height: float  # above ground (m)
    quality: str


SAMPLE_BUILDINGS = [
    SampleBuilding(
        "DENW36AL1000aaaa", "05300000100010______", "Wohngebäude", (-30, 25), (22, 14), 14.0, "ok"
    ),
    SampleBuilding("DENW36AL1000bbbb", "05300000100020______", "Wohngebäude", (25, 25), (16, 16), 9.5, "ok"),
    SampleBuilding(
        "DENW36AL1000cccc", "05300000100030______", "Bürogebäude", (-25, -30), (26, 18), 24.0, "few_points"
    ),
    SampleBuilding(
        "DENW36AL1000dddd", "05300000100040______", "Garage", (30, -28), (12, 8), 3.5, "fallback_height"
    ),
]

# Colours of the sample style (sRGB); the browser test looks for them in the screenshot.
FUNCTION_COLOURS = {"Wohngebäude": "#e07b39", "Bürogebäude": "#3974e0", "Garage": "#b0b0b0"}


def _box_mesh(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """24 vertices (flat normals) and 12 triangles of an axis-aligned box in ENU."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    faces = [  # 4 corners counter-clockwise seen from outside, normal
        ([(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)], (0, 0, 1)),
        ([(x0, y1, z0), (x1, y1, z0), (x1, y0, z0), (x0, y0, z0)], (0, 0, -1)),
        ([(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)], (0, -1, 0)),
        ([(x1, y1, z0), (x0, y1, z0), (x0, y1, z1), (x1, y1, z1)], (0, 1, 0)),
        ([(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)], (1, 0, 0)),
        ([(x0, y1, z0), (x0, y0, z0), (x0, y0, z1), (x0, y1, z1)], (-1, 0, 0)),
    ]
    pos = np.array([c for f, _ in faces for c in f], dtype=np.float64)
    nrm = np.array([n for _, n in faces for _ in range(4)], dtype=np.float64)
    idx = np.array([[4 * i, 4 * i + 1, 4 * i + 2, 4 * i, 4 * i + 2, 4 * i + 3] for i in range(6)]).ravel()
    return pos, nrm, idx


def buildings_glb(buildings: list[SampleBuilding]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """One GLB with every building as a feature (EXT_mesh_features + EXT_structural_metadata)."""
    pos_l, nrm_l, idx_l, fid_l = [], [], [], []
    for i, b in enumerate(buildings):
        cx, cy = b.centre
        w, d = b.size
        lo = np.array([cx - w / 2, cy - d / 2, GROUND_Z])
        hi = np.array([cx + w / 2, cy + d / 2, GROUND_Z + b.height])
        p, nr, ix = _box_mesh(lo, hi)
        idx_l.append(ix + 24 * i)
        pos_l.append(p)
        nrm_l.append(nr)
        fid_l.append(np.full(24, i, dtype=np.uint16))
    pos = np.concatenate(pos_l)
    gb = GltfBuilder()
    gb.use_extension("EXT_mesh_features")
    attrs = {
        "POSITION": gb.add_accessor(enu_to_gltf(pos).astype(np.float32), with_bounds=True),
        "NORMAL": gb.add_accessor(enu_to_gltf(np.concatenate(nrm_l)).astype(np.float32)),
        "_FEATURE_ID_0": gb.add_accessor(np.concatenate(fid_l)),
    }
    indices = gb.add_accessor(np.concatenate(idx_l).astype(np.uint16), target=ELEMENT_ARRAY_BUFFER)
    gb.json["materials"] = [
        {"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0, "roughnessFactor": 1}}
    ]
    n = len(buildings)
    prim = {
        "attributes": attrs,
        "indices": indices,
        "material": 0,
        "mode": TRIANGLES,
        "extensions": {
            "EXT_mesh_features": {
                "featureIds": [{"featureCount": n, "attribute": 0, "propertyTable": 0, "label": "building"}]
            }
        },
    }
    gb.add_node(gb.add_mesh([prim]))
    set_metadata_schema(
        gb,
        {
            "id": "ruhrtwin_buildings",
            "classes": {
                "building": {
                    "properties": {
                        "oid": {"type": "STRING"},
                        "parcel_key": {"type": "STRING"},
                        "function": {"type": "STRING"},
                        "height": {"type": "SCALAR", "componentType": "FLOAT32"},
                        "base_height": {"type": "SCALAR", "componentType": "FLOAT32"},
                        "quality": {"type": "STRING"},
                    }
                }
            },
        },
    )
    add_property_table(
        gb,
        "building",
        {
            "oid": [b.oid for b in buildings],
            "parcel_key": [b.parcel_key for b in buildings],
            "function": [b.function for b in buildings],
            "height": np.array([b.height for b in buildings], dtype=np.float32),
            "base_height": np.full(n, GROUND_Z, dtype=np.float32),
            "quality": [b.quality for b in buildings],
        },
        n,
    )
    lo = pos.min(axis=0)
    hi = pos.max(axis=0)
    return gb.to_glb(), lo, hi


def sample_points(n_side: int = 60, extent: float = 100.0, noise: bool = False) -> dict[str, np.ndarray]:
    """A ground grid plus roof points over the sample buildings (ENU), with colour/class/intensity;
    `noise`: plus a cloud of AdV 18 (noise) points in the sky."""
    g = np.linspace(-extent, extent, n_side)
    gx, gy = np.meshgrid(g, g)
    x, y = gx.ravel(), gy.ravel()
    z = np.full_like(x, GROUND_Z) + 0.3 * np.sin(x / 17.0) * np.cos(y / 13.0)
    cls = np.full(x.shape, 2, dtype=np.uint8)  # AdV 2 = ground
    on_roof = np.zeros(x.shape, dtype=bool)
    for b in SAMPLE_BUILDINGS:
        cx, cy = b.centre
        w, d = b.size
        inside = (np.abs(x - cx) < w / 2) & (np.abs(y - cy) < d / 2)
        z[inside] = GROUND_Z + b.height + 0.1
        on_roof |= inside
    cls[on_roof] = 20  # AdV 20 = non-ground
    rgb = np.zeros((x.size, 3), dtype=np.uint8)
    rgb[:] = (40, 200, 60)
    rgb[on_roof] = (200, 60, 200)
    intensity = ((np.hypot(x, y) / (extent * 1.5)) * 60000).astype(np.uint16)
    xyz = np.column_stack([x, y, z])
    if noise:  # AdV 18 (high noise): a yellow cloud floating 40-50 m above the open ground in the middle
        nx, ny = np.meshgrid(np.linspace(-8, 8, 17), np.linspace(-8, 8, 17))
        nz = GROUND_Z + 40 + (nx.ravel() + ny.ravel() + 16) * 0.3
        xyz = np.vstack([xyz, np.column_stack([nx.ravel(), ny.ravel(), nz])])
        cls = np.concatenate([cls, np.full(nz.size, 18, dtype=np.uint8)])
        rgb = np.vstack([rgb, np.tile(np.array([[255, 255, 0]], dtype=np.uint8), (nz.size, 1))])
        intensity = np.concatenate([intensity, np.full(nz.size, 7, dtype=np.uint16)])
    return {"xyz": xyz, "rgb": rgb, "classification": cls, "intensity": intensity}


def points_glb(pts: dict[str, np.ndarray]) -> tuple[bytes, np.ndarray, np.ndarray]:
    xyz = pts["xyz"]
    gb = GltfBuilder()
    # sRGB -> linear for glTF COLOR_0
    srgb = pts["rgb"].astype(np.float64) / 255.0
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    attrs = {
        "POSITION": gb.add_accessor(enu_to_gltf(xyz).astype(np.float32), with_bounds=True),
        "COLOR_0": gb.add_accessor(np.round(lin * 255).astype(np.uint8), normalized=True),
        "_CLASSIFICATION": gb.add_accessor(pts["classification"]),
        "_INTENSITY": gb.add_accessor(pts["intensity"]),
    }
    set_metadata_schema(
        gb,
        {
            "id": "ruhrtwin_points",
            "classes": {
                "point": {
                    "properties": {
                        "classification": {"type": "SCALAR", "componentType": "UINT8"},
                        "intensity": {"type": "SCALAR", "componentType": "UINT16"},
                    }
                }
            },
        },
    )
    add_property_attribute(gb, "point", {"classification": "_CLASSIFICATION", "intensity": "_INTENSITY"})
    prim = {
        "attributes": attrs,
        "mode": POINTS,
        "extensions": {"EXT_structural_metadata": {"propertyAttributes": [0]}},
    }
    gb.add_node(gb.add_mesh([prim]))
    return gb.to_glb(), xyz.min(axis=0), xyz.max(axis=0)


def _tileset(frame: ProjectFrame, lo: np.ndarray, hi: np.ndarray, uri: str, error: float) -> dict[str, Any]:
    return {
        "asset": asset("1.1", "sample"),
        "geometricError": 100.0,
        "root": {
            "boundingVolume": {"box": box_from_bounds(lo, hi, pad=0.5)},
            "geometricError": error,
            "refine": "ADD",
            "content": {"uri": uri},
            "transform": frame.tile_transform(),
        },
    }


# change layer of the sample: one prism per change class (7 m x 7 m, 6 m high) in a row south of the
# buildings, coloured by the change palette (baked COLOR_0, like the change stage's tiles)
CHANGE_SAMPLE_Y = -70.0


def change_sample_centres() -> dict[str, tuple[float, float]]:
    from pipeline.styles.palettes import CHANGE

    return {str(e.value): (-70.0 + 20.0 * i, CHANGE_SAMPLE_Y) for i, e in enumerate(CHANGE)}


def write_sample_change(release_dir: Path, frame: ProjectFrame) -> dict[str, Any]:
    from pipeline.styles.palettes import CHANGE_COLOURS, change_style
    from pipeline.tiles.overlay_glb import feature_mesh_glb, grid_tilesets

    centres = change_sample_centres()
    pos_l, nrm_l, idx_l, fid_l = [], [], [], []
    for i, (cx, cy) in enumerate(centres.values()):
        p, n, ix = _box_mesh(
            np.array([cx - 3.5, cy - 3.5, GROUND_Z]), np.array([cx + 3.5, cy + 3.5, GROUND_Z + 6])
        )
        idx_l.append(ix.reshape(-1, 3) + 24 * i)
        pos_l.append(p)
        nrm_l.append(n)
        fid_l.append(np.full(24, i))
    pos = np.concatenate(pos_l)
    fid = np.concatenate(fid_l)
    classes = list(centres)
    colours = np.array([CHANGE_COLOURS[c] for c in classes], dtype=np.uint8)[fid]
    glb = feature_mesh_glb(
        pos,
        np.concatenate(nrm_l),
        np.concatenate(idx_l),
        fid,
        colours,
        class_id="change",
        columns={"id": [f"DENW36AL2000{c[:4].upper()}" for c in classes], "change_class": classes},
    )
    write_atomic(release_dir / "change" / "tiles" / "0_0.glb", glb)
    docs = grid_tilesets(
        [(0, 0, "tiles/0_0.glb", pos.min(axis=0), pos.max(axis=0))], frame.tile_transform(), "sample"
    )
    write_json(release_dir / "change" / "tileset.json", docs["tileset.json"])
    write_json(release_dir / "change" / "style.json", change_style())
    return {
        "name": "change",
        "kind": "change",
        "access": "public",
        "tileset": "change/tileset.json",
        "style": "change/style.json",
        "files": ["change/tiles/0_0.glb", "change/tileset.json", "change/style.json"],
        "stats": {"classes": dict.fromkeys(classes, 1)},
        "warnings": [],
    }


PARCELS_SAMPLE_Y = -90.0
PARCELS_SAMPLE_GRZ = (0.1, 0.3, 0.5, 0.7, 0.9)  # one parcel per GRZ class of the palette
PARCELS_SAMPLE_STREET = (30.0, PARCELS_SAMPLE_Y)  # a street parcel (land use traffic, GRZ 0 like a garden)
PARCELS_SAMPLE_HALF = 8.0  # the parcels are 16 m squares


def parcels_sample_centres() -> list[tuple[float, float]]:
    return [(-70.0 + 20.0 * i, PARCELS_SAMPLE_Y) for i in range(len(PARCELS_SAMPLE_GRZ))]


def write_sample_parcels(release_dir: Path, frame: ProjectFrame) -> dict[str, Any]:
    """A parcels overlay as the overlays layer writes it: flat parcels on the ground, unlit, coloured by
    their GRZ class or land-use class (the palette's colours baked into COLOR_0), `grz` and `land_use` in
    the property table, and the parcel edges as lines (the palette's outline colour) just above them."""
    from pipeline.stages.overlays import grz_colours
    from pipeline.styles.palettes import LAND_USE_COLOURS, PARCEL_OUTLINE
    from pipeline.tiles.overlay_glb import feature_mesh_glb, grid_tilesets

    pos_l, nrm_l, idx_l, fid_l, ring_l = [], [], [], [], []
    h = PARCELS_SAMPLE_HALF
    for i, (cx, cy) in enumerate([*parcels_sample_centres(), PARCELS_SAMPLE_STREET]):
        p, n, ix = _box_mesh(np.array([cx - h, cy - h, GROUND_Z]), np.array([cx + h, cy + h, GROUND_Z + 0.3]))
        idx_l.append(ix.reshape(-1, 3) + 24 * i)
        pos_l.append(p)
        nrm_l.append(n)
        fid_l.append(np.full(24, i))
        z = GROUND_Z + 0.35
        ring_l.append([[cx - h, cy - h, z], [cx + h, cy - h, z], [cx + h, cy + h, z], [cx - h, cy + h, z]])
    pos = np.concatenate(pos_l)
    fid = np.concatenate(fid_l)
    grz = np.array([*PARCELS_SAMPLE_GRZ, 0.0])
    land_use = [""] * len(PARCELS_SAMPLE_GRZ) + ["traffic"]
    colours = grz_colours(grz)
    colours[-1] = LAND_USE_COLOURS["traffic"]
    ring = np.array(ring_l, dtype=np.float64).reshape(-1, 3)
    k = np.arange(len(ring_l))[:, None] * 4
    segs = np.stack([k + np.arange(4), k + (np.arange(4) + 1) % 4], axis=-1).reshape(-1, 2)
    glb = feature_mesh_glb(
        pos,
        np.concatenate(nrm_l),
        np.concatenate(idx_l),
        fid,
        colours[fid],
        class_id="parcel",
        columns={
            "flstkennz": [f"05300000100{i:03d}______" for i in range(len(grz))],
            "land_use": land_use,
            "grz": grz,
        },
        unlit=True,
        outline_enu=ring,
        outline_segments=segs,
        outline_srgb=PARCEL_OUTLINE,
    )
    write_atomic(release_dir / "overlays" / "parcels" / "tiles" / "0_0.glb", glb)
    both = np.vstack([pos, ring])
    docs = grid_tilesets(
        [(0, 0, "tiles/0_0.glb", both.min(axis=0), both.max(axis=0))], frame.tile_transform(), "sample"
    )
    write_json(release_dir / "overlays" / "parcels" / "tileset.json", docs["tileset.json"])
    return {
        "name": "parcels",
        "kind": "overlay",
        "access": "public",
        "tileset": "overlays/parcels/tileset.json",
        "files": ["overlays/parcels/tiles/0_0.glb", "overlays/parcels/tileset.json"],
        "stats": {"parcels": len(grz)},
        "warnings": [],
    }


def sample_frame() -> ProjectFrame:
    h, v = SAMPLE_CRS
    return project_frame(CrsConfig(horizontal=h, vertical=v, frame_origin=SAMPLE_ORIGIN))


def _xyz_tile_range(lon0: float, lat0: float, lon1: float, lat1: float, z: int) -> tuple[range, range]:
    def tile(lon: float, lat: float) -> tuple[int, int]:
        n = 2**z
        x = int((lon + 180.0) / 360.0 * n)
        r = np.radians(lat)
        y = int((1.0 - np.log(np.tan(r) + 1.0 / np.cos(r)) / np.pi) / 2.0 * n)
        return x, y

    xa, ya = tile(lon0, lat1)
    xb, yb = tile(lon1, lat0)
    return range(xa, xb + 1), range(ya, yb + 1)


def write_sample_imagery(
    release_dir: Path, frame: ProjectFrame, zooms: tuple[int, ...] = (15, 16)
) -> list[str]:
    """A small XYZ pyramid (checkered PNGs) over the sample area, shaped like the imagery layer's."""
    from PIL import Image

    d = 0.003  # degrees around the frame origin
    bounds = (frame.lon - d * 1.6, frame.lat - d, frame.lon + d * 1.6, frame.lat + d)
    files = []
    for z in zooms:
        xs, ys = _xyz_tile_range(*bounds, z)
        for x in xs:
            for y in ys:
                a = np.zeros((256, 256, 3), dtype=np.uint8)
                a[:] = (96, 112, 80)
                a[(np.arange(256)[:, None] // 32 + np.arange(256)[None, :] // 32) % 2 == 1] = (120, 132, 96)
                path = release_dir / "imagery" / "xyz" / str(z) / str(x) / f"{y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(a).save(path, format="PNG")
                files.append(path.relative_to(release_dir).as_posix())
    meta = {
        "name": "orthophoto",
        "tiles": "xyz/{z}/{x}/{y}.png",
        "bounds": [round(b, 7) for b in bounds],
        "minzoom": min(zooms),
        "maxzoom": max(zooms),
    }
    write_json(release_dir / "imagery" / "imagery.json", meta)
    return [*files, "imagery/imagery.json"]


def write_sample_release(
    release_dir: Path,
    *,
    with_internal: bool = True,
    with_imagery: bool = False,
    with_change: bool = False,
    with_noise: bool = False,
    with_parcels: bool = False,
) -> dict[str, Any]:
    """Write the sample layers and manifest.json into `release_dir`; returns the manifest.

    `with_change`: a change layer with one prism per change class; `with_noise`: AdV 18 points in the sky;
    `with_parcels`: a parcels overlay with one parcel per GRZ class."""
    frame = sample_frame()
    release_dir.mkdir(parents=True, exist_ok=True)

    glb, lo, hi = buildings_glb(SAMPLE_BUILDINGS)
    write_atomic(release_dir / "buildings" / "0.glb", glb)
    write_json(release_dir / "buildings" / "tileset.json", _tileset(frame, lo, hi, "0.glb", 0.0))
    style = {
        "color": {
            "conditions": [
                *[[f"${{function}} === '{k}'", f"color('{v}')"] for k, v in FUNCTION_COLOURS.items()],
                ["true", "color('#ffffff')"],
            ]
        }
    }
    write_json(release_dir / "buildings" / "style.json", style)

    pts = sample_points(noise=with_noise)
    pglb, plo, phi = points_glb(pts)
    write_atomic(release_dir / "aerial_points" / "0.glb", pglb)
    write_json(release_dir / "aerial_points" / "tileset.json", _tileset(frame, plo, phi, "0.glb", 3.4))

    layers: list[dict[str, Any]] = [
        {
            "name": "aerial_points",
            "kind": "pointcloud",
            "access": "public",
            "tileset": "aerial_points/tileset.json",
            "stats": {
                "points": len(pts["xyz"]),
                "class_scheme": "adv",
                "classes": {
                    str(int(c)): int((pts["classification"] == c).sum())
                    for c in np.unique(pts["classification"])
                },
            },
            "warnings": [],
        },
        {
            "name": "buildings",
            "kind": "buildings",
            "access": "public",
            "tileset": "buildings/tileset.json",
            "style": "buildings/style.json",
            "stats": {"buildings": len(SAMPLE_BUILDINGS)},
            "warnings": [],
        },
    ]
    if with_change:
        layers.append(write_sample_change(release_dir, frame))
    if with_parcels:
        layers.append(write_sample_parcels(release_dir, frame))
    if with_imagery:
        files = write_sample_imagery(release_dir, frame)
        layers.insert(
            0,
            {
                "name": "imagery",
                "kind": "imagery",
                "access": "public",
                "files": files,
                "stats": {},
                "warnings": [],
            },
        )
    if with_internal:
        lon, lat = frame.lon, frame.lat
        gj = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [lon + dx * 1e-4, lat, 110.0]},
                    "properties": {"image_id": f"pano_{i:04d}", "time": 1000.0 + i, "heading": 90.0},
                }
                for i, dx in enumerate((-5, 0, 5))
            ],
        }
        write_json(release_dir / "panoramas" / "panoramas.geojson", gj)
        layers.append(
            {
                "name": "panoramas",
                "kind": "panoramas",
                "access": "internal",
                "files": ["panoramas/panoramas.geojson"],
                "stats": {"panoramas": 3},
                "warnings": [],
            }
        )
    manifest = {
        "name": "sample",
        "build_id": "sample0000000000",
        "crs": "EPSG:25832+7837",
        "frame": frame.to_json(),
        "layers": layers,
    }
    write_json(release_dir / "manifest.json", manifest)
    return manifest


# ---- LoD2 sample: one building per roof type, written by the buildings layer's own tile writer -------------
@dataclass(frozen=True)
class SampleRoof:
    oid: str
    roof_type: str  # '' = no LoD2 roof (LoD1 box)
    lod_source: str
    centre: tuple[float, float]  # ENU east, north (m)
    height: float  # ridge above ground (m)
    fallback_reason: str = ""


SAMPLE_ROOFS = [
    SampleRoof(
        f"DENW36AL3000{i:04d}", t, src, (-44.0 + 22.0 * (i % 5), 12.0 - 24.0 * (i // 5)), 8.0 + i % 3, why
    )
    for i, (t, src, why) in enumerate(
        [
            ("flat", "reconstructed", ""),
            ("shed", "reconstructed", ""),
            ("gable", "reconstructed", ""),
            ("hip", "reconstructed", ""),
            ("pyramid", "reconstructed", ""),
            ("multi", "reconstructed", ""),
            ("half_hip", "official", ""),
            ("mansard", "official", ""),
            ("", "lod1_fallback", "too_few_points"),
        ]
    )
]
SAMPLE_ROOF_SIZE = 12.0  # m, square footprints


def sample_roof_columns(roofs: list[SampleRoof]) -> dict[str, Any]:
    """The buildings' property table (the LoD2 columns of buildings.gpkg and the tiles)."""
    from pipeline.styles.palettes import ROOF_TYPES

    codes = {r.value: r.code for r in ROOF_TYPES}
    n = len(roofs)
    lod2 = np.array([r.roof_type != "" for r in roofs])
    ridge = np.array([GROUND_Z + r.height for r in roofs])
    return {
        "oid": [r.oid for r in roofs],
        "funktion_gruppe": ["Wohngebäude"] * n,
        "roof_height": ridge - np.where(lod2, 1.5, 0.0),
        "base_height": np.full(n, GROUND_Z),
        "height": ridge - GROUND_Z,
        "roof_type": [r.roof_type for r in roofs],
        "roof_type_code": [codes.get(r.roof_type, "") for r in roofs],
        "roof_planes": np.array([1 if r.roof_type in ("flat", "shed") else 4 for r in roofs], dtype=np.int32),
        "roof_slope_mean": np.where(lod2, 32.5, np.nan),
        "eave_height": np.where(lod2, ridge - 3.0, np.nan),
        "ridge_height": np.where(lod2, ridge, np.nan),
        "roof_rmse": np.array([0.07 if r.lod_source == "reconstructed" else np.nan for r in roofs]),
        "roof_n_points": np.array(
            [312 if r.lod_source == "reconstructed" else 0 for r in roofs], dtype=np.int32
        ),
        "lod2_fallback_reason": [r.fallback_reason for r in roofs],
        "lod_source": [r.lod_source for r in roofs],
    }


def roofs_glb(roofs: list[SampleRoof], center: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """One 3D Tiles 1.1 building tile as the buildings layer writes it (pipeline.tiles.buildings_glb): a
    box per building with its surfaces (top = roof, sides = wall, bottom = ground) in `_SURFACE`."""
    from pipeline.stages.buildings.reconstruct import ROOF_COLUMNS
    from pipeline.tiles.buildings_glb import building_glb

    pos_l, nrm_l, idx_l, fid_l, srf_l = [], [], [], [], []
    h = SAMPLE_ROOF_SIZE / 2
    for i, r in enumerate(roofs):
        cx, cy = r.centre
        p, nrm, ix = _box_mesh(
            np.array([cx - h, cy - h, GROUND_Z]), np.array([cx + h, cy + h, GROUND_Z + r.height])
        )
        pos_l.append(p)
        nrm_l.append(nrm)
        idx_l.append(ix + 24 * i)
        fid_l.append(np.full(24, i))
        srf = np.ones(24, dtype=np.uint8)  # faces of _box_mesh: top, bottom, then the four sides
        srf[:4], srf[4:8] = 0, 2
        srf_l.append(srf)
    pos = np.concatenate(pos_l)
    glb = building_glb(
        pos,
        np.concatenate(nrm_l),
        np.concatenate(idx_l),
        np.concatenate(fid_l),
        center,
        sample_roof_columns(roofs),
        descriptions=dict(ROOF_COLUMNS),
        surfaces=np.concatenate(srf_l),
    )
    return glb, pos.min(axis=0), pos.max(axis=0)


def write_sample_roofs_release(release_dir: Path, roofs: list[SampleRoof] | None = None) -> dict[str, Any]:
    """A release with one LoD2 buildings layer (one building per roof type, one per model source, an LoD1
    fallback), its style JSON from the palette, manifest stats as the buildings layer writes them."""
    from pipeline.styles.palettes import roof_type_style

    roofs = SAMPLE_ROOFS if roofs is None else roofs
    frame = sample_frame()
    release_dir.mkdir(parents=True, exist_ok=True)
    glb, lo, hi = roofs_glb(roofs, np.array([0.0, 0.0, GROUND_Z]))
    write_atomic(release_dir / "buildings" / "0.glb", glb)
    write_json(release_dir / "buildings" / "tileset.json", _tileset(frame, lo, hi, "0.glb", 0.0))
    write_json(release_dir / "buildings" / "style.json", roof_type_style())
    types = sorted({r.roof_type for r in roofs if r.roof_type})
    layer = {
        "name": "buildings",
        "kind": "buildings",
        "access": "public",
        "tileset": "buildings/tileset.json",
        "style": "buildings/style.json",
        "files": ["buildings/0.glb", "buildings/tileset.json", "buildings/style.json"],
        "stats": {
            "buildings": len(roofs),
            "lod": 2,
            "lod2": {
                "lod2": sum(1 for r in roofs if r.lod_source != "lod1_fallback"),
                "lod1_fallback": sum(1 for r in roofs if r.lod_source == "lod1_fallback"),
                "roof_types": {t: sum(1 for r in roofs if r.roof_type == t) for t in types},
            },
        },
        "warnings": [],
    }
    manifest = {
        "name": "sample-roofs",
        "build_id": "sample0000000001",
        "crs": "EPSG:25832+7837",
        "frame": frame.to_json(),
        "layers": [layer],
    }
    write_json(release_dir / "manifest.json", manifest)
    return manifest


# ---- shadow sample: one tower on dense ground points, and a block of vegetation points ------------------------
SHADOW_TOWER = SampleBuilding(
    "DENW36AL2000aaaa", "05300000200010______", "Bürogebäude", (0.0, 0.0), (16.0, 16.0), 20.0, "ok"
)
SHADOW_POINT_BLOCK = ((34.0, 40.0), (30.0, 36.0), (0.0, 12.0))  # ENU x, y, height above ground (m)


def shadow_sample_points(extent: float = 60.0, spacing: float = 0.5) -> dict[str, np.ndarray]:
    """Light grey ground points every `spacing` m (none under the tower) and a dense block of green
    vegetation points (SHADOW_POINT_BLOCK), for the shadow-study test."""
    g = np.arange(-extent, extent + 1e-9, spacing)
    gx, gy = np.meshgrid(g, g)
    x, y = gx.ravel(), gy.ravel()
    cx, cy = SHADOW_TOWER.centre
    w, d = SHADOW_TOWER.size
    keep = ~((np.abs(x - cx) < w / 2) & (np.abs(y - cy) < d / 2))
    ground = np.column_stack([x[keep], y[keep], np.full(keep.sum(), GROUND_Z)])
    (hx0, hx1), (hy0, hy1), (hz0, hz1) = SHADOW_POINT_BLOCK
    s = 0.3
    hx, hy, hz = np.meshgrid(np.arange(hx0, hx1, s), np.arange(hy0, hy1, s), np.arange(hz0, hz1, s))
    block = np.column_stack([hx.ravel(), hy.ravel(), GROUND_Z + hz.ravel()])
    xyz = np.vstack([ground, block])
    cls = np.concatenate([np.full(len(ground), 2, np.uint8), np.full(len(block), 5, np.uint8)])
    rgb = np.where(cls[:, None] == 2, np.array([[210, 210, 210]]), np.array([[60, 170, 60]])).astype(np.uint8)
    return {"xyz": xyz, "rgb": rgb, "classification": cls, "intensity": np.full(len(xyz), 1000, np.uint16)}


def write_sample_shadow_release(release_dir: Path) -> dict[str, Any]:
    """A release with one 20 m tower (buildings) standing on dense ground points and a block of
    vegetation points (aerial_points), for the viewer's shadow study test; returns the manifest."""
    frame = sample_frame()
    release_dir.mkdir(parents=True, exist_ok=True)
    glb, lo, hi = buildings_glb([SHADOW_TOWER])
    write_atomic(release_dir / "buildings" / "0.glb", glb)
    write_json(release_dir / "buildings" / "tileset.json", _tileset(frame, lo, hi, "0.glb", 0.0))
    pts = shadow_sample_points()
    pglb, plo, phi = points_glb(pts)
    write_atomic(release_dir / "aerial_points" / "0.glb", pglb)
    write_json(release_dir / "aerial_points" / "tileset.json", _tileset(frame, plo, phi, "0.glb", 0.0))
    classes = {str(int(c)): int((pts["classification"] == c).sum()) for c in np.unique(pts["classification"])}
    manifest = {
        "name": "shadow sample",
        "build_id": "shadow0000000000",
        "crs": "EPSG:25832+7837",
        "frame": frame.to_json(),
        "layers": [
            {
                "name": "aerial_points",
                "kind": "pointcloud",
                "access": "public",
                "tileset": "aerial_points/tileset.json",
                "stats": {"points": len(pts["xyz"]), "class_scheme": "adv", "classes": classes},
                "warnings": [],
            },
            {
                "name": "buildings",
                "kind": "buildings",
                "access": "public",
                "tileset": "buildings/tileset.json",
                "stats": {"buildings": 1},
                "warnings": [],
            },
        ],
    }
    write_json(release_dir / "manifest.json", manifest)
    return manifest
