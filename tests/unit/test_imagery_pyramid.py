"""Orthophoto XYZ pyramid: fast kernels == references, pyramid ~ per-tile reference, per-tile reuse, bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

X0, Y0 = 362000.0, 5716000.0
TILE_M, RES = 100.0, 0.25

CONFIG = """\
name: imagery-test
paths: {{raw: raw, out: out, cache: {cache}}}
crs: {{horizontal: "EPSG:25832", vertical: "EPSG:7837", frame_origin: [362100.0, 5716100.0, 0.0]}}
sources:
  orthophoto: {{path: dop/*.tif, bands: {{red: 1, green: 2, blue: 3, nir: 4}}}}
"""


def _dop(path: Path, x0: float, y0: float, seed: int) -> Path:
    """A 100 m RGBI tile: smooth gradients (continuous across tiles) + a per-tile texture."""
    n = int(TILE_M / RES)
    c = (np.arange(n) + 0.5) * RES
    gx, gy = np.meshgrid(x0 + c, y0 + TILE_M - c)
    rng = np.random.default_rng(seed)
    bands = [
        (gx - X0) * 0.6 + 20,
        (gy - Y0) * 0.5 + 40,
        128 + 60 * np.sin((gx + gy) / 7.0),
        np.full_like(gx, 200.0),
    ]
    data = np.stack([np.clip(b + rng.normal(0, 6, b.shape), 0, 255) for b in bands]).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=n,
        height=n,
        count=4,
        dtype="uint8",
        crs="EPSG:25832",
        transform=from_origin(x0, y0 + TILE_M, RES, RES),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="DEFLATE",
    ) as ds:
        ds.write(data)
    return path


def _district(root: Path, n: int = 2) -> Path:
    (root / "raw" / "dop").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for j in range(n):
            x0, y0 = X0 + i * TILE_M, Y0 + j * TILE_M
            _dop(root / "raw" / "dop" / f"dop10rgbi_32_{int(x0)}_{int(y0)}_1_nw_2024.tif", x0, y0, 10 * i + j)
    return root


def _ctx(root: Path, name: str, cache: str = "cache", previous: Path | None = None):
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.crs import project_frame
    from pipeline.model import BuildContext
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.orchestrate.reuse import ReuseState

    cfg_path = root / f"{name}.yaml"
    cfg_path.write_text(CONFIG.format(cache=cache))
    cfg = load_config(cfg_path)
    release = root / "out" / name
    release.mkdir(parents=True)
    ctx = BuildContext(
        cfg=cfg,
        build_id=name,
        release_dir=release,
        frame=project_frame(cfg.crs),
        inputs=scan_inputs(cfg),
        log=BuildLog(quiet=True),
        previous_release=previous,
    )
    ctx.reuse = ReuseState.open(release, [previous] if previous else [])
    return ctx


def _build(ctx):
    from pipeline.orchestrate.terrain import build_imagery

    res = build_imagery(ctx)
    ctx.reuse.write_index()
    return res


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA")).astype(int)


# ---- kernels against their references ---------------------------------------------------------------


def test_png_writer_roundtrips_rgb_and_rgba():
    from PIL import Image

    from pipeline.tiles.png import encode_png

    rng = np.random.default_rng(1)
    for c in (3, 4):
        px = rng.integers(0, 256, (37, 53, c), dtype=np.uint8)
        data = encode_png(px)
        img = Image.open(io.BytesIO(data))
        assert img.mode == ("RGB" if c == 3 else "RGBA")
        assert np.array_equal(np.asarray(img), px)
        assert encode_png(px) == data  # same pixels, same bytes
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))


def test_summed_area_and_box_average_equal_reference():
    from pipeline.stages._imagery_kernels import (
        box_average_band,
        box_average_bands,
        box_average_reference,
        covered,
        summed_area,
        summed_area_bands,
        summed_area_reference,
    )

    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    assert np.array_equal(summed_area(src[0]), summed_area_reference(src[0]))
    # a target grid 1.7 source pixels per pixel, rotated by 2 degrees, partly off the source
    h = w = 32
    r, c = np.mgrid[0 : h + 1, 0 : w + 1].astype(float)
    a = np.radians(2.0)
    ex = -5.0 + 1.7 * (c * np.cos(a) - r * np.sin(a))
    ey = 3.0 + 1.7 * (c * np.sin(a) + r * np.cos(a))
    geo = np.array([0.0, 1.0, 0.0, 1.0])
    cov = np.zeros((h, w), dtype=bool)
    covered(ex, ey, geo, 40, 50, cov)
    out = np.zeros((h, w, 4), dtype=np.uint8)
    for b in range(3):
        box_average_band(summed_area(src[b]), ex, ey, geo, cov, out, b)
    ref, ref_cov = box_average_reference(src, ex, ey, geo)
    assert np.array_equal(cov, ref_cov) and 0 < cov.sum() < h * w
    # the fused kernel (all bands, coverage in the same pass) gives the same bytes, and leaves pixels that
    # are already filled (by a tile earlier in the mosaic) as they are
    sats = summed_area_bands(src)
    assert np.array_equal(sats[1], summed_area(src[1]))
    fused = np.zeros((h, w, 4), dtype=np.uint8)
    filled = np.zeros((h, w), dtype=bool)
    filled[:4] = True
    fused[:4] = 77
    box_average_bands(sats, ex, ey, geo, filled, fused)
    assert np.array_equal(filled, cov | (np.arange(h)[:, None] < 4))
    assert np.array_equal(fused[4:], out[4:]) and (fused[:4] == 77).all()
    d = np.abs(out[..., :3].astype(int) - ref)[cov]
    assert d.max() <= 1 and (d > 0).mean() < 0.01  # float rounding at exact .5 only


def test_downsample_kernel_equals_reference():
    from pipeline.stages.imagery import downsample_rgba, downsample_rgba_reference

    rng = np.random.default_rng(3)
    kids = []
    for k in range(4):
        t = rng.integers(0, 256, (256, 256, 4), dtype=np.uint8)
        t[..., 3] = np.where(rng.random((256, 256)) < 0.3, 0, 255)
        kids.append(t if k != 2 else None)
    a, b = downsample_rgba(kids), downsample_rgba_reference(kids)
    assert a is not None and b is not None and np.array_equal(a, b)
    # a child's 2x2 block of one colour stays that colour; a block with one pixel of data keeps it
    one = np.zeros((256, 256, 4), dtype=np.uint8)
    one[0:2, 0:2] = [10, 200, 30, 255]
    one[4, 4] = [90, 80, 70, 255]
    p = downsample_rgba([one, None, None, None])
    assert p is not None
    assert list(p[0, 0]) == [10, 200, 30, 255] and list(p[2, 2]) == [90, 80, 70, 64]
    assert downsample_rgba([None] * 4) is None


# ---- the pyramid -------------------------------------------------------------------------------------


def test_pyramid_matches_per_tile_reference(tmp_path):
    """Every tile of the fast pyramid against `xyz_tile` (one GDAL warp per tile, at every zoom)."""
    from pipeline.orchestrate.terrain import ortho_infos
    from pipeline.stages.imagery import xyz_tile

    root = _district(tmp_path)
    ctx = _ctx(root, "a")
    res = _build(ctx)
    infos = ortho_infos(ctx.cfg, [i.path for i in ctx.inputs_for("orthophoto")])
    zmin, zmax = res.stats["minzoom"], res.stats["maxzoom"]
    assert zmax - zmin >= 2
    seen = 0
    for rel in res.files:
        if not rel.endswith(".png"):
            continue
        z, x, y = (int(v) for v in rel.removesuffix(".png").split("/")[-3:])
        ref_png = xyz_tile(infos, z, x, y, [1, 2, 3])
        assert ref_png is not None, rel
        from PIL import Image

        ref = np.asarray(Image.open(io.BytesIO(ref_png)).convert("RGBA")).astype(int)
        new = _png(ctx.release_dir / rel)
        both = (ref[..., 3] > 0) & (new[..., 3] > 0)
        mad = np.abs(ref[..., :3] - new[..., :3])[both].mean(axis=0)
        # finest zoom: the same area average; coarser: 2x2 means of rounded children (~0.15 level per zoom)
        assert (mad < 0.3 + 0.15 * (zmax - z)).all(), (rel, mad)
        assert ((ref[..., 3] > 0) != (new[..., 3] > 0)).mean() < 0.02, rel
        seen += 1
    assert seen == res.stats["xyz_tiles"] and seen >= 10


def test_one_changed_tile_rebuilds_only_its_tiles_and_ancestors(tmp_path):
    from pipeline.orchestrate.imagery import source_boxes_mercator
    from pipeline.orchestrate.terrain import ortho_infos
    from pipeline.stages.imagery import ORIGIN, tile_bounds_mercator

    root = _district(tmp_path, n=4)  # 16 DOP tiles
    first = _ctx(root, "first")
    res1 = _build(first)
    # one DOP tile changes (other content, same header)
    changed = root / "raw" / "dop" / f"dop10rgbi_32_{int(X0 + TILE_M)}_{int(Y0 + 2 * TILE_M)}_1_nw_2024.tif"
    _dop(changed, X0 + TILE_M, Y0 + 2 * TILE_M, seed=999)
    second = _ctx(root, "second", previous=first.release_dir)
    res2 = _build(second)
    assert res2.files == res1.files
    pngs = [r for r in res2.files if r.endswith(".png")]
    rebuilt = {
        r for r in pngs if not (second.release_dir / r).samefile(first.release_dir / r)
    }  # reused tiles are hard links of the first release

    # expected: finest tiles overlapping the changed tile (with the key margin), and their ancestors
    infos = ortho_infos(second.cfg, [i.path for i in second.inputs_for("orthophoto")])
    box = source_boxes_mercator([i for i in infos if i.path.name == changed.name])[0]
    zmin, zmax = res2.stats["minzoom"], res2.stats["maxzoom"]
    meta = json.loads((second.release_dir / "imagery" / "imagery.json").read_text())
    lat = (meta["bounds"][1] + meta["bounds"][3]) / 2
    # a source pixel reaches at most 4 source pixels + 1 target pixel beyond the source's box
    margin = 4 * RES / np.cos(np.radians(lat)) + 2 * ORIGIN / 2**zmax / 256
    expected = set()
    for r in pngs:
        z, x, y = (int(v) for v in r.removesuffix(".png").split("/")[-3:])
        if z != zmax:
            continue
        b = tile_bounds_mercator(z, x, y)
        if (
            b[0] < box[2] + margin
            and b[2] > box[0] - margin
            and b[1] < box[3] + margin
            and b[3] > box[1] - margin
        ):
            for zz in range(zmax, zmin - 1, -1):
                d = zmax - zz
                expected.add(f"imagery/xyz/{zz}/{x >> d}/{y >> d}.png")
    assert rebuilt == expected & set(pngs)
    # exactly one COG (the changed tile's) is rebuilt, the other 15 are hard links
    cogs = [r for r in res2.files if r.startswith("imagery/cog/")]
    assert len(cogs) == 16
    assert [r for r in cogs if not (second.release_dir / r).samefile(first.release_dir / r)] == [
        f"imagery/cog/{changed.stem}.tif"
    ]
    assert 0 < len(rebuilt) < 0.5 * len(pngs)

    # and the incremental output is byte-identical to a clean build of the changed data
    clean = _ctx(root, "clean", cache="cache-clean")
    _build(clean)
    for r in res2.files:
        assert (second.release_dir / r).read_bytes() == (clean.release_dir / r).read_bytes(), r


def test_pyramid_bytes_are_deterministic(tmp_path):
    root = _district(tmp_path)
    a = _ctx(root, "a", cache="cache-a")
    b = _ctx(root, "b", cache="cache-b")
    ra, rb = _build(a), _build(b)
    assert ra.files == rb.files
    for r in ra.files:
        assert (a.release_dir / r).read_bytes() == (b.release_dir / r).read_bytes(), r


def test_cog_tiles_mosaic_equals_the_delivery(tmp_path):
    """The VRT of the per-tile COGs reads as the mosaic of the delivery (all bands, valid 0 -> 1)."""
    from pipeline.orchestrate.terrain import ortho_infos
    from pipeline.sources.rasters import Grid, delivery_bounds, native_resolution, read_grid

    root = _district(tmp_path)
    ctx = _ctx(root, "a")
    _build(ctx)
    infos = ortho_infos(ctx.cfg, [i.path for i in ctx.inputs_for("orthophoto")])
    grid = Grid.from_bounds(delivery_bounds(infos, "EPSG:25832"), native_resolution(infos), "EPSG:25832")
    ref = read_grid(infos, grid)
    want = np.where(ref.valid[None], np.maximum(ref.data, 1), 0).astype(np.uint8)
    with rasterio.open(ctx.release_dir / "imagery" / "orthophoto.vrt") as ds:
        assert (ds.width, ds.height) == (grid.width, grid.height) and ds.transform == grid.transform
        assert np.array_equal(ds.read(), want)
        ov = ds.overviews(1)  # down to one block, read through the COGs' own overviews
        assert ov == [2, 4] and max(ds.shape) / ov[-1] <= 256
        small = ds.read(out_shape=(4, ds.height // 4, ds.width // 4))
        assert abs(small.mean() - want.mean()) < 1.0
    for cog in (ctx.release_dir / "imagery" / "cog").glob("*.tif"):
        with rasterio.open(cog) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2]


@pytest.mark.parametrize(
    ("size_m", "res", "x_off", "y_off"),
    [
        (100.0, 0.25, 0.0, 0.0),  # 400 px: one exact halving
        (330.0, 0.25, 0.0, 0.0),  # 1320 px: 660, 330, 165 (odd), 82 (GDAL's non-integer ratio)
        (257.0, 0.5, 37.3, -21.9),  # 514 px, shifted grid: warped path, nodata along two edges
    ],
)
def test_cog_own_overviews_equal_gdal_overviews(tmp_path, size_m, res, x_off, y_off):
    """`write_cog`'s own overviews (numba halving + GDAL for odd levels) give the bytes of GDAL's COG driver
    computing them itself, with valid zeros, nodata (cells outside the tile) and odd level sizes."""
    from affine import Affine

    from pipeline.orchestrate.terrain import ortho_infos
    from pipeline.sources.rasters import Grid
    from pipeline.stages.imagery import cog_overview_sizes, write_cog

    n = int(size_m / res)
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, (4, n, n), dtype=np.uint8)
    data[:, :40, :40] = 0  # valid zeros (become 1)
    (tmp_path / "dop").mkdir()
    src = tmp_path / "dop" / "t.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=n,
        height=n,
        count=4,
        dtype="uint8",
        crs="EPSG:25832",
        transform=from_origin(X0, Y0 + size_m, res, res),
    ) as ds:
        ds.write(data)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(CONFIG.format(cache="cache").replace("dop/*.tif", str(src)))
    from pipeline.config import load_config

    infos = ortho_infos(load_config(cfg_path), [src])
    grid = Grid(Affine(res, 0, X0 + x_off, 0, -res, Y0 + size_m + y_off), n, n, "EPSG:25832")
    write_cog(infos, grid, tmp_path / "own.tif")
    write_cog(infos, grid, tmp_path / "gdal.tif", own_overviews=False)
    own, ref = (tmp_path / "own.tif").read_bytes(), (tmp_path / "gdal.tif").read_bytes()
    assert own == ref
    with rasterio.open(tmp_path / "own.tif") as ds:
        assert [(ds.width // f, ds.height // f) for f in ds.overviews(1)] == cog_overview_sizes(n, n)
        if x_off:
            assert (ds.read(1) == 0).any()  # the shifted grid has nodata cells
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "dop", "gdal.tif", "own.tif"]
