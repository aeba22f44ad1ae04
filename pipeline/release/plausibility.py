"""Plausibility gates: is a release that passed validation also a *plausible* city?

Pure functions on small summaries (no I/O): the build collects the facts (header counts and bounds of the
inputs, raster statistics, layer statistics) and these functions say what is wrong, one line per finding.

Two families:
- **input gates** (`input_problems`, `duplicate_groups`): heights within `release.gates.height_range_m`,
  coordinates within `release.gates.region`, no raster spikes, no all-nodata / all-black tiles, no empty
  layers, no NULL or duplicate parcel ids, no file content delivered under two names. A bad input is an
  `InputError` (exit 2) raised by the build naming the file.
- **release gates** (`release_findings`): the release against its inputs (point counts equal to the
  headers', no empty buildings / parcels / points layer, the share of rejected cadastre records) and
  against the previous release (buildings, parcels, points, terrain area: a drop or jump beyond
  `release.gates.max_change`). A finding refuses the release (`PlausibilityError`, exit 8) unless its
  metric was accepted with `twin build --accept-change METRIC`; accepted findings are recorded in the
  manifest (`plausibility.accepted`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config.model import ChangeLimits, GatesConfig

# metrics compared with the previous release (names accepted by `--accept-change`)
CHANGE_METRICS = ("buildings", "parcels", "points", "terrain_area")
# metrics of the release-against-inputs gates
CONTENT_METRICS = ("rejected", "point_count")
ACCEPTABLE = (*CHANGE_METRICS, *CONTENT_METRICS, "all")

_UNITS = {"terrain_area": " m2"}


@dataclass(frozen=True)
class Finding:
    """One implausibility: `metric` is what `--accept-change` names to publish anyway."""

    gate: str  # "change" | "empty" | "rejected" | "point_count"
    metric: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"gate": self.gate, "metric": self.metric, "message": self.message}


# ------------------------------------------------------------------------------------- summaries


def summarise_layers(layers: Iterable[Mapping[str, Any]], terrain_area: float | None) -> dict[str, float]:
    """The compared numbers of a release from its layers' stats (manifest `layers` entries)."""
    by_name = {lay.get("name"): lay.get("stats", {}) for lay in layers}
    out: dict[str, float] = {}
    if "buildings" in by_name.get("buildings", {}):
        out["buildings"] = by_name["buildings"]["buildings"]
        out["rejected"] = by_name["buildings"].get("rejected", 0)
    if "parcels" in by_name.get("parcels", {}):
        out["parcels"] = by_name["parcels"]["parcels"]
    if "points_out" in by_name.get("aerial_points", {}):
        out["points"] = by_name["aerial_points"]["points_out"]
    if terrain_area is not None:
        out["terrain_area"] = round(float(terrain_area), 1)
    return out


def release_summary(manifest: Mapping[str, Any] | None) -> dict[str, float]:
    """The summary a release recorded (`plausibility.summary`), else derived from its layer stats (releases
    built before the gates existed have no terrain area)."""
    if not manifest:
        return {}
    rec = manifest.get("plausibility", {})
    if isinstance(rec, Mapping) and isinstance(rec.get("summary"), Mapping):
        return dict(rec["summary"])
    return summarise_layers(manifest.get("layers", []), None)


# ---------------------------------------------------------------------------------- release gates


def _fmt(metric: str, v: float) -> str:
    return f"{v:,.0f}{_UNITS.get(metric, '')}" if float(v).is_integer() or abs(v) >= 100 else f"{v:g}"


def compare_with_previous(
    previous: Mapping[str, float], current: Mapping[str, float], limits: ChangeLimits, previous_name: str = ""
) -> list[Finding]:
    """A finding per metric whose relative change exceeds its limit. Metrics missing on either side, or
    zero in the previous release, are not compared (nothing to be relative to)."""
    found = []
    for metric in CHANGE_METRICS:
        limit = getattr(limits, metric)
        if limit is None or metric not in previous or metric not in current:
            continue
        before, now = float(previous[metric]), float(current[metric])
        if before <= 0 or not math.isfinite(before) or not math.isfinite(now):
            continue
        rel = (now - before) / before
        if abs(rel) > limit + 1e-12:
            what = "dropped" if rel < 0 else "jumped"
            prev = f" {previous_name}" if previous_name else ""
            found.append(
                Finding(
                    "change",
                    metric,
                    f"{metric} {what} from {_fmt(metric, before)} in the previous release{prev} to "
                    f"{_fmt(metric, now)} ({rel:+.1%}; release.gates.max_change.{metric} allows "
                    f"±{limit:.0%})",
                )
            )
    return found


def content_findings(
    current: Mapping[str, float], gates: GatesConfig, header_points: int | None, points_in: int | None
) -> list[Finding]:
    """The release against its inputs: empty layers, rejected cadastre share, points read vs the files'
    headers."""
    found = []
    for metric, layer in (("buildings", "buildings"), ("parcels", "parcels"), ("points", "aerial_points")):
        if metric in current and float(current[metric]) == 0:
            found.append(
                Finding(
                    "empty",
                    metric,
                    f"the {layer} layer is empty (0 {metric}) although its source is configured",
                )
            )
    if "buildings" in current:
        built, rejected = float(current["buildings"]), float(current.get("rejected", 0))
        total = built + rejected
        if total > 0 and rejected / total > gates.max_rejected_share + 1e-12:
            found.append(
                Finding(
                    "rejected",
                    "rejected",
                    f"the buildings layer rejected {rejected:,.0f} of {total:,.0f} cadastre records "
                    f"({rejected / total:.0%}; release.gates.max_rejected_share allows "
                    f"{gates.max_rejected_share:.0%}); see buildings/rejected.csv",
                )
            )
    if header_points is not None and points_in is not None and header_points != points_in:
        found.append(
            Finding(
                "point_count",
                "point_count",
                f"aerial_points read {points_in:,} points but the files' headers announce "
                f"{header_points:,} ({points_in - header_points:+,}) and no reason was recorded",
            )
        )
    return found


def release_findings(
    *,
    current: Mapping[str, float],
    previous: Mapping[str, float] | None,
    gates: GatesConfig,
    previous_name: str = "",
    header_points: int | None = None,
    points_in: int | None = None,
) -> list[Finding]:
    """Every release-level finding (the build refuses on those not accepted)."""
    found = content_findings(current, gates, header_points, points_in)
    if previous:
        found += compare_with_previous(previous, current, gates.max_change, previous_name)
    return found


def split_accepted(findings: list[Finding], accepted: Iterable[str]) -> tuple[list[Finding], list[Finding]]:
    """(refused, accepted) by the metrics named with `--accept-change` ("all" accepts every finding)."""
    acc = set(accepted)
    ok = [f for f in findings if f.metric in acc or "all" in acc]
    return [f for f in findings if f not in ok], ok


def refusal_message(refused: list[Finding]) -> str:
    metrics = sorted({f.metric for f in refused})
    lines = "; ".join(f.message for f in refused)
    flags = " ".join(f"--accept-change {m}" for m in metrics)
    return (
        f"plausibility gate refused the release ({len(refused)} finding(s)): {lines}. Nothing was published; "
        f"if the change is real, rebuild with `twin build CONFIG {flags}` (recorded in the manifest)"
    )


# ------------------------------------------------------------------------------------ input gates


def duplicate_groups(files: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Groups (>= 2 names, in input order) of files with the same sha256; `files` is (name, sha256)."""
    by_hash: dict[str, list[str]] = {}
    for name, digest in files:
        by_hash.setdefault(digest, []).append(name)
    return [names for names in by_hash.values() if len(names) > 1]


def _outside_region(bounds: tuple[float, float, float, float], region) -> bool:
    x0, y0, x1, y1 = bounds
    return x0 < region[0] or y0 < region[1] or x1 > region[2] or y1 > region[3]


def _b(bounds) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in bounds) + ")"


def input_problems(facts: Mapping[str, Any], gates: GatesConfig) -> list[str]:
    """What is physically implausible in one input, from its facts (see `pipeline.orchestrate.inputs`).

    Facts by kind: points {count, bounds: [x0, y0, z0, x1, y1, z1]}; raster {role, cells, valid, min, max,
    out_of_range, spikes, black, bands, bands_needed, bounds}; vector {layers: {name: count}, bounds,
    building_layer, parcel_layer, null_ids, duplicate_ids}. `bounds` are in the working CRS (None when the
    file's CRS is unknown)."""
    lo, hi = gates.height_range_m
    kind = facts.get("kind")
    out: list[str] = []
    xy = facts.get("bounds_xy")
    if gates.region is not None and xy is not None and _outside_region(tuple(xy), gates.region):
        out.append(
            f"coordinates {_b(xy)} lie outside the configured region {_b(gates.region)} (release.gates.region)"
        )
    if kind == "points":
        z0, z1 = facts["bounds"][2], facts["bounds"][5]
        if facts.get("count", 0) > 0 and (not (lo <= z0 <= hi) or not (lo <= z1 <= hi)):
            out.append(
                f"point heights {z0:.2f} .. {z1:.2f} m lie outside release.gates.height_range_m "
                f"[{lo:g}, {hi:g}] (header min/max Z)"
            )
    elif kind == "raster":
        if facts.get("bands_needed") and facts["bands"] < facts["bands_needed"]:
            out.append(
                f"raster has {facts['bands']} band(s) but the config reads band {facts['bands_needed']} "
                "(sources.*.bands)"
            )
            return out
        if facts.get("valid", 0) == 0:
            out.append(f"every one of its {facts.get('cells', 0):,} cells is nodata: an empty tile (a hole)")
        elif facts.get("black"):
            out.append("every pixel is 0 in every band: an empty (black) tile")
        if facts.get("role") == "dgm" and facts.get("valid", 0) > 0:
            if facts.get("out_of_range", 0):
                out.append(
                    f"{facts['out_of_range']:,} of {facts['valid']:,} cells lie outside "
                    f"release.gates.height_range_m [{lo:g}, {hi:g}] (values {facts['min']:.6g} .. "
                    f"{facts['max']:.6g}; an undeclared nodata value?)"
                )
            elif facts.get("spikes", 0):
                out.append(
                    f"{facts['spikes']:,} cells are spikes (more than release.gates.raster_spike_m = "
                    f"{gates.raster_spike_m:g} m above or below all four neighbours)"
                )
    elif kind == "vector":
        layers = facts.get("layers", {})
        for role in ("building_layer", "parcel_layer"):
            name = facts.get(role)
            if name is not None and layers.get(name, 0) == 0:
                out.append(f"layer {name!r} holds no features ({role.replace('_', ' ')})")
        if facts.get("null_ids"):
            out.append(
                f"{facts['null_ids']:,} parcel(s) without an id (NULL flstkennz), e.g. feature id(s) "
                f"{facts['null_id_examples']}"
            )
        if facts.get("duplicate_ids"):
            out.append(
                f"{facts['duplicate_ids']:,} duplicate parcel id(s), e.g. {facts['duplicate_id_examples']}"
            )
    return out
