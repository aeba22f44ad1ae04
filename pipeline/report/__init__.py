"""Build report: tables and matplotlib plots from a release directory (used by the build and the notebook).

Everything here reads files of a release (plus the small `report/data/` the build leaves for it), so
`notebooks/build_report.ipynb` reproduces the same analysis from a published release:

    from pipeline.report import ReleaseData, plot_height_distribution, ...
    data = ReleaseData.load(release_dir)
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

TRUTH_HEIGHT_COLUMNS = ("height", "height_new", "height_2", "roof_height", "true_height", "height_m")
REFERENCE_HEIGHT_COLUMNS = ("ref_height", "reference_height", "measured_height", "lod1_height")


def _read_layer(path: Path, layer: str | None = None) -> gpd.GeoDataFrame | None:
    if not path.is_file():
        return None
    import pyogrio

    try:
        names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
        if layer is not None and layer not in names:
            return None
        return gpd.read_file(path, layer=layer or names[0], engine="pyogrio")
    except Exception:  # a broken optional file must not break the report
        return None


@dataclass
class ReleaseData:
    """What the report needs from one release."""

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    buildings: gpd.GeoDataFrame | None = None
    parcels: gpd.GeoDataFrame | None = None
    change: gpd.GeoDataFrame | None = None
    unregistered: gpd.GeoDataFrame | None = None
    unknown: gpd.GeoDataFrame | None = None
    model_check: gpd.GeoDataFrame | None = None
    residuals: pd.DataFrame | None = None
    density_path: Path | None = None

    @classmethod
    def load(
        cls,
        root: Path | str,
        layers: list[dict[str, Any]] | None = None,
        timings: dict[str, float] | None = None,
        internal: Collection[str] = (),
    ) -> ReleaseData:
        """`internal`: names of internal layers whose data the (public) report must not read."""
        root = Path(root)
        manifest: dict[str, Any] = {}
        mf = root / "manifest.json"
        if mf.is_file():
            manifest = json.loads(mf.read_text())
        data_dir = root / "report" / "data"
        saved: dict[str, Any] = {}
        if (data_dir / "build.json").is_file():
            saved = json.loads((data_dir / "build.json").read_text())
        d = cls(
            root=root,
            manifest=manifest,
            layers=layers if layers is not None else manifest.get("layers", saved.get("layers", [])),
            timings=timings if timings is not None else manifest.get("timings", saved.get("timings", {})),
        )
        # a public report never reads an internal layer's data (e.g. `layers.change.access: internal`):
        # its plots would publish it
        hidden = set(internal) | {lay.get("name") for lay in d.layers if lay.get("access") == "internal"}

        def read(name: str, path: Path, layer: str) -> gpd.GeoDataFrame | None:
            return None if name in hidden else _read_layer(path, layer)

        d.buildings = read("buildings", root / "buildings" / "buildings.gpkg", "buildings")
        d.parcels = read("parcels", root / "overlays" / "parcels.gpkg", "parcels")
        d.change = read("change", root / "change" / "change.gpkg", "buildings_change")
        d.unregistered = read("change", root / "change" / "change.gpkg", "unregistered_structures")
        d.unknown = read("change", root / "change" / "change.gpkg", "unknown_areas")
        d.model_check = read("model_check", root / "model_check" / "model_check.gpkg", "model_check")
        if (data_dir / "residuals.csv").is_file():
            d.residuals = pd.read_csv(data_dir / "residuals.csv", dtype={"oid": str})
        if (data_dir / "point_density.tif").is_file():
            d.density_path = data_dir / "point_density.tif"
        return d

    def building_heights(self) -> np.ndarray:
        if self.buildings is not None and "height" in self.buildings:
            h = pd.to_numeric(self.buildings["height"], errors="coerce").to_numpy()
        elif self.change is not None and "h_new" in self.change:
            h = self.change["h_new"].to_numpy(dtype=float)
        else:
            return np.zeros(0)
        return h[np.isfinite(h)]

    def layer_seconds(self) -> dict[str, float]:
        out = dict(self.timings)
        for lay in self.layers:
            if lay.get("seconds") and lay["name"] not in out:
                out[lay["name"]] = float(lay["seconds"])
        return out


# ---- analysis -------------------------------------------------------------------------------------


def height_residuals(buildings: gpd.GeoDataFrame, truth: pd.DataFrame, source: str) -> pd.DataFrame:
    """Our height minus the reference height per building id (oid), for buildings with measured heights."""
    col = next((c for c in TRUTH_HEIGHT_COLUMNS if c in truth), None)
    if col is None or "oid" not in truth or "oid" not in buildings or "height" not in buildings:
        return pd.DataFrame(columns=["oid", "height", "reference", "residual", "source"])
    t = truth[["oid", col]].rename(columns={col: "reference"})
    t["oid"] = t["oid"].astype(str)
    b = pd.DataFrame(
        {"oid": buildings["oid"].astype(str), "height": pd.to_numeric(buildings["height"], errors="coerce")}
    )
    if "quality" in buildings:
        # only measured heights say something about the method; fallback heights (floors x 3 m, default)
        # are flagged estimates, e.g. buildings demolished since the flight but still in the cadastre
        measured = ~buildings["quality"].astype(str).str.startswith("fallback").to_numpy()
        b = b[measured]
    m = b.merge(t, on="oid", how="inner")
    m["reference"] = pd.to_numeric(m["reference"], errors="coerce")
    m = m[np.isfinite(m["height"]) & np.isfinite(m["reference"])].copy()
    m["residual"] = (m["height"] - m["reference"]).round(3)
    m["source"] = source
    return m.sort_values("oid").reset_index(drop=True)


def residual_stats(res: pd.DataFrame | None) -> dict[str, float]:
    if res is None or not len(res):
        return {}
    r = res["residual"].to_numpy(dtype=float)
    return {
        "n": int(r.size),
        "mean": round(float(r.mean()), 3),
        "rmse": round(float(np.sqrt((r**2).mean())), 3),
        "p95_abs": round(float(np.quantile(np.abs(r), 0.95)), 3),
    }


# ---- plots ----------------------------------------------------------------------------------------


def _fig(w: float = 6.0, h: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h), dpi=100)


def _save(fig, path: Path | None):
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
    return fig


def _rgba(c: Sequence[int]) -> tuple[float, float, float, float]:
    """A 0-255 RGB or RGBA colour as matplotlib's 0-1 RGBA."""
    r, g, b, *a = (v / 255 for v in c)
    return (r, g, b, a[0] if a else 1.0)


def _plain_axes(ax) -> None:
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=6)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


MAX_HIST_BINS = 120


def height_bins(h: np.ndarray, width: float = 1.0, max_bins: int = MAX_HIST_BINS) -> np.ndarray:
    """Histogram bin edges from 0 (or the lowest height) to the highest height: `width`-metre bins, widened
    to a round width when that would make more than `max_bins` (one absurd height of 1e6 m must not
    build 10^6 bins)."""
    lo = min(0.0, float(np.floor(h.min())))
    hi = max(float(h.max()), lo + 1.0)
    n = (hi - lo) / width
    if n > max_bins:
        raw = (hi - lo) / max_bins
        mag = 10 ** np.floor(np.log10(raw))
        width = float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))
    return np.arange(lo, hi + width, width)


def plot_height_distribution(data: ReleaseData, path: Path | None = None):
    fig, ax = _fig()
    h = data.building_heights()
    h = h[np.isfinite(h)]
    if h.size:
        ax.hist(h, bins=height_bins(h), color="#4c72b0", edgecolor="white")
        ax.set_xlabel("building height above ground [m]")
        ax.set_ylabel("buildings")
        ax.set_title(f"Height distribution ({h.size} buildings, median {np.median(h):.1f} m)")
    else:
        _empty(ax, "no building heights in this release")
    return _save(fig, path)


def plot_residuals(data: ReleaseData, path: Path | None = None):
    fig, ax = _fig()
    res = data.residuals
    if res is not None and len(res):
        r = res["residual"].to_numpy(dtype=float)
        lim = max(1.0, float(np.quantile(np.abs(r), 0.99)))
        ax.hist(np.clip(r, -lim, lim), bins=40, color="#55a868", edgecolor="white")
        s = residual_stats(res)
        ax.set_title(f"Height residuals vs {res['source'].iloc[0]} (RMSE {s['rmse']} m, n={s['n']})")
        ax.set_xlabel("our height - reference [m]")
        ax.set_ylabel("buildings")
    else:
        _empty(ax, "no ground truth or official LoD1/LoD2 reference available")
    return _save(fig, path)


def plot_grz_map(data: ReleaseData, path: Path | None = None):
    from matplotlib.patches import Patch

    from pipeline.stages.overlays import GRZ_CLASSES, grz_colours

    fig, ax = _fig(6, 6)
    p = data.parcels
    if p is not None and len(p):
        cols = grz_colours(p["grz"].to_numpy(dtype=float)) / 255.0
        p.plot(ax=ax, color=cols, edgecolor="0.3", linewidth=0.3)
        if data.buildings is not None:
            data.buildings.boundary.plot(ax=ax, color="black", linewidth=0.3)
        ax.legend(
            handles=[Patch(color=_rgba(c), label=lab) for _, c, lab in GRZ_CLASSES],
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=7,
        )
        ax.set_title("Actual GRZ per parcel")
        ax.set_aspect("equal")
        _plain_axes(ax)
    else:
        _empty(ax, "no parcel overlay in this release")
    return _save(fig, path)


def plot_change_map(data: ReleaseData, path: Path | None = None):
    from matplotlib.patches import Patch

    from pipeline.stages.change import CLASS_COLOURS

    fig, ax = _fig(6, 6)
    c = data.change
    if c is not None and len(c):
        cols = np.array([CLASS_COLOURS.get(k, (0, 0, 0, 255)) for k in c["change_class"]]) / 255.0
        if data.unknown is not None and len(data.unknown):
            unk = np.array(CLASS_COLOURS["unknown"][:3]) / 255.0  # the palette's "unknown"
            data.unknown.plot(ax=ax, color=(*unk, 0.15), edgecolor=(*unk, 0.8), hatch="//")
        c.plot(ax=ax, color=cols, edgecolor="0.2", linewidth=0.3)
        if data.unregistered is not None and len(data.unregistered):
            data.unregistered.plot(
                ax=ax, color=np.array(CLASS_COLOURS["unregistered"]) / 255, edgecolor="black", linewidth=0.6
            )
        present = set(c["change_class"]) | (
            {"unregistered"} if data.unregistered is not None and len(data.unregistered) else set()
        )
        ax.legend(
            handles=[Patch(color=_rgba(CLASS_COLOURS[k]), label=k) for k in CLASS_COLOURS if k in present],
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=7,
        )
        ax.set_title("Change between epochs")
        ax.set_aspect("equal")
        _plain_axes(ax)
    else:
        _empty(ax, "no change layer (needs two aerial epochs)")
    return _save(fig, path)


def plot_model_check_map(data: ReleaseData, path: Path | None = None):
    """Buildings by outdated-model class (palette pipeline.styles.palettes.MODEL_CHECK)."""
    from matplotlib.patches import Patch

    from pipeline.styles.palettes import MODEL_CHECK_COLOURS

    fig, ax = _fig(6, 6)
    m = data.model_check
    if m is not None and len(m):
        cols = np.array([MODEL_CHECK_COLOURS.get(k, (0, 0, 0, 255)) for k in m["model_check"]]) / 255.0
        m.plot(ax=ax, color=cols, edgecolor="0.2", linewidth=0.3)
        present = set(m["model_check"])
        ax.legend(
            handles=[
                Patch(color=_rgba(MODEL_CHECK_COLOURS[k]), label=k)
                for k in MODEL_CHECK_COLOURS
                if k in present
            ],
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=7,
        )
        ax.set_title("Official LoD2 model vs survey")
        ax.set_aspect("equal")
        _plain_axes(ax)
    else:
        _empty(ax, "no outdated-model check (needs sources.reference_citygml)")
    return _save(fig, path)


# cells per side of the point density map at most (a larger raster is averaged down)
DENSITY_MAP_CELLS = 1500


def plot_point_density(data: ReleaseData, path: Path | None = None):
    fig, ax = _fig(6, 5)
    if data.density_path is not None:
        import rasterio
        from rasterio.enums import Resampling

        with rasterio.open(data.density_path) as ds:
            # a region larger than the map's pixels is read averaged (memory: the map, not the region)
            k = max(1, math.ceil(max(ds.width, ds.height) / DENSITY_MAP_CELLS))
            shape = (math.ceil(ds.height / k), math.ceil(ds.width / k))
            a = ds.read(1, out_shape=shape, resampling=Resampling.average).astype(float)
            b = ds.bounds
            res = ds.res[0]
        im = ax.imshow(a / (res * res), extent=(b.left, b.right, b.bottom, b.top), cmap="viridis")
        fig.colorbar(im, ax=ax, label="points / m²")
        cells = f"{res:g} m cells" if k == 1 else f"{res:g} m cells averaged to {res * k:g} m"
        ax.set_title(f"Point density of the newest epoch ({cells})")
        _plain_axes(ax)
    else:
        _empty(ax, "no point density grid")
    return _save(fig, path)


def plot_timings(data: ReleaseData, path: Path | None = None):
    fig, ax = _fig(6, 3.5)
    t = data.layer_seconds()
    if t:
        names = sorted(t, key=lambda k: -t[k])
        ax.barh(names[::-1], [t[n] for n in names[::-1]], color="#8172b2")
        ax.set_xlabel("seconds")
        ax.set_title("Stage timings")
    else:
        _empty(ax, "no timings")
    return _save(fig, path)


PLOTS = {
    "height_distribution.png": plot_height_distribution,
    "height_residuals.png": plot_residuals,
    "grz_map.png": plot_grz_map,
    "change_map.png": plot_change_map,
    "model_check_map.png": plot_model_check_map,
    "point_density.png": plot_point_density,
    "stage_timings.png": plot_timings,
}


# ---- tables + HTML --------------------------------------------------------------------------------


def tables(data: ReleaseData) -> dict[str, pd.DataFrame]:
    from pipeline.report.nightly import release_layer_files

    out: dict[str, pd.DataFrame] = {}
    if data.layers:
        layer_files = release_layer_files(data.root, data.layers)
        out["layers"] = pd.DataFrame(
            [
                {
                    "layer": lay["name"],
                    "kind": lay["kind"],
                    "access": lay.get("access", ""),
                    "seconds": lay.get("seconds", 0.0),
                    "files": len(layer_files[lay["name"]]),
                    "warnings": len(lay.get("warnings", [])),
                }
                for lay in data.layers
            ]
        )
    if data.change is not None and len(data.change):
        vc = data.change["change_class"].value_counts()
        out["change_classes"] = pd.DataFrame({"class": vc.index, "buildings": vc.to_numpy()}).sort_values(
            "class"
        )
        ch = data.change[data.change["change_class"].isin(["new", "demolished", "raised", "lowered"])]
        out["changed_buildings"] = pd.DataFrame(ch.drop(columns="geometry")).sort_values("oid")[
            ["oid", "change_class", "h_old", "h_new", "dh", "confidence"]
        ]
    if data.model_check is not None and len(data.model_check):
        from pipeline.stages.buildings.model_check import class_counts

        counts = class_counts(data.model_check)
        out["model_check_classes"] = pd.DataFrame({"class": list(counts), "buildings": list(counts.values())})
        mc = data.model_check[~data.model_check["model_check"].isin(["consistent", "unknown"])]
        plane_cols = [c for c in ("planes_changed", "dz_plane_max") if c in mc.columns]  # per roof plane
        out["outdated_in_official_model"] = pd.DataFrame(mc.drop(columns="geometry")).sort_values(
            ["model_check", "oid", "official_oid"]
        )[["oid", "official_oid", "model_check", "dz_eave", "dz_ridge", *plane_cols, "iou", "reason"]]
        if "planes_compared" in data.model_check.columns:
            m = data.model_check
            out["model_check_planes"] = pd.DataFrame(
                {
                    "roof planes compared": [int(m["planes_compared"].sum())],
                    "differing by more than roof_dz_m": [int(m["planes_changed"].sum())],
                    "buildings with differing planes": [int((m["planes_changed"] > 0).sum())],
                }
            )
    if data.unregistered is not None and len(data.unregistered):
        out["unregistered"] = pd.DataFrame(data.unregistered.drop(columns="geometry"))
    if data.parcels is not None and len(data.parcels):
        cols = [
            c
            for c in [
                "flstkennz",
                "parcel_area_m2",
                "grz",
                "gfz_est",
                "sealed_share",
                "green_share",
                "tree_share",
            ]
            if c in data.parcels
        ]
        out["parcels_top_grz"] = pd.DataFrame(data.parcels[cols]).sort_values("grz", ascending=False).head(15)
    if data.residuals is not None and len(data.residuals):
        out["residual_stats"] = pd.DataFrame([residual_stats(data.residuals)])
    return out


def render_html(data: ReleaseData, images: list[str], title: str, warnings: list[str]) -> str:
    from html import escape

    template = (Path(__file__).parent / "template.html").read_text(encoding="utf-8")
    parts = []
    for name, df in tables(data).items():
        parts.append(f"<h2>{escape(name.replace('_', ' '))}</h2>")
        parts.append(
            df.to_html(
                index=False,
                float_format=lambda v: f"{v:.3f}",
                na_rep="–",
                border=0,
                classes="tbl",
                escape=True,
            )
        )
    imgs = "\n".join(f'<figure><img src="{escape(i)}" alt="{escape(i)}"></figure>' for i in images)
    warn = "".join(f"<li>{escape(w)}</li>" for w in warnings) or "<li>none</li>"
    return (
        template.replace("{{title}}", escape(title))
        .replace("{{summary}}", '<p class="note">build summary: written when the build has finished</p>')
        .replace("{{images}}", imgs)
        .replace("{{tables}}", "\n".join(parts))
        .replace("{{warnings}}", warn)
    )
