"""Chunked terrain pyramid: equal to the whole-raster reference, texture kernel vs numpy, per-tile reuse
after one changed DGM tile (counted, byte-identical to a clean build), deterministic bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests import _overlay_district as district


def _model(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    a = (50 + 0.05 * x + 3 * np.sin(y / 7.0) + rng.normal(0, 0.3, (n, n))).astype(np.float32)
    a[5:19, 40:47] = np.nan  # a hole (no data)
    a[:, n - 9 :] = np.nan  # the root square reaches beyond the delivery
    return a


@pytest.mark.parametrize("levels", [1, 3, 5, 6])
def test_chunked_vertices_and_errors_equal_whole_raster_reference(levels):
    """Vertex heights equal `level_vertex_heights` (whole raster) to float rounding; errors of the chunk
    levels equal `level_errors`; above the chunk level they bound the exact error from above."""
    from pipeline.stages.terrain.chunks import chunk_layout, mesh_chunk, upper_errors, upper_levels
    from pipeline.stages.terrain.pyramid import TerrainPlan, level_errors, level_vertex_heights

    tc = 8
    plan = TerrainPlan(1000.0, 2000.0, 1.0, tc, levels)
    n = tc * 2 ** (levels - 1)
    fine = _model(n)
    ref_v = level_vertex_heights(plan, fine)
    ref_e = level_errors(plan, ref_v, fine)
    lay = chunk_layout(plan, depth=2)
    c = lay.level
    assert c == max(0, levels - 3)
    verts, cells, errs = {}, {}, [np.zeros((2**k, 2**k)) for k in range(levels)]
    for cy in range(lay.count):
        for cx in range(lay.count):
            r0, c0 = lay.window_origin(cx, cy)
            m = lay.side + 2 * lay.factor
            win = np.full((m, m), np.nan, np.float32)
            rs, cs = max(r0, 0), max(c0, 0)
            re, ce = min(r0 + m, n), min(c0 + m, n)
            win[rs - r0 : re - r0, cs - c0 : ce - c0] = fine[rs:re, cs:ce]
            ch = mesh_chunk(lay, cx, cy, win)
            verts.update(ch.vertices)
            cells[(cx, cy)] = ch.cells
            for lv, e in ch.errors.items():
                k = 2 ** (lv - c)
                errs[lv][cy * k : (cy + 1) * k, cx * k : (cx + 1) * k] = e
    verts.update(upper_levels(lay, cells))
    assert len(verts) == sum(4**k for k in range(levels))
    for (lv, tx, ty), v in verts.items():
        r = ref_v[lv][ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1]
        np.testing.assert_allclose(v, r, rtol=0, atol=1e-9, equal_nan=True)
    for lv in range(c, levels):
        np.testing.assert_allclose(errs[lv], ref_e[lv], rtol=0, atol=1e-9)
    if c:
        bound = upper_errors(lay, verts, errs[c])
        for lv in range(c):
            assert np.all(bound[lv] >= ref_e[lv] - 1e-9)
            assert np.all(bound[lv] <= ref_e[lv] + 2 * errs[c].max() + 1e-9)


def test_skirts_cover_the_cracks_against_coarser_tiles():
    from pipeline.stages.terrain.chunks import edge_skirts

    tc = 2
    grids = [np.zeros((3, 3)), np.zeros((5, 5)), np.zeros((9, 9))]
    # level 2 is 3 m higher than level 1 at one vertex on level 1's inner east-west boundary (row 4 of
    # level 2, between columns 2 and 4: inside level-2 tile column 1 and level-1 tile column 0)
    grids[2][4, 3] = 3.0
    grids[2][1, 1] = 5.0  # inside a level-1 tile: no coarser tile meets it there
    verts = {
        (lv, tx, ty): g[ty * tc : (ty + 1) * tc + 1, tx * tc : (tx + 1) * tc + 1]
        for lv, g in enumerate(grids)
        for ty in range(2**lv)
        for tx in range(2**lv)
    }
    s = edge_skirts(verts, 3, tc)
    assert s[0].tolist() == [[0.0]]
    # the level-1 tiles north and south of the line: their finer neighbours across lie lower (3 m -> 4 m)
    assert s[1].tolist() == [[4.0, 0.5], [4.0, 0.5]]
    # the level-2 tiles touching the raised vertex on the line: a coarser neighbour lies lower
    expected = np.full((4, 4), 0.5)
    expected[1, 1] = expected[2, 1] = 4.0
    assert s[2].tolist() == expected.tolist()


def test_texture_kernel_matches_numpy_reference():
    from pipeline.stages.terrain._texture_kernels import area_resample_u8
    from pipeline.stages.terrain.chunks import area_resample, area_weights

    rng = np.random.default_rng(7)
    for n, p in [(40, 32), (50, 16), (33, 32), (24, 24)]:
        src = rng.integers(0, 256, (3, n, n)).astype(np.uint8)
        ok = rng.random((n, n)) > 0.1
        ok[:, : n // 3] = False
        idx, w = area_weights(n, 0.0, n / p, p)
        out, valid = area_resample_u8(src, ok, idx, w, 1.0)
        ref = area_resample(np.where(ok[None], src.astype(np.float32), np.nan), p)
        assert np.array_equal(valid, np.isfinite(ref).all(axis=0))
        assert valid.any() and not valid.all()
        diff = np.abs(out.astype(float) - np.round(np.nan_to_num(ref)))
        assert diff[:, valid].max() <= 1  # rounding of float32 vs float64 sums
        assert np.all(out[:, ~valid] == 0)
        # the mean over a full image is kept (area weights sum to one per texel)
        full = area_resample(src.astype(np.float32), p)
        assert abs(full.mean() - src.mean()) < 0.5


def test_halve_texture_rules():
    from pipeline.stages.terrain.chunks import halve_texture

    rgb = np.array([[[10, 11, 0, 0], [12, 13, 0, 0]]] * 3, dtype=np.uint8)
    valid = np.array([[True, True, False, False], [True, True, False, True]])
    rgb[:, 1, 3] = 200
    out, v = halve_texture(rgb, valid)
    assert v.tolist() == [[True, True]]
    assert out[:, 0, 0].tolist() == [12] * 3  # (46 + 2) // 4
    assert out[:, 0, 1].tolist() == [200] * 3  # the one valid pixel


# ---- per-tile reuse on a district delivered as 16 DGM tiles ------------------------------------------


def _split_dgm(raw: Path, bump: bool = False) -> None:
    """Replace the district's DGM by 16 tiles of 50 m; `bump` raises a 20 m x 20 m patch of tile (1, 1)."""
    shutil.rmtree(raw / "dgm")
    (raw / "dgm").mkdir()
    for i in range(4):
        for j in range(4):
            x0, y1 = district.X0 + 50 * i, district.Y0 + 50 * (j + 1)
            c = np.arange(50) + 0.5
            gx, gy = np.meshgrid(x0 + c, y1 - c)
            h = district.dgm_height(gx, gy).astype("float32")
            if bump and (i, j) == (1, 1):
                h[15:35, 15:35] += 2.0
            with rasterio.open(
                raw / "dgm" / f"dgm1_32_{int(x0)}_{int(y1 - 50)}_1_nw_2024.tif",
                "w",
                driver="GTiff",
                width=50,
                height=50,
                count=1,
                dtype="float32",
                crs="EPSG:25832",
                transform=from_origin(x0, y1, 1.0, 1.0),
                nodata=-9999,
            ) as ds:
                ds.write(h, 1)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "terrain").rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sixteen_tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("terrain16")
    cfg = district.make_district(root, epochs=("2024",))
    _split_dgm(root / "raw")
    return root, cfg


OVR = {"layers.terrain.tile_cells": 8, "layers.terrain.texture_px": 32}


def test_one_changed_dgm_tile_rebuilds_only_its_tiles(sixteen_tiles, tmp_path):
    from pipeline.orchestrate.terrain_mesh import build_terrain_mesh

    root, cfg = sixteen_tiles
    cache = tmp_path / "cache"
    ctx1 = district.context(cfg, tmp_path / "r1", **OVR, **{"paths.cache": str(cache)})
    first, n1 = build_terrain_mesh(ctx1)
    ctx1.reuse.write_index()
    assert n1.tiles_built == n1.tiles == first.stats["tiles"] > 300
    assert n1.mesh_chunks_built == n1.chunks == 16  # 256 m root, 8-cell tiles: 6 levels, chunks at level 2

    # nothing changed: nothing is computed again
    ctx_same = district.context(cfg, tmp_path / "same", **OVR, **{"paths.cache": str(cache)})
    ctx_same.previous_release = tmp_path / "r1"
    _, n_same = build_terrain_mesh(ctx_same)
    assert (n_same.mesh_chunks_built, n_same.texture_chunks_built, n_same.tiles_built) == (0, 0, 0)
    assert _files(tmp_path / "same") == _files(tmp_path / "r1")

    _split_dgm(root / "raw", bump=True)  # one of 16 DGM tiles changes
    try:
        ctx2 = district.context(cfg, tmp_path / "r2", **OVR, **{"paths.cache": str(cache)})
        ctx2.previous_release = tmp_path / "r1"
        second, n2 = build_terrain_mesh(ctx2)
        clean_ctx = district.context(cfg, tmp_path / "clean", **OVR, **{"paths.cache": str(tmp_path / "c2")})
        clean, _n_clean = build_terrain_mesh(clean_ctx)
    finally:
        _split_dgm(root / "raw")

    # chunks: the 64 m chunks whose window (chunk + 4 m) touches the tile (50..100 m, 50..100 m)
    assert n2.mesh_chunks_built == 4 and n2.texture_chunks_built == 0
    # tiles: every tile over the bump and its ancestors were rebuilt, few others
    bump = (district.X0 + 65, district.Y0 + 65, district.X0 + 85, district.Y0 + 85)
    from pipeline.stages.terrain import plan_terrain

    plan = plan_terrain((district.X0, district.Y0, district.X0 + 200, district.Y0 + 200), 1.0, 8)
    over = 0
    for level in range(plan.levels):
        for ty in range(2**level):
            for tx in range(2**level):
                b = plan.tile_bounds(level, tx, ty)
                if b[0] < bump[2] and b[2] > bump[0] and b[1] < bump[3] and b[3] > bump[1]:
                    over += 1
    assert over <= n2.tiles_built <= 0.2 * n2.tiles, (over, n2.tiles_built, n2.tiles)
    assert second.stats == clean.stats
    a, b = _files(tmp_path / "r2"), _files(tmp_path / "clean")
    assert a.keys() == b.keys()
    changed = [k for k in a if a[k] != b[k]]
    assert changed == [], changed[:5]
    # the rebuilt tiles are exactly those whose bytes differ from the first release
    first_files = _files(tmp_path / "r1")
    differ = [k for k in a if k.endswith(".glb") and first_files.get(k) != a[k]]
    assert len(differ) == n2.tiles_built


def test_chunked_terrain_is_deterministic(sixteen_tiles, tmp_path):
    from pipeline.orchestrate.terrain_mesh import build_terrain_mesh

    _root, cfg = sixteen_tiles
    out = []
    for k in range(2):
        ctx = district.context(cfg, tmp_path / f"r{k}", **OVR, **{"paths.cache": str(tmp_path / f"c{k}")})
        build_terrain_mesh(ctx)
        out.append(_files(tmp_path / f"r{k}"))
    assert out[0] == out[1] and len(out[0]) > 300


def test_one_changed_orthophoto_tile_rebuilds_only_the_tiles_over_it(sixteen_tiles, tmp_path):
    from pipeline.orchestrate.terrain_mesh import build_terrain_mesh
    from pipeline.stages.terrain import plan_terrain
    from pipeline.stages.terrain.chunks import chunk_layout

    root, cfg = sixteen_tiles
    cache = tmp_path / "cache"
    ctx1 = district.context(cfg, tmp_path / "r1", **OVR, **{"paths.cache": str(cache)})
    build_terrain_mesh(ctx1)
    ctx1.reuse.write_index()
    dop = sorted((root / "raw" / "dop").glob("*.tif"))[0]
    original = dop.read_bytes()
    with rasterio.open(dop) as ds:
        b = ds.bounds
    with rasterio.open(dop, "r+") as ds:
        a = ds.read()
        a[:3, 40:80, 40:80] = 250  # a white roof appears
        ds.write(a)
    try:
        ctx2 = district.context(cfg, tmp_path / "r2", **OVR, **{"paths.cache": str(cache)})
        ctx2.previous_release = tmp_path / "r1"
        _res, n2 = build_terrain_mesh(ctx2)
        clean = district.context(cfg, tmp_path / "clean", **OVR, **{"paths.cache": str(tmp_path / "c2")})
        build_terrain_mesh(clean)
    finally:
        dop.write_bytes(original)
    plan = plan_terrain((district.X0, district.Y0, district.X0 + 200, district.Y0 + 200), 1.0, 8)
    lay = chunk_layout(plan)
    touching = [
        (cx, cy)
        for cy in range(lay.count)
        for cx in range(lay.count)
        if (c := lay.chunk_bounds(cx, cy))[0] < b.right and c[2] > b.left and c[1] < b.top and c[3] > b.bottom
    ]
    assert n2.mesh_chunks_built == 0
    assert n2.texture_chunks_built == len(touching) == 6  # 64 m chunks over one 100 m orthophoto tile
    assert _files(tmp_path / "r2") == _files(tmp_path / "clean")
    first = _files(tmp_path / "r1")
    now = _files(tmp_path / "r2")
    rebuilt = [k for k in now if k.endswith(".glb") and first.get(k) != now[k]]
    assert len(rebuilt) == n2.tiles_built > 0
    for k in rebuilt:  # terrain/tiles/<level>/<x>/<y>.glb: every rebuilt tile lies over the changed tile
        level, tx, ty = (int(v) for v in k.removesuffix(".glb").split("/")[-3:])
        t = plan.tile_bounds(level, tx, ty)
        assert t[0] < b.right and t[2] > b.left and t[1] < b.top and t[3] > b.bottom, k
