"""CityJSON 2.0 export of the buildings layer (CityJSONSeq per tile): valid (structure, and every
Solid closed and outward by val3dity's rules), one feature per building of the layer, semantic surfaces,
vertices within 1 mm of the LoD2 solids, byte-identical across writes; the official validator cjval
(installed by `make cjval`, tests/_cjval.py) finds no error and no warning, on the demo district and on
all six real NRW LoD2 tiles, and does catch a broken file; cjio reads the files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.orchestrate.buildings import build_buildings_layers
from pipeline.orchestrate.buildings_cityjson import _extrusion, reference_system_url
from pipeline.stages.buildings.solids import Solid, build_solid, check_solid, newell_normal
from pipeline.tiles.cityjson import (
    feature_vertices,
    read_cityjsonseq,
    validate_cityjsonseq,
)
from tests._cjval import cjval, unavailable
from tests.conftest import REALDATA
from tests.integration.test_buildings_e2e import _ctx, district  # noqa: F401  (module fixture)


@pytest.fixture(scope="module")
def cj_built(district, tmp_path_factory):  # noqa: F811
    rel = tmp_path_factory.mktemp("cjrel") / "release"
    res = build_buildings_layers(_ctx(district, rel, max_features_per_tile=60), [])
    return rel, res[0]


def _files(rel: Path) -> list[Path]:
    return sorted((rel / "buildings" / "cityjson").rglob("*.city.jsonl"))


def _solids(head: dict, feat: dict) -> list[tuple[str, str, Solid]]:
    """(object id, lod, Solid) of every geometry in a feature, rebuilt from the CityJSON."""
    v = feature_vertices(head, feat)
    out = []
    for oid, co in feat["CityObjects"].items():
        for g in co["geometry"]:
            shell = g["boundaries"][0]
            polys = [[np.asarray(r, dtype=np.int64) for r in surf] for surf in shell]
            sem = np.asarray(g["semantics"]["values"][0], dtype=np.int8)
            out.append((oid, g["lod"], Solid(v, polys, sem)))
    return out


def test_valid_counts_semantics(cj_built):
    rel, res = cj_built
    files = _files(rel)
    assert len(files) >= 2  # several tiles
    assert res.stats["cityjson"]["files"] == len(files)
    assert {f"buildings/{f.relative_to(rel / 'buildings').as_posix()}" for f in files} <= set(res.files)
    bt = gpd.read_file(rel / "buildings" / "buildings.gpkg", layer="buildings").set_index("oid")
    seen: list[str] = []
    lods: dict[str, str] = {}
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert validate_cityjsonseq(text) == [], f
        head, feats = read_cityjsonseq(text)
        assert head["version"] == "2.0" and head["transform"]["scale"] == [0.001] * 3
        assert head["metadata"]["referenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/25832"
        ids = [ft["id"] for ft in feats]
        assert ids == sorted(ids)
        seen += ids
        for ft in feats:
            main = ft["CityObjects"][ft["id"]]
            assert main["type"] == "Building"
            a = main["attributes"]
            row = bt.loc[ft["id"]]
            assert a["lod_source"] == row["lod_source"]
            for oid, lod, solid in _solids(head, ft):
                lods[ft["id"]] = lod
                errs = check_solid(solid)
                assert errs == [], (oid, errs[:3])
                assert set(solid.semantics.tolist()) == {0, 1, 2}  # roof, wall, ground
                # ground faces down, roof faces up (semantics agree with the geometry)
                for k, rings in enumerate(solid.polygons):
                    n = newell_normal(solid.vertices[rings[0]])
                    if solid.semantics[k] == 2:
                        assert n[2] < 0
                    elif solid.semantics[k] == 0:
                        assert n[2] > 0
            g0 = main["geometry"][0] if main["geometry"] else None
            if g0 is not None:
                assert g0["semantics"]["surfaces"] == [
                    {"type": "RoofSurface"},
                    {"type": "WallSurface"},
                    {"type": "GroundSurface"},
                ]
            if row["lod_source"] in ("reconstructed", "official"):
                assert a["roofType"] == str(row["roof_type_code"])
                assert a["measuredHeight"] == pytest.approx(
                    row["ridge_height"] - row["base_height"], abs=2e-3
                )
                assert a["roof_rmse"] == pytest.approx(row["roof_rmse"], abs=1e-3)
    assert sorted(seen) == sorted(bt.index)  # one feature per building of the layer
    st = res.stats["cityjson"]
    assert st["lod22"] == res.stats["lod2"]["lod2"] and st["lod22"] + st["lod12"] + st["no_geometry"] == len(
        bt
    )
    n22 = sum(1 for v in lods.values() if v == "2.2")
    assert n22 == st["lod22"] > 0 and set(lods.values()) <= {"2.2", "1.2"}


def test_heights_match_layer(cj_built):
    """Heights in the file against the layer: ground at base_height, top at the ridge (LoD2) or the
    LoD1 roof height, within the 1 mm grid (the exact vertex round trip: test_partition_vertices_exact)."""
    rel, _res = cj_built
    bt = gpd.read_file(rel / "buildings" / "buildings.gpkg", layer="buildings").set_index("oid")
    checked = 0
    for f in _files(rel):
        head, feats = read_cityjsonseq(f.read_text(encoding="utf-8"))
        for ft in feats:
            row = bt.loc[ft["id"]]
            for _oid, lod, solid in _solids(head, ft):
                z = solid.vertices[np.concatenate([r for p in solid.polygons for r in p])][:, 2]
                ground = np.concatenate([solid.polygons[k][0] for k in np.flatnonzero(solid.semantics == 2)])
                assert np.abs(solid.vertices[ground, 2] - row["base_height"]).max() <= 1e-3
                top = row["ridge_height"] if lod == "2.2" else row["roof_height"]
                assert z.max() == pytest.approx(top, abs=2e-3)
                checked += 1
    assert checked >= len(bt)


def test_partition_vertices_exact(tmp_path):
    """Writer round trip on a known LoD2 solid: every vertex back within 1 mm, polygons identical."""
    from pipeline.orchestrate.buildings_cityjson import cityjson_tile
    from pipeline.stages.buildings.solids import RoofPartition, pack_partition

    fp = shapely.Polygon(
        [(400010.123, 5700020.456), (400022.5, 5700020.456), (400022.5, 5700030.0), (400010.123, 5700030.0)]
    )
    # gable: two planes meeting along y = 5700025.228
    ym = (5700020.456 + 5700030.0) / 2
    s = 0.6
    halves = [
        shapely.box(400010.123, 5700020.456, 400022.5, ym),
        shapely.box(400010.123, ym, 400022.5, 5700030.0),
    ]
    planes = np.array([[0.0, s, 60.0 - s * ym], [0.0, -s, 60.0 + s * ym]])
    part = RoofPartition(shapely.to_wkb(shapely.MultiPolygon(halves)), planes)
    solid = build_solid(part, 50.0)
    assert check_solid(solid) == []
    out = tmp_path / "t.city.jsonl"
    counts = cityjson_tile(
        str(out),
        ["B1"],
        [shapely.to_wkb(fp)],
        np.array([50.0]),
        np.array([58.0]),
        [pack_partition(part)],
        [{"oid": "B1", "roof_rmse": float("nan")}],
        "https://www.opengis.net/def/crs/EPSG/0/25832",
        "t",
    )
    assert counts == {"lod22": 1, "lod12": 0, "no_geometry": 0}
    text = out.read_text()
    assert validate_cityjsonseq(text) == []
    head, feats = read_cityjsonseq(text)
    assert "roof_rmse" not in feats[0]["CityObjects"]["B1"]["attributes"]  # NaN dropped
    [(_o, lod, back)] = _solids(head, feats[0])
    assert lod == "2.2"
    for p0, p1 in zip(solid.polygons, back.polygons, strict=True):
        for r0, r1 in zip(p0, p1, strict=True):
            assert np.abs(solid.vertices[r0] - back.vertices[r1]).max() <= 1e-3
    assert (solid.semantics == back.semantics).all()
    # LoD1 footprint of two parts -> Building + two BuildingParts, each a valid solid
    mp = shapely.MultiPolygon(
        [
            shapely.box(0, 0, 5, 5),
            shapely.Polygon([(10, 0), (20, 0), (20, 10), (10, 10)], [[(12, 2), (12, 4), (14, 4), (14, 2)]]),
        ]
    )
    out2 = tmp_path / "t2.city.jsonl"
    counts = cityjson_tile(
        str(out2), ["B2"], [shapely.to_wkb(mp)], np.array([1.0]), np.array([7.5]), [b""], [{}], None, "t"
    )
    assert counts["lod12"] == 1
    text = out2.read_text()
    assert validate_cityjsonseq(text) == []
    head, feats = read_cityjsonseq(text)
    assert "referenceSystem" not in head["metadata"]
    cos = feats[0]["CityObjects"]
    assert cos["B2"]["children"] == ["B2-part1", "B2-part2"] and cos["B2"]["geometry"] == []
    sols = _solids(head, feats[0])
    assert [o for o, _l, _s in sols] == ["B2-part1", "B2-part2"]
    for _o, lod, sol in sols:
        assert lod == "1.2" and check_solid(sol) == []
    assert check_solid(Solid(*_as_solid(_extrusion(shapely.box(0, 0, 1, 1), 0.0, 1.0)))) == []


def _as_solid(g):
    return g.vertices, g.polygons, g.semantics


def test_validator_finds_errors():
    head = '{"CityObjects":{},"transform":{"scale":[0.001,0.001,0.001],"translate":[0,0,0]},"type":"CityJSON","version":"2.0","vertices":[]}'
    good = {
        "type": "CityJSONFeature",
        "id": "a",
        "CityObjects": {"a": {"type": "Building", "geometry": []}},
        "vertices": [],
    }
    assert validate_cityjsonseq(head + "\n" + json.dumps(good) + "\n") == []
    bad = dict(good, id="b")
    assert any("feature id" in e for e in validate_cityjsonseq(head + "\n" + json.dumps(bad)))
    bad = dict(good, vertices=[[0, 0, 0]])
    assert any("unused" in e for e in validate_cityjsonseq(head + "\n" + json.dumps(bad)))
    geom = {
        "type": "Solid",
        "lod": 2,
        "boundaries": [[[[0, 1, 5]]]],
        "semantics": {"surfaces": [{"type": "RoofSurface"}], "values": [[0, 1]]},
    }
    bad = dict(
        good, CityObjects={"a": {"type": "Building", "geometry": [geom]}}, vertices=[[0, 0, 0], [1, 0, 0]]
    )
    errs = validate_cityjsonseq(head + "\n" + json.dumps(bad))
    assert any("lod" in e for e in errs) and any("out of range" in e for e in errs)
    assert any("semantics.values" in e for e in errs)
    assert any("version" in e for e in validate_cityjsonseq(head.replace('"2.0"', '"1.1"')))


def test_reference_system_url():
    from pipeline.config.model import CrsConfig

    url, note = reference_system_url(CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837"))
    assert url == "https://www.opengis.net/def/crs/EPSG/0/25832" and "7837" in note
    url, note = reference_system_url(
        CrsConfig(horizontal="EPSG:25832", vertical="EPSG:5783")
    )  # DHHN92: compound 5555 exists
    assert url == "https://www.opengis.net/def/crs/EPSG/0/5555" and note == ""


def test_byte_identical(cj_built, district, tmp_path):  # noqa: F811
    rel, _res = cj_built
    rel2 = tmp_path / "release"
    build_buildings_layers(_ctx(district, rel2, max_features_per_tile=60), [])
    a, b = _files(rel), _files(rel2)
    assert [p.relative_to(rel) for p in a] == [p.relative_to(rel2) for p in b]
    for p, q in zip(a, b, strict=True):
        assert p.read_bytes() == q.read_bytes()


needs_cjval = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@needs_cjval
def test_cjval(cj_built):
    """The official validator on every tile of the demo district: no error, no warning."""
    rel, res = cj_built
    docs = 0
    for f in _files(rel):
        rep = cjval(f)
        assert rep.errors == [] and rep.warnings == [], (f, rep.errors[:5], rep.warnings[:5])
        docs += rep.documents
    assert docs == len(_files(rel)) + res.stats["buildings"]  # the header and every feature of each tile


@needs_cjval
def test_cjval_catches_broken_files(cj_built, tmp_path):
    """cjval does report what is wrong (so that test_cjval cannot pass by checking nothing)."""
    rel, _res = cj_built
    lines = _files(rel)[0].read_text(encoding="utf-8").splitlines()
    n = 1 + next(i for i, ln in enumerate(lines[1:]) if json.loads(ln)["CityObjects"])

    def broken(edit) -> tuple[list[str], list[str]]:
        feat = json.loads(lines[n])
        edit(feat, next(co for co in feat["CityObjects"].values() if co.get("geometry"))["geometry"][0])
        f = tmp_path / "broken.city.jsonl"
        f.write_text("\n".join([*lines[:n], json.dumps(feat), *lines[n + 1 :]]) + "\n", encoding="utf-8")
        rep = cjval(f)
        return rep.errors, rep.warnings

    def bad_index(feat, g):
        g["boundaries"][0][0][0][0] = len(feat["vertices"]) + 7

    def bad_surface(feat, g):
        g["semantics"]["surfaces"][0]["type"] = "Roof"

    def bad_semantics(feat, g):
        g["semantics"]["values"][0].append(0)

    def unused_vertex(feat, g):
        feat["vertices"].append([0, 0, 0])

    def duplicate_vertex(feat, g):
        feat["vertices"].append(feat["vertices"][g["boundaries"][0][0][0][0]])
        g["boundaries"][0][0][0][0] = len(feat["vertices"]) - 1

    errs, _w = broken(bad_index)
    assert any("wrong_vertex_index" in e for e in errs), errs
    errs, _w = broken(bad_surface)
    assert any(": schema: " in e and "not valid under any of the given schemas" in e for e in errs), errs
    errs, _w = broken(bad_semantics)
    assert any("semantics_arrays" in e for e in errs), errs
    errs, warns = broken(unused_vertex)
    assert errs == [] and any("unused_vertices" in w for w in warns), warns
    errs, warns = broken(duplicate_vertex)
    assert errs == [] and any("duplicate_vertices" in w for w in warns), warns
    errs, warns = broken(lambda feat, g: feat.update(extra=1))
    assert errs == [] and any("extra_root_properties" in w for w in warns), warns


@pytest.mark.skipif(
    shutil.which("cjio", path=str(Path(sys.executable).parent)) is None, reason="cjio not installed"
)
def test_cjio_reads(cj_built):
    rel, _res = cj_built
    f = _files(rel)[0]
    cjio = str(Path(sys.executable).parent / "cjio")
    r = subprocess.run([cjio, "stdin", "info"], input=f.read_bytes(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = r.stdout.decode() + r.stderr.decode()
    n = len(read_cityjsonseq(f.read_text())[1])
    assert "Building" in out and str(n) in out


def test_release_validation_checks_cityjson(cj_built, tmp_path):
    """The release's validation stage reads every listed .city.jsonl and refuses a broken one."""
    from pipeline.errors import ValidationError
    from pipeline.release.validate import validate_release

    rel, res = cj_built
    files = [f for f in res.files if f.endswith(".city.jsonl")]
    manifest = {"layers": [{"name": "buildings", "files": files}]}
    report = validate_release(rel, {"layers": []}, check_gltf=False)
    assert report["cityjson_validated"] == 0
    report = validate_release(rel, manifest, check_gltf=False)
    assert report["ok"] and report["cityjson_validated"] == len(files)
    broken = tmp_path / "rel"
    shutil.copytree(rel / "buildings" / "cityjson", broken / "buildings" / "cityjson")
    f = broken / files[0]
    lines = f.read_text().splitlines()
    feat = json.loads(lines[1])
    feat["vertices"].append([0, 0, 0])  # an unused vertex
    lines[1] = json.dumps(feat)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationError, match="unused vertices"):
        validate_release(broken, manifest, check_gltf=False)


def _nrw_build(tmp_path: Path, lod2_tiles: str, origin: tuple[float, float]):
    """The buildings layer of real NRW LoD2 tiles (official LoD2 footprints and roofs, the 300 m crop of
    points of tile 360/5721)."""
    from pipeline.buildlog import BuildLog
    from pipeline.config.model import TwinConfig
    from pipeline.crs import project_frame
    from pipeline.model import BuildContext
    from pipeline.orchestrate.inputs import scan_inputs

    nrw = REALDATA / "nrw"
    laz = nrw / "3dm_32_360_5721_crop300_360650_5721600.laz"
    if not (laz.is_file() and list(nrw.glob(lod2_tiles))):
        pytest.skip("NRW LoD2 tiles or crop missing (../shared/realdata/nrw)")
    cfg = TwinConfig.model_validate(
        {
            "name": "nrw",
            "paths": {"raw": str(nrw), "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache")},
            "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
            "sources": {
                "aerial": [{"epoch": "2022", "points": laz.name, "class_scheme": "asprs"}],
                "cadastre": {"path": lod2_tiles, "format": "generic"},
                "reference_citygml": lod2_tiles,
            },
            "layers": {"buildings": {"lod2_source": "official"}},
        }
    )
    rel = tmp_path / "release"
    rel.mkdir()
    ctx = BuildContext(
        cfg=cfg,
        build_id="t",
        release_dir=rel,
        frame=project_frame(cfg.crs, (*origin, 0.0)),
        inputs=scan_inputs(cfg),
        log=BuildLog(quiet=True),
    )
    return rel, build_buildings_layers(ctx, [])[0]


@pytest.mark.realdata
def test_real_tile_official_roofs(tmp_path):
    """The real NRW tile 360/5721: every building one feature, every Solid closed and outward,
    CityJSON structure valid."""
    rel, res = _nrw_build(tmp_path, "LoD2_32_360_5721_1_NW.gml", (360_500.0, 5_721_500.0))
    st = res.stats["cityjson"]
    print(st, res.stats["lod2"])
    assert st["lod22"] == res.stats["lod2"]["lod2"] > 0
    n = 0
    for f in _files(rel):
        text = f.read_text(encoding="utf-8")
        assert validate_cityjsonseq(text) == [], f
        head, feats = read_cityjsonseq(text)
        n += len(feats)
        for ft in feats:
            for oid, _lod, solid in _solids(head, ft):
                assert check_solid(solid) == [], oid
    assert n == res.stats["buildings"]


@pytest.mark.realdata
@pytest.mark.slow  # ~60 s CPU (562 documents under Wine): `make test-all` (CI)
@needs_cjval
def test_cjval_real_tiles(tmp_path):
    """The official validator on the CityJSON of all six real NRW LoD2 tiles (514 buildings, 461 with the
    official LoD2 roofs): no error, no warning."""
    rel, res = _nrw_build(tmp_path, "LoD2_32_*_1_NW.gml", (362_000.0, 5_721_000.0))
    docs = 0
    for f in _files(rel):
        rep = cjval(f)
        assert rep.errors == [] and rep.warnings == [], (f, rep.errors[:5], rep.warnings[:5])
        docs += rep.documents
    assert docs == len(_files(rel)) + res.stats["buildings"] and res.stats["cityjson"]["lod22"] > 400


@pytest.mark.slow  # long end-to-end run: `make test-all` (CI), not `make test`
def test_official_schemas(cj_built, tmp_path_factory):
    """Header and every feature against the official CityJSON 2.0.0 schemas (the ones cjval uses,
    taken from a cjvalpy wheel: tests/_cityjson_schemas.py); the schemas do catch a broken feature."""
    import jsonschema

    from tests._cityjson_schemas import official_schemas

    schemas = official_schemas(Path(str(tmp_path_factory.getbasetemp())) / "cityjson-schemas")
    if schemas is None:
        pytest.skip("the cjvalpy wheel (official schemas) cannot be downloaded")
    cls = jsonschema.validators.validator_for(schemas["cityjson.schema.json"])
    vh = cls(schemas["cityjson.schema.json"])
    vf = cls(schemas["cityjsonfeature.schema.json"])
    rel, _res = cj_built
    nfeat = 0
    for f in _files(rel):
        head, feats = read_cityjsonseq(f.read_text(encoding="utf-8"))
        assert [e.message for e in vh.iter_errors(head)] == [], f
        for ft in feats:
            assert [e.message[:200] for e in vf.iter_errors(ft)] == [], ft["id"]
            nfeat += 1
    assert nfeat > 100
    ft = next(ft for ft in feats if ft["CityObjects"][ft["id"]]["geometry"])
    ft["CityObjects"][ft["id"]]["geometry"][0]["semantics"]["surfaces"][0]["type"] = "Roof"
    assert list(vf.iter_errors(ft))


def test_unchanged_tiles_from_cache(district, tmp_path):  # noqa: F811
    """A rebuild with the same cache hard-links every unchanged CityJSON tile from the cache."""
    a = tmp_path / "a" / "release"
    build_buildings_layers(_ctx(district, a, max_features_per_tile=60), [])
    b = tmp_path / "a" / "release2"  # same paths.cache (rel.parent / "cache")
    build_buildings_layers(_ctx(district, b, max_features_per_tile=60), [])
    fa, fb = _files(a), _files(b)
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb] and fa
    for p, q in zip(fa, fb, strict=True):
        assert p.read_bytes() == q.read_bytes()
        assert p.stat().st_ino == q.stat().st_ino  # both linked to the one cache entry


def test_lod1_footprint_with_sub_mm_edge(tmp_path):
    """A footprint edge shorter than the 1 mm grid does not become a degenerate wall."""
    from pipeline.orchestrate.buildings_cityjson import cityjson_tile

    fp = shapely.Polygon([(0, 0), (10, 0), (10, 10), (10.0004, 10.0002), (0, 10)])
    out = tmp_path / "t.city.jsonl"
    cityjson_tile(
        str(out), ["C"], [shapely.to_wkb(fp)], np.array([0.0]), np.array([5.0]), [b""], [{}], None, "t"
    )
    text = out.read_text()
    assert validate_cityjsonseq(text) == []
    head, feats = read_cityjsonseq(text)
    [(_o, _lod, sol)] = _solids(head, feats[0])
    assert check_solid(sol) == [] and len(sol.polygons) == 2 + 4
