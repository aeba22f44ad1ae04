"""Run the Khronos glTF validator (npm `gltf-validator`, installed by `make setup`) on GLB files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

_SCRIPT = Path(__file__).resolve().parent.parent / "data" / "gltf_validate.cjs"


def find_node_modules(start: Path | None = None) -> Path | None:
    """node_modules with gltf-validator: the repository checkout (or cwd) and its parents."""
    for base in [start or Path.cwd(), Path(__file__).resolve().parent]:
        for d in [base, *base.parents]:
            if (d / "node_modules" / "gltf-validator").is_dir():
                return d / "node_modules"
    return None


def validator_available() -> bool:
    return shutil.which("node") is not None and find_node_modules() is not None


def validate_glb_files(paths: list[Path], batch: int = 200) -> list[dict[str, Any]]:
    """One report per file: {'file', 'errors', 'warnings', 'messages'}. Raises if the validator is absent."""
    nm = find_node_modules()
    if nm is None or shutil.which("node") is None:
        raise RuntimeError("glTF validator not installed: run `make setup` (needs node + npm)")
    reports: list[dict[str, Any]] = []
    for i in range(0, len(paths), batch):
        chunk = [str(p) for p in paths[i : i + batch]]
        res = subprocess.run(
            ["node", str(_SCRIPT), str(nm), *chunk], capture_output=True, text=True, check=False, timeout=600
        )
        if res.returncode != 0:
            raise RuntimeError(f"glTF validator failed: {res.stderr.strip()[:2000]}")
        reports.extend(json.loads(res.stdout))
    return reports
