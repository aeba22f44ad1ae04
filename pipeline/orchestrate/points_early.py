"""Start a standalone run's decode tasks before its plan exists (local pool only).

On the local pool the workers are ready about 0.2 s after launch, while the main process still needs
0.1-0.3 s to import PROJ and to plan (CRS, frame, extent, lattice). Decompressing a
unit's LAZ chunks needs none of that. So right after the header scan, every decode task is submitted: the
first ones decompress their chunks at once, then wait for the plan file that `tile_pointcloud` publishes
(`tiling.decode_when_planned`), and finish as usual. Same tasks, same results and bytes; the idle start
of the workers is used. This module stays light (no pyproj, pydantic or rich) so that the CLI can start it
before it imports the rest.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from pipeline.errors import InputError
from pipeline.sources.pointcloud.header import PointFileInfo, plan_units, scan_file
from pipeline.stages.points.tiling import DecodeJob, FileJob, decode_when_planned, publish_plan


def scan_inputs(inputs: list[Path]) -> list[PointFileInfo]:
    """Header scan of the inputs, in the order that numbers them (file_index)."""
    if not inputs:
        raise InputError("no input files")
    return [scan_file(p) for p in sorted({Path(p).resolve() for p in inputs})]


def present_extra_dims(infos: list[PointFileInfo], wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The extra dimensions asked for that at least one input has (the record layout's)."""
    return tuple(d for d in wanted if any(d in i.extra_dims for i in infos))


def make_staging(out_dir: Path) -> Path:
    """The directory a run writes into, beside `out_dir` (renamed into place when complete)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


class EarlyDecode:
    """The decode tasks of a run, submitted before its plan; `publish` hands them the plan."""

    def __init__(self, inputs: list[Path], out_dir: Path, extra_dimensions: tuple[str, ...], pool):
        from pipeline.orchestrate.points_pool import phase_call, trace_mark

        self.t0 = time.perf_counter()
        self.infos = scan_inputs(inputs)
        self.units = plan_units(self.infos)
        self.extra_dims = present_extra_dims(self.infos, tuple(extra_dimensions))
        self.staging = make_staging(Path(out_dir).resolve())
        work = self.staging / ".work"
        work.mkdir()
        self.plan_path = work / "plan.pickle"
        self._published = False
        trace_mark("submit-early-decode")
        self.futures = [
            pool.submit(
                phase_call,
                "decode",
                decode_when_planned,
                self.infos[u.file_index],
                u,
                self.extra_dims,
                str(self.plan_path),
                os.getpid(),
                key=f"decode-{i}-{id(self)}",
            )
            for i, u in enumerate(self.units)
        ]

    def publish(self, file_jobs: list[FileJob], job: DecodeJob) -> None:
        publish_plan(self.plan_path, file_jobs, job)
        self._published = True

    def abandon(self) -> None:
        """The run failed before or while decoding: waiting tasks stop, queued ones are cancelled."""
        for f in self.futures:
            f.cancel()
        if not self._published:
            with contextlib.suppress(OSError):
                publish_plan(self.plan_path, None, None)
                self._published = True
