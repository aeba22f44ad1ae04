"""manifest.json of a release: what went in, what came out, how long it took."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.model import InputFile, LayerResult

MANIFEST = "manifest.json"


def sha256_file(path: Path, bufsize: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


@cache
def pipeline_fingerprint() -> str:
    """Pipeline version + sha256 of the code and templates that shape outputs (not the CLI, not vendored
    assets): a code change invalidates the build id and every cached result.

    `TWIN_FINGERPRINT` (environment) pins it: for tests that compare builds made in several processes while
    the code is being edited, or for a deployment that wants to keep its cache across a reinstall of the
    very same version. Never set it while changing code that shapes outputs."""
    import os

    pinned = os.environ.get("TWIN_FINGERPRINT")
    if pinned:
        return f"{__version__}+{pinned}"
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(__version__.encode())
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if (
            not f.is_file()
            or f.suffix not in (".py", ".js", ".cjs", ".html", ".css")
            or rel.startswith("cli/")
            or "/assets/" in rel
            or "__pycache__" in rel
        ):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def build_id_for(config_hash: str, inputs: list[InputFile]) -> str:
    """Content-derived build id: same pipeline code + config + inputs -> same id (reproducible)."""
    h = hashlib.sha256(f"{pipeline_fingerprint()}\n{config_hash}\n".encode())
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
        "pipeline_fingerprint": pipeline_fingerprint(),
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
