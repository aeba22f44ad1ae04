"""A small generated bad-input corpus: each function damages one delivery of a tiny district's raw folder
(a copy made by the test) the way a real night went wrong (issue 12). Seeded and tiny; no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

GPKG = "alkis/alkis_vereinfacht_demo.gpkg"


def _first(raw: Path, pattern: str) -> Path:
    return sorted(raw.glob(pattern))[0]


def _rewrite_gpkg(raw: Path, change) -> None:
    """Rewrite the cadastre GeoPackage layer by layer; `change(layer_name, gdf)` returns the new frame."""
    import pyogrio

    src = raw / GPKG
    tmp = src.with_suffix(".tmp.gpkg")
    for name, _geom in pyogrio.list_layers(src):
        gdf = pyogrio.read_dataframe(src, layer=str(name))
        pyogrio.write_dataframe(
            change(str(name), gdf), tmp, layer=str(name), driver="GPKG", append=tmp.exists()
        )
    tmp.replace(src)


def truncated_gpkg(raw: Path) -> None:
    """The cadastre GeoPackage cut at 60 % (an interrupted copy)."""
    p = raw / GPKG
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])


def empty_building_layer(raw: Path) -> None:
    _rewrite_gpkg(raw, lambda name, g: g.iloc[:0] if name == "GebauedeBauwerk" else g)


def half_the_buildings(raw: Path) -> None:
    _rewrite_gpkg(raw, lambda name, g: g.iloc[::2] if name == "GebauedeBauwerk" else g)


def null_parcel_ids(raw: Path) -> None:
    def change(name, g):
        if name == "Flurstueck":
            g = g.copy()
            g.loc[g.index[:2], "flstkennz"] = None
        return g

    _rewrite_gpkg(raw, change)


def duplicate_parcel_ids(raw: Path) -> None:
    def change(name, g):
        if name == "Flurstueck":
            g = g.copy()
            g.loc[g.index[3], "flstkennz"] = g.loc[g.index[4], "flstkennz"]
        return g

    _rewrite_gpkg(raw, change)


def gpkg_labelled_4326(raw: Path) -> None:
    """Metres in a GeoPackage whose CRS says EPSG:4326."""
    _rewrite_gpkg(raw, lambda name, g: g.set_crs("EPSG:4326", allow_override=True))


def _edit_raster(path: Path, change) -> None:
    import rasterio

    with rasterio.open(path) as ds:
        profile = ds.profile
        data = ds.read()
    data, profile = change(data, dict(profile))
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
    tmp.replace(path)


def dgm_spikes(raw: Path) -> None:
    """1e30 in every 97th cell of one DGM tile (an undeclared nodata value)."""

    def change(a, prof):
        a = a.copy()
        a.reshape(-1)[::97] = 1e30
        return a, prof

    _edit_raster(_first(raw, "dgm/*.tif"), change)


def dgm_single_spike(raw: Path) -> None:
    """One cell 500 m above its neighbours (within the physical range, but a spike)."""

    def change(a, prof):
        a = a.copy()
        a[0, 50, 50] += 500.0
        return a, prof

    _edit_raster(_first(raw, "dgm/*.tif"), change)


def dgm_all_nodata(raw: Path) -> None:
    def change(a, prof):
        return np.full_like(a, -9999.0), prof | {"nodata": -9999.0}

    _edit_raster(_first(raw, "dgm/*.tif"), change)


def ortho_all_nodata(raw: Path) -> None:
    def change(a, prof):
        return np.zeros_like(a), prof | {"nodata": 0}

    _edit_raster(_first(raw, "dop/*.tif"), change)


def ortho_black(raw: Path) -> None:
    def change(a, prof):
        return np.zeros_like(a), prof

    _edit_raster(_first(raw, "dop/*.tif"), change)


def ortho_two_bands(raw: Path) -> None:
    def change(a, prof):
        prof["count"] = 2
        prof.pop("photometric", None)
        return a[:2].copy(), prof

    _edit_raster(_first(raw, "dop/*.tif"), change)


def laz_twice(raw: Path) -> None:
    """The same aerial tile under a second name in the delivery folder."""
    src = _first(raw, "aerial/2024/*.laz")
    shutil.copy2(src, src.with_name("copy_of_" + src.name))


def laz_z_plus_1e6(raw: Path) -> None:
    """One aerial tile with every Z shifted by +1e6 m (header and points)."""
    import laspy

    p = _first(raw, "aerial/2024/*.laz")
    las = laspy.read(p)
    z = np.asarray(las.z) + 1e6
    las.header.offsets = np.array([las.header.offsets[0], las.header.offsets[1], las.header.offsets[2] + 1e6])
    las.z = z
    las.update_header()
    las.write(p)


def laz_header_count_short(raw: Path) -> None:
    """An aerial tile whose header announces 1,000 points fewer than it holds (legacy count field)."""
    import laspy

    p = _first(raw, "aerial/2024/*.laz")
    with laspy.open(p) as r:
        count = int(r.header.point_count)
        assert r.header.version.minor < 4
    with p.open("r+b") as f:
        f.seek(107)
        f.write((count - 1000).to_bytes(4, "little"))


CASES = {
    # name: (damage, expected exit code, words the message must contain)
    "truncated_gpkg": (truncated_gpkg, 2, ["alkis_vereinfacht_demo.gpkg"]),
    "empty_building_layer": (empty_building_layer, 2, ["GebauedeBauwerk", "no features"]),
    "null_parcel_ids": (null_parcel_ids, 2, ["without an id"]),
    "duplicate_parcel_ids": (duplicate_parcel_ids, 2, ["duplicate parcel id"]),
    "gpkg_labelled_4326": (gpkg_labelled_4326, 4, ["outside the area of use"]),
    "dgm_spikes": (dgm_spikes, 2, ["height_range_m", "dgm1_32_362000_5716000"]),
    "dgm_single_spike": (dgm_single_spike, 2, ["spike"]),
    "dgm_all_nodata": (dgm_all_nodata, 2, ["nodata", "hole"]),
    "ortho_all_nodata": (ortho_all_nodata, 2, ["nodata"]),
    "ortho_black": (ortho_black, 2, ["black"]),
    "ortho_two_bands": (ortho_two_bands, 2, ["2 band(s)", "reads band 3"]),
    "laz_twice": (laz_twice, 2, ["copy_of_", "same file content"]),
    "laz_z_plus_1e6": (laz_z_plus_1e6, 2, ["height_range_m"]),
    "laz_header_count_short": (laz_header_count_short, 2, ["3dm_32_362000_5716000_0.1_nw_2024.laz"]),
}
