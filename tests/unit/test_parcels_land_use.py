"""Land-use class per parcel (ALKIS tatsächliche Nutzung -> palette LAND_USE) and the outlined parcel tile."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from pipeline.config.model import OverlayLayer

CLASSES = OverlayLayer().land_use_classes


def test_street_parcel_takes_the_traffic_class_and_a_garden_does_not() -> None:
    from pipeline.stages.overlays.land_use import parcel_land_use

    parcels = np.array(
        [
            box(0, 0, 100, 12),  # street parcel
            box(0, 12, 30, 50),  # house and garden
            box(30, 12, 60, 50),  # garden with a path across a small part of it
            box(60, 12, 100, 50),  # a pond covering most of it
            box(200, 200, 210, 210),  # no land-use record at all
            box(300, 0, 320, 20),  # half of it without a land-use record, a street area on 40 %
        ],
        dtype=object,
    )
    areas = np.array(
        [
            box(0, 0, 60, 12),
            box(60, 0, 100, 12),
            box(0, 12, 60, 50),
            box(40, 12, 42, 50),  # a Weg of 76 m2 in a 1140 m2 garden: the garden stays building land
            box(60, 12, 100, 40),
            box(60, 40, 100, 50),
            box(0, 0, 30, 12.001),  # a street area reaching 1 mm into the garden parcel above it
            box(300, 0, 308, 20),
            box(308, 0, 312, 20),
        ],
        dtype=object,
    )
    uses = np.array(
        [
            "Straßenverkehr",
            "STRASSENVERKEHR",
            "Wohnbaufläche",
            "Weg",
            "Stehendes Gewässer",
            "Wohnbaufläche",
            "Straßenverkehr",
            "Straßenverkehr",
            "Wohnbaufläche",
        ],
        dtype=object,
    )
    uses[1] = "straßenverkehr"  # matched case-insensitively
    got = parcel_land_use(parcels, areas, uses, CLASSES)
    assert got.tolist() == ["traffic", "", "", "water", "", ""]
    # a street parcel recorded as Weg or Platz is traffic as well
    for use in ("Weg", "Platz"):
        assert parcel_land_use(parcels[:1], areas[:1], np.array([use], dtype=object), CLASSES).tolist() == [
            "traffic"
        ]
    # no classes configured: nothing is classified
    assert parcel_land_use(parcels, areas, uses, {}).tolist() == [""] * 6


def test_land_use_is_read_from_the_alkis_geopackage(tmp_path: Path) -> None:
    """The demo's layer (`NutzungFlurstueck`, column `nutzart`) through the cadastre reader."""
    from pipeline.orchestrate.overlays import land_use_areas
    from pipeline.stages.overlays.land_use import parcel_land_use

    gpkg = tmp_path / "alkis.gpkg"
    parcels = gpd.GeoDataFrame(
        {"flstkennz": ["A", "B"]}, geometry=[box(0, 0, 100, 12), box(0, 12, 30, 50)], crs="EPSG:25832"
    )
    parcels.to_file(gpkg, layer="Flurstueck", engine="pyogrio")
    gpd.GeoDataFrame(
        {"flstkennz": ["A", "B"], "nutzart": ["Straßenverkehr", "Wohnbaufläche"]},
        # the street area reaches 1 mm into B (digitising slivers): B stays building land
        geometry=[box(0, 0, 100, 12.001), box(0, 12, 30, 50)],
        crs="EPSG:25832",
    ).to_file(gpkg, layer="NutzungFlurstueck", engine="pyogrio")
    lu = land_use_areas([gpkg], "alkis_gpkg", None, "nutzart", None, "EPSG:25832")
    assert lu is not None
    got = parcel_land_use(
        parcels.geometry.to_numpy(), lu.geometry.to_numpy(), lu["nutzart"].to_numpy(), CLASSES
    )
    assert got.tolist() == ["traffic", ""]
    # no land-use layer: None (the caller logs it and draws by GRZ)
    bare = tmp_path / "bare.gpkg"
    parcels.to_file(bare, layer="Flurstueck", engine="pyogrio")
    assert land_use_areas([bare], "alkis_gpkg", None, "nutzart", None, "EPSG:25832") is None
    assert land_use_areas([gpkg], "nas", None, "nutzart", None, "EPSG:25832") is None


def test_config_land_use_classes_are_the_palette_classes() -> None:
    from pipeline.config.model import LAND_USE_CLASSES
    from pipeline.styles.palettes import LAND_USE

    assert list(LAND_USE_CLASSES) == [str(e.value) for e in LAND_USE]


def test_unknown_land_use_class_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown land-use classes"):
        OverlayLayer(land_use_classes={"roads": ["Straßenverkehr"]})


def test_outlined_overlay_tile_is_valid_gltf(tmp_path: Path) -> None:
    from pipeline.stages.overlays.mesh import draped, draped_outlines
    from pipeline.styles.palettes import PARCEL_OUTLINE
    from pipeline.tiles.gltf import read_glb
    from pipeline.tiles.overlay_glb import feature_mesh_glb
    from pipeline.tiles.validate_gltf import validate_glb_files, validator_available

    polys = np.array([box(0, 0, 25, 20), box(25, 0, 40, 20).difference(box(30, 5, 35, 10))], dtype=object)
    mesh = draped(polys, lambda x, y: 0.01 * x, 0.3)
    out = draped_outlines(polys, lambda x, y: 0.01 * x, 0.35)
    # every ring densified to the mesh cell (10 m); one segment per edge piece, heights on the terrain
    assert (
        len(out.segments) >= 4 + 3 + 4 + 4
        and np.abs(np.diff(out.xyz[out.segments], axis=1)[..., :2]).max() <= 10
    )
    np.testing.assert_allclose(out.xyz[:, 2], 0.01 * out.xyz[:, 0] + 0.35)
    assert set(out.feature.tolist()) == {0, 1}

    def write() -> bytes:
        return feature_mesh_glb(
            mesh.xyz,
            mesh.normals,
            mesh.triangles,
            mesh.feature,
            np.full((len(mesh.xyz), 4), 200, np.uint8),
            class_id="parcel",
            columns={"grz": np.array([0.1, 0.5])},
            unlit=True,
            outline_enu=out.xyz,
            outline_segments=out.segments,
            outline_srgb=PARCEL_OUTLINE,
        )

    glb = write()
    js, _ = read_glb(glb)
    prims = js["meshes"][0]["primitives"]
    assert [p["mode"] for p in prims] == [4, 1]
    assert js["accessors"][prims[1]["indices"]]["count"] == 2 * len(out.segments)
    path = tmp_path / "t.glb"
    path.write_bytes(glb)
    # deterministic
    assert glb == write()
    if not validator_available():
        pytest.skip("gltf-validator not installed (node_modules)")
    (report,) = validate_glb_files([path])
    assert report["errors"] == 0, report
