"""`twin view` server: serves only the release, hides internal layers, refuses traversal."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.viewer.build import find_cesium_build, write_viewer
from pipeline.viewer.sample import write_sample_release
from pipeline.viewer.serve import ReleaseServer, internal_paths, make_server


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("viewer_srv")
    rel = base / "release"
    write_sample_release(rel)
    (base / "secret.txt").write_text("outside the release")
    (rel / "escape").symlink_to(base / "secret.txt")
    (rel / "escape_dir").symlink_to(base)
    (rel / "viewer").mkdir()
    (rel / "viewer" / "index.html").write_text("<html></html>")
    # a link inside the release pointing into an internal layer
    (rel / "alias.geojson").symlink_to(rel / "panoramas" / "panoramas.geojson")
    return rel


def _server(release: Path, internal: bool) -> Iterator[ReleaseServer]:
    srv = make_server(release, internal=internal)
    srv.start_background()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def public(release: Path) -> Iterator[ReleaseServer]:
    yield from _server(release, internal=False)


@pytest.fixture(scope="module")
def internal(release: Path) -> Iterator[ReleaseServer]:
    yield from _server(release, internal=True)


def get(srv: ReleaseServer, raw_path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    """Send the path exactly as given (no client-side normalisation)."""
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.putrequest(method, raw_path, skip_host=False, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_binds_loopback_on_free_port(public: ReleaseServer) -> None:
    host, port = public.server_address[:2]
    assert host == "127.0.0.1"
    assert port > 0
    assert public.url == f"http://127.0.0.1:{port}/viewer/index.html"


def test_serves_release_files(public: ReleaseServer, release: Path) -> None:
    status, body, headers = get(public, "/buildings/0.glb")
    assert status == 200
    assert body == (release / "buildings" / "0.glb").read_bytes()
    assert headers["content-type"] == "model/gltf-binary"
    status, body, _ = get(public, "/buildings/tileset.json?v=sample")  # query strings (tilesetVersion) ok
    assert status == 200 and json.loads(body)["asset"]["version"] == "1.1"
    status, _, headers = get(public, "/")
    assert status == 302 and headers["location"] == "/viewer/index.html"
    status, body, _ = get(public, "/buildings/0.glb", method="HEAD")
    assert status == 200 and body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/viewer/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/viewer/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/etc/passwd",
        "/escape",
        "/escape_dir/secret.txt",
        "/buildings/%00.glb",
        "/buildings\\..\\..\\secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/buildings",  # directories are not listed
    ],
)
def test_traversal_refused(public: ReleaseServer, path: str) -> None:
    status, body, _ = get(public, path)
    assert status in (400, 403, 404), (path, status)
    assert b"outside the release" not in body
    assert b"root:" not in body


def test_internal_layer_hidden_by_default(public: ReleaseServer) -> None:
    status, body, _ = get(public, "/manifest.json")
    assert status == 200
    m = json.loads(body)
    names = [lay["name"] for lay in m["layers"]]
    assert "panoramas" not in names and "buildings" in names
    assert b"panoramas" not in body
    # the manifest reached through a link that loops back into the release is not served at all
    status, body, _ = get(public, "/escape_dir/release/manifest.json")
    assert status == 404 and b"panoramas" not in body
    for path in (
        "/panoramas/panoramas.geojson",
        "/panoramas/",
        "/panoramas",
        "/alias.geojson",
        "/%70anoramas/panoramas.geojson",
    ):
        status, _, _ = get(public, path)
        assert status == 404, path


def test_internal_layer_served_with_flag(internal: ReleaseServer, release: Path) -> None:
    status, body, _ = get(internal, "/manifest.json")
    assert "panoramas" in [lay["name"] for lay in json.loads(body)["layers"]]
    status, body, headers = get(internal, "/panoramas/panoramas.geojson")
    assert status == 200
    assert headers["content-type"] == "application/geo+json"
    assert json.loads(body)["features"][0]["properties"]["image_id"] == "pano_0000"
    # traversal is still refused
    assert get(internal, "/%2e%2e/secret.txt")[0] == 404


def test_internal_paths_keep_shared_public_folders() -> None:
    manifest = {
        "layers": [
            {"name": "b", "access": "public", "tileset": "shared/b.json"},
            {"name": "m", "access": "internal", "tileset": "mobile/tileset.json"},
            {"name": "x", "access": "internal", "files": ["shared/x.geojson"]},
        ]
    }
    hidden = internal_paths(manifest)
    assert "mobile/" in hidden and "mobile/tileset.json" in hidden
    assert "shared/x.geojson" in hidden
    assert "shared/" not in hidden


def test_viewer_copies_cesium_without_source_maps(tmp_path: Path) -> None:
    cesium = find_cesium_build()
    if cesium is None:
        pytest.skip("node_modules/cesium not installed (make setup)")
    res = write_viewer(tmp_path, build_id="abc123", cesium_build=cesium)
    vdir = tmp_path / "viewer"
    assert res.kind == "viewer" and res.access == "public"
    assert (
        res.stats["cesium_version"]
        == json.loads((cesium.parent.parent / "package.json").read_text())["version"]
    )
    for part in ("Cesium.js", "Workers", "Assets", "ThirdParty", "Widgets/widgets.css"):
        assert (vdir / "cesium" / part).exists(), part
    assert not list(vdir.rglob("*.map"))
    assert not (vdir / "cesium" / "index.js").exists()
    html = (vdir / "index.html").read_text()
    assert "abc123" in html and "__BUILD_ID__" not in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert 'src="cesium/Cesium.js"' in html
    js = (vdir / "app.js").read_text()
    assert "../manifest.json" in js
    # meshoptimizer's decoder for picking in the (default) EXT_meshopt_compression point tiles
    decoder = cesium.parents[2] / "meshoptimizer" / "meshopt_decoder.mjs"
    if decoder.is_file():
        assert (vdir / "meshopt_decoder.module.js").read_bytes() == decoder.read_bytes()
        assert "viewer/meshopt_decoder.module.js" in res.files
        assert "./meshopt_decoder.module.js" in js
    assert res.stats["cesium_files"] == sum(1 for p in (vdir / "cesium").rglob("*") if p.is_file())
    # deterministic: a second build writes identical bytes
    before = {p: p.read_bytes() for p in vdir.glob("*.*")}
    write_viewer(tmp_path, build_id="abc123", cesium_build=cesium)
    assert before == {p: p.read_bytes() for p in vdir.glob("*.*")}
    # hardlinks when on the same file system (no copy of 13 MB per release)
    if os.stat(cesium / "Cesium.js").st_dev == os.stat(vdir).st_dev:
        assert os.stat(vdir / "cesium" / "Cesium.js").st_ino == os.stat(cesium / "Cesium.js").st_ino


# --- the public view only (issue 12.5) -------------------------------------------------------------------

INTERNAL_COUNT = 987_654_321  # internal point count: must appear in no public response
INTERNAL_SIZE = 123_456_789
INTERNAL_SHA = "ab" * 32
MOBILE_TILE = "mobile_points/strip_0042.glb"


def _leaky_release(rel: Path) -> list[str]:
    """The sample release plus what a real build adds: inputs with hashes, an internal point layer with
    tiles, timings/warnings naming it, a build log, `.twin/` records, a validation block. Returns the
    strings that must never reach a client of the public server."""
    write_sample_release(rel)
    (rel / "viewer").mkdir()
    (rel / "viewer" / "index.html").write_text('<html><script src="app.js"></script></html>')
    (rel / "viewer" / "app.js").write_text("fetch('../manifest.json'); // panoramas feature code\n")
    (rel / "mobile_points").mkdir()
    (rel / MOBILE_TILE).write_bytes(b"glTF-internal")
    (rel / "mobile_points" / "tileset.json").write_text(
        json.dumps({"asset": {"version": "1.1"}, "root": {"content": {"uri": "strip_0042.glb"}}})
    )
    m = json.loads((rel / "manifest.json").read_text())
    m["layers"].append(
        {
            "name": "mobile_points",
            "kind": "pointcloud",
            "access": "internal",
            "tileset": "mobile_points/tileset.json",
            "stats": {"points": INTERNAL_COUNT, "class_scheme": "asprs"},
            "warnings": ["mobile_points: 3 scans without trajectory"],
        }
    )
    m["inputs"] = [
        {"path": "aerial/tile_1.laz", "role": "aerial", "size": 1000, "sha256": "cd" * 32},
        {
            "path": "mobile/secret_scan_07.laz",
            "role": "mobile",
            "size": INTERNAL_SIZE,
            "sha256": INTERNAL_SHA,
        },
        {"path": "panos/pano_index.csv", "role": "panoramas", "size": 4321, "sha256": "ef" * 32},
    ]
    m["timings"] = {"aerial_points": 1.5, "mobile_points": 7.25, "panoramas": 0.5}
    m["warnings"] = ["mobile_points: 3 scans without trajectory", "aerial: 2 points outside"]
    m["validation"] = {"tilesets": 3, "checked": ["mobile_points/tileset.json"]}
    (rel / "manifest.json").write_text(json.dumps(m))
    (rel / "build.log.jsonl").write_text(json.dumps({"event": "read", "path": "mobile/secret_scan_07.laz"}))
    (rel / ".twin").mkdir()
    (rel / ".twin" / "outputs.json").write_text(json.dumps({"mobile_points": [MOBILE_TILE]}))
    (rel / ".twin" / "build-record.json").write_text(json.dumps({"inputs": m["inputs"]}))
    (rel / ".hidden.json").write_text("{}")
    # a public-looking file that names internal data anyway: refused by the content check
    (rel / "report").mkdir()
    (rel / "report" / "summary.json").write_text(json.dumps({"layers": {"mobile_points": INTERNAL_COUNT}}))
    (rel / "report" / "ok.json").write_text(json.dumps({"buildings": 4}))
    return [
        "mobile_points",
        "panoramas",
        "pano_",
        "secret_scan_07",
        "mobile/",
        "pano_index",
        INTERNAL_SHA,
        "ef" * 32,
        str(INTERNAL_COUNT),
        str(INTERNAL_SIZE),
        "strip_0042",
        "build-record",
        "outputs.json",
    ]


def _crawl(srv: ReleaseServer, rel: Path) -> dict[str, tuple[int, bytes]]:
    """Every response the server gives: links followed from `/` (redirects, html src/href, the manifest's
    layers, tileset contents) plus a request for every file and folder that exists in the release."""
    import re

    seen: dict[str, tuple[int, bytes]] = {}
    todo = ["/", "/manifest.json", "/build.log.jsonl", "/.twin/", "/.twin/outputs.json"]
    todo += ["/" + p.relative_to(rel).as_posix() for p in sorted(rel.rglob("*"))]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        status, body, headers = get(srv, path)
        seen[path] = (status, body)
        if status == 302:
            todo.append(headers["location"])
        if status != 200:
            continue
        base = path.rsplit("/", 1)[0]
        if path.endswith(".html"):
            todo += [f"{base}/{u}" for u in re.findall(r'(?:src|href)="([^":]+)"', body.decode())]
        if path.endswith(".json"):
            doc = json.loads(body)
            for lay in doc.get("layers", []) if isinstance(doc, dict) else []:
                todo += ["/" + p for p in [lay.get("tileset"), lay.get("style"), *lay.get("files", [])] if p]
            tiles = [doc.get("root", {})] if isinstance(doc, dict) else []
            while tiles:
                t = tiles.pop()
                if "content" in t:
                    todo.append(f"{base}/{t['content']['uri']}")
                tiles += t.get("children", [])
    return seen


def test_public_server_crawl_leaks_nothing(tmp_path: Path) -> None:
    rel = tmp_path / "release"
    secrets = _leaky_release(rel)
    for srv in _server(rel, internal=False):
        seen = _crawl(srv, rel)
    ok = {p: b for p, (s, b) in seen.items() if s == 200}
    # the crawl reached the public layers and the viewer
    for p in (
        "/manifest.json",
        "/buildings/0.glb",
        "/aerial_points/0.glb",
        "/viewer/app.js",
        "/report/ok.json",
    ):
        assert p in ok, p
    for path, body in ok.items():
        for s in secrets:
            if path == "/viewer/app.js" and s == "panoramas":
                continue  # a feature word in program code, not data (as the public export allows)
            assert s.encode() not in body, (path, s)
            assert s not in path, (path, s)
    # refused: internal layer, build log, records, dot-files, the leaking report
    for p in ("/" + MOBILE_TILE, "/build.log.jsonl", "/.twin/outputs.json", "/.twin/build-record.json"):
        assert seen[p][0] == 404, p
    assert seen["/.hidden.json"][0] == 404
    assert seen["/report/summary.json"][0] == 404
    # the manifest is exactly the public export's
    from pipeline.release.access import public_plan

    assert json.loads(ok["/manifest.json"]) == public_plan(rel)["manifest"]
    # with --internal the internal layer is served, the build log and records still are not
    for srv in _server(rel, internal=True):
        assert get(srv, "/" + MOBILE_TILE)[0] == 200
        assert str(INTERNAL_COUNT).encode() in get(srv, "/manifest.json")[1]
        for p in ("/build.log.jsonl", "/.twin/outputs.json", "/.twin/build-record.json"):
            assert get(srv, p)[0] == 404, p


def _get_host(srv: ReleaseServer, path: str, host: str | None) -> int:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_host_header_checked(public: ReleaseServer) -> None:
    port = public.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"LOCALHOST:{port}"):
        assert _get_host(public, "/buildings/tileset.json", host) == 200, host
    for host in (
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        "127.0.0.1:1",
        None,
    ):
        assert _get_host(public, "/buildings/tileset.json", host) == 421, host


def test_idle_connections_time_out_and_pool_is_bounded(release: Path, monkeypatch) -> None:
    import socket
    import time

    import pipeline.viewer.serve as serve

    monkeypatch.setattr(serve, "SOCKET_TIMEOUT_S", 0.5)
    srv = make_server(release, threads=2)
    srv.start_background()
    try:
        addr = srv.server_address[:2]
        idle = [socket.create_connection(addr) for _ in range(2)]  # hold both workers, send nothing
        t0 = time.monotonic()
        # the workers are busy: a request waits in the queue and is answered once the idle ones time out
        status, _, _ = get(srv, "/buildings/tileset.json")
        waited = time.monotonic() - t0
        assert status == 200 and 0.3 < waited < 5, waited
        for s in idle:  # the server closed them (EOF)
            s.settimeout(2)
            assert s.recv(10) == b""
            s.close()
        # a flood beyond the pool and the queue gets a quick 503, and the server keeps answering
        flood = [socket.create_connection(addr) for _ in range(2 + serve.POOL_QUEUE + 5)]
        refused = 0
        for s in flood[::-1]:
            s.settimeout(0.05 if refused else 3)
            with contextlib.suppress(TimeoutError):
                refused += s.recv(100).startswith(b"HTTP/1.0 503")
        assert 5 <= refused <= 7, refused  # beyond 2 workers + the queue (two may have freed meanwhile)
        for s in flood:
            s.close()
        time.sleep(0.8)
        assert get(srv, "/buildings/tileset.json")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_keeps_serving_after_prune(tmp_path: Path) -> None:
    from pipeline.release.publish import switch_current

    out = tmp_path / "out"
    old = out / "releases" / "a"
    new = out / "releases" / "b"
    for r, name in ((old, "old"), (new, "new")):
        write_sample_release(r)
        (r / "viewer").mkdir()
        (r / "viewer" / "index.html").write_text(name)
    switch_current(out, old)
    for srv in _server(out / "current", internal=False):
        assert get(srv, "/viewer/index.html")[1] == b"old"
        switch_current(out, new)  # a new build: the server stays on the release it started with
        assert get(srv, "/viewer/index.html")[1] == b"old"
        import shutil

        shutil.rmtree(old)  # pruned: the server follows `current`
        status, body, _ = get(srv, "/viewer/index.html")
        assert (status, body) == (200, b"new")
        assert get(srv, "/buildings/0.glb")[0] == 200
        shutil.rmtree(new)  # nothing to serve: 503, not a crash
        assert get(srv, "/viewer/index.html")[0] == 503
