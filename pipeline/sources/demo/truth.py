"""Ground truth of the demo district, for tests and accuracy reports.

``truth/buildings.csv``: one row per cadastral building record **and** per unregistered structure.

=====================  =================================================================================
column                 meaning
=====================  =================================================================================
oid                    ALKIS oid, or ``UNREGISTERED_nnnnn`` for structures without a cadastral record
kind                   ``building`` (a Gebäude record with a physical structure), ``bauteil``,
                       ``underground`` (rellage unter der Erdoberfläche) or ``unregistered``
host_oid               for ``bauteil``: the building it belongs to
gebnutzbez, funktion,  as in the GeoPackage (empty for unregistered structures)
gfkzshh
category               layout category (row, house, apartment, courtyard, hall, office, school, gym,
                       garage, shed, kiosk, new_house, new_shed, new_hall, unregistered)
in_cadastre            1 if the record is in ``GebauedeBauwerk``
geometry_valid         0 for the records whose *cadastral* geometry is deliberately invalid
invalid_reason         GEOS reason for those
footprint_area         m², of the true footprint (``footprint_wkt``)
centroid_x/_y          of the true footprint
base_height            DHHN2016 normal height of the building base (lowest terrain at the corners)
roof_type              flat / gable / hip (roof_code: AdV 1000 / 3100 / 3200)
eave_height            absolute eave height (= roof height for flat roofs)
ridge_height           absolute ridge height (= eave for flat roofs)
mean_roof_height       area-weighted mean roof surface height over the footprint (CityGML LoD1 rule)
roof_height            the LoD1 target: 75th percentile of the roof surface over the footprint shrunk
                       by 0.5 m (what a p75 estimator on roof points converges to); for flat roofs the
                       roof height
height                 roof_height - base_height
present_<e1/e2>        1 if the structure stands in that epoch
roof_height_<e1/e2>    roof_height in that epoch (empty when absent)
change                 unchanged / new / demolished / raised / lowered (epoch 1 -> epoch 2)
dh                     roof height change for raised (> 0, >= 3 m) and lowered (< 0, <= -2.5 m)
footprint_wkt          true footprint (the cadastral geometry may be invalid or missing)
=====================  =================================================================================

All heights describe the latest epoch in which the structure stands (epoch 1 for demolished ones).
``bauteil`` and ``underground`` rows have no heights. ``truth/changes.csv`` lists the structures whose
change is not ``unchanged``. ``truth/truth.json`` holds the generation parameters, counts, class codes,
file naming and these definitions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import shapely

from pipeline.sources.demo.city import UNCHANGED, City
from pipeline.sources.demo.roofs import ROOF_CODES, roof_statistics


def _f(v: float | None, nd: int = 2) -> str:
    return "" if v is None else f"{v:.{nd}f}"


def _csv_cell(v: Any) -> str:
    s = "" if v is None else str(v)
    if any(c in s for c in ',"\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s


def building_truth(city: City) -> list[dict[str, Any]]:
    e1, e2 = city.epochs
    rows: list[dict[str, Any]] = []
    for s in city.structures:
        stats = roof_statistics(s.roof, s.geom)
        latest = 1 if s.present[1] else 0
        dh = s.dh if latest == 1 else 0.0
        roof = s.roof_in(latest)
        c = s.geom.centroid
        per_epoch = {
            e: (s.base + stats["p75"] + (s.dh if k == 1 else 0.0)) if s.present[k] else None
            for k, e in enumerate((e1, e2))
        }
        rows.append(
            {
                "oid": s.oid,
                "kind": "building" if s.in_cadastre else "unregistered",
                "host_oid": "",
                "gebnutzbez": "Gebäude" if s.in_cadastre else "",
                "funktion": s.funktion if s.in_cadastre else "",
                "gfkzshh": s.gfkzshh if s.in_cadastre else "",
                "category": s.category,
                "in_cadastre": int(s.in_cadastre),
                "geometry_valid": int(s.invalid_reason is None),
                "invalid_reason": s.invalid_reason or "",
                "footprint_area": _f(s.geom.area),
                "centroid_x": _f(c.x),
                "centroid_y": _f(c.y),
                "base_height": _f(s.base),
                "roof_type": roof.kind,
                "roof_code": ROOF_CODES[roof.kind],
                "eave_height": _f(s.base + roof.eave),
                "ridge_height": _f(s.base + roof.ridge),
                "mean_roof_height": _f(s.base + stats["mean"] + dh),
                "roof_height": _f(s.base + stats["p75"] + dh),
                "height": _f(stats["p75"] + dh),
                f"present_{e1}": int(s.present[0]),
                f"present_{e2}": int(s.present[1]),
                f"roof_height_{e1}": _f(per_epoch[e1]),
                f"roof_height_{e2}": _f(per_epoch[e2]),
                "change": s.change,
                "dh": _f(s.dh),
                "footprint_wkt": shapely.to_wkt(s.geom, rounding_precision=3),
            }
        )
    for p in city.parts:
        c = p.geom.centroid
        rows.append(
            {
                "oid": p.oid,
                "kind": p.kind,
                "host_oid": p.host_oid or "",
                "gebnutzbez": "Bauteil" if p.kind == "bauteil" else "Gebäude",
                "funktion": p.funktion,
                "gfkzshh": p.gfkzshh,
                "category": p.kind,
                "in_cadastre": 1,
                "geometry_valid": 1,
                "invalid_reason": "",
                "footprint_area": _f(p.geom.area),
                "centroid_x": _f(c.x),
                "centroid_y": _f(c.y),
                "base_height": "",
                "roof_type": "",
                "roof_code": "",
                "eave_height": "",
                "ridge_height": "",
                "mean_roof_height": "",
                "roof_height": "",
                "height": "",
                f"present_{e1}": int(p.present[0]),
                f"present_{e2}": int(p.present[1]),
                f"roof_height_{e1}": "",
                f"roof_height_{e2}": "",
                "change": UNCHANGED,
                "dh": _f(0.0),
                "footprint_wkt": shapely.to_wkt(p.geom, rounding_precision=3),
            }
        )
    return rows


CHANGE_COLUMNS = (
    "oid",
    "change",
    "dh",
    "in_cadastre",
    "category",
    "footprint_area",
    "centroid_x",
    "centroid_y",
)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...]) -> None:
    lines = [",".join(columns)]
    lines += [",".join(_csv_cell(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_truth(truth_dir: Path, city: City, meta: dict[str, Any]) -> dict[str, Any]:
    """Write buildings.csv, changes.csv and truth.json; returns the change counts."""
    rows = building_truth(city)
    write_csv(truth_dir / "buildings.csv", rows, list(rows[0].keys()))
    e1, e2 = city.epochs
    changed = [r for r in rows if r["change"] != UNCHANGED]
    write_csv(truth_dir / "changes.csv", changed, [*CHANGE_COLUMNS, f"roof_height_{e1}", f"roof_height_{e2}"])
    counts: dict[str, int] = {}
    for r in changed:
        key = r["change"] if r["in_cadastre"] else f"{r['change']}_unregistered"
        counts[key] = counts.get(key, 0) + 1
    doc = dict(meta)
    doc["changes"] = dict(sorted(counts.items()))
    doc["definitions"] = (__doc__ or "").strip()
    (truth_dir / "truth.json").write_text(
        json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return doc["changes"]
