"""NAS for real: complete deliveries and NBA updates (insert / replace / delete / end of life) applied in
the documented order across files, zip and gzip archives, broken XML refused with file and line, memory
independent of the file size, and the demo district built with its cadastre as NAS through config alone."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from pipeline.errors import EXIT_INPUT, InputError
from pipeline.orchestrate.inputs import verify_file
from pipeline.sources.cadastre import read_footprints, read_parcels
from pipeline.sources.cadastre.nas import nas_file_order, read_header, read_nas_files, verify_nas
from pipeline.sources.cadastre.nas_write import synthesize_nas, write_bestandsdatenauszug, write_nba

REPO = Path(__file__).resolve().parents[2]
X0, Y0 = 362_000.0, 5_716_000.0


def _oid(k: str) -> str:
    return f"DENW36AL0000{k:0>4}"


def _buildings(spec: list[tuple[str, float, str]]) -> gpd.GeoDataFrame:
    """[(key, x offset, function code)] -> 10 m x 8 m buildings in a row."""
    return gpd.GeoDataFrame(
        {
            "oid": [_oid(k) for k, _, _ in spec],
            "gfkzshh": [f"31001_{c}" for _, _, c in spec],
            "anzahlgs": [2] * len(spec),
        },
        geometry=[shapely.box(X0 + dx, Y0, X0 + dx + 10, Y0 + 8) for _, dx, _ in spec],
        crs="EPSG:25832",
    )


def _parcels(keys: list[str]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "oid": [_oid(f"P{k}") for k in keys],
            "flstkennz": [f"05443200100{int(k):05d}______"[:20] for k in keys],
        },
        geometry=[shapely.box(X0 + 100 * int(k), Y0 - 50, X0 + 100 * int(k) + 90, Y0 - 10) for k in keys],
        crs="EPSG:25832",
    )


@pytest.fixture
def delivery(tmp_path: Path) -> dict[str, Path]:
    """A complete delivery (B1..B6, two parcels) and two NBA portions whose file names sort the wrong
    way round (the portion date decides)."""
    base = tmp_path / "z_base.xml"
    write_bestandsdatenauszug(
        base,
        _buildings([(f"B{i}", 20.0 * i, "1000") for i in range(1, 7)]),
        _parcels(["1", "2"]),
    )
    first = tmp_path / "b_nba.xml"  # 2025-01-31: insert N1, replace B2, delete B3 + parcel 2, end B4
    write_nba(
        first,
        inserts=_buildings([("N1", 200.0, "2463")]),
        replaces=_buildings([("B2", 40.0 + 2.0, "2020")]),
        deletes=[("AX_Gebaeude", _oid("B3")), ("AX_Flurstueck", _oid("P2")), ("AX_Gebaeude", _oid("B9"))],
        ended=[("AX_Gebaeude", _oid("B4"))],
        datum="2025-01-31T10:00:00Z",
        number=1,
        stamp="20250131T100000Z",
    )
    second = tmp_path / "a_nba.xml"  # 2025-02-28: replace N1 (inserted by the first portion), delete B5
    write_nba(
        second,
        replaces=_buildings([("N1", 200.0, "2461")]),
        deletes=[("AX_Gebaeude", _oid("B5"))],
        datum="2025-02-28T10:00:00Z",
        number=1,
        stamp="20250228T100000Z",
        old_stamp="20250131T100000Z",
    )
    return {"base": base, "first": first, "second": second}


EXPECTED = {  # oid -> (function code, x offset) after both portions
    _oid("B1"): ("1000", 20.0),
    _oid("B2"): ("2020", 42.0),
    _oid("B6"): ("1000", 120.0),
    _oid("N1"): ("2461", 200.0),
}


def _check_state(buildings: gpd.GeoDataFrame) -> None:
    got = {
        o: (g.rsplit("_", 1)[-1], round(geom.bounds[0] - X0, 3))
        for o, g, geom in zip(buildings["oid"], buildings["gfkzshh"], buildings.geometry, strict=True)
    }
    assert got == EXPECTED


def test_documented_order_complete_delivery_first_then_portions_by_date(delivery):
    files = [delivery["second"], delivery["base"], delivery["first"]]
    order = [Path(d.path).name for d, _h in nas_file_order(files)]
    assert order == ["z_base.xml", "b_nba.xml", "a_nba.xml"]
    h = read_header(nas_file_order(files)[2][0])
    assert h.is_update and h.root == "AX_NutzerbezogeneBestandsdatenaktualisierung_NBA"
    assert h.datum == "2025-02-28T10:00:00Z" and h.number == 1


def test_updates_insert_replace_delete_and_end_of_life(delivery):
    rejected: list = []
    b, p = read_nas_files(list(delivery.values()), rejected)
    _check_state(b)
    # a replaced object keeps its place; inserts follow the delivery's objects
    assert list(b["oid"]) == [_oid("B1"), _oid("B2"), _oid("B6"), _oid("N1")]
    assert b.set_index("oid").loc[_oid("B2"), "source_file"] == str(delivery["first"])
    assert b.set_index("oid").loc[_oid("N1"), "funktion"] == "Parkhaus"
    assert list(p["flstkennz"]) == ["0544320010000001____"]
    # the delete of an object that was never delivered is reported, not ignored
    assert [(r.id, r.file) for r in rejected] == [(_oid("B9"), str(delivery["first"]))]
    assert "not read before" in rejected[0].reason
    # through the public readers (as the buildings layer calls them)
    t = read_footprints(list(delivery.values()), "nas")
    _check_state(t.gdf)
    assert list(read_parcels(list(delivery.values()), "nas")["flstkennz"]) == ["0544320010000001____"]


def test_without_the_updates_the_complete_delivery_is_read_as_is(delivery):
    b, p = read_nas_files([delivery["base"]], [])
    assert sorted(b["oid"]) == sorted(_oid(f"B{i}") for i in range(1, 7)) and len(p) == 2


def test_zipped_and_gzipped_nas_give_the_same_state(delivery, tmp_path: Path):
    z = tmp_path / "lieferung.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in delivery.values():
            zf.write(p, f"nas/{p.name}")
        zf.writestr("nas/readme.txt", "not NAS")  # only .xml / .nas / .gz members are read
    b, _p = read_nas_files([z], [])
    _check_state(b)
    assert b["source_file"].iloc[0] == f"{z}!nas/z_base.xml"
    assert verify_file(str(z), "nas") is None
    # a NAS .xml is checked as NAS when the config says so (by extension it went to GDAL's GML driver:
    # no NAS driver in the wheels, real deliveries refused as corrupt, a .gfs written beside the file)
    assert verify_file(str(delivery["base"]), "nas") is None
    # gzip-compressed NAS, named .nas: told by content
    gz = tmp_path / "base.nas"
    gz.write_bytes(gzip.compress(delivery["base"].read_bytes()))
    b2, _ = read_nas_files([gz, delivery["first"], delivery["second"]], [])
    _check_state(b2)
    with pytest.raises(InputError, match="no NAS XML member"):
        empty = tmp_path / "empty.zip"
        with zipfile.ZipFile(empty, "w") as zf:
            zf.writestr("a.txt", "x")
        read_nas_files([empty], [])


def test_truncated_nas_is_an_input_error_with_file_and_line(delivery, tmp_path: Path):
    data = delivery["base"].read_bytes()
    cut = tmp_path / "truncated.xml"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match=r"broken NAS XML at line \d+") as e:
        read_footprints([cut], "nas")
    assert e.value.path == str(cut) and e.value.exit_code == EXIT_INPUT
    with pytest.raises(InputError, match="line"):
        read_parcels([cut], "nas")
    problem = verify_file(str(cut), "nas")  # the input check of `twin build` (the caller names the file)
    assert problem is not None and problem.startswith("broken NAS XML at line")
    # inside a zip the member is named
    z = tmp_path / "t.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("part1.xml", data[: len(data) // 2])
    with pytest.raises(InputError) as e2:
        verify_nas(z)
    assert e2.value.path == f"{z}!part1.xml"
    assert verify_file(str(z), "nas").startswith(f"{z}!part1.xml: broken NAS XML at line")
    # an update that cannot be applied (an unsupported wfs:Update) is refused, not guessed
    bad = tmp_path / "bad_update.xml"
    write_nba(bad, ended=[("AX_Gebaeude", _oid("B1"))])
    bad.write_text(bad.read_text().replace("adv:AA_Lebenszeitintervall/adv:endet", "adv:gebaeudefunktion"))
    with pytest.raises(InputError, match="wfs:Update"):
        read_nas_files([delivery["base"], bad], [])


def test_memory_does_not_grow_with_the_objects_it_does_not_keep(tmp_path: Path):
    """~15 MB of NAS, mostly objects the buildings layer ignores: the reader's high-water mark grows by a
    few MB (the old reader kept ~8x the file)."""
    path = tmp_path / "big.xml"
    gen = synthesize_nas(path, 15_000_000, other_kb_per_record=30.0)
    code = (
        "import resource, sys, json\n"
        "from pipeline.sources.cadastre.nas import read_nas_files\n"
        "import geopandas\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "b, p = read_nas_files([sys.argv[1]], [])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps([len(b), len(p), (peak - base) / 1024]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True
    )
    n_b, n_p, grew_mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert (n_b, n_p) == (gen["buildings"], gen["parcels"])
    assert gen["bytes"] > 14e6 and gen["other"] > 10_000
    assert grew_mb < 20, f"reader grew by {grew_mb:.0f} MB on a {gen['bytes'] / 1e6:.0f} MB file"


# ---- the demo district with its cadastre delivered as NAS, built through config alone -------------------

NAS_CONFIG = """
name: nasdemo
paths: {{raw: raw, out: out, cache: cache}}
runtime: {{workers: 1, progress: false}}
sources:
  aerial:
    - {{epoch: "2024", points: "aerial/2024/*.laz", class_scheme: adv}}
  dgm: {{path: "dgm/*.tif"}}
  cadastre: {{path: "{cadastre}", format: nas}}
layers:
  aerial_points: {{enabled: false}}
  mobile_points: {{enabled: false}}
  panoramas: {{enabled: false}}
  terrain: {{enabled: false}}
  overlays: {{enabled: false}}
  change: {{enabled: false}}
  viewer: {{enabled: false}}
release: {{validate_gltf: false}}
"""


@pytest.fixture(scope="module")
def demo_nas(tmp_path_factory):
    """The tiny demo district; its ALKIS GeoPackage re-delivered as a zipped NAS (complete delivery) plus
    an NBA portion deleting one building, named `.nas` (the format is configured, not guessed)."""
    from pipeline.sources.demo import generate_demo

    root = tmp_path_factory.mktemp("nasdemo")
    raw = root / "raw"
    generate_demo(raw, size_m=200, tile_m=100, density=8, progress=False, mobile=False)
    gpkg = next((raw / "alkis").glob("*.gpkg"))
    buildings = pyogrio.read_dataframe(gpkg, layer="GebauedeBauwerk")
    parcels = pyogrio.read_dataframe(gpkg, layer="Flurstueck")
    reference = read_footprints([gpkg], "alkis_gpkg", layer="GebauedeBauwerk")
    nas_dir = raw / "nas"
    nas_dir.mkdir()
    base = root / "bestand.xml"
    write_bestandsdatenauszug(base, buildings, parcels)
    with zipfile.ZipFile(nas_dir / "01_bestand.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(base, "bestand.xml")
    gone = str(reference.gdf["oid"].iloc[0])
    write_nba(nas_dir / "02_portion.nas", deletes=[("AX_Gebaeude", gone)])
    return root, reference, gone, len(parcels)


def test_demo_builds_with_nas_cadastre_through_config(demo_nas):
    from pipeline.cli.main import main

    root, reference, gone, n_parcels = demo_nas
    cfg = root / "twin.yaml"
    cfg.write_text(NAS_CONFIG.format(cadastre="nas/*"))
    assert main(["build", str(cfg), "--quiet"]) == 0
    release = max((root / "out" / "releases").iterdir())
    got = pyogrio.read_dataframe(release / "buildings" / "buildings.gpkg", layer="buildings")
    want = sorted(set(reference.gdf["oid"]) - {gone})
    assert sorted(got["oid"]) == want
    # same footprints as from the GeoPackage (coordinates written with 3 decimals)
    ref = reference.gdf.set_index("oid").loc[want]
    ours = got.set_index("oid").loc[want]
    assert (shapely.hausdorff_distance(ref.geometry.values, ours.geometry.values) < 2e-3).all()
    assert list(ours["funktion"]) == list(ref["funktion"])
    assert len(read_parcels(sorted((root / "raw" / "nas").iterdir()), "nas")) == n_parcels


def test_demo_build_refuses_a_truncated_nas(demo_nas, capsys):
    from pipeline.cli.main import main

    root, _reference, _gone, _n = demo_nas
    bad = root / "raw" / "bad"
    bad.mkdir(exist_ok=True)
    data = zipfile.ZipFile(root / "raw" / "nas" / "01_bestand.zip").read("bestand.xml")
    (bad / "bestand.xml").write_bytes(data[: int(len(data) * 0.6)])
    cfg = root / "twin_bad.yaml"
    cfg.write_text(NAS_CONFIG.format(cadastre="bad/*.xml").replace("name: nasdemo", "name: nasbad"))

    def published() -> list[str]:
        rel = root / "out" / "releases"
        return sorted(p.name for p in rel.iterdir() if not p.name.startswith(".")) if rel.exists() else []

    before = published()
    assert main(["build", str(cfg), "--quiet"]) == EXIT_INPUT
    assert published() == before  # nothing published
    err = capsys.readouterr().err  # one line naming the file and the line in it
    assert str(bad / "bestand.xml") in err and re.search(r"broken NAS XML at line \d+", err)


def test_utm33_delivery_read_in_its_own_crs_or_converted(tmp_path: Path):
    """A Brandenburg-style NAS (urn:adv:crs:ETRS89_UTM33): exact in a UTM33 working CRS, else converted."""
    b33 = _buildings([("B1", 0.0, "1000")]).set_crs("EPSG:25833", allow_override=True)
    p = tmp_path / "utm33.xml"
    write_bestandsdatenauszug(p, b33, None, srs="urn:adv:crs:ETRS89_UTM33")
    same, _ = read_nas_files([p], [], target_crs="EPSG:25833")
    assert same.crs == "EPSG:25833" and same.geometry.iloc[0].equals_exact(b33.geometry.iloc[0], 0)
    own, _ = read_nas_files([p], [])  # no working CRS given: the file's own (its srsName)
    assert own.crs == "EPSG:25833" and own.geometry.iloc[0].equals_exact(b33.geometry.iloc[0], 0)
    conv, _ = read_nas_files([p], [], target_crs="EPSG:25832")
    want = b33.to_crs("EPSG:25832").geometry.iloc[0]
    assert conv.crs == "EPSG:25832" and shapely.hausdorff_distance(conv.geometry.iloc[0], want) < 1e-6


def test_portion_header_after_the_operations_still_orders_the_files(delivery, tmp_path: Path):
    """Some writers put `portionskennung` after `geaenderteObjekte`: it is then read from the end of the
    document (plain and zipped)."""
    for key in ("first", "second"):
        text = delivery[key].read_text(encoding="utf-8")
        block = re.search(r"<portionskennung>.*?</portionskennung>\n?", text, re.S).group(0)
        text = text.replace(block, "").replace(
            "</AX_NutzerbezogeneBestandsdatenaktualisierung_NBA>",
            block + "</AX_NutzerbezogeneBestandsdatenaktualisierung_NBA>",
        )
        assert text.index("<portionskennung>") > text.index("</geaenderteObjekte>")
        delivery[key].write_text(text, encoding="utf-8")
    files = [delivery["second"], delivery["first"], delivery["base"]]
    assert [h.datum for _d, h in nas_file_order(files)] == [
        "",
        "2025-01-31T10:00:00Z",
        "2025-02-28T10:00:00Z",
    ]
    _check_state(read_nas_files(files, [])[0])
    z = tmp_path / "portions.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(delivery["second"], "1.xml")
        zf.write(delivery["first"], "2.xml")
    _check_state(read_nas_files([z, delivery["base"]], [])[0])
