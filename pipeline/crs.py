"""Coordinate reference systems, the geoid grid and the project east-north-up frame.

The height trap: NRW heights are DHHN2016 normal heights; 3D Tiles want ECEF (ellipsoidal). PROJ needs the
GCG2016 quasigeoid grid for that step and, without it, silently falls back to a "ballpark" operation that
leaves Z unchanged (about 45 m wrong in the Ruhr). We therefore always build transformers with
`allow_ballpark=False` and refuse loudly when the grid cannot be found.

All tile content is written in one fixed project ENU frame (metres, x east, y north, z up) whose origin is
fixed per project: float32 stays millimetre-exact near the origin, and tile ids/bytes stay stable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as _ProjCRSError
from pyproj.exceptions import ProjError

from pipeline.errors import CrsError, GeoidGridMissing
from pipeline.frame import ProjectFrame, enu_rotation  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # the helpers take a `config.CrsConfig` or a `PlainCrsConfig` (same fields)
    from pipeline.config.model import CrsConfig


@dataclass(frozen=True)
class PlainCrsConfig:
    """The fields of `config.CrsConfig`, without pydantic, for callers that have no project config
    (`twin points` starts ~0.1 s sooner without importing the configuration model). Same names and
    defaults (tested), and `model_dump_json` / `model_copy` as pydantic's, so it goes wherever a
    CrsConfig does."""

    horizontal: str = "EPSG:25832"
    vertical: str | None = "EPSG:7837"
    geoid_grid: Path | None = None
    assume_ellipsoidal_heights: bool = False
    frame_origin: tuple[float, float, float] | None = None
    frame_snap: float = 1000.0

    @property
    def compound(self) -> str:
        return f"{self.horizontal}+{self.vertical.split(':')[-1]}" if self.vertical else self.horizontal

    def model_dump_json(self) -> str:
        d: dict[str, Any] = asdict(self)
        d["geoid_grid"] = None if self.geoid_grid is None else str(self.geoid_grid)
        return json.dumps(d, separators=(",", ":"))

    def model_copy(self, update: dict[str, Any] | None = None) -> PlainCrsConfig:
        return replace(self, **(update or {}))


GEOID_GRID_NAME = "de_bkg_gcg2016.tif"
VENDORED_GRID_DIR = Path(__file__).parent / "data" / "grids"
ECEF = "EPSG:4978"
GEOGRAPHIC_3D = "EPSG:4979"

# Vertical CRSs whose transformation to the ellipsoid needs a grid we know how to provide.
_GRID_FOR_VERTICAL = {"7837": GEOID_GRID_NAME}

GRID_HELP = (
    "The German quasigeoid grid {name} is needed to turn DHHN2016 normal heights into ellipsoidal heights "
    "(without it every height would be about 45 m wrong). Get it with `projsync --file {name}` (internet), "
    "copy it into PROJ's data directory ({projdir}), or set `crs.geoid_grid: /path/to/{name}` in the config."
)


def grid_search_dirs(cfg: CrsConfig, use_vendored: bool = True) -> list[Path]:
    dirs = [Path(d) for d in pyproj.datadir.get_data_dir().split(":") if d]
    dirs.append(Path(pyproj.datadir.get_user_data_dir()))
    if use_vendored:
        dirs.append(VENDORED_GRID_DIR)
    return dirs


def locate_geoid_grid(cfg: CrsConfig, name: str = GEOID_GRID_NAME, use_vendored: bool = True) -> Path:
    """Find the geoid grid: explicit config path, then PROJ's data dirs, then the vendored copy."""
    if cfg.geoid_grid is not None:
        p = Path(cfg.geoid_grid)
        if not p.is_file():
            raise GeoidGridMissing(
                "configured geoid grid (crs.geoid_grid) does not exist. "
                + GRID_HELP.format(name=name, projdir=pyproj.datadir.get_data_dir()),
                path=p,
            )
        return p
    for d in grid_search_dirs(cfg, use_vendored):
        if (d / name).is_file():
            return d / name
    raise GeoidGridMissing(GRID_HELP.format(name=name, projdir=pyproj.datadir.get_data_dir()))


@cache
def _register_grid_dir(directory: str) -> None:
    pyproj.datadir.append_data_dir(directory)


def parse_crs(text: str, *, path: str | Path | None = None) -> CRS:
    try:
        return CRS.from_user_input(text)
    except _ProjCRSError as e:
        raise CrsError(f"unknown CRS {text!r}: {e}", path=path) from e


def vertical_code(crs: CRS) -> str | None:
    """EPSG code of the vertical component of a compound CRS (or None)."""
    for sub in crs.sub_crs_list or []:
        if sub.is_vertical:
            auth = sub.to_authority()
            return auth[1] if auth else sub.name
    return None


def has_vertical(crs: CRS) -> bool:
    return (
        crs.is_geocentric
        or bool(crs.sub_crs_list and any(s.is_vertical for s in crs.sub_crs_list))
        or (crs.is_geographic and len(crs.axis_info) == 3)
    )


def linear_unit_factor(crs: CRS) -> float:
    """Metres per unit of the CRS's first axis (0.3048 for international feet); 1.0 for angular or
    axis-less CRSs, whose units are not lengths."""
    ax = crs.axis_info
    if not ax or crs.is_geographic:
        return 1.0
    return float(ax[0].unit_conversion_factor or 1.0)


def working_crs(cfg: CrsConfig) -> CRS:
    return parse_crs(cfg.compound)


def resolve_source_crs(
    file_crs: CRS | None, override: str | None, cfg: CrsConfig, *, path: str | Path
) -> CRS:
    """The CRS to use for one input file. Never guesses: a missing CRS is an error naming the file.

    A horizontal-only CRS gets `cfg.vertical` added when the config declares the data's heights
    (`crs.vertical`), or is accepted as ellipsoidal when `assume_ellipsoidal_heights` is set.
    """
    if override:
        crs = parse_crs(override, path=path)
    elif file_crs is not None:
        crs = file_crs
    else:
        raise CrsError(
            "file has no CRS (no WKT / GeoTIFF keys); set it with --crs or the source's `crs:` in the config",
            path=path,
        )
    if has_vertical(crs):
        return crs
    if cfg.assume_ellipsoidal_heights or cfg.vertical is None:
        return crs
    # horizontal only + the project declares a vertical datum for its deliveries
    horiz = crs.to_authority()
    if horiz is None:
        raise CrsError(
            f"CRS {crs.name!r} has no authority code, so the configured vertical datum {cfg.vertical} cannot "
            "be attached; give a full compound CRS with --crs / `crs:`",
            path=path,
        )
    return parse_crs(f"{horiz[0]}:{horiz[1]}+{cfg.vertical.split(':')[-1]}", path=path)


def make_transformer(
    src: CRS,
    dst: str | CRS,
    cfg: CrsConfig,
    *,
    path: str | Path | None = None,
    area_of_interest: tuple[float, float, float, float] | None = None,
) -> Transformer:
    """Transformer with `allow_ballpark=False`; registers the geoid grid where one is needed.

    `area_of_interest` (west, south, east, north in degrees) only narrows PROJ's search for candidate
    operations (a transformer with a geoid grid then takes ~0.05 s instead of ~0.4 s to create); points
    inside it transform exactly as without it. Callers that cache transformers must key on it.
    """
    vcode = vertical_code(src)
    grid = None
    if vcode in _GRID_FOR_VERTICAL:
        grid = locate_geoid_grid(cfg, _GRID_FOR_VERTICAL[vcode])
        _register_grid_dir(str(grid.parent.resolve()))
    aoi = None
    if area_of_interest is not None:
        from pyproj.aoi import AreaOfInterest

        aoi = AreaOfInterest(*(float(v) for v in area_of_interest))
    key = _pipeline_key(src, dst, area_of_interest, grid)
    cached = _cached_pipeline(key)
    if cached is not None:
        return cached
    try:
        t = Transformer.from_crs(src, dst, always_xy=True, allow_ballpark=False, area_of_interest=aoi)
    except ProjError as e:
        raise GeoidGridMissing(
            f"PROJ found no exact transformation from {src.name} to {CRS(dst).name} (a grid is probably "
            f"missing; ballpark operations are refused): {e}",
            path=path,
        ) from e
    if "ballpark" in (t.description or "").lower():
        raise CrsError(f"only a ballpark transformation is available: {t.description}", path=path)
    _store_pipeline(key, t)
    return t


def plain_transformer(src: str | CRS, dst: str | CRS) -> Transformer:
    """`Transformer.from_crs(src, dst, always_xy=True)` for conversions that need no grid (ECEF <->
    geographic), through the operation cache below: PROJ's search costs ~15 ms each, at the start of every
    run. Only for `transform`: a transformer rebuilt from its pipeline does not know its CRSs (so, e.g.,
    `transform_bounds` cannot treat a geographic target as such)."""
    key = _pipeline_key(CRS.from_user_input(src), dst, None, None, extra="plain")
    cached = _cached_pipeline(key)
    if cached is not None:
        return cached
    t = Transformer.from_crs(src, dst, always_xy=True)
    _store_pipeline(key, t)
    return t


# ---- PROJ operation cache ---------------------------------------------------------------------------------
# Finding the operation (25832+7837 -> ECEF through the GCG2016 grid) costs PROJ about 0.5 s per process,
# on the critical path of every `twin points` / build start. The chosen operation is a plain PROJ pipeline
# string: it is cached on disk, keyed by everything that determines it (source and target CRS, area of
# interest, the grid file, PROJ and pyproj versions), and rebuilt with `Transformer.from_pipeline` (< 1 ms,
# the same numbers). Only single, concrete pipelines are cached (never PROJ's per-point alternatives).
# Location: $RUHRTWIN_PROJ_CACHE, else $XDG_CACHE_HOME/ruhrtwin, else ~/.cache/ruhrtwin; "off" disables it.


def _pipeline_cache_file() -> Path | None:
    import os

    d = os.environ.get("RUHRTWIN_PROJ_CACHE")
    if d == "off":
        return None
    if not d:
        d = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ruhrtwin")
    return Path(d) / "proj-pipelines.json"


def _pipeline_key(src: CRS, dst: str | CRS, aoi, grid: Path | None, extra: str = "no-ballpark") -> str:
    import hashlib
    import json

    g = None
    if grid is not None:
        st = grid.stat()
        g = [str(grid.resolve()), st.st_size, st.st_mtime_ns]
    parts = [
        src.to_wkt(),
        CRS.from_user_input(dst).to_wkt(),
        None if aoi is None else [float(v) for v in aoi],
        g,
        pyproj.__version__,
        pyproj.proj_version_str,
        "always_xy",
        extra,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _read_pipeline_cache(f: Path) -> dict:
    import json

    try:
        data = json.loads(f.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _cached_pipeline(key: str) -> Transformer | None:
    f = _pipeline_cache_file()
    if f is None:
        return None
    definition = _read_pipeline_cache(f).get(key)
    if not isinstance(definition, str) or not definition.startswith("proj="):
        return None
    try:
        return Transformer.from_pipeline(definition)
    except ProjError:
        return None


def _store_pipeline(key: str, t: Transformer) -> None:
    import json
    import os
    import tempfile

    f = _pipeline_cache_file()
    definition = t.definition or ""
    if f is None or not definition.startswith("proj="):  # alternatives chosen per point: not cacheable
        return
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        data = _read_pipeline_cache(f)
        data[key] = definition
        fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=".proj-pipelines-")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, sort_keys=True)
        os.replace(tmp, f)
    except OSError:  # a read-only home: no cache, same results
        pass


def check_area_of_use(crs: CRS, bounds: tuple[float, float, float, float], *, path: str | Path) -> None:
    """Refuse coordinates far outside the CRS's area of use (e.g. metres in a file tagged EPSG:4326)."""
    aou = crs.area_of_use
    if aou is None:
        return
    xmin, ymin, xmax, ymax = bounds
    if not all(np.isfinite(b) for b in bounds):
        raise CrsError("coordinates contain NaN or infinity", path=path)
    if crs.is_geographic:
        bad = xmin < -180 or xmax > 360 or ymin < -90 or ymax > 90
    else:
        try:
            t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
            ex = t.transform_bounds(aou.west, aou.south, aou.east, aou.north, densify_pts=21)
        except ProjError:
            return
        # generous margin: half the projected extent of the area of use
        mx = max(ex[2] - ex[0], 1.0) * 0.5
        my = max(ex[3] - ex[1], 1.0) * 0.5
        bad = xmax < ex[0] - mx or xmin > ex[2] + mx or ymax < ex[1] - my or ymin > ex[3] + my
    if bad:
        raise CrsError(
            f"coordinates {tuple(round(b, 3) for b in bounds)} lie outside the area of use of {crs.name} "
            f"({aou.name}); the file's CRS is probably mislabelled: override it with --crs / `crs:`",
            path=path,
        )


def project_frame(cfg: CrsConfig, extent_center: tuple[float, float, float] | None = None) -> ProjectFrame:
    """The project ENU frame: from `crs.frame_origin`, else the snapped centre of the planned extent."""
    if cfg.frame_origin is not None:
        e, n, h = cfg.frame_origin
    elif extent_center is not None:
        s = cfg.frame_snap
        e, n = (round(extent_center[0] / s) * s, round(extent_center[1] / s) * s)
        h = 0.0
    else:
        raise CrsError("no frame origin: set crs.frame_origin or give the planned extent")
    src = working_crs(cfg)
    to_geo = make_transformer(src, GEOGRAPHIC_3D, cfg)
    lon, lat, _hell = to_geo.transform(e, n, h)
    to_ecef = make_transformer(src, ECEF, cfg)
    x, y, z = to_ecef.transform(e, n, h)
    return ProjectFrame((float(x), float(y), float(z)), float(lon), float(lat))


def to_enu_exact(
    frame: ProjectFrame, transformer: Transformer, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Reference path: per-point PROJ to ECEF, then rotate into the frame. (N, 3) float64."""
    ex, ey, ez = transformer.transform(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    out = frame.ecef_to_enu(ex, ey, ez)
    if not np.all(np.isfinite(out)):
        raise CrsError("transformation produced non-finite coordinates (outside the grid's coverage?)")
    return out
