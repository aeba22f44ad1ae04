"""Benchmark: a rebuilt layer's file bookkeeping in `reuse_or_build` at regional size (issue 17).

    .venv/bin/python -m bench.layer_files [--sizes 10000 20000] [--to 653000] [--dir PARENT]

A layer that writes n empty files (XYZ tile names) and names them all in its result, as the imagery layer
does (653,000 tiles at zoom 13-18 for a Ruhr-sized region). Times `reuse_or_build` without the writing,
at each size, and extrapolates to `--to` files with the growth exponent measured between the two sizes.
Writes the files into a new temporary folder (under `--dir` when given) and removes only that folder.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pipeline.orchestrate.reuse as reuse
from pipeline.model import LayerResult


def run(parent: Path | None, n: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="bench-layer-files-", dir=parent))
    names = [f"imagery/xyz/18/{137000 + i // 700}/{88000 + i % 700}.png" for i in range(n)]
    ctx = SimpleNamespace(
        release_dir=root, previous_release=None, reuse=None, log=SimpleNamespace(event=lambda *a, **k: None)
    )
    writing = 0.0

    def build() -> LayerResult:
        nonlocal writing
        t = time.perf_counter()
        for rel in names:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).touch()
        writing = time.perf_counter() - t
        return LayerResult("imagery", "imagery", "public", files=list(names))

    t = time.perf_counter()
    reuse.reuse_or_build(ctx, "imagery", [], build)
    total = time.perf_counter() - t
    shutil.rmtree(root, ignore_errors=True)
    return total - writing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[10_000, 20_000])
    ap.add_argument("--to", type=int, default=653_000)
    ap.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    args = ap.parse_args()
    reuse.layer_config_key = lambda ctx, name: "bench"  # no config: the key is not what is measured
    (a, b) = args.sizes
    ta, tb = run(args.dir, a), run(args.dir, b)
    k = math.log(tb / ta) / math.log(b / a)
    print(f"{a} files {ta:.2f} s, {b} files {tb:.2f} s: grows as n^{k:.2f}")
    print(f"{args.to} files: {tb * (args.to / b) ** k:.0f} s of bookkeeping in the build process")


if __name__ == "__main__":
    main()
