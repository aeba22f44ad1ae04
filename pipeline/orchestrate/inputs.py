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
