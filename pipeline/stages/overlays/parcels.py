"""Per-parcel planning figures: built-up area, GRZ, estimated GFZ and volume, sealed/green/tree shares.

    GRZ (actual)   = area of the union of building footprints inside the parcel / parcel area
    GFZ (estimate) = sum over footprint pieces of area x floors / parcel area, floors = max(1, round(h / 3 m))
    volume (est.)  = sum of footprint piece area x building height

GFZ and volume are estimates (storeys are not measured): the columns end in `_est` and `estimate_note`
says how they were made. Raster shares come from a land-cover grid (see ndvi.py) rasterised per parcel by
cell centres; the shares are fractions of the parcel's cells that have data.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine

from pipeline.stages.overlays.ndvi import LOW_GREEN, NODATA, SEALED, TREE

ESTIMATE_NOTE = "GFZ/volume estimated: floors = max(1, round(height / {fh:g} m)); not measured"


def built_up(
    parcels: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame, floor_height_m: float = 3.0
) -> pd.DataFrame:
    """Built-up area, GRZ, GFZ and volume estimates per parcel (index aligned with `parcels`).

    `buildings` needs a geometry and may carry `height` (metres above ground); overlapping footprints are
    counted once for the built-up area.
    """
    n = len(parcels)
    parea = parcels.geometry.area.to_numpy()
    out = pd.DataFrame(
        {
            "parcel_area_m2": parea,
            "built_area_m2": np.zeros(n),
            "n_buildings": np.zeros(n, dtype=np.int64),
            "gfa_est_m2": np.zeros(n),
            "volume_est_m3": np.zeros(n),
            "height_missing": np.zeros(n, dtype=np.int64),
        },
        index=parcels.index,
    )
    if n == 0 or len(buildings) == 0:
        return _ratios(out)
    p = gpd.GeoDataFrame({"pidx": np.arange(n)}, geometry=parcels.geometry.to_numpy(), crs=parcels.crs)
    heights = (
        pd.to_numeric(buildings["height"], errors="coerce").to_numpy()
        if "height" in buildings
        else np.full(len(buildings), np.nan)
    )
    b = gpd.GeoDataFrame(
        {"bidx": np.arange(len(buildings)), "h": heights},
        geometry=buildings.geometry.to_numpy(),
        crs=parcels.crs,
    )
    b = b[~b.geometry.is_empty & b.geometry.notna()]
    pieces = gpd.overlay(b, p, how="intersection", keep_geom_type=True)
    if len(pieces) == 0:
        return _ratios(out)
    pieces["a"] = pieces.geometry.area
    # built-up area: union per parcel (overlapping footprints once)
    union = pieces.dissolve(by="pidx").geometry.area
    built = out["built_area_m2"].to_numpy(dtype=np.float64, copy=True)
    built[union.index.to_numpy()] = union.to_numpy()
    out["built_area_m2"] = built
    h = pieces["h"].to_numpy()
    floors = np.where(np.isfinite(h), np.maximum(1, np.round(h / floor_height_m)), np.nan)
    pid = pieces["pidx"].to_numpy()
    a = pieces["a"].to_numpy()
    known = np.isfinite(h)
    out["gfa_est_m2"] = np.bincount(pid[known], weights=(a * floors)[known], minlength=n)
    out["volume_est_m3"] = np.bincount(pid[known], weights=(a * h)[known], minlength=n)
    out["n_buildings"] = np.bincount(pid, minlength=n)
    out["height_missing"] = np.bincount(pid[~known], minlength=n)
    return _ratios(out)


def _ratios(out: pd.DataFrame) -> pd.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        area = out["parcel_area_m2"].to_numpy()
        out["grz"] = np.where(area > 0, out["built_area_m2"] / area, np.nan)
        out["gfz_est"] = np.where(area > 0, out["gfa_est_m2"] / area, np.nan)
    # a parcel with buildings of unknown height has no complete GFZ estimate
    out.loc[out["height_missing"] > 0, ["gfz_est", "volume_est_m3", "gfa_est_m2"]] = np.nan
    return out


def parcel_labels(parcels: gpd.GeoDataFrame, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """int32 grid: 1 + parcel position for cells whose centre lies in a parcel, 0 elsewhere."""
    from rasterio.features import rasterize

    if len(parcels) == 0:
        return np.zeros(shape, dtype=np.int32)
    shapes = (
        (g, i + 1) for i, g in enumerate(parcels.geometry.to_numpy()) if g is not None and not g.is_empty
    )
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32", all_touched=False)


def landcover_shares(
    labels: np.ndarray, landcover: np.ndarray, ndsm: np.ndarray | None, n_parcels: int
) -> pd.DataFrame:
    """Shares of sealed / green / low green / tree canopy cells and canopy heights per parcel."""
    lab = labels.ravel()
    lc = landcover.ravel()
    inside = lab > 0
    idx = lab[inside] - 1
    cls = lc[inside]
    m = n_parcels

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(idx[mask], minlength=m).astype(np.float64)

    total = count(np.ones_like(cls, dtype=bool))
    valid = count(cls != NODATA)
    sealed = count(cls == SEALED)
    low = count(cls == LOW_GREEN)
    tree = count(cls == TREE)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = pd.DataFrame(
            {
                "sealed_share": sealed / valid,
                "green_share": (low + tree) / valid,
                "low_green_share": low / valid,
                "tree_share": tree / valid,
                "nodata_share": np.where(total > 0, 1 - valid / total, np.nan),
            }
        )
    th_mean = np.full(m, np.nan)
    th_max = np.full(m, np.nan)
    if ndsm is not None:
        h = ndsm.ravel()[inside]
        t = (cls == TREE) & np.isfinite(h)
        s = np.bincount(idx[t], weights=h[t], minlength=m)
        with np.errstate(invalid="ignore", divide="ignore"):
            th_mean = np.where(tree > 0, s / np.maximum(tree, 1), np.nan)
        mx = np.full(m, -np.inf)
        np.maximum.at(mx, idx[t], h[t])
        th_max = np.where(np.isfinite(mx), mx, np.nan)
    df["tree_height_mean_m"] = th_mean
    df["tree_height_max_m"] = th_max
    return df


def parcel_overlay(
    parcels: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    *,
    landcover: np.ndarray | None = None,
    ndsm: np.ndarray | None = None,
    transform: Affine | None = None,
    floor_height_m: float = 3.0,
    owned: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """All per-parcel figures as one GeoDataFrame (parcel columns kept, figures appended).

    `owned` (bool per parcel row): figures only for these rows; the other rows are neighbours that take
    part in the land-cover rasterisation only (a cell whose centre lies on a shared edge goes to the same
    parcel as when the whole region is rasterised at once), so a region partitioned into tiles gives the
    same rows as the region in one piece."""
    p = parcels.reset_index(drop=True)
    own = np.ones(len(p), dtype=bool) if owned is None else np.asarray(owned, dtype=bool)
    keep = (p.geometry.notna() & ~p.geometry.is_empty).to_numpy()
    p = p[keep].reset_index(drop=True)
    own = own[keep]
    geoms = p.geometry.to_numpy()
    valid = shapely.is_valid(geoms)
    if not valid.all():
        geoms = geoms.copy()
        geoms[~valid] = shapely.make_valid(geoms[~valid])
        p = p.set_geometry(geoms)
    po = p[own].reset_index(drop=True)
    figures = built_up(po, buildings, floor_height_m)
    cols = [figures]
    if landcover is not None and transform is not None:
        labels = parcel_labels(p, transform, landcover.shape)
        shares = landcover_shares(labels, landcover, ndsm, len(p))
        cols.append(shares[own].reset_index(drop=True))
    data = pd.concat([c.reset_index(drop=True) for c in cols], axis=1)
    out = gpd.GeoDataFrame(
        pd.concat([po.drop(columns="geometry"), data], axis=1), geometry=po.geometry, crs=p.crs
    )
    out["estimate_note"] = ESTIMATE_NOTE.format(fh=floor_height_m)
    return out
