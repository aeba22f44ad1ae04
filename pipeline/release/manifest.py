"""manifest.json of a release: what went in, what came out, how long it took."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.orchestrate.context import InputFile, LayerResult

MANIFEST = "manifest.json"


def sha256_file(path: Path, bufsize: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def build_id_for(config_hash: str, inputs: list[InputFile]) -> str:
    """Content-derived build id: same pipeline version + config + inputs -> same id (reproducible)."""
    h = hashlib.sha256(f"{__version__}\n{config_hash}\n".encode())
    for i in sorted(inputs, key=lambda i: (i.role, str(i.path))):
        h.update(f"{i.role}\t{i.path.name}\t{i.sha256}\n".encode())
    return h.hexdigest()[:16]


def make_manifest(
    *,
    name: str,
    build_id: str,
    config_hash: str,
    created: str,
    raw_dir: Path,
    inputs: list[InputFile],
    layers: list[LayerResult],
    timings: dict[str, float],
    warnings: list[str],
    frame: dict[str, Any],
    crs: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": name,
        "build_id": build_id,
        "pipeline_version": __version__,
        "config_hash": config_hash,
        "created": created,
        "crs": crs,
        "frame": frame,
        "inputs": [i.to_json(raw_dir) for i in sorted(inputs, key=lambda i: (i.role, str(i.path)))],
        "layers": [lay.to_json() for lay in layers],
        "timings": timings,
        "warnings": warnings,
    }
    if extra:
        m.update(extra)
    return m
