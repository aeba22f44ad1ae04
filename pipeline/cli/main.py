"""`twin` command: a thin adapter. Each subcommand module registers itself and calls one library function."""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline import __version__
from pipeline.errors import EXIT_INTERNAL, TwinError

# Subcommand modules, each with `register(subparsers)`; a module sets `func` on its parser.
COMMANDS = [
    "pipeline.cli.demo",
    "pipeline.cli.build",
    "pipeline.cli.points",
    "pipeline.cli.release",
    "pipeline.cli.view",
]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twin", description="RuhrTwin: raw geodata to a validated 3D Tiles twin")
    p.add_argument("--version", action="version", version=f"twin {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # command not built yet
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TwinError as e:
        print(f"twin: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("twin: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so, keep the traceback for the report
        import traceback

        traceback.print_exc()
        print(f"twin: internal error: {e!r}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
