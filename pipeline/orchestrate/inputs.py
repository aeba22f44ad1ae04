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
from pipeline.orchestrate.context import InputFile
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
    if src.reference_citygml:
        out += [
            ("reference", f) for f in _glob(cfg, src.reference_citygml, "sources.reference_citygml", False)
        ]
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


def verify_file(path: str) -> str | None:
    """Read one input completely; None when readable, else the problem (one line). Runs on Dask workers.

    A nightly build must not publish a release from a truncated or corrupt delivery, and must name the
    tile when it refuses. Results are memoised by content hash, so each file version is read once."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in (".las", ".laz"):
            import laspy

            with laspy.open(p) as r:
                expected = int(r.header.point_count)
                seen = 0
                for chunk in r.chunk_iterator(2_000_000):
                    seen += len(chunk)
            if seen != expected:
                return f"header announces {expected} points but {seen} could be read (truncated?)"
        elif suffix in (".tif", ".tiff", ".jp2", ".vrt"):
            import rasterio

            with rasterio.open(p) as ds:
                for _ij, win in ds.block_windows(1):
                    ds.read(window=win)
        elif suffix in (".gpkg", ".shp", ".geojson", ".fgb", ".xml", ".gml"):
            import pyogrio

            layers = pyogrio.list_layers(p)
            if len(layers) == 0:
                return "no layers"
            for name, _geom in layers:
                pyogrio.read_dataframe(p, layer=str(name))
        elif suffix == ".e57":
            import pye57

            e = pye57.E57(str(p))
            for i in range(e.scan_count):
                e.read_scan_raw(i)
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
        if client is not None and len(todo) > 1:
            verdicts = client.gather(client.map(verify_file, paths, key=[f"verify-{i.sha256}" for i in todo]))
        else:
            verdicts = [verify_file(p) for p in paths]
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
