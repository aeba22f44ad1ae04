"""A crafted 200 m district with known answers for the terrain, overlay, change and report tests.

Terrain: an analytic DGM (slope + wave). Two aerial epochs (2021, 2024) of ground (class 2) and non-ground
(class 20) points at ~8 pts/m2 over a handful of box buildings whose heights change in known ways, a tree
(green in the orthophoto's NIR) and an unregistered shed; epoch 2024 has a hole without points.
Cadastre: ALKIS-like GeoPackage with GebauedeBauwerk + Flurstueck (four 100 m x 100 m parcels).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin

X0, Y0 = 350000.0, 5700000.0  # SW corner
SIZE = 200.0
FRAME_ORIGIN = (X0 + 100.0, Y0 + 100.0, 0.0)


def dgm_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 60.0 + 0.02 * (np.asarray(x) - X0) + 1.5 * np.sin((np.asarray(y) - Y0) / 30.0)


@dataclass(frozen=True)
class Box:
    oid: str
    x0: float
    y0: float
    x1: float
    y1: float
    h2021: float
    h2024: float
    registered: bool = True
    expected: str = ""

    @property
    def geom(self):
        return shapely.box(X0 + self.x0, Y0 + self.y0, X0 + self.x1, Y0 + self.y1)


BUILDINGS = [
    Box("DENW01", 20, 20, 40, 40, 10.0, 10.0, expected="unchanged"),
    Box("DENW02", 60, 20, 80, 35, 6.0, 10.0, expected="raised"),
    Box("DENW03", 110, 20, 130, 40, 12.0, 7.0, expected="lowered"),
    Box("DENW04", 20, 120, 40, 140, 0.0, 9.0, expected="new"),
    Box("DENW05", 60, 120, 80, 140, 8.0, 0.0, expected="demolished"),
    Box("DENW06", 145, 145, 165, 165, 9.0, 9.0, expected="unknown"),  # inside the 2024 hole
    Box("SHED", 100, 100, 108, 106, 0.0, 4.0, registered=False),  # 48 m2, unregistered
]
TREE = (150.0, 60.0, 162.0, 72.0, 8.0)  # x0, y0, x1, y1, height: green, not a structure
HOLE_2024 = (130.0, 130.0, 190.0, 190.0)
PARCELS = [(0, 0, 100, 100), (100, 0, 200, 100), (0, 100, 100, 200), (100, 100, 200, 200)]


def height_above_ground(x: np.ndarray, y: np.ndarray, epoch: str) -> np.ndarray:
    h = np.zeros_like(x)
    for b in BUILDINGS:
        inside = (x >= X0 + b.x0) & (x < X0 + b.x1) & (y >= Y0 + b.y0) & (y < Y0 + b.y1)
        h = np.where(inside, b.h2021 if epoch == "2021" else b.h2024, h)
    tx0, ty0, tx1, ty1, th = TREE
    inside = (x >= X0 + tx0) & (x < X0 + tx1) & (y >= Y0 + ty0) & (y < Y0 + ty1)
    return np.where(inside, th, h)


def parcel_truth() -> list[dict]:
    """Analytic built-up area per parcel (registered buildings present in the newest cadastre)."""
    out = []
    for i, (a, b, c, d) in enumerate(PARCELS):
        p = shapely.box(X0 + a, Y0 + b, X0 + c, Y0 + d)
        built = shapely.union_all([bb.geom for bb in BUILDINGS if bb.registered]).intersection(p).area
        out.append({"flstkennz": f"0591000000{i:02d}______", "area": p.area, "built": built})
    return out


def write_points(path: Path, epoch: str, seed: int, spacing: float = 0.35) -> None:
    import laspy
    from pyproj import CRS

    rng = np.random.default_rng(seed)
    g = np.arange(0, SIZE, spacing)
    gx, gy = np.meshgrid(g, g)
    x = X0 + gx.ravel() + rng.uniform(0, spacing, gx.size)
    y = Y0 + gy.ravel() + rng.uniform(0, spacing, gx.size)
    if epoch == "2024":
        hx0, hy0, hx1, hy1 = HOLE_2024
        keep = ~((x >= X0 + hx0) & (x < X0 + hx1) & (y >= Y0 + hy0) & (y < Y0 + hy1))
        x, y = x[keep], y[keep]
    hag = height_above_ground(x, y, epoch)
    z = dgm_height(x, y) + hag + rng.normal(0, 0.03, x.size)
    cls = np.where(hag > 0.2, 20, 2).astype(np.uint8)
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.scales = [0.01, 0.01, 0.01]
    header.offsets = [X0, Y0, 0]
    header.add_crs(CRS("EPSG:25832"))  # heights DHHN2016 via crs.vertical
    las = laspy.LasData(header)
    las.x, las.y, las.z = x, y, z
    las.classification = cls
    path.parent.mkdir(parents=True, exist_ok=True)
    las.write(path)


def write_rasters(raw: Path, res: float = 1.0, ortho_res: float = 0.5) -> None:
    (raw / "dgm").mkdir(parents=True, exist_ok=True)
    (raw / "dop").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        for j in range(2):
            x0, y1 = X0 + i * 100, Y0 + (j + 1) * 100
            n = int(100 / res)
            c = (np.arange(n) + 0.5) * res
            gx, gy = np.meshgrid(x0 + c, y1 - c)
            with rasterio.open(
                raw / "dgm" / f"dgm1_32_{int(x0)}_{int(y1 - 100)}_0.1_nw_2024.tif",
                "w",
                driver="GTiff",
                width=n,
                height=n,
                count=1,
                dtype="float32",
                crs="EPSG:25832",
                transform=from_origin(x0, y1, res, res),
                nodata=-9999,
            ) as ds:
                ds.write(dgm_height(gx, gy).astype("float32"), 1)
            m = int(100 / ortho_res)
            c = (np.arange(m) + 0.5) * ortho_res
            gx, gy = np.meshgrid(x0 + c, y1 - c)
            tx0, ty0, tx1, ty1, _ = TREE
            tree = (gx >= X0 + tx0) & (gx < X0 + tx1) & (gy >= Y0 + ty0) & (gy < Y0 + ty1)
            # a lawn in the SW parcel's west half: green, low
            lawn = (gx < X0 + 15) & (gy < Y0 + 100)
            green = tree | lawn
            red = np.where(green, 40, 150).astype("uint8")
            grn = np.where(green, 120, 140).astype("uint8")
            blue = np.full_like(red, 110)
            nir = np.where(green, 200, 120).astype("uint8")
            with rasterio.open(
                raw / "dop" / f"dop10rgbi_32_{int(x0)}_{int(y1 - 100)}_0.1_nw_2024.tif",
                "w",
                driver="GTiff",
                width=m,
                height=m,
                count=4,
                dtype="uint8",
                crs="EPSG:25832",
                transform=from_origin(x0, y1, ortho_res, ortho_res),
            ) as ds:
                ds.write(np.stack([red, grn, blue, nir]))


def write_cadastre(raw: Path) -> None:
    (raw / "alkis").mkdir(parents=True, exist_ok=True)
    path = raw / "alkis" / "alkis.gpkg"
    b = [bb for bb in BUILDINGS if bb.registered]
    gpd.GeoDataFrame(
        {
            "oid": [bb.oid for bb in b],
            "gebnutzbez": ["Gebäude"] * len(b),
            "funktion": ["Wohngebäude"] * len(b),
            "gfkzshh": ["31001_1000"] * len(b),
        },
        geometry=[bb.geom for bb in b],
        crs="EPSG:25832",
    ).to_file(path, layer="GebauedeBauwerk", driver="GPKG")
    truth = parcel_truth()
    gpd.GeoDataFrame(
        {"flstkennz": [t["flstkennz"] for t in truth], "flaeche": [t["area"] for t in truth]},
        geometry=[shapely.box(X0 + a, Y0 + b_, X0 + c, Y0 + d) for a, b_, c, d in PARCELS],
        crs="EPSG:25832",
    ).to_file(path, layer="Flurstueck", driver="GPKG")


def make_district(root: Path, epochs: tuple[str, ...] = ("2021", "2024"), dgm: bool = True) -> Path:
    """Write the raw inputs and configs/district.yaml; returns the config path."""
    raw = root / "raw"
    for k, ep in enumerate(epochs):
        write_points(raw / "aerial" / ep / f"3dm_32_{int(X0)}_{int(Y0)}_0.2_nw_{ep}.laz", ep, seed=k + 1)
    write_rasters(raw)
    write_cadastre(raw)
    aerial = "\n".join(f"    - {{epoch: '{ep}', points: 'aerial/{ep}/*.laz'}}" for ep in epochs)
    dgm_line = "  dgm: {path: 'dgm/*.tif'}\n" if dgm else ""
    cfg = root / "configs" / "district.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        "name: district\n"
        "paths: {raw: ../raw, out: ../out, cache: ../cache}\n"
        # the crafted LAZ files declare EPSG:25832 only: their heights' datum is configured
        "crs: {horizontal: 'auto', vertical: 'EPSG:7837', "
        f"frame_origin: [{FRAME_ORIGIN[0]}, {FRAME_ORIGIN[1]}, 0.0]}}\n"
        "runtime: {progress: false}\n"
        "sources:\n"
        "  aerial:\n" + aerial + "\n"
        "  orthophoto: {path: 'dop/*.tif'}\n" + dgm_line + "  cadastre: {path: 'alkis/*.gpkg'}\n"
    )
    return cfg


def context(cfg_path: Path, release: Path, **overrides):
    """A BuildContext for layer builders without running the whole build (no Dask client)."""
    from pipeline.buildlog import BuildLog
    from pipeline.config import load_config
    from pipeline.crs import project_frame
    from pipeline.model import BuildContext
    from pipeline.orchestrate.inputs import scan_inputs
    from pipeline.orchestrate.working_crs import resolve_working_crs

    cfg = load_config(cfg_path, overrides or None)
    inputs = scan_inputs(cfg)
    cfg = resolve_working_crs(cfg, inputs)  # crs: auto, as a build does
    if cfg.crs.frame_origin is not None:
        frame = project_frame(cfg.crs)
    else:
        from pipeline.orchestrate.build import plan_frame

        frame = plan_frame(cfg, inputs)
    return BuildContext(
        cfg=cfg,
        build_id="test",
        release_dir=release,
        frame=frame,
        inputs=inputs,
        log=BuildLog(quiet=True),
    )


@cache
def demo_raw() -> Path:
    """The tiny demo district (200 m, 100 m tiles, 8 pts/m2), generated once per test process."""
    import atexit
    import shutil
    import tempfile

    from pipeline.sources.demo import generate_demo

    root = Path(tempfile.mkdtemp(prefix="twin-overlays-demo-"))
    atexit.register(shutil.rmtree, root, True)
    generate_demo(root / "raw", size_m=200, tile_m=100, density=8, mobile_density=2e6, progress=False)
    return root / "raw"


def demo_project(root: Path, config_text: str) -> Path:
    """A project folder whose raw/ links to the shared demo deliveries; returns the config path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "raw").symlink_to(demo_raw(), target_is_directory=True)
    (root / "configs").mkdir()
    (root / "configs" / "tiny.yaml").write_text(config_text)
    return root / "configs" / "tiny.yaml"
