"""Our heights against an official model (e.g. LoD1 CityGML `measuredHeight`), matched by footprint overlap."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely


def compare_with_reference(
    buildings: gpd.GeoDataFrame,
    reference: gpd.GeoDataFrame,
    *,
    min_iou: float = 0.5,
    height_col: str = "height",
    reference_col: str = "measured_height",
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Match each of our buildings to the reference footprint of largest overlap (IoU >= min_iou).

    Returns (per-match table: oid, ref_oid, iou, height, ref_height, dh = ours - reference, plus quality
    when present) and summary stats (matched, median_dh, mean_dh, rmse, median_abs_dh, p90_abs_dh).
    """
    ours = np.asarray(buildings.geometry.values, dtype=object)
    refs = np.asarray(reference.geometry.values, dtype=object)
    cols = ["oid", "ref_oid", "iou", "height", "ref_height", "dh"]
    if len(ours) == 0 or len(refs) == 0:
        return pd.DataFrame(columns=cols), {"matched": 0, "ours": len(ours), "reference": len(refs)}
    tree = shapely.STRtree(refs)
    qi, ri = tree.query(ours, predicate="intersects")
    inter = shapely.area(shapely.intersection(ours[qi], refs[ri]))
    union = shapely.area(ours[qi]) + shapely.area(refs[ri]) - inter
    iou = np.where(union > 0, inter / union, 0.0)
    df = pd.DataFrame({"q": qi, "r": ri, "iou": iou})
    df = df[df.iou >= min_iou].sort_values(["q", "iou", "r"], ascending=[True, False, True])
    df = df.drop_duplicates("q", keep="first")
    # one reference building matches at most one of ours (the best)
    df = df.sort_values(["r", "iou", "q"], ascending=[True, False, True]).drop_duplicates("r", keep="first")
    df = df.sort_values("q")
    h = buildings[height_col].to_numpy(dtype=np.float64)[df.q.to_numpy()]
    rh = reference[reference_col].to_numpy(dtype=np.float64)[df.r.to_numpy()]
    out = pd.DataFrame(
        {
            "oid": buildings["oid"].to_numpy()[df.q.to_numpy()],
            "ref_oid": reference["oid"].to_numpy()[df.r.to_numpy()],
            "iou": np.round(df.iou.to_numpy(), 4),
            "height": h,
            "ref_height": rh,
            "dh": h - rh,
        }
    )
    if "quality" in buildings:
        out["quality"] = buildings["quality"].to_numpy()[df.q.to_numpy()]
    ok = np.isfinite(out.dh.to_numpy())
    dh = out.dh.to_numpy()[ok]
    stats: dict[str, float] = {"matched": int(ok.sum()), "ours": len(ours), "reference": len(refs)}
    if dh.size:
        stats.update(
            median_dh=float(np.median(dh)),
            mean_dh=float(np.mean(dh)),
            rmse=float(np.sqrt(np.mean(dh**2))),
            median_abs_dh=float(np.median(np.abs(dh))),
            p90_abs_dh=float(np.percentile(np.abs(dh), 90)),
        )
    return out, stats
