"""Sizes of a release's region-level JSON files: per layer the root tileset.json, the external tilesets
below it (count, total, largest) and the manifest's parts (inputs, layer file lists).

    python -m bench.tileset_sizes RELEASE_DIR [RELEASE_DIR ...]

prints one JSON object per release. Run it on releases of the same district at two sizes: a JSON whose
bytes grow with the region's area (a root listing every tile inline, a manifest listing every file) is
what keeps a viewer or a reader from opening a regional release quickly; a bounded root stays the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _tileset_files(root: Path) -> list[Path]:
    """The tileset and every external tileset it references (relative `.json` content URIs)."""
    seen: list[Path] = []
    todo = [root.resolve()]
    while todo:
        p = todo.pop()
        if p in seen or not p.is_file():
            continue
        seen.append(p)
        stack = [json.loads(p.read_text())["root"]]
        while stack:
            t = stack.pop()
            for c in ([t["content"]] if "content" in t else []) + t.get("contents", []):
                uri = c.get("uri", "")
                if uri.endswith(".json") and "{" not in uri:
                    todo.append((p.parent / uri).resolve())
            stack.extend(t.get("children", []))
    return seen


def _tiles_inline(doc: dict[str, Any]) -> int:
    n, stack = 0, [doc["root"]]
    while stack:
        t = stack.pop()
        n += 1
        stack.extend(t.get("children", []))
    return n


def release_sizes(release: Path) -> dict[str, Any]:
    manifest = json.loads((release / "manifest.json").read_text())
    layers: dict[str, Any] = {}
    for lay in manifest.get("layers", []):
        if not lay.get("tileset"):
            continue
        files = _tileset_files(release / lay["tileset"])
        root, ext = files[0], files[1:]
        layers[lay["name"]] = {
            "root_bytes": root.stat().st_size,
            "root_tiles": _tiles_inline(json.loads(root.read_text())),
            "external_files": len(ext),
            "external_bytes": sum(p.stat().st_size for p in ext),
            "largest_external_bytes": max((p.stat().st_size for p in ext), default=0),
        }
    part = {k: len(json.dumps(v, separators=(",", ":"))) for k, v in manifest.items()}
    return {
        "release": str(release),
        "tilesets": layers,
        "manifest": {
            "bytes": (release / "manifest.json").stat().st_size,
            "inputs": len(manifest.get("inputs", [])),
            "inputs_bytes": part.get("inputs", 0),
            "layers_bytes": part.get("layers", 0),
            "files_listed": {lay["name"]: len(lay.get("files", [])) for lay in manifest.get("layers", [])},
        },
    }


def main(argv: list[str]) -> None:
    for r in argv:
        print(json.dumps(release_sizes(Path(r)), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
