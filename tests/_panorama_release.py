"""A release with a real panorama layer: the demo's recording list and images of the tiny district (four
images), built by the panorama layer builder, next to the sample release's public layers.

Used by the panorama build, public-export and browser tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely

from pipeline.buildlog import BuildLog
from pipeline.config.model import TwinConfig
from pipeline.crs import project_frame
from pipeline.model import BuildContext, InputFile, LayerResult
from pipeline.orchestrate.panoramas import build_panorama_layers
from pipeline.release.manifest import sha256_file
from pipeline.sources.demo import mobile as mob
from pipeline.sources.demo import streetview as sv
from pipeline.sources.demo.city import build_city
from pipeline.tiles.tileset import write_json

TINY_BOUNDS = (362000.0, 5716000.0, 362200.0, 5716200.0)
IMAGES = 4


@dataclass
class PanoramaRelease:
    release: Path
    raw: Path
    rows: list[tuple[float, float, float, float, float, str]]  # the CSV rows
    image_ids: list[str]  # rows with an image, in track order
    layer: LayerResult
    cfg: TwinConfig
    city: Any


def panorama_config(tmp: Path, **mobile: Any) -> TwinConfig:
    return TwinConfig.model_validate(
        {
            "name": "pano",
            "paths": {"raw": str(tmp / "raw"), "out": str(tmp / "out"), "cache": str(tmp / "cache")},
            "crs": {  # a position list declares no CRS: the working CRS is configured
                "horizontal": "EPSG:25832",
                "vertical": "EPSG:7837",
                "frame_origin": [362100.0, 5716100.0, 0.0],
            },
            "sources": {
                "mobile": {
                    "panoramas": "mobile/panoramas.csv",
                    "panorama_images": "mobile/panoramas/*.jpg",
                    **mobile,
                }
            },
            "base_dir": str(tmp),
        }
    )


def write_demo_panoramas(raw: Path, count: int = IMAGES):
    """The tiny demo's panorama list and `count` images under `raw/mobile`; (city, rows, image ids)."""
    city = build_city(42, TINY_BOUNDS, ("2021", "2024"))
    rows = mob.panoramas(city)
    (raw / "mobile").mkdir(parents=True, exist_ok=True)
    mob.write_panoramas(raw / "mobile" / "panoramas.csv", rows)
    files = sv.write_panorama_images(raw / "mobile" / "panoramas", city, rows, count)
    return city, rows, [p.stem for p in files]


def inputs_of(cfg: TwinConfig) -> list[InputFile]:
    from pipeline.orchestrate.inputs import source_files

    return [InputFile(p.resolve(), role, p.stat().st_size, sha256_file(p)) for role, p in source_files(cfg)]


def build_layer(cfg: TwinConfig, release: Path, inputs: list[InputFile]) -> LayerResult:
    release.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(
        cfg=cfg,
        build_id="pano0000",
        release_dir=release,
        frame=project_frame(cfg.crs),
        inputs=inputs,
        log=BuildLog(quiet=True),
    )
    (res,) = build_panorama_layers(ctx, [])
    return res


def write_panorama_release(tmp: Path, *, with_sample: bool = True) -> PanoramaRelease:
    """A release folder with the demo panorama layer (internal) and, `with_sample`, the sample's public
    layers; the manifest lists the panorama inputs as a build does."""
    from pipeline.viewer.sample import write_sample_release

    raw = tmp / "raw"
    city, rows, image_ids = write_demo_panoramas(raw)
    cfg = panorama_config(tmp)
    release = tmp / "release"
    manifest: dict[str, Any] = {"name": "pano", "build_id": "pano0000", "crs": "EPSG:25832+7837"}
    if with_sample:
        manifest = write_sample_release(release, with_internal=False)
    inputs = inputs_of(cfg)
    layer = build_layer(cfg, release, inputs)
    manifest["layers"] = [*manifest.get("layers", []), layer.to_json()]
    manifest["inputs"] = [i.to_json(cfg.raw_dir) for i in inputs]
    if not with_sample:
        manifest["frame"] = project_frame(cfg.crs).to_json()
    write_json(release / "manifest.json", manifest)
    return PanoramaRelease(release, raw, rows, image_ids, layer, cfg, city)


def first_building(
    city: Any, x: float, y: float, bearing: float, reach: float = 60.0, z: float | None = None
):
    """(structure index, distance) of the first epoch-2 building along the horizontal ray from (x, y) at
    `bearing` (degrees clockwise from grid north), or None when a tree crown (its disc) lies on the way or
    nothing is within reach. With the camera height `z`, a crown whose bottom lies above both the camera
    and the wall bands (`wall_band_elevations`) does not count: the rays to the wall pass below it.
    Independent of the renderer (shapely geometry of the demo city)."""
    b = math.radians(bearing)
    ray = shapely.LineString([(x, y), (x + reach * math.sin(b), y + reach * math.cos(b))])
    best = None
    for i, s in enumerate(city.structures):
        if not s.present[1] or not ray.intersects(s.geom):
            continue
        d = shapely.Point(x, y).distance(ray.intersection(s.geom))
        if best is None or d < best[1]:
            best = (i, d)
    if best is None:
        return None
    t = city.trees
    crowns = shapely.buffer(shapely.points(t.x, t.y), t.radius)
    seg = shapely.LineString([(x, y), ray.interpolate(best[1] + 0.3).coords[0]])
    blocking = shapely.intersects(crowns, seg)
    if z is not None:
        s = city.structures[best[0]]
        ray_top = max(z, s.base + 2.6) + 0.3
        bottom = city.terrain(t.x, t.y) + t.crown_base
        blocking &= bottom < ray_top
    if blocking.any():
        return None
    return best


def wall_band_elevations(city: Any, index: int, distance: float, z: float) -> list[float]:
    """Elevation angles (degrees) from a camera at height `z` of the wall bands between the window rows
    (0.5 m and 2.6 m above the building's base) at `distance`, below the eave."""
    s = city.structures[index]
    out = []
    for rel in (0.5, 2.6):
        if rel < s.roof_in(1).eave:
            out.append(math.degrees(math.atan2(s.base + rel - z, distance + 0.15)))
    return out
