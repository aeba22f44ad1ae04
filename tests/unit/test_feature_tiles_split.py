"""Feature tiles of a region's overlay mesh: each 250 m tile takes its triangles, vertices and features
without a pass over the whole region's arrays (71,000 tiles x tens of millions of triangles for the Ruhr
before), and with exactly the arrays the per-tile scans gave."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

import pipeline.orchestrate.cache as cache_mod
import pipeline.orchestrate.overlays as overlays
from pipeline.stages.overlays.mesh import MeshParts, Outlines


def _mesh(nx: int, seed: int = 7) -> tuple[MeshParts, Outlines, pd.DataFrame]:
    """One quad per feature on an nx x nx grid of 100 m cells (features in shuffled order), outlines of
    every other feature; 2 x 2 features per 250 m tile and some straddling."""
    rng = np.random.default_rng(seed)
    n = nx * nx
    cells = rng.permutation(n)
    xyz, tris, feat, lxyz, segs, lfeat = [], [], [], [], [], []
    for f, c in enumerate(cells):
        x, y = 100.0 * (c % nx) + 10, 100.0 * (c // nx) + 10
        base = len(xyz)
        xyz += [(x, y, 1.0), (x + 80, y, 2.0), (x + 80, y + 80, 3.0), (x, y + 80, 4.0)]
        feat += [f] * 4
        tris += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
        if f % 2:
            lb = len(lxyz)
            lxyz += [(x, y, 1.0), (x + 80, y, 2.0), (x + 80, y + 80, 3.0)]
            lfeat += [f] * 3
            segs += [(lb, lb + 1), (lb + 1, lb + 2)]
    mesh = MeshParts(
        np.array(xyz), rng.normal(size=(len(xyz), 3)), np.array(tris, np.uint32), np.array(feat, np.int64)
    )
    outl = Outlines(np.array(lxyz), np.array(segs, np.int64), np.array(lfeat, np.int64))
    table = pd.DataFrame({"oid": [f"f{i}" for i in range(n)], "grz": rng.random(n)})
    return mesh, outl, table


def _run(tmp_path, monkeypatch, mesh, outl, table) -> dict[str, tuple]:
    got: dict[str, tuple] = {}
    monkeypatch.setattr(
        overlays, "_feature_tile_cached", lambda ctx, path, a, kw: got.update({path.name: (a, kw)})
    )
    fake = SimpleNamespace(call=lambda key, fn, xyz, *a: np.asarray(xyz, dtype=np.float64) - 500.0)
    monkeypatch.setattr(cache_mod, "build_cache", lambda ctx: fake)
    ctx = SimpleNamespace(
        cfg=SimpleNamespace(crs=None),
        frame=SimpleNamespace(
            to_json=lambda: {}, tile_transform=lambda: [float(v) for v in np.eye(4).reshape(-1)]
        ),
        build_id="t",
    )
    colours = np.arange(len(table) * 4, dtype=np.uint8).reshape(-1, 4)
    overlays.write_feature_tiles(
        ctx,
        tmp_path,
        mesh,
        table,
        colours,
        class_id="c",
        columns=["oid", "grz"],
        height_crs="x",
        unlit=False,
        outlines=outl,
    )
    return got


def _reference(mesh, outl, table) -> dict[str, tuple]:
    """The former per-tile scans, for the arrays each tile gets."""
    enu = mesh.xyz - 500.0
    fx = np.bincount(mesh.feature, weights=mesh.xyz[:, 0]) / np.maximum(np.bincount(mesh.feature), 1)
    fy = np.bincount(mesh.feature, weights=mesh.xyz[:, 1]) / np.maximum(np.bincount(mesh.feature), 1)
    tkey = np.floor(fx / 250.0).astype(np.int64) * 100000 + np.floor(fy / 250.0).astype(np.int64)
    tri_key = tkey[mesh.feature][mesh.triangles[:, 0]]
    seg_key = tkey[outl.feature[outl.segments[:, 0]]]
    out = {}
    for k in np.unique(tri_key):
        tris = mesh.triangles[tri_key == k]
        used = np.unique(tris)
        remap = np.full(len(mesh.xyz), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        feats = np.unique(mesh.feature[used])
        frow = np.full(int(mesh.feature.max()) + 1, -1, dtype=np.int64)
        frow[feats] = np.arange(len(feats))
        lused, linv = np.unique(outl.segments[seg_key == k], return_inverse=True)
        a = (enu[used], mesh.normals[used], remap[tris], frow[mesh.feature[used]])
        out[f"{int(k // 100000)}_{int(k % 100000)}.glb"] = (
            a,
            feats,
            outl.xyz[lused] - 500.0,
            linv.reshape(-1, 2),
        )
    return out


def test_tiles_get_the_arrays_of_the_per_tile_scans(tmp_path, monkeypatch):
    mesh, outl, table = _mesh(12)
    got = _run(tmp_path, monkeypatch, mesh, outl, table)
    want = _reference(mesh, outl, table)
    assert sorted(got) == sorted(want) and len(got) > 20
    for name, (a, feats, oxyz, osegs) in want.items():
        ga, kw = got[name]
        for x, y in zip(ga[:4], a, strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        assert kw["columns"]["oid"] == [f"f{i}" for i in feats]
        assert np.array_equal(kw["outline_enu"], oxyz) and np.array_equal(kw["outline_segments"], osegs)


def test_no_region_sized_pass_per_tile(tmp_path, monkeypatch):
    """Count the elements allocated by np.full while the tiles are split: before, every tile allocated a
    map of all the region's vertices and one of all its features (~tiles x region)."""
    mesh, outl, table = _mesh(24)  # 576 features, ~100 tiles
    counted = {"full": 0}
    real_full = np.full

    def full(shape, *a, **k):
        counted["full"] += int(np.prod(shape))
        return real_full(shape, *a, **k)

    monkeypatch.setattr(overlays.np, "full", full)
    got = _run(tmp_path, monkeypatch, mesh, outl, table)
    monkeypatch.undo()
    region = len(mesh.xyz) + len(mesh.triangles) + len(table)
    assert len(got) > 80
    assert counted["full"] <= 2 * region, (counted, region, len(got))
