"""`generate_demo`: write a complete, deterministic demo delivery (see the package docstring).

Measured on the development machine (2 cores shared with other jobs, load average 6-8 during the run):

* scale 1 (1 km², four 500 m tiles, 10 pulses/m²): 52 s wall in total for 20.8 M aerial points (two
  epochs), 2.4 M mobile points, 4 orthophoto + 4 DGM tiles, cadastre (917 records, 780 parcels) and
  truth; stage seconds: layout 1.1, cadastre 0.5, aerial simulation 20.1, aerial LAZ writing 12.2,
  rasters 10.6, mobile 6.6, truth 0.9. Peak memory about 0.9 GB.
* one 1 km tile at 10 pulses/m² (10.4 M points): simulation 10.8 s + LAZ writing 6.2 s.
* the figures above are for the earlier mobile density of 2 M returns per km². At the default 40 M per km²
  (DEFAULT_MOBILE_DENSITY, with 10 cm orthophotos) scale 1 writes 47.4 M mobile points (304 MB of LAZ).
  The mobile returns are made and written in pieces (`mobile.simulate_mobile`, ~1 M returns each, the
  same LAZ bytes as writing the tile at once): one 500 m tile's 13.5 M returns peak at 0.5 GB in a process
  of its own (28 s CPU), where holding, sorting and compressing them at once took most of a 3.6 GB peak.
  `twin demo` at scale 1: 157 s CPU (user 133.5 + sys 23.5) and a peak of 2.49 GB, against 166.5 s and
  3.58 GB before (same run conditions: shared 2 cores, load average 11-18, ~14 min wall each); what is
  left of the peak is one tile's 10 cm orthophoto render (2.08 GB measured alone). The tiny 200 m
  demo: 7.1 s CPU instead of 3.9 s, 1.95 M mobile points instead of 0.1 M.
* panorama images (8 x 2048 x 1024 JPEG, any scale): scene height field 0.3-0.45 s CPU, 0.06-0.08 s
  per image, 0.01 s per JPEG; the tiny demo's user+sys CPU grew from 2.5 s to 3.1-3.3 s, the stage's
  wall time was 1.8-2.0 s at load average 10-11 on the shared 2 cores.
* layout of a 10 km x 10 km district (scale 100: ~82 k structures, 204 k trees, 64 k parcels): 34 s
  and 0.66 GB; points and rasters are then made tile by tile, so memory stays bounded by one tile.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputError

# products written by the generator (sub-folders of `out`), removed by overwrite=True
DEMO_MARKER = ".twin-demo"  # proves `twin demo --overwrite` may replace the products
PRODUCT_DIRS = ("alkis", "aerial", "dop", "dgm", "mobile", "truth", "xplan", "lod2")
CADASTRE_FILE = "alkis/alkis_vereinfacht_demo.gpkg"
# independent random streams (SeedSequence([seed, stream, ...]))
STREAM_AERIAL, STREAM_DOP = 2, 3
# returns per km² of district: ~130 ground returns per m² within 5 m of a track, ~9 at 10-15 m (a real
# mobile mapping system records hundreds to thousands per m² near the vehicle); kerbs (5 cm profile
# bins) and overhead clearances need this density (docs/overlays.md, "Street space")
DEFAULT_MOBILE_DENSITY = 40.0e6
DEFAULT_PANORAMA_IMAGES = 8  # recording positions with a rendered 360° image (2048 x 1024 JPEG)


@dataclass
class DemoSummary:
    """What `generate_demo` wrote. `files` are paths relative to `out`, sorted."""

    out: Path
    seed: int
    scale: float
    size_m: float
    tile_m: float
    density: float
    epochs: tuple[str, str]
    bounds: tuple[float, float, float, float]
    counts: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (not in any file)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["epochs"] = list(self.epochs)
        d["bounds"] = list(self.bounds)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)


@contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t


class _NoProgress:
    def add_task(self, *_a: Any, **_k: Any) -> int:
        return 0

    def update(self, *_a: Any, **_k: Any) -> None:
        pass

    def advance(self, *_a: Any, **_k: Any) -> None:
        pass


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as p:
        yield p


def _check_args(
    seed: int,
    scale: float,
    size_m: float | None,
    tile_m: float,
    origin: tuple[float, float],
    density: float,
    epochs: tuple[str, str],
    dop_resolution: float,
    mobile_density: float,
) -> float:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"demo: seed must be a non-negative integer, got {seed!r}")
    if not scale > 0:
        raise ConfigError(f"demo: scale must be > 0, got {scale!r}")
    size = float(size_m) if size_m is not None else float(round(1000.0 * math.sqrt(scale)))
    if not size >= 20 or size != round(size):
        raise ConfigError(f"demo: the district side must be a whole number of metres >= 20, got {size!r}")
    if not tile_m >= 10 or tile_m != round(tile_m):
        raise ConfigError(f"demo: tile_m must be a whole number of metres >= 10, got {tile_m!r}")
    if any(v != round(v) for v in origin):
        raise ConfigError(f"demo: origin must be whole metres (it names the tiles), got {origin!r}")
    if not 0 < density <= 100:
        raise ConfigError(f"demo: density must be in (0, 100] points/m², got {density!r}")
    if len(epochs) != 2 or epochs[0] == epochs[1] or not all(e and e.isalnum() for e in epochs):
        raise ConfigError(f"demo: epochs must be two different alphanumeric names, got {epochs!r}")

    def divides(length: float) -> bool:
        return abs(length / dop_resolution - round(length / dop_resolution)) < 1e-6

    if not 0.05 <= dop_resolution <= 2 or not divides(tile_m) or not divides(size % tile_m):
        raise ConfigError(
            f"demo: dop_resolution must divide the tile size and the district side, got {dop_resolution!r}"
        )
    if mobile_density < 0:
        raise ConfigError(f"demo: mobile_density must be >= 0, got {mobile_density!r}")
    return size


def _prepare_out(out: Path, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    existing = [d for d in (*PRODUCT_DIRS, "README.md") if (out / d).exists()]
    if existing and not overwrite:
        raise InputError(
            f"already holds a demo delivery ({', '.join(existing)}); use overwrite=True (--overwrite) "
            "to replace it or choose an empty directory",
            path=out,
        )
    readme = out / "README.md"
    ours = (out / DEMO_MARKER).is_file() or (
        readme.is_file() and readme.read_text(errors="replace").startswith("# RuhrTwin demo delivery")
    )
    if existing and not ours:  # never delete a real delivery that happens to use the same folder names
        raise InputError(
            f"holds {', '.join(existing)} but no demo delivery (no {DEMO_MARKER} marker, no demo README.md); "
            "--overwrite only replaces a demo delivery. Choose an empty directory",
            path=out,
        )
    from pipeline.fsutil import remove_owned

    for d in existing:
        remove_owned(out / d, owned_by=out)
    (out / DEMO_MARKER).write_text("written by `twin demo`; --overwrite replaces this folder's products\n")


def generate_demo(
    out: Path,
    *,
    seed: int = 42,
    scale: float = 1.0,
    size_m: float | None = None,
    tile_m: float = 500.0,
    origin: tuple[float, float] = (362000.0, 5716000.0),
    density: float = 10.0,
    epochs: tuple[str, str] = ("2021", "2024"),
    mobile: bool = True,
    progress: bool = True,
    mobile_density: float = DEFAULT_MOBILE_DENSITY,
    dop_resolution: float = 0.1,
    overwrite: bool = False,
    panorama_images: int = DEFAULT_PANORAMA_IMAGES,
) -> DemoSummary:
    """Generate the demo district into `out` (see the package docstring for the layout).

    `size_m` is the side of the square district (default ``round(1000 * sqrt(scale))`` m: `scale`
    multiplies the area). Tiles of `tile_m` start at `origin` (the district's south-west corner).
    `density` is the mean aerial pulse density per m² of each epoch; `mobile_density` the number of
    mobile-mapping returns per km² of district; `panorama_images` the number of recording positions
    (consecutive, along one track) that get a 360° image (`mobile/panoramas/<image_id>.jpg`).
    Same arguments -> byte-identical files.
    """
    from pipeline.sources.demo import cadastre as cad
    from pipeline.sources.demo import mobile as mob
    from pipeline.sources.demo import points as pts
    from pipeline.sources.demo import rasters as ras
    from pipeline.sources.demo import truth as tru
    from pipeline.sources.demo.city import build_city
    from pipeline.sources.demo.grid import aerial_name, dgm_name, dop_name, mobile_name, tile_grid
    from pipeline.sources.demo.readme import write_readme

    started = time.perf_counter()
    epochs = (str(epochs[0]), str(epochs[1]))
    size = _check_args(seed, scale, size_m, tile_m, origin, density, epochs, dop_resolution, mobile_density)
    if not isinstance(panorama_images, int | np.integer) or panorama_images < 0:
        raise ConfigError(f"demo: panorama_images must be a non-negative integer, got {panorama_images!r}")
    images: list[Path] = []
    out = Path(out)
    _prepare_out(out, overwrite)
    bounds = (float(origin[0]), float(origin[1]), float(origin[0]) + size, float(origin[1]) + size)
    tiles = tile_grid(bounds, float(tile_m))
    files: list[Path] = []
    counts: dict[str, Any] = {"points": {e: 0 for e in epochs}, "mobile_points": 0}
    stages: dict[str, float] = {}

    with _progress(progress) as bar:
        t_layout = bar.add_task("layout + cadastre", total=3)
        with _timed(stages, "layout"):
            city = build_city(int(seed), bounds, epochs)
        bar.advance(t_layout)
        (out / "alkis").mkdir(parents=True, exist_ok=True)
        with _timed(stages, "cadastre"):
            layer_counts = cad.write_cadastre(out / CADASTRE_FILE, city)
        files.append(out / CADASTRE_FILE)
        bar.advance(t_layout)
        track_list = mob.tracks(city) if mobile else []
        total_track = sum(t.length for t in track_list)
        rate = mobile_density * (size * size / 1e6) / total_track if total_track > 0 else 0.0
        if mobile and track_list:
            (out / "mobile").mkdir(parents=True, exist_ok=True)
            rows = mob.panoramas(city)
            mob.write_panoramas(out / "mobile" / "panoramas.csv", rows)
            files.append(out / "mobile" / "panoramas.csv")
            counts["panoramas"] = len(rows)
            if panorama_images > 0:
                from pipeline.sources.demo.streetview import write_panorama_images

                with _timed(stages, "panorama images"):
                    images = write_panorama_images(out / "mobile" / "panoramas", city, rows, panorama_images)
                files += images
        else:
            counts["panoramas"] = 0
        bar.advance(t_layout)

        t_tiles = bar.add_task(f"tiles ({tile_m:g} m)", total=len(tiles))
        for d in (*(f"aerial/{e}" for e in epochs), "dop", "dgm"):
            (out / d).mkdir(parents=True, exist_ok=True)
        for tile in tiles:
            for e, epoch in enumerate(epochs):
                rng = np.random.default_rng(
                    np.random.SeedSequence([seed, STREAM_AERIAL, e, tile.ix, tile.iy])
                )
                with _timed(stages, "aerial_simulation"):
                    p = pts.simulate_aerial(city, tile, e, density, rng)
                path = out / "aerial" / epoch / aerial_name(tile, epoch)
                with _timed(stages, "aerial_write"):
                    pts.write_aerial_tile(path, p, tile, city, e)
                files.append(path)
                counts["points"][epoch] += len(p["x"])
                del p
            rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_DOP, tile.ix, tile.iy]))
            with _timed(stages, "rasters"):
                img = ras.render_orthophoto(city, tile, 1, dop_resolution, rng)
                path = out / "dop" / dop_name(tile, epochs[1])
                ras.write_orthophoto(path, img, tile, dop_resolution, epochs[1])
                files.append(path)
                del img
                path = out / "dgm" / dgm_name(tile, epochs[1])
                ras.write_dgm(path, ras.render_dgm(city, tile), tile, 1.0, epochs[1])
            files.append(path)
            if mobile and rate > 0:
                with _timed(stages, "mobile"):
                    # written in pieces as they are made: memory does not grow with the tile's points
                    pieces = mob.simulate_mobile(city, tile, track_list, rate, int(seed))
                    first = next(pieces, None)
                    if first is not None:  # None: no track near this tile
                        path = out / "mobile" / mobile_name(tile, epochs[1])
                        n = mob.write_mobile_tile(path, itertools.chain([first], pieces), tile, city)
                        files.append(path)
                        counts["mobile_points"] += n
                        del first
            bar.advance(t_tiles)

        t_truth = bar.add_task("truth + README", total=1)
        structures = city.structures
        counts.update(
            {
                "structures": len(structures),
                "buildings": sum(s.present[1] for s in structures),  # standing in the latest epoch
                "buildings_in_cadastre": sum(s.in_cadastre for s in structures),
                "cadastre_records": layer_counts[cad.BUILDING_LAYER],
                "bauteil_records": sum(p.kind == "bauteil" for p in city.parts),
                "underground_records": sum(p.kind == "underground" for p in city.parts),
                "invalid_geometries": sum(s.invalid_reason is not None for s in structures),
                "unregistered": sum(not s.in_cadastre for s in structures),
                "parcels": layer_counts[cad.PARCEL_LAYER],
                "trees": len(city.trees.x),
                "tiles": len(tiles),
            }
        )
        (out / "truth").mkdir(parents=True, exist_ok=True)
        meta = {
            "generator": "ruhrtwin demo",
            "parameters": {
                "seed": int(seed),
                "scale": float(scale),
                "size_m": size,
                "tile_m": float(tile_m),
                "origin": [float(origin[0]), float(origin[1])],
                "density": float(density),
                "epochs": list(epochs),
                "mobile": bool(mobile),
                "mobile_density": float(mobile_density),
                "dop_resolution": float(dop_resolution),
            },
            "bounds": list(bounds),
            "crs": "EPSG:25832+7837 (ETRS89 / UTM 32N + DHHN2016 normal heights)",
            "grid_rotation_deg": round(math.degrees(city.angle), 3),
            "classes": {"aerial_adv": pts.ADV_CLASSES, "mobile_asprs": pts.ASPRS_MOBILE_CLASSES},
            "counts": counts,
        }
        with _timed(stages, "truth"):
            counts["changes"] = tru.write_truth(out / "truth", city, meta)
        files += [out / "truth" / n for n in ("buildings.csv", "changes.csv", "truth.json")]
        if mobile and track_list:
            from pipeline.sources.demo.street_truth import write_street_space_truth

            write_street_space_truth(out / "truth" / "street_space.csv", city)
            files.append(out / "truth" / "street_space.csv")
        # after truth.json: that file (and the README) stay as they were before the images existed
        counts["panorama_images"] = len(images)
        with _timed(stages, "zoning plan"):
            from pipeline.sources.demo.zoning import PLAN_FILE, TRUTH_FILE, write_zoning_plan

            counts["zoning"] = write_zoning_plan(out, seed)
        files += [out / PLAN_FILE, out / TRUTH_FILE]
        with _timed(stages, "official lod2"):
            from pipeline.sources.demo.lod2 import LOD2_DIR, write_lod2

            files += write_lod2(out / LOD2_DIR, city)
        summary = DemoSummary(
            out=out,
            seed=int(seed),
            scale=float(scale),
            size_m=size,
            tile_m=float(tile_m),
            density=float(density),
            epochs=epochs,
            bounds=bounds,
            counts=counts,
        )
        write_readme(out / "README.md", summary, city)
        files.append(out / "README.md")
        bar.advance(t_truth)

    summary.files = sorted(p.relative_to(out).as_posix() for p in files)
    summary.seconds = round(time.perf_counter() - started, 2)
    summary.stage_seconds = {k: round(v, 2) for k, v in stages.items()}
    return summary
