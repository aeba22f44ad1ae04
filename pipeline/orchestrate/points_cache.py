"""Incremental point tiling: decode units and bins cached by content (see docs/operations.md).

- A **decode unit** (a contiguous point range of one input file) is keyed by the file's sha256, the unit's
  range, the file's CRS and z factor, the orthophoto hashes (colour), the project frame, the CRS section,
  the record layout, the class handling and the octree cube. Its cache entry holds the spill files
  (`u*.rec`) and `part.json`; an unchanged input file is never decoded again.
- A **bin** (an octree node processed as one task) is keyed by its node id and, for every spill part it
  reads, the part's decode key and index range, plus the tile job (cube, layout, format, tile size,
  schema, meshopt). Its cache entry holds the bin's tiles (`content/...`), the points it promotes to the
  tiles above the bins (`upper.bin`) and `result.json`. On a hit the tiles are hard-linked into the
  staging folder: the same inode as in the release that built them, not rewritten.
- Tiles above the bins and the tileset JSON are recomputed every time from the cached promoted points
  (small); the sampling is deterministic, so unchanged ancestors come out byte-identical (and the release
  machinery hard-links them to the previous release).

`CachedTasks` is the cached variant of the run (pipeline.orchestrate.points_run.Tasks, wrapped). The `Cache`
(pipeline.orchestrate.cache) adds the pipeline fingerprint to every key, so code changes invalidate
everything. Functions here run on Dask workers; only paths and small records are returned.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pipeline.orchestrate.executor import Executor, map_ordered
from pipeline.orchestrate.points_run import Tasks
from pipeline.sources.pointcloud.header import WorkUnit
from pipeline.stages.points.decode import DecodeJob, FileJob, decode_to_spill
from pipeline.stages.points.spill import SpillPart
from pipeline.stages.points.tiling import BinResult, BinSpec, TileJob, TileRecord, process_bin

DECODE_META = "part.json"
BIN_META = "result.json"
UPPER = "upper.bin"


def decode_key_parts(
    fj: FileJob, unit: WorkUnit, job: DecodeJob, sha256: str, ortho_sha256: tuple[str, ...]
) -> list[Any]:
    """What a decode unit's spill output depends on (never paths: the project may move)."""
    return [
        "points-decode-v2",
        sha256,
        {
            "start": unit.start,
            "count": unit.count,
            "byte_start": unit.byte_start,
            "byte_len": unit.byte_len,
            "chunks": [list(c) for c in unit.chunks],
            "scan": unit.scan,
        },
        {
            "crs_wkt": fj.crs_wkt,
            "z_factor": fj.z_factor,
            "ortho": list(ortho_sha256) if fj.orthophoto else [],
        },
        [list(b) for b in fj.ortho_bands],
        job.frame.to_json(),
        job.crs_config().model_dump(mode="json"),
        dataclasses.asdict(job.layout),
        job.class_scheme,
        job.keep_unknown,
        dataclasses.asdict(job.cube) if job.cube is not None else None,
    ]


def decode_cached(fj: FileJob, unit: WorkUnit, job: DecodeJob, cache: Any, key_parts: list[Any]) -> SpillPart:
    """`decode_to_spill` through the content cache: the spill files live in the cache entry."""

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        part = decode_to_spill(fj, unit, dataclasses.replace(job, spill_dir=str(tmp)))
        if part.outside is not None:  # not a result to keep: the planner widens the bounds and reruns
            raise _Uncached(part)
        meta = {
            "count": part.count,
            "rec": Path(part.rec_path).name,
            "lo_mm": list(part.lo_mm),
            "hi_mm": list(part.hi_mm),
            "class_codes": list(part.class_codes),
            "rgb_max": part.rgb_max,
        }
        (tmp / DECODE_META).write_text(json.dumps(meta, sort_keys=True))

    try:
        entry = cache.get_or_build(key_parts, build)
    except _Uncached as e:
        return e.part
    meta = json.loads((entry / DECODE_META).read_text())
    return SpillPart(
        unit.unit_index,
        int(meta["count"]),
        str(entry / meta["rec"]),
        tuple(meta["lo_mm"]),
        tuple(meta["hi_mm"]),
        tuple(meta["class_codes"]),
        rgb_max=int(meta.get("rgb_max", -1)),
    )


class _Uncached(Exception):
    def __init__(self, part: SpillPart):
        super().__init__("uncached decode result")
        self.part = part


def bin_key_parts(spec: BinSpec, job: TileJob, unit_keys: dict[str, str]) -> list[Any]:
    """A bin's key: its octree node, the decode keys and ranges of the spill parts it reads, the tile job."""
    return [
        "points-bin-v1",
        spec.depth,
        spec.prefix,
        spec.count,
        [[unit_keys[p], a, b] for p, a, b in spec.ranges],
        dataclasses.asdict(job.cube),
        dataclasses.asdict(job.layout),
        job.fmt,
        job.max_points,
        dataclasses.asdict(job.schema),
        job.meshopt,
    ]


def process_bin_cached(spec: BinSpec, job: TileJob, cache: Any, key_parts: list[Any]) -> BinResult:
    """`process_bin` through the content cache; the bin's tiles are hard-linked into `job.out_dir`."""

    def build(tmp: Path) -> None:
        res = process_bin(spec, dataclasses.replace(job, out_dir=str(tmp)), str(tmp))
        if res.upper_path:
            os.replace(res.upper_path, tmp / UPPER)
        meta = {
            "depth": res.depth,
            "prefix": res.prefix,
            "tiles": [dataclasses.asdict(t) for t in res.tiles],
            "upper": UPPER if res.upper_path else None,
            "upper_count": res.upper_count,
            "min_index": res.min_index,
            "min_key": res.min_key,
            "min_hash": res.min_hash,
            "points": res.points,
        }
        (tmp / BIN_META).write_text(json.dumps(meta, sort_keys=True))

    def tiles_of(entry: Path) -> dict[str, Path]:
        return {
            t["uri"]: Path(job.out_dir) / t["uri"]
            for t in json.loads((entry / BIN_META).read_text())["tiles"]
        }

    entry = cache.materialize(cache.key(key_parts), build, tiles_of)
    meta = json.loads((entry / BIN_META).read_text())
    tiles = [
        TileRecord(**{**t, "lo_mm": tuple(t["lo_mm"]), "hi_mm": tuple(t["hi_mm"])}) for t in meta["tiles"]
    ]
    return BinResult(
        meta["depth"],
        meta["prefix"],
        tiles=tiles,
        upper_path=str(entry / meta["upper"]) if meta["upper"] else None,
        upper_count=meta["upper_count"],
        min_index=meta["min_index"],
        min_key=meta["min_key"],
        min_hash=meta["min_hash"],
        points=meta["points"],
    )


class CachedTasks(Tasks):
    """`Tasks` through the content cache: a decode unit or a bin whose key is in the cache is not run again
    (the spill files stay in their cache entries; a bin's tiles are hard-linked from its entry)."""

    def __init__(self, cache: Any, input_sha256: dict[str, str], ortho_sha256: tuple[str, ...]):
        self.cache = cache
        self.input_sha256 = input_sha256
        self.ortho_sha256 = ortho_sha256
        self.unit_keys: dict[str, str] = {}  # spill rec path -> content key of its decode unit (bin keys)

    def decode(
        self, executor: Executor | None, jobs: list[tuple[FileJob, WorkUnit, DecodeJob]], progress
    ) -> list[SpillPart]:
        items = [
            (
                fj,
                u,
                job,
                self.cache,
                decode_key_parts(fj, u, job, self.input_sha256[str(fj.info.path)], self.ortho_sha256),
            )
            for fj, u, job in jobs
        ]
        parts = map_ordered(executor, decode_cached, items, name="decode", progress=progress)
        for it, p in zip(items, parts, strict=True):
            self.unit_keys[p.rec_path] = self.cache.key(it[4])
        return parts

    def tile(
        self, executor: Executor | None, bins: list[BinSpec], tjob: TileJob, work: str, progress
    ) -> list[BinResult]:
        items = [(bn, tjob, self.cache, bin_key_parts(bn, tjob, self.unit_keys)) for bn in bins]
        return map_ordered(executor, process_bin_cached, items, name="tile", progress=progress)
