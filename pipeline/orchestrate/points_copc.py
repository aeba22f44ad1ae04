"""COPC files and a virtual point cloud (.vpc) of a point layer, for QGIS (which cannot draw 3D Tiles
point clouds), written by the tiling run itself (`PointTilingOptions.copc`).

One COPC file per input file (`copc/<input name>.copc.laz`) and `<vpc_name>.vpc` over them, in the run's
output folder. The decode tasks of the run write the COPC records beside the tiles' spill files
(`pipeline.stages.points.copc_records`: the same decoded columns, attribute schema derived from the tiles'
attribute table), so every input is decoded once; after the decode, one task per input file builds its octree
and compresses it (`pipeline.tiles.copc`). A decode unit whose spill file comes from the content cache is
decoded again for its records (`points_cache.decode_unit`).

- positions: the build's working CRS (a file already in it keeps its integer coordinates, scale and offset
  exactly; any other is transformed by PROJ to 1 mm); standalone (`twin points --copc`) each file keeps its
  own coordinates and CRS label (or `--crs`);
- other LAS fields (user data, flags) are 0, scan angle too unless the layer exports it.

Memory: the records go to one file per input beside the spill files; the octree needs about 35 bytes per
point of the file, compression one node at a time.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.stages.points.copc_records import (
    CopcOptions,
    copc_schema,
    placement,
    records_path,
)
from pipeline.styles.pointcloud_qml import pointcloud_qml
from pipeline.tiles.copc import CopcResult, HeaderInfo, record_dtype, write_copc
from pipeline.tiles.vpc import VpcItem, pdal_schema, write_vpc

if TYPE_CHECKING:
    from pipeline.sources.pointcloud.header import PointFileInfo
    from pipeline.stages.points.decode import FileJob
    from pipeline.stages.points.spill import RecordLayout

COPC_DIR = "copc"


@dataclass
class CopcSummary:
    files: list[str] = field(default_factory=list)  # relative to the layer folder
    vpc: str = ""
    points: int = 0
    nodes: int = 0
    bytes: int = 0
    checksum: str = ""  # see tiles.copc_check.copc_checksum
    crs: str = ""  # name of the CRS of the files
    transformed: int = 0  # files whose positions were transformed into the target CRS
    classes: dict[int, int] = field(default_factory=dict)  # class code -> points
    style: str = ""  # QGIS style of the .vpc (relative to the layer folder)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        classes = {str(c): k for c, k in sorted(self.classes.items())}
        return {**dataclasses.asdict(self), "classes": classes, "seconds": round(self.seconds, 3)}


# ---- per file ---------------------------------------------------------------------------------------------


def copc_names(infos: list[PointFileInfo]) -> list[str]:
    """`<input name without .las/.laz/.copc/.e57>.copc.laz`, numbered when two inputs share a name."""
    stems = [re.sub(r"(\.copc\.laz|\.laz|\.las|\.e57)$", "", i.path.name, flags=re.IGNORECASE) for i in infos]
    seen: Counter[str] = Counter()
    out = []
    for s in stems:
        seen[s] += 1
        out.append(f"{s}.copc.laz" if stems.count(s) == 1 else f"{s}-{seen[s]}.copc.laz")
    return out


@dataclass(frozen=True)
class FileCopc:
    """What one input file's COPC task returns (small, picklable)."""

    result: CopcResult
    item: VpcItem  # its item of the .vpc (CRS, schema: no colour when the file has none and no orthophoto)
    transformed: bool  # positions transformed into the target CRS (else the input's integers)


def write_file_copc(
    fj: FileJob,
    file_index: int,
    side: CopcOptions,
    dest: str,
    layout: RecordLayout,
    crs_cfg: Any,
    threads: int = 1,
) -> FileCopc:
    """One input file's COPC file from the records its decode tasks wrote (a task: runs on a worker of the
    run's executor as well). The records file is removed afterwards."""
    info = fj.info
    pl = placement(fj, side.target_crs, crs_cfg, side.override)
    schema = layer_schema = copc_schema(layout.attributes)
    if schema.has_rgb and not info.has_rgb and not fj.orthophoto:  # no colour (or zero everywhere)
        schema = dataclasses.replace(layer_schema, has_rgb=False, has_nir=False)
    path = records_path(side.dir, file_index)
    recs = np.memmap(path, dtype=record_dtype(layer_schema), mode="r", shape=(info.count,))
    header = HeaderInfo(pl.scales, pl.offsets, pl.wkt, *info.las_header)
    try:
        kw = {} if side.max_node_points is None else {"max_node_points": side.max_node_points}
        res = write_copc(Path(dest), recs, header, schema, has_gps=layout.has_gps, threads=threads, **kw)
    finally:
        del recs
        path.unlink(missing_ok=True)
    href = f"./{COPC_DIR}/{Path(dest).name}"
    item = VpcItem(
        href, res.points, res.mins, res.maxs, pl.wkt, pdal_schema(schema, layout.has_gps), _datetime(header)
    )
    return FileCopc(res, item, pl.transformer is not None)


def _datetime(h: HeaderInfo) -> str:
    import datetime as dt

    if h.creation_year > 0 and 1 <= h.creation_day <= 366:
        d = dt.date(h.creation_year, 1, 1) + dt.timedelta(days=h.creation_day - 1)
        return f"{d.isoformat()}T00:00:00Z"
    return "1970-01-01T00:00:00Z"  # unknown (the header has no creation date)


def copc_tasks(plan: Any, side: CopcOptions, out_dir: Path, threads: int = 1) -> list[tuple[Any, ...]]:
    """After the decode of a run (`plan`, the COPC records its decode tasks wrote into `side.dir`): the
    `write_file_copc` argument tuples, one per input file, each writing `out_dir/copc/<name>`. `threads`:
    nodes each task compresses at once. The output does not depend on the threads or where tasks run."""
    final_dir = Path(out_dir) / COPC_DIR
    final_dir.mkdir()
    return [
        (fj, i, side, str(final_dir / name), plan.layout, plan.crs_cfg, threads)
        for i, (fj, name) in enumerate(zip(plan.file_jobs, copc_names(plan.infos), strict=True))
    ]


def layer_copc(
    plan: Any, side: CopcOptions, done: list[FileCopc], out_dir: Path, class_scheme: str, seconds: float
) -> CopcSummary:
    """The layer's COPC summary from its files' `write_file_copc` results (in `copc_tasks` order), with
    their QGIS style and `out_dir/<vpc_name>.vpc` written."""
    from pyproj import CRS

    names = copc_names(plan.infos)
    classes: Counter[int] = Counter()
    for fr in done:
        classes.update(fr.result.classes)
    # the layer's style (the tiles' class scheme), applied by QGIS when it opens the .vpc or a .copc.laz
    # (same name, .qml)
    qml = pointcloud_qml(class_scheme, sorted(classes))
    styles = [f"{COPC_DIR}/{name[: -len('.laz')]}.qml" for name in names]
    for style in [*styles, f"{side.vpc_name}.qml"]:
        (Path(out_dir) / style).write_text(qml, encoding="utf-8")
    write_vpc(Path(out_dir) / f"{side.vpc_name}.vpc", [fr.item for fr in done])
    crs_names = sorted({CRS.from_wkt(fr.item.wkt2).name for fr in done})
    return CopcSummary(
        files=[f"{COPC_DIR}/{name}" for name in names] + styles,
        vpc=f"{side.vpc_name}.vpc",
        points=sum(fr.result.points for fr in done),
        nodes=sum(fr.result.nodes for fr in done),
        bytes=sum(fr.result.bytes for fr in done),
        checksum=f"{sum(fr.result.checksum for fr in done) % (1 << 64):016x}",
        crs=" / ".join(crs_names),
        transformed=sum(fr.transformed for fr in done),
        classes=dict(classes),
        style=f"{side.vpc_name}.qml",
        seconds=seconds,
        notes=[f"the COPC files are in {len(crs_names)} CRSs: {crs_names}"] if len(crs_names) > 1 else [],
    )
