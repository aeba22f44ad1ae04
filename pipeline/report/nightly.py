"""The nightly build report: what someone checking last night's build needs, from a release and the one
it replaced.

    summary = build_summary(release, manifest, previous_release, previous_manifest, seconds=..., limits=...)
    rows = warning_rows(release, manifest)          # every warning, one row per affected record
    public = public_summary(summary)                # without internal layers, inputs, hashes

Everything here reads files of releases (manifests, tilesets, `buildings/rejected.csv`, the `repair`
column of `buildings/buildings.gpkg`) and returns plain data; `pipeline.orchestrate.report` writes it into
the release: the internal layer `nightly_report` (`nightly_report/index.html`, `build_summary.json`,
`warnings.csv`) and the public summary at the top of `report/index.html`.

Deterministic except the build date and the timings: rows and lists are sorted, no clock is read here.
"""

from __future__ import annotations

import csv
import filecmp
import io
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import astuple, dataclass
from html import escape
from pathlib import Path
from typing import Any

LAYER = "nightly_report"  # the internal layer holding the nightly report (its own folder)
PAGE = f"{LAYER}/index.html"
SUMMARY = f"{LAYER}/build_summary.json"
WARNINGS_CSV = f"{LAYER}/warnings.csv"

# how many paths / ids a summary lists per group (the CSV and the lists in build_summary.json hold all)
SHOWN = 20


# ------------------------------------------------------------------------------------------- causes


@dataclass(frozen=True)
class Cause:
    """One kind of warning: `pattern` (a regular expression) matches the warning text or the reason of a
    rejected cadastre record; the first cause that matches wins."""

    key: str
    label: str
    pattern: str


CAUSES: tuple[Cause, ...] = (
    Cause("bauteil", "Bauteil (building part) records skipped", r"filtered: Bauteil"),
    Cause("underground", "underground buildings skipped", r"filtered: underground"),
    Cause("non_building", "non-building structures skipped (masts, pylons, ...)", r"^not a building:"),
    Cause("duplicate_id", "duplicate cadastre ids (first record kept)", r"^duplicate id"),
    Cause("missing_id", "cadastre records without an id", r"^missing id"),
    Cause(
        "unrepairable_geometry",
        "cadastre geometry that could not be repaired (invalid, empty, not a polygon, only slivers)",
        r"could not be repaired|^empty geometry|^not a polygon|^only slivers",
    ),
    Cause("too_small", "footprints below layers.buildings.min_area_m2", r"below min_area_m2"),
    Cause(
        "cadastre_update",
        "cadastre updates (delete / end of life) of objects not read before",
        r"wfs:(Delete|Update)",
    ),
    Cause("unreadable_file", "unreadable cadastre files", r"^unreadable file|^XML syntax error"),
    Cause("unreadable_record", "unreadable cadastre records", r"^(AX_\w+|Building): "),
    Cause("footprint_repaired", "footprints repaired (column repair of buildings.gpkg)", r"^repaired: "),
    Cause("geometry_repaired", "geometries repaired (planning documents)", r"invalid geometry .*\) repaired"),
    Cause(
        "duplicate_input",
        "inputs delivered twice (same content; used once)",
        r"^duplicate input:|\(same sha256\)",
    ),
    Cause(
        "corrupt_input", "corrupt inputs skipped", r"^skipped corrupt input|skipped \(--on-bad-tile skip\)"
    ),
    Cause("point_bounds", "points outside their file's header bounds", r"outside the header bounds"),
    Cause("no_colour", "point files without colour (RGB 0 everywhere)", r"RGB is 0 in every point"),
    Cause(
        "crs_accuracy",
        "CRS transformations without a grid (reduced accuracy)",
        r"accurate to about|of unknown accuracy",
    ),
    Cause("extra_dimensions", "configured extra point dimensions not found", r"^extra dimensions not found"),
    Cause(
        "missing_data",
        "data missing or not configured (part of a layer skipped)",
        r"not configured|no \S+( \S+)? configured|no files|not found|not installed|is empty|has no|"
        r"skipped|needs two",
    ),
    Cause("other", "other", r""),
)
_COMPILED = tuple((c, re.compile(c.pattern)) for c in CAUSES)
LABELS = {c.key: c.label for c in CAUSES}


def classify(text: str) -> str:
    """The cause key of a warning text or a rejected record's reason."""
    for cause, rx in _COMPILED:
        if rx.search(text):
            return cause.key
    return "other"


@dataclass(frozen=True, order=True)
class WarningRow:
    """One affected record of a warning (`id` and `file` are '' when the warning names none)."""

    cause: str
    layer: str
    id: str
    file: str
    detail: str


CSV_HEADER = ("cause", "layer", "id", "file", "detail")

# a summary line whose records are listed one by one (from the file it names)
_REJECTED_SUMMARY = re.compile(r"^buildings: \d+ cadastre records skipped \(see buildings/rejected\.csv\)$")
_BRACKET_ID = re.compile(r"\[([^\]\s]+)\]")
_LEADING_FILE = re.compile(r"^([\w./+-]+\.[A-Za-z0-9]{2,5})(?: \[[^\]]*\])?: ")
_CORRUPT = re.compile(r"^skipped corrupt input (\S+): ")
_DUPLICATE = re.compile(r"^duplicate input: (.+?) (?:has|have) the same content as (\S+);")


def _text_row(text: str, layer: str) -> WarningRow:
    rid, file = "", ""
    if m := _CORRUPT.match(text):
        file = m.group(1)
    elif m := _DUPLICATE.match(text):
        file = m.group(1).split(", ")[0]
    elif m := _LEADING_FILE.match(text):
        file = m.group(1)
    if m := _BRACKET_ID.search(text):
        rid = m.group(1)
    return WarningRow(classify(text), layer, rid, file, text)


def _read_rejected(path: Path) -> list[WarningRow] | None:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return None
    out = []
    for r in rows:
        reason = r.get("reason") or ""
        rid = r.get("id") or ""
        out.append(
            WarningRow(classify(reason), "buildings", "" if rid == "-" else rid, r.get("file") or "", reason)
        )
    return out


def _read_repaired(path: Path) -> list[WarningRow]:
    """Footprints whose geometry the cadastre reader repaired (column `repair` of buildings.gpkg)."""
    if not path.is_file():
        return []
    import pyogrio

    try:
        info = pyogrio.read_info(path, layer="buildings")
        if "repair" not in list(info["fields"]):
            return []
        df = pyogrio.read_dataframe(path, layer="buildings", columns=["oid", "repair"], read_geometry=False)
    except Exception as e:  # said in the report, not hidden (and not the report's to fail the build on)
        return [
            WarningRow("other", "buildings", "", path.name, f"nightly report: cannot read column repair: {e}")
        ]
    df = df[df["repair"].fillna("").astype(str) != ""]
    return [
        WarningRow("footprint_repaired", "buildings", str(o), "", f"repaired: {r}")
        for o, r in zip(df["oid"], df["repair"], strict=True)
    ]


def warning_rows(release: Path, manifest: Mapping[str, Any]) -> list[WarningRow]:
    """Every warning of a release as rows: each rejected cadastre record (buildings/rejected.csv), each
    repaired footprint, and every other warning text (build-level ones with layer '')."""
    rows: list[WarningRow] = []
    in_layers: Counter[str] = Counter()
    for lay in manifest.get("layers", []):
        name = lay.get("name", "")
        texts = list(lay.get("warnings", []))
        in_layers.update(texts)
        files = set(lay.get("files", []))
        rejected = None
        if name == "buildings" and "buildings/rejected.csv" in files:
            rejected = _read_rejected(release / "buildings" / "rejected.csv")
            if rejected is not None:
                rows += rejected
        if name == "buildings" and "buildings/buildings.gpkg" in files:
            rows += _read_repaired(release / "buildings" / "buildings.gpkg")
        for t in texts:
            if rejected is not None and _REJECTED_SUMMARY.match(t):
                continue  # listed record by record above
            rows.append(_text_row(t, name))
    left = Counter(manifest.get("warnings", [])) - in_layers  # the build's own warnings (ctx.warn)
    for t in manifest.get("warnings", []):
        if left[t] > 0:
            left[t] -= 1
            rows.append(_text_row(t, ""))
    return sorted(rows)


def warnings_csv(rows: Iterable[WarningRow]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    w.writerows(astuple(r) for r in rows)
    return buf.getvalue().encode("utf-8")


def warnings_by_cause(rows: Iterable[WarningRow]) -> list[dict[str, Any]]:
    """One entry per cause (in the order of CAUSES): rows, distinct ids and the first ids."""
    by: dict[str, list[WarningRow]] = {}
    for r in rows:
        by.setdefault(r.cause, []).append(r)
    out = []
    for c in CAUSES:
        rs = by.get(c.key)
        if not rs:
            continue
        ids = sorted({r.id for r in rs if r.id})
        layers = sorted({r.layer for r in rs})
        out.append(
            {
                "cause": c.key,
                "label": c.label,
                "count": len(rs),
                "layers": layers,
                "ids": len(ids),
                "examples": ids[:SHOWN] or sorted({r.detail for r in rs})[:3],
            }
        )
    return out


# ------------------------------------------------------------------------------------- release diff


def _files_under(release: Path, folder: str) -> set[str]:
    base = release / folder
    return {p.relative_to(release).as_posix() for p in base.rglob("*") if p.is_file()}


def _own_files(release: Path, layer: Mapping[str, Any]) -> set[str]:
    """The files a layer names: listed files (a listed folder: every file in it), style, its tileset and
    everything the tileset references (child tilesets, tile contents; implicit tiling: the folder)."""
    from pipeline.release.access import _tileset_files

    out: set[str] = set()
    for f in [layer.get("style"), *layer.get("files", [])]:
        if f and (release / f).is_dir():
            out |= _files_under(release, f)
        elif f:
            out.add(f)
    if layer.get("tileset"):
        out |= {f for f in _tileset_files(release, layer["tileset"]) if (release / f).is_file()}
    return out


def release_layer_files(release: Path, layers: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Every file of each layer: what it names, plus every other file in a top folder that this layer
    alone uses (e.g. `aerial_points/pointcloud.json` beside the tiles)."""
    own = {lay["name"]: _own_files(release, lay) for lay in layers}
    users: dict[str, set[str]] = {}
    for name, files in own.items():
        for f in files:
            if "/" in f:
                users.setdefault(f.split("/", 1)[0], set()).add(name)
    for top, names in users.items():
        if len(names) == 1 and (release / top).is_dir():
            own[next(iter(names))] |= _files_under(release, top)
    return own


def layer_files(release: Path, layer: Mapping[str, Any]) -> set[str]:
    """Every file of one layer (as `release_layer_files` with this layer alone)."""
    return release_layer_files(release, [layer])[layer["name"]]


def _json_without_version(path: Path) -> Any:
    doc = json.loads(path.read_bytes())
    if isinstance(doc, dict) and isinstance(doc.get("asset"), dict):
        doc["asset"].pop("tilesetVersion", None)  # the build id stamped into every root tileset
    return doc


def same_file(a: Path, b: Path) -> bool:
    """Same bytes (a hard link is the same file); root tilesets are compared without their stamped
    `asset.tilesetVersion`."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if sa.st_size == sb.st_size and filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix == ".json":
        try:
            return _json_without_version(a) == _json_without_version(b)
        except (OSError, ValueError):
            return False
    return False


def output_changes(
    release: Path,
    layers: list[Mapping[str, Any]],
    previous: Path | None,
    prev_layers: list[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Per layer (report layers left out: they describe the build itself): files now, and the files added,
    changed and removed against the previous release (same layer name)."""
    prev = {lay.get("name"): lay for lay in prev_layers}
    now_files = release_layer_files(release, layers)
    old_files = release_layer_files(previous, prev_layers) if previous is not None else {}
    out = []
    for lay in layers:
        if lay.get("kind") == "report":
            continue
        files = now_files[lay["name"]]
        entry: dict[str, Any] = {
            "name": lay["name"],
            "kind": lay.get("kind", ""),
            "access": lay.get("access", ""),
            "files": len(files),
        }
        if previous is not None:
            old_lay = prev.get(lay["name"])
            old = old_files.get(lay["name"], set())
            added = sorted(files - old)
            removed = sorted(old - files)
            changed = sorted(f for f in files & old if not same_file(release / f, previous / f))
            entry |= {
                "new_layer": old_lay is None,
                "files_added": len(added),
                "files_changed": len(changed),
                "files_removed": len(removed),
                "added": added[:SHOWN],
                "changed": changed[:SHOWN],
                "removed": removed[:SHOWN],
            }
        out.append(entry)
    if previous is not None:
        now = {lay.get("name") for lay in layers}
        for lay in prev_layers:
            if lay.get("name") not in now and lay.get("kind") != "report":
                gone = sorted(old_files.get(lay["name"], set()))
                out.append(
                    {
                        "name": lay["name"],
                        "kind": lay.get("kind", ""),
                        "access": lay.get("access", ""),
                        "files": 0,
                        "layer_removed": True,
                        "files_added": 0,
                        "files_changed": 0,
                        "files_removed": len(gone),
                        "added": [],
                        "changed": [],
                        "removed": gone[:SHOWN],
                    }
                )
    return out


def input_changes(
    inputs: list[Mapping[str, Any]], prev_inputs: list[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """Inputs by role now, and added / changed (other content) / removed against the previous release's
    manifest (`None`: no previous release)."""
    by_role = Counter(str(i.get("role")) for i in inputs)
    out: dict[str, Any] = {
        "total": len(inputs),
        "bytes": sum(int(i.get("size", 0)) for i in inputs),
        "by_role": dict(sorted(by_role.items())),
    }
    if prev_inputs is None:
        return out
    old = {(i["role"], i["path"]): i for i in prev_inputs}
    new = {(i["role"], i["path"]): i for i in inputs}

    def brief(i: Mapping[str, Any]) -> dict[str, Any]:
        return {"role": i["role"], "path": i["path"], "size": i.get("size")}

    out["added"] = [brief(new[k]) for k in sorted(new.keys() - old.keys())]
    out["removed"] = [brief(old[k]) for k in sorted(old.keys() - new.keys())]
    out["changed"] = [
        brief(new[k]) for k in sorted(new.keys() & old.keys()) if new[k]["sha256"] != old[k]["sha256"]
    ]
    return out


# metric of the plausibility summary -> the layer it counts
METRIC_LAYERS = {
    "buildings": "buildings",
    "rejected": "buildings",
    "parcels": "parcels",
    "points": "aerial_points",
    "terrain_area": "terrain",
}
METRIC_LABELS = {
    "buildings": "buildings (LoD1/LoD2 published)",
    "rejected": "cadastre records rejected",
    "parcels": "parcels",
    "points": "points (aerial layer)",
    "terrain_area": "terrain area [m²]",
}


def count_changes(
    manifest: Mapping[str, Any], prev_manifest: Mapping[str, Any] | None, limits: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Counts of the release (buildings, parcels, points, terrain area, rejected records) against the
    previous release, with the plausibility gate's verdict per metric (`ok`, `accepted`, `not compared`)."""
    from pipeline.release.plausibility import release_summary, summarise_layers

    plaus = manifest.get("plausibility") or {}
    now = dict(plaus.get("summary") or summarise_layers(manifest.get("layers", []), None))
    before = plaus.get("previous")
    if before is None and prev_manifest is not None and "summary" not in plaus:
        before = release_summary(prev_manifest)
    before = dict(before or {})
    accepted = {f["metric"]: f["message"] for f in plaus.get("accepted", [])}
    out = []
    for metric in METRIC_LAYERS:
        if metric not in now and metric not in before:
            continue
        cur, old = now.get(metric), before.get(metric)
        row: dict[str, Any] = {"metric": metric, "previous": old, "current": cur}
        if cur is not None and old is not None:
            d = float(cur) - float(old)
            row["delta"] = int(d) if isinstance(cur, int) and isinstance(old, int) else round(d, 3)
            row["relative"] = round((float(cur) - float(old)) / float(old), 4) if float(old) else None
        limit = limits.get(metric)
        row["limit"] = limit
        if metric in accepted:
            row["gate"] = "accepted"
            row["finding"] = accepted[metric]
        elif "plausibility" not in manifest:
            row["gate"] = "not checked yet"
        elif limit is None or old is None or cur is None or metric == "rejected":
            row["gate"] = "not compared" if metric != "rejected" else "ok"
        else:
            row["gate"] = "ok"
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------ summary


def build_summary(
    release: Path,
    manifest: Mapping[str, Any],
    previous: Path | None,
    prev_manifest: Mapping[str, Any] | None,
    *,
    seconds: float | None = None,
    limits: Mapping[str, Any] | None = None,
    config_changed: bool | None = None,
    rows: list[WarningRow] | None = None,
) -> dict[str, Any]:
    """Everything the nightly report shows (JSON-able). `manifest`: the release's manifest (or what the
    build knows of it so far: no `plausibility` / `validation` before the release gates ran); `rows`:
    `warning_rows(release, manifest)` when the caller has them already."""
    if prev_manifest is None:
        previous = None
    layers = list(manifest.get("layers", []))
    prev_layers = list((prev_manifest or {}).get("layers", []))
    if rows is None:
        rows = warning_rows(release, manifest)
    if config_changed is None and prev_manifest is not None:
        config_changed = prev_manifest.get("config_hash") != manifest.get("config_hash")
    timings = manifest.get("timings", {})
    val = manifest.get("validation")
    plaus = manifest.get("plausibility")
    return {
        "build_id": manifest.get("build_id"),
        "name": manifest.get("name"),
        "created": manifest.get("created"),
        "seconds": round(seconds, 3) if seconds is not None else None,
        "config_hash": manifest.get("config_hash"),
        "config_changed": config_changed,
        "pipeline_version": manifest.get("pipeline_version"),
        "pipeline_fingerprint": manifest.get("pipeline_fingerprint"),
        "previous": None
        if prev_manifest is None
        else {"build_id": prev_manifest.get("build_id"), "created": prev_manifest.get("created")},
        "stages": [{"stage": k, "seconds": v} for k, v in timings.items()],
        "layer_seconds": {lay["name"]: lay.get("seconds", 0.0) for lay in layers},
        "inputs": input_changes(
            list(manifest.get("inputs", [])),
            None if prev_manifest is None else prev_manifest.get("inputs", []),
        ),
        "skipped_inputs": list(manifest.get("skipped_inputs", [])),
        "outputs": output_changes(release, layers, previous, prev_layers),
        "counts": count_changes(manifest, prev_manifest, limits or {}),
        "gates": None
        if plaus is None
        else {"accepted": plaus.get("accepted", []), "accept_flags": plaus.get("accept_flags", [])},
        "validation": None
        if val is None
        else {
            "ok": val.get("ok"),
            "tilesets": val.get("tilesets"),
            "glb": val.get("glb"),
            "glb_validated": val.get("glb_validated"),
            "glb_reused": val.get("glb_reused"),
            "errors": len(val.get("errors", [])),
            "invariants": val.get("invariants", {}),
        },
        "warnings": {
            "total": len(rows),
            "texts": len(manifest.get("warnings", [])),
            "by_cause": warnings_by_cause(rows),
        },
        "warnings_csv": WARNINGS_CSV,
    }


def public_summary(summary: Mapping[str, Any], rows: Iterable[WarningRow] | None = None) -> dict[str, Any]:
    """The part of a summary the public may see: public layers only, no inputs, no hashes, no timings, no
    warnings of internal layers or of the build itself (they name inputs)."""
    public = {o["name"] for o in summary.get("outputs", []) if o.get("access") == "public"}
    keep = ("name", "kind", "files", "new_layer", "files_added", "files_changed", "files_removed")
    outputs = [{k: o[k] for k in keep if k in o} for o in summary.get("outputs", []) if o["name"] in public]
    counts = [
        {k: v for k, v in c.items() if k != "finding"}
        for c in summary.get("counts", [])
        if METRIC_LAYERS.get(c["metric"]) in public
    ]
    by_cause = []
    if rows is not None:
        by_cause = [
            {k: e[k] for k in ("cause", "label", "count")}
            for e in warnings_by_cause(r for r in rows if r.layer in public)
        ]
    val = summary.get("validation")
    prev = summary.get("previous")
    return {
        "build_id": summary.get("build_id"),
        "name": summary.get("name"),
        "created": summary.get("created"),
        "previous": None
        if prev is None
        else {"build_id": prev.get("build_id"), "created": prev.get("created")},
        "outputs": outputs,
        "counts": counts,
        "validation": None if val is None else {"ok": val.get("ok")},
        "warnings": by_cause,
    }


# --------------------------------------------------------------------------------------------- HTML


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.3f}"
    return escape(str(v))


def _table(headers: list[str], rows: list[list[Any]], raw: Collection[int] = ()) -> str:
    if not rows:
        return '<p class="note">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw else _num(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table class="tbl"><tr>{head}</tr>{body}</table>'


def _rel(v: Any) -> str:
    return "–" if v is None else f"{v:+.1%}"


def _delta(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:+,.0f}" if float(v).is_integer() else f"{v:+,.3f}"


def _counts_table(counts: list[Mapping[str, Any]]) -> str:
    return _table(
        ["", "previous", "now", "change", "relative", "gate limit", "gate"],
        [
            [
                METRIC_LABELS.get(c["metric"], c["metric"]),
                c.get("previous"),
                c.get("current"),
                _delta(c.get("delta")),
                _rel(c.get("relative")),
                "–" if c.get("limit") is None else f"±{c['limit']:.0%}",
                c.get("gate", ""),
            ]
            for c in counts
        ],
    )


def _outputs_table(outputs: list[Mapping[str, Any]], with_access: bool) -> str:
    headers = (
        ["layer", "kind"] + (["access"] if with_access else []) + ["files", "added", "changed", "removed"]
    )
    rows = []
    for o in outputs:
        note = " (new layer)" if o.get("new_layer") else (" (layer gone)" if o.get("layer_removed") else "")
        rows.append(
            [o["name"] + note, o.get("kind", "")]
            + ([o.get("access", "")] if with_access else [])
            + [o.get("files"), o.get("files_added"), o.get("files_changed"), o.get("files_removed")]
        )
    return _table(headers, rows)


def _validation(val: Mapping[str, Any] | None) -> str:
    if val is None:
        return '<p class="note">not validated yet (the report was written before the validation stage)</p>'
    ok = "passed" if val.get("ok") else "FAILED"
    extra = ""
    if "tilesets" in val:
        extra = (
            f": {_num(val.get('tilesets'))} tilesets checked against the 3D Tiles schemas, "
            f"{_num(val.get('glb'))} GLB ({_num(val.get('glb_validated'))} through the glTF validator, "
            f"{_num(val.get('glb_reused'))} reused unchanged from a validated release), "
            f"{_num(val.get('errors'))} errors"
        )
        for name, inv in sorted((val.get("invariants") or {}).items()):
            extra += f"; {escape(name)}: {_num(inv.get('points'))} points in the tiles"
    return f"<p>Validation {ok}{extra}.</p>"


def render_page(summary: Mapping[str, Any], public_page: str = "../report/index.html") -> str:
    """The internal nightly report (`nightly_report/index.html`)."""
    s = summary
    prev = s.get("previous")
    title = f"Build {s.get('build_id')} of {s.get('name')}"
    dur = "–" if s.get("seconds") is None else f"{s['seconds']:.1f} s"
    facts = [
        ["build date (UTC)", escape(str(s.get("created")))],
        ["build id", escape(str(s.get("build_id")))],
        ["duration", dur],
        ["config hash", escape(str(s.get("config_hash")))],
        ["config changed since previous", _num(s.get("config_changed"))],
        ["pipeline", escape(f"{s.get('pipeline_version')} ({s.get('pipeline_fingerprint')})")],
        [
            "previous release",
            "none (first build)"
            if prev is None
            else escape(f"{prev.get('build_id')} ({prev.get('created')})"),
        ],
    ]
    parts = [f"<h1>{escape(title)}</h1>", _table(["", ""], facts, raw={1})]

    parts.append("<h2>Duration per stage</h2>")
    parts.append(
        _table(["stage", "seconds"], [[st["stage"], f"{st['seconds']:.2f}"] for st in s["stages"]], {1})
    )

    inp = s["inputs"]
    parts.append("<h2>Inputs</h2>")
    roles = ", ".join(f"{escape(r)} {n}" for r, n in inp["by_role"].items())
    parts.append(f"<p>{inp['total']} files ({inp['bytes'] / 1e6:,.1f} MB): {roles or '–'}.</p>")
    if "added" in inp:
        parts.append(
            f"<p>Against the previous release: {len(inp['added'])} new, {len(inp['changed'])} changed, "
            f"{len(inp['removed'])} removed.</p>"
        )
        rows = [
            [k, i["role"], i["path"], i.get("size")]
            for k in ("new", "changed", "removed")
            for i in inp[{"new": "added"}.get(k, k)]
        ]
        parts.append(_table(["", "role", "file", "bytes"], rows))
    if s.get("skipped_inputs"):
        parts.append(
            _table(
                ["skipped input", "role", "problem"],
                [[i.get("path"), i.get("role"), i.get("problem")] for i in s["skipped_inputs"]],
            )
        )

    parts.append("<h2>Outputs against the previous release</h2>")
    if prev is None:
        parts.append('<p class="note">first build: nothing to compare with</p>')
    parts.append(_outputs_table(s["outputs"], with_access=True))
    listed = [
        [o["name"], k, f] for o in s["outputs"] for k in ("added", "changed", "removed") for f in o.get(k, [])
    ]
    if listed:
        parts.append(f"<details><summary>changed files (first {SHOWN} per layer and kind)</summary>")
        parts.append(_table(["layer", "", "file"], listed))
        parts.append("</details>")
    parts.append("<h2>Counts and plausibility gates</h2>")
    parts.append(_counts_table(s["counts"]))
    gates = s.get("gates")
    if gates and gates.get("accepted"):
        parts.append("<p>Accepted changes (<code>--accept-change</code>):</p><ul>")
        parts += [f"<li>{escape(f['message'])}</li>" for f in gates["accepted"]]
        parts.append("</ul>")
    elif gates is not None:
        parts.append('<p class="note">no change needed accepting</p>')

    parts.append("<h2>Validation</h2>")
    parts.append(_validation(s.get("validation")))

    w = s["warnings"]
    parts.append("<h2>Warnings by cause</h2>")
    parts.append(
        f'<p>{w["total"]} affected records or notes; one row each in <a href="warnings.csv">warnings.csv</a> '
        "(cause, layer, id, file, detail).</p>"
    )
    parts.append(
        _table(
            ["cause", "layers", "rows", "ids", "first ids / messages"],
            [
                [
                    e["label"],
                    ", ".join(x or "(build)" for x in e["layers"]),
                    e["count"],
                    e["ids"],
                    "; ".join(e["examples"]),
                ]
                for e in w["by_cause"]
            ],
        )
    )
    parts.append(
        f'<p class="note">Analysis (plots, tables): <a href="{escape(public_page)}">public report</a>.</p>'
    )
    return _PAGE.replace("{{title}}", escape(title)).replace("{{body}}", "\n".join(parts))


def render_public_section(pub: Mapping[str, Any]) -> str:
    """The build summary at the top of the public `report/index.html` (no internal items)."""
    prev = pub.get("previous")
    first = f"Built {escape(str(pub.get('created') or '–'))} (release {escape(str(pub.get('build_id')))}); "
    first += (
        "first release." if prev is None else f"compared with release {escape(str(prev.get('build_id')))}."
    )
    lines = [f"<p>{first}</p>"]
    lines.append(_validation(pub.get("validation")) if pub.get("validation") is not None else "")
    lines.append("<h2>Layers</h2>")
    lines.append(_outputs_table(pub.get("outputs", []), with_access=False))
    if pub.get("counts"):
        lines.append("<h2>Counts</h2>")
        lines.append(_counts_table(pub["counts"]))
    if pub.get("warnings"):
        lines.append("<h2>Warnings by cause</h2>")
        lines.append(_table(["cause", "count"], [[e["label"], e["count"]] for e in pub["warnings"]]))
    return "\n".join(x for x in lines if x)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table.tbl { border-collapse: collapse; font-size: 0.85em; }
table.tbl th, table.tbl td { padding: 0.2em 0.6em; border-bottom: 1px solid #e5e5e5; text-align: left; }
table.tbl th { background: #f4f4f4; }
.note { color: #666; font-size: 0.85em; }
</style>
</head>
<body>
{{body}}
</body>
</html>
"""


# ------------------------------------------------------------------------------------ twin status


def read_summary(release: Path | None) -> dict[str, Any] | None:
    """The nightly summary a release carries (None for releases without one)."""
    if release is None:
        return None
    try:
        doc = json.loads((release / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def attach_summary(status: dict[str, Any]) -> list[str]:
    """`twin status`: the current release's nightly summary added to `status` (`current.report`), and
    returned as a few lines of text (none for a release without a report)."""
    cur = status.get("current")
    if not cur:
        return []
    summary = read_summary(Path(cur["path"]))
    if summary is None:
        return []
    page = str(Path(cur["path"]) / PAGE)
    cur["report"] = {"page": page, "summary": summary}
    return [*summary_lines(summary), f"nightly report: {page}"]


def summary_lines(summary: Mapping[str, Any], shown: int = 10) -> list[str]:
    """The nightly summary as a few lines of text (`twin status`)."""
    out = []
    prev = summary.get("previous")
    dur = summary.get("seconds")
    out.append(
        f"build {summary.get('build_id')} at {summary.get('created')}"
        + (f" in {dur:.1f} s" if isinstance(dur, int | float) else "")
        + (f", against {prev.get('build_id')}" if prev else ", first release")
        + (", config changed" if summary.get("config_changed") else "")
    )
    slow = sorted(summary.get("stages", []), key=lambda st: -st["seconds"])[:5]
    if slow:
        out.append("slowest stages: " + ", ".join(f"{st['stage']} {st['seconds']:.1f} s" for st in slow))
    inp = summary.get("inputs", {})
    if "added" in inp:
        out.append(
            f"inputs: {len(inp['added'])} new, {len(inp['changed'])} changed, {len(inp['removed'])} removed"
            f" (of {inp.get('total', 0)})"
        )
    moved = [
        f"{o['name']} +{o['files_added']} ~{o['files_changed']} -{o['files_removed']}"
        for o in summary.get("outputs", [])
        if o.get("files_added") or o.get("files_changed") or o.get("files_removed")
    ]
    if prev:
        out.append("outputs changed (files +added ~changed -removed): " + (", ".join(moved) or "none"))
    counts = [
        f"{c['metric']} {_num(c.get('previous'))} -> {_num(c.get('current'))}"
        + (f" ({_delta(c.get('delta'))}, {c.get('gate')})" if c.get("delta") is not None else "")
        for c in summary.get("counts", [])
    ]
    if counts:
        out.append("counts: " + "; ".join(counts))
    val = summary.get("validation")
    if val is not None:
        out.append(f"validation: {'passed' if val.get('ok') else 'FAILED'}, {val.get('errors', 0)} errors")
    w = summary.get("warnings", {})
    causes = ", ".join(f"{e['cause']} {e['count']}" for e in w.get("by_cause", [])[:shown])
    out.append(f"warnings: {w.get('total', 0)} rows" + (f" ({causes})" if causes else ""))
    return out
