"""Land-use class per parcel from the cadastre's land-use areas (ALKIS tatsächliche Nutzung).

A parcel takes the class (`layers.overlays.land_use_classes`: class -> land-use values) of the land use
covering the largest part of its area; uses outside every class, and the part of the parcel no land-use
area covers, count as "" (building land, gardens, green: drawn by GRZ class). So the mm slivers where a
garden parcel touches a street area do not make it a street. Ties go to the class first in the palette order, then "". Vectorised with
shapely 2 (one STRtree query, one intersection call).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely


def use_classes(uses: np.ndarray, classes: dict[str, list[str]]) -> np.ndarray:
    """The class of each land-use value ("" when none), matched case-insensitively."""
    lookup = {u.casefold(): c for c, vals in classes.items() for u in vals}
    return np.array(["" if u is None else lookup.get(str(u).casefold(), "") for u in uses], dtype=object)


def parcel_land_use(
    parcels: np.ndarray, areas: np.ndarray, uses: np.ndarray, classes: dict[str, list[str]]
) -> np.ndarray:
    """(N,) class of each parcel geometry (`parcels`), from the land-use `areas` and their `uses`."""
    parcels = np.asarray(parcels, dtype=object)
    out = np.full(len(parcels), "", dtype=object)
    areas = np.asarray(areas, dtype=object)
    if not len(parcels) or not len(areas):
        return out
    cls = use_classes(np.asarray(uses, dtype=object), classes)
    tree = shapely.STRtree(areas)
    pi, ai = tree.query(parcels, predicate="intersects")
    if not len(pi):
        return out
    a = shapely.area(shapely.intersection(parcels[pi], areas[ai]))
    covered = np.bincount(pi, weights=a, minlength=len(parcels))
    rest = np.maximum(shapely.area(parcels) - covered, 0.0)
    df = pd.DataFrame(
        {
            "p": np.concatenate([pi, np.arange(len(parcels))]),
            "c": np.concatenate([cls[ai], np.full(len(parcels), "", dtype=object)]),
            "a": np.concatenate([a, rest]),
        }
    )
    df = df.groupby(["p", "c"], sort=True)["a"].sum().reset_index()
    df = df[df["a"] > 0]
    order = [*classes, ""]
    df["rank"] = [order.index(c) for c in df["c"]]
    # largest area first; ties by class order (deterministic)
    df = df.sort_values(["p", "a", "rank"], ascending=[True, False, True], kind="stable")
    best = df.drop_duplicates("p", keep="first")
    out[best["p"].to_numpy()] = best["c"].to_numpy()
    return out
