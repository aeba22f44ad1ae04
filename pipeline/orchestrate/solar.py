"""Solar potential layer: annual irradiation per cell of the surface model and per building roof.

    build_solar_layers(ctx, previous) -> [solar overlay]

Inputs: the surface (highest point per cell of the newest aerial epoch, the overlays' cached rasters),
the terrain model (DGM, else ground points) and the footprints with roof heights (the buildings layer's
`buildings/buildings.gpkg`, else the cadastre). Empty DSM cells take the building's roof height inside a
footprint and the terrain elsewhere. Output (`solar/`):

* `solar_irradiation.tif`: Cloud Optimized GeoTIFF, float32, band 1 = annual global irradiation in kWh
  per m2 of the inclined surface, band 2 = sky view factor; NaN outside the computed cells
  (`layers.solar.cells`: roofs or all);
* `solar.gpkg`, layer `solar_buildings`: one row per footprint with `oid`, `solar_mean_kwh_m2`,
  `solar_total_mwh`, `solar_roof_area_m2`, `solar_slope_deg`, `solar_aspect_deg`, `solar_sky_view`,
  `solar_cells` (+ `solar.qml` style); with the official LoD2 model (`sources.reference_citygml`,
  `layers.solar.roof_planes: official_lod2`) also `solar_roof_surfaces`, one row per LoD2 roof polygon
  whose plane gives the slope and aspect of its cells.

Method and limits: docs/overlays.md, "Solar potential".
"""

from __future__ import annotations

import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from pipeline.config.model import SolarLayer
from pipeline.model import BuildContext, LayerResult
from pipeline.stages.solar import SolarParams

# reads the official LoD2 model (role "reference") for the roof planes, besides the build defaults
LAYER_DEPENDS = {
    "roles": ["cadastre", "aerial", "dgm", "reference"],
    "config": ["solar"],
    "after": ["buildings"],
}

# QGIS graduated style on solar_mean_kwh_m2 (clear-sky scale: ~1650 kWh/m2 on an open horizontal roof)
_CLASSES = [
    (0, 700, (49, 54, 149)),
    (700, 1000, (116, 173, 209)),
    (1000, 1300, (254, 224, 144)),
    (1300, 1600, (244, 109, 67)),
    (1600, 5000, (165, 0, 38)),
]


def solar_params(lay: SolarLayer) -> SolarParams:
    return SolarParams(
        year=lay.year,
        step_minutes=lay.step_minutes,
        day_step=lay.day_step,
        linke_turbidity=tuple(lay.linke_turbidity),
        sky_factors=tuple(lay.sky_factors) if lay.sky_factors is not None else None,
        altitude_m=lay.altitude_m,
        albedo=lay.albedo,
        n_directions=lay.n_directions,
        max_distance_m=lay.max_distance_m,
        fine_cells=lay.fine_cells,
        plane_tolerance_m=lay.plane_tolerance_m,
        bin_deg=lay.bin_deg,
    )


def solar_qml() -> str:
    ranges = "".join(
        f'      <range render="true" lower="{lo}" upper="{hi}" symbol="{i}" label="{lo} - {hi} kWh/m²"/>\n'
        for i, (lo, hi, _c) in enumerate(_CLASSES)
    )
    syms = "".join(
        f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        '          <Option type="Map">\n'
        f'            <Option type="QString" name="color" value="{r},{g},{b},230"/>\n'
        '            <Option type="QString" name="outline_color" value="60,60,60,255"/>\n'
        '            <Option type="QString" name="outline_width" value="0.2"/>\n'
        '            <Option type="QString" name="style" value="solid"/>\n'
        "          </Option>\n"
        "        </layer>\n"
        "      </symbol>\n"
        for i, (_lo, _hi, (r, g, b)) in enumerate(_CLASSES)
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.34.0" styleCategories="Symbology">\n'
        "  <!-- RuhrTwin solar potential per building: mean annual irradiation of the roof -->\n"
        '  <renderer-v2 type="graduatedSymbol" attr="solar_mean_kwh_m2" graduatedMethod="GraduatedColor" '
        'symbollevels="0" enableorderby="0" forceraster="0">\n'
        f"    <ranges>\n{ranges}    </ranges>\n"
        f"    <symbols>\n{syms}    </symbols>\n"
        "  </renderer-v2>\n"
        "  <layerGeometryType>2</layerGeometryType>\n"
        "</qgis>\n"
    )


def write_float_cog(bands: list[np.ndarray], names: list[str], grid, path: Path) -> None:
    """float32 bands (NaN = no data) as a Cloud Optimized GeoTIFF (DEFLATE, predictor 3, overviews),
    through a temporary GeoTIFF beside `path`."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    path.parent.mkdir(parents=True, exist_ok=True)
    src_tmp = path.with_name(f".{path.name}.src.tif")
    tmp = path.with_name(f".{path.name}.tmp")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    try:
        with rasterio.open(src_tmp, "w", **profile) as ds:
            for i, (b, name) in enumerate(zip(bands, names, strict=True), start=1):
                ds.write(b.astype(np.float32), i)
                ds.set_band_description(i, name)
        with rasterio.open(src_tmp) as src:
            rio_copy(
                src,
                str(tmp),
                driver="COG",
                compress="DEFLATE",
                predictor=3,
                blocksize=256,
                overview_resampling="average",
            )
        tmp.replace(path)
    finally:
        src_tmp.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def build_solar_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    lay = ctx.cfg.layers.solar
    if not lay.enabled:
        return []
    if not ctx.cfg.sources.aerial and not ctx.cfg.sources.dgm:
        ctx.warn("solar: no aerial point cloud and no DGM: no surface model, solar potential skipped")
        return []
    t0 = time.perf_counter()
    with ctx.stage("overlays.solar"):
        res = _build(ctx, previous, lay)
    res.seconds = time.perf_counter() - t0
    return [res]


def _district_lat_lon(ctx: BuildContext, bounds: tuple[float, float, float, float]) -> tuple[float, float]:
    from pyproj import Transformer

    tr = Transformer.from_crs(ctx.cfg.crs.horizontal, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    return float(lat), float(lon)


def _build(ctx: BuildContext, previous: list[LayerResult], lay: SolarLayer) -> LayerResult:
    import pandas as pd

    from pipeline.orchestrate.overlays import (
        analysis_grid,
        embed_styles,
        read_buildings,
        surface,
        write_vector,
    )
    from pipeline.stages.change import label_grid
    from pipeline.stages.solar import (
        compose_surface,
        irradiation,
        plane_gradient,
        roof_statistics,
        sun_samples,
        surface_gradient,
    )

    warnings: list[str] = []
    surf = analysis_grid(ctx, lay.raster_res_m)
    grid = surf.grid
    res = grid.res
    point_dsm = (
        surface(ctx, len(ctx.cfg.sources.aerial) - 1, grid)
        if ctx.cfg.sources.aerial
        else np.full((grid.height, grid.width), np.nan, dtype=np.float32)
    )
    buildings: gpd.GeoDataFrame | None = None
    bsource = "none"
    if ctx.cfg.sources.cadastre or (ctx.release_dir / "buildings" / "buildings.gpkg").is_file():
        buildings, bsource = read_buildings(ctx, previous)
        buildings = buildings[buildings.geometry.notna() & ~buildings.geometry.is_empty].reset_index(
            drop=True
        )
    if buildings is not None and len(buildings):
        labels = label_grid(buildings.geometry.to_numpy(), grid.transform, (grid.height, grid.width)) - 1
        roof = (
            pd.to_numeric(buildings["roof_height"], errors="coerce").to_numpy(dtype=np.float64)
            if "roof_height" in buildings
            else np.full(len(buildings), np.nan)
        )
    else:
        labels = np.full((grid.height, grid.width), -1, dtype=np.int32)
        roof = np.zeros(0)
    dsm, filled = compose_surface(point_dsm, surf.dtm, labels, roof)
    if not ctx.cfg.sources.aerial:
        warnings.append("solar: no aerial point cloud: surface = terrain and LoD1 roof heights (flat roofs)")
    params = solar_params(lay)
    lat, lon = _district_lat_lon(ctx, grid.bounds)
    samples = sun_samples(params, lat, lon)
    grad = surface_gradient(dsm, res, labels)
    planes = _lod2_planes(ctx, lay, grid, warnings)
    if planes is not None:
        grad = plane_gradient(planes["index"], planes["a"], planes["b"], grad)
    roof_cells = labels >= 0 if planes is None else (labels >= 0) | (planes["index"] >= 0)
    if lay.cells == "roofs" and not roof_cells.any():
        warnings.append(
            "solar: no building footprints or LoD2 roofs in the district: no roof cells to compute"
        )
    mask = roof_cells if lay.cells == "roofs" else None
    irr = irradiation(dsm, res, grad, samples, params, mask=mask)

    out = ctx.release_dir / "solar"
    cog = out / "solar_irradiation.tif"
    write_float_cog([irr.global_kwh, irr.sky_view], ["global_kwh_m2", "sky_view"], grid, cog)
    files = [cog]
    stats_b: dict = {}
    gpkg = out / "solar.gpkg"
    qml = solar_qml()
    styled: dict[str, str] = {}
    if buildings is not None and len(buildings):
        st = roof_statistics(labels, irr, res, len(buildings))
        cols = {
            "oid": buildings["oid"].astype(str).to_numpy()
            if "oid" in buildings
            else np.arange(len(buildings)),
            "solar_mean_kwh_m2": np.round(st["mean_kwh_m2"], 1),
            "solar_total_mwh": np.round(st["total_kwh"] / 1000.0, 3),
            "solar_roof_area_m2": np.round(st["area_m2"], 2),
            "solar_slope_deg": np.round(st["slope_deg"], 1),
            "solar_aspect_deg": np.round(st["aspect_deg"], 1),
            "solar_sky_view": np.round(st["sky_view"], 3),
            "solar_cells": st["cells"],
        }
        table = gpd.GeoDataFrame(cols, geometry=buildings.geometry.to_numpy(), crs=buildings.crs)
        files += write_vector(table, gpkg, "solar_buildings")
        styled["solar_buildings"] = qml
        m = st["mean_kwh_m2"][np.isfinite(st["mean_kwh_m2"])]
        no_cells = int((st["cells"] == 0).sum())
        if no_cells:
            warnings.append(
                f"solar: {no_cells} footprints hold no cell centre of the {res} m grid (no value)"
            )
        stats_b = {
            "buildings": len(buildings),
            "buildings_with_value": int(m.size),
            "roof_mean_kwh_m2_median": round(float(np.median(m)), 1) if m.size else None,
            "roof_total_mwh": round(float(np.nansum(st["total_kwh"])) / 1000.0, 1),
        }
    if planes is not None:
        surfaces = _surface_table(planes, irr, res)
        files += write_vector(surfaces, gpkg, "solar_roof_surfaces")
        styled["solar_roof_surfaces"] = qml
        ms = surfaces["solar_mean_kwh_m2"].to_numpy(dtype=np.float64)
        stats_b["roof_surfaces"] = len(surfaces)
        stats_b["roof_surfaces_with_value"] = int(np.isfinite(ms).sum())
    if styled:
        embed_styles(gpkg, styled)
        (out / "solar.qml").write_text(qml, encoding="utf-8")
        files.append(out / "solar.qml")
    stats = {
        "buildings_source": bsource,
        "resolution_m": res,
        "cells": lay.cells,
        "cells_computed": int(np.isfinite(irr.global_kwh).sum()),
        "surface_cells": filled,
        "lat": round(lat, 5),
        "lon": round(lon, 5),
        "unshaded_horizontal_kwh_m2": round(samples.global_wh / 1000.0, 1),
        "sky": "clear (ESRA)" if lay.sky_factors is None else "scaled by sky_factors",
        "sun_samples": len(samples.vec),
        "roof_planes": "none" if planes is None else f"official_lod2 ({len(planes['a'])} roof surfaces)",
        **stats_b,
    }
    rel = sorted({f.relative_to(ctx.release_dir).as_posix() for f in files})
    return LayerResult(
        name="solar", kind="overlay", access=lay.access, files=rel, stats=stats, warnings=warnings
    )


def _lod2_planes(ctx: BuildContext, lay: SolarLayer, grid, warnings: list[str]) -> dict | None:
    """Roof planes of the official LoD2 model on the grid: plane index per cell and (a, b, c) per roof
    polygon, with the polygons; None without a model (or with `roof_planes: surface`)."""
    if lay.roof_planes != "official_lod2" or not ctx.cfg.sources.reference_citygml:
        return None
    from pipeline.sources.cadastre.citygml import read_lod2
    from pipeline.stages.solar import planes_from_polygons, rasterise_planes

    files = [i.path for i in ctx.inputs_for("reference")]
    if not files:
        warnings.append("solar: sources.reference_citygml has no files: slopes from the surface model")
        return None
    model = read_lod2(files, crs_cfg=ctx.cfg.crs)
    roofs = model.surfaces[model.surfaces["semantic"] == "roof"].reset_index(drop=True)
    a, b, c = planes_from_polygons(roofs.geometry.to_numpy())
    ok = np.isfinite(a)
    if (~ok).any():
        warnings.append(f"solar: {int((~ok).sum())} LoD2 roof polygons are vertical or degenerate: no plane")
    roofs = roofs[ok].reset_index(drop=True)
    a, b, c = a[ok], b[ok], c[ok]
    index = rasterise_planes(
        roofs.geometry.to_numpy(), roofs["mean_z"].to_numpy(), grid.transform, (grid.height, grid.width)
    )
    if not (index >= 0).any():
        warnings.append("solar: no LoD2 roof surface lies in the district: slopes from the surface model")
        return None
    return {"index": index, "a": a, "b": b, "c": c, "surfaces": roofs}


def _surface_table(planes: dict, irr, res: float) -> gpd.GeoDataFrame:
    """One row per LoD2 roof polygon: slope and aspect of its plane, its 3D area, the mean irradiation of
    its cells and the total over its area (NaN when no cell centre falls in it)."""
    from pipeline.stages.solar import roof_statistics

    roofs = planes["surfaces"]
    st = roof_statistics(planes["index"], irr, res, len(roofs))
    a, b = planes["a"], planes["b"]
    slope = np.degrees(np.arctan(np.hypot(a, b)))
    aspect = np.where(slope > 1e-6, np.degrees(np.arctan2(a, b) + np.pi) % 360.0, np.nan)
    area = roofs["area"].to_numpy(dtype=np.float64)
    return gpd.GeoDataFrame(
        {
            "building_oid": roofs["building_oid"].astype(str).to_numpy(),
            "oid": roofs["oid"].astype(str).to_numpy(),
            "surface_id": roofs["surface_id"].astype(str).to_numpy(),
            "polygon_id": roofs["polygon_id"].astype(str).to_numpy(),
            "solar_mean_kwh_m2": np.round(st["mean_kwh_m2"], 1),
            "solar_total_mwh": np.round(st["mean_kwh_m2"] * area / 1000.0, 3),
            "solar_area_m2": np.round(area, 2),
            "solar_slope_deg": np.round(slope, 1),
            "solar_aspect_deg": np.round(aspect, 1),
            "solar_sky_view": np.round(st["sky_view"], 3),
            "solar_cells": st["cells"],
        },
        geometry=shapely.force_2d(roofs.geometry.to_numpy()),  # plan polygon; the plane is in the columns
        crs=roofs.crs,
    )
