"""Plan step 1: find every input file the config names, with its size and content hash.

Hashes are memoised in the cache by (path, size, mtime) so a nightly build does not re-read terabytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.config.model import TwinConfig
from pipeline.errors import ConfigError
from pipeline.model import InputFile
from pipeline.orchestrate.executor import build_executor, map_ordered
from pipeline.release.manifest import sha256_file


def _glob(cfg: TwinConfig, pattern: str, key: str, required: bool = True) -> list[Path]:
    base = cfg.raw_dir
    p = Path(pattern)
    if p.is_absolute():
        files = sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor))))
    else:
        files = sorted(base.glob(pattern))
    files = [f for f in files if f.is_file()]
    if required and not files:
        raise ConfigError(f"{key}: no files match {pattern!r} under {base}")
    return files


def source_files(cfg: TwinConfig) -> list[tuple[str, Path]]:
    """(role, path) for every configured input, in a stable order."""
    out: list[tuple[str, Path]] = []
    src = cfg.sources
    for i, ep in enumerate(src.aerial):
        out += [(f"aerial:{ep.epoch}", f) for f in _glob(cfg, ep.points, f"sources.aerial[{i}].points")]
    if src.orthophoto:
        out += [("orthophoto", f) for f in _glob(cfg, src.orthophoto.path, "sources.orthophoto.path")]
    if src.dgm:
        out += [("dgm", f) for f in _glob(cfg, src.dgm.path, "sources.dgm.path")]
    if src.cadastre:
        out += [("cadastre", f) for f in _glob(cfg, src.cadastre.path, "sources.cadastre.path")]
    if src.mobile:
        if src.mobile.points:
            out += [("mobile", f) for f in _glob(cfg, src.mobile.points, "sources.mobile.points")]
        if src.mobile.panoramas:
            out += [("panoramas", f) for f in _glob(cfg, src.mobile.panoramas, "sources.mobile.panoramas")]
        if src.mobile.panorama_images:
            out += [
                ("panoramas:images", f)
                for f in _glob(cfg, src.mobile.panorama_images, "sources.mobile.panorama_images")
            ]
    if src.reference_citygml:
        out += [
            ("reference", f) for f in _glob(cfg, src.reference_citygml, "sources.reference_citygml", False)
        ]
    if cfg.layers.zoning.enabled:
        for i, pattern in enumerate(cfg.layers.zoning.paths):
            out += [("zoning", f) for f in _glob(cfg, pattern, f"layers.zoning.paths[{i}]")]
    return out


def scan_inputs(cfg: TwinConfig, progress: Callable[[int, int], None] | None = None) -> list[InputFile]:
    memo_path = cfg.cache_dir / "input-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    files = source_files(cfg)
    result = []
    for n, (role, path) in enumerate(files):
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = memo.get(key) or sha256_file(path)
        memo[key] = digest
        result.append(InputFile(path=path.resolve(), role=role, size=st.st_size, sha256=digest))
        if progress:
            progress(n + 1, len(files))
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(memo, sort_keys=True))
    os.replace(tmp, memo_path)
    return result


# ------------------------------------------------------------------------------------ verification


def _is_citygml(p: Path) -> bool:
    from pipeline.sources.cadastre.citygml import looks_like_citygml

    return looks_like_citygml(p)


# records of a vector layer read at once by the input check
VERIFY_FEATURES = 50_000


def verify_file(path: str, kind: str | None = None) -> str | None:
    """Read one input completely; None when readable, else the problem (one line). Runs on Dask workers.

    A nightly build must not publish a release from a truncated or corrupt delivery, and must name the
    tile when it refuses. Results are memoised by content hash, so each file version is read once.
    `kind` is what the config says the file is (`nas` for a NAS cadastre, whatever its extension);
    None: told by the extension."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if kind == "xplan":  # a zoning plan (layers.zoning.paths): .gml/.xml or a zip of them
            from pipeline.sources.xplan import verify_plan

            return verify_plan(p)
        if kind == "nas":  # NAS XML, gzip-compressed NAS or a zip of NAS files (sources.cadastre.format)
            from pipeline.errors import InputError
            from pipeline.sources.cadastre.nas import verify_nas

            try:
                verify_nas(p)
            except InputError as e:  # the file is named by the caller; a zip member is named here
                return e.message if e.path == str(p) else f"{e.path}: {e.message}"
        elif suffix in (".las", ".laz", ".e57"):
            from pipeline.sources.pointcloud.reader import iter_points

            # every point decoded: a unit that cannot give its header's count of points raises
            for _chunk in iter_points(p, ("X",)):
                pass
        elif suffix in (".tif", ".tiff", ".jp2", ".vrt"):
            import rasterio

            with rasterio.open(p) as ds:
                for _ij, win in ds.block_windows(1):
                    ds.read(window=win)
        elif suffix in (".gml", ".xml", ".citygml") and _is_citygml(p):
            # CityGML: never through GDAL (its GML driver refuses LoD2 solids as corrupt and writes a
            # .gfs file beside the delivery); a streamed well-formedness check of the whole file
            from pipeline.sources.cadastre.citygml import check_citygml

            problem = check_citygml(p)
            if problem:
                return problem
        elif suffix in (".gpkg", ".shp", ".geojson", ".fgb", ".xml", ".gml"):
            import pyogrio

            layers = pyogrio.list_layers(p)
            if len(layers) == 0:
                return "no layers"
            for name, _geom in layers:
                # in pages of VERIFY_FEATURES records: memory bounded by a page, not by the file
                n = int(pyogrio.read_info(p, layer=str(name))["features"])
                for skip in range(0, n, VERIFY_FEATURES) if n > 0 else [None]:
                    if skip is None:  # empty, or a driver that does not know its count: in one piece
                        pyogrio.read_dataframe(p, layer=str(name))
                    else:
                        pyogrio.read_dataframe(
                            p, layer=str(name), skip_features=skip, max_features=VERIFY_FEATURES
                        )
        elif suffix == ".json":
            import json as _json

            _json.loads(p.read_bytes())
        elif suffix in (".csv", ".txt"):
            p.read_bytes().decode("utf-8")
        else:
            p.read_bytes()
    except Exception as e:  # any failure to read is the verdict
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{type(e).__name__}: {msg}"[:300]
    return None


def verify_inputs(
    cfg: TwinConfig, inputs: list[InputFile], client=None
) -> tuple[list[InputFile], list[tuple[InputFile, str]]]:
    """Check every input not verified before (by sha256); returns (usable inputs, [(bad input, problem)]).

    With `release.on_bad_tile: fail` (default) the first bad file raises an InputError naming it; with
    `skip` the bad files are returned separately and the build goes on without them (and reports them)."""
    from pipeline.errors import InputError

    marks = cfg.cache_dir / "verified"
    todo = [i for i in inputs if not (marks / i.sha256).exists()]
    if todo:
        paths = [str(i.path) for i in todo]
        cad = cfg.sources.cadastre
        kinds = ["nas" if i.role == "cadastre" and cad and cad.format == "nas" else None for i in todo]
        kinds = ["xplan" if i.role == "zoning" else k for i, k in zip(todo, kinds, strict=True)]
        executor = build_executor(client) if len(todo) > 1 else None
        verdicts = map_ordered(executor, verify_file, list(zip(paths, kinds, strict=True)), name="verify")
    else:
        verdicts = []
    problems = {i.sha256: v for i, v in zip(todo, verdicts, strict=True) if v}
    marks.mkdir(parents=True, exist_ok=True)
    for i, v in zip(todo, verdicts, strict=True):
        if not v:
            (marks / i.sha256).touch()
    bad = [(i, problems[i.sha256]) for i in inputs if i.sha256 in problems]
    if bad and cfg.release.on_bad_tile == "fail":
        f, why = bad[0]
        more = f" (and {len(bad) - 1} more bad inputs)" if len(bad) > 1 else ""
        raise InputError(
            f"corrupt or unreadable input ({f.role}): {why}{more}; nothing was published "
            "(set release.on_bad_tile: skip to build without it)",
            path=f.path,
        )
    good = [i for i in inputs if i.sha256 not in problems]
    return good, bad


# ------------------------------------------------------------------------------ plausibility gates
# Physical facts of every input (header counts and bounds, raster statistics, vector layer counts and
# parcel ids), checked by the pure gates of `pipeline.release.plausibility` before any layer is built.

FACTS_VERSION = "facts-v1"


def dedupe_inputs(cfg: TwinConfig, inputs: list[InputFile]) -> tuple[list[InputFile], list[str]]:
    """The same content under two names: refused (`release.gates.duplicate_inputs: error`, InputError
    naming both) or only the first name used, with a warning (`skip`)."""
    from pipeline.errors import InputError
    from pipeline.release.plausibility import duplicate_groups

    names = {str(i.path): i for i in inputs}
    groups = duplicate_groups((str(i.path), i.sha256) for i in inputs)
    if not groups:
        return inputs, []
    rel = [[names[n].to_json(cfg.raw_dir)["path"] for n in g] for g in groups]
    if cfg.release.gates.duplicate_inputs == "error":
        more = f" (and {len(groups) - 1} more group(s))" if len(groups) > 1 else ""
        raise InputError(
            f"the same file content (sha256 {names[groups[0][0]].sha256[:12]}...) is delivered under "
            f"{len(groups[0])} names: {', '.join(rel[0])}{more}; its data would count twice. Remove the "
            "copies, or set release.gates.duplicate_inputs: skip to use the first name only",
            path=groups[0][1],
        )
    drop = {n for g in groups for n in g[1:]}
    warnings = [
        f"duplicate input: {', '.join(r[1:])} {'has' if len(r) == 2 else 'have'} the same content as "
        f"{r[0]}; only {r[0]} is used (release.gates.duplicate_inputs: skip)"
        for r in rel
    ]
    return [i for i in inputs if str(i.path) not in drop], warnings


def _crs_override(cfg: TwinConfig, role: str) -> str | None:
    src = cfg.sources
    if role.startswith("aerial:"):
        return next((e.crs for e in src.aerial if f"aerial:{e.epoch}" == role), None)
    if role == "mobile" and src.mobile:
        return src.mobile.crs
    if role in ("orthophoto", "dgm"):
        r = getattr(src, role)
        return r.crs if r else None
    if role == "cadastre" and src.cadastre:
        return src.cadastre.crs
    return None


def _bounds_in(crs, working: str, bounds: tuple[float, float, float, float]) -> list[float] | None:
    from pyproj import CRS, Transformer

    if crs is None:
        return None
    crs = CRS.from_user_input(crs)
    horiz = next((s for s in crs.sub_crs_list if not s.is_vertical), crs) if crs.is_compound else crs
    want = CRS.from_user_input(working)
    if horiz.equals(want):
        return [float(b) for b in bounds]
    t = Transformer.from_crs(horiz, want, always_xy=True)
    return [float(b) for b in t.transform_bounds(*bounds, densify_pts=21)]


def _point_facts(path: Path, working: str, override: str | None) -> dict:
    from pipeline.sources.pointcloud.reader import read_header

    info = read_header(path)
    crs = override or info.crs_wkt
    mins, maxs = [float(v) for v in info.mins], [float(v) for v in info.maxs]
    count = info.count
    facts: dict = {"kind": "points", "count": count, "bounds": [*mins, *maxs], "bounds_xy": None}
    try:
        facts["bounds_xy"] = _bounds_in(crs, working, (mins[0], mins[1], maxs[0], maxs[1]))
    except Exception:  # CRS problems are reported by the point reader with its own message
        facts["bounds_xy"] = None
    return facts


def _vector_facts(path: Path, cfg_cadastre, working: str) -> dict:
    import numpy as np
    import pyogrio
    from pyproj import CRS

    from pipeline.crs import check_area_of_use
    from pipeline.errors import CrsError, InputError
    from pipeline.sources.cadastre.gpkg import BUILDING_LAYERS, PARCEL_LAYERS, find_layer

    try:
        names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
        facts: dict = {"kind": "vector", "layers": {}, "bounds_xy": None}
        infos = {}
        for n in names:
            infos[n] = pyogrio.read_info(path, layer=n, force_feature_count=True, force_total_bounds=True)
            facts["layers"][n] = int(infos[n]["features"])
    except Exception as e:
        raise InputError(f"cannot read vector file: {e}", path=path) from e
    if cfg_cadastre.format == "alkis_gpkg":
        facts["building_layer"] = find_layer(path, cfg_cadastre.layer, BUILDING_LAYERS, "building")
        facts["parcel_layer"] = find_layer(path, cfg_cadastre.parcel_layer, PARCEL_LAYERS, "parcel")
    elif cfg_cadastre.layer:
        facts["building_layer"] = find_layer(path, cfg_cadastre.layer, (), "building")
    bounds = []
    for n, info in infos.items():
        tb = info.get("total_bounds")
        if info["features"] == 0 or tb is None or not np.all(np.isfinite(tb)):
            continue
        crs = cfg_cadastre.crs or info.get("crs")
        if crs is None:
            continue  # the reader refuses a file without CRS with its own message
        tb4 = (float(tb[0]), float(tb[1]), float(tb[2]), float(tb[3]))
        try:
            check_area_of_use(CRS.from_user_input(crs), tb4, path=f"{path} [{n}]")
        except CrsError as e:
            facts["crs_problem"] = e.message + f" (layer {n!r})"
            continue
        b = _bounds_in(crs, working, tb4)
        if b:
            bounds.append(b)
    if bounds:
        a = np.array(bounds)
        facts["bounds_xy"] = [a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max()]
        facts["bounds_xy"] = [float(v) for v in facts["bounds_xy"]]
    lyr = facts.get("parcel_layer")
    if lyr and facts["layers"].get(lyr):
        cols = {c.lower(): c for c in infos[lyr]["fields"]}
        key = cols.get("flstkennz") or cols.get("flurstueckskennzeichen")
        if key:
            df = pyogrio.read_dataframe(
                path, layer=lyr, columns=[key], read_geometry=False, fid_as_index=True
            )
            keys = df[key]
            null = keys.isna() | (keys.astype(str).str.strip() == "")
            dup = keys[~null].duplicated(keep=False)
            facts["null_ids"] = int(null.sum())
            facts["null_id_examples"] = [int(i) for i in df.index[null][:5]]
            facts["duplicate_ids"] = int(keys[~null][dup].nunique())
            facts["duplicate_id_examples"] = sorted({str(v) for v in keys[~null][dup]})[:5]
    return facts


def input_facts(cfg: TwinConfig, role: str, path: str) -> dict:
    """The plausibility facts of one input (runs on Dask workers; memoised by content hash + gates)."""
    gates = cfg.release.gates
    working = cfg.crs.horizontal
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".las", ".laz"):
        return _point_facts(p, working, _crs_override(cfg, role))
    if role in ("dgm", "orthophoto") and suffix in (".tif", ".tiff", ".jp2", ".vrt"):
        from pipeline.sources.rasters import ORTHO_BANDS, raster_facts

        src = getattr(cfg.sources, role)
        # red, green and blue are required; a missing NIR band is the NDVI consumers' business (an RGB
        # orthophoto still colours points and textures the terrain)
        bands = {**ORTHO_BANDS, **src.bands}
        need = max(bands[b] for b in ("red", "green", "blue")) if role == "orthophoto" else 1
        return raster_facts(
            p,
            role=role,
            bands_needed=need,
            height_range=gates.height_range_m,
            spike_m=gates.raster_spike_m,
            working_crs=working,
            crs_override=src.crs,
        )
    if role == "cadastre" and cfg.sources.cadastre and cfg.sources.cadastre.format != "nas":
        if _is_citygml(p):  # GDAL cannot read CityGML solids; the streaming reader checks it instead
            return {"kind": "other"}
        return _vector_facts(p, cfg.sources.cadastre, working)
    return {"kind": "other"}


def _facts_key(cfg: TwinConfig, f: InputFile) -> str:
    import hashlib

    parts = [
        FACTS_VERSION,
        f.role,
        f.sha256,
        cfg.crs.horizontal,
        cfg.release.gates.model_dump_json(include={"height_range_m", "raster_spike_m"}),
        cfg.sources.model_dump_json(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def gate_inputs(cfg: TwinConfig, inputs: list[InputFile], client=None) -> dict:
    """Collect every input's facts and refuse the first implausible one (InputError naming the file;
    CrsError for coordinates outside the CRS's area of use). Returns the summary the release gates use:
    {"terrain_area": m2 of DGM cells with data or None, "header_points": {role: points announced}}."""
    from pipeline.errors import CrsError, InputError
    from pipeline.release.plausibility import input_problems

    memo_dir = cfg.cache_dir / "input-facts"
    keys = [_facts_key(cfg, f) for f in inputs]
    facts: list[dict | None] = []
    for k in keys:
        try:
            facts.append(json.loads((memo_dir / f"{k}.json").read_text()))
        except (OSError, ValueError):
            facts.append(None)
    todo = [n for n, fa in enumerate(facts) if fa is None]
    if todo:
        args = [(inputs[n].role, str(inputs[n].path)) for n in todo]
        executor = build_executor(client) if len(todo) > 1 else None
        new = map_ordered(executor, input_facts, [(cfg, role, path) for role, path in args], name="facts")
        memo_dir.mkdir(parents=True, exist_ok=True)
        for n, fa in zip(todo, new, strict=True):
            facts[n] = fa
            tmp = memo_dir / f"{keys[n]}.tmp{os.getpid()}"
            tmp.write_text(json.dumps(fa, sort_keys=True))
            os.replace(tmp, memo_dir / f"{keys[n]}.json")
    bad: list[tuple[InputFile, list[str]]] = []
    for f, fa in zip(inputs, facts, strict=True):
        assert fa is not None
        if fa.get("crs_problem"):
            raise CrsError(fa["crs_problem"] + "; nothing was published", path=f.path)
        problems = input_problems(fa, cfg.release.gates)
        if problems:
            bad.append((f, problems))
    if bad:
        f, problems = bad[0]
        more = f" (and {len(bad) - 1} more implausible input(s))" if len(bad) > 1 else ""
        raise InputError(
            f"implausible input ({f.role}): {'; '.join(problems)}{more}; nothing was published",
            path=f.path,
        )
    dgm = [fa for f, fa in zip(inputs, facts, strict=True) if f.role == "dgm" and fa and "area_m2" in fa]
    header_points: dict[str, int] = {}
    for f, fa in zip(inputs, facts, strict=True):
        if fa and fa.get("kind") == "points":
            header_points[f.role] = header_points.get(f.role, 0) + int(fa["count"])
    return {
        "terrain_area": sum(fa["area_m2"] for fa in dgm) if dgm else None,
        "header_points": header_points,
    }
