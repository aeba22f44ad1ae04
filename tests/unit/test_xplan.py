"""XPlanGML reader: the real test plans read completely (checked against an independent plain-lxml parse),
crafted 5.x/6.x documents with every measure and height form, and clear errors for what cannot be read."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from pipeline.errors import InputError
from pipeline.sources.xplan import read_plans

XPLAN_FILES = ["Blankenese29.gml", "BP2070_5-0.zip", "BPlan001_6-0.zip", "BPlan002_6-0.zip"]
GML = "http://www.opengis.net/gml/3.2"


# ---- independent parse (plain lxml, whole document) ------------------------------------------------------


def _docs(path: Path) -> list[tuple[str, bytes]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            return [(f"{path}!{n}", z.read(n)) for n in z.namelist() if n.endswith(".gml")]
    return [(str(path), path.read_bytes())]


def _ln(el) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _independent(data: bytes) -> dict:
    root = etree.fromstring(data)
    feats = [f for m in root if _ln(m) in ("featureMember", "member") for f in m if _ln(f)]
    out: dict = {"plans": 0, "areas": {}, "lines": {}}
    for f in feats:
        name = _ln(f)
        gid = f.get(f"{{{GML}}}id")
        if name == "BP_Plan":
            out["plans"] += 1
        elif name in (
            "BP_BaugebietsTeilFlaeche",
            "BP_BaugebietsTeilflaeche",
            "BP_UeberbaubareGrundstuecksFlaeche",
        ):
            out["areas"][gid] = f
        elif name in ("BP_BauGrenze", "BP_BauLinie", "BP_BaugrenzeLinie", "BP_BaulinieLinie"):
            out["lines"][gid] = f
    return out


def _ring_area(ring) -> float:
    vals = np.array(" ".join(ring.itertext()).split(), dtype=float).reshape(-1, 2)
    x, y = vals[:, 0] - vals[0, 0], vals[:, 1] - vals[0, 1]  # local: no cancellation at UTM magnitudes
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


MEASURE_COLUMN = {"GRZ": "grz_max", "GFZ": "gfz_max", "Z": "z_max", "GR": "gr_max"}
STRUCTURAL = {"boundedBy", "position", "gehoertZuBereich", "wirdDargestelltDurch", "hoehenangabe"}
OWN_COLUMN = {"ebene": "ebene", "rechtscharakter": "rechtscharakter", "besondereArtDerBaulNutzung": "art"}


@pytest.mark.parametrize("name", XPLAN_FILES)
def test_real_plans_every_area_and_attribute_accounted_for(realdata, name):
    path = realdata / "xplan" / name
    plans = read_plans([path], "EPSG:25832")
    n_plans = 0
    for source, data in _docs(path):
        ind = _independent(data)
        n_plans += ind["plans"]
        areas = plans.areas[plans.areas["source"] == source].set_index("gml_id")
        lines = plans.lines[plans.lines["source"] == source].set_index("gml_id")
        assert sorted(areas.index) == sorted(ind["areas"])
        assert sorted(lines.index) == sorted(ind["lines"])
        n_values = 0
        for gid, el in ind["areas"].items():
            row = areas.loc[gid]
            other = json.loads(row["other"]) if row["other"] else {}
            expected_other: dict[str, list[str]] = {}
            for c in el:
                cn = _ln(c)
                if not cn or cn in STRUCTURAL:
                    continue
                if cn in MEASURE_COLUMN:
                    assert row[MEASURE_COLUMN[cn]] == pytest.approx(float(c.text)), (gid, cn)
                    n_values += 1
                elif cn in OWN_COLUMN:
                    assert str(row[OWN_COLUMN[cn]]) == c.text.strip(), (gid, cn)
                else:
                    expected_other.setdefault(cn, []).append(c.text.strip())
            assert other == expected_other, gid
            # no measure column holds a value the file does not have
            present = {MEASURE_COLUMN[_ln(c)] for c in el if _ln(c) in MEASURE_COLUMN}
            for col in MEASURE_COLUMN.values():
                assert (col in present) == bool(np.isfinite(row[col])), (gid, col)
            # polygon areas of plain LinearRing polygons (same CRS only: a transformation changes areas)
            polys = list(el.iter(f"{{{GML}}}Polygon"))
            simple = all(
                _ln(r) == "LinearRing"
                for p in polys
                for b in p
                for r in b
                if _ln(b) in ("exterior", "interior")
            )
            if plans.plans.iloc[0]["src_crs"] == "EPSG:25832" and simple and "EPSG:31467" not in source:
                want = 0.0
                for p in polys:
                    for b in p:
                        for r in b:
                            if _ln(b) == "exterior":
                                want += _ring_area(r)
                            elif _ln(b) == "interior":
                                want -= _ring_area(r)
                assert row.geometry.area == pytest.approx(want, rel=1e-9), gid
        if name == "BP2070_5-0.zip":
            assert n_values == 48  # the README's 48 GRZ/GFZ/Z values
    assert len(plans.plans) == n_plans == 1
    assert plans.areas.geometry.is_valid.all() and (plans.areas.geometry.area > 0).all()
    assert plans.lines.geometry.length.gt(0).all()
    assert set(plans.areas["plan_id"]) == set(plans.plans["plan_id"])


def test_real_plan_counts_and_crs(realdata):
    d = realdata / "xplan"
    plans = read_plans([d / n for n in XPLAN_FILES], "EPSG:25832")
    kinds = plans.areas.groupby(["kind"]).size().to_dict()
    assert kinds == {"building_area": 37 + 42 + 2 + 3, "buildable_area": 31 + 79}
    assert plans.lines["kind"].value_counts().to_dict() == {"baugrenze": 33 + 83, "baulinie": 23}
    assert len(plans.plans) == 4
    # the two standard test plans share a gml:id: both kept, told apart by their document
    assert plans.plans["plan_id"].is_unique
    assert any("is also in" in w for w in plans.warnings)
    # Gauss-Krüger zone 3 -> UTM 32: a point compared with a direct pyproj transformation (~1 m method)
    from pyproj import Transformer

    bp = plans.plans[plans.plans["src_crs"] == "EPSG:31467"].iloc[0]
    assert bp["transform_accuracy_m"] == pytest.approx(1.0)
    assert any("EPSG:31467 -> EPSG:25832 accurate to about 1 m" in w for w in plans.warnings)
    raw = _independent(_docs(d / "BP2070_5-0.zip")[0][1])
    gid, el = sorted(raw["areas"].items())[0]
    first = np.array(next(el.iter(f"{{{GML}}}posList")).text.split()[:2], dtype=float)
    t = Transformer.from_crs("EPSG:31467", "EPSG:25832", always_xy=True)
    ex, ey = t.transform(*first)
    g = plans.areas.set_index("gml_id").loc[gid].geometry
    assert g.exterior.coords[0] == pytest.approx((ex, ey), abs=1.5)
    assert 478_000 < g.exterior.coords[0][0] < 482_000  # Hamburg in UTM 32, not Gauss-Krüger


# ---- crafted documents ---------------------------------------------------------------------------------------


def _doc(
    features: str, version: str = "6/0", srs: str = "EPSG:25832", member: str = "featureMember"
) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<xplan:XPlanAuszug xmlns:gml="http://www.opengis.net/gml/3.2" xmlns:xlink="http://www.w3.org/1999/xlink"
  xmlns:xplan="http://www.xplanung.de/xplangml/{version}" gml:id="doc">
  <gml:boundedBy><gml:Envelope srsName="{srs}"><gml:lowerCorner>0 0</gml:lowerCorner>
  <gml:upperCorner>1 1</gml:upperCorner></gml:Envelope></gml:boundedBy>
  <gml:{member}><xplan:BP_Plan gml:id="plan1"><xplan:name>Test</xplan:name>
    <xplan:bereich xlink:href="#ber1"/></xplan:BP_Plan></gml:{member}>
  <gml:{member}><xplan:BP_Bereich gml:id="ber1"><xplan:gehoertZuPlan xlink:href="#plan1"/></xplan:BP_Bereich>
  </gml:{member}>
  {features}
</xplan:XPlanAuszug>""".encode()


def _square(x0: float, y0: float, s: float, srs: str = "EPSG:25832") -> str:
    c = [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s), (x0, y0)]
    pl = " ".join(f"{x} {y}" for x, y in c)
    return (
        f'<gml:Polygon srsName="{srs}" gml:id="p{x0:.0f}_{y0:.0f}"><gml:exterior><gml:LinearRing>'
        f"<gml:posList>{pl}</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>"
    )


def _area(
    gid: str, body: str, geom: str, ftype: str = "BP_BaugebietsTeilflaeche", member="featureMember"
) -> str:
    return (
        f'<gml:{member}><xplan:{ftype} gml:id="{gid}"><xplan:gehoertZuBereich xlink:href="#ber1"/>'
        f"<xplan:rechtscharakter>1000</xplan:rechtscharakter><xplan:position>{geom}</xplan:position>"
        f"{body}</xplan:{ftype}></gml:{member}>"
    )


def _hoehe(bezugspunkt: str | None, bezug: str | None, **h: float) -> str:
    parts = [f"<xplan:hoehenbezug>{bezug}</xplan:hoehenbezug>" if bezug else ""]
    parts.append(f"<xplan:bezugspunkt>{bezugspunkt}</xplan:bezugspunkt>" if bezugspunkt else "")
    parts += [f'<xplan:{k} uom="m">{v}</xplan:{k}>' for k, v in h.items()]
    return f"<xplan:hoehenangabe><xplan:XP_Hoehenangabe>{''.join(parts)}</xplan:XP_Hoehenangabe></xplan:hoehenangabe>"


X0, Y0 = 370_000.0, 5_710_000.0  # near Gelsenkirchen, EPSG:25832


def _write(tmp_path: Path, data: bytes, name: str = "plan.gml") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_crafted_measures_and_heights(tmp_path):
    body_a = (
        "<xplan:GRZmin>0.2</xplan:GRZmin><xplan:GRZmax>0.4</xplan:GRZmax><xplan:GFZ>1.2</xplan:GFZ>"
        "<xplan:Zzwingend>3</xplan:Zzwingend>"
        + _hoehe("2000", "2000", h=12.5)  # FH max 12.5 m above terrain
        + _hoehe("1000", "1200", hMin=55.0, hMax=58.0)  # TH between 55 and 58 m DHHN
        + _hoehe("6000", None, hZwingend=14.0)  # GBH exactly 14 m, reference not given
        + _hoehe(None, None, hMin=-5.0)  # vertical extent of the object, no height limit
        + "<xplan:MaxZahlWohnungen>4</xplan:MaxZahlWohnungen>"
    )
    multi = (
        '<gml:MultiSurface srsName="EPSG:25832" gml:id="ms"><gml:surfaceMember>'
        + _square(X0 + 100, Y0, 10)
        + "</gml:surfaceMember><gml:surfaceMember>"
        + _square(X0 + 120, Y0, 5)
        + "</gml:surfaceMember></gml:MultiSurface>"
    )
    body_b = '<xplan:GR uom="m2">300</xplan:GR><xplan:FHmax uom="m">9</xplan:FHmax><xplan:Z>2</xplan:Z>'
    feats = (
        _area("a", body_a, _square(X0, Y0, 50))
        + _area("b", body_b, multi, "BP_BaugebietsTeilFlaeche")
        + _area(
            "u", "<xplan:Z>2</xplan:Z>", _square(X0 + 5, Y0 + 5, 20), "BP_UeberbaubareGrundstuecksFlaeche"
        )
    )
    line = (
        '<gml:featureMember><xplan:BP_BaugrenzeLinie gml:id="bg"><xplan:position>'
        '<gml:LineString srsName="EPSG:25832" gml:id="ls"><gml:posList>'
        f"{X0 + 5} {Y0 + 5} {X0 + 25} {Y0 + 5}</gml:posList></gml:LineString></xplan:position>"
        "</xplan:BP_BaugrenzeLinie></gml:featureMember>"
    )
    path = _write(tmp_path, _doc(feats + line))
    z = read_plans([path], "EPSG:25832")
    a = z.areas.set_index("gml_id")
    assert a.loc["a", "kind"] == "building_area" and a.loc["u", "kind"] == "buildable_area"
    assert (a.loc["a", "grz_min"], a.loc["a", "grz_max"], a.loc["a", "gfz_max"]) == (0.2, 0.4, 1.2)
    assert a.loc["a", "z_min"] == a.loc["a", "z_max"] == a.loc["a", "z_zwingend"] == 3
    assert (a.loc["a", "fh_max"], a.loc["a", "fh_ref"]) == (12.5, "relativGelaendeoberkante")
    assert np.isnan(a.loc["a", "fh_min"])
    assert (a.loc["a", "th_min"], a.loc["a", "th_max"], a.loc["a", "th_ref"]) == (55.0, 58.0, "absolutDHHN")
    assert (a.loc["a", "gh_min"], a.loc["a", "gh_max"], a.loc["a", "gh_ref"]) == (14.0, 14.0, "")
    assert len(json.loads(a.loc["a", "heights"])) == 4  # all four XP_Hoehenangabe kept as given
    assert json.loads(a.loc["a", "other"]) == {"MaxZahlWohnungen": ["4"]}
    assert (a.loc["b", "gr_max"], a.loc["b", "fh_max"], a.loc["b", "fh_ref"], a.loc["b", "z_max"]) == (
        300.0,
        9.0,
        "",
        2.0,
    )
    assert a.loc["b"].geometry.geom_type == "MultiPolygon" and a.loc["b"].geometry.area == pytest.approx(
        125.0
    )
    assert a.loc["u", "z_max"] == 2 and a.loc["u", "plan_id"] == "plan1"
    assert z.lines.iloc[0]["kind"] == "baugrenze" and z.lines.iloc[0].geometry.length == pytest.approx(20.0)
    assert z.plans.iloc[0]["version"] == "6.0"


def test_version_5_featuremembers_zip_and_crs(tmp_path):
    """5.x, a gml:featureMembers container, a zipped plan in Gauss-Krüger 3 transformed to UTM 32."""
    gx, gy = 3_480_000.0, 5_890_000.0
    feats = (
        "<gml:featureMembers>"
        + _area(
            "a",
            "<xplan:GRZ>0.4</xplan:GRZ>",
            _square(gx, gy, 40, "EPSG:31467"),
            "BP_BaugebietsTeilFlaeche",
            "x",
        )
        .replace("<gml:x>", "")
        .replace("</gml:x>", "")
        + "</gml:featureMembers>"
    )
    data = _doc(feats, version="5/1", srs="EPSG:31467")
    zp = tmp_path / "plan.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("sub/xplan.gml", data)
        z.writestr("readme.txt", "not a plan")
    plans = read_plans([zp], "EPSG:25832")
    row = plans.areas.iloc[0]
    assert row["source"] == f"{zp}!sub/xplan.gml" and row["version"] == "5.1" and row["grz_max"] == 0.4
    assert row.geometry.area == pytest.approx(1600.0, rel=2e-3)  # GK -> UTM scale differs slightly
    x, _y = row.geometry.exterior.coords[0]
    assert 479_000 < x < 481_000


def test_arcs_are_densified(tmp_path):
    # half disc of radius 10: a straight diameter closed by a circular arc through the top
    ring = (
        '<gml:Polygon srsName="EPSG:25832" gml:id="pa"><gml:exterior><gml:Ring>'
        f'<gml:curveMember><gml:LineString gml:id="l1"><gml:posList>{X0 - 10} {Y0} {X0 + 10} {Y0}'
        "</gml:posList></gml:LineString></gml:curveMember><gml:curveMember><gml:Curve gml:id='c1'><gml:segments>"
        f'<gml:Arc interpolation="circularArc3Points"><gml:posList>{X0 + 10} {Y0} {X0} {Y0 + 10} {X0 - 10} {Y0}'
        "</gml:posList></gml:Arc></gml:segments></gml:Curve></gml:curveMember></gml:Ring></gml:exterior></gml:Polygon>"
    )
    z = read_plans([_write(tmp_path, _doc(_area("a", "", ring)))], "EPSG:25832", arc_tolerance_m=0.001)
    assert z.areas.iloc[0].geometry.area == pytest.approx(math.pi * 50, rel=1e-3)


@pytest.mark.parametrize(
    ("mutate", "message", "record"),
    [
        (lambda d: d.replace(b"<xplan:GRZ>0.4<", b"<xplan:GRZ>0,4<"), "GRZ: '0,4' is not a number", "a"),
        (
            lambda d: d.replace(b'srsName="EPSG:25832"', b'srsName="urn:x:unknown"'),
            "unknown or missing srsName",
            "a",
        ),
        (lambda d: d.replace(b"xplangml/6/0", b"xplangml/4/1"), "XPlanGML 4.1 is not supported", None),
        (lambda d: d.replace(b"http://www.xplanung.de/xplangml/6/0", b"urn:other"), "not an XPlanGML", None),
        (lambda d: d.replace(b"</xplan:XPlanAuszug>", b""), "XML cannot be parsed", None),
        (lambda d: d.replace(b"<gml:posList>", b"<gml:posList>1 ", 1), "geometry cannot be read", "a"),
        (lambda d: d.replace(b'<xplan:h uom="m">', b'<xplan:h uom="ft">'), "unit 'ft' is not supported", "a"),
        (
            lambda d: d.replace(b"</xplan:position>", b"</xplan:position><xplan:GRZ>0.5</xplan:GRZ>"),
            "two different",
            "a",
        ),
    ],
)
def test_errors_name_file_and_record(tmp_path, mutate, message, record):
    body = "<xplan:GRZ>0.4</xplan:GRZ>" + _hoehe("2000", "2000", h=9.0)
    path = _write(tmp_path, mutate(_doc(_area("a", body, _square(X0, Y0, 20)))))
    with pytest.raises(InputError) as e:
        read_plans([path], "EPSG:25832")
    text = str(e.value)
    assert message in text and str(path) in text
    if record:
        assert f"[{record}]" in text


def test_swapped_axes_are_refused(tmp_path):
    # northing first: outside the area of use of EPSG:25832 -> refused, naming the object
    path = _write(tmp_path, _doc(_area("a", "", _square(Y0, X0, 20))))
    with pytest.raises(InputError, match=r"\[a\].*outside the area of use"):
        read_plans([path], "EPSG:25832")


def test_zip_without_plan_and_wrong_suffix(tmp_path):
    zp = tmp_path / "empty.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(InputError, match=r"holds no \.gml"):
        read_plans([zp])
    with pytest.raises(InputError, match=r"must be \.gml"):
        read_plans([_write(tmp_path, b"x", "plan.pdf")])


def test_object_without_plan_link_in_a_two_plan_document(tmp_path):
    extra = '<gml:featureMember><xplan:BP_Plan gml:id="plan2"><xplan:name>B</xplan:name></xplan:BP_Plan></gml:featureMember>'
    feats = extra + _area("a", "", _square(X0, Y0, 20)).replace(
        '<xplan:gehoertZuBereich xlink:href="#ber1"/>', ""
    )
    with pytest.raises(InputError, match=r"\[a\].*which of the document's BP_Plan"):
        read_plans([_write(tmp_path, _doc(feats))])


_RSS_SCRIPT = """
import sys
from pathlib import Path
from pipeline.sources.xplan import read_plans
z = read_plans([sys.argv[1]], "EPSG:25832")
# VmHWM: peak resident memory of this process image (ru_maxrss would carry the parent's over exec)
hwm = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
print(len(z.areas), sum(z.skipped.values()), int(hwm.split()[1]) * 1024)
"""


def _peak_rss(path: Path) -> tuple[int, int, int]:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    a, s, rss = out.stdout.split()
    return int(a), int(s), int(rss)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_streaming_memory_is_bounded(tmp_path):
    """A 30 MB document of 60 000 presentation objects and 500 areas: the peak memory of the process
    grows by far less than the document (a whole-document parse needs several times its size)."""
    ppo = (
        '<gml:featureMember><xplan:XP_PPO gml:id="ppo{i}"><xplan:position><gml:Point gml:id="pt{i}" '
        'srsName="EPSG:25832"><gml:pos>370000 5710000</gml:pos></gml:Point></xplan:position>'
        "<xplan:art>" + "x y " * 100 + "</xplan:art></xplan:XP_PPO></gml:featureMember>"
    )
    parts = [ppo.format(i=i) for i in range(60_000)]
    parts += [
        _area(f"a{i}", "<xplan:GRZ>0.3</xplan:GRZ>", _square(X0 + i % 100 * 30, Y0 + i // 100 * 30, 20))
        for i in range(500)
    ]
    big = _write(tmp_path, _doc("".join(parts)), "big.gml")
    small = _write(tmp_path, _doc(_area("a", "<xplan:GRZ>0.3</xplan:GRZ>", _square(X0, Y0, 20))), "small.gml")
    size = big.stat().st_size
    assert size > 25_000_000
    n_small, _, rss_small = _peak_rss(small)
    n_big, n_skipped, rss_big = _peak_rss(big)
    assert (n_small, n_big, n_skipped) == (1, 500, 60_000)
    assert rss_big - rss_small < size / 3, (rss_big - rss_small, size)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_plans([tmp_path / "nope.gml"])
