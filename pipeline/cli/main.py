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


def make_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `twin` parser. When argv[0] names a command whose module is named like it (`twin points`), only
    that module is imported (`twin points` starts its worker pool sooner); otherwise all of them."""
    if argv and f"pipeline.cli.{argv[0]}" in COMMANDS:
        p, sub = _base_parser()
        importlib.import_module(f"pipeline.cli.{argv[0]}").register(sub)
        if argv[0] in sub.choices:
            return p
    p, sub = _base_parser()
    for name in COMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # command not built yet
            raise
        mod.register(sub)
    return p


def _base_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    p = argparse.ArgumentParser(prog="twin", description="RuhrTwin: raw geodata to a validated 3D Tiles twin")
    p.add_argument("--version", action="version", version=f"twin {__version__}")
    return p, p.add_subparsers(dest="command", required=True, metavar="COMMAND")


def main(argv: list[str] | None = None) -> int:
    args = make_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
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
