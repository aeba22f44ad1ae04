#!/usr/bin/env bash
# Installs the official CityJSON validator cjval (through its Python bindings cjvalpy) into
# .tools/cjval/ of this repository, without touching the system: `make cjval` runs it, the tests use it
# through tests/_cjval.py.
#
# cjvalpy has Linux wheels only for CPython 3.7-3.10 (the newest, 0.2.1, embeds cjval 0.4.2, which
# validates CityJSON 1.0/1.1; the 2.0-capable cjvalpy 0.4.1 has macOS and Windows wheels only). This
# machine's Python is 3.11, so a private CPython 3.9 is taken from Debian 11 (bullseye): the .deb files
# are downloaded with apt-get under a private apt state (signature checked against the bullseye key that
# Debian 12's debian-archive-keyring ships) and unpacked with dpkg-deb -x into .tools/cjval/root; the
# wheel is downloaded with pip (hash pinned) and unpacked into .tools/cjval/site. Versions are pinned
# (Debian 3.9.2-1, cjvalpy 0.2.1). Nothing is installed system-wide. Idempotent: does nothing when .tools/cjval/OK exists. Exit 1 when it cannot install.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.tools/cjval
PY_DEBS="python3.9-minimal=3.9.2-1 libpython3.9-minimal=3.9.2-1 libpython3.9-stdlib=3.9.2-1"
WHEEL=cjvalpy-0.2.1-cp39-cp39-manylinux_2_5_x86_64.manylinux1_x86_64.whl
WHEEL_SHA256=a76daf818968efca430ee3566a81b457b8b3fa4c4489a0c5d3e32518bb21d445
PY=${PY:-.venv/bin/python}  # the project's Python: pip and zipfile

[ -f "$DEST/OK" ] && exit 0
[ "$(uname -m)" = x86_64 ] || { echo "cjval: only x86_64 wheels are used here" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST/apt/lists/partial" "$DEST/apt/cache/archives/partial" "$DEST/apt/parts" "$DEST/debs" "$DEST/root" \
  "$DEST/site" "$DEST/wheel"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-bullseye-stable.gpg] http://deb.debian.org/debian bullseye main" \
  > "$DEST/apt/sources.list"
APT=(apt-get -q -o Dir::Etc::SourceList="$PWD/$DEST/apt/sources.list" -o Dir::Etc::SourceParts="$PWD/$DEST/apt/parts"
  -o Dir::State::Lists="$PWD/$DEST/apt/lists" -o Dir::Cache="$PWD/$DEST/apt/cache"
  -o Dir::State::Status=/dev/null -o APT::Architecture=amd64 -o Debug::NoLocking=1)
[ "$(id -u)" = 0 ] && APT+=(-o APT::Sandbox::User=root)  # root's apt would hand the download to _apt
"${APT[@]}" update >/dev/null
(cd "$DEST/debs" && "${APT[@]}" download $PY_DEBS >/dev/null)
for deb in "$DEST"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/root"; done
ls "$DEST/debs" > "$DEST/versions.txt"
rm -rf "$DEST/apt" "$DEST/debs"

"$PY" -m pip download -q --no-deps --only-binary :all: --platform manylinux1_x86_64 --python-version 3.9 \
  --implementation cp --abi cp39 -d "$DEST/wheel" "cjvalpy==0.2.1"
echo "$WHEEL_SHA256  $DEST/wheel/$WHEEL" | sha256sum -c --quiet
"$PY" -m zipfile -e "$DEST/wheel/$WHEEL" "$DEST/site"

# Self-check: the validator runs and catches a vertex index that does not exist.
out=$("$DEST/root/usr/bin/python3.9" -I -S -c "import sys; sys.path.insert(0, '$DEST/site'); import cjvalpy
print(cjvalpy.CJValidator(['{\"type\":\"CityJSON\",\"version\":\"1.1\",\"transform\":{\"scale\":[1,1,1],\"translate\":[0,0,0]},\"CityObjects\":{\"a\":{\"type\":\"Building\",\"geometry\":[{\"type\":\"MultiSurface\",\"lod\":\"1\",\"boundaries\":[[[0,1,7]]]}]}},\"vertices\":[[0,0,0],[1,0,0]]}']).validate())")
grep -q "Vertices #7" <<<"$out" || { echo "cjval: self-check failed: $out" >&2; exit 1; }
echo "$WHEEL" >> "$DEST/versions.txt"
cp "$DEST/versions.txt" "$DEST/OK"
echo "cjval installed in $DEST ($(tr '\n' ' ' < "$DEST/OK"))"
