"""CityJSON 2.0 export of the buildings layer: one CityJSONSeq file per building tile
(`buildings/cityjson/<L>/<X>_<Y>.city.jsonl`, the same quadtree leaves as the 3D Tiles), one
`CityJSONFeature` per building, sorted by ALKIS id.

Geometry per building: the LoD2 solid (`solids.build_solid` over the packed roof partition, exactly as
the tile meshes are made; lod "2.2") or, for buildings that keep their LoD1 box, the footprint extruded
from `base_height` to `roof_height` (lod "1.2"). Polygons carry their surface (RoofSurface,
WallSurface, GroundSurface). A footprint of several parts gives one `BuildingPart` (Solid) per part under
a `Building` without geometry; a single part is one `Building` with its Solid.

`write_cityjson(ctx, bt, layer, partitions)` is called by `orchestrate.buildings.build_buildings`;
`cityjson_tile` (one task per tile, on the build's cluster when there is one) is a pure function of its
inputs, so the files are byte-identical across runs and between Dask and serial.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.orchestrate.blobs import BlobRef, BlobStore
from pipeline.orchestrate.executor import build_executor, dask_workers, map_ordered
from pipeline.tiles.cityjson import CityObjectSpec, SolidGeometry, cityjsonseq, feature, header

SUBDIR = "cityjson"
ROOF, WALL, GROUND = 0, 1, 2  # = solids.ROOF, WALL, GROUND = index into cityjson.SURFACE_TYPES

# buildings-table columns exported as attributes (same names as in buildings.gpkg), besides the
# CityGML-named ones (function, roofType, measuredHeight, storeysAboveGround)
ATTRIBUTE_COLUMNS = (
    "oid",
    "flstkennz",
    "funktion",
    "gfkzshh",
    "funktion_code",
    "funktion_gruppe",
    "base_height",
    "roof_height",
    "height",
    "n_points",
    "survey_epoch",
    "floors_estimate",
    "floors_is_estimate",
    "quality",
    "base_source",
    "roof_type",
    "roof_type_code",
    "roof_planes",
    "roof_slope_mean",
    "roof_slope_max",
    "roof_azimuth_main",
    "roof_planes_summary",
    "eave_height",
    "ridge_height",
    "roof_rmse",
    "roof_mean_height",
    "roof_n_points",
    "roof_n_vegetation",
    "lod2_fallback_reason",
    "lod_source",
)


def reference_system_url(crs_cfg: Any) -> tuple[str | None, str]:
    """(OGC URL of the working CRS, note). CityJSON takes one URL: the compound EPSG code when PROJ
    knows one for horizontal + vertical (e.g. 5555 = UTM 32N + DHHN92), else the horizontal code
    (25832 + DHHN2016 has no compound code; the note names the vertical CRS for the metadata title)."""
    from pipeline.crs import horizontal_of, working_crs

    crs = working_crs(crs_cfg)
    note = ""
    code = crs.to_epsg(min_confidence=100)
    if code is None:
        code = horizontal_of(crs).to_epsg(min_confidence=100)
        if crs_cfg.vertical:
            note = f"heights: {crs_cfg.vertical}"
    if code is None:
        return None, note
    return f"https://www.opengis.net/def/crs/EPSG/0/{code}", note


def _extrusion(poly: shapely.Polygon, base: float, top: float) -> SolidGeometry:
    """LoD1 box of one footprint part: ground (facing down), roof (up), one wall per ring edge."""
    poly = shapely.geometry.polygon.orient(poly, 1.0)  # exterior CCW, holes CW
    rings = [np.asarray(poly.exterior.coords)[:-1, :2]] + [
        np.asarray(r.coords)[:-1, :2] for r in poly.interiors
    ]
    verts: list[np.ndarray] = []
    lo_ids, hi_ids = [], []
    n = 0
    for r in rings:
        k = len(r)
        verts.append(np.column_stack([r, np.full(k, base)]))
        verts.append(np.column_stack([r, np.full(k, top)]))
        lo_ids.append(np.arange(n, n + k))
        hi_ids.append(np.arange(n + k, n + 2 * k))
        n += 2 * k
    polygons: list[list[np.ndarray]] = [[lo[::-1] for lo in lo_ids], list(hi_ids)]
    sem = [GROUND, ROOF]
    for lo, hi in zip(lo_ids, hi_ids, strict=True):
        for i in range(len(lo)):
            j = (i + 1) % len(lo)
            polygons.append([np.array([lo[i], lo[j], hi[j], hi[i]])])
            sem.append(WALL)
    return SolidGeometry(np.concatenate(verts), polygons, np.array(sem, dtype=np.int8), "1.2")


def _shells(solid: Any) -> list[SolidGeometry]:
    """An LoD2 solid split into its shells (polygons connected through shared vertices)."""
    npoly = len(solid.polygons)
    parent = list(range(npoly))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}  # vertex -> first polygon using it
    for p, rings in enumerate(solid.polygons):
        for r in rings:
            for v in np.asarray(r).tolist():
                q = owner.setdefault(v, p)
                if q != p:
                    rp, rq = find(p), find(q)
                    if rp != rq:
                        parent[max(rp, rq)] = min(rp, rq)
    lab = np.array([find(i) for i in range(npoly)], dtype=np.int64)
    out = []
    for comp in sorted(set(lab.tolist()), key=lambda x: int(np.flatnonzero(lab == x)[0])):
        sel = np.flatnonzero(lab == comp)
        out.append(
            SolidGeometry(
                solid.vertices, [solid.polygons[i] for i in sel], solid.semantics[sel].copy(), "2.2"
            )
        )
    return out


def building_objects(
    oid: str, footprint: shapely.Geometry, base: float, roof: float, partition: bytes, attrs: dict[str, Any]
) -> tuple[list[CityObjectSpec], str]:
    """The CityObjects of one building (main object first) and its geometry kind ('2.2', '1.2', '')."""
    if partition:
        from pipeline.stages.buildings.solids import solid_of

        shells = _shells(solid_of(partition, base))
        lod = "2.2"
    elif math.isfinite(base) and math.isfinite(roof) and roof > base + 0.01:
        # on the file's 1 mm grid first: no edge shorter than the grid becomes a degenerate wall
        snapped = shapely.set_precision(footprint, 0.001)
        parts = sorted(
            (p for p in shapely.get_parts(snapped) if isinstance(p, shapely.Polygon) and p.area > 0),
            key=lambda p: (p.representative_point().x, p.representative_point().y),
        )
        shells = [_extrusion(p, base, roof) for p in parts]
        lod = "1.2"
    else:  # no usable height: the building is listed without geometry
        shells, lod = [], ""
    if len(shells) <= 1:
        return [CityObjectSpec(oid, "Building", attrs, shells[0] if shells else None)], lod
    ids = [f"{oid}-part{k + 1}" for k in range(len(shells))]
    objs = [CityObjectSpec(oid, "Building", attrs, None, children=ids)]
    objs += [
        CityObjectSpec(i, "BuildingPart", {}, s, parents=[oid]) for i, s in zip(ids, shells, strict=True)
    ]
    return objs, lod


def cityjson_tile(
    path: str,
    oids: list[str],
    wkb: list[bytes],
    base: np.ndarray,
    roof: np.ndarray,
    partitions: list[bytes],
    attributes: list[dict[str, Any]],
    reference_system: str | None,
    title: str,
) -> dict[str, int]:
    """Write one tile's CityJSONSeq file (buildings sorted by id). Returns counts per geometry kind."""
    from pipeline.tiles.tileset import write_atomic

    geoms = shapely.from_wkb(wkb)
    order = sorted(range(len(oids)), key=lambda i: oids[i])
    b = shapely.bounds(geoms)
    z = base[np.isfinite(base)]
    translate = (
        float(math.floor(np.nanmin(b[:, 0]))) if len(b) else 0.0,
        float(math.floor(np.nanmin(b[:, 1]))) if len(b) else 0.0,
        float(math.floor(z.min())) if z.size else 0.0,
    )
    feats = []
    counts = {"2.2": 0, "1.2": 0, "": 0}
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for i in order:
        objs, lod = building_objects(
            oids[i], geoms[i], float(base[i]), float(roof[i]), partitions[i], attributes[i]
        )
        counts[lod] += 1
        for o in objs:
            if o.geometry is not None:
                used = np.unique(np.concatenate([r for p in o.geometry.polygons for r in p]))
                v = o.geometry.vertices[used]
                lo = np.minimum(lo, v.min(axis=0))
                hi = np.maximum(hi, v.max(axis=0))
        feats.append(feature(objs, translate))
    extent = (
        (float(lo[0]), float(lo[1]), float(lo[2]), float(hi[0]), float(hi[1]), float(hi[2]))
        if np.isfinite(lo).all()
        else None
    )
    head = header(translate, reference_system, title=title, extent=extent)
    write_atomic(Path(path), cityjsonseq(head, feats))
    return {"lod22": counts["2.2"], "lod12": counts["1.2"], "no_geometry": counts[""]}


def cityjson_tile_cached(cache: Any, key: str, path: str, packed: bytes) -> dict[str, int]:
    """`cityjson_tile` through the content cache; the file is hard-linked from the cache entry.
    `packed`: the pickled arguments after `path` (one bytes object: a task's arguments are hashed for
    its Dask key, and per-building attribute dicts of numpy scalars cost more to hash than to write); the
    LoD2 roofs may be a `BlobRef` into the build's spill, read here."""
    import json
    import pickle

    def build(tmp: Path) -> None:
        args: list[Any] = [a.load() if isinstance(a, BlobRef) else a for a in pickle.loads(packed)]
        counts = cityjson_tile(str(tmp / "tile.city.jsonl"), *args)
        (tmp / "counts.json").write_text(json.dumps(counts, sort_keys=True))

    entry = cache.materialize(key, build, {"tile.city.jsonl": path})
    return json.loads((entry / "counts.json").read_text())


def attribute_columns(bt: Any) -> dict[str, np.ndarray]:
    """The exported columns of the buildings table as arrays (taken once; `_attributes` per tile)."""
    return {c: bt[c].to_numpy() for c in ATTRIBUTE_COLUMNS if c in bt.columns}


def _attributes(cols: dict[str, np.ndarray], idx: Any) -> list[dict[str, Any]]:
    """The CityJSON attributes of the buildings `idx` (rows of `attribute_columns`)."""
    out = []
    for i in idx:
        a = {c: v[i] for c, v in cols.items()}
        for c, v in list(a.items()):
            if isinstance(v, str) and v == "" and c != "lod2_fallback_reason":
                a.pop(c)
        a["function"] = a.get("gfkzshh") or (str(a["funktion_code"]) if a.get("funktion_code") else None)
        if a.get("roof_type_code"):
            a["roofType"] = str(a["roof_type_code"])
        ridge = a.get("ridge_height")
        lod2 = a.get("lod_source") in ("reconstructed", "official")
        a["measuredHeight"] = (
            float(ridge) - float(a["base_height"]) if lod2 and ridge is not None else a.get("height")
        )
        if a.get("floors_is_estimate") is False and a.get("floors_estimate") is not None:
            a["storeysAboveGround"] = int(a["floors_estimate"])
        out.append(a)
    return out


def write_cityjson(
    ctx: Any, bt: Any, layer: Any, partitions: BlobStore | None, out_dir: Path
) -> tuple[list[str], dict[str, Any]]:
    """One `.city.jsonl` per building tile under `out_dir/cityjson/`. `partitions`: the packed LoD2
    solids per building (b"" = LoD1 box) or None (LoD1). Returns (release-relative file names, stats)."""
    from pipeline.stages.buildings.tiling import build_quadtree

    geoms = np.asarray(bt.geometry.values, dtype=object)
    rep = shapely.point_on_surface(geoms)
    root = build_quadtree(
        shapely.get_x(rep),
        shapely.get_y(rep),
        max_features=layer.max_features_per_tile,
        max_leaf_m=layer.max_leaf_m,
    )
    leaves = [leaf for leaf in root.leaves() if len(leaf.indices)]
    refsys, note = reference_system_url(ctx.cfg.crs)
    title = f"{ctx.cfg.name} buildings ({note})" if note else f"{ctx.cfg.name} buildings"
    oids = [str(s) for s in bt["oid"].to_numpy()]
    if len(set(oids)) != len(oids):
        from pipeline.errors import ValidationError

        dup = sorted({o for o in oids if oids.count(o) > 1})[:3]
        raise ValidationError(f"buildings: CityJSON needs unique ids, oid repeated: {dup}")
    wkb = shapely.to_wkb(geoms)
    base = bt["base_height"].to_numpy(dtype=np.float64)
    roof = bt["roof_height"].to_numpy(dtype=np.float64)
    cols = attribute_columns(bt)
    names = [f"{SUBDIR}/{leaf.level}/{leaf.x}_{leaf.y}.city.jsonl" for leaf in leaves]

    def tile_args(k: int, parts: Any) -> tuple[Any, ...]:
        """The arguments of leaf k's file after its path (its LoD2 roofs as given: bytes or a BlobRef)."""
        m = leaves[k].indices
        return (
            [oids[i] for i in m],
            list(wkb[m]),
            base[m],
            roof[m],
            parts if parts is not None else [b""] * len(m),
            _attributes(cols, m),
            refsys,
            title,
        )

    # incremental: a tile is cached by its content (ids, footprints, heights, partitions, attributes,
    # CRS, title); unchanged tiles are hard-linked from the cache, not rebuilt. One tile's arguments at a
    # time here (the LoD2 roofs read from the spill for the key), at most 4 x workers tasks submitted at a
    # time (each reads its roofs itself): this process never holds all tiles' data.
    import pickle

    from pipeline.orchestrate.cache import build_cache

    cache = build_cache(ctx)
    keys: list[str] = []
    results: list[Any] = [None] * len(leaves)
    misses = []
    for t, leaf in enumerate(leaves):
        a = tile_args(t, partitions.take(leaf.indices) if partitions is not None else None)
        keys.append(cache.key(["buildings-cityjson-v1", *a]))
        if cache.get(keys[t]) is not None:
            results[t] = cityjson_tile_cached(
                cache, keys[t], str(out_dir / names[t]), pickle.dumps(a, protocol=5)
            )
        else:
            misses.append(t)
    executor = build_executor(ctx.client) if len(misses) > 1 else None

    def item(j: int) -> tuple[Any, ...]:  # made when submitted
        k = misses[j]
        parts = partitions.ref(leaves[k].indices) if partitions is not None else None
        return (cache, keys[k], str(out_dir / names[k]), pickle.dumps(tile_args(k, parts), protocol=5))

    window = 4 * dask_workers(ctx.client) if ctx.client is not None else None
    done = map_ordered(
        executor,
        cityjson_tile_cached,
        (item(i) for i in range(len(misses))),
        name="cityjson",
        total=len(misses),
        window=window,
    )
    for i, r in zip(misses, done, strict=True):
        results[i] = r
    stats: dict[str, Any] = {"files": len(leaves), "reference_system": refsys}
    for k in ("lod22", "lod12", "no_geometry"):
        stats[k] = int(sum(r[k] for r in results))
    return names, stats
