"""Build records for schedulers and `twin status`.

`out/.twin/last-build.json` lives outside every release, so a failed or killed build is visible even though
it published nothing: it is written when a build starts (state `running`, with the pid), and rewritten when
it ends (`success`, `up_to_date` or `failed` with the error, its exit code and the log path). A record
still saying `running` whose pid is gone means the build was killed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.fsutil import pid_alive
from pipeline.release.manifest import MANIFEST
from pipeline.release.publish import current_release, list_releases, read_history

LAST_BUILD = ".twin/last-build.json"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_last_build(out_dir: Path, record: dict[str, Any]) -> None:
    from pipeline.tiles.tileset import write_atomic

    path = out_dir / LAST_BUILD
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=str).encode())


def read_last_build(out_dir: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((out_dir / LAST_BUILD).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None  # a damaged record is no record


def input_changes(previous: dict[str, Any] | None, inputs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Inputs added / removed / changed (by content) relative to the previous release's manifest."""
    old = {(i["role"], i["path"]): i["sha256"] for i in (previous or {}).get("inputs", [])}
    new = {(i["role"], i["path"]): i["sha256"] for i in inputs}
    return {
        "added": sorted(p for (_r, p) in new.keys() - old.keys()),
        "removed": sorted(p for (_r, p) in old.keys() - new.keys()),
        "changed": sorted(k[1] for k in new if k in old and old[k] != new[k]),
    }


def read_manifest(release: Path | None) -> dict[str, Any] | None:
    if release is None:
        return None
    try:
        man = json.loads((release / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) else None


def release_status(out_dir: Path) -> dict[str, Any]:
    """Everything `twin status` shows, as JSON-able data."""
    cur = current_release(out_dir)
    man = read_manifest(cur)
    last = read_last_build(out_dir)
    pid = last.get("pid") if last else None
    if last and last.get("state") == "running" and not (isinstance(pid, int) and pid_alive(pid)):
        last = {**last, "state": "killed", "error": "the build process is gone without a result (killed?)"}
    releases = [
        {
            "build_id": p.name,
            "current": cur is not None and p.resolve() == cur,
            "created": (read_manifest(p) or {}).get("created"),
        }
        for p in list_releases(out_dir)
    ]
    current = None
    if cur is not None:
        current = {
            "build_id": cur.name,
            "path": str(cur),
            "created": (man or {}).get("created"),
            "pipeline_version": (man or {}).get("pipeline_version"),
            "layers": [
                {"name": lay["name"], "kind": lay["kind"], "access": lay["access"]}
                for lay in (man or {}).get("layers", [])
            ],
            "inputs": len((man or {}).get("inputs", [])),
            "warnings": (man or {}).get("warnings", []),
        }
    return {
        "out_dir": str(out_dir),
        "current": current,
        "last_build": last,
        "releases": releases,
        "history": read_history(out_dir),
    }


def format_status(st: dict[str, Any], report_lines: list[str] | None = None) -> str:
    """Human-readable `twin status` text (the CLI prints it); `report_lines`: the current release's nightly
    report in a few lines (`pipeline.report.nightly.attach_summary`)."""
    lines = []
    cur = st.get("current")
    if cur:
        lines.append(
            f"current release: {cur['build_id']} (created {cur['created']}, pipeline {cur['pipeline_version']})"
        )
        lines.append(f"  path: {cur['path']}")
        lay = ", ".join(
            f"{x['name']}{' [internal]' if x['access'] == 'internal' else ''}" for x in cur["layers"]
        )
        lines.append(f"  layers: {lay or '-'}")
        lines.append(f"  inputs: {cur['inputs']} files; warnings: {len(cur['warnings'])}")
        lines += [f"  {line}" for line in report_lines or []]
    else:
        lines.append(f"no current release in {st['out_dir']}")
    last = st.get("last_build")
    if last:
        dur = last.get("seconds")
        lines.append(
            f"last build: {last.get('state')} at {last.get('finished') or last.get('started')}"
            + (f" in {dur:.1f} s" if isinstance(dur, int | float) else "")
            + (f", build {last['build_id']}" if last.get("build_id") else "")
        )
        if last.get("error"):
            lines.append(f"  error (exit {last.get('exit_code', '?')}): {last['error']}")
        ch = last.get("changes") or {}
        inp = ch.get("inputs") or {}
        if inp:
            lines.append(
                f"  inputs vs previous release {ch.get('previous') or '-'}: "
                f"{len(inp.get('added', []))} added, {len(inp.get('removed', []))} removed, "
                f"{len(inp.get('changed', []))} changed"
            )
            for kind in ("added", "removed", "changed"):
                for p in inp.get(kind, [])[:10]:
                    lines.append(f"    {kind}: {p}")
        if ch.get("config_changed"):
            lines.append("  config changed")
        reuse = ch.get("reuse") or {}
        if reuse:
            lines.append(
                f"  rebuilt layers: {', '.join(reuse.get('layers_built', [])) or '-'}; "
                f"reused layers: {', '.join(reuse.get('layers_reused', [])) or '-'}; "
                f"files reused {reuse.get('files_reused', 0)} of {reuse.get('files_total', 0)}, "
                f"rebuilt byte-identical {reuse.get('files_rebuilt_identical', 0)}"
            )
        for w in (last.get("warnings") or [])[:20]:
            lines.append(f"  warning: {w}")
        if last.get("log"):
            lines.append(f"  log: {last['log']}")
    else:
        lines.append("no build recorded yet")
    if st.get("releases"):
        lines.append(
            "releases on disk (oldest first): "
            + ", ".join(r["build_id"] + ("*" if r["current"] else "") for r in st["releases"])
        )
    return "\n".join(lines)
