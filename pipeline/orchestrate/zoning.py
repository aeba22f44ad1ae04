"""Zoning-plan layer: XPlanGML Bebauungspläne checked against the parcels and buildings.

    build_zoning_layers(ctx, previous) -> [zoning overlay]

Inputs: the plan files of `layers.zoning.paths` (role "zoning"), the cadastre's parcels and the buildings
layer's footprints with heights (`buildings/buildings.gpkg`; without it, the cadastre's footprints and no
height checks). Output `overlays/zoning.gpkg` with the layers `zoning_parcels`, `zoning_buildings`
(status, violations, reasons, measured and permitted values), `plan_areas`, `plan_lines` and `plans`, each
with a QML style beside it and in the GeoPackage's `layer_styles`; `overlays/zoning/tileset.json`: the
buildings as prisms coloured by status, with their status, violations and reasons as properties, and
`overlays/zoning/style.json` (the status palette: the viewer's colours and legend).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypeVar

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config.model import ZoningLayer
from pipeline.model import BuildContext, LayerResult
from pipeline.stages.zoning import STATUS_COLOURS, STATUS_LABELS, ZoningParams

LAYER_NAMES = ("zoning_parcels", "zoning_buildings", "plan_areas", "plan_lines", "plans")


def zoning_params(layer: ZoningLayer) -> ZoningParams:
    return ZoningParams(
        grz_tolerance=layer.grz_tolerance,
        gfz_tolerance=layer.gfz_tolerance,
        area_tolerance_m2=layer.area_tolerance_m2,
        height_tolerance_m=layer.height_tolerance_m,
        storeys_tolerance=layer.storeys_tolerance,
        buildable_tolerance_m=layer.buildable_tolerance_m,
        min_outside_area_m2=layer.min_outside_area_m2,
        min_zoned_share=layer.min_zoned_share,
        min_overlap_m2=layer.min_overlap_m2,
        top_statistic=layer.top_statistic,
        eaves_statistic=layer.eaves_statistic,
        flat_roof_spread_m=layer.flat_roof_spread_m,
        floor_height_m=layer.floor_height_m,
        judge_estimated_storeys=layer.judge_estimated_storeys,
        ground_references=tuple(layer.ground_references),
        absolute_references=tuple(layer.absolute_references),
        binding_rechtscharakter=tuple(layer.binding_rechtscharakter),
    )


# ---- QGIS styles (generated from the status palette of pipeline.stages.zoning) ----------------------------


def _fill(name: str, rgba: tuple[int, int, int, int], alpha: int) -> str:
    r, g, b, _a = rgba
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        '          <Option type="Map">\n'
        f'            <Option type="QString" name="color" value="{r},{g},{b},{alpha}"/>\n'
        f'            <Option type="QString" name="outline_color" value="{r},{g},{b},255"/>\n'
        '            <Option type="QString" name="outline_style" value="solid"/>\n'
        '            <Option type="QString" name="outline_width" value="0.4"/>\n'
        '            <Option type="QString" name="outline_width_unit" value="MM"/>\n'
        '            <Option type="QString" name="style" value="solid"/>\n'
        "          </Option>\n"
        "        </layer>\n"
        "      </symbol>\n"
    )


def status_qml(title: str, alpha: int) -> str:
    """Categorised fill style on `status` (within / exceeds / below_minimum / cannot_judge)."""
    cats = "".join(
        f'      <category render="true" value="{s}" symbol="{k}" label="{STATUS_LABELS[s]}"/>\n'
        for k, s in enumerate(STATUS_COLOURS)
    )
    syms = "".join(_fill(str(k), STATUS_COLOURS[s], alpha) for k, s in enumerate(STATUS_COLOURS))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.34.0" styleCategories="Symbology">\n'
        f"  <!-- RuhrTwin {title}: status against the zoning plan (pipeline.stages.zoning.STATUS_COLOURS) -->\n"
        '  <renderer-v2 type="categorizedSymbol" attr="status" symbollevels="0" enableorderby="0" '
        'forceraster="0">\n'
        f"    <categories>\n{cats}    </categories>\n"
        f"    <symbols>\n{syms}    </symbols>\n"
        "  </renderer-v2>\n"
        "  <layerGeometryType>2</layerGeometryType>\n"
        "</qgis>\n"
    )


def plan_qml(kind_colours: dict[str, tuple[int, int, int]], geometry_type: int, title: str) -> str:
    """Categorised outline style on `kind` (plan areas: building / buildable areas; lines: Baugrenze /
    Baulinie)."""
    cats = "".join(
        f'      <category render="true" value="{k}" symbol="{i}" label="{k}"/>\n'
        for i, k in enumerate(kind_colours)
    )
    syms = []
    for i, (_k, (r, g, b)) in enumerate(kind_colours.items()):
        if geometry_type == 2:
            syms.append(_fill(str(i), (r, g, b, 255), 0))
        else:
            syms.append(
                f'      <symbol type="line" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
                '        <layer class="SimpleLine" enabled="1" pass="0" locked="0">\n'
                '          <Option type="Map">\n'
                f'            <Option type="QString" name="line_color" value="{r},{g},{b},255"/>\n'
                '            <Option type="QString" name="line_width" value="0.6"/>\n'
                '            <Option type="QString" name="line_width_unit" value="MM"/>\n'
                f'            <Option type="QString" name="line_style" value="{"dash" if i else "solid"}"/>\n'
                "          </Option>\n"
                "        </layer>\n"
                "      </symbol>\n"
            )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.34.0" styleCategories="Symbology">\n'
        f"  <!-- RuhrTwin {title} -->\n"
        '  <renderer-v2 type="categorizedSymbol" attr="kind" symbollevels="0" enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{cats}    </categories>\n"
        f"    <symbols>\n{''.join(syms)}    </symbols>\n"
        "  </renderer-v2>\n"
        f"  <layerGeometryType>{geometry_type}</layerGeometryType>\n"
        "</qgis>\n"
    )


def status_style() -> dict:
    """3D Tiles style of the zoning overlay: buildings by `status` in the status palette (viewer legend)."""
    from pipeline.styles.palettes import ClassEntry, tiles_style

    entries = tuple(ClassEntry(s, STATUS_LABELS[s], rgba) for s, rgba in STATUS_COLOURS.items())
    return tiles_style("status", entries, other=(255, 255, 255, 255), title="zoning status")


def styles() -> dict[str, str]:
    return {
        "zoning_parcels": status_qml("zoning check per parcel", 150),
        "zoning_buildings": status_qml("zoning check per building", 220),
        "plan_areas": plan_qml(
            {"building_area": (31, 120, 180), "buildable_area": (230, 85, 13)}, 2, "zoning plan areas"
        ),
        "plan_lines": plan_qml({"baugrenze": (0, 0, 255), "baulinie": (200, 0, 0)}, 1, "building lines"),
        "plans": plan_qml({"": (80, 80, 80)}, 2, "zoning plan scopes"),
    }


# ---- layer ----------------------------------------------------------------------------------------------


_Frame = TypeVar("_Frame", bound=pd.DataFrame)


def _round(df: _Frame) -> _Frame:
    out = df.copy()
    for c in out.columns:
        if c != "geometry" and out[c].dtype.kind == "f":
            out[c] = out[c].round(4)
    return out


def build_zoning_layers(ctx: BuildContext, previous: list[LayerResult]) -> list[LayerResult]:
    cfg = ctx.cfg
    lay = cfg.layers.zoning
    if not lay.enabled or not lay.paths:
        return []
    if not cfg.sources.cadastre:
        ctx.warn("zoning: no cadastre configured (parcels and footprints); zoning checks skipped")
        return []
    t0 = time.perf_counter()
    with ctx.stage("overlays.zoning"):
        res = _build(ctx, previous, lay)
    res.seconds = time.perf_counter() - t0
    return [res]


def _build(ctx: BuildContext, previous: list[LayerResult], lay: ZoningLayer) -> LayerResult:
    from pipeline.orchestrate.overlays import embed_styles, read_buildings, read_parcels_for, write_vector
    from pipeline.sources.xplan import read_plans
    from pipeline.stages.zoning import check_zoning

    cfg = ctx.cfg
    warnings: list[str] = []
    files = [i.path for i in ctx.inputs_for("zoning")]
    plans = read_plans(files, cfg.crs.horizontal, crs_override=lay.crs, arc_tolerance_m=lay.arc_tolerance_m)
    warnings += plans.warnings
    parcels = read_parcels_for(ctx)
    buildings, bsource = read_buildings(ctx, previous)
    if "height" not in buildings:
        warnings.append(
            "buildings layer output not found: heights and storeys of the buildings are not judged"
        )
    result = check_zoning(parcels, buildings, plans.areas, plans.plans, zoning_params(lay), lines=plans.lines)

    out = ctx.release_dir / "overlays"
    gpkg = out / "zoning.gpkg"
    layers: dict[str, gpd.GeoDataFrame] = {
        "zoning_parcels": result.parcels,
        "zoning_buildings": result.buildings,
        "plan_areas": plans.areas,
        "plan_lines": plans.lines,
        "plans": plans.plans[plans.plans.geometry.notna()],
    }
    files_out: list[Path] = []
    qml = styles()
    written: dict[str, str] = {}
    for name in LAYER_NAMES:
        g = layers[name]  # an empty layer is written too: geometry type and CRS declared
        geometry_type = "MultiLineString" if name == "plan_lines" else "MultiPolygon"
        files_out += write_vector(_round(g), gpkg, name, geometry_type=geometry_type)
        p = out / f"{name}.qml"
        p.write_text(qml[name], encoding="utf-8")
        files_out.append(p)
        written[name] = qml[name]
    if written:
        embed_styles(gpkg, written)
    rel = sorted({f.relative_to(ctx.release_dir).as_posix() for f in files_out})
    tileset = _tiles(ctx, result.buildings, buildings, rel)

    def counts(df: pd.DataFrame) -> dict[str, int]:
        vc = df["status"].value_counts().to_dict() if len(df) else {}
        return {s: int(vc.get(s, 0)) for s in STATUS_COLOURS}

    kinds: dict[str, int] = {}
    for v in result.buildings["violation_kinds"].tolist() + result.parcels["violation_kinds"].tolist():
        for k in filter(None, str(v).split("|")):
            kinds[k] = kinds.get(k, 0) + 1
    stats = {
        "plans": len(plans.plans),
        "plan_areas": len(plans.areas),
        "plan_lines": len(plans.lines),
        "buildings_source": bsource,
        "parcels": counts(result.parcels),
        "buildings": counts(result.buildings),
        "violations_by_kind": dict(sorted(kinds.items())),
        "skipped_plan_objects": plans.skipped,
    }
    return LayerResult(
        name="zoning",
        kind="overlay",
        access=lay.access,
        tileset=tileset,
        style="overlays/zoning/style.json" if tileset else None,
        files=rel,
        stats=stats,
        warnings=warnings,
    )


def _tiles(
    ctx: BuildContext, checked: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame, rel: list[str]
) -> str | None:
    """Buildings as prisms from base to roof, coloured by status (none without measured heights)."""
    from pipeline.orchestrate.overlays import write_feature_tiles
    from pipeline.stages.overlays.mesh import prisms
    from pipeline.tiles.tileset import write_json

    if not len(checked) or "base_height" not in buildings or "roof_height" not in buildings:
        return None
    b = buildings[buildings.geometry.notna() & ~buildings.geometry.is_empty].reset_index(drop=True)
    base = pd.to_numeric(b["base_height"], errors="coerce").to_numpy(dtype=np.float64)
    top = pd.to_numeric(b["roof_height"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(base) & np.isfinite(top) & (top > base)
    if not ok.any():
        return None
    mesh = prisms(checked.geometry.to_numpy()[ok], base[ok], top[ok])
    if not len(mesh.triangles):
        return None
    table = checked[ok].reset_index(drop=True)
    # a string column that is empty in a whole tile would be a zero-length glTF buffer view (invalid)
    for c in ("violations", "reasons", "plan_id"):
        if c in table:
            table[c] = table[c].replace("", "-")
    cols = [
        c
        for c in (
            "oid",
            "status",
            "violations",
            "reasons",
            "plan_id",
            "top_m",
            "storeys",
            "fh_max",
            "gh_max",
            "z_max",
        )
        if c in table
    ]
    colours = np.array([STATUS_COLOURS[s] for s in table["status"]], dtype=np.uint8)
    _ts, tfiles = write_feature_tiles(
        ctx,
        ctx.release_dir / "overlays" / "zoning",
        mesh,
        table,
        colours,
        class_id="zoning_building",
        columns=cols,
        height_crs=ctx.cfg.crs.compound,
        unlit=False,
    )
    tileset = "overlays/zoning/tileset.json"
    # the viewer's legend and colours: the status palette the tiles carry (replaced, never multiplied)
    write_json(ctx.release_dir / "overlays" / "zoning" / "style.json", status_style())
    rel += [f"overlays/zoning/{f}" for f in tfiles] + [tileset, "overlays/zoning/style.json"]
    return tileset
