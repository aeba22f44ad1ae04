"""The types every layer builder, the release and the viewer share: what a builder receives (`BuildContext`,
`InputFile`) and returns (`LayerResult`). Below every package in the layer order (docs/architecture.md)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.buildlog import BuildLog
from pipeline.config.model import TwinConfig
from pipeline.crs import ProjectFrame

# the stages open in the calling thread (`BuildContext.stage`): a stage opened again inside itself is
# timed once, by the outer one (the build wraps every layer unit in a stage of its name, and some layer
# modules open the same stage themselves: timed twice, the unit's seconds were counted double)
_OPEN_STAGES: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("twin_open_stages", default=())

LayerKind = Literal[
    "pointcloud", "buildings", "terrain", "imagery", "overlay", "change", "panoramas", "viewer", "report"
]


@dataclass
class InputFile:
    """One raw input file with its content hash (incremental builds key on these)."""

    path: Path
    role: str  # e.g. "aerial:2024", "orthophoto", "cadastre", "mobile", "panoramas"
    size: int
    sha256: str

    def to_json(self, raw_dir: Path) -> dict[str, Any]:
        try:
            rel = self.path.relative_to(raw_dir).as_posix()
        except ValueError:
            rel = str(self.path)
        return {"path": rel, "role": self.role, "size": self.size, "sha256": self.sha256}


@dataclass
class LayerResult:
    """One layer of a release. `tileset` and `files` are relative to the release directory."""

    name: str
    kind: LayerKind
    access: Literal["public", "internal"]
    tileset: str | None = None
    files: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    style: str | None = None  # 3D Tiles style JSON beside the tileset, relative path

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "access": self.access}
        if self.tileset:
            d["tileset"] = self.tileset
        if self.style:
            d["style"] = self.style
        if self.files:
            d["files"] = sorted(self.files)
        d["stats"] = self.stats
        d["warnings"] = self.warnings
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class BuildContext:
    """Shared, read-only state of one build (the Dask client may be None for serial runs)."""

    cfg: TwinConfig
    build_id: str
    release_dir: Path  # staging directory of this release
    frame: ProjectFrame
    inputs: list[InputFile]
    log: BuildLog
    client: Any = None
    previous_release: Path | None = None  # last published release, for reuse of unchanged outputs
    reuse: Any = None  # pipeline.orchestrate.reuse.ReuseState of this build (set by run_build)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # aerial epoch -> (class scheme, why): `auto` decided from the files before any layer runs
    # (`orchestrate.class_schemes.class_scheme`)
    class_schemes: dict[str, tuple[str, str]] = field(default_factory=dict)
    # memoised by pipeline.orchestrate.cache (build_cache, input_sha256)
    # the build's content cache (`orchestrate.cache.build_cache`; typed Any: the model sits below orchestrate)
    _twin_cache: Any = field(default=None, init=False, repr=False, compare=False)
    _twin_sha_by_path: dict[Path, str] | None = field(default=None, init=False, repr=False, compare=False)
    # memoised by pipeline.orchestrate.terrain.delivery_infos: role -> header scan of a raster delivery
    # (shared by the stages' shallow copies of the context: each delivery's headers are read once a build)
    _twin_raster_infos: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def inputs_for(self, role_prefix: str) -> list[InputFile]:
        return [i for i in self.inputs if i.role == role_prefix or i.role.startswith(role_prefix + ":")]

    def warn(self, message: str, **fields: Any) -> None:
        self.warnings.append(message)
        self.log.event("warning", message=message, **fields)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name` (added to `timings`, logged); the same stage opened again inside
        itself is not timed (nor logged) a second time."""
        open_stages = _OPEN_STAGES.get()
        if name in open_stages:
            yield
            return
        token = _OPEN_STAGES.set((*open_stages, name))
        t0 = time.perf_counter()
        self.log.event("stage_start", stage=name)
        self.log.stage_start(name)
        try:
            yield
        finally:
            _OPEN_STAGES.reset(token)
            dt = time.perf_counter() - t0
            self.timings[name] = round(self.timings.get(name, 0.0) + dt, 3)
            self.log.event("stage_end", stage=name, seconds=round(dt, 3))
            self.log.stage_end(name, dt)

    def progress(self, label: str, done: int, total: int) -> None:
        """Countable progress of the running stage (drives the console progress bar)."""
        self.log.advance(label, done, total)
