"""Structures that are not buildings (masts, pylons, antennas, tanks, towers): a configurable rule.

ALKIS `GebaeudeBauwerk` (and the official LoD1/LoD2 models) carry structures besides buildings; their
function key names the object class and the function: `31001_xxxx` AX_Gebaeude, `51001_xxxx` AX_Turm,
`51002_xxxx` AX_BauwerkOderAnlageFuerIndustrieUndGewerbe (1220 Windrad, 1250 Mast, 1251 Freileitungsmast,
1260 Funkmast, 1270 Antenne, 1290 Schornstein, 1330-1333 Kran, ...), `51003_xxxx`
AX_VorratsbehaelterSpeicherbauwerk (silos, tanks), `51005` AX_Leitung, `51009_xxxx`
AX_SonstigesBauwerkOderSonstigeEinrichtung (1610 Überdachung, ...), `53001_xxxx` AX_BauwerkImVerkehrsbereich.
A lattice mast extruded as an LoD1 box is a large solid block that does not exist, so such records are
handled by `layers.buildings.non_building_functions`: keys are a full function key (`51002_1251`) or an
object class (`51002`; the full key wins), values `skip` (reported in rejected.csv) or `keep`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.sources.cadastre.common import FootprintTable, Rejected


def structure_rule(gfkzshh: str | None, rules: Mapping[str, str]) -> str | None:
    """The rule for one function key: the full key's, else its object class's, else None."""
    if not gfkzshh or not rules:
        return None
    key = str(gfkzshh).strip()
    if key in rules:
        return rules[key]
    return rules.get(key.split("_", 1)[0])


def apply_structure_rules(table: FootprintTable, rules: Mapping[str, str]) -> FootprintTable:
    """Drop the footprints whose function a rule says to `skip`; each is reported in `rejected`."""
    gdf = table.gdf
    if not rules or len(gdf) == 0:
        return table
    keys = gdf["gfkzshh"].to_numpy(dtype=object)
    verdict = [structure_rule(k, rules) for k in keys]
    skip = np.array([v == "skip" for v in verdict], dtype=bool)
    if not skip.any():
        return table
    files = gdf["source_file"].to_numpy(dtype=object) if "source_file" in gdf else np.full(len(gdf), "-")
    oids = gdf["oid"].to_numpy(dtype=object)
    rejected = list(table.rejected)
    for i in np.flatnonzero(skip):
        rejected.append(
            Rejected(
                str(files[i] or "-"),
                str(oids[i] or "-"),
                f"not a building: function {keys[i]} is skipped by layers.buildings.non_building_functions",
            )
        )
    kept = gdf[~skip].reset_index(drop=True)
    return FootprintTable(kept, rejected)
