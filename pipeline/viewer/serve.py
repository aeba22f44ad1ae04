"""A local static server for one release: `twin view`.

Serves only files inside the release directory (no `..`, no encoded traversal, no absolute paths, no
symlink leading outside), GET/HEAD only, no directory listings, bound to 127.0.0.1.

Without `internal=True` it serves exactly what a public export of the release would contain
(`pipeline.release.access.public_plan`): the public manifest (internal layers, the inputs only they
read, their timings and warnings dropped; no validation block), the files of public layers and the
viewer; never internal layers, and a text file that names an internal layer, path or input is refused.
Build logs (`build.log.jsonl`), the build record and reuse index (`.twin/`) and dot-files are never served,
with or without `internal`.

Hardening: the Host header must name 127.0.0.1 or localhost (a page on another site that rebinds its DNS
name to 127.0.0.1 is refused); every connection has a socket timeout and a whole-response deadline;
requests run on a bounded pool of threads (a connection beyond the pool and its small queue gets 503).

The release a server started with stays served until it disappears (pruned, or renamed away by a
release operation); then the server switches to the output folder's new `current` release (when the
release lives in `<out>/releases/<id>`), or answers 503 while there is none.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import posixpath
import queue
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# never served, in any mode: they name every layer, input path and internal tile
PRIVATE_FILES = frozenset({"build.log.jsonl"})
PRIVATE_DIRS = frozenset({".twin"})
ALLOWED_HOSTS = frozenset({"127.0.0.1", "localhost"})
# text files searched for internal tokens before they are served in public mode (tiles are not: the
# public export's own leak check covers them; a text file up to this size is scanned)
SCANNED_SUFFIXES = frozenset({".json", ".geojson", ".txt", ".csv", ".xml", ".qml", ".jsonl", ".html", ".md"})
SCAN_MAX_BYTES = 16 << 20
SOCKET_TIMEOUT_S = 10.0
RESPONSE_DEADLINE_S = 120.0
POOL_THREADS = 16
POOL_QUEUE = 48

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


def is_private(rel: str) -> bool:
    """Build logs, `.twin/` and dot-files: never served."""
    parts = rel.split("/")
    return rel in PRIVATE_FILES or parts[0] in PRIVATE_DIRS or any(p.startswith(".") for p in parts if p)


@dataclass
class ReleaseSite:
    """What the server may hand out from one release directory."""

    root: Path  # resolved release directory
    internal: bool = False
    manifest: dict[str, Any] | None = None
    hidden_prefixes: list[str] = field(default_factory=list)  # release-relative, '/'-separated
    public_files: frozenset[str] | None = None  # public mode: the only files served (besides the manifest)
    tokens: tuple[bytes, ...] = ()  # internal paths, file names, input paths and hashes
    name_tokens: tuple[bytes, ...] = ()  # internal layer names
    manifest_bytes: bytes | None = None
    _scan_cache: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def open(cls, release_dir: Path, *, internal: bool = False) -> ReleaseSite:
        root = Path(release_dir).resolve()
        if not root.is_dir():
            raise ConfigError("release directory does not exist (run `make twin` first)", path=release_dir)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise ConfigError(f"not a release: no {MANIFEST}", path=root)
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"unreadable {MANIFEST}: {e}", path=mpath) from e
        site = cls(root=root, internal=internal, manifest=manifest)
        if internal:
            site.manifest_bytes = mpath.read_bytes()
            return site
        from pipeline.release.access import public_plan

        plan = public_plan(root)
        site.hidden_prefixes = internal_paths(manifest)
        site.public_files = frozenset(plan["files"])
        site.manifest_bytes = json.dumps(plan["manifest"], ensure_ascii=False, indent=1).encode("utf-8")
        # every internal file path is under an internal folder token or is a token itself; for the live
        # scan the folder tokens, tilesets, input paths/hashes and files outside those folders suffice
        folders = [t for t in plan["tokens"] if t.endswith("/")]
        site.tokens = tuple(
            t.encode()
            for t in plan["tokens"]
            if t.endswith("/") or "/" not in t or not any(t.startswith(f) for f in folders)
        )
        site.name_tokens = tuple(t.encode() for t in plan["name_tokens"])
        return site

    def alive(self) -> bool:
        return (self.root / MANIFEST).is_file()

    def public_manifest(self) -> bytes | None:
        return self.manifest_bytes

    def is_hidden(self, rel: str) -> bool:
        for p in self.hidden_prefixes:
            base = p.rstrip("/")
            if rel == base or rel.startswith(base + "/"):
                return True
        return False

    def _allowed(self, rel: str) -> bool:
        if is_private(rel):
            return False
        if self.public_files is None:
            return True
        return rel == MANIFEST or rel in self.public_files

    def resolve(self, url_path: str) -> Path | None:
        """Map a request path to a file inside the release, or None (refused / not found)."""
        path = unquote(urlsplit(url_path).path, errors="strict")
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None
        parts = path.split("/")[1:]
        if any(p in ("..", ".") for p in parts) or (parts and parts[0] == "" and len(parts) > 1):
            return None  # traversal, or '//absolute'
        rel = posixpath.normpath("/".join(p for p in parts if p)) if any(parts) else ""
        if not rel or rel.startswith("/") or rel.startswith(".."):
            return None
        if self.is_hidden(rel) or not self._allowed(rel):
            return None
        target = self.root / rel
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real == self.root or not real.is_relative_to(self.root):
            return None  # a symlink leading out of the release
        real_rel = real.relative_to(self.root).as_posix()
        if self.is_hidden(real_rel) or not self._allowed(real_rel):
            return None  # a link inside the release pointing into an internal layer or a private file
        return real

    def scans(self, target: Path, size: int) -> bool:
        """Public mode: is this file searched for internal tokens before it is served?"""
        return not self.internal and target.suffix.lower() in SCANNED_SUFFIXES and size <= SCAN_MAX_BYTES

    def leaks(self, target: Path, data: bytes) -> bool:
        """Does this text file name an internal layer, path or input? (cached per file)"""
        key = target.as_posix()
        hit = self._scan_cache.get(key)
        if hit is None:
            # the public export's rules: a layer name counts as a whole word, not inside `last_change`
            from pipeline.release.access import LeakMatcher, program_dirs

            matcher = LeakMatcher([t.decode() for t in self.tokens], [t.decode() for t in self.name_tokens])
            rel = target.relative_to(self.root).as_posix()  # `resolve` keeps targets inside the root
            hit = bool(matcher.in_bytes(data, rel, program_dirs(self.manifest or {})))
            if hit:
                log.warning("twin view: %s names an internal layer or input; not served", target)
            self._scan_cache[key] = hit
        return hit


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


class SiteRef:
    """The release being served; follows `<out>/current` once the release it started with is gone."""

    def __init__(self, site: ReleaseSite, current_link: Path | None):
        self._site = site
        self._current_link = current_link
        self._lock = threading.Lock()

    def get(self) -> ReleaseSite | None:
        site = self._site
        if site.alive():
            return site
        return self.refresh()

    def refresh(self) -> ReleaseSite | None:
        with self._lock:
            site = self._site
            if site.alive() or self._current_link is None:
                return site if site.alive() else None
            try:
                target = self._current_link.resolve(strict=True)
            except (OSError, RuntimeError):
                return None
            if target == site.root:
                return None
            try:
                new = ReleaseSite.open(target, internal=site.internal)
            except Exception as e:  # a release mid-operation: try again on the next request
                log.warning("twin view: cannot open the new current release %s: %s", target, e)
                return None
            log.warning("twin view: %s is gone; now serving %s", site.root, new.root)
            self._site = new
            return new


def _handler_for(ref: SiteRef, quiet: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "twin-view"
        sys_version = ""
        timeout = SOCKET_TIMEOUT_S

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
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _host_ok(self) -> bool:
            host = (self.headers.get("Host") or "").strip().lower()
            if not host:
                return False
            name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if not sep:
                name, port = host, ""
            if name not in ALLOWED_HOSTS:
                return False
            addr = self.server.server_address  # (host, port) of a TCP server
            return port == "" or (isinstance(addr, tuple) and port == str(addr[1]))

        def _serve(self, head: bool) -> None:
            if not self._host_ok():
                return self._refuse(HTTPStatus.MISDIRECTED_REQUEST)
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
            site = ref.get()
            if site is None:
                return self._refuse(HTTPStatus.SERVICE_UNAVAILABLE)
            try:
                target = site.resolve(self.path)
            except UnicodeDecodeError:
                return self._refuse(HTTPStatus.NOT_FOUND)
            if (target is None or not target.is_file()) and not site.alive():
                site = ref.refresh()  # the release went away between the check and the open
                if site is None:
                    return self._refuse(HTTPStatus.SERVICE_UNAVAILABLE)
                target = site.resolve(self.path)
            if target is None or not target.is_file():
                return self._refuse(HTTPStatus.NOT_FOUND)
            ctype = CONTENT_TYPES.get(target.suffix.lower()) or (
                mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            )
            if target == site.root / MANIFEST:
                return self._send(ctype, site.public_manifest() or b"", None, head)
            try:
                f = target.open("rb")
            except OSError:
                return self._refuse(HTTPStatus.NOT_FOUND)
            with f:
                size = os.fstat(f.fileno()).st_size
                data = None
                if site.scans(target, size):
                    data = f.read()
                    if site.leaks(target, data):
                        return self._refuse(HTTPStatus.NOT_FOUND)
                return self._send(ctype, data, (f, size), head)

        def _send(
            self, ctype: str, data: bytes | None, stream: tuple[BinaryIO, int] | None, head: bool
        ) -> None:
            size = len(data) if data is not None else stream[1] if stream else 0
            try:
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
                assert stream is not None
                deadline = time.monotonic() + RESPONSE_DEADLINE_S
                while chunk := stream[0].read(1 << 20):
                    if time.monotonic() > deadline:  # a client reading too slowly loses its connection
                        self.close_connection = True
                        break
                    self.wfile.write(chunk)
            except OSError:  # broken pipe, reset, socket timeout
                self.close_connection = True
            return None

    return Handler


class ReleaseServer(HTTPServer):
    """HTTP server on 127.0.0.1 with a fixed pool of worker threads and a bounded queue."""

    request_queue_size = 128  # listen backlog: connections are accepted at once and queued or refused

    def __init__(
        self,
        site: ReleaseSite,
        port: int = 0,
        quiet: bool = True,
        *,
        current_link: Path | None = None,
        threads: int = POOL_THREADS,
        backlog: int = POOL_QUEUE,
    ):
        self.ref = SiteRef(site, current_link)
        self._queue: queue.Queue[tuple[Any, Any] | None] = queue.Queue(maxsize=backlog)
        super().__init__(("127.0.0.1", port), _handler_for(self.ref, quiet))
        self._workers = [
            threading.Thread(target=self._work, name=f"twin-view-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._workers:
            t.start()

    @property
    def site(self) -> ReleaseSite:
        return self.ref._site

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/viewer/index.html"

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._queue.put_nowait((request, client_address))
        except queue.Full:  # every worker busy and the queue full: a short answer, never an unbounded queue
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # one bad connection never stops the server
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("twin view: error on a connection from %s", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break  # daemon threads: they end with the process

    def start_background(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="twin-view", daemon=True)
        t.start()
        return t


def _current_link_for(root: Path) -> Path | None:
    """`<out>/current` when `root` is `<out>/releases/<id>` (the layout of pipeline.release.publish)."""
    from pipeline.release.publish import CURRENT, RELEASES

    if root.parent.name == RELEASES:
        link = root.parent.parent / CURRENT
        if link.is_symlink():
            return link
    return None


def make_server(
    release_dir: Path,
    *,
    port: int = 0,
    internal: bool = False,
    quiet: bool = True,
    threads: int = POOL_THREADS,
) -> ReleaseServer:
    """A server for `release_dir` on 127.0.0.1 (`port=0`: a free port). Call serve_forever()/shutdown()."""
    site = ReleaseSite.open(release_dir, internal=internal)
    try:
        return ReleaseServer(site, port, quiet, current_link=_current_link_for(site.root), threads=threads)
    except OSError as e:
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from e
