"""Change detection between two survey epochs and the cadastre.

Inputs are surface models of both epochs on one grid (nDSM = highest point per cell - terrain), the
cadastral footprints and optionally an NDVI grid. Everything is array arithmetic on label grids.

Per footprint (shrunk by `shrink_m` so walls and neighbours do not leak in):
    h_e       = p75 of the nDSM cells with data in epoch e
    coverage  = share of the footprint's cells with data in epoch e
    present_e = h_e >= present_min_height_m
    class     = unknown     if min(coverage) < min_coverage  (never "unchanged" without data)
                new         if not present_old and present_new
                demolished  if present_old and not present_new
                raised      if dh >= min_dh_m
                lowered     if dh <= -min_dh_m
                unchanged   if |dh| < min_dh_m
                absent      if present in neither epoch (footprint without a structure above ground)
    confidence = coverage x Phi(margin), margin = distance of the deciding quantity from its threshold in
                 units of its standard error (height_sigma_m and the roof's spread / sqrt(cells)).

Unregistered structures: cells of the newest epoch higher than `unregistered_min_height_m`, not green
(NDVI below the threshold, when an NDVI grid is given), outside the footprints buffered by
`footprint_buffer_m`; opened by one cell (fences, wires, tree fringes), grouped into connected blobs and
kept when larger than `unregistered_min_area_m2`.

Unknown areas: cells without data in either epoch (after filling gaps between points), grouped into
polygons larger than `unknown_min_area_m2`.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine

from pipeline.config.model import ChangeLayer
from pipeline.styles.palettes import CHANGE_COLOURS

CHANGE_CLASSES = ("new", "demolished", "raised", "lowered", "unchanged", "absent", "unknown")
# RGBA 0-255 per class: the one palette (pipeline.styles.palettes.CHANGE) shared by the 3D tiles, the
# QML styles, the viewer and the report
CLASS_COLOURS = CHANGE_COLOURS


def label_grid(geoms: np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """int32 grid: 1 + position of the geometry whose area holds the cell centre (0 = none)."""
    from rasterio.features import rasterize

    items = [(g, i + 1) for i, g in enumerate(geoms) if g is not None and not shapely.is_empty(g)]
    if not items:
        return np.zeros(shape, dtype=np.int32)
    return rasterize(items, out_shape=shape, transform=transform, fill=0, dtype="int32", all_touched=False)


def label_quantile(labels: np.ndarray, values: np.ndarray, q: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label q-quantile (linear interpolation, like numpy's default) of finite values, and counts.

    labels: 1..n (0 ignored). Returns (quantile (n,) NaN where no value, count (n,)).
    """
    lab = labels.ravel()
    val = values.ravel()
    ok = (lab > 0) & np.isfinite(val)
    lab = lab[ok] - 1
    val = val[ok].astype(np.float64)
    order = np.lexsort((val, lab))
    lab = lab[order]
    val = val[order]
    cnt = np.bincount(lab, minlength=n)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    out = np.full(n, np.nan)
    has = cnt > 0
    pos = (cnt[has] - 1) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, cnt[has] - 1)
    frac = pos - lo
    s = start[has]
    out[has] = val[s + lo] * (1 - frac) + val[s + hi] * frac
    return out, cnt


def label_quantile_reference(labels: np.ndarray, values: np.ndarray, q: float, n: int) -> np.ndarray:
    """Slow reference of `label_quantile` (tests)."""
    out = np.full(n, np.nan)
    for i in range(n):
        v = values[(labels == i + 1) & np.isfinite(values)]
        if v.size:
            out[i] = np.quantile(v, q)
    return out


def _phi(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[float])
    return 0.5 * (1.0 + erf(np.asarray(x, dtype=float) / math.sqrt(2.0)))


def building_change(
    footprints: gpd.GeoDataFrame,
    ndsm_old: np.ndarray,
    ndsm_new: np.ndarray,
    transform: Affine,
    cfg: ChangeLayer,
) -> pd.DataFrame:
    """Change class, heights, dh and confidence per footprint (index aligned with `footprints`)."""
    n = len(footprints)
    shape = ndsm_new.shape
    geoms = footprints.geometry.to_numpy()
    shrunk = shapely.buffer(geoms, -cfg.shrink_m) if cfg.shrink_m > 0 else geoms
    cell_area = abs(transform.a * transform.e)
    # footprints too small to shrink keep their full outline
    small = shapely.is_empty(shrunk) | (shapely.area(shrunk) < 4 * cell_area)
    shrunk = np.where(small, geoms, shrunk)
    labels = label_grid(shrunk, transform, shape)
    total = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    h_old, n_old = label_quantile(labels, ndsm_old, 0.75, n)
    h_new, n_new = label_quantile(labels, ndsm_new, 0.75, n)
    q25_old, _ = label_quantile(labels, ndsm_old, 0.25, n)
    q25_new, _ = label_quantile(labels, ndsm_new, 0.25, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov_old = np.where(total > 0, n_old / total, 0.0)
        cov_new = np.where(total > 0, n_new / total, 0.0)
        # standard error of a p75 ~ 1.36 sigma / sqrt(n); sigma from the IQR
        se_old = cfg.height_sigma_m + 1.36 * ((h_old - q25_old) / 1.349) / np.sqrt(np.maximum(n_old, 1))
        se_new = cfg.height_sigma_m + 1.36 * ((h_new - q25_new) / 1.349) / np.sqrt(np.maximum(n_new, 1))
    se_old = np.nan_to_num(se_old, nan=cfg.height_sigma_m)
    se_new = np.nan_to_num(se_new, nan=cfg.height_sigma_m)
    dh = h_new - h_old
    thr = cfg.present_min_height_m
    pres_old = h_old >= thr
    pres_new = h_new >= thr
    known = (np.minimum(cov_old, cov_new) >= cfg.min_coverage) & np.isfinite(h_old) & np.isfinite(h_new)
    cls = np.full(n, "unknown", dtype=object)
    both = known & pres_old & pres_new
    cls[known & ~pres_old & pres_new] = "new"
    cls[known & pres_old & ~pres_new] = "demolished"
    cls[known & ~pres_old & ~pres_new] = "absent"
    cls[both & (dh >= cfg.min_dh_m)] = "raised"
    cls[both & (dh <= -cfg.min_dh_m)] = "lowered"
    cls[both & (np.abs(dh) < cfg.min_dh_m)] = "unchanged"
    # confidence: how far the deciding quantity is from its threshold, in standard errors
    m_presence = np.minimum(np.abs(h_old - thr) / se_old, np.abs(h_new - thr) / se_new)
    se_dh = np.sqrt(se_old**2 + se_new**2)
    m_dh = np.abs(np.abs(dh) - cfg.min_dh_m) / se_dh
    margin = np.where(both, np.minimum(m_dh, m_presence), m_presence)
    conf = np.where(known, np.minimum(cov_old, cov_new) * _phi(np.nan_to_num(margin, nan=0.0)), 0.0)
    return pd.DataFrame(
        {
            "change_class": cls.astype(str),
            "h_old": h_old,
            "h_new": h_new,
            "dh": dh,
            "confidence": np.round(np.clip(conf, 0, 1), 3),
            "coverage_old": np.round(cov_old, 3),
            "coverage_new": np.round(cov_new, 3),
            "n_cells": total.astype(np.int64),
        },
        index=footprints.index,
    )


def _shift_or(mask: np.ndarray, erode: bool) -> np.ndarray:
    """3x3 binary erosion (erode=True) or dilation with edge padding."""
    p = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    views = [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.logical_and.reduce(views) if erode else np.logical_or.reduce(views)


def binary_open(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    m = mask
    for _ in range(steps):
        m = _shift_or(m, True)
    for _ in range(steps):
        m = _shift_or(m, False)
    return m & mask


def polygonize(mask: np.ndarray, transform: Affine, min_area: float) -> list[shapely.Polygon]:
    """Connected True regions (4-connected) as polygons of at least `min_area`, in a stable order."""
    from rasterio.features import shapes

    if not mask.any():
        return []
    geoms = [
        shapely.geometry.shape(g)
        for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=transform, connectivity=4)
        if v == 1
    ]
    polys = [g for g in geoms if isinstance(g, shapely.Polygon) and g.area >= min_area - 1e-9]
    polys.sort(key=lambda g: (round(g.bounds[1], 3), round(g.bounds[0], 3)))
    return polys


def unregistered_structures(
    footprints: gpd.GeoDataFrame,
    ndsm_old: np.ndarray,
    ndsm_new: np.ndarray,
    transform: Affine,
    cfg: ChangeLayer,
    *,
    ndvi: np.ndarray | None = None,
    ndvi_threshold: float = 0.3,
    crs: str,
    registered: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """Blobs above the height threshold without a cadastral footprint (a review list).

    `registered`: further cadastral outlines that count as registered although they are not footprints
    of the change analysis (Bauteile, records whose geometry the reader rejected, ...).
    """
    shape = ndsm_new.shape
    geoms = footprints.geometry.to_numpy()
    if registered is not None and len(registered):
        geoms = np.concatenate([geoms, np.asarray(registered, dtype=object)])
    buffered = shapely.buffer(geoms, cfg.footprint_buffer_m) if len(geoms) else geoms
    covered = label_grid(buffered, transform, shape) > 0
    high = np.isfinite(ndsm_new) & (ndsm_new >= cfg.unregistered_min_height_m) & ~covered
    if ndvi is not None:
        high &= ~(np.isfinite(ndvi) & (ndvi >= ndvi_threshold))
    high = binary_open(high, 1)
    polys = polygonize(high, transform, cfg.unregistered_min_area_m2)
    cols = ["uid", "area_m2", "height_p75", "height_max", "h_old", "existed_before", "confidence", "status"]
    if not polys:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    arr = np.array(polys, dtype=object)
    labels = label_grid(arr, transform, shape)
    n = len(polys)
    h75, _ = label_quantile(labels, np.where(high, ndsm_new, np.nan), 0.75, n)
    hmax, _ = label_quantile(labels, np.where(high, ndsm_new, np.nan), 1.0, n)
    hold, _ = label_quantile(labels, ndsm_old, 0.75, n)
    area = shapely.area(arr)
    existed = np.isfinite(hold) & (hold >= cfg.unregistered_min_height_m)
    # confidence: margin of area and height over their thresholds, saturating
    conf = (1 - np.exp(-area / cfg.unregistered_min_area_m2)) * _phi(
        (h75 - cfg.unregistered_min_height_m) / cfg.height_sigma_m
    )
    cx = shapely.get_x(shapely.centroid(arr))
    cy = shapely.get_y(shapely.centroid(arr))
    uid = [f"U{round(float(x)):d}_{round(float(y)):d}" for x, y in zip(cx, cy, strict=True)]
    return gpd.GeoDataFrame(
        {
            "uid": uid,
            "area_m2": np.round(area, 2),
            "height_p75": np.round(h75, 2),
            "height_max": np.round(hmax, 2),
            "h_old": np.round(hold, 2),
            "existed_before": existed,
            "confidence": np.round(conf, 3),
            "status": "review",
        },
        geometry=gpd.GeoSeries(arr, crs=crs),
        crs=crs,
    )


def unknown_areas(
    dsm_old: np.ndarray,
    dsm_new: np.ndarray,
    transform: Affine,
    min_area: float,
    epochs: tuple[str, str],
    crs: str,
) -> gpd.GeoDataFrame:
    """Polygons of cells without data in either epoch; `missing_in` names the epoch(s)."""
    miss_o = ~np.isfinite(dsm_old)
    miss_n = ~np.isfinite(dsm_new)
    code = miss_o.astype(np.uint8) + 2 * miss_n.astype(np.uint8)  # 1 old, 2 new, 3 both
    from rasterio.features import shapes

    rows = []
    if code.any():
        for g, v in shapes(code, mask=code > 0, transform=transform, connectivity=4):
            poly = shapely.geometry.shape(g)
            if poly.area >= min_area - 1e-9:
                rows.append((poly, int(v)))
    rows.sort(key=lambda r: (round(r[0].bounds[1], 3), round(r[0].bounds[0], 3), r[1]))
    names = {1: epochs[0], 2: epochs[1], 3: "both"}
    return gpd.GeoDataFrame(
        {
            "missing_in": [names[v] for _, v in rows],
            "area_m2": [round(p.area, 2) for p, _ in rows],
        },
        geometry=gpd.GeoSeries([p for p, _ in rows], crs=crs),
        crs=crs,
    )
