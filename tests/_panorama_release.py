"""A release with a real panorama layer: the demo's recording list and images of the tiny district (four
images), built by the panorama layer builder, next to the sample release's public layers.

Used by the panorama build, public-export and browser tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.buildlog import BuildLog
from pipeline.config.model import TwinConfig
from pipeline.crs import project_frame
from pipeline.orchestrate.context import BuildContext, InputFile, LayerResult
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
            "crs": {"frame_origin": [362100.0, 5716100.0, 0.0]},
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
