"""Access classes: export a release for the public, without any internal layer and without any reference
to one.

Every layer is `public` or `internal` (GeoSmartChange panoramas and street scans are internal by default:
licensed for municipal use only). `export_public(release, dest)` copies the public part of a release:

- files of internal layers (their tilesets, everything those tilesets reference, their listed files, and
  their folders when no public layer shares them) are left out;
- `manifest.json` is rewritten: internal layers, the inputs only internal layers read, their timings,
  warnings and skipped-input notes are dropped (the viewer reads the manifest, so it lists public layers
  only);
- build logs and the reuse index (`build.log.jsonl`, `.twin/`) are left out: they name every layer;
- the export is validated like a release (every tileset content URI must exist in the export), then every
  exported file is searched for references to internal layers and internal inputs (`find_leaks`); any
  hit refuses the export (nothing is published) and names the file and the token.

What counts as a reference (so that a word that merely contains a layer name is not one): a path, file
name, input path or hash of internal data counts where it stands on its own (not continued by a letter,
digit or `_`, and not preceded by one or by `.`/`-`, which would make it another file's name; a folder
token `change/` is a reference to the folder). An internal layer *name* ("change", "panoramas") counts as a
whole word only: `last_change` in a GeoPackage's schema or `buildings_changed` is not the layer `change`.
Names are searched in file paths and data files (GeoPackages, tiles, GeoJSON, CSV, data JSON: keys and
values, escapes decoded), but not in program code and images (`.js`, `.css`, `.html`, ...), where a word
like "panoramas" names a feature of the viewer, and in the viewer's own JSON (e.g. `viewer/palettes.json`,
keyed by the palette of the change classes) only as a value naming the layer or a path component
(`"layer": "change"`, `"../change/tileset.json"`). Files are read in blocks (memory stays bounded).

The export is written to a temporary sibling of `dest` and swapped in with renames, so a web server
serving `dest` never sees a half export.

`dest` is only ever written when it does not exist, is an empty folder, or holds an earlier export (proven
by the marker file `.twin-export` every export writes). Anything else is refused with exit 7 and left
untouched: a file, a non-empty folder without the marker, the release itself or a folder inside it, and any
folder that is, holds or lies inside one of the project's own folders (`paths.raw`, `paths.out`,
`paths.cache`: the caller passes them as `protected`). Exported folders are world-readable (0755/0644).
A killed export is repaired by the next one (its temporary removed, a moved-aside export put back).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ahocorasick

from pipeline.errors import NoSpaceError
from pipeline.fsutil import DELETING_PREFIX, exchange, make_world_readable, remove_owned
from pipeline.release.manifest import MANIFEST
from pipeline.release.publish import ReleaseError, fault_point

EXPORT_MARKER = ".twin-export"  # written into every export: proves a folder may be replaced

# input roles that feed only the (by default internal) mobile-mapping and zoning-plan layers
ROLE_LAYERS = {"mobile": ("mobile_points",), "panoramas": ("panoramas",), "zoning": ("zoning",)}
PRIVATE_FILES = ("build.log.jsonl",)
PRIVATE_DIRS = (".twin",)


def _tileset_files(release: Path, tileset_rel: str) -> set[str]:
    """The tileset and every file it references (contents, external tilesets), relative to the release."""
    out: set[str] = set()
    stack = [tileset_rel]
    while stack:
        rel = stack.pop()
        if rel in out:
            continue
        out.add(rel)
        p = release / rel
        if p.suffix != ".json" or not p.is_file():
            continue
        try:
            ts = json.loads(p.read_text())
        except ValueError:
            continue
        tiles = [ts.get("root", {})]
        while tiles:
            t = tiles.pop()
            for c in ([t["content"]] if "content" in t else []) + t.get("contents", []):
                uri = c.get("uri", "")
                if uri and "{" not in uri and "://" not in uri:
                    target = os.path.normpath(os.path.join(os.path.dirname(rel), uri)).replace(os.sep, "/")
                    stack.append(target)
                elif "{" in uri:  # implicit tiling: the whole folder belongs to the layer
                    folder = os.path.dirname(rel)
                    out.update(_files_under(release, folder))
            tiles.extend(t.get("children", []))
    return out


def _files_under(release: Path, folder: str) -> set[str]:
    base = release / folder if folder else release
    return {p.relative_to(release).as_posix() for p in base.rglob("*") if p.is_file()}


def _top_dir(rel: str | None) -> str | None:
    if not rel or "/" not in rel:
        return None
    return rel.split("/", 1)[0]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")


def internal_image_copies(
    release: Path, internal_files: set[str], exported: list[str]
) -> list[tuple[str, str]]:
    """(exported file, internal image) for every exported file whose bytes equal an image of an internal
    layer (e.g. a panorama copied into a public folder under another name: its path and name would not
    give it away). Sizes first, hashes only for equal sizes."""
    from pipeline.release.manifest import sha256_file

    by_size: dict[int, list[str]] = {}
    for f in sorted(internal_files):
        if Path(f).suffix.lower() in IMAGE_SUFFIXES and (release / f).is_file():
            by_size.setdefault((release / f).stat().st_size, []).append(f)
    digests: dict[str, str] = {}
    hits = []
    for rel in exported:
        candidates = by_size.get((release / rel).stat().st_size) if by_size else None
        if not candidates:
            continue
        digest = sha256_file(release / rel)
        for f in candidates:
            if f not in digests:
                digests[f] = sha256_file(release / f)
            if digests[f] == digest:
                hits.append((rel, f))
                break
    return hits


def public_plan(release: Path) -> dict[str, Any]:
    """What a public export of `release` contains: files, the filtered manifest, and the leak tokens."""
    manifest = json.loads((release / MANIFEST).read_text())
    layers = manifest.get("layers", [])
    internal = [lay for lay in layers if lay.get("access") != "public"]
    public = [lay for lay in layers if lay.get("access") == "public"]
    internal_names = {lay["name"] for lay in internal}

    public_files: set[str] = set()
    for lay in public:
        if lay.get("tileset"):
            public_files |= _tileset_files(release, lay["tileset"])
        public_files |= {f for f in [lay.get("style"), *lay.get("files", [])] if f}
    public_dirs = {_top_dir(f) for f in public_files} - {None}

    internal_files: set[str] = set()
    internal_dirs: set[str] = set()
    for lay in internal:
        if lay.get("tileset"):
            internal_files |= _tileset_files(release, lay["tileset"])
        internal_files |= {f for f in [lay.get("style"), *lay.get("files", [])] if f}
    for f in list(internal_files):
        d = _top_dir(f)
        if d and d not in public_dirs and d not in internal_dirs:  # each folder listed once
            internal_dirs.add(d)
            internal_files |= _files_under(release, d)

    # inputs read only by internal layers
    internal_roles = {
        role
        for role, lays in ROLE_LAYERS.items()
        if any(n in internal_names for n in lays)
        and not any(n in {lay["name"] for lay in public} for n in lays)
    }
    # a sub-role (`panoramas:images`) belongs to its role
    internal_inputs = [
        i for i in manifest.get("inputs", []) if i.get("role", "").split(":")[0] in internal_roles
    ]

    tokens: set[str] = {d + "/" for d in internal_dirs} | {f for f in internal_files}
    # file names of internal files are tokens when distinctive: a tile name like `0_0_0.glb` that public
    # layers use too is not a reference (the full internal path is a token anyway)
    all_names = {Path(f).name for f in _files_under(release, "") if f not in internal_files}
    for f in internal_files:
        name = Path(f).name
        if name not in all_names and len(name) >= 6:
            tokens.add(name)
    for lay in internal:
        if lay.get("tileset"):
            tokens.add(lay["tileset"])
    for i in internal_inputs:
        tokens.add(i["path"])
        tokens.add(Path(i["path"]).name)
        tokens.add(i["sha256"])
    tokens = {t for t in tokens if t and len(t) >= 4}
    name_tokens = {n for n in internal_names if n}
    matcher = LeakMatcher(tokens, name_tokens)

    def leaks(text: str) -> bool:
        return bool(matcher.in_text(text, names=True))

    pub_manifest = dict(manifest)
    pub_manifest["layers"] = [_public_layer(lay, public) for lay in public]
    pub_manifest["inputs"] = [i for i in manifest.get("inputs", []) if i not in internal_inputs]
    pub_manifest["timings"] = {k: v for k, v in manifest.get("timings", {}).items() if not leaks(k)}
    pub_manifest["warnings"] = [w for w in manifest.get("warnings", []) if not leaks(w)]
    if "skipped_inputs" in manifest:
        pub_manifest["skipped_inputs"] = [
            s
            for s in manifest["skipped_inputs"]
            if s.get("role", "").split(":")[0] not in internal_roles and not leaks(s["path"])
        ]
    pub_manifest.pop("validation", None)
    pub_manifest["access"] = "public"

    files = sorted(
        rel
        for rel in _files_under(release, "")
        if rel not in internal_files
        and rel != MANIFEST
        and rel not in PRIVATE_FILES
        and _top_dir(rel) not in PRIVATE_DIRS
        and not Path(rel).name.startswith(".")
    )
    copies = internal_image_copies(release, internal_files, files)
    if copies:
        raise ReleaseError(
            f"public export refused: {copies[0][0]} is a copy of the internal image {copies[0][1]} "
            f"({len(copies)} such file(s))",
            path=release,
        )
    return {
        "manifest": pub_manifest,
        "files": files,
        "excluded_layers": sorted(internal_names),
        "excluded_files": len(internal_files),
        "tokens": sorted(tokens),
        "name_tokens": sorted(name_tokens),
        "program_dirs": program_dirs(manifest),
    }


def _public_layer(lay: dict[str, Any], public: list[dict[str, Any]]) -> dict[str, Any]:
    """A public layer's manifest entry as exported: the viewer's count of the layers it shows counts the
    public ones only (the full count would tell how many internal layers exist)."""
    if lay.get("kind") != "viewer" or "layers_shown" not in lay.get("stats", {}):
        return lay
    shown = sum(1 for other in public if other.get("kind") != "viewer")
    return {**lay, "stats": {**lay["stats"], "layers_shown": shown}}


def program_dirs(manifest: dict[str, Any]) -> list[str]:
    """Top folders of the viewer (layers of kind `viewer`): program code and its own configuration."""
    dirs = set()
    for lay in manifest.get("layers", []):
        if lay.get("kind") == "viewer" and lay.get("access") == "public":
            for f in [lay.get("tileset"), lay.get("style"), *lay.get("files", [])]:
                d = _top_dir(f)
                if d:
                    dirs.add(d)
    return sorted(dirs)


CODE_SUFFIXES = (".js", ".mjs", ".css", ".html", ".htm", ".map", ".wasm", ".svg", ".png", ".jpg", ".ktx2")
JSON_SUFFIXES = (".json", ".geojson")
JSON_PARSE_MAX_BYTES = 64 << 20  # larger JSON files are searched as bytes only (escapes not decoded)
SCAN_BLOCK_BYTES = 8 << 20

_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_FILE_NAME = _WORD | frozenset(b".-")  # a token preceded by one of these is part of another file's name
_PATH_SPLIT = re.compile(r"[/\\?#]")


def _automaton(keys: list[tuple[bytes, int]]) -> Any:
    """An Aho-Corasick automaton over byte strings (as latin-1 text) whose value for a byte string is the
    list of the `keys` indices it stands for; None when there are no keys."""
    if not keys:
        return None
    automaton = ahocorasick.Automaton()
    for b, k in keys:
        word = b.decode("latin-1")
        ks = automaton.get(word, None)
        automaton.add_word(word, [k] if ks is None else [*ks, k])
    automaton.make_automaton()
    return automaton


class LeakMatcher:
    """Finds references to internal data (see the module documentation for what counts as one).

    `tokens`: paths, file names, input paths and hashes of internal data; `name_tokens`: internal layer
    names."""

    def __init__(self, tokens: Iterable[str], name_tokens: Iterable[str] = ()) -> None:
        self.tokens = sorted({t for t in tokens if t})
        self.names = sorted({n for n in name_tokens if n})
        btokens = [(t, t.encode(), _FILE_NAME if ("/" in t or "." in t) else _WORD) for t in self.tokens]
        bnames = [(n, n.encode(), _WORD) for n in self.names]
        # (label, length, left neighbours that join it to another word or file name, is a folder token)
        self._check = [(t, len(b), left, b.endswith(b"/")) for t, b, left in btokens + bnames]
        longest = max((length for _t, length, _l, _f in self._check), default=0)
        self._overlap = longest + 1
        # one Aho-Corasick automaton per search kind (tokens only; tokens and names) finds every
        # occurrence of every token in one pass over the bytes (cost ~ bytes + matches, not tokens x bytes)
        self._automata = {
            False: _automaton([(b, k) for k, (_t, b, _l) in enumerate(btokens)]),
            True: _automaton([(b, k) for k, (_t, b, _l) in enumerate(btokens + bnames)]),
        }

    def _search(self, data: bytes, names: bool, at_start: bool = True, at_end: bool = True) -> list[str]:
        """Tokens (with `names`: layer names too) occurring in `data` standing on their own, in the order
        tokens then names. `at_start`/`at_end`: `data` begins/ends the text (otherwise a match touching
        that edge is undecided here and decided in the next block)."""
        automaton = self._automata[names]
        if automaton is None:
            return []
        n = len(data)
        found: set[int] = set()
        # latin-1 maps every byte to the code point of the same value: positions in the text are byte offsets
        for end, keys in automaton.iter(data.decode("latin-1")):
            for k in keys:
                if k in found:
                    continue
                _t, length, left, folder = self._check[k]
                i, j = end + 1 - length, end + 1
                left_ok = data[i - 1] not in left if i > 0 else at_start
                right_ok = (folder or data[j] not in _WORD) if j < n else at_end
                if left_ok and right_ok:
                    found.add(k)
        return [self._check[k][0] for k in sorted(found)]

    def in_text(self, text: str, *, names: bool) -> list[str]:
        """Tokens (and with `names`, internal layer names as whole words) referenced in `text`."""
        return self._search(text.encode("utf-8", "surrogatepass"), names)

    def in_path(self, rel: str) -> list[str]:
        """Tokens and internal layer names referenced by a release-relative path."""
        return self.in_text(rel, names=True)

    def in_file(self, path: Path, *, names: bool) -> list[str]:
        """Tokens (with `names`: layer names as whole words) in a file's bytes, read in blocks."""
        found: set[str] = set()
        with open(path, "rb") as f:
            tail = b""
            start = 0  # file offset of the window's first byte
            while True:
                block = f.read(SCAN_BLOCK_BYTES)
                last = len(block) < SCAN_BLOCK_BYTES
                window = tail + block
                found.update(self._search(window, names, at_start=start == 0, at_end=last))
                if last:
                    break
                # a match cut by the block edge, or whose right neighbour is not read yet, lies in the tail
                tail = window[-self._overlap - 1 :]
                start += len(window) - len(tail)
        return sorted(found)

    def in_json(self, doc: Any, *, program: bool) -> list[str]:
        """References in the strings of a parsed JSON document (escapes decoded). Data JSON: tokens and
        names as whole words in every key and value. The viewer's own JSON (`program`): tokens in every
        string; a layer name only as a value that is the name or a path component of it (keys there name
        viewer features, e.g. the palette `change`)."""
        found: set[str] = set()
        for s, is_key in _json_strings(doc):
            found.update(self.in_text(s, names=not program))
            if program and not is_key:
                parts = {p for p in _PATH_SPLIT.split(s.strip())} if s else set()
                parts |= {p.split(".", 1)[0] for p in parts}
                found.update(n for n in self.names if n in parts)
        return sorted(found)

    def _kind(self, rel: str, program_dirs: Iterable[str]) -> tuple[bool, bool]:
        """(names searched in the raw bytes, is JSON) for a release-relative file path."""
        suffix = posixpath.splitext(rel)[1].lower()
        program = _top_dir(rel) in set(program_dirs)
        is_json = suffix in JSON_SUFFIXES
        return suffix not in CODE_SUFFIXES and not (program and is_json), is_json

    def _in_json_bytes(self, data: bytes, rel: str, program_dirs: Iterable[str]) -> list[str]:
        try:
            doc = json.loads(data)
        except ValueError:  # not JSON after all: searched as a data file (names included)
            return self._search(data, True)
        return self.in_json(doc, program=_top_dir(rel) in set(program_dirs))

    def in_content(self, path: Path, rel: str, program_dirs: Iterable[str] = ()) -> list[str]:
        """References in the content of the file `path` (release-relative `rel`); see the module
        documentation for what counts as one. Read in blocks; JSON up to JSON_PARSE_MAX_BYTES is parsed."""
        names, is_json = self._kind(rel, program_dirs)
        found = set(self.in_file(path, names=names))
        if is_json and path.stat().st_size <= JSON_PARSE_MAX_BYTES:
            found.update(self._in_json_bytes(path.read_bytes(), rel, program_dirs))
        return sorted(found)

    def in_bytes(self, data: bytes, rel: str, program_dirs: Iterable[str] = ()) -> list[str]:
        """`in_content` for a file already in memory (e.g. one `twin view` is about to serve)."""
        names, is_json = self._kind(rel, program_dirs)
        found = set(self._search(data, names))
        if is_json and len(data) <= JSON_PARSE_MAX_BYTES:
            found.update(self._in_json_bytes(data, rel, program_dirs))
        return sorted(found)


def _json_strings(doc: Any) -> Iterator[tuple[str, bool]]:
    """(string, is_key) for every key and string value of a JSON document (iterative: no recursion limit)."""
    stack = [doc]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            yield o, False
        elif isinstance(o, dict):
            for k, v in o.items():
                yield str(k), True
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)


def find_leaks(
    root: Path, tokens: Iterable[str], name_tokens: Iterable[str] = (), program_dirs: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """(file, token) for every path under `root` that references internal data, by its name or content.

    `tokens`: paths, file names, input paths and hashes of internal data; `name_tokens`: internal layer
    names; `program_dirs`: top folders of the viewer (its JSON is its configuration: keys there are
    feature names). What counts as a reference: see the module documentation."""
    matcher = LeakMatcher(tokens, name_tokens)
    program_dirs = list(program_dirs)
    hits = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        hits += [(rel, t) for t in matcher.in_path(rel)]
        if p.is_file():
            hits += [(rel, t) for t in matcher.in_content(p, rel, program_dirs) if (rel, t) not in hits]
    return hits


def check_export_target(dest: Path, release: Path, protected: Iterable[Path] = ()) -> Path:
    """The absolute export folder, or ReleaseError (exit 7) when writing there could destroy data."""
    dest = Path(os.path.abspath(dest))
    if dest.is_symlink():
        raise ReleaseError("the export folder is a symbolic link; give the real folder", path=dest)
    dest = dest.resolve()
    release = release.resolve()
    if dest.exists() and not dest.is_dir():
        raise ReleaseError("the export destination is a file, not a folder; nothing exported", path=dest)
    for p in dest.parents:
        if p.exists() and not p.is_dir():
            raise ReleaseError("the export destination lies under a file; nothing exported", path=p)
    if dest == release or release in dest.parents or dest in release.parents:
        raise ReleaseError(
            f"the export folder must lie outside the release {release} and must not hold it", path=dest
        )
    for raw in protected:
        p = Path(raw).resolve()
        if dest == p or p in dest.parents or dest in p.parents:
            how = "is" if dest == p else ("lies inside" if p in dest.parents else "holds")
            raise ReleaseError(
                f"the export folder {how} the project folder {p} (paths.raw / paths.out / paths.cache); "
                "choose a folder of its own, e.g. a web server's document folder",
                path=dest,
            )
    if dest.is_dir() and any(dest.iterdir()) and not (dest / EXPORT_MARKER).is_file():
        raise ReleaseError(
            f"the export folder is not empty and holds no earlier export (no {EXPORT_MARKER} marker); "
            "an export only replaces an empty folder or an earlier export. Choose an empty or new folder",
            path=dest,
        )
    return dest


def _repair_export(dest: Path) -> None:
    """Leftovers of a killed export of `dest`: put a moved-aside export back, remove temporaries."""
    parent = dest.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not dest.exists() and olds and (olds[0] / EXPORT_MARKER).is_file():
        os.rename(olds[0], dest)
        olds = olds[1:]
    leftovers = [
        *olds,
        *parent.glob(f".{dest.name}.export-*"),
        *parent.glob(f"{DELETING_PREFIX}.{dest.name}.*"),
    ]
    for p in leftovers:
        if (p / EXPORT_MARKER).is_file():
            remove_owned(p, marker=EXPORT_MARKER)


def export_public(release: Path, dest: Path, protected: Iterable[Path] = ()) -> dict[str, Any]:
    """Copy the public part of `release` to `dest` (replaced atomically). Raises ReleaseError on a leak and
    when `dest` is not a safe target (`check_export_target`); `protected`: the project's raw, out and cache
    folders (the release's own output folder is always protected)."""
    from pipeline.release.validate import validate_release
    from pipeline.tiles.tileset import write_json

    release = release.resolve()
    if not (release / MANIFEST).is_file():
        raise ReleaseError("not a release (no manifest.json)", path=release)
    protected = list(protected)
    if release.parent.name == "releases":
        protected.append(release.parent.parent)
    dest = check_export_target(dest, release, protected)
    plan = public_plan(release)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _repair_export(dest)
    except OSError as e:
        raise ReleaseError(f"cannot prepare the export folder: {e.strerror or e}", path=e.filename) from None
    tmp = dest.parent / f".{dest.name}.export-{os.getpid()}"
    try:
        tmp.mkdir()
        (tmp / EXPORT_MARKER).write_text(json.dumps({"exported_by": "twin publish", "release": release.name}))
        for rel in plan["files"]:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(release / rel, target)
        write_json(tmp / MANIFEST, plan["manifest"])
        make_world_readable(tmp)
        fault_point("export")
        leaks = find_leaks(tmp, plan["tokens"], plan["name_tokens"], plan["program_dirs"])
        if leaks:
            shown = "; ".join(f"{f} contains {t!r}" for f, t in leaks[:5])
            raise ReleaseError(
                f"public export refused: {len(leaks)} reference(s) to internal layers or inputs: {shown}",
                path=release,
            )
        report = validate_release(tmp, plan["manifest"], check_gltf=False)
    except BaseException as e:
        if (tmp / EXPORT_MARKER).is_file():  # made by this call: the marker is its first file
            remove_owned(tmp, marker=EXPORT_MARKER)
        elif tmp.is_dir():
            tmp.rmdir()
        if isinstance(e, OSError):
            cls = NoSpaceError if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ReleaseError
            raise cls(
                f"export failed: {e.strerror or e}; its temporary copy was removed, the destination is unchanged",
                path=e.filename or dest,
            ) from None
        raise
    old = None
    if dest.exists() and any(dest.iterdir()):
        if exchange(tmp, dest):  # one atomic swap: `dest` is the new export, `tmp` the old one
            old = tmp
        else:  # two renames; a kill in between is repaired by the next export (`_repair_export`)
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            os.rename(dest, old)
            fault_point("export")
    if old is not tmp:
        os.replace(tmp, dest)  # onto a missing or empty folder: one atomic rename
    fault_point("export")
    if old is not None:
        remove_owned(old, marker=EXPORT_MARKER)
    return {
        "release": release.name,
        "dest": str(dest),
        "files": len(plan["files"]) + 1,
        "layers": [lay["name"] for lay in plan["manifest"]["layers"]],
        "excluded_layers": plan["excluded_layers"],
        "excluded_files": plan["excluded_files"],
        "tilesets_checked": report["tilesets"],
        "leak_tokens_checked": len(plan["tokens"]) + len(plan["name_tokens"]),
    }
