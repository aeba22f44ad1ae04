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

if TYPE_CHECKING:
    from pipeline.config.model import CrsConfig


GEOID_GRID_NAME = "de_bkg_gcg2016.tif"
VENDORED_GRID_DIR = Path(__file__).parent / "data" / "grids"
ECEF = "EPSG:4978"
GEOGRAPHIC_3D = "EPSG:4979"

AUTO = "auto"  # `crs.horizontal` / `crs.vertical`: take the inputs' own (resolved before a build runs)
ELLIPSOIDAL = "ellipsoidal"  # `crs.vertical`: heights are ellipsoidal (same as null)
PROJ_CDN = "https://cdn.proj.org"

GRID_HELP = (
    "The geoid grid {name} is needed to turn {what} into ellipsoidal heights (without it every height "
    "would be wrong by the geoid undulation, tens of metres). Get it with `projsync --file {name}` (from the "
    "PROJ CDN, {url}), copy it into PROJ's data directory ({projdir}), or set `crs.geoid_grid: /path/to/{name}` "
    "in the config."
)


def _grid_help(name: str, what: str = "the vertical datum's heights", url: str | None = None) -> str:
    return GRID_HELP.format(
        name=name, what=what, url=url or f"{PROJ_CDN}/{name}", projdir=pyproj.datadir.get_data_dir()
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
                "configured geoid grid (crs.geoid_grid) does not exist. " + _grid_help(name),
                path=p,
            )
        return p
    for d in grid_search_dirs(cfg, use_vendored):
        if (d / name).is_file():
            return d / name
    raise GeoidGridMissing(
        _grid_help(name, "DHHN2016 normal heights" if name == GEOID_GRID_NAME else "the heights")
    )


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


def is_ellipsoidal(vertical: str | None) -> bool:
    """`crs.vertical` null or "ellipsoidal": heights are ellipsoidal heights of the horizontal CRS's datum."""
    return vertical is None or vertical.strip().lower() == ELLIPSOIDAL


def compound_of(horizontal: str | CRS, vertical: str | None, *, path: str | Path | None = None) -> CRS:
    """The CRS of (horizontal, vertical): "EPSG:h+v" for two EPSG codes, else a CompoundCRS of the two;
    a horizontal CRS alone when the heights are ellipsoidal (PROJ then takes Z as ellipsoidal height)."""
    for name, value in (("horizontal", horizontal), ("vertical", vertical)):
        if isinstance(value, str) and value.strip().lower() == AUTO:
            raise CrsError(
                f"crs.{name} is 'auto' but was not resolved from the inputs (only a build does that); "
                "set it in the config",
                path=path,
            )
    h = horizontal if isinstance(horizontal, CRS) else parse_crs(horizontal, path=path)
    if h.is_compound and h.sub_crs_list:
        h = next(c for c in h.sub_crs_list if not c.is_vertical)
    if is_ellipsoidal(vertical):
        return h
    assert vertical is not None
    ha, va = h.to_authority(), None
    v = parse_crs(vertical, path=path)
    if not v.is_vertical:
        raise CrsError(f"crs.vertical {vertical!r} is not a vertical CRS ({v.type_name})", path=path)
    va = v.to_authority()
    if ha and va and ha[0] == va[0] == "EPSG":
        return parse_crs(f"EPSG:{ha[1]}+{va[1]}", path=path)
    from pyproj.crs import CompoundCRS

    return CompoundCRS(f"{h.name} + {v.name}", [h, v])


def working_crs(cfg: CrsConfig) -> CRS:
    """The working CRS: `crs.horizontal` (any CRS PROJ knows) + `crs.vertical` (any vertical CRS, or
    ellipsoidal heights when null / "ellipsoidal")."""
    return compound_of(cfg.horizontal, cfg.vertical)


def horizontal_of(crs: CRS) -> CRS:
    """The horizontal part of a (compound) CRS."""
    if crs.is_compound and crs.sub_crs_list:
        return next(c for c in crs.sub_crs_list if not c.is_vertical)
    return crs


def same_crs(a: CRS, b: CRS) -> bool:
    """Same horizontal and vertical meaning (a 2D CRS and its 3D ellipsoidal form count as the same)."""
    if a.equals(b, ignore_axis_order=False):
        return True
    ha, hb = horizontal_of(a), horizontal_of(b)
    if not (ha.equals(hb) or ha.to_2d().equals(hb.to_2d())):
        return False
    va, vb = vertical_code(a), vertical_code(b)
    return va == vb


def map_units_per_metre(crs: CRS, x: float, y: float) -> float:
    """Map units per metre on the ground at (x, y) of a projected CRS: the projection's point scale factor
    (0.9996 on a UTM central meridian, ~1.004 eight degrees off it) over the unit's length in metres.
    Distances given in metres (buffers, rings) are multiplied by it so a result does not depend on the
    working CRS. 1.0 for CRSs that are not projected."""
    h = horizontal_of(crs)
    if not h.is_projected:
        return 1.0
    geo = h.geodetic_crs
    lon, lat = Transformer.from_crs(h, geo, always_xy=True).transform(float(x), float(y))
    k = pyproj.Proj(h).get_factors(lon, lat).meridional_scale
    if not np.isfinite(k) or k <= 0:
        raise CrsError(f"no scale factor of {h.name} at ({x:.1f}, {y:.1f}): outside the projection?")
    return float(k) / linear_unit_factor(h)


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
    if cfg.assume_ellipsoidal_heights or is_ellipsoidal(cfg.vertical):
        return crs
    # horizontal only + the project declares a vertical datum for its deliveries
    return compound_of(crs, cfg.vertical, path=path)


def _register_grid_dirs(cfg: CrsConfig) -> None:
    """Make the vendored grids and the directory of `crs.geoid_grid` visible to PROJ (by file name)."""
    if VENDORED_GRID_DIR.is_dir():
        _register_grid_dir(str(VENDORED_GRID_DIR.resolve()))
    if cfg.geoid_grid is not None and Path(cfg.geoid_grid).is_file():
        _register_grid_dir(str(Path(cfg.geoid_grid).parent.resolve()))


def _configured_grid(cfg: CrsConfig) -> Path | None:
    if cfg.geoid_grid is None:
        return None
    p = Path(cfg.geoid_grid)
    if not p.is_file():
        raise GeoidGridMissing(
            "configured geoid grid (crs.geoid_grid) does not exist; give the path of a geoid model file PROJ "
            "reads (GeoTIFF .tif or .gtx), e.g. one fetched with `projsync --file NAME`",
            path=p,
        )
    return p.resolve()


def _steps(definition: str) -> list[str]:
    """The steps of a PROJ pipeline string (either `+proj=pipeline +step ...` or `proj=pipeline step ...`)."""
    text = definition.replace("+", " ")
    return [st.strip() for st in text.split(" step ")[1:]] if " step " in text else []


def _vgrid_steps(definition: str) -> list[str]:
    return [st for st in _steps(definition) if "proj=vgridshift" in st.split() or "proj=vgridshift" in st]


def _grids_of(step: str) -> list[str]:
    for tok in step.split():
        if tok.startswith("grids="):
            return [g.lstrip("@") for g in tok[len("grids=") :].split(",")]
    return []


def _strip_axis_swaps(definition: str, src: CRS, dst: CRS) -> str:
    """An operation's own pipeline follows the CRSs' axis order (lat, lon for EPSG geographic CRSs); our
    transformers are `always_xy`: drop the leading / trailing swap such an order adds."""
    steps = _steps(definition)

    def swaps(crs: CRS) -> bool:
        ax = crs.axis_info
        return (
            len(ax) >= 2
            and ax[0].direction.lower() in ("north", "south")
            and ax[1].direction.lower()
            in (
                "east",
                "west",
            )
        )

    if steps and swaps(src) and steps[0].startswith("proj=axisswap") and "order=2,1" in steps[0]:
        steps = steps[1:]
    if steps and swaps(dst) and steps[-1].startswith("proj=axisswap") and "order=2,1" in steps[-1]:
        steps = steps[:-1]
    return " ".join(["+proj=pipeline", *(f"+step +{' +'.join(st.split())}" for st in steps)])


def _with_configured_grid(
    src: CRS, dst: CRS, grid: Path, aoi: Any, *, path: str | Path | None
) -> Transformer | None:
    """PROJ's best exact operation from src to dst whose geoid step reads `grid` instead of the grid PROJ
    names (any datum, any file name). None when no candidate operation has a geoid step (e.g. the two
    CRSs share their vertical datum)."""
    import warnings

    from pyproj.transformer import TransformerGroup

    with warnings.catch_warnings():  # "best transformation not available": exactly the grid we replace
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(src, dst, always_xy=True, allow_ballpark=False, area_of_interest=aoi)
    candidates: list[str] = []
    for op in group.unavailable_operations:
        missing = [g.short_name for g in op.grids if not g.available]
        d = op.to_proj4() or ""
        vg = _vgrid_steps(d)
        vgrids = {g for st in vg for g in _grids_of(st)}
        if len(vg) == 1 and set(missing) <= vgrids:
            candidates.append(_strip_axis_swaps(d, src, dst))
    for t in group.transformers:
        d = t.definition or ""
        if len(_vgrid_steps(d)) == 1:
            candidates.append(d if d.startswith("+") else " ".join(f"+{tok}" for tok in d.split()))
    if not candidates:
        return None
    d = candidates[0]
    vstep = _vgrid_steps(d)[0]
    names = _grids_of(vstep)
    new_step = vstep.replace(f"grids={','.join(names)}", f"grids={grid}")
    out = d.replace(" +".join(vstep.split()), " +".join(new_step.split()))
    if out == d:  # grid names written with '@' (optional) prefixes
        out = d
        for n in names:
            out = out.replace(f"@{n}", str(grid)).replace(n, str(grid))
    try:
        return Transformer.from_pipeline(out)
    except ProjError as e:
        raise GeoidGridMissing(f"PROJ cannot read the configured geoid grid: {e}", path=grid) from e


def missing_grids(src: CRS, dst: str | CRS, aoi: Any = None) -> list[tuple[str, str, bool]]:
    """(name, download URL, is a geoid model) of the grids that PROJ's exact operations from src to dst
    need and cannot find: those of the candidate operation that lacks the fewest (PROJ's best first)."""
    import warnings

    from pyproj.transformer import TransformerGroup

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            group = TransformerGroup(src, dst, always_xy=True, allow_ballpark=False, area_of_interest=aoi)
    except ProjError:
        return []
    best: list[tuple[str, str, bool]] | None = None
    for op in group.unavailable_operations:
        vgrids = {g for st in _vgrid_steps(op.to_proj4() or "") for g in _grids_of(st)}
        miss = [
            (g.short_name, g.url or f"{PROJ_CDN}/{g.short_name}", g.short_name in vgrids)
            for g in op.grids
            if not g.available
        ]
        if miss and (best is None or len(miss) < len(best)):
            best = miss
    return best or []


def make_transformer(
    src: CRS,
    dst: str | CRS,
    cfg: CrsConfig,
    *,
    path: str | Path | None = None,
    area_of_interest: tuple[float, float, float, float] | None = None,
) -> Transformer:
    """Exact transformer (`allow_ballpark=False`, always x/east first) for any pair of CRSs PROJ knows.

    Grids are found by name in PROJ's data directories, the vendored `pipeline/data/grids/` and the
    directory of `crs.geoid_grid`. A configured `crs.geoid_grid` with another file name than the one PROJ
    asks for (e.g. a national model renamed, or a crafted one) replaces the grid of the geoid step of PROJ's
    best operation, for any vertical datum. A missing grid is an error naming it and where to get it.

    `area_of_interest` (west, south, east, north in degrees) only narrows PROJ's search for candidate
    operations (a transformer with a geoid grid then takes ~0.05 s instead of ~0.4 s to create); points
    inside it transform exactly as without it. Callers that cache transformers must key on it.
    """
    dst_crs = CRS.from_user_input(dst)
    _register_grid_dirs(cfg)
    grid = _configured_grid(cfg)
    aoi = None
    if area_of_interest is not None:
        from pyproj.transformer import AreaOfInterest

        aoi = AreaOfInterest(*(float(v) for v in area_of_interest))
    key = _pipeline_key(src, dst_crs, area_of_interest, grid)
    cached = _cached_pipeline(key)
    if cached is not None:
        return cached
    t: Transformer | None = None
    if grid is not None and (has_vertical(src) or has_vertical(dst_crs)):
        t = _with_configured_grid(src, dst_crs, grid, aoi, path=path)
    if t is None:
        import warnings

        try:
            with warnings.catch_warnings():  # "best transformation not available": a lesser exact one is used
                warnings.simplefilter("ignore", UserWarning)
                t = Transformer.from_crs(
                    src, dst_crs, always_xy=True, allow_ballpark=False, area_of_interest=aoi
                )
        except ProjError as e:
            raise _no_exact_operation(src, dst_crs, aoi, path, e) from e
    if "ballpark" in (t.description or "").lower():
        raise CrsError(f"only a ballpark transformation is available: {t.description}", path=path)
    _store_pipeline(key, t)
    return t


def _no_exact_operation(src: CRS, dst: CRS, aoi: Any, path: str | Path | None, e: Exception) -> CrsError:
    grids = missing_grids(src, dst, aoi)
    if not grids:
        return CrsError(
            f"PROJ found no exact transformation from {src.name} to {dst.name} (ballpark operations, which "
            f"would leave heights unchanged, are refused): {e}",
            path=path,
        )
    vcode = vertical_code(src) or vertical_code(dst)
    what = "DHHN2016 normal heights" if vcode == "7837" else f"{_vertical_name(src) or _vertical_name(dst)}s"
    parts = []
    for name, url, geoid in grids:
        if geoid:
            parts.append(_grid_help(name, what, url))
        else:
            parts.append(
                f"The datum shift grid {name} is needed too: `projsync --file {name}` ({url}), or copy it into "
                "PROJ's data directory."
            )
    names = ", ".join(n for n, _u, _g in grids)
    return GeoidGridMissing(
        f"PROJ needs the grid {names} to transform {src.name} to {dst.name} exactly, and it is not installed "
        f"(ballpark operations, which would leave heights unchanged, are refused). {' '.join(parts)}",
        path=path,
    )


def _vertical_name(crs: CRS) -> str | None:
    for sub in crs.sub_crs_list or []:
        if sub.is_vertical:
            return sub.name
    return None


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


def _pipeline_key(src: CRS, dst: str | CRS, aoi, grid: Path | None, extra: str = "no-ballpark-v2") -> str:
    import hashlib

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
        # generous margin: east-west the projected width of the area of use (zones are used well beyond
        # their strip, e.g. a UTM 33 delivery reaching into UTM 32 at a state border), north-south half
        # its height
        mx = max(ex[2] - ex[0], 1.0)
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
