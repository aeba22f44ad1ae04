"""Run the Khronos glTF validator (npm `gltf-validator`, installed by `make setup`) on GLB files."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
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


BATCH = 1000
"""Files per node process at most: a process start (loading the validator) costs about as much CPU as
checking 40 point tiles, a batch's reports stay small (errors only, at most 20 messages a file)."""


def validate_glb_files(paths: list[Path], batch: int = BATCH, jobs: int = 1) -> list[dict[str, Any]]:
    """One report per file, in the order of `paths`: {'file', 'errors', 'warnings', 'messages'}. Raises
    if the validator is absent. `jobs` node processes validate batches of at most `batch` files at once
    (the validator is single-threaded)."""
    return start_validation(paths, batch, jobs)()


def start_validation(
    paths: list[Path], batch: int = BATCH, jobs: int = 1
) -> Callable[[], list[dict[str, Any]]]:
    """`validate_glb_files` started in the background: returns the function that waits for the reports
    (the caller can do other work while the node processes run)."""
    from concurrent.futures import ThreadPoolExecutor

    nm = find_node_modules()
    if nm is None or shutil.which("node") is None:
        raise RuntimeError("glTF validator not installed: run `make setup` (needs node + npm)")
    jobs = max(1, jobs)
    n = max(jobs, -(-len(paths) // batch)) if paths else 0
    size = -(-len(paths) // n) if n else 0
    chunks = [[str(p) for p in paths[i : i + size]] for i in range(0, len(paths), size)] if size else []

    def run(chunk: list[str]) -> list[dict[str, Any]]:
        res = subprocess.run(
            ["node", str(_SCRIPT), str(nm), *chunk], capture_output=True, text=True, check=False, timeout=600
        )
        if res.returncode != 0:
            raise RuntimeError(f"glTF validator failed: {res.stderr.strip()[:2000]}")
        return list(json.loads(res.stdout))

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="gltf-validate")
    futures = [pool.submit(run, c) for c in chunks]

    def wait() -> list[dict[str, Any]]:
        try:
            return [rep for f in futures for rep in f.result()]
        finally:
            pool.shutdown(cancel_futures=True)

    return wait
