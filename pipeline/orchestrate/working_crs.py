"""Plan step: the working CRS of a build when the config says `crs.horizontal: auto` / `crs.vertical: auto`
(the defaults).

"auto" means the inputs' own CRS: the horizontal CRS that the aerial point files, the DGM tiles, the
cadastre and the mobile point files declare (each source's `crs:` override first; LAS/LAZ headers, GeoTIFF
keys, GeoPackage layers, the srsName of NAS and CityGML files), and the vertical CRS of those that carry one. Read from headers
only. They must agree: a delivery in two CRSs (UTM 32 and UTM 33 tiles at a state border) needs a
configured working CRS, and the build stops with an error naming the files, their CRSs and the key to set.
The result is a config whose `crs` section names concrete CRSs, so every layer after this step sees one
working CRS (and a config that spells out the same CRSs hashes the same). Nothing is guessed: when no
input says it, the build stops with an error naming the key to set.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from pyproj import CRS

from pipeline.config.model import TwinConfig
from pipeline.crs import AUTO, horizontal_of, parse_crs
from pipeline.errors import CrsError, InputError
from pipeline.model import InputFile


def _is_auto(value: str | None) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _code(crs: CRS) -> str:
    auth = crs.to_authority(min_confidence=90)
    return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()


def _point_crs(path: Path, override: str | None) -> CRS | None:
    if override:
        return parse_crs(override, path=path)
    from pipeline.sources.pointcloud.reader import read_header

    try:
        info = read_header(path)
    except Exception:  # an unreadable file: the input check names it with its own message
        return None
    return parse_crs(info.crs_wkt, path=path) if info.crs_wkt else None


def _raster_crs(path: Path, override: str | None) -> CRS | None:
    if override:
        return parse_crs(override, path=path)
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return CRS.from_wkt(ds.crs.to_wkt()) if ds.crs else None
    except rasterio.errors.RasterioError:  # an unreadable file: the input check names it
        return None


def _srs_name(path: Path, nas: bool) -> str | None:
    """The first srsName of a GML file (NAS, also gzip or zip; CityGML), read from its start only."""
    from pipeline.sources.cadastre.gml import first_srs_name
    from pipeline.sources.cadastre.nas import nas_documents

    try:
        if not nas:
            return first_srs_name(str(path))
        with nas_documents(path)[0].open() as f:
            return first_srs_name(f)
    except (
        OSError,
        EOFError,
        InputError,
        zipfile.BadZipFile,
    ):  # unreadable: the input check reports it properly later
        return None


def _gml_crs(path: Path, nas: bool) -> CRS | None:
    srs = _srs_name(path, nas)
    if srs is None:
        return None
    if nas:
        from pipeline.sources.cadastre.gml import srs_to_crs

        name = srs_to_crs(srs)
    else:
        from pipeline.sources.cadastre.gml import gml_crs

        name = gml_crs(srs)
    if name is None:
        raise CrsError(
            f"unknown srsName {srs!r}: the working CRS cannot be taken from it; set the source's `crs:` "
            "or crs.horizontal / crs.vertical in the config",
            path=path,
        )
    return parse_crs(name, path=path)


def _vector_crs(
    path: Path, override: str | None, fmt: str = "alkis_gpkg", layer: str | None = None
) -> CRS | None:
    if override:
        return parse_crs(override, path=path)
    suffix = path.suffix.lower()
    if fmt == "nas":
        return _gml_crs(path, nas=True)
    if suffix in (".gml", ".xml", ".citygml"):
        from pipeline.sources.cadastre.citygml import looks_like_citygml

        return _gml_crs(path, nas=False) if looks_like_citygml(path) else None
    if suffix not in (".gpkg", ".shp", ".geojson", ".json", ".fgb"):
        return None
    import pyogrio

    try:
        if suffix == ".gpkg":  # the building layer the reader will take
            from pipeline.sources.cadastre.gpkg import BUILDING_LAYERS, find_layer

            layer = find_layer(path, layer, BUILDING_LAYERS, "building")
        text = pyogrio.read_info(path, layer=layer).get("crs")
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
            c = _vector_crs(i.path, src.cadastre.crs, src.cadastre.format, src.cadastre.layer)
            if c is not None:
                out.append((i.path, c))
    if src.mobile is not None:
        for i in (i for i in inputs if i.role == "mobile"):
            c = _point_crs(i.path, src.mobile.crs)
            if c is not None:
                out.append((i.path, c))
    return out


def _vertical_of(crs: CRS) -> CRS | None:
    return next((s for s in (crs.sub_crs_list or []) if s.is_vertical), None)


def _groups(found: list[tuple[Path, CRS]]) -> list[tuple[str, CRS, list[Path]]]:
    """The distinct CRSs of `found` (code, CRS, files), in order of first appearance."""
    out: list[tuple[str, CRS, list[Path]]] = []
    for path, crs in found:
        code = _code(crs)
        for c, rep, files in out:
            if c == code or rep.equals(crs, ignore_axis_order=True):
                files.append(path)
                break
        else:
            out.append((code, crs, [path]))
    return out


def _disagree(what: str, groups: list[tuple[str, CRS, list[Path]]], raw: Path, hint: str) -> CrsError:
    def name(p: Path) -> str:
        try:
            return p.relative_to(raw).as_posix()
        except ValueError:
            return str(p)

    parts = []
    for code, crs, files in groups:
        shown = ", ".join(name(p) for p in files[:3]) + (
            f" and {len(files) - 3} more" if len(files) > 3 else ""
        )
        parts.append(f"{code} ({crs.name}): {shown}")
    return CrsError(
        f"crs.{what} is 'auto' (the default: the inputs' own CRS), but the inputs declare "
        f"{len(groups)} different {what} CRSs: " + "; ".join(parts) + ". Set the working CRS in the config "
        f"(e.g. `crs: {{{hint}}}`); every source is then transformed into it. A file whose own CRS is wrong "
        "gets its source's `crs:` instead."
    )


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
                "crs.horizontal is 'auto' (the default: the inputs' own CRS) but no aerial or mobile point "
                "file, DGM tile or cadastre file declares a CRS; set crs.horizontal in the config (e.g. EPSG:25832)"
            )
        groups = _groups([(p, horizontal_of(crs)) for p, crs in found])
        if len(groups) > 1:
            raise _disagree(
                "horizontal", groups, cfg.raw_dir, f"horizontal: {groups[0][0]}, vertical: EPSG:7837"
            )
        h = groups[0][1]
        if not h.is_projected:
            raise CrsError(
                f"the inputs are in {groups[0][0]} ({h.name}), which is not a projected CRS; the working "
                "CRS must be projected (metres east/north): set crs.horizontal in the config, e.g. the "
                "UTM zone of the area",
                path=groups[0][2][0],
            )
        update["horizontal"] = groups[0][0]
    if _is_auto(c.vertical):
        verts = [(p, v) for p, crs in found if (v := _vertical_of(crs)) is not None]
        groups = _groups(verts)
        if len(groups) > 1:
            hname = update.get("horizontal") or c.horizontal
            raise _disagree("vertical", groups, cfg.raw_dir, f"horizontal: {hname}, vertical: {groups[0][0]}")
        if groups:
            update["vertical"] = groups[0][0]
        elif c.assume_ellipsoidal_heights:
            update["vertical"] = None
        else:
            raise CrsError(
                "crs.vertical is 'auto' (the default: the inputs' own) but no input declares a vertical CRS, "
                "so the heights' datum is unknown; set crs.vertical (e.g. EPSG:7837 DHHN2016, EPSG:5709 NAP) "
                "or declare the heights ellipsoidal with crs.assume_ellipsoidal_heights: true"
            )
    return cfg.model_copy(update={"crs": c.model_copy(update=update)})
