"""Issue 13: the working CRS defaults to the inputs' own (`crs: auto`), taken from LAS/LAZ headers, DGM
GeoTIFFs and cadastre files (GeoPackage, NAS and CityGML srsName); inputs that disagree stop the build
naming the files and their CRSs. Class scheme `auto` of aerial epochs is decided from the files' codes and
names before the buildings stage. NAS and CityGML readers honour the srsName (AdV `urn:adv:crs:` names)
and read straight into the working CRS. Crafted files only."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import laspy
import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import CRS

from pipeline.config.loader import config_hash, load_config
from pipeline.errors import EXIT_CRS, CrsError, InputError
from pipeline.orchestrate.inputs import scan_inputs
from pipeline.orchestrate.working_crs import resolve_working_crs

X0, Y0 = 362_000.0, 5_716_000.0


def _laz(path: Path, crs: str | None, codes=(2, 6), xy=(X0, Y0), n: int = 200) -> Path:
    hdr = laspy.LasHeader(point_format=6, version="1.4")
    hdr.scales = np.array([0.001, 0.001, 0.001])
    hdr.offsets = np.array([xy[0], xy[1], 0.0])
    if crs:
        hdr.add_crs(CRS.from_user_input(crs))
    las = laspy.LasData(hdr)
    rng = np.random.default_rng(1)
    las.x = xy[0] + rng.uniform(0, 50, n)
    las.y = xy[1] + rng.uniform(0, 50, n)
    las.z = 60 + rng.uniform(0, 10, n)
    las.classification = np.resize(np.asarray(codes, dtype=np.uint8), n)
    path.parent.mkdir(parents=True, exist_ok=True)
    las.write(path)
    return path


def _dgm(path: Path, crs: str, x0: float = X0, y0: float = Y0) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=10, height=10, count=1, dtype="float32", crs=crs,
        transform=from_origin(x0, y0 + 10, 1.0, 1.0),
    ) as ds:  # fmt: skip
        ds.write(np.full((1, 10, 10), 60.0, dtype=np.float32))
    return path


def _gpkg(path: Path, crs: str, x0: float = X0, y0: float = Y0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = gpd.GeoDataFrame(
        {"oid": ["DENW36AL00000001"], "gfkzshh": ["31001_1000"]},
        geometry=[shapely.box(x0, y0, x0 + 10, y0 + 8)],
        crs=crs,
    )
    pyogrio.write_dataframe(g, path, layer="GebauedeBauwerk", driver="GPKG")
    return path


def _project(tmp_path: Path, sources: str, crs: str = "") -> Path:
    cfg = tmp_path / "twin.yaml"
    cfg.write_text(
        "name: t\npaths: {raw: raw, out: out, cache: cache}\n"
        + (f"crs: {crs}\n" if crs else "")
        + "runtime: {progress: false}\nsources:\n"
        + sources
    )
    return cfg


AERIAL = '  aerial: [{epoch: "2024", points: "aerial/*.laz", class_scheme: adv}]\n'
DGM = '  dgm: {path: "dgm/*.tif"}\n'
CADASTRE = '  cadastre: {path: "alkis/*.gpkg"}\n'


def _resolve(cfg_path: Path):
    cfg = load_config(cfg_path)
    return resolve_working_crs(cfg, scan_inputs(cfg))


def test_default_is_auto_and_resolves_to_the_inputs_own(tmp_path):
    raw = tmp_path / "raw"
    _laz(raw / "aerial" / "a.laz", "EPSG:25832+7837", codes=(2, 20))
    _laz(raw / "aerial" / "b.laz", "EPSG:25832+7837", codes=(2, 20), xy=(X0 + 50, Y0))
    _dgm(raw / "dgm" / "d.tif", "EPSG:25832")  # horizontal only: agrees, says nothing about heights
    _gpkg(raw / "alkis" / "c.gpkg", "EPSG:25832")
    auto = _resolve(_project(tmp_path, AERIAL + DGM + CADASTRE))
    assert (auto.crs.horizontal, auto.crs.vertical) == ("EPSG:25832", "EPSG:7837")
    # the same config with the CRS spelled out hashes the same: same build id, same release bytes
    explicit = load_config(
        _project(tmp_path, AERIAL + DGM + CADASTRE, "{horizontal: EPSG:25832, vertical: EPSG:7837}")
    )
    assert resolve_working_crs(explicit, []) is explicit  # nothing to resolve
    assert config_hash(auto) == config_hash(explicit)


def test_inputs_that_disagree_name_the_files_and_the_key(tmp_path):
    """UTM 32 points and a UTM 33 DGM + cadastre, no CRS configured: a CrsError (exit 4) naming each file
    with its CRS and how to set `crs`; with the working CRS configured the same delivery resolves."""
    raw = tmp_path / "raw"
    _laz(raw / "aerial" / "a.laz", "EPSG:25832+7837")
    _dgm(raw / "dgm" / "d.tif", "EPSG:25833", x0=-200_000.0)
    _gpkg(raw / "alkis" / "c.gpkg", "EPSG:25833", x0=-200_000.0)
    with pytest.raises(CrsError) as e:
        _resolve(_project(tmp_path, AERIAL + DGM + CADASTRE))
    msg = e.value.message
    assert e.value.exit_code == EXIT_CRS
    assert "EPSG:25832 (ETRS89 / UTM zone 32N): aerial/a.laz" in msg
    assert "EPSG:25833 (ETRS89 / UTM zone 33N): dgm/d.tif, alkis/c.gpkg" in msg
    assert "crs: {horizontal: EPSG:25832, vertical: EPSG:7837}" in msg
    cfg = _resolve(_project(tmp_path, AERIAL + DGM + CADASTRE, "{horizontal: EPSG:25833}"))
    assert (cfg.crs.horizontal, cfg.crs.vertical) == ("EPSG:25833", "EPSG:7837")


def test_disagreeing_vertical_crss_are_named(tmp_path):
    raw = tmp_path / "raw"
    _laz(raw / "aerial" / "a.laz", "EPSG:25832+7837")
    _laz(raw / "aerial" / "b.laz", "EPSG:25832+5783", xy=(X0 + 50, Y0))
    with pytest.raises(CrsError, match=r"2 different vertical CRSs: EPSG:7837 .*a\.laz; EPSG:5783 .*b\.laz"):
        _resolve(_project(tmp_path, AERIAL))


def test_the_build_stops_with_exit_4_naming_the_files(tmp_path, capsys):
    from pipeline.cli.main import main

    raw = tmp_path / "raw"
    _laz(raw / "aerial" / "a.laz", "EPSG:25832+7837")
    _laz(raw / "aerial" / "b.laz", "EPSG:25833+7837", xy=(-200_000.0, Y0))
    assert main(["build", str(_project(tmp_path, AERIAL)), "--quiet"]) == EXIT_CRS
    err = capsys.readouterr().err
    assert "aerial/a.laz" in err and "aerial/b.laz" in err and "EPSG:25833" in err and "crs:" in err
    assert not (tmp_path / "out" / "releases").exists() or not any((tmp_path / "out" / "releases").iterdir())


def test_no_vertical_crs_anywhere_asks_for_it(tmp_path):
    """The NRW case: files that declare EPSG:25832 only; auto cannot know the heights' datum."""
    _laz(tmp_path / "raw" / "aerial" / "a.laz", "EPSG:25832")
    with pytest.raises(CrsError, match=r"crs\.vertical is 'auto'.*set crs\.vertical"):
        _resolve(_project(tmp_path, AERIAL))
    cfg = _resolve(_project(tmp_path, AERIAL, "{vertical: EPSG:7837}"))
    assert (cfg.crs.horizontal, cfg.crs.vertical) == ("EPSG:25832", "EPSG:7837")
    cfg = _resolve(_project(tmp_path, AERIAL, "{assume_ellipsoidal_heights: true}"))
    assert (cfg.crs.horizontal, cfg.crs.vertical) == ("EPSG:25832", None)


def test_geographic_inputs_are_no_working_crs(tmp_path):
    _laz(tmp_path / "raw" / "aerial" / "a.laz", "EPSG:4979", xy=(7.0, 51.0))
    with pytest.raises(CrsError, match="not a projected CRS"):
        _resolve(_project(tmp_path, AERIAL))


def test_nas_srsname_decides_the_working_crs(tmp_path):
    """A Brandenburg NAS (urn:adv:crs:ETRS89_UTM33, also zipped) with the DHHN2016 heights configured."""
    import zipfile

    from pipeline.sources.cadastre.nas_write import write_bestandsdatenauszug

    b = gpd.GeoDataFrame(
        {"oid": ["DEBBAL0000000001"], "gfkzshh": ["31001_1000"], "anzahlgs": [2]},
        geometry=[shapely.box(400_000, 5_800_000, 400_010, 5_800_008)],
        crs="EPSG:25833",
    )
    nas = tmp_path / "raw" / "alkis" / "bda.xml"
    nas.parent.mkdir(parents=True)
    write_bestandsdatenauszug(nas, b, None, srs="urn:adv:crs:ETRS89_UTM33")
    src = '  cadastre: {path: "alkis/*", format: nas}\n'
    cfg = _resolve(_project(tmp_path, src, "{vertical: EPSG:7837}"))
    assert cfg.crs.horizontal == "EPSG:25833"
    with zipfile.ZipFile(nas.with_suffix(".zip"), "w") as zf:
        zf.write(nas, "bda.xml")
    nas.unlink()
    cfg = _resolve(_project(tmp_path, src, "{vertical: EPSG:7837}"))
    assert cfg.crs.horizontal == "EPSG:25833"


def test_unknown_srsname_is_refused_not_guessed(tmp_path):
    from pipeline.sources.cadastre.nas_write import write_bestandsdatenauszug

    b = gpd.GeoDataFrame(
        {"oid": ["DEBBAL0000000001"], "gfkzshh": ["31001_1000"], "anzahlgs": [2]},
        geometry=[shapely.box(400_000, 5_800_000, 400_010, 5_800_008)],
    )
    nas = tmp_path / "raw" / "alkis" / "bda.xml"
    nas.parent.mkdir(parents=True)
    write_bestandsdatenauszug(nas, b, None, srs="urn:adv:crs:NOWHERE_GK9")
    with pytest.raises(CrsError, match="unknown srsName 'urn:adv:crs:NOWHERE_GK9'"):
        _resolve(_project(tmp_path, '  cadastre: {path: "alkis/*", format: nas}\n', "{vertical: EPSG:7837}"))


# ---- readers: the file's srsName honoured, read straight into the working CRS ----------------------------


def test_nas_read_straight_into_the_working_crs(tmp_path):
    """read_footprints / read_parcels hand the working CRS to the NAS reader: a UTM 33 delivery read into
    UTM 32 equals PROJ's transformation of its coordinates; without a working CRS it stays in its own."""
    from pipeline.sources.cadastre import read_footprints, read_parcels
    from pipeline.sources.cadastre.nas_write import write_bestandsdatenauszug

    b33 = gpd.GeoDataFrame(
        {"oid": ["DEBBAL0000000001"], "gfkzshh": ["31001_1000"], "anzahlgs": [2]},
        geometry=[shapely.box(-200_000, 5_716_000, -199_990, 5_716_008)],
        crs="EPSG:25833",
    )
    p33 = gpd.GeoDataFrame(
        {"oid": ["DEBBAL000000P001"], "flstkennz": ["120001001000010000__"]},
        geometry=[shapely.box(-200_050, 5_715_950, -199_950, 5_716_050)],
        crs="EPSG:25833",
    )
    nas = tmp_path / "bda.xml"
    write_bestandsdatenauszug(nas, b33, p33, srs="urn:adv:crs:ETRS89_UTM33*DE_DHHN2016_NH")
    t = read_footprints([nas], "nas", target_crs="EPSG:25832")
    assert t.gdf.crs.to_epsg() == 25832
    want = b33.to_crs("EPSG:25832").geometry.iloc[0]
    assert shapely.hausdorff_distance(t.gdf.geometry.iloc[0], want) < 1e-6
    parcels = read_parcels([nas], "nas", target_crs="EPSG:25832")
    assert parcels.crs.to_epsg() == 25832
    assert shapely.hausdorff_distance(parcels.geometry.iloc[0], p33.to_crs(25832).geometry.iloc[0]) < 1e-6
    own = read_footprints([nas], "nas")
    assert own.gdf.crs.to_epsg() == 25833
    assert shapely.hausdorff_distance(own.gdf.geometry.iloc[0], b33.geometry.iloc[0]) < 1e-9
    # the configured source CRS wins over the srsName
    forced = read_footprints([nas], "nas", crs="EPSG:25833", target_crs="EPSG:25833")
    assert shapely.hausdorff_distance(forced.gdf.geometry.iloc[0], b33.geometry.iloc[0]) < 1e-9


CITYGML = """<?xml version="1.0" encoding="UTF-8"?>
<core:CityModel xmlns:core="http://www.opengis.net/citygml/2.0" xmlns:bldg="http://www.opengis.net/citygml/building/2.0"
  xmlns:gml="http://www.opengis.net/gml">
 <gml:boundedBy><gml:Envelope srsName="{srs}" srsDimension="3">
  <gml:lowerCorner>{x0} {y0} 50</gml:lowerCorner><gml:upperCorner>{x1} {y1} 60</gml:upperCorner>
 </gml:Envelope></gml:boundedBy>
 <core:cityObjectMember><bldg:Building gml:id="DEBB_LOD1_1">
  <bldg:measuredHeight uom="urn:adv:uom:m">10.0</bldg:measuredHeight>
  <bldg:lod1Solid><gml:Solid><gml:exterior><gml:CompositeSurface>
{faces}
  </gml:CompositeSurface></gml:exterior></gml:Solid></bldg:lod1Solid>
 </bldg:Building></core:cityObjectMember>
</core:CityModel>
"""


def _box_faces(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float) -> str:
    c = {
        "b": [(x0, y0, z0), (x0, y1, z0), (x1, y1, z0), (x1, y0, z0)],
        "t": [(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)],
        "s": [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],
        "n": [(x0, y1, z0), (x0, y1, z1), (x1, y1, z1), (x1, y1, z0)],
        "w": [(x0, y0, z0), (x0, y0, z1), (x0, y1, z1), (x0, y1, z0)],
        "e": [(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)],
    }
    out = []
    for ring in c.values():
        pts = " ".join(f"{x!r} {y!r} {z!r}" for x, y, z in [*ring, ring[0]])
        out.append(
            "<gml:surfaceMember><gml:Polygon><gml:exterior><gml:LinearRing><gml:posList>"
            f"{pts}</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember>"
        )
    return "\n".join(out)


def test_citygml_in_its_own_crs_or_the_working_crs(tmp_path):
    """A UTM 33 CityGML (AdV srsName with DHHN2016): without a working CRS it stays in its own CRS, labelled
    so (it was labelled EPSG:25832 before); read into a UTM 32 working CRS it equals PROJ's coordinates."""
    from pipeline.config.model import CrsConfig
    from pipeline.sources.cadastre import read_reference_citygml
    from pipeline.sources.cadastre.citygml import read_lod2

    x0, y0 = -199_990.0, 5_716_000.0
    gml = tmp_path / "lod1.gml"
    gml.write_text(
        CITYGML.format(
            srs="urn:adv:crs:ETRS89_UTM33*DE_DHHN2016_NH",
            x0=x0, y0=y0, x1=x0 + 10, y1=y0 + 8,
            faces=_box_faces(x0, y0, 50.0, x0 + 10, y0 + 8, 60.0),
        )
    )  # fmt: skip
    own = read_reference_citygml([gml])
    assert own.gdf.crs.to_epsg() == 25833
    assert shapely.hausdorff_distance(own.gdf.geometry.iloc[0], shapely.box(x0, y0, x0 + 10, y0 + 8)) < 1e-6
    cfg = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    work = read_reference_citygml([gml], crs_cfg=cfg)
    assert work.gdf.crs.to_epsg() == 25832
    want = gpd.GeoSeries([shapely.box(x0, y0, x0 + 10, y0 + 8)], crs=25833).to_crs(25832).iloc[0]
    assert shapely.hausdorff_distance(work.gdf.geometry.iloc[0], want) < 1e-3
    assert work.gdf["ground_z"].iloc[0] == pytest.approx(50.0, abs=1e-6)  # same height system: unchanged
    model = read_lod2([gml], crs_cfg=CrsConfig(horizontal="EPSG:25833", vertical="EPSG:7837"))
    assert model.buildings.crs.to_epsg() == 25833 and model.surfaces.crs.to_epsg() == 25833


# ---- class scheme `auto` for the aerial epochs that feed building heights ---------------------------------


def _ctx(tmp_path: Path, scheme: str):
    from pipeline.buildlog import BuildLog
    from pipeline.model import BuildContext

    cfg = load_config(
        _project(
            tmp_path,
            f'  aerial: [{{epoch: "2024", points: "aerial/*.laz", class_scheme: {scheme}}}]\n',
            "{horizontal: EPSG:25832, vertical: EPSG:7837}",
        )
    )
    return BuildContext(
        cfg=cfg, build_id="t", release_dir=tmp_path / "rel", frame=None, inputs=scan_inputs(cfg),  # type: ignore[arg-type]
        log=BuildLog(quiet=True),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "codes", "scheme", "why"),
    [
        ("tile.laz", (2, 17, 20), "adv", "codes [20] exist only in the AdV scheme"),
        ("tile.laz", (2, 6), "asprs", "codes [6] exist only in the ASPRS scheme"),
        ("3dm_32_362_5716_1_nw.laz", (2, 17), "adv", "file name 3dm_32_362_5716_1_nw.laz follows NRW/AdV"),
        ("tile.laz", (1, 2), "asprs", "fit both schemes"),
    ],
)
def test_class_scheme_auto_for_building_heights(tmp_path, name, codes, scheme, why):
    """`class_scheme: auto` on an aerial epoch: decided from the codes and names, so building heights get
    the scheme's roof and ground classes (it used to fail: no roof/ground classes for 'auto')."""
    from pipeline.orchestrate.buildings import height_params
    from pipeline.orchestrate.class_schemes import class_scheme

    _laz(tmp_path / "raw" / "aerial" / name, "EPSG:25832+7837", codes=codes)
    ctx = _ctx(tmp_path, "auto")
    got, reason = class_scheme(ctx, "2024")
    assert got == scheme and reason.startswith("auto: ") and why in reason
    params = height_params(ctx.cfg.layers.buildings, got)
    assert params.roof_classes == tuple(ctx.cfg.layers.buildings.roof_classes[scheme])


def test_class_scheme_auto_refuses_contradicting_codes(tmp_path):
    from pipeline.orchestrate.class_schemes import class_scheme

    _laz(tmp_path / "raw" / "aerial" / "a.laz", "EPSG:25832+7837", codes=(2, 6))
    _laz(tmp_path / "raw" / "aerial" / "b.laz", "EPSG:25832+7837", codes=(2, 26), xy=(X0 + 50, Y0))
    with pytest.raises(
        InputError, match=r"aerial epoch 2024: class scheme `auto`: codes \[26\] are AdV-only"
    ):
        class_scheme(_ctx(tmp_path, "auto"), "2024")


def test_class_codes_are_read_once_per_file_version(tmp_path):
    """The codes are memoised by content hash: a second build reads no point (the file could even be
    unreadable now without a difference)."""
    from pipeline.orchestrate.class_schemes import MEMO, class_scheme, resolve_class_schemes

    laz = _laz(tmp_path / "raw" / "aerial" / "a.laz", "EPSG:25832+7837", codes=(2, 26))
    ctx = _ctx(tmp_path, "auto")
    first = resolve_class_schemes(ctx.cfg, ctx.inputs)
    assert first["2024"][0] == "adv" and (ctx.cfg.cache_dir / MEMO).is_file()
    laz.write_bytes(b"not a LAS file any more")  # same InputFile (hash) as planned: the memo answers
    assert resolve_class_schemes(ctx.cfg, ctx.inputs) == first
    given = _ctx(tmp_path, "asprs")  # a configured scheme reads no file (this one is unreadable now)
    assert class_scheme(given, "2024") == ("asprs", "given")


def test_unreadable_inputs_are_left_to_the_input_check(tmp_path):
    """A broken LAZ or DGM tile does not crash the CRS step: it decides from the readable files, and
    the input check then names the broken one with its own message."""
    raw = tmp_path / "raw"
    _laz(raw / "aerial" / "a.laz", "EPSG:25832+7837")
    (raw / "aerial" / "b.laz").write_bytes(b"LASF but not really")
    (raw / "dgm").mkdir(parents=True)
    (raw / "dgm" / "d.tif").write_bytes(b"II*\x00 broken tiff")
    cfg = _resolve(_project(tmp_path, AERIAL + DGM))
    assert (cfg.crs.horizontal, cfg.crs.vertical) == ("EPSG:25832", "EPSG:7837")
