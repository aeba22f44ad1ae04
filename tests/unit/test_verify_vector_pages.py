"""The input check reads a vector delivery in pages of records (memory bounded by a page): every record is
read, a healthy file passes, a truncated one is still refused."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import shapely

import pipeline.orchestrate.inputs as inputs


def test_vector_layers_read_in_pages(tmp_path, monkeypatch):
    path = tmp_path / "alkis.gpkg"
    g = gpd.GeoDataFrame(
        {"flstkennz": [f"k{i}" for i in range(25)]},
        geometry=[shapely.box(i, 0, i + 1, 1) for i in range(25)],
        crs="EPSG:25832",
    )
    g.to_file(path, layer="Flurstueck", engine="pyogrio")
    g.iloc[:3].to_file(path, layer="GebauedeBauwerk", engine="pyogrio")
    seen: list[tuple[str, int]] = []
    real = pyogrio.read_dataframe

    def counting(*a, **k):
        df = real(*a, **k)
        seen.append((k["layer"], len(df)))
        return df

    monkeypatch.setattr(inputs, "VERIFY_FEATURES", 10)
    monkeypatch.setattr(pyogrio, "read_dataframe", counting)
    assert inputs.verify_file(str(path)) is None
    assert sorted(seen) == sorted(
        [("Flurstueck", 10), ("Flurstueck", 10), ("Flurstueck", 5), ("GebauedeBauwerk", 3)]
    )
    cut = tmp_path / "cut.gpkg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert inputs.verify_file(str(cut)) is not None
