"""Layer `model_check`: the outdated-model check (pipeline.stages.buildings.model_check) in a release.

Reads the buildings layer's `buildings/buildings.gpkg` (roofs reconstructed from the newest survey
epoch) and `rejected.csv`, and the official LoD2 model (`sources.reference_citygml`, the project's own
streaming CityGML reader, heights through the geoid like every other source). Writes
`model_check/model_check.gpkg` (layer `model_check`, one row per building, QGIS style by class embedded
and as `model_check.qml`; layer `model_check_planes`, one row per official roof plane of a joined
building with its height difference to the reconstructed roof, from the buildings layer's `roof_faces`); counts per class in the layer stats (and the build report).

Skipped (no warning) without `sources.reference_citygml`; a warning when the glob matches no file or
the buildings layer is missing. `layers.buildings.lod2_source: official` is refused (ConfigError): the
roofs would be the official ones and the check would compare the model with itself.
"""

from __future__ import annotations

import csv
import time

import geopandas as gpd
import shapely
from shapely.geometry import MultiPolygon, Polygon

from pipeline.errors import ConfigError
from pipeline.model import BuildContext, LayerResult

OUT = "model_check"
LAYER = "model_check"
PLANES_LAYER = "model_check_planes"


def model_check_qml() -> str:
    from pipeline.styles import palettes as P
    from pipeline.styles.qml import categorized

    return categorized(
        "RuhrTwin outdated-model check: buildings by class (palette pipeline.styles.palettes.MODEL_CHECK)",
        P.MODEL_CHECK_PROPERTY,
        P.MODEL_CHECK,
    )


def build_model_check_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    lay = ctx.cfg.layers.model_check
    if not lay.enabled or not ctx.cfg.sources.reference_citygml:
        return []
    if ctx.cfg.layers.buildings.lod2_source == "official":
        raise ConfigError(
            "layers.model_check needs roofs reconstructed from the survey, but layers.buildings.lod2_source "
            "is 'official' (the check would compare the official model with itself): set it to 'points' "
            "or disable layers.model_check"
        )
    files = [i.path for i in ctx.inputs_for("reference")]
    bpath = ctx.release_dir / "buildings" / "buildings.gpkg"
    if not files:
        ctx.warn(
            f"model_check skipped: sources.reference_citygml matches no file ({ctx.cfg.sources.reference_citygml!r})"
        )
        return []
    if not bpath.is_file():
        ctx.warn("model_check skipped: no buildings layer in this release (layers.buildings)")
        return []
    t0 = time.perf_counter()
    with ctx.stage("model_check"):
        res = _build(ctx, files, lay)
    res.seconds = time.perf_counter() - t0
    return [res]


def _build(ctx: BuildContext, files, lay) -> LayerResult:
    from pipeline.orchestrate.overlays import write_vector
    from pipeline.sources.cadastre.citygml import read_lod2
    from pipeline.stages.buildings.model_check import (
        CheckParams,
        check_model,
        class_counts,
        joined_pairs,
        plane_differences,
    )
    from pipeline.styles.gpkg import write_styles

    bdir = ctx.release_dir / "buildings"
    buildings = gpd.read_file(bdir / "buildings.gpkg", layer="buildings")
    rejected: set[str] = set()
    rpath = bdir / "rejected.csv"
    if rpath.is_file():
        with rpath.open(encoding="utf-8", newline="") as fh:
            rejected = {row["id"] for row in csv.DictReader(fh) if row.get("id")}
    model = read_lod2(files, crs_cfg=ctx.cfg.crs)
    official = model.buildings
    if official.crs is None and buildings.crs is not None:
        official = official.set_crs(buildings.crs)
    elif buildings.crs is not None and official.crs != buildings.crs:
        official = official.to_crs(buildings.crs)
    warnings = [
        f"model_check: official LoD2 building rejected: {r.file}: {r.id}: {r.reason}"
        for r in model.rejected[:20]
    ]
    if len(model.rejected) > 20:
        warnings.append(f"model_check: ... {len(model.rejected) - 20} more rejected official buildings")
    params = CheckParams(
        roof_dz_m=lay.roof_dz_m,
        footprint_min_iou=lay.footprint_min_iou,
        join_min_iou=ctx.cfg.layers.buildings.lod2_join_min_iou,
        plane_min_area_m2=lay.plane_min_area_m2,
    )
    import pyogrio

    planes = None
    if "roof_faces" in {name for name, _ in pyogrio.list_layers(bdir / "buildings.gpkg")}:
        faces = gpd.read_file(bdir / "buildings.gpkg", layer="roof_faces")
        roofs = model.surfaces[model.surfaces["semantic"].to_numpy() == "roof"]
        if roofs.crs is None:
            roofs = roofs.set_crs(buildings.crs)
        elif buildings.crs is not None and roofs.crs != buildings.crs:
            roofs = roofs.to_crs(buildings.crs)
        planes = plane_differences(roofs, faces, joined_pairs(buildings, official, params), params)
    else:
        warnings.append(
            "model_check: the buildings layer has no roof_faces (lod 1): roofs compared by height only"
        )
    table = check_model(buildings, official, params, rejected, planes=planes)
    table = table.set_geometry(
        [
            MultiPolygon([g]) if isinstance(g, Polygon) else g
            for g in shapely.force_2d(table.geometry.to_numpy())
        ],
        crs=table.crs,
    )
    out = ctx.release_dir / OUT
    out.mkdir(parents=True, exist_ok=True)
    gpkg = out / "model_check.gpkg"
    written = write_vector(table, gpkg, LAYER)
    if planes is not None:  # one row per official roof plane compared
        from pipeline.styles.gpkg import write_layer

        write_layer(planes, gpkg, PLANES_LAYER, "MultiPolygon Z")
    styles = {LAYER: model_check_qml()}
    if planes is not None:
        from pipeline.styles.qml import single

        styles[PLANES_LAYER] = single(
            "RuhrTwin official roof planes compared", (235, 160, 40, 255), (80, 50, 10, 255)
        )
    written += write_styles(gpkg, styles)
    counts = class_counts(table)
    stats = {
        "buildings": len(table),
        "official_buildings": len(official),
        "official_rejected": len(model.rejected),
        "classes": counts,
        "outdated": sum(v for k, v in counts.items() if k not in ("consistent", "unknown")),
        "roof_dz_m": lay.roof_dz_m,
        "planes_compared": int(planes["dz"].notna().sum()) if planes is not None else 0,
        "planes_changed": int(planes["changed"].sum()) if planes is not None else 0,
        "buildings_with_changed_planes": int((table["planes_changed"] > 0).sum()),
        "footprint_min_iou": lay.footprint_min_iou,
    }
    for w in warnings:
        ctx.warn(w)
    rel = sorted({f.relative_to(ctx.release_dir).as_posix() for f in written})
    return LayerResult(
        name=LAYER, kind="overlay", access=lay.access, files=rel, stats=stats, warnings=warnings
    )
