"""`twin view` server: serves only the release, hides internal layers, refuses traversal."""

from __future__ import annotations

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
    assert m["hidden_layers"] == 1
    assert b"panoramas/panoramas.geojson" not in body
    # the same manifest reached through a link that loops back into the release is filtered too
    status, body, _ = get(public, "/escape_dir/release/manifest.json")
    assert status == 200 and b"panoramas" not in body
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
    assert res.stats["cesium_files"] == sum(1 for p in (vdir / "cesium").rglob("*") if p.is_file())
    # deterministic: a second build writes identical bytes
    before = {p: p.read_bytes() for p in vdir.glob("*.*")}
    write_viewer(tmp_path, build_id="abc123", cesium_build=cesium)
    assert before == {p: p.read_bytes() for p in vdir.glob("*.*")}
    # hardlinks when on the same file system (no copy of 13 MB per release)
    if os.stat(cesium / "Cesium.js").st_dev == os.stat(vdir).st_dev:
        assert os.stat(vdir / "cesium" / "Cesium.js").st_ino == os.stat(cesium / "Cesium.js").st_ino
