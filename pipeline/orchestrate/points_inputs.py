"""The inputs and the output folder of a point-tiling run: header scan (identical copies found, bad files
skipped on request), the extra dimensions present, the staging folder the run writes into and its
publication in place of `--out` (replacing only an earlier output of `twin points`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

from pipeline.errors import InputError
from pipeline.fsutil import UnsafeDeleteError, pid_alive, remove_owned
from pipeline.sources.pointcloud.header import PointFileInfo
from pipeline.sources.pointcloud.reader import read_header


def scan_inputs(
    inputs: list[Path], on_bad_file: str = "stop", skipped: dict[str, str] | None = None
) -> list[PointFileInfo]:
    """Header scan of the inputs, in the order that numbers them (file_index).

    A file whose content is identical to an earlier one (same size and sha256: the same delivery under two
    names) is scanned once; the kept file lists the others in `duplicates` (they are noted, not tiled
    twice). With `on_bad_file="skip"` an empty or unreadable file is left out (`skipped_inputs` says why);
    by default its error stops the run. `skipped` (when given) receives path -> reason of skipped files."""
    if not inputs:
        raise InputError("no input files")
    paths = sorted({Path(p).resolve() for p in inputs})
    dupes = identical_files(paths)
    infos: list[PointFileInfo] = []
    for p in paths:
        if p in dupes["of"]:
            continue
        try:
            info = read_header(p)
        except InputError as e:
            if on_bad_file != "skip":
                raise
            if skipped is not None:
                skipped[str(p)] = e.message
            continue
        same = tuple(str(d) for d in dupes["copies"].get(p, ()))
        infos.append(dataclasses.replace(info, duplicates=same) if same else info)
    if not infos:
        raise InputError(f"no readable input files ({len(paths)} given, all skipped as bad)")
    return infos


def identical_files(paths: list[Path]) -> dict[str, dict]:
    """Files with identical content: {"of": {copy: original}, "copies": {original: [copies]}} (the first
    path in sorted order is the original). Only files of equal size are hashed (sha256), so distinct
    deliveries cost one stat each."""
    from pipeline.release.manifest import sha256_file

    by_size: dict[int, list[Path]] = {}
    for p in paths:
        with contextlib.suppress(OSError):
            by_size.setdefault(p.stat().st_size, []).append(p)
    of: dict[Path, Path] = {}
    copies: dict[Path, list[Path]] = {}
    for size, group in by_size.items():
        if len(group) < 2 or size == 0:
            continue
        first_by_hash: dict[str, Path] = {}
        for p in group:
            orig = first_by_hash.setdefault(sha256_file(p), p)
            if orig != p:
                of[p] = orig
                copies.setdefault(orig, []).append(p)
    return {"of": of, "copies": copies}


def present_extra_dims(infos: list[PointFileInfo], wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    """The extra dimensions asked for that at least one input has (the record layout's); `None`: every
    one any input has, in the order of first appearance (files in input order)."""
    if wanted is None:
        return tuple(dict.fromkeys(d for i in infos for d in i.extra_dims))
    return tuple(d for d in wanted if any(d in i.extra_dims for i in infos))


def make_staging(out_dir: Path) -> Path:
    """The directory a run writes into, beside `out_dir` (renamed into place when complete):
    `.<out>.tmp-<pid>-<random>`. Staging folders of this name left by runs that were killed (SIGKILL, power
    loss: their process is gone) are removed first; nothing else is touched."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove `.<out>.tmp-<pid>-*` folders beside `out_dir` whose process no longer exists (the pid in the
    name proves which run made it; a folder whose pid is alive, or any other name, is left alone)."""
    import re
    import shutil

    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.tmp-(\d+)-[A-Za-z0-9_]+$")
    removed = []
    with contextlib.suppress(OSError):
        for p in out_dir.parent.iterdir():
            m = pattern.match(p.name)
            if not m or not p.is_dir() or p.is_symlink():
                continue
            pid = int(m.group(1))
            if pid == os.getpid() or pid_alive(pid):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# `--overwrite` replaces only an earlier output of this command: a folder holding the run summary it
# writes (`pointcloud.json`) and a tileset. Anything else (a user's folder, a delivery) is refused.
OUTPUT_MARKER = "pointcloud.json"


def check_replaceable(out_dir: Path, overwrite: bool) -> None:
    """Raise unless `out_dir` is missing, empty, or (with `overwrite`) an earlier `twin points` output."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UnsafeDeleteError("--out exists and is not a folder; nothing was written", path=out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise InputError("output directory exists and is not empty (use --overwrite)", path=out_dir)
    if not ((out_dir / OUTPUT_MARKER).is_file() and (out_dir / "tileset.json").is_file()):
        raise UnsafeDeleteError(
            "--overwrite replaces only an earlier `twin points` output (pointcloud.json + tileset.json); "
            "this folder is something else and was left untouched: choose an empty or new --out",
            path=out_dir,
        )


def publish(staging: Path, out_dir: Path, overwrite: bool) -> None:
    check_replaceable(out_dir, overwrite)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        remove_owned(old, marker=OUTPUT_MARKER)
    else:
        os.replace(staging, out_dir)
