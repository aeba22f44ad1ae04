"""Plan step: the class scheme of aerial epochs configured `class_scheme: auto`, decided before any layer
that needs it runs (building heights pick roof and ground points by class code).

The scheme is inferred as `twin points` infers it (`stages.points.classes.infer_class_scheme`): from the
class codes present in all of the epoch's files (codes only AdV or only ASPRS defines) and NRW/AdV file
naming; contradicting codes are refused. The codes of each file version are read once (classification
only) and kept in the cache folder by content hash, so a rebuild reads no point again. The decision and
its reason go into the build log and the buildings layer's stats (`class_schemes`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from pipeline.config.model import TwinConfig
from pipeline.errors import InputError
from pipeline.model import BuildContext, InputFile

CHUNK_POINTS = 2_000_000
MEMO = "class-codes.json"


def class_codes(path: Path) -> list[int]:
    """The classification codes present in one LAS/LAZ/COPC/E57 file (the one point reader, in chunks;
    only that field is decompressed). A broken file is an InputError naming it."""
    from pipeline.sources.pointcloud.reader import iter_points

    seen = np.zeros(256, dtype=bool)
    for chunk in iter_points(path, ("classification",), CHUNK_POINTS):
        seen[np.unique(chunk["classification"])] = True
    return [int(c) for c in np.flatnonzero(seen)]


def _load_memo(path: Path) -> dict[str, list[int]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_memo(path: Path, memo: dict[str, list[int]]) -> None:
    with contextlib.suppress(OSError):  # a memo that cannot be written only costs a re-read next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo, sort_keys=True))
        os.replace(tmp, path)


def resolve_class_schemes(cfg: TwinConfig, inputs: list[InputFile]) -> dict[str, tuple[str, str]]:
    """{epoch: (scheme, reason)} of every aerial epoch; `auto` ones inferred from their files, the
    others as configured (reason "given")."""
    from pipeline.stages.points.classes import infer_class_scheme

    out: dict[str, tuple[str, str]] = {}
    memo_path = cfg.cache_dir / MEMO
    memo: dict[str, list[int]] | None = None
    for ep in cfg.sources.aerial:
        if ep.class_scheme != "auto":
            out[ep.epoch] = (ep.class_scheme, "given")
            continue
        if memo is None:
            memo = _load_memo(memo_path)
        files = [i for i in inputs if i.role == f"aerial:{ep.epoch}"]
        codes: set[int] = set()
        for i in files:
            if i.sha256 not in memo:
                memo[i.sha256] = class_codes(i.path)
            codes.update(memo[i.sha256])
        try:
            scheme, reason = infer_class_scheme(codes, [i.path.name for i in files])
        except InputError as e:
            raise InputError(f"aerial epoch {ep.epoch}: {e.message}", path=e.path) from None
        out[ep.epoch] = (scheme, f"auto: {reason}")
    if memo is not None:
        _store_memo(memo_path, memo)
    return out


def class_scheme(ctx: BuildContext, epoch: str) -> tuple[str, str]:
    """(scheme, reason) of an aerial epoch: as configured, or inferred for `class_scheme: auto` (the build
    decides it when it plans, `ctx.class_schemes`; a bare context on first use)."""
    if epoch not in ctx.class_schemes:
        ctx.class_schemes.update(resolve_class_schemes(ctx.cfg, ctx.inputs))
    return ctx.class_schemes[epoch]
