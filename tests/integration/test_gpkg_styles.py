"""GeoPackages of a release: QGIS styles in `layer_styles` (QGIS's schema) and a `.qml` beside each layer,
declared geometry type and CRS even when empty, GeoPackage 1.2 timestamps, byte-identical rewrites, and
no complaint from GDAL 3.6 (`ogrinfo`, `validate_gpkg.py` of Debian's gdal-bin / python3-gdal; those
checks are skipped when the tools are absent, `make test` installs them with QGIS).

QGIS itself opening the styled layers: tests/integration/test_qgis.py."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from pipeline.styles.gpkg import GPKG_TIMESTAMP, default_styles, embed_styles, write_layer, write_styles
from pipeline.styles.qml import STYLES_DIR

OGRINFO = Path("/usr/bin/ogrinfo")
VALIDATE_GPKG = Path("/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py")
GPKG_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# the columns QGIS's QgsOgrProviderMetadata::saveStyle creates (checked against QGIS 3.40's own table)
QGIS_COLUMNS = [
    ("id", "INTEGER"),
    ("f_table_catalog", "TEXT(256)"),
    ("f_table_schema", "TEXT(256)"),
    ("f_table_name", "TEXT(256)"),
    ("f_geometry_column", "TEXT(256)"),
    ("styleName", "TEXT(30)"),
    ("styleQML", "TEXT"),
    ("styleSLD", "TEXT"),
    ("useAsDefault", "BOOLEAN"),
    ("description", "TEXT"),
    ("owner", "TEXT(30)"),
    ("ui", "TEXT(30)"),
    ("update_time", "DATETIME"),
]


def _polys(n: int) -> gpd.GeoDataFrame:
    geoms = [shapely.box(i * 10, 0, i * 10 + 5, 5) for i in range(n)]
    return gpd.GeoDataFrame({"change_class": ["new"] * n}, geometry=geoms, crs="EPSG:25832")


def _write(path: Path) -> Path:
    qml = (STYLES_DIR / "buildings_change.qml").read_text(encoding="utf-8")
    write_layer(_polys(3), path, "buildings_change", "MultiPolygon")
    write_layer(_polys(0), path, "unknown_areas", "MultiPolygon")
    write_styles(path, {"buildings_change": qml, "unknown_areas": qml})
    return path


def _gdal36_complaints(gpkg: Path) -> list[str]:
    """Warnings and errors of Debian's GDAL (3.6 on bookworm) reading every layer and the style table."""
    out = []
    if OGRINFO.is_file():
        for args in (["-al", "-so"], ["-sql", "SELECT * FROM layer_styles"], ["-al"]):
            r = subprocess.run([str(OGRINFO), "-ro", *args, str(gpkg)], capture_output=True, text=True)
            out += [ln for ln in (r.stdout + r.stderr).splitlines() if re.match(r"(Warning|ERROR)", ln)]
            assert r.returncode == 0, r.stderr
    if VALIDATE_GPKG.is_file():
        r = subprocess.run(
            ["/usr/bin/python3", str(VALIDATE_GPKG), str(gpkg)], capture_output=True, text=True
        )
        out += [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    return out


def test_empty_layer_keeps_geometry_type_and_crs(tmp_path):
    gpkg = _write(tmp_path / "change.gpkg")
    con = sqlite3.connect(gpkg)
    cols = con.execute(
        "SELECT table_name, geometry_type_name, srs_id FROM gpkg_geometry_columns ORDER BY 1"
    ).fetchall()
    assert cols == [("buildings_change", "MULTIPOLYGON", 25832), ("unknown_areas", "MULTIPOLYGON", 25832)]
    assert pyogrio.read_info(gpkg, layer="unknown_areas")["features"] == 0
    # single polygons are promoted to the declared multi type (GDAL warns about mixed types otherwise)
    read = pyogrio.read_dataframe(gpkg, layer="buildings_change")
    assert list(read.geom_type) == ["MultiPolygon"] * 3
    assert con.execute("PRAGMA user_version").fetchone()[0] == 10200  # GeoPackage 1.2


def test_layer_without_crs_is_refused(tmp_path):
    g = _polys(1).set_crs(None, allow_override=True)
    with pytest.raises(ValueError, match="no CRS"):
        write_layer(g, tmp_path / "x.gpkg", "x", "MultiPolygon")


def test_layer_styles_table_is_qgis_schema_with_spec_timestamps(tmp_path):
    gpkg = _write(tmp_path / "change.gpkg")
    con = sqlite3.connect(gpkg)
    cols = [(r[1], r[2]) for r in con.execute("PRAGMA table_info(layer_styles)")]
    assert cols == QGIS_COLUMNS
    rows = con.execute(
        "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, update_time FROM layer_styles ORDER BY 1"
    ).fetchall()
    assert [r[:4] for r in rows] == [
        ("buildings_change", "geom", "buildings_change", 1),
        ("unknown_areas", "geom", "unknown_areas", 1),
    ]
    stamps = [r[4] for r in rows]
    stamps += [r[0] for r in con.execute("SELECT last_change FROM gpkg_contents")]
    assert stamps and all(GPKG_DATETIME.match(s) for s in stamps), stamps
    assert set(stamps) == {GPKG_TIMESTAMP}
    # registered like QGIS registers it (an attributes table), with GDAL's feature count kept right
    assert con.execute(
        "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
    ).fetchone() == ("attributes",)
    assert con.execute(
        "SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = 'layer_styles'"
    ).fetchone() == (2,)


def test_styles_replace_and_qml_beside(tmp_path):
    gpkg = _write(tmp_path / "change.gpkg")
    embed_styles(gpkg, {"unknown_areas": "<qgis/>"})
    assert default_styles(gpkg)["unknown_areas"] == "<qgis/>"
    con = sqlite3.connect(gpkg)
    assert con.execute("SELECT count(*) FROM layer_styles").fetchone()[0] == 2
    beside = (tmp_path / "buildings_change.qml").read_text(encoding="utf-8")
    assert beside == default_styles(gpkg)["buildings_change"]
    with pytest.raises(ValueError, match="no layer parcels"):
        embed_styles(gpkg, {"parcels": "<qgis/>"})
    with pytest.raises(FileNotFoundError):
        embed_styles(tmp_path / "absent.gpkg", {"x": "<qgis/>"})
    assert not (tmp_path / "absent.gpkg").exists()


def test_rewrite_is_byte_identical(tmp_path):
    a = _write(tmp_path / "a" / "change.gpkg").read_bytes()
    b = _write(tmp_path / "b" / "change.gpkg").read_bytes()
    assert a == b


@pytest.mark.skipif(not OGRINFO.is_file(), reason="Debian gdal-bin (ogrinfo) absent; make test installs it")
def test_gdal_36_reads_without_complaint(tmp_path):
    assert _gdal36_complaints(_write(tmp_path / "change.gpkg")) == []
    # the check can fail: the timestamp format GDAL 3.6 rejects
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes((tmp_path / "change.gpkg").read_bytes())
    con = sqlite3.connect(bad)
    con.execute("UPDATE layer_styles SET update_time = '2000-01-01T00:00:00Z'")
    con.commit()
    con.close()
    assert any("update_time" in c for c in _gdal36_complaints(bad))


def test_release_geopackages(tiny_release):
    """Every GeoPackage of the tiny release: every layer styled (as the .qml beside it), geometry type and
    CRS declared, spec timestamps, no GDAL 3.6 complaint."""
    gpkgs = sorted(tiny_release.rglob("*.gpkg"))
    names = {p.relative_to(tiny_release).as_posix() for p in gpkgs}
    assert {"buildings/buildings.gpkg", "overlays/parcels.gpkg", "change/change.gpkg"} <= names
    for g in gpkgs:
        styles = default_styles(g)
        con = sqlite3.connect(f"file:{g}?mode=ro", uri=True)
        geoms = dict(
            con.execute("SELECT table_name, geometry_type_name FROM gpkg_geometry_columns").fetchall()
        )
        srs = dict(con.execute("SELECT table_name, srs_id FROM gpkg_contents").fetchall())
        stamps = [r[0] for r in con.execute("SELECT last_change FROM gpkg_contents")]
        stamps += [r[0] for r in con.execute("SELECT update_time FROM layer_styles")]
        con.close()
        assert set(styles) == set(geoms), g
        for layer, qml in styles.items():
            assert (g.parent / f"{layer}.qml").read_text(encoding="utf-8") == qml, (g, layer)
            assert geoms[layer].startswith("MULTI"), (g, layer, geoms[layer])
            assert srs[layer] == 25832, (g, layer)
        assert all(GPKG_DATETIME.match(s) for s in stamps), (g, stamps)
        if OGRINFO.is_file():
            assert _gdal36_complaints(g) == [], g
