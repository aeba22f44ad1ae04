"""The official CityJSON validator, cjval, run on CityJSON / CityJSONSeq files for the tests.

cjval 0.6.0 (CityJSON 2.0) runs through its Python bindings `cjvalpy` 0.4.1, whose only builds for
x86-64 are for macOS and Windows: `make cjval` (scripts/install_cjval.sh) puts the Windows build, the
official Windows embeddable CPython 3.11 and a Wine prefix into `.tools/cjval/`, and this module runs
it under Debian's wine64. The bindings take one CityJSON document (no CityJSONSeq), so each line of a
CityJSONSeq is handed over as cjval's own CityJSONSeq mode reads it: the header alone, and each feature
as a document of its own (the header's members with the feature's `CityObjects`, `vertices` and any
other member of the feature). cjval runs all its checks on each: JSON syntax, the CityJSON 2.0 schemas,
Extensions, parents/children consistency, vertex indices, semantics arrays, textures, materials
(errors), extra root properties, duplicate and unused vertices (warnings)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / ".tools" / "cjval"
WINE = Path("/usr/lib/wine/wine64")
PYTHON = TOOL / "python" / "python.exe"
SITE = TOOL / "site"
WARNINGS = ("extra_root_properties", "duplicate_vertices", "unused_vertices")  # cjval's warnings

# Runs under the Windows python.exe -I: one CityJSON document per stdin line, one report out per line.
_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import cjvalpy
for line in sys.stdin.buffer:
    try:
        v = cjvalpy.CJValidator([line.decode("utf-8")])
        v.validate()
        rep = v.get_report()
    except BaseException as e:
        rep = "=== cjval crashed ===\\n%s: %s\\n" % (type(e).__name__, e)
    sys.stdout.write(json.dumps(rep) + "\\n")
    sys.stdout.flush()
"""


def unavailable() -> str | None:
    """Why cjval cannot run here (None when it can): for pytest.skip."""
    if not (TOOL / "OK").is_file() or not PYTHON.is_file() or not WINE.is_file():
        return f"the official CityJSON validator is not installed in {TOOL} (run `make cjval`)"
    return None


@dataclass
class Report:
    """cjval's findings on one file; each message names the document (`header` or the feature id)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    documents: int = 0


def _documents(text: str) -> list[tuple[str, dict]]:
    """(label, CityJSON document) for cjval: a plain CityJSON file as it is, a CityJSONSeq as header
    plus one document per feature."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    try:
        objs = [json.loads(ln) for ln in lines]
    except ValueError:  # not JSON lines: a (pretty-printed) CityJSON file
        objs = [json.loads(text)]
    head = dict(objs[0])
    if len(objs) == 1:
        return [("file", head)]
    docs = [("header", head)]
    shared = {k: v for k, v in head.items() if k not in ("CityObjects", "vertices")}
    for i, feat in enumerate(objs[1:], start=2):
        own = {k: v for k, v in feat.items() if k not in ("type", "id")}
        docs.append((f"line {i} ({feat.get('id', '?')})", {**shared, **own}))
    return docs


def _parse(label: str, rep: str, out: Report) -> None:
    """cjval's report: sections `=== name ===`, each `ok`, empty (not run) or one finding per line."""
    section = ""
    found = False
    for line in rep.splitlines():
        text = line.strip()
        if text.startswith("===") and text.endswith("===") and text.strip("= "):
            section = text.strip("= ")  # a check, or the closing SUMMARY
            continue
        if section in ("", "SUMMARY") or text in ("", "ok") or set(text) == {"="}:
            continue
        target = out.warnings if section in WARNINGS else out.errors
        target.append(f"{label}: {section}: {text[:400]}")
        found = True
    if "File is valid" not in rep and not found:  # never pass what cjval refused
        out.errors.append(f"{label}: cjval says invalid: {rep.strip()[:2000]}")


ATTEMPTS = 3


def _run(docs: list[tuple[str, dict]]) -> tuple[list[str], str | None]:
    """One Wine run over `docs`: the reports it gave (in order) and why it stopped early, if it did."""
    payload = "".join(json.dumps(d, separators=(",", ":")) + "\n" for _label, d in docs)
    env = {**os.environ, "WINEPREFIX": str(TOOL / "wine"), "WINEDEBUG": "-all"}
    r = subprocess.run(
        [str(WINE), str(PYTHON), "-I", "-c", _RUNNER, f"Z:{SITE}"],
        input=payload.encode("utf-8"),
        capture_output=True,
        timeout=1800,
        env=env,
    )
    reps: list[str] = []
    for ln in r.stdout.decode("utf-8", "replace").splitlines():
        try:
            reps.append(json.loads(ln))
        except ValueError:
            break  # a line cut off when the process died
    if r.returncode == 0 and len(reps) == len(docs):
        return reps, None
    why = f"exit {r.returncode} after {len(reps)} of {len(docs)} documents: {r.stderr.decode()[-1000:]}"
    return reps[: len(docs)], why


def cjval(path: Path | str) -> Report:
    """Runs cjval on a `.city.json` or `.city.jsonl` file; raises RuntimeError when it cannot run."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    docs = _documents(Path(path).read_text(encoding="utf-8"))
    reps: list[str] = []
    failures: list[str] = []
    # Wine itself fails now and then (exit 1, nothing on stderr: seen once in CI on one file of 48,
    # never reproduced); the process is run again for the documents not yet reported, at most
    # ATTEMPTS times. A finding of cjval's is never retried: it is a report line like any other.
    while len(reps) < len(docs) and len(failures) < ATTEMPTS:
        got, failure = _run(docs[len(reps) :])
        reps += got
        if failure:
            failures.append(failure)
    if len(reps) != len(docs):
        raise RuntimeError(f"cjval failed on {path} ({len(failures)} attempts): " + " | ".join(failures))
    out = Report(documents=len(docs))
    for (label, _d), rep in zip(docs, reps, strict=True):
        _parse(label, rep, out)
    return out
