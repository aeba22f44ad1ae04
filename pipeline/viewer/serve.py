"""A local static server for one release: `twin view`.

Serves only files inside the release directory (no `..`, no encoded traversal, no absolute paths, no
symlink leading outside), GET/HEAD only, no directory listings, bound to 127.0.0.1. Layers with access
"internal" (mobile scans, panoramas: licensed for municipal use only) are hidden unless asked for
explicitly: the manifest is served without them and every path belonging to them answers 404.
"""

from __future__ import annotations

import json
import mimetypes
import posixpath
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.errors import ConfigError

MANIFEST = "manifest.json"
CONTENT_TYPES = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".subtree": "application/octet-stream",
    ".pnts": "application/octet-stream",
    ".b3dm": "application/octet-stream",
    ".i3dm": "application/octet-stream",
    ".cmpt": "application/octet-stream",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".wasm": "application/wasm",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".ktx2": "image/ktx2",
    ".svg": "image/svg+xml",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass
class ReleaseSite:
    """What the server may hand out from one release directory."""

    root: Path  # resolved release directory
    internal: bool = False
    manifest: dict[str, Any] | None = None
    hidden_prefixes: list[str] = field(default_factory=list)  # release-relative, '/'-separated

    @classmethod
    def open(cls, release_dir: Path, *, internal: bool = False) -> ReleaseSite:
        root = Path(release_dir).resolve()
        if not root.is_dir():
            raise ConfigError("release directory does not exist (run `make twin` first)", path=release_dir)
        mpath = root / MANIFEST
        manifest = None
        if mpath.is_file():
            try:
                manifest = json.loads(mpath.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ConfigError(f"unreadable {MANIFEST}: {e}", path=mpath) from e
        site = cls(root=root, internal=internal, manifest=manifest)
        if not internal and manifest is not None:
            site.hidden_prefixes = internal_paths(manifest)
        return site

    def public_manifest(self) -> bytes | None:
        if self.manifest is None:
            return None
        m = self.manifest
        if not self.internal:
            m = dict(m)
            hidden = [lay["name"] for lay in m.get("layers", []) if lay.get("access") != "public"]
            m["layers"] = [lay for lay in m.get("layers", []) if lay.get("access") == "public"]
            m["hidden_layers"] = len(hidden)
        return json.dumps(m, ensure_ascii=False, indent=1).encode("utf-8")

    def is_hidden(self, rel: str) -> bool:
        for p in self.hidden_prefixes:
            base = p.rstrip("/")
            if rel == base or rel.startswith(base + "/"):
                return True
        return False

    def resolve(self, url_path: str) -> Path | None:
        """Map a request path to a file inside the release, or None (refused / not found)."""
        path = unquote(urlsplit(url_path).path, errors="strict")
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None
        parts = path.split("/")[1:]
        if any(p in ("..", ".") for p in parts) or (parts and parts[0] == "" and len(parts) > 1):
            return None  # traversal, or '//absolute'
        rel = posixpath.normpath("/".join(p for p in parts if p)) if any(parts) else ""
        if rel.startswith("/") or rel.startswith(".."):
            return None
        if rel and self.is_hidden(rel):
            return None
        target = (self.root / rel) if rel else self.root
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real != self.root and not real.is_relative_to(self.root):
            return None  # a symlink leading out of the release
        real_rel = real.relative_to(self.root).as_posix() if real != self.root else ""
        if real_rel and self.is_hidden(real_rel):
            return None  # a link inside the release pointing into an internal layer
        return real


def _layer_paths(lay: dict[str, Any]) -> list[str]:
    paths = [*lay.get("files", []), lay.get("tileset"), lay.get("style")]
    out = []
    for p in paths:
        if not p:
            continue
        p = posixpath.normpath(str(p).rstrip("/"))
        if p not in (".", "") and not p.startswith(".."):
            out.append(p)
    return out


def internal_paths(manifest: dict[str, Any]) -> list[str]:
    """Release-relative paths of every non-public layer: its files and the folders holding them.

    A folder is hidden whole (so tile content below a tileset is hidden too) unless a public layer also
    keeps files there; folder entries end with '/'.
    """
    layers = manifest.get("layers", [])
    public_dirs = {
        posixpath.dirname(p) for lay in layers if lay.get("access") == "public" for p in _layer_paths(lay)
    }
    out: set[str] = set()
    for lay in layers:
        if lay.get("access") == "public":
            continue
        for p in _layer_paths(lay):
            out.add(p)
            folder = posixpath.dirname(p)
            if (
                folder
                and folder not in public_dirs
                and not any(d == folder or d.startswith(folder + "/") for d in public_dirs)
            ):
                out.add(folder + "/")
    return sorted(out)


def _handler_for(site: ReleaseSite, quiet: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "twin-view"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _refuse(self, code: HTTPStatus) -> None:
            body = f"{code.value} {code.phrase}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            try:
                path = urlsplit(self.path).path
            except ValueError:
                return self._refuse(HTTPStatus.BAD_REQUEST)
            if path in ("/", ""):
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", "/viewer/index.html")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            try:
                target = site.resolve(self.path)
            except UnicodeDecodeError:
                target = None
            if target is None or not target.is_file():
                return self._refuse(HTTPStatus.NOT_FOUND)
            if target == site.root / MANIFEST:
                data = site.public_manifest() or b""
            else:
                data = None
            ctype = CONTENT_TYPES.get(target.suffix.lower()) or (
                mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            )
            size = len(data) if data is not None else target.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if head:
                return None
            if data is not None:
                self.wfile.write(data)
                return None
            try:
                with target.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None

    return Handler


class ReleaseServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: ReleaseSite, port: int = 0, quiet: bool = True):
        self.site = site
        super().__init__(("127.0.0.1", port), _handler_for(site, quiet))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/viewer/index.html"

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="twin-view", daemon=True)
        t.start()
        return t


def make_server(
    release_dir: Path, *, port: int = 0, internal: bool = False, quiet: bool = True
) -> ReleaseServer:
    """A server for `release_dir` on 127.0.0.1 (`port=0`: a free port). Call serve_forever()/shutdown()."""
    try:
        return ReleaseServer(ReleaseSite.open(release_dir, internal=internal), port, quiet)
    except OSError as e:
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from e
