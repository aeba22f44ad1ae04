"""`twin view`: serve a release (default: the current one) on 127.0.0.1 and print the viewer URL."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="serve a release's 3D viewer on 127.0.0.1 (default: the current release)")
    p.add_argument("--release", type=Path, help="release directory (default: <out>/current)")
    p.add_argument("--config", "-c", help="config whose paths.out holds the releases (default: data/out)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument(
        "--internal",
        action="store_true",
        help="also serve layers with access 'internal' (mobile scans, panoramas: municipal use only); "
        "build logs and build records are never served",
    )
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def default_release(config: str | None) -> Path:
    if config:
        from pipeline.config.loader import load_config

        out = load_config(config).out_dir
    else:
        out = Path("data/out")
    from pipeline.release.publish import current_release

    cur = current_release(out)
    if cur is None:
        raise ConfigError("no current release: build one with `make twin` or pass --release DIR", path=out)
    return cur


def run(args: argparse.Namespace) -> int:
    from pipeline.viewer.serve import make_server

    release = args.release or default_release(args.config)
    if not (release / "viewer" / "index.html").is_file():
        raise ConfigError("the release has no viewer/ (built without `layers.viewer`?)", path=release)
    server = make_server(release, port=args.port, internal=args.internal, quiet=not args.verbose)
    print(f"Serving {server.site.root}")
    if not args.internal:
        print("Public view: the public manifest and public layers only (--internal for municipal use).")
    print(f"Open {server.url}   (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
