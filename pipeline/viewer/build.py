"""The static viewer generated into every release: `viewer/index.html` + app + the pinned CesiumJS build.

The page reads `../manifest.json` and shows the release's layers; it needs no internet and no Cesium ion
token. CesiumJS comes from npm (`node_modules/cesium/Build/Cesium`, pinned in package.json and installed
by `make setup`); only what the page loads is copied (Cesium.js, Workers, Assets, ThirdParty, Widgets;
no source maps), as hardlinks where the file system allows it (the files are never modified in place).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from pipeline import __version__
from pipeline.errors import ConfigError
from pipeline.model import BuildContext, LayerResult
from pipeline.tiles.tileset import write_atomic

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATES = ("index.html", "app.js", "app.css", "pano.js")
PALETTES = "palettes.json"  # written from pipeline.styles.palettes
# meshoptimizer's browser decoder (an npm dependency of CesiumJS): the page decodes EXT_meshopt_compression
# point tiles with it to pick points (app.js); copied under a .js name so any web server sends a JS type
MESHOPT_DECODER = "meshopt_decoder.module.js"
CESIUM_PARTS = ("Cesium.js", "Workers", "Assets", "ThirdParty", "Widgets")
SKIP_SUFFIXES = (".map",)
VIEWER_DIR = "viewer"


def find_cesium_build(start: Path | None = None) -> Path | None:
    """`node_modules/cesium/Build/Cesium`: searched from `start` (or cwd) and this package upwards."""
    for base in [start or Path.cwd(), Path(__file__).resolve().parent]:
        for d in [base, *base.parents]:
            cand = d / "node_modules" / "cesium" / "Build" / "Cesium"
            if (cand / "Cesium.js").is_file():
                return cand
    return None


def cesium_version(cesium_build: Path) -> str:
    """Version of the installed CesiumJS package (from its package.json)."""
    pkg = cesium_build.parent.parent / "package.json"
    try:
        return str(json.loads(pkg.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def pinned_cesium_version(start: Path | None = None) -> str | None:
    """The version package.json pins (None when package.json is not found)."""
    for base in [start or Path.cwd(), Path(__file__).resolve().parent]:
        for d in [base, *base.parents]:
            pj = d / "package.json"
            if pj.is_file() and (d / "pipeline").is_dir():
                try:
                    return json.loads(pj.read_text()).get("dependencies", {}).get("cesium")
                except ValueError:
                    return None
    return None


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hardlink (fast, no extra space) or copy when linking is impossible. True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    shutil.copyfile(src, dst)
    return False


def copy_cesium(cesium_build: Path, dest: Path) -> dict[str, int]:
    """Copy the parts of the CesiumJS build the page needs into `dest` (replaced if present)."""
    if dest.exists():  # inside the release being built (`viewer/cesium`), which the build created
        from pipeline.fsutil import remove_owned

        remove_owned(dest, owned_by=dest.parent)
    dest.mkdir(parents=True)
    files = linked = size = 0
    for part in CESIUM_PARTS:
        src = cesium_build / part
        if src.is_file():
            pairs = [(src, dest / part)]
        elif src.is_dir():
            pairs = []
            for root, dirs, names in os.walk(src):
                dirs.sort()
                rel = Path(root).relative_to(cesium_build)
                (dest / rel).mkdir(parents=True, exist_ok=True)
                pairs += [(Path(root) / n, dest / rel / n) for n in sorted(names)]
        else:
            raise ConfigError(f"CesiumJS build is incomplete: {part} missing", path=cesium_build)
        for s, d in pairs:
            if s.name.endswith(SKIP_SUFFIXES):
                continue
            linked += _link_or_copy(s, d)
            files += 1
            size += s.stat().st_size
    return {"files": files, "hardlinked": linked, "bytes": size}


def find_meshopt_decoder(cesium_build: Path) -> Path | None:
    """`meshopt_decoder.mjs` of the meshoptimizer package CesiumJS depends on (npm hoists it next to
    `cesium`; older layouts nest it under `@cesium/engine`)."""
    modules = cesium_build.parents[2]  # node_modules/cesium/Build/Cesium -> node_modules
    for cand in (
        modules / "meshoptimizer",
        modules / "@cesium" / "engine" / "node_modules" / "meshoptimizer",
        modules / "cesium" / "node_modules" / "meshoptimizer",
    ):
        if (cand / "meshopt_decoder.mjs").is_file():
            return cand / "meshopt_decoder.mjs"
    return None


def render_templates(viewer_dir: Path, *, build_id: str, cesium: str) -> list[Path]:
    """Write index.html, app.js, app.css, pano.js (placeholders filled) and palettes.json; byte-identical
    for the same inputs."""
    out = []
    for name in TEMPLATES:
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        text = (
            text.replace("__BUILD_ID__", build_id)
            .replace("__CESIUM_VERSION__", cesium)
            .replace("__PIPELINE_VERSION__", __version__)
        )
        write_atomic(viewer_dir / name, text.encode("utf-8"))
        out.append(viewer_dir / name)
    # the palettes and class tables the page uses for colours, legends and class names (one definition)
    from pipeline.styles.palettes import viewer_palettes

    pal = json.dumps(viewer_palettes(), ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    write_atomic(viewer_dir / PALETTES, pal.encode("utf-8"))
    out.append(viewer_dir / PALETTES)
    return out


def write_viewer(release_dir: Path, *, build_id: str, cesium_build: Path | None = None) -> LayerResult:
    """Generate `viewer/` into a release directory. Raises ConfigError when CesiumJS is not installed."""
    cesium_build = cesium_build or find_cesium_build()
    if cesium_build is None:
        raise ConfigError(
            "CesiumJS is not installed (node_modules/cesium/Build/Cesium not found): run `make setup` "
            "(npm install of the version pinned in package.json)"
        )
    version = cesium_version(cesium_build)
    viewer_dir = release_dir / VIEWER_DIR
    copied = copy_cesium(cesium_build, viewer_dir / "cesium")
    written = render_templates(viewer_dir, build_id=build_id, cesium=version)
    files = [p.relative_to(release_dir).as_posix() for p in written]
    stats = {"cesium_version": version, "cesium_files": copied["files"], "cesium_bytes": copied["bytes"]}
    warnings = []
    decoder = find_meshopt_decoder(cesium_build)
    if decoder is not None:
        write_atomic(viewer_dir / MESHOPT_DECODER, decoder.read_bytes())
        files.append(f"{VIEWER_DIR}/{MESHOPT_DECODER}")
    else:
        warnings.append(
            "viewer: meshoptimizer's decoder (node_modules/meshoptimizer) not found: points in "
            "EXT_meshopt_compression tiles cannot be picked; run `make setup`"
        )
    pinned = pinned_cesium_version(cesium_build)
    if pinned and pinned != version:
        warnings.append(
            f"viewer: CesiumJS {version} installed but package.json pins {pinned}; run `make setup`"
        )
    return LayerResult(
        name="viewer",
        kind="viewer",
        access="public",
        files=[*files, f"{VIEWER_DIR}/cesium/"],
        stats=stats,
        warnings=warnings,
    )


def build_viewer_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    """Layer builder hook of `twin build`: the viewer page for this release (after all data layers)."""
    if not ctx.cfg.layers.viewer.enabled:
        return []
    import time

    t0 = time.perf_counter()
    with ctx.stage("viewer"):
        cesium_build = find_cesium_build(ctx.cfg.base_dir) or find_cesium_build()
        if cesium_build is None:
            ctx.warn(
                "viewer skipped: CesiumJS is not installed (node_modules/cesium); run `make setup` to get the "
                "version pinned in package.json"
            )
            return []
        res = write_viewer(ctx.release_dir, build_id=ctx.build_id, cesium_build=cesium_build)
    res.stats["layers_shown"] = sum(1 for p in previous if p.kind != "viewer")
    res.seconds = time.perf_counter() - t0
    for w in res.warnings:
        ctx.warn(w)
    return [res]
