"""CityGML LoD2 reader (pipeline.sources.cadastre.citygml), the LoD2 join and the LoD1 roof statistic.

Crafted CityGML 1.0 and 2.0 files with known roofs, and the real Geobasis NRW LoD2 tiles (skipped when
../shared/realdata is absent) checked against an independent full-tree lxml/xpath parse.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from lxml import etree

from pipeline.errors import CrsError
from pipeline.sources.cadastre.citygml import (
    check_citygml,
    gml_crs,
    iter_citygml,
    polygon_plan_integrals,
    read_citygml,
    read_lod2,
)
from pipeline.sources.cadastre.common import FootprintTable, Rejected
from pipeline.sources.cadastre.structures import apply_structure_rules, structure_rule
from pipeline.stages.buildings.heights import HeightParams, footprint_heights, read_points
from pipeline.stages.buildings.lod2 import join_lod2, lod1_roofs_from_lod2

REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
NRW = REALDATA / "nrw"
X0, Y0 = 360100.0, 5721100.0

NS = {
    "1.0": (
        "http://www.opengis.net/citygml/1.0",
        "http://www.opengis.net/citygml/building/1.0",
        "http://www.opengis.net/gml",
    ),
    "2.0": (
        "http://www.opengis.net/citygml/2.0",
        "http://www.opengis.net/citygml/building/2.0",
        "http://www.opengis.net/gml",
    ),
}
ADV_SRS = "urn:adv:crs:ETRS89_UTM32*DE_DHHN2016_NH*GCG2016"


def _pl(pts) -> str:
    return " ".join(f"{x:.3f} {y:.3f} {z:.3f}" for x, y, z in [*pts, pts[0]])


def _poly(pid: str, pts, holes=()) -> str:
    inner = "".join(
        f'<gml:interior><gml:LinearRing><gml:posList srsDimension="3">{_pl(h)}</gml:posList>'
        "</gml:LinearRing></gml:interior>"
        for h in holes
    )
    return (
        f'<gml:Polygon gml:id="{pid}"><gml:exterior><gml:LinearRing>'
        f'<gml:posList srsDimension="3">{_pl(pts)}</gml:posList></gml:LinearRing></gml:exterior>{inner}'
        "</gml:Polygon>"
    )


def _thematic(kind: str, sid: str, polys: list[str]) -> str:
    members = "".join(f"<gml:surfaceMember>{p}</gml:surfaceMember>" for p in polys)
    return (
        f'<bldg:boundedBy><bldg:{kind} gml:id="{sid}"><bldg:lod2MultiSurface><gml:MultiSurface>'
        f"{members}</gml:MultiSurface></bldg:lod2MultiSurface></bldg:{kind}></bldg:boundedBy>"
    )


def gable_house(
    bid: str,
    x: float,
    y: float,
    w: float = 10.0,
    d: float = 8.0,
    eave: float = 46.0,
    ridge: float = 49.0,
    base: float = 40.0,
) -> tuple[str, list[str]]:
    """boundedBy polygons of a gable house (ridge along x at y + d/2), outward-oriented rings."""
    a, b, c, e = (x, y), (x + w, y), (x + w, y + d), (x, y + d)
    ym = y + d / 2
    ground = [(*a, base), (*e, base), (*c, base), (*b, base)]  # facing down
    roof_s = [(*a, eave), (*b, eave), (x + w, ym, ridge), (x, ym, ridge)]
    roof_n = [(*c, eave), (*e, eave), (x, ym, ridge), (x + w, ym, ridge)]
    wall_s = [(*a, base), (*b, base), (*b, eave), (*a, eave)]
    wall_e = [(*b, base), (*c, base), (*c, eave), (x + w, ym, ridge), (*b, eave)]
    wall_n = [(*c, base), (*e, base), (*e, eave), (*c, eave)]
    wall_w = [(*e, base), (*a, base), (*a, eave), (x, ym, ridge), (*e, eave)]
    ids = [f"{bid}_p{k}" for k in range(7)]
    xml = (
        _thematic("GroundSurface", f"{bid}_g", [_poly(ids[0], ground)])
        + _thematic("RoofSurface", f"{bid}_r1", [_poly(ids[1], roof_s)])
        + _thematic("RoofSurface", f"{bid}_r2", [_poly(ids[2], roof_n)])
        + _thematic("WallSurface", f"{bid}_w1", [_poly(ids[3], wall_s), _poly(ids[4], wall_e)])
        + _thematic("WallSurface", f"{bid}_w2", [_poly(ids[5], wall_n), _poly(ids[6], wall_w)])
    )
    return xml, ids


def solid_refs(ids: list[str]) -> str:
    members = "".join(f'<gml:surfaceMember xlink:href="#{i}"/>' for i in ids)
    return (
        "<bldg:lod2Solid><gml:Solid><gml:exterior><gml:CompositeSurface>"
        f"{members}</gml:CompositeSurface></gml:exterior></gml:Solid></bldg:lod2Solid>"
    )


def flat_box_inline(x: float, y: float, w: float, d: float, base: float, top: float, pid: str) -> str:
    """An LoD2 solid with inline polygons and no boundedBy (roof found by upward normals)."""
    a, b, c, e = (x, y), (x + w, y), (x + w, y + d), (x, y + d)
    faces = [
        [(*a, base), (*e, base), (*c, base), (*b, base)],
        [(*a, top), (*b, top), (*c, top), (*e, top)],
        [(*a, base), (*b, base), (*b, top), (*a, top)],
        [(*b, base), (*c, base), (*c, top), (*b, top)],
        [(*c, base), (*e, base), (*e, top), (*c, top)],
        [(*e, base), (*a, base), (*a, top), (*e, top)],
    ]
    members = "".join(
        f"<gml:surfaceMember>{_poly(f'{pid}_{k}', f)}</gml:surfaceMember>" for k, f in enumerate(faces)
    )
    return (
        "<bldg:lod2Solid><gml:Solid><gml:exterior><gml:CompositeSurface>"
        f"{members}</gml:CompositeSurface></gml:exterior></gml:Solid></bldg:lod2Solid>"
    )


def citygml(version: str, members: list[str], srs: str | None = ADV_SRS, envelope: bool = True) -> str:
    core, bldg, gml = NS[version]
    env = (
        f'<gml:boundedBy><gml:Envelope srsName="{srs}"><gml:lowerCorner srsDimension="3">0 0 0'
        '</gml:lowerCorner><gml:upperCorner srsDimension="3">1 1 1</gml:upperCorner></gml:Envelope>'
        "</gml:boundedBy>"
        if envelope and srs
        else ""
    )
    body = "".join(f"<core:cityObjectMember>{m}</core:cityObjectMember>" for m in members)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<core:CityModel xmlns:core="{core}" xmlns:bldg="{bldg}" xmlns:gml="{gml}" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'xmlns:gen="{core.replace("citygml/", "citygml/generics/")}">'
        f"<gml:name>test</gml:name>{env}{body}</core:CityModel>"
    )


def building(
    bid: str, inner: str, function: str = "31001_1000", roof_type: str | None = "3100", mh: float | None = 9.0
) -> str:
    attrs = f"<bldg:function>{function}</bldg:function>"
    if roof_type:
        attrs += f"<bldg:roofType>{roof_type}</bldg:roofType>"
    if mh is not None:
        attrs += f'<bldg:measuredHeight uom="urn:adv:uom:m">{mh}</bldg:measuredHeight>'
    return f'<bldg:Building gml:id="{bid}">{attrs}{inner}</bldg:Building>'


def part(pid: str, inner: str, roof_type: str = "1000", mh: float = 4.0) -> str:
    return (
        f'<bldg:consistsOfBuildingPart><bldg:BuildingPart gml:id="{pid}">'
        f"<bldg:roofType>{roof_type}</bldg:roofType>"
        f'<bldg:measuredHeight uom="urn:adv:uom:m">{mh}</bldg:measuredHeight>{inner}'
        "</bldg:BuildingPart></bldg:consistsOfBuildingPart>"
    )


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------ crafted files


def test_gml_crs_names():
    assert gml_crs(ADV_SRS) == "EPSG:25832+7837"
    assert gml_crs("urn:adv:crs:ETRS89_UTM32*DE_DHHN92_NH") == "EPSG:25832+5783"
    assert gml_crs("urn:adv:crs:ETRS89_UTM33") == "EPSG:25833"
    assert gml_crs("urn:ogc:def:crs,crs:EPSG:6.12:25832,crs:EPSG:6.12:5783") == "EPSG:25832+5783"
    assert gml_crs("urn:ogc:def:crs:EPSG::25832") == "EPSG:25832"
    assert gml_crs("EPSG:25832") == "EPSG:25832"
    assert gml_crs("urn:adv:crs:UNKNOWN_THING") is None
    assert gml_crs("urn:adv:crs:ETRS89_UTM32*NO_SUCH_HEIGHT") is None
    assert gml_crs(None) is None


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_gable_house_with_part_semantics_and_roof_mean(tmp_path: Path, version: str):
    main, ids = gable_house("B1_main", X0, Y0)
    extra, pids = gable_house("B1_part", X0 + 10, Y0, w=5, d=8, eave=44.0, ridge=44.0)  # flat part
    xml = citygml(
        version,
        [
            building(
                "DENW52AL0000001A",
                part("B1_P1", main + solid_refs(ids), "3100", 9.0)
                + part("B1_P2", extra + solid_refs(pids), "1000", 4.0),
                mh=None,
            ),
            building("DENW52AL0000002B", gable_house("B2", X0 + 40, Y0)[0]),
        ],
    )
    path = _write(tmp_path, "LoD2_32_360_5721_1_NW.gml", xml)
    rejected: list[Rejected] = []
    objs = list(iter_citygml(path, rejected))
    assert not rejected
    assert [o.gml_id for o in objs] == ["DENW52AL0000001A", "DENW52AL0000002B"]
    assert [p.gml_id for p in objs[0].parts] == ["B1_P1", "B1_P2"]
    assert objs[0].srs == ADV_SRS
    m = read_lod2([path])
    o = m.objects.set_index("oid")
    assert list(m.objects["oid"]) == ["DENW52AL0000001A", "B1_P1", "B1_P2", "DENW52AL0000002B"]
    # gable roof 10 x 8, eaves 46, ridge 49: area-weighted mean 47.5; flat part at 44 (5 x 8)
    assert o.loc["B1_P1", "roof_mean_z"] == pytest.approx(47.5, abs=1e-9)
    assert o.loc["B1_P2", "roof_mean_z"] == pytest.approx(44.0, abs=1e-9)
    assert o.loc["DENW52AL0000001A", "roof_mean_z"] == pytest.approx((47.5 * 80 + 44 * 40) / 120, abs=1e-9)
    assert o.loc["DENW52AL0000001A", "roof_plan_area"] == pytest.approx(120.0)
    assert o.loc["B1_P1", "roof_area"] == pytest.approx(2 * 10 * np.hypot(4, 3))
    assert o.loc["DENW52AL0000001A", "function"] == "31001_1000"
    assert o.loc["B1_P1", "function"] == "31001_1000"  # inherited from the building
    assert o.loc["B1_P1", "roof_type"] == "3100" and o.loc["B1_P2", "measured_height"] == 4.0
    assert o.loc["DENW52AL0000001A", "geometry"].area == pytest.approx(120.0)
    assert o.loc["B1_P1", "geometry"].area == pytest.approx(80.0)
    assert o.loc["B1_P1", "ground_z"] == 40.0 and o.loc["B1_P1", "roof_z_max"] == 49.0
    assert (o.loc["B1_P1", "n_roof"], o.loc["B1_P1", "n_wall"], o.loc["B1_P1", "n_ground"]) == (2, 4, 1)
    # every polygon once (the solid only references them), with its semantic and 3D geometry
    s = m.surfaces
    assert len(s) == 21
    assert s["semantic"].value_counts().to_dict() == {"wall": 12, "roof": 6, "ground": 3}
    roofs = s[(s["oid"] == "B1_P1") & (s["semantic"] == "roof")]
    assert set(roofs["surface_id"]) == {"B1_main_r1", "B1_main_r2"}
    assert all(g.has_z for g in roofs.geometry)
    assert roofs["mean_z"].to_numpy() == pytest.approx([47.5, 47.5])
    # the footprint reader (one row per building) agrees
    fp = read_citygml(path, [])
    assert list(fp["oid"]) == ["DENW52AL0000001A", "DENW52AL0000002B"]
    assert fp["measured_height"].tolist() == [9.0, 9.0] and fp["dachform"].tolist() == ["3100", "3100"]
    assert fp.crs.to_epsg() == 25832


def test_inline_solid_without_semantics_and_holes(tmp_path: Path):
    """CityGML 1.0 LoD2 solid with inline polygons only: footprint = projection, roof = upward faces."""
    xml = citygml("1.0", [building("S1", flat_box_inline(X0, Y0, 6, 4, 40.0, 47.0, "S1p"), roof_type="1000")])
    path = _write(tmp_path, "s.gml", xml)
    m = read_lod2([path])
    b = m.objects.iloc[0]
    assert b["roof_mean_z"] == pytest.approx(47.0) and b["roof_plan_area"] == pytest.approx(24.0)
    assert b["geometry"].area == pytest.approx(24.0) and b["ground_z"] == 40.0
    assert (m.surfaces["semantic"] == "unclassified").all() and len(m.surfaces) == 6
    # a roof with a hole (courtyard): plan integrals subtract it
    ring = np.array([[0, 0, 10], [10, 0, 10], [10, 10, 20], [0, 10, 20], [0, 0, 10]], float)
    hole = np.array([[4, 4, 14], [4, 6, 16], [6, 6, 16], [6, 4, 14], [4, 4, 14]], float)
    area, zint = polygon_plan_integrals([ring, hole])
    assert area == pytest.approx(96.0) and zint / area == pytest.approx(15.0)


def test_crs_from_geometry_and_transformation(tmp_path: Path):
    """A per-geometry srsName (EPSG:25833 + DHHN2016) wins over the file's and is transformed."""
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:25832", "EPSG:25833", always_xy=True)
    ex, ey = t.transform(X0, Y0)
    inner = flat_box_inline(ex, ey, 6, 4, 40.0, 47.0, "T1p").replace(
        "<gml:Solid>", '<gml:Solid srsName="urn:adv:crs:ETRS89_UTM33*DE_DHHN2016_NH">'
    )
    path = _write(tmp_path, "t.gml", citygml("2.0", [building("T1", inner)]))
    m = read_lod2([path])
    g = m.objects.geometry.iloc[0]
    corner = np.array(g.exterior.coords)[:, :2]
    assert np.min(np.hypot(corner[:, 0] - X0, corner[:, 1] - Y0)) < 0.01  # the corner back where it was
    assert g.area == pytest.approx(24.0, rel=0.01)  # UTM 33 scale far from its meridian
    assert m.objects["roof_mean_z"].iloc[0] == pytest.approx(47.0, abs=1e-6)  # same vertical datum


def test_no_srs_is_an_error_and_override_works(tmp_path: Path):
    path = _write(tmp_path, "n.gml", citygml("2.0", [building("N1", gable_house("N1", X0, Y0)[0])], srs=None))
    with pytest.raises(CrsError, match="srsName"):
        read_lod2([path])
    m = read_lod2([path], crs="EPSG:25832+7837")
    assert len(m.objects) == 1
    bad = _write(
        tmp_path,
        "u.gml",
        citygml("2.0", [building("U1", gable_house("U1", X0, Y0)[0])], srs="urn:x:nonsense"),
    )
    with pytest.raises(CrsError, match="unknown srsName"):
        read_lod2([bad])


def test_bad_records_are_reported_not_lost(tmp_path: Path):
    good = building("G1", gable_house("G1", X0, Y0)[0])
    dangling = building("D1", gable_house("D1", X0 + 20, Y0)[0] + solid_refs(["nowhere_1"]))
    unclosed = building(
        "C1",
        _thematic(
            "RoofSurface",
            "c_r",
            [
                '<gml:Polygon gml:id="cp"><gml:exterior><gml:LinearRing><gml:posList srsDimension="3">0 0 1 1 0 1 1 1 1 0 1 2</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>'
            ],
        ),
    )
    path = _write(tmp_path, "b.gml", citygml("2.0", [good, dangling, unclosed]))
    m = read_lod2([path])
    assert list(m.objects["oid"]) == ["G1"]
    reasons = {r.id: r.reason for r in m.rejected}
    assert "nowhere_1" in reasons["D1"] and "not closed" in reasons["C1"]
    # truncated XML: the buildings before the break are kept, the break is reported
    text = citygml("2.0", [good, building("G2", gable_house("G2", X0 + 40, Y0)[0])])
    cut = _write(tmp_path, "cut.gml", text[: text.index('gml:id="G2"') + 40])
    m2 = read_lod2([cut])
    assert list(m2.objects["oid"]) == ["G1"]
    assert any("XML syntax error" in r.reason for r in m2.rejected)
    assert check_citygml(cut) is not None and check_citygml(path) is None


def test_input_check_reads_citygml_without_gdal(tmp_path: Path):
    from pipeline.orchestrate.inputs import verify_file

    path = _write(
        tmp_path, "LoD2_32_360_5721_1_NW.gml", citygml("1.0", [building("G1", gable_house("G1", X0, Y0)[0])])
    )
    assert verify_file(str(path)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LoD2_32_360_5721_1_NW.gml"]  # no .gfs beside it
    cut = _write(tmp_path, "cut.gml", path.read_text()[:-40])
    assert "XMLSyntaxError" in (verify_file(str(cut)) or "")


# ----------------------------------------------------------------------------------- join, LoD1, rules


def test_join_by_id_then_overlap_and_lod1_from_lod2():
    lod2 = gpd.GeoDataFrame(
        {
            "oid": ["DENW52AL0000001A", "DENW52AL0000002B", "X3"],
            "roof_mean_z": [50.0, 60.0, 70.0],
            "measured_height": [10.0, 20.0, 30.0],
            "roof_type": ["3100", "1000", "3200"],
        },
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 50, 10)],
        crs="EPSG:25832",
    )
    fp = gpd.GeoDataFrame(
        {"oid": ["DENW52AL0000001A", "DENW52AL0000002B20200701T000000Z", "other", "far"]},
        geometry=[
            shapely.box(0, 0, 10, 10),
            shapely.box(20, 0, 30, 10),
            shapely.box(41, 0, 50, 10),
            shapely.box(100, 0, 110, 10),
        ],
        crs="EPSG:25832",
    )
    j = join_lod2(fp, lod2, 0.5)
    assert j["lod2_oid"].tolist() == ["DENW52AL0000001A", "DENW52AL0000002B", "X3", ""]
    assert j["lod2_match"].tolist() == ["id", "id", "overlap", ""]
    assert j["lod2_iou"].tolist() == pytest.approx([1.0, 1.0, 0.9, 0.0])
    assert np.isnan(j["lod2_roof_mean_z"].iloc[3])
    import pandas as pd

    final = pd.DataFrame(
        {
            "roof_height": [51.0, 61.0, 75.0, 80.0],
            "base_height": [40.0, 40.0, 40.0, 40.0],
            "height": [11.0, 21.0, 35.0, 40.0],
            "base_source": ["ring"] * 4,
            "floors_estimate": np.array([4, 7, 3, 13], dtype=np.int32),
            "floors_is_estimate": [True, True, False, True],
            "quality": ["ok", "fallback_default", "ok", "ok"],
            "flags": ["", "too_few_points|fallback_default", "base_from_dgm", ""],
        }
    )
    out = lod1_roofs_from_lod2(final, j, 3.0)
    assert out["roof_height"].tolist() == [50.0, 60.0, 70.0, 80.0]
    assert out["height"].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert out["quality"].tolist() == ["ok", "ok", "ok", "ok"]
    assert out["flags"].tolist() == ["roof_from_lod2", "roof_from_lod2", "base_from_dgm|roof_from_lod2", ""]
    assert out["floors_estimate"].tolist() == [3, 7, 3, 13]


def test_non_building_rule():
    rules = {"51002_1251": "skip", "51003": "skip", "51003_1201": "keep"}
    assert structure_rule("51002_1251", rules) == "skip"
    assert structure_rule("51002_1250", rules) is None
    assert structure_rule("51003_1205", rules) == "skip"
    assert structure_rule("51003_1201", rules) == "keep"
    assert structure_rule(None, rules) is None
    gdf = gpd.GeoDataFrame(
        {
            "oid": ["a", "b", "c", "d"],
            "gfkzshh": ["31001_1000", "51002_1251", "51003_1205", None],
            "source_file": ["f.gpkg"] * 4,
        },
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(4)],
        crs="EPSG:25832",
    )
    t = apply_structure_rules(FootprintTable(gdf, []), rules)
    assert t.gdf["oid"].tolist() == ["a", "d"]
    assert [(r.id, "51002_1251" in r.reason or "51003_1205" in r.reason) for r in t.rejected] == [
        ("b", True),
        ("c", True),
    ]
    from pipeline.config.model import BuildingsLayer

    assert BuildingsLayer(non_building_functions={51002: "skip"}).non_building_functions == {"51002": "skip"}
    assert BuildingsLayer().non_building_functions["51002_1251"] == "skip"


def test_roof_statistic_mean():
    fp = gpd.GeoSeries([shapely.box(0, 0, 20, 20)])
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 20, 4000), rng.uniform(0, 20, 4000)
    z = 40 + 0.5 * y  # shed roof: mean over the plan = 45
    pts = {
        "x": x,
        "y": y,
        "z": z,
        "classification": np.full(4000, 6, np.uint8),
        "return_number": np.ones(4000, np.uint8),
    }
    mean = footprint_heights(fp, pts, HeightParams(roof_classes=(6,), roof_statistic="mean", shrink_m=0.0))
    p75 = footprint_heights(fp, pts, HeightParams(roof_classes=(6,), shrink_m=0.0))
    assert mean["roof_sample"].iloc[0] == pytest.approx(z.mean())
    assert mean["roof_sample"].iloc[0] == pytest.approx(45.0, abs=0.1)
    assert p75["roof_sample"].iloc[0] == pytest.approx(47.5, abs=0.15)


# ------------------------------------------------------------------------------------------ real data


def _need_nrw() -> list[Path]:
    files = sorted(NRW.glob("LoD2_32_*_1_NW.gml")) if NRW.is_dir() else []
    if not files:
        pytest.skip("../shared/realdata/nrw is absent")
    return files


def _independent(files: list[Path]) -> dict:
    """Full-tree parse with xpath: counts and 3D areas per semantic (not the streaming reader)."""
    ns = {"bldg": "http://www.opengis.net/citygml/building/1.0", "gml": "http://www.opengis.net/gml"}
    out = {"buildings": 0, "parts": 0, "polygons": 0, "area": {}, "ids": []}

    def area(poly) -> float:
        tot = 0.0
        for k, ring in enumerate(poly.xpath(".//gml:LinearRing", namespaces=ns)):
            v = np.array(ring.xpath("gml:posList/text()", namespaces=ns)[0].split(), float).reshape(-1, 3)
            cr = np.cross(v[1:-1] - v[0], v[2:] - v[0]).sum(axis=0)  # fan cross products
            a = 0.5 * float(np.linalg.norm(cr))
            tot += a if k == 0 else -a
        return tot

    for f in files:
        tree = etree.parse(str(f))
        out["buildings"] += len(tree.xpath("//bldg:Building", namespaces=ns))
        out["parts"] += len(tree.xpath("//bldg:BuildingPart", namespaces=ns))
        out["polygons"] += len(tree.xpath("//gml:Polygon", namespaces=ns))
        out["ids"] += tree.xpath("//bldg:Building/@gml:id", namespaces=ns)
        z = [
            float(v)
            for t in tree.xpath("//gml:Polygon//gml:posList/text()", namespaces=ns)
            for v in t.split()[2::3]
        ]
        out["zmin"] = min(out.get("zmin", np.inf), min(z))
        out["zmax"] = max(out.get("zmax", -np.inf), max(z))
        for kind, sem in (
            ("RoofSurface", "roof"),
            ("WallSurface", "wall"),
            ("GroundSurface", "ground"),
            ("ClosureSurface", "closure"),
        ):
            polys = tree.xpath(f"//bldg:{kind}//gml:Polygon", namespaces=ns)
            out["area"][sem] = out["area"].get(sem, 0.0) + sum(area(p) for p in polys)
    return out


@pytest.mark.realdata
def test_nrw_lod2_tiles_read_completely():
    files = _need_nrw()
    ref = _independent(files)
    m = read_lod2(files)
    assert not m.rejected
    b = m.buildings
    assert len(b) == ref["buildings"] == 554  # README: 30 + 80 + 73 + 142 + 150 + 79
    assert int(m.objects["is_part"].sum()) == ref["parts"]
    assert sorted(b["oid"]) == sorted(ref["ids"])
    assert len(m.surfaces) == ref["polygons"]
    assert (m.surfaces["semantic"] != "unclassified").all()
    for sem, a in ref["area"].items():
        ours = float(m.surfaces.loc[m.surfaces["semantic"] == sem, "area"].sum())
        assert ours == pytest.approx(a, rel=1e-9), sem
    # footprints equal the ground surfaces; every building has a roof and a mean roof height
    g = m.surfaces[m.surfaces["semantic"] == "ground"]
    assert float(b.geometry.area.sum()) == pytest.approx(float(g["plan_area"].sum()), rel=1e-6)
    assert b.geometry.is_valid.all() and (b["n_roof"] > 0).all()
    assert (b["roof_mean_z"] >= b["roof_z_min"] - 1e-6).all() and (
        b["roof_mean_z"] <= b["roof_z_max"] + 1e-6
    ).all()
    # measuredHeight ~ roof top - ground where the building itself carries it
    own = b["measured_height"].notna() & (b["roof_type"].notna())
    dz = (b["z_max"] - b["ground_z"] - b["measured_height"])[own].abs()
    assert float(dz.median()) < 0.05
    assert b["oid"].str.startswith("DENW").all()
    assert {"51002_1251", "31001_1010"} <= set(b["function"])
    # heights are taken as delivered (the file's CRS is the working CRS): extremes equal the xpath parse
    assert float(m.objects["z_min"].min()) == ref["zmin"] and float(m.objects["z_max"].max()) == ref["zmax"]


@pytest.mark.realdata
def test_nrw_input_check_and_footprint_reader():
    files = _need_nrw()
    from pipeline.orchestrate.inputs import verify_file

    assert all(verify_file(str(f)) is None for f in files)
    fp = read_citygml(files[0], [])
    assert len(fp) == 30 and fp.crs.to_epsg() == 25832


@pytest.mark.realdata
def test_nrw_lod1_roof_matches_official_mean_lod2_roof():
    """The real 300 m crop: LoD1 roof statistics of the points vs the official mean LoD2 roof height."""
    _need_nrw()
    laz = NRW / "3dm_32_360_5721_crop300_360650_5721600.laz"
    if not laz.is_file():
        pytest.skip("crop LAZ absent")
    b = read_lod2([NRW / "LoD2_32_360_5721_1_NW.gml"]).buildings
    inside = b[b.geometry.within(shapely.box(360650, 5721600, 360950, 5721900))].reset_index(drop=True)
    assert len(inside) >= 9
    pts = read_points(str(laz))
    official = inside["roof_mean_z"].to_numpy()

    def med(stat: str, pct: float, shrink: float) -> float:
        hp = HeightParams(
            roof_percentile=pct,
            roof_classes=(6, 1),
            ground_classes=(2,),
            roof_statistic=stat,
            shrink_m=shrink,
        )
        st = footprint_heights(inside, pts, hp)
        return float(np.median(np.abs(st["roof_sample"].to_numpy() - official)))

    p75 = med("percentile", 75, 0.5)
    mean_shrunk = med("mean", 75, 0.5)
    mean_full = med("mean", 75, 0.0)
    print(
        f"median |LoD1 - official mean LoD2 roof|: p75 {p75:.3f}, mean {mean_shrunk:.3f} (shrink 0.5), {mean_full:.3f} (shrink 0)"
    )
    assert p75 > 1.0  # the old default sits about 1 m above the AdV definition
    assert mean_shrunk <= 0.3 and mean_full <= 0.15


def test_official_lod2_roofs_in_the_layer(tmp_path: Path):
    """The orchestrator's glue: reference CityGML files -> joined LoD2 roofs -> LoD1 roof heights."""
    from types import SimpleNamespace

    import pandas as pd

    from pipeline.config.model import TwinConfig
    from pipeline.orchestrate.buildings import official_lod2_roofs

    path = _write(
        tmp_path, "lod2.gml", citygml("2.0", [building("DENW52AL0000001A", gable_house("g", X0, Y0)[0])])
    )
    cfg = TwinConfig(
        name="t",
        crs={"horizontal": "EPSG:25832", "vertical": "EPSG:7837"},
        layers={"buildings": {"lod1_roof_source": "official_lod2"}},
    )
    ctx = SimpleNamespace(
        cfg=cfg, inputs_for=lambda role: [SimpleNamespace(path=path)] if role == "reference" else []
    )
    fp = gpd.GeoDataFrame(
        {"oid": ["DENW52AL0000001A", "elsewhere"]},
        geometry=[shapely.box(X0, Y0, X0 + 10, Y0 + 8), shapely.box(X0 + 100, Y0, X0 + 110, Y0 + 8)],
        crs="EPSG:25832",
    )
    final = pd.DataFrame(
        {
            "roof_height": [49.0, 50.0],
            "base_height": [40.0, 40.0],
            "height": [9.0, 10.0],
            "base_source": ["ring", "ring"],
            "floors_estimate": np.array([3, 3], dtype=np.int32),
            "floors_is_estimate": [True, True],
            "quality": ["ok", "ok"],
            "flags": ["", ""],
        }
    )
    warnings: list[str] = []
    out = official_lod2_roofs(ctx, fp, final, warnings)  # type: ignore[arg-type]
    assert out["roof_height"].tolist() == pytest.approx([47.5, 50.0])
    assert out["flags"].tolist() == ["roof_from_lod2", ""] and not warnings

    # the default lod1_roof_source lod2: the mean height of each building's own LoD2 roof
    from pipeline.orchestrate.blobs import BlobStore
    from pipeline.orchestrate.buildings import lod1_roofs_from_lod2_roofs

    lod2 = SimpleNamespace(
        partitions=BlobStore.of(tmp_path / "partitions.bin", [b"x", b""], 2),
        columns={"roof_mean_height": np.array([46.0, 47.0]), "lod_source": np.array(["reconstructed", "x"])},
    )
    fb = final.assign(quality=["ok", "fallback_default"], flags=["", "fallback_default"])
    out = lod1_roofs_from_lod2_roofs(fb, lod2, 3.0)
    assert out["roof_height"].tolist() == [46.0, 50.0] and out["height"].tolist() == [6.0, 10.0]
    assert out["flags"].tolist() == ["roof_from_reconstruction", "fallback_default"]
    assert out["floors_estimate"].tolist() == [2, 3] and out["quality"].tolist() == ["ok", "fallback_default"]


@pytest.mark.realdata
def test_nrw_masts_are_not_extruded():
    """The official LoD2 tiles as cadastre (generic CityGML): the 37 lattice masts (51002_1251) are
    skipped by the default rule and reported; buildings stay."""
    files = _need_nrw()
    from pipeline.config.model import BuildingsLayer
    from pipeline.sources.cadastre import read_footprints

    t = read_footprints(files, "generic")
    masts = int((t.gdf["gfkzshh"] == "51002_1251").sum())
    assert masts == 37
    kept = apply_structure_rules(t, BuildingsLayer().non_building_functions)
    assert len(kept.gdf) == len(t.gdf) - masts
    assert not (kept.gdf["gfkzshh"] == "51002_1251").any()
    assert sum("51002_1251" in r.reason for r in kept.rejected) == masts


def _peak_rss_reading(path: Path) -> tuple[int, int]:
    """(buildings, peak RSS in bytes) of a fresh process that streams the file with iter_citygml."""
    import subprocess
    import sys

    code = (
        "import resource, sys\n"
        "from pipeline.sources.cadastre.citygml import iter_citygml\n"
        "n = sum(1 for _ in iter_citygml(sys.argv[1], []))\n"
        "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, timeout=300
    )
    n, rss = out.stdout.split()
    return int(n), int(rss)


def test_memory_is_bounded_by_one_building(tmp_path: Path):
    """Streaming: a file 4x larger needs (almost) no more memory (libxml2's tree is freed per building)."""

    def write(n: int) -> Path:
        p = tmp_path / f"big{n}.gml"
        with open(p, "w", encoding="utf-8") as f:
            head, tail = citygml("2.0", ["@@"]).split("@@")
            f.write(head)
            for i in range(n):
                f.write(building(f"B{i}", gable_house(f"B{i}", X0 + (i % 100) * 20, Y0 + (i // 100) * 20)[0]))
            f.write(tail)
        return p

    small, big = write(2000), write(8000)
    growth_file = big.stat().st_size - small.stat().st_size
    (n1, rss1), (n2, rss2) = _peak_rss_reading(small), _peak_rss_reading(big)
    assert (n1, n2) == (2000, 8000)
    assert growth_file > 15e6
    assert rss2 - rss1 < 0.1 * growth_file, (rss1, rss2, growth_file)
