"""Plan step: the working CRS of a build when the config says `crs.horizontal: auto` / `crs.vertical: auto`.

"auto" means the inputs' own CRS: the horizontal CRS of the first aerial point file (its `crs:` override
first), else of the first DGM tile, else of the cadastre; the vertical CRS of the first of those that
carries one. Read from headers only. The result is a config whose `crs` section names concrete CRSs, so
every layer after this step sees one working CRS. Nothing is guessed: when no input says it, the build
stops with an error naming the key to set.
"""

from __future__ import annotations

from pathlib import Path

from pyproj import CRS

from pipeline.config.model import TwinConfig
from pipeline.crs import AUTO, horizontal_of, parse_crs
from pipeline.errors import CrsError
from pipeline.orchestrate.context import InputFile


def _is_auto(value: str | None) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _code(crs: CRS) -> str:
    auth = crs.to_authority(min_confidence=90)
    return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()


def _point_crs(path: Path, override: str | None) -> CRS | None:
    if override:
        return parse_crs(override, path=path)
    from pipeline.sources.pointcloud.reader import read_header

    info = read_header(path)
    return parse_crs(info.crs_wkt, path=path) if info.crs_wkt else None


def _raster_crs(path: Path, override: str | None) -> CRS | None:
    if override:
        return parse_crs(override, path=path)
    import rasterio

    with rasterio.open(path) as ds:
        return CRS.from_wkt(ds.crs.to_wkt()) if ds.crs else None


def _vector_crs(path: Path, override: str | None) -> CRS | None:
    if override:
        return parse_crs(override, path=path)
    if path.suffix.lower() not in (".gpkg", ".shp", ".geojson", ".json", ".fgb"):
        return None
    import pyogrio

    try:
        text = pyogrio.read_info(path).get("crs")
    except Exception:  # a layer-less or unreadable file: the reader reports it properly later
        return None
    return parse_crs(text, path=path) if text else None


def input_crss(cfg: TwinConfig, inputs: list[InputFile]) -> list[tuple[Path, CRS]]:
    """(file, CRS) of the inputs that decide an "auto" working CRS, in order of precedence."""
    out: list[tuple[Path, CRS]] = []
    src = cfg.sources
    for ep in src.aerial:
        for i in (i for i in inputs if i.role == f"aerial:{ep.epoch}"):
            c = _point_crs(i.path, ep.crs)
            if c is not None:
                out.append((i.path, c))
    if src.dgm is not None:
        for i in (i for i in inputs if i.role == "dgm"):
            c = _raster_crs(i.path, src.dgm.crs)
            if c is not None:
                out.append((i.path, c))
    if src.cadastre is not None:
        for i in (i for i in inputs if i.role == "cadastre"):
            c = _vector_crs(i.path, src.cadastre.crs)
            if c is not None:
                out.append((i.path, c))
    return out


def resolve_working_crs(cfg: TwinConfig, inputs: list[InputFile]) -> TwinConfig:
    """`cfg` with "auto" in `crs.horizontal` / `crs.vertical` replaced by the inputs' own CRS."""
    c = cfg.crs
    if not (_is_auto(c.horizontal) or _is_auto(c.vertical)):
        return cfg
    found = input_crss(cfg, inputs)
    update: dict[str, str | None] = {}
    if _is_auto(c.horizontal):
        if not found:
            raise CrsError(
                "crs.horizontal is 'auto' but no input declares a CRS; set crs.horizontal in the config"
            )
        _path, crs = found[0]
        update["horizontal"] = _code(horizontal_of(crs))
    if _is_auto(c.vertical):
        vert = next(
            ((p, s) for p, crs in found for s in (crs.sub_crs_list or []) if s.is_vertical),
            None,
        )
        if vert is not None:
            update["vertical"] = _code(vert[1])
        elif c.assume_ellipsoidal_heights:
            update["vertical"] = None
        else:
            raise CrsError(
                "crs.vertical is 'auto' but no input declares a vertical CRS, so the heights' datum is unknown; "
                "set crs.vertical (e.g. EPSG:7837 DHHN2016, EPSG:5709 NAP) or declare the heights ellipsoidal "
                "with crs.assume_ellipsoidal_heights: true"
            )
    return cfg.model_copy(update={"crs": c.model_copy(update=update)})
