"""Fake layers for the release-machinery tests (no real geodata processing, milliseconds per tile).

`install()` replaces the build's layer table with two fake units that use the incremental helpers exactly
like real layers do: a public per-tile layer over the `dgm` inputs (file-granularity reuse, work on the
Dask client when there is one) and an internal layer over the `panoramas` inputs. Also importable in a
subprocess (`python -c "import tests._release_fakes as f; f.main([...])"`) for kill -9 tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from pipeline.model import BuildContext, LayerResult
from pipeline.orchestrate.cache import content_key, layer_config_key
from pipeline.orchestrate.reuse import record_outputs, reuse_files
from pipeline.tiles.tileset import write_atomic, write_json

SLEEP_ENV = "TWIN_FAKE_SLEEP"  # seconds per tile, to give kill tests a window


def render_tile(path: str, out: str) -> int:
    """'Process' one input tile: deterministic bytes derived from its content. Runs on Dask workers."""
    data = Path(path).read_bytes()
    body = b"".join(hashlib.sha256(data + bytes([k])).digest() for k in range(64))
    time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
    write_atomic(Path(out), body)
    return len(body)


def _tileset(children: list[str], version: str = "1.1") -> dict:
    box = [0, 0, 0, 50, 0, 0, 0, 50, 0, 0, 0, 10]
    return {
        "asset": {"version": version},
        "geometricError": 100,
        "root": {
            "boundingVolume": {"box": box},
            "geometricError": 10,
            "refine": "ADD",
            "children": [
                {"boundingVolume": {"box": box}, "geometricError": 0, "content": {"uri": c}} for c in children
            ],
        },
    }


def build_terrain_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    files = ctx.inputs_for("dgm")
    base = layer_config_key(ctx, "terrain")
    keys = {f"fake_terrain/{i.path.stem}.bin": content_key(base, i.sha256) for i in files}
    src = {f"fake_terrain/{i.path.stem}.bin": i.path for i in files}
    stale = reuse_files(ctx, keys)
    jobs = [(str(src[rel]), str(ctx.release_dir / rel)) for rel in stale]
    if ctx.client is not None and jobs:
        futs = ctx.client.map(render_tile, *zip(*jobs, strict=True), pure=False)
        for fut, rel in zip(futs, stale, strict=True):
            fut.result()
            record_outputs(ctx, {rel: keys[rel]})
    else:
        for (a, b), rel in zip(jobs, stale, strict=True):
            render_tile(a, b)
            record_outputs(ctx, {rel: keys[rel]})
    children = [Path(rel).name for rel in sorted(keys)]
    write_json(ctx.release_dir / "fake_terrain" / "tileset.json", _tileset(children))
    acc = ctx.cfg.layers.terrain.access
    return [
        LayerResult(
            "fake_terrain",
            "terrain",
            acc,
            tileset="fake_terrain/tileset.json",
            stats={"tiles": len(keys)},
        )
    ]


def build_panorama_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    files = ctx.inputs_for("panoramas")
    if not files:
        return []
    out = ctx.release_dir / "street_panoramas"
    names = []
    for i in files:
        rel = f"{i.path.stem}.bin"
        write_atomic(out / rel, hashlib.sha256(i.path.read_bytes()).digest())
        names.append(rel)
    write_json(out / "tileset.json", _tileset(names))
    write_json(out / "panorama-index.json", {"images": [i.path.name for i in files]})
    return [
        LayerResult(
            "panoramas",
            "panoramas",
            ctx.cfg.layers.panoramas.access,
            tileset="street_panoramas/tileset.json",
            files=["street_panoramas/panorama-index.json"],
        )
    ]


def build_viewer_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """A viewer that lists layers by reading manifest.json at runtime (names nothing itself)."""
    write_atomic(ctx.release_dir / "index.html", b"<html><script>fetch('manifest.json')</script></html>")
    return [LayerResult("viewer", "viewer", "public", files=["index.html"])]


def install() -> None:
    from pipeline.orchestrate import build

    me = __name__
    build._OPTIONAL_LAYERS[:] = [
        build.LayerUnit("terrain", me, "build_terrain_layers", ("dgm",), ("terrain",)),
        build.LayerUnit("panoramas", me, "build_panorama_layers", ("panoramas",), ("panoramas",)),
        build.LayerUnit("viewer", me, "build_viewer_layers", (), ("viewer",), ("*",)),
    ]


def make_project(root: Path, n_tiles: int = 6, panoramas: bool = True, extra: str = "") -> Path:
    """A fake project: `n_tiles` text 'DGM' tiles (+ 2 panorama files) and configs/fake.yaml."""
    raw = root / "data" / "raw"
    (raw / "dgm").mkdir(parents=True, exist_ok=True)
    for k in range(n_tiles):
        (raw / "dgm" / f"dgm1_32_{350 + k}_5700_1_nw.txt").write_text(f"tile {k}\n" + "1.0 2.0 3.0\n" * 50)
    pano = ""
    if panoramas:
        (raw / "gsc").mkdir(exist_ok=True)
        for k in range(2):
            (raw / "gsc" / f"pano_secret_{k}.json").write_text(
                json.dumps({"image": f"IMG_{k}", "heading": k})
            )
        pano = "  mobile:\n    panoramas: gsc/*.json\n    crs: EPSG:25832+7837\n"
    (root / "configs").mkdir(exist_ok=True)
    cfg = root / "configs" / "fake.yaml"
    cfg.write_text(
        "name: fake\n"
        "paths: {raw: ../data/raw, out: ../data/out, cache: ../data/cache}\n"
        # the fake text tiles declare no CRS: the working CRS is configured
        "crs: {horizontal: EPSG:25832, vertical: EPSG:7837, frame_origin: [350000.0, 5700000.0, 0.0]}\n"
        "runtime: {workers: 1}\n"
        "sources:\n  dgm:\n    path: dgm/*.txt\n"
        + pano
        + "release:\n  keep: 3\n  validate_gltf: false\n"
        + extra
    )
    return cfg


def main(argv: list[str]) -> int:
    install()
    from pipeline.cli.main import main as twin_main

    return twin_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
