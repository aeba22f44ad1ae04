"""Cadastre readers on crafted files: NAS (arcs, holes, multi-surfaces, invalid/unclosed rings, broken XML),
ALKIS GeoPackage (both layer spellings), generic files with a column mapping, CityGML reference models."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from pipeline.errors import InputError
from pipeline.sources.cadastre import FootprintFilter, read_footprints, read_parcels, read_reference_citygml
from pipeline.sources.cadastre.gml import densify_arc

X0, Y0 = 400_000.0, 5_700_000.0
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def _pl(*xy: float) -> str:
    return " ".join(f"{v:.3f}" for v in xy)


def _feature(oid: str, geometry: str, extra: str = "", kind: str = "AX_Gebaeude") -> str:
    return f"""
<wfs:member><{kind} gml:id="{oid}20200101T000000Z">
 <gml:identifier codeSpace="http://www.adv-online.de/">urn:adv:oid:{oid}</gml:identifier>
 <position>{geometry}</position>{extra}
</{kind}></wfs:member>"""


SRS = 'srsName="urn:adv:crs:ETRS89_UTM32"'


def _nas(features: list[str], truncate: bool = False) -> str:
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AX_Bestandsdatenauszug xmlns="http://www.adv-online.de/namespaces/adv/gid/7.1" '
        'xmlns:gml="http://www.opengis.net/gml/3.2" xmlns:wfs="http://www.opengis.net/wfs/2.0">'
        "<enthaelt><wfs:FeatureCollection>" + "".join(features) + "</wfs:FeatureCollection></enthaelt>"
        "</AX_Bestandsdatenauszug>"
    )
    return doc[: len(doc) // 2 + 200] if truncate else doc


def arc_building(oid: str, x: float, y: float) -> str:
    """20 x 10 rectangle whose top side is a semicircle (radius 10) given as gml:Arc, with a square hole."""
    seg = (
        f"<gml:LineStringSegment><gml:posList>{_pl(x, y, x + 20, y, x + 20, y + 10)}</gml:posList>"
        "</gml:LineStringSegment>"
        f"<gml:Arc><gml:posList>{_pl(x + 20, y + 10, x + 10, y + 20, x, y + 10)}</gml:posList></gml:Arc>"
        f"<gml:LineStringSegment><gml:posList>{_pl(x, y + 10, x, y)}</gml:posList></gml:LineStringSegment>"
    )
    hole = _pl(x + 5, y + 2, x + 5, y + 6, x + 9, y + 6, x + 9, y + 2, x + 5, y + 2)
    geom = (
        f'<gml:Surface gml:id="s_{oid}" {SRS}><gml:patches><gml:PolygonPatch>'
        f'<gml:exterior><gml:Ring><gml:curveMember><gml:Curve gml:id="c_{oid}"><gml:segments>{seg}'
        "</gml:segments></gml:Curve></gml:curveMember></gml:Ring></gml:exterior>"
        f"<gml:interior><gml:LinearRing><gml:posList>{hole}</gml:posList></gml:LinearRing></gml:interior>"
        "</gml:PolygonPatch></gml:patches></gml:Surface>"
    )
    return _feature(
        oid,
        geom,
        "<gebaeudefunktion>1000</gebaeudefunktion>"
        "<anzahlDerOberirdischenGeschosse>3</anzahlDerOberirdischenGeschosse><dachform>3100</dachform>",
    )


def _poly(x: float, y: float, w: float, h: float) -> str:
    ring = _pl(x, y, x + w, y, x + w, y + h, x, y + h, x, y)
    return f"<gml:Polygon><gml:exterior><gml:LinearRing><gml:posList>{ring}</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>"


def multi_building(oid: str, x: float, y: float) -> str:
    geom = (
        f"<gml:MultiSurface {SRS}><gml:surfaceMember>{_poly(x, y, 8, 8)}</gml:surfaceMember>"
        f"<gml:surfaceMember>{_poly(x + 20, y, 6, 10)}</gml:surfaceMember></gml:MultiSurface>"
    )
    return _feature(oid, geom, "<gebaeudefunktion>2463</gebaeudefunktion>")


def simple(
    oid: str, ring: str, extra: str = "<gebaeudefunktion>1000</gebaeudefunktion>", srs: str = SRS
) -> str:
    geom = (
        f"<gml:Surface {srs}><gml:patches><gml:PolygonPatch><gml:exterior><gml:LinearRing>"
        f"<gml:posList>{ring}</gml:posList></gml:LinearRing></gml:exterior></gml:PolygonPatch></gml:patches>"
        "</gml:Surface>"
    )
    return _feature(oid, geom, extra)


@pytest.fixture
def nas_file(tmp_path: Path) -> Path:
    x, y = X0, Y0
    feats = [
        arc_building("DENW36AL0000001A", x, y),
        multi_building("DENW36AL0000002B", x + 50, y),
        # self-intersecting bow tie: repaired by make_valid into two triangles
        simple("DENW36AL0000003C", _pl(x, y + 50, x + 10, y + 60, x + 10, y + 50, x, y + 60, x, y + 50)),
        # unclosed ring: rejected
        simple("DENW36AL0000004D", _pl(x + 20, y + 50, x + 30, y + 50, x + 30, y + 60, x + 20, y + 61)),
        # underground: filtered
        simple(
            "DENW36AL0000005E",
            _pl(x + 40, y + 50, x + 50, y + 50, x + 50, y + 60, x + 40, y + 60, x + 40, y + 50),
            "<gebaeudefunktion>2465</gebaeudefunktion><lageZurErdoberflaeche>1200</lageZurErdoberflaeche>",
        ),
        # no srsName: rejected (never guessed)
        simple(
            "DENW36AL0000006F",
            _pl(x + 60, y + 50, x + 70, y + 50, x + 70, y + 60, x + 60, y + 60, x + 60, y + 50),
            srs="",
        ),
        # bad coordinates: rejected
        simple("DENW36AL0000007G", "1 2 3 abc"),
        _feature(
            "DENW36AL000000P1",
            _poly(x - 10, y - 10, 200, 200).replace("<gml:Polygon>", f"<gml:Polygon {SRS}>"),
            "<flurstueckskennzeichen>05314403900040______</flurstueckskennzeichen>",
            kind="AX_Flurstueck",
        ),
    ]
    p = tmp_path / "nas.xml"
    p.write_text(_nas(feats), encoding="utf-8")
    return p


def test_densify_arc_is_on_circle_and_within_tolerance():
    p1, p2, p3 = np.array([10.0, 0.0]), np.array([0.0, 10.0]), np.array([-10.0, 0.0])
    pts = densify_arc(p1, p2, p3, tol=0.01)
    r = np.hypot(pts[:, 0], pts[:, 1])
    assert np.allclose(r, 10.0)
    assert np.all(pts[:, 1] >= -1e-9)  # goes through the upper half (via p2), counter-clockwise
    assert tuple(pts[0]) == (10.0, 0.0) and tuple(pts[-1]) == (-10.0, 0.0)
    # chord error: the sagitta of each step below the tolerance
    step = np.arccos(np.clip((pts[:-1] * pts[1:]).sum(1) / 100.0, -1, 1))
    assert np.all(10.0 * (1 - np.cos(step / 2)) <= 0.01 + 1e-9)
    # clockwise arc through the lower half
    cw = densify_arc(p1, np.array([0.0, -10.0]), p3, tol=0.01)
    assert np.all(cw[:, 1] <= 1e-9)
    # collinear points: a straight segment
    assert len(densify_arc(np.array([0.0, 0]), np.array([1.0, 0]), np.array([2.0, 0]), 0.01)) == 2


def test_nas_reader_arcs_holes_multisurfaces_and_bad_records(nas_file: Path):
    t = read_footprints([nas_file], "nas")
    got = dict(zip(t.gdf["oid"], t.gdf.geometry, strict=True))
    assert sorted(got) == ["DENW36AL0000001A", "DENW36AL0000002B", "DENW36AL0000003C"]
    arc = got["DENW36AL0000001A"]
    expected = 20 * 10 + math.pi * 100 / 2 - 16
    # densified arc (2 cm chord tolerance) lies inside the true arc: deficit <= 2/3 x arc length x 2 cm
    assert expected - 2 / 3 * math.pi * 10 * 0.02 - 1e-6 <= arc.area <= expected
    assert len(arc.interiors) == 1
    assert arc.bounds[3] == pytest.approx(Y0 + 20, abs=1e-6)
    multi = got["DENW36AL0000002B"]
    assert multi.geom_type == "MultiPolygon" and multi.area == pytest.approx(124.0)
    bowtie = got["DENW36AL0000003C"]
    assert bowtie.is_valid and bowtie.area == pytest.approx(50.0)
    row = t.gdf.set_index("oid").loc["DENW36AL0000001A"]
    assert row.funktion == "Wohngebäude" and row.gfkzshh == "31001_1000" and row.anzahlgs == 3
    reasons = {r.id: r.reason for r in t.rejected}
    assert "not closed" in reasons["DENW36AL0000004D"]
    assert reasons["DENW36AL0000005E"] == "filtered: underground"
    assert "srsName" in reasons["DENW36AL0000006F"]
    assert "DENW36AL0000007G" in reasons
    assert all(r.file == str(nas_file) for r in t.rejected)
    parcels = read_parcels([nas_file], "nas")
    assert list(parcels["flstkennz"]) == ["05314403900040______"]


def test_nas_reader_refuses_broken_xml(tmp_path: Path):
    """A truncated NAS is an InputError naming the file and line, never a partial read."""
    feats = [arc_building(f"DENW36AL000000{i:02d}", X0 + 40 * i, Y0) for i in range(6)]
    p = tmp_path / "broken.xml"
    p.write_text(_nas(feats, truncate=True), encoding="utf-8")
    with pytest.raises(InputError, match=r"broken NAS XML at line \d+") as e:
        read_footprints([p], "nas")
    assert e.value.path == str(p)


def _gpkg(path: Path, layer: str, n: int = 3, oid_col: str = "oid") -> None:
    geoms = [shapely.box(X0 + 20 * i, Y0, X0 + 20 * i + 10, Y0 + 8) for i in range(n)]
    gdf = gpd.GeoDataFrame(
        {
            oid_col: [f"DENW{i:012d}" for i in range(n)],
            "gebnutzbez": ["Gebäude"] * (n - 1) + ["Bauteil"],
            "funktion": ["Wohngebäude"] * n,
            "gfkzshh": ["31001_1000"] * n,
            "anzahlgs": [2] * n,
            "rellage": [None] * n,
        },
        geometry=geoms,
        crs="EPSG:25832",
    )
    pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG")
    parcels = gpd.GeoDataFrame(
        {"flstkennz": ["05000000000001______"]},
        geometry=[shapely.box(X0 - 5, Y0 - 5, X0 + 15, Y0 + 15)],
        crs="EPSG:25832",
    )
    pyogrio.write_dataframe(parcels, path, layer="Flurstueck", driver="GPKG")


@pytest.mark.parametrize("layer", ["GebauedeBauwerk", "GebaeudeBauwerk"])
def test_alkis_gpkg_both_spellings(tmp_path: Path, layer: str):
    p = tmp_path / "alkis.gpkg"
    _gpkg(p, layer)
    t = read_footprints([p], "alkis_gpkg")
    assert list(t.gdf["oid"]) == ["DENW000000000000", "DENW000000000001"]
    assert [r.reason for r in t.rejected] == ["filtered: Bauteil"]
    t2 = read_footprints([p], "alkis_gpkg", flt=FootprintFilter(skip_bauteil=False))
    assert len(t2.gdf) == 3
    parcels = read_parcels([p], "alkis_gpkg")
    assert list(parcels["flstkennz"]) == ["05000000000001______"]


def test_gpkg_invalid_rings_slivers_and_duplicates(tmp_path: Path):
    geoms = [
        shapely.Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)]),  # bow tie
        shapely.box(X0 + 20, Y0, X0 + 50, Y0 + 0.05),  # sliver
        shapely.box(X0 + 60, Y0, X0 + 61, Y0 + 1),  # too small
        shapely.box(X0 + 70, Y0, X0 + 80, Y0 + 10),
        shapely.box(X0 + 90, Y0, X0 + 100, Y0 + 10),  # duplicate id of the previous
        None,
    ]
    gdf = gpd.GeoDataFrame(
        {"oid": ["A", "B", "C", "D", "D", "E"], "gebnutzbez": ["Gebäude"] * 6},
        geometry=geoms,
        crs="EPSG:25832",
    )
    p = tmp_path / "bad.gpkg"
    pyogrio.write_dataframe(gdf, p, layer="GebauedeBauwerk", driver="GPKG")
    t = read_footprints([p])
    assert list(t.gdf["oid"]) == ["A", "D"]
    assert t.gdf.geometry.iloc[0].is_valid and t.gdf.geometry.iloc[0].area == pytest.approx(50.0)
    reasons = sorted((r.id, r.reason.split(" ")[0]) for r in t.rejected)
    assert reasons == [("B", "only"), ("C", "area"), ("D", "duplicate"), ("E", "empty")]


def test_generic_geojson_with_column_mapping(tmp_path: Path):
    gdf = gpd.GeoDataFrame(
        {"gml_id": ["x1", "x2"], "nutzung": ["Garage", "Bürogebäude"], "geschosse": [1, 5]},
        geometry=[shapely.box(X0, Y0, X0 + 6, Y0 + 3), shapely.box(X0 + 10, Y0, X0 + 30, Y0 + 15)],
        crs="EPSG:25832",
    )
    p = tmp_path / "fp.geojson"
    gdf.to_file(p, driver="GeoJSON")
    cols = {"oid": "gml_id", "funktion": "nutzung", "anzahlgs": "geschosse"}
    t = read_footprints([p], "generic", columns=cols)
    assert list(t.gdf["oid"]) == ["x1", "x2"]
    assert list(t.gdf["funktion"]) == ["Garage", "Bürogebäude"]
    assert list(t.gdf["anzahlgs"]) == [1.0, 5.0]
    with pytest.raises(InputError, match="not a column"):
        read_footprints([p], "generic", columns={"oid": "nope"})
    with pytest.raises(InputError, match="no id column"):
        read_footprints([p], "generic")


def test_generic_shapefile_reprojected(tmp_path: Path):
    gdf = gpd.GeoDataFrame(
        {"id": ["s1"]}, geometry=[shapely.box(X0, Y0, X0 + 10, Y0 + 10)], crs="EPSG:25832"
    ).to_crs("EPSG:4326")
    p = tmp_path / "fp.shp"
    gdf.to_file(p)
    t = read_footprints([p], "generic", columns={"oid": "id"}, target_crs="EPSG:25832")
    assert t.gdf.crs.to_epsg() == 25832
    assert t.gdf.geometry.iloc[0].area == pytest.approx(100.0, rel=1e-3)


@pytest.mark.realdata
def test_citygml_reference_reader_on_lorup():
    d = REALDATA / "lorup_lod1_citygml"
    if not d.is_dir():
        pytest.skip("../shared/realdata is absent")
    ref = read_reference_citygml(sorted(d.glob("*.gml")))
    assert len(ref.gdf) == 1504 and not ref.rejected
    assert ref.gdf["measured_height"].notna().all()
    assert ref.gdf.crs.to_epsg() == 25832
    # LoD1 block height (solid top - bottom) equals measuredHeight on flat roofs; on pitched roofs the
    # block is lower (mean roof height) than measuredHeight (ridge)
    dz = (ref.gdf["roof_z"] - ref.gdf["ground_z"]).to_numpy()
    mh = ref.gdf["measured_height"].to_numpy()
    flat = (ref.gdf["dachform"] == "1000").to_numpy()
    assert flat.sum() > 400
    assert np.median(np.abs(dz[flat] - mh[flat])) < 0.01
    assert np.mean(dz[~flat] <= mh[~flat] + 0.01) > 0.95
    assert ref.gdf.geometry.is_valid.all() and (ref.gdf.geometry.area > 0).all()
