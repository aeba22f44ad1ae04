"""Terrain and imagery: raster checks, LOD mesh tileset, heights vs DGM + geoid, XYZ pyramid, COG."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests import _overlay_district as district

# ---- rasters: CRS / resolution checks --------------------------------------------------------------


def _write(
    path: Path, data: np.ndarray, x0: float, y1: float, res: float, crs: str | None, nodata=None
) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(x0, y1, res, res),
        nodata=nodata,
    ) as ds:
        ds.write(data, 1)
    return path


def _analytic_tile(path: Path, x0: float, y1: float, res: float, n: int) -> Path:
    c = (np.arange(n) + 0.5) * res
    gx, gy = np.meshgrid(x0 + c, y1 - c)
    return _write(path, district.dgm_height(gx, gy).astype("float32"), x0, y1, res, "EPSG:25832")


def test_mosaic_of_tiles_matches_analytic(tmp_path):
    from pipeline.sources.rasters import Grid, delivery_bounds, read_grid, scan_rasters

    x0, y0 = district.X0, district.Y0
    files = [
        _analytic_tile(tmp_path / f"t{i}{j}.tif", x0 + 50 * i, y0 + 50 * (j + 1), 1.0, 50)
        for i in range(2)
        for j in range(2)
    ]
    infos = scan_rasters(files, working_crs="EPSG:25832")
    assert delivery_bounds(infos, "EPSG:25832") == (x0, y0, x0 + 100, y0 + 100)
    grid = Grid.from_bounds((x0 + 10, y0 + 10, x0 + 90, y0 + 90), 1.0, "EPSG:25832")
    r = read_grid(infos, grid)
    gx, gy = grid.cell_centres()
    assert r.valid.all()
    np.testing.assert_allclose(r.data[0], district.dgm_height(gx, gy), atol=1e-4)


def test_tile_in_other_crs_is_reprojected_or_refused(tmp_path):
    from rasterio.warp import calculate_default_transform, reproject

    from pipeline.errors import CrsError
    from pipeline.sources.rasters import Grid, read_grid, scan_rasters

    x0, y0 = district.X0, district.Y0
    src = _analytic_tile(tmp_path / "utm.tif", x0, y0 + 100, 1.0, 100)
    # the same tile delivered in ETRS89 / UTM 33N (EPSG:25833)
    with rasterio.open(src) as ds:
        t, w, h = calculate_default_transform(
            ds.crs, "EPSG:25833", ds.width, ds.height, *ds.bounds, resolution=1.0
        )
        out = np.full((h, w), -9999, dtype="float32")
        reproject(
            rasterio.band(ds, 1),
            out,
            dst_transform=t,
            dst_crs="EPSG:25833",
            dst_nodata=-9999,
            resampling=rasterio.enums.Resampling.bilinear,
        )
    other = tmp_path / "zone33.tif"
    with rasterio.open(
        other,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="float32",
        crs="EPSG:25833",
        transform=t,
        nodata=-9999,
    ) as ds:
        ds.write(out, 1)

    with pytest.raises(CrsError) as e:
        scan_rasters([other], working_crs="EPSG:25832", on_mismatch="error")
    msg = str(e.value)
    assert "zone33.tif" in msg and "25833" in msg and "EPSG:25832" in msg

    infos = scan_rasters([other], working_crs="EPSG:25832")
    assert infos[0].reproject
    grid = Grid.from_bounds((x0 + 20, y0 + 20, x0 + 80, y0 + 80), 1.0, "EPSG:25832")
    r = read_grid(infos, grid)
    gx, gy = grid.cell_centres()
    ok = r.valid
    assert ok.mean() > 0.95
    # two bilinear resamplings of a smooth surface: centimetres
    assert np.abs(r.data[0][ok] - district.dgm_height(gx, gy)[ok]).max() < 0.05


def test_resolution_mismatch_and_missing_crs(tmp_path):
    from pipeline.errors import CrsError, InputError
    from pipeline.sources.rasters import scan_rasters

    x0, y0 = district.X0, district.Y0
    a = _analytic_tile(tmp_path / "a.tif", x0, y0 + 50, 1.0, 50)
    b = _analytic_tile(tmp_path / "b.tif", x0 + 50, y0 + 50, 2.0, 25)
    with pytest.raises(InputError) as e:
        scan_rasters([a, b], working_crs="EPSG:25832", on_mismatch="error")
    assert "b.tif" in str(e.value) and "resolution 2" in str(e.value)
    infos = scan_rasters([a, b], working_crs="EPSG:25832")
    assert [i.reproject for i in infos] == [False, True]

    nocrs = _write(tmp_path / "nocrs.tif", np.zeros((10, 10), "float32"), x0, y0 + 10, 1.0, None)
    with pytest.raises(CrsError) as e:
        scan_rasters([nocrs], working_crs="EPSG:25832")
    assert "nocrs.tif" in str(e.value) and "no CRS" in str(e.value)
    # an explicit override is accepted
    assert (
        scan_rasters([nocrs], working_crs="EPSG:25832", crs_override="EPSG:25832")[0].crs.to_epsg() == 25832
    )


def test_rasterise_matches_reference():
    from pipeline.sources.rasters import Grid
    from pipeline.stages.terrain.rasterise import cell_stat, cell_stat_reference

    rng = np.random.default_rng(3)
    grid = Grid.from_bounds((0, 0, 10, 8), 1.0, "EPSG:25832")
    x, y = rng.uniform(-1, 11, 400), rng.uniform(-1, 9, 400)
    z = rng.normal(50, 3, 400)
    for stat in ("max", "min", "mean"):
        np.testing.assert_allclose(
            cell_stat(grid, x, y, z, stat),
            cell_stat_reference(grid, x, y, z, stat),
            rtol=1e-6,
            equal_nan=True,
        )


# ---- terrain layer on the crafted district ---------------------------------------------------------


@pytest.fixture(scope="module")
def terrain_release(tmp_path_factory):
    from pipeline.orchestrate.terrain import build_terrain_layers

    root = tmp_path_factory.mktemp("terrain")
    cfg = district.make_district(root, epochs=("2024",))
    ctx = district.context(cfg, root / "release")
    layers = build_terrain_layers(ctx, [])
    return ctx, layers


def _tile_vertices_enu(path: Path) -> np.ndarray:
    """Decoded (dequantised, decompressed) vertices of a terrain GLB in the project ENU frame."""
    from pipeline.tiles.terrain_glb import read_terrain_glb

    return read_terrain_glb(path.read_bytes())[0]


def test_terrain_tileset_valid_and_lod(terrain_release):
    from pipeline.tiles.tileset import schema_errors

    ctx, layers = terrain_release
    terrain = layers[0]
    assert terrain.kind == "terrain" and terrain.tileset == "terrain/tileset.json"
    ts = json.loads((ctx.release_dir / "terrain" / "tileset.json").read_text())
    assert schema_errors(ts) == []
    root = ts["root"]
    assert root["transform"] == ctx.frame.tile_transform()
    # 200 m at 1 m with 64-cell tiles: 3 levels (256 m root square)
    assert terrain.stats["levels"] == 3
    depth, t = 0, root
    while t.get("children"):
        assert all(c["geometricError"] <= t["geometricError"] for c in t["children"])
        t, depth = t["children"][0], depth + 1
    assert depth == 2 and t["geometricError"] == 0.0
    # coarser levels have fewer vertices per tile area
    lv0 = _tile_vertices_enu(ctx.release_dir / "terrain" / root["content"]["uri"])
    leaf = _tile_vertices_enu(ctx.release_dir / "terrain" / t["content"]["uri"])
    assert len(lv0) < 65 * 65 and len(leaf) <= 65 * 65 + 4 * 64 + 1  # + closed skirt ring


def _skirt_vertices(e: np.ndarray, n: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices with an xy twin, the lower twin = skirt vertex) of one mesh."""
    key = np.round(e * 100).astype(np.int64) * 10**9 + np.round(n * 100).astype(np.int64)
    order = np.lexsort((h, key))
    dup = np.zeros(len(e), dtype=bool)
    skirt = np.zeros(len(e), dtype=bool)
    same = key[order][1:] == key[order][:-1]
    dup[order[1:][same]] = dup[order[:-1][same]] = True
    skirt[order[:-1][same]] = True  # sorted by height within a key: the first is the lower
    return dup, skirt


def test_terrain_heights_match_dgm_plus_geoid(terrain_release):
    """Every vertex of a leaf tile, taken back to ETRS89/UTM + DHHN2016 with pyproj, lies on the DGM."""
    from pyproj import Transformer

    from pipeline.crs import locate_geoid_grid

    ctx, _ = terrain_release
    import pyproj

    pyproj.datadir.append_data_dir(str(locate_geoid_grid(ctx.cfg.crs).parent))
    to_utm = Transformer.from_crs("EPSG:4978", "EPSG:25832+7837", always_xy=True, allow_ballpark=False)
    tiles = sorted((ctx.release_dir / "terrain" / "tiles" / "2").rglob("*.glb"))
    assert tiles
    per_tile = [_tile_vertices_enu(p) for p in tiles[:4]]
    enu = np.concatenate(per_tile)
    ecef = ctx.frame.enu_to_ecef(enu)
    e, n, h = to_utm.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
    e, n, h = np.asarray(e), np.asarray(n), np.asarray(h)
    bounds = np.cumsum([0] + [len(v) for v in per_tile])
    skirt = np.concatenate(
        [_skirt_vertices(e[a:b], n[a:b], h[a:b])[1] for a, b in itertools.pairwise(bounds)]
    )
    inside = (e > district.X0 + 1) & (e < district.X0 + 199) & (n > district.Y0 + 1) & (n < district.Y0 + 199)
    # skirt vertices hang below the tile edges: test the surface
    inside &= ~skirt
    assert inside.sum() > 1000
    err = np.abs(h[inside] - district.dgm_height(e[inside], n[inside]))
    assert err.max() < 0.03, err.max()
    # the skirts: edge vertices duplicated 0.5 m or more below the surface
    below = h[skirt] - district.dgm_height(e[skirt], n[skirt])
    assert skirt.sum() > 100 and below.max() < -0.45
    # and the geoid was applied: ellipsoidal heights are ~45 m above the normal heights
    to_ell = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
    _, _, hell = to_ell.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
    assert 40 < np.median(np.asarray(hell) - np.asarray(h)) < 50


def test_terrain_glb_valid_and_textured(terrain_release):
    from pipeline.tiles.gltf import read_glb
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    ctx, _ = terrain_release
    glbs = sorted((ctx.release_dir / "terrain").rglob("*.glb"))
    js, _bin = read_glb(glbs[0].read_bytes())
    prim = js["meshes"][0]["primitives"][0]
    assert set(prim["attributes"]) == {"POSITION", "TEXCOORD_0"}
    assert js["images"][0]["mimeType"] == "image/jpeg"
    # the default mesh encoding: float32 (what QGIS 3.40 reads), no quantisation or compression
    assert js["accessors"][prim["attributes"]["POSITION"]]["componentType"] == 5126
    assert not {"KHR_mesh_quantization", "EXT_meshopt_compression"} & set(js.get("extensionsUsed", []))
    if not validator_available():
        pytest.skip("glTF validator not installed")
    reports = validate_glb_files(glbs)
    assert all(r["errors"] == 0 for r in reports), [r for r in reports if r["errors"]][:1]


def test_imagery_pyramid_and_cog(terrain_release):
    from PIL import Image

    from pipeline.stages.imagery import lonlat_to_tile, mercator_res, tile_bounds_mercator

    ctx, layers = terrain_release
    imagery = layers[1]
    assert imagery.kind == "imagery"
    meta = json.loads((ctx.release_dir / "imagery" / "imagery.json").read_text())
    assert meta["tiles"] == "xyz/{z}/{x}/{y}.png"
    lat = (meta["bounds"][1] + meta["bounds"][3]) / 2
    # finest zoom reaches about 0.3 m/px
    assert 0.2 < mercator_res(meta["maxzoom"], lat) < 0.45
    assert meta["minzoom"] < meta["maxzoom"]
    # a pixel in the lawn (x < 15 m from the west edge) is green
    from pyproj import Transformer

    lon, la = Transformer.from_crs("EPSG:25832", "EPSG:4326", always_xy=True).transform(
        district.X0 + 7, district.Y0 + 50
    )
    z = meta["maxzoom"]
    tx, ty = lonlat_to_tile(lon, la, z)
    png = ctx.release_dir / "imagery" / "xyz" / str(z) / str(tx) / f"{ty}.png"
    img = np.asarray(Image.open(png).convert("RGBA"))  # opaque tiles are RGB PNGs
    assert img.shape == (256, 256, 4)
    mx, my = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, la)
    b = tile_bounds_mercator(z, tx, ty)
    col = int((mx - b[0]) / (b[2] - b[0]) * 256)
    row = int((b[3] - my) / (b[3] - b[1]) * 256)
    r, g, _b, a = img[row, col]
    assert a == 255 and g > r + 40
    cogs = sorted((ctx.release_dir / "imagery" / "cog").glob("*.tif"))
    assert len(cogs) == len(ctx.inputs_for("orthophoto"))  # one COG per orthophoto tile
    for cog in cogs:
        with rasterio.open(cog) as ds:
            assert ds.count == 4 and ds.crs.to_epsg() == 25832
            assert ds.profile.get("tiled") and (ds.overviews(1) or max(ds.shape) <= 256)  # 200 px tiles
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(ctx.release_dir / "imagery" / "orthophoto.vrt") as ds:  # the mosaic of the COGs
        assert ds.count == 4 and ds.crs.to_epsg() == 25832
        assert ds.res == (0.5, 0.5)
        # values are the delivery's: the lawn (NIR 200, red 40) at 7 m / 50 m from the SW corner
        row, col = ds.index(district.X0 + 7, district.Y0 + 50)
        px = ds.read(window=((row, row + 1), (col, col + 1)))[:, 0, 0]
        assert list(px) == [40, 120, 110, 200]


def test_terrain_is_deterministic(terrain_release, tmp_path):
    from pipeline.orchestrate.terrain import build_terrain_layers

    ctx, _ = terrain_release
    ctx2 = district.context(Path(ctx.cfg.base_dir) / "district.yaml", tmp_path / "again")
    build_terrain_layers(ctx2, [])
    for p in sorted((ctx.release_dir / "terrain").rglob("*")):
        if p.is_file():
            q = tmp_path / "again" / "terrain" / p.relative_to(ctx.release_dir / "terrain")
            assert q.read_bytes() == p.read_bytes(), p


def test_terrain_compact_encoding_and_quantisation_error(terrain_release, tmp_path):
    """`mesh_encoding: compact` holds the same vertices as the default float32 tiles within the stated
    bound (half the tile box's grid step per axis, here < 1 cm) in under half the bytes, passes the glTF
    validator and is deterministic."""
    from pipeline.orchestrate.terrain import build_terrain_layers
    from pipeline.tiles.gltf import read_glb
    from pipeline.tiles.terrain_glb import quantisation_step, read_terrain_glb
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    ctx, _ = terrain_release
    cfg = Path(ctx.cfg.base_dir) / "district.yaml"
    ctx2 = district.context(cfg, tmp_path / "compact", **{"layers.terrain.mesh_encoding": "compact"})
    build_terrain_layers(ctx2, [])
    floats = sorted((ctx.release_dir / "terrain").rglob("*.glb"))
    compact = sorted((tmp_path / "compact" / "terrain").rglob("*.glb"))
    rel = [p.relative_to(ctx.release_dir) for p in floats]
    assert rel == [p.relative_to(tmp_path / "compact") for p in compact] and rel
    worst = 0.0
    for c, f in zip(compact, floats, strict=True):
        js, _ = read_glb(c.read_bytes())
        assert {"KHR_mesh_quantization", "EXT_meshopt_compression"} <= set(js["extensionsRequired"])
        pf, _, tf = read_terrain_glb(f.read_bytes())
        pc, _, tc = read_terrain_glb(c.read_bytes())
        assert pc.shape == pf.shape and len(tc) == len(tf)
        bound = quantisation_step(pf.min(axis=0), pf.max(axis=0)) / 2 + 1e-4  # + float32 rounding
        d = np.abs(pc - pf).max(axis=0)
        assert (d <= bound).all(), (c, d, bound)
        worst = max(worst, float(d.max()))
    assert worst < 0.01
    assert sum(p.stat().st_size for p in compact) * 2 < sum(p.stat().st_size for p in floats)
    # the layer's tileset does not depend on the mesh encoding
    assert (tmp_path / "compact" / "terrain" / "tileset.json").read_bytes() == (
        ctx.release_dir / "terrain" / "tileset.json"
    ).read_bytes()
    fresh = {"layers.terrain.mesh_encoding": "compact", "paths.cache": str(tmp_path / "cache-again")}
    ctx3 = district.context(cfg, tmp_path / "again", **fresh)  # a clean build: no cached tiles
    build_terrain_layers(ctx3, [])
    for c in compact:
        assert (tmp_path / "again" / c.relative_to(tmp_path / "compact")).read_bytes() == c.read_bytes()
    if validator_available():
        reports = validate_glb_files(compact)
        assert all(r["errors"] == 0 for r in reports), [r for r in reports if r["errors"]][:1]


def test_terrain_from_ground_points_without_dgm(tmp_path):
    from pipeline.orchestrate.terrain import build_terrain_layers

    cfg = district.make_district(tmp_path, epochs=("2024",), dgm=False)
    ctx = district.context(cfg, tmp_path / "release", **{"layers.terrain.texture_from_orthophoto": False})
    layers = build_terrain_layers(ctx, [])
    terrain = layers[0]
    assert terrain.stats["source"].startswith("ground points")
    assert any("no DGM" in w for w in terrain.warnings)
    leaf = sorted((ctx.release_dir / "terrain" / "tiles" / "2").rglob("*.glb"))[0]
    enu = _tile_vertices_enu(leaf)
    # compare with the DGM-based mesh heights through the same frame: ground points lie on the DGM (+-3 cm
    # noise), interpolated under buildings
    import pyproj
    from pyproj import Transformer

    from pipeline.crs import locate_geoid_grid

    pyproj.datadir.append_data_dir(str(locate_geoid_grid(ctx.cfg.crs).parent))
    ecef = ctx.frame.enu_to_ecef(enu)
    e, n, h = Transformer.from_crs("EPSG:4978", "EPSG:25832+7837", always_xy=True).transform(*ecef.T)
    e, n, h = np.asarray(e), np.asarray(n), np.asarray(h)
    skirt = _skirt_vertices(e, n, h)[1]
    inside = (e > district.X0 + 2) & (n > district.Y0 + 2) & ~skirt
    err = np.abs(h[inside] - district.dgm_height(e[inside], n[inside]))
    assert np.median(err) < 0.05 and err.max() < 0.5


@pytest.mark.cluster
@pytest.mark.slow
def test_terrain_on_dask_equals_serial(terrain_release, tmp_path):
    """The per-tile Dask path writes the same bytes as the serial path."""
    from pipeline.orchestrate.terrain import build_terrain_layers
    from pipeline.runtime import dask_client

    ctx, _ = terrain_release
    # an empty cache: the chunk tasks (numba texture kernel, DGM windows) run on the workers
    ctx2 = district.context(
        Path(ctx.cfg.base_dir) / "district.yaml",
        tmp_path / "dask",
        **{"paths.cache": str(tmp_path / "cache")},
    )
    with dask_client(ctx2.cfg.runtime, workers=2) as client:
        ctx2.client = client
        build_terrain_layers(ctx2, [])
    a = sorted(
        p.relative_to(ctx.release_dir) for p in (ctx.release_dir / "terrain").rglob("*") if p.is_file()
    )
    b = sorted(
        p.relative_to(ctx2.release_dir) for p in (ctx2.release_dir / "terrain").rglob("*") if p.is_file()
    )
    assert a == b and len(a) > 16
    for rel in a:
        assert (ctx.release_dir / rel).read_bytes() == (ctx2.release_dir / rel).read_bytes(), rel
