"""The official CityJSON validator, cjval, run on CityJSON / CityJSONSeq files for the tests.

cjval runs through its Python bindings `cjvalpy` 0.2.1 (cjval 0.4.2) under a private CPython 3.9 that
`make cjval` (scripts/install_cjval.sh) unpacks into `.tools/cjval/`: no cjvalpy wheel exists for this
machine's Python 3.11, and none of CityJSON 2.0 for Linux. cjval 0.4.2 knows CityJSON 1.0 and 1.1 and
refuses any other `version`, and its bindings take one CityJSON document (no CityJSONSeq). So each line
of a CityJSONSeq is handed over the way cjval's own CityJSONSeq mode reads it: the header alone, and each
feature as a document of its own (the header's `transform` and `metadata` with the feature's
`CityObjects`, `vertices` and any other member), every document with `"version": "1.1"` - the only
change. cjval then runs its checks on them: JSON syntax, the CityJSON 1.1 schemas, Extensions,
parents/children consistency, vertex indices, semantics arrays (errors), duplicate and unused vertices
and extra root properties (warnings). The CityJSON 2.0 schemas themselves are checked by
`tests/integration/test_buildings_cityjson.py::test_official_schemas` (tests/_cityjson_schemas.py)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / ".tools" / "cjval"
PYTHON = TOOL / "root" / "usr" / "bin" / "python3.9"
SITE = TOOL / "site"

# Runs under python3.9 -I -S: one CityJSON document per stdin line, one report (JSON string) per line out.
_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import cjvalpy
for line in sys.stdin.buffer:
    try:
        rep = cjvalpy.CJValidator([line.decode("utf-8")]).validate()
    except BaseException as e:
        rep = "=== cjval crashed ===\\n  1. %s: %s\\n" % (type(e).__name__, e)
    sys.stdout.write(json.dumps(rep) + "\\n")
"""


def unavailable() -> str | None:
    """Why cjval cannot run here (None when it can): for pytest.skip."""
    if not (TOOL / "OK").is_file() or not PYTHON.is_file():
        return f"the official CityJSON validator is not installed in {TOOL} (run `make cjval`)"
    return None


@dataclass
class Report:
    """cjval's findings on one file; each message names the document (`header` or the feature id)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    documents: int = 0


def _documents(text: str) -> list[tuple[str, dict]]:
    """(label, CityJSON 1.1 document) for cjval: a plain CityJSON file as it is, a CityJSONSeq as header
    plus one document per feature."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    try:
        objs = [json.loads(ln) for ln in lines]
    except ValueError:  # not JSON lines: a (pretty-printed) CityJSON file
        objs = [json.loads(text)]
    head = dict(objs[0])
    if len(objs) == 1:
        return [("file", {**head, "version": "1.1"})]
    docs = [("header", {**head, "version": "1.1"})]
    shared = {k: v for k, v in head.items() if k not in ("CityObjects", "vertices")}
    for i, feat in enumerate(objs[1:], start=2):
        own = {k: v for k, v in feat.items() if k not in ("type", "id")}
        docs.append((f"line {i} ({feat.get('id', '?')})", {**shared, **own, "version": "1.1"}))
    return docs


_SECTION = re.compile(r"^=== (.+?) ===$")
_ITEM = re.compile(r"^\s+\d+\.\s+(.*)$")
_SCHEMAS_USED = re.compile(r"^(CityJSON schemas used: v(?:[0-9.]+|none))", re.M)


def _parse(label: str, rep: str, out: Report) -> None:
    """Sections `=== name ===` with `ok` or numbered findings; `(warnings)` sections are warnings."""
    section = ""
    found = False
    rep = _SCHEMAS_USED.sub(r"\1\n", rep)  # cjval 0.4.2 prints "...: v1.1.1ok" on one line
    for line in rep.splitlines():
        m = _SECTION.match(line.strip())
        if m:
            section = m.group(1)
            continue
        item = _ITEM.match(line)
        if item and section:
            target = out.warnings if "warning" in section else out.errors
            target.append(f"{label}: {section}: {item.group(1).strip()[:400]}")
            found = True
    if "File is valid" not in rep and not found:  # never pass what cjval refused
        out.errors.append(f"{label}: cjval says invalid: {rep.strip()}")


def cjval(path: Path | str) -> Report:
    """Runs cjval on a `.city.json` or `.city.jsonl` file; raises RuntimeError when it cannot run."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    docs = _documents(Path(path).read_text(encoding="utf-8"))
    payload = "".join(json.dumps(d, separators=(",", ":")) + "\n" for _label, d in docs)
    r = subprocess.run(
        [str(PYTHON), "-I", "-S", "-c", _RUNNER, str(SITE)],
        input=payload.encode("utf-8"),
        capture_output=True,
        timeout=1800,
    )
    reps = [json.loads(ln) for ln in r.stdout.decode("utf-8").splitlines()]
    if r.returncode != 0 or len(reps) != len(docs):
        raise RuntimeError(f"cjval failed on {path} (exit {r.returncode}): {r.stderr.decode()[-2000:]}")
    out = Report(documents=len(docs))
    for (label, _d), rep in zip(docs, reps, strict=True):
        _parse(label, rep, out)
    return out
