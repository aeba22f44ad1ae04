"""Bounded memory of the buildings stage: the LoD2 roofs spilled to a `BlobStore`, the roof faces written
from WKB in batches, tile tasks fed through a window - each giving the same bytes as the one-piece way."""

from __future__ import annotations

import hashlib
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.orchestrate.blobs import BlobRef, BlobStore
from pipeline.orchestrate.executor import map_ordered


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_blob_store_round_trip_replace_and_refs(tmp_path):
    blobs = [b"abc", b"", b"x" * 10_000, b"\x00\x01", b""]
    s = BlobStore.of(tmp_path / "b.bin", blobs, len(blobs))
    assert len(s) == 5 and list(s) == blobs
    assert s.nonempty().tolist() == [True, False, True, True, False]
    s[0] = b"replaced"  # appended; the old bytes stay in the file unused
    s[3] = b""
    assert s.take([3, 0, 2]) == [b"", b"replaced", b"x" * 10_000]
    ref = s.ref(np.array([2, 0, 1]))
    # a task in another process gets the ref pickled and reads the file itself
    assert pickle.loads(pickle.dumps(ref)).load() == [b"x" * 10_000, b"replaced", b""]
    assert BlobStore(tmp_path / "empty.bin", 3).ref(np.arange(3)).load() == [b"", b"", b""]
    s.close()
    (tmp_path / "b.bin").write_bytes(b"short")
    with pytest.raises(OSError, match="short"):
        ref.load()


def test_blob_ref_is_small_to_send(tmp_path):
    s = BlobStore.of(tmp_path / "b.bin", [b"y" * 4000] * 200, 200)
    assert len(pickle.dumps(s.ref(np.arange(200)))) < 5000  # 16 bytes per entry, not 4000


def _sq(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [None, 3])
def test_map_ordered_window_reads_items_when_submitted(workers):
    made: list[int] = []
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}

    def make(i: int) -> tuple[int]:
        with lock:
            made.append(i)
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        return (i,)

    got: dict[int, int] = {}

    def take(i: int, r: int) -> None:
        with lock:
            in_flight["now"] -= 1
        got[i] = r

    items = (make(i) for i in range(30))
    if workers is None:
        out = map_ordered(None, _sq, items, name="sq", total=30, on_result=take, window=4)
    else:
        with ThreadPoolExecutor(workers) as ex:
            out = map_ordered(ex, _sq, items, name="sq", total=30, on_result=take, window=4)
    assert out == [None] * 30  # handed over, not kept
    assert got == {i: i * i for i in range(30)}
    assert sorted(made) == list(range(30))  # each item made once
    assert in_flight["max"] <= 4  # never more than the window made and not yet taken


def _faces_frame() -> gpd.GeoDataFrame:
    rng = np.random.default_rng(3)
    polys = []
    for x, y in rng.uniform(0, 500, (40, 2)):
        polys.append(
            shapely.Polygon([(x, y, 50.0), (x + 8, y, 51.5), (x + 8, y + 6, 52.25), (x, y + 6, 50.0)])
        )
    polys[5] = shapely.MultiPolygon([polys[5], shapely.affinity.translate(polys[6], 20.0, 0.0)])
    return gpd.GeoDataFrame(
        {
            "oid": np.array([f"DENW{i:04d}" for i in range(40)], dtype=object),
            "face": (np.arange(40) % 3).astype(np.int32),
            "slope": np.round(rng.uniform(0, 45, 40), 3),
            "azimuth": np.where(np.arange(40) % 4 == 0, np.nan, 90.0),
        },
        geometry=polys,
        crs="EPSG:25832",
    )


@pytest.mark.parametrize("rows", [40, 0])
def test_write_layer_wkb_same_bytes_as_write_layer(tmp_path, rows):
    from pipeline.styles.gpkg import write_layer, write_layer_wkb

    gdf = _faces_frame().iloc[:rows]
    one, two = tmp_path / "frame.gpkg", tmp_path / "wkb.gpkg"
    write_layer(gdf, one, "roof_faces", "MultiPolygon Z")
    cols = {c: gdf[c].to_numpy() for c in gdf.columns if c != "geometry"}
    wkb = shapely.to_wkb(np.asarray(gdf.geometry.values, dtype=object))
    write_layer_wkb(two, "roof_faces", "MultiPolygon Z", wkb, cols, gdf.crs)
    assert _sha(one) == _sha(two)


E0, N0 = 362_100.0, 5_716_100.0  # in the demo district (inside the geoid grid)


def _footprint(k: int) -> shapely.Polygon:
    return shapely.box(E0 + 30.0 * k, N0, E0 + 30.0 * k + 12, N0 + 8)


def _partitions() -> list[bytes]:
    """Packed roof partitions of 7 buildings (gable and shallow gable roofs; every third none)."""
    from pipeline.stages.buildings.roofs import fit_roof
    from pipeline.stages.buildings.solids import pack_partition, roof_partition

    rng = np.random.default_rng(0)
    out = []
    for k in range(7):
        if k % 3 == 1:
            out.append(b"")  # LoD1 box: no faces
            continue
        fp = _footprint(k)
        x, y = rng.uniform(E0 + 30.0 * k, E0 + 30.0 * k + 12, 600), rng.uniform(N0, N0 + 8, 600)
        z = 50 - (0.8 if k % 2 else 0.3) * np.abs(y - N0 - 4) + rng.normal(0, 0.02, 600)
        out.append(pack_partition(roof_partition(fit_roof(x, y, z, fp), fp)))
    return out


def test_roof_faces_in_batches_same_bytes_as_one_frame(tmp_path):
    """The roof_faces layer made 2 buildings at a time from the spill and written from WKB is the file
    the one-piece GeoDataFrame of every face (the way before) gives."""
    from pipeline.orchestrate.buildings import roof_faces_layer
    from pipeline.stages.buildings.solids import roof_faces
    from pipeline.styles.gpkg import write_layer, write_layer_wkb

    blobs = _partitions()
    oids = np.array([f"DENW{i:04d}" for i in range(len(blobs))], dtype=object)
    # the one-piece reference: every face a shapely polygon in one GeoDataFrame
    cols, geoms = roof_faces(oids, blobs)
    for k in ("plane_a", "plane_b"):
        cols[k] = np.round(cols[k], 9)
    for k in ("plane_c", "slope", "azimuth", "area", "mean_height"):
        cols[k] = np.round(cols[k], 3)
    ref = gpd.GeoDataFrame(cols, geometry=list(geoms), crs="EPSG:25832")
    assert len(ref) > 5
    write_layer(ref, tmp_path / "ref.gpkg", "roof_faces", "MultiPolygon Z")

    store = BlobStore.of(tmp_path / "p.bin", blobs, len(blobs))
    bcols, wkb = roof_faces_layer(oids, store, batch=2)
    write_layer_wkb(tmp_path / "new.gpkg", "roof_faces", "MultiPolygon Z", wkb, bcols, "EPSG:25832")
    assert _sha(tmp_path / "ref.gpkg") == _sha(tmp_path / "new.gpkg")
    # no LoD2 roof at all: an empty layer, as before
    empty = BlobStore(tmp_path / "e.bin", 3)
    ecols, ewkb = roof_faces_layer(oids[:3], empty)
    assert len(ewkb) == 0 and all(len(v) == 0 for v in ecols.values())


def test_tile_task_reads_its_roofs_from_the_spill(tmp_path):
    """A building tile written by the task from a BlobRef is the tile written from the roofs in memory."""
    from pipeline.config.model import CrsConfig
    from pipeline.crs import project_frame
    from pipeline.orchestrate.buildings import write_building_tile_cached
    from pipeline.orchestrate.cache import Cache
    from pipeline.stages.buildings.content import write_building_tile
    from pipeline.stages.buildings.solids import solid_of

    blobs = _partitions()
    n = len(blobs)
    # solids over a base of 40 m where there is a roof (as the LoD2 task packs them), else b""
    from pipeline.stages.buildings.solids import pack_solid

    solids = [pack_solid(solid_of(b, 40.0)) if b else b"" for b in blobs]
    assert any(solids) and not all(solids)
    fps = [_footprint(k) for k in range(n)]
    crs = CrsConfig(horizontal="EPSG:25832", vertical="EPSG:7837")
    frame = project_frame(crs, (E0 + 100.0, N0 + 4.0, 0.0))
    table = {"oid": [f"DENW{i:04d}" for i in range(n)], "height": np.full(n, 10.0)}
    args = (list(shapely.to_wkb(fps)), np.full(n, 40.0), np.full(n, 50.0), table, frame, crs)
    write_building_tile(str(tmp_path / "ref.glb"), *args, solids)
    store = BlobStore.of(tmp_path / "s.bin", solids, n)
    cache = Cache(tmp_path / "cache")
    packed = pickle.dumps((*args, store.ref(np.arange(n))), protocol=5)
    write_building_tile_cached(cache, cache.key(["t"]), str(tmp_path / "new.glb"), packed)
    assert _sha(tmp_path / "ref.glb") == _sha(tmp_path / "new.glb")
    assert isinstance(pickle.loads(packed)[-1], BlobRef)
