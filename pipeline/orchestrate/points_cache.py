"""Incremental point tiling: decode units and bins cached by content (see docs/operations.md).

- A **decode unit** (a contiguous point range of one input file) is keyed by the file's sha256, the unit's
  range, the file's CRS, z factor and orthophoto hashes, and the decode job without its paths. Its cache
  entry holds the spill file (`u*.rec`) and the decode's result: an unchanged input is decoded again only
  for the layer's COPC records (the cache keeps no COPC output).
- A **bin** (an octree node processed as one task) is keyed by its node, the decode keys and index ranges
  of the spill parts it reads, and the tile job without its output folder. Its entry holds the bin's tiles
  (`content/...`), the points it promotes to the tiles above the bins (`upper.bin`) and the bin's result;
  on a hit the tiles are hard-linked into the staging folder (the inode of the release that built them).
- Tiles above the bins and the tileset JSON are recomputed every time from the cached promoted points
  (small); the sampling is deterministic, so unchanged ancestors come out byte-identical.

`decode_unit` and `tile_bin` are the run's tasks (pipeline.orchestrate.points_run), through the `Cache`
(pipeline.orchestrate.cache: its keys include the pipeline fingerprint) when the run has one. They run on
workers; only paths and small records are returned.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.sources.pointcloud.header import WorkUnit
from pipeline.stages.points.decode import DecodeJob, FileJob, decode_to_spill
from pipeline.stages.points.spill import SpillPart
from pipeline.stages.points.tiling import BinResult, BinSpec, TileJob, process_bin

if TYPE_CHECKING:
    from pipeline.orchestrate.points_plan import PointTilingOptions

RESULT = "result.pickle"  # the task's result, its paths relative to the entry
UPPER = "upper.bin"


def decode_key(opts: PointTilingOptions, fj: FileJob, unit: WorkUnit, job: DecodeJob) -> str | None:
    """A decode unit's key in `opts.cache` (None without one): what its spill output depends on (never
    paths: the project may move; nor the unit's numbers in the run, the outside-bounds handling or the COPC
    side output)."""
    if opts.cache is None:
        return None
    return opts.cache.key(
        [
            "points-decode-v4",
            dict(opts.input_sha256)[str(fj.info.path)],
            {k: v for k, v in dataclasses.asdict(unit).items() if k not in ("file_index", "unit_index")},
            [
                fj.crs_wkt,
                fj.z_factor,
                [dict(opts.ortho_sha256)[p] for p in fj.orthophoto or ()],
                fj.ortho_bands,
            ],
            dataclasses.replace(job, spill_dir="", outside_bounds="", copc=None),
        ]
    )


def decode_unit(fj: FileJob, unit: WorkUnit, job: DecodeJob, cache: Any, key: str | None) -> SpillPart:
    """`decode_to_spill`; with a content `cache`, through it under `key` (`decode_key`): the spill file
    lives in the cache entry. A hit writes no COPC records (`job.copc`): for them the unit is decoded again
    and that spill file dropped."""
    if cache is None:
        return decode_to_spill(fj, unit, job)

    def build(tmp: Path) -> None:
        part = decode_to_spill(fj, unit, dataclasses.replace(job, spill_dir=str(tmp)))
        if part.outside is not None:  # not a result to keep: the planner widens the bounds and reruns
            raise _Uncached(part)
        _dump(tmp, dataclasses.replace(part, rec_path=Path(part.rec_path).name))

    try:
        entry = cache.materialize(key, build, {})
    except _Uncached as e:
        return e.args[0]
    if job.copc is not None:
        from pipeline.stages.points.copc_records import marker_path

        if not marker_path(job.copc.dir, unit.file_index, unit.start).is_file():
            again = decode_to_spill(fj, unit, job)
            if again.outside is not None:  # as on a miss: the planner widens the bounds and reruns
                return again
            os.remove(again.rec_path)
    part = _load(entry)
    return dataclasses.replace(part, rec_path=str(entry / part.rec_path))


class _Uncached(Exception):
    """A decode result not to keep (`args[0]`: the SpillPart)."""


def _dump(entry: Path, result: Any) -> None:
    (entry / RESULT).write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def _load(entry: Path) -> Any:
    return pickle.loads((entry / RESULT).read_bytes())


def bin_key(
    opts: PointTilingOptions, spec: BinSpec, job: TileJob, unit_keys: dict[str, str | None]
) -> str | None:
    """A bin's key in `opts.cache` (None without one): its octree node, the decode keys and ranges of the
    spill parts it reads, the tile job (but its output folder)."""
    if opts.cache is None:
        return None
    ranges = [[unit_keys[p], a, b] for p, a, b in spec.ranges]
    return opts.cache.key(
        ["points-bin-v2", spec.depth, spec.prefix, spec.count, ranges, dataclasses.replace(job, out_dir="")]
    )


def tile_bin(spec: BinSpec, job: TileJob, work: str, cache: Any, key: str | None) -> BinResult:
    """`process_bin`; with a content `cache`, through it under `key` (`bin_key`): the bin's tiles are
    hard-linked from the cache entry into `job.out_dir`."""
    if cache is None:
        return process_bin(spec, job, work)

    def build(tmp: Path) -> None:
        res = process_bin(spec, dataclasses.replace(job, out_dir=str(tmp)), str(tmp))
        if res.upper_path:
            os.replace(res.upper_path, tmp / UPPER)
        _dump(tmp, dataclasses.replace(res, upper_path=UPPER if res.upper_path else None))

    def tiles_of(entry: Path) -> dict[str, Path]:
        return {t.uri: Path(job.out_dir) / t.uri for t in _load(entry).tiles}

    entry = cache.materialize(key, build, tiles_of)
    res = _load(entry)
    return dataclasses.replace(res, upper_path=str(entry / UPPER) if res.upper_path else None)
