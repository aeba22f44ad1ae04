"""`make bench`: run the registered benchmarks (each writes bench/results/<name>.json).

    .venv/bin/python -m bench.run              # all
    .venv/bin/python -m bench.run buildings    # some

Register a benchmark by adding `name: "bench.<module>"` to BENCHMARKS; the module's `main(argv)` runs it.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "points": "bench.points",
    # bytes per point and time of the default (compact) point tiles vs plain ones, in one run (issue 16)
    "points_compact": "bench.points_compact",
    "buildings": "bench.buildings",
    "incremental": "bench.incremental",
    "nas": "bench.nas",
    "solar": "bench.solar",
    "imagery": "bench.imagery",
    "copc": "bench.copc",
    "terrain": "bench.terrain",
    "terrain_textures": "bench.terrain_textures",
    "terrain_mesh": "bench.terrain_mesh",
    "regional": "bench.regional",
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== bench {name}", flush=True)
        importlib.import_module(BENCHMARKS[name]).main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
