"""The configuration model. One section per concern; every assumption about a delivery is a field here.

Strict: unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AccessClass = Literal["public", "internal"]
# "auto": inferred from the codes present and NRW/AdV file naming (docs/pointcloud.md, "Class scheme")
ClassScheme = Literal["adv", "asprs", "auto"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(Strict):
    raw: Path = Path("../data/raw")
    out: Path = Path("../data/out")
    cache: Path = Path("../data/cache")


class CrsConfig(Strict):
    """Working CRS and the height system.

    `horizontal` + `vertical` form the working CRS: every layer (points, buildings, terrain, overlays,
    change, report) works in it, and every source is transformed into it from its own CRS (the files'
    CRS or the source's `crs:`). `horizontal`: any CRS PROJ knows ("EPSG:25833", "EPSG:28992", WKT);
    "auto" (default) = the inputs' own: the CRS the aerial and mobile point files, the DGM and the
    cadastre declare (their source's `crs:` first), which must agree, else the build stops naming the
    files and their CRSs. `vertical`: any vertical CRS PROJ knows ("EPSG:7837" DHHN2016, "EPSG:5709" NAP); "auto"
    (default) = the inputs' own; null or "ellipsoidal" = heights are ellipsoidal heights (no geoid step).
    """

    horizontal: str = "auto"
    vertical: str | None = "auto"
    # Geoid model file for the vertical datum (any datum, any file name: it replaces the grid of the
    # geoid step PROJ chooses); otherwise PROJ's data dirs, then the grids vendored in the package.
    geoid_grid: Path | None = None
    # Files without a vertical CRS: refuse (default) unless this says their Z is ellipsoidal.
    assume_ellipsoidal_heights: bool = False
    # Fixed origin of the project east-north-up frame [E, N, H] in the horizontal CRS. Fixed per project
    # so tile ids and bytes stay stable between builds. null = derived from the planned extent, snapped
    # to `frame_snap` metres.
    frame_origin: tuple[float, float, float] | None = None
    frame_snap: float = 1000.0

    @field_validator("vertical")
    @classmethod
    def _ellipsoidal_is_null(cls, v: str | None) -> str | None:
        return None if v is not None and v.strip().lower() == "ellipsoidal" else v

    @property
    def compound(self) -> str:
        """The working CRS as one string PROJ reads: "EPSG:h+v" for two EPSG codes, else its WKT."""
        if not self.vertical:
            return self.horizontal
        if self.horizontal.upper().startswith("EPSG:") and self.vertical.upper().startswith("EPSG:"):
            return f"{self.horizontal}+{self.vertical.split(':')[-1]}"
        from pipeline.crs import compound_of

        return compound_of(self.horizontal, self.vertical).to_wkt()


class RuntimeConfig(Strict):
    scheduler: str | None = Field(None, description="tcp://HOST:PORT of an existing Dask scheduler")
    workers: int | None = Field(None, ge=1, description="local worker processes (default: CPU count)")
    memory: str = Field("2GB", description="memory budget per worker, e.g. 1.5GB, 800MB")
    progress: bool = True
    # size budget of the intermediate cache (paths.cache); `twin gc` trims it, least recently used first
    cache_budget: str = Field("20GB", description="e.g. 500MB, 20GB")


class AerialEpoch(Strict):
    """One survey epoch of the aerial point cloud (LAS/LAZ/COPC tiles)."""

    epoch: str
    points: str = Field(description="glob relative to paths.raw, e.g. 'aerial/2024/*.laz'")
    crs: str | None = Field(None, description="override the files' CRS (compound CRS string)")
    class_scheme: ClassScheme = "adv"


class RasterSource(Strict):
    path: str = Field(description="glob relative to paths.raw")
    crs: str | None = None
    # 1-based band indices (orthophoto: red, green, blue, nir)
    bands: dict[str, int] = Field(default_factory=dict)
    # tiles in another CRS or resolution than expected: reproject them onto the working grid, or refuse
    on_mismatch: Literal["reproject", "error"] = "reproject"
    # expected ground resolution in metres (None: taken from the files; mixed resolutions use the finest)
    resolution: float | None = Field(None, gt=0)


class CadastreSource(Strict):
    path: str = Field(description="file or glob relative to paths.raw")
    format: Literal["alkis_gpkg", "nas", "generic"] = "alkis_gpkg"
    # generic inputs: map our names (oid, funktion, gfkzshh, anzahlgs, ...) to the file's columns
    columns: dict[str, str] = Field(default_factory=dict)
    layer: str | None = None
    parcel_layer: str | None = None
    # tatsächliche Nutzung (land use) areas, read for the street axes of layers.street_space: the layer
    # (None: `NutzungFlurstueck`, else `Nutzung`, when the GeoPackage has one) and its land-use column
    landuse_layer: str | None = None
    landuse_column: str = "nutzart"
    crs: str | None = None


class MobileSource(Strict):
    points: str | None = None
    panoramas: str | None = None
    # 360° images (equirectangular JPEG, 2:1), glob relative to paths.raw; file name = `<image_id>.jpg`
    panorama_images: str | None = None
    # what the panorama list's `heading` (yaw of the image centre, clockwise) is measured from
    heading_reference: Literal["grid", "true"] = "grid"
    # without a `track_id` column, a new track starts where the time gap exceeds this (seconds)
    track_gap_seconds: float = Field(30.0, gt=0)
    crs: str | None = None
    class_scheme: ClassScheme = "auto"


class SourcesConfig(Strict):
    aerial: list[AerialEpoch] = Field(default_factory=list)
    orthophoto: RasterSource | None = None
    dgm: RasterSource | None = None
    cadastre: CadastreSource | None = None
    mobile: MobileSource | None = None
    reference_citygml: str | None = None


class LayerBase(Strict):
    enabled: bool = True
    access: AccessClass = "public"


class PointsLayer(LayerBase):
    format: Literal["1.1", "1.0"] = "1.1"
    # LAS extra dimensions (Extra Bytes) exported as metadata properties `x_<name>`: "all" (default: every
    # one any input has), "none", or a list of names
    extra_dimensions: Literal["all", "none"] | list[str] = "all"
    # LAS fields exported only when asked for (pipeline/point_attributes.py: "scan_angle")
    attributes: list[str] = Field(default_factory=list)
    colour_from_orthophoto: bool = True
    # EXT_meshopt_compression of the point tiles (1.1): ~8 instead of 36 bytes per point
    meshopt: bool = True
    implicit: bool = False
    max_points_per_tile: int = Field(60_000, ge=1000)
    # unknown class codes: refuse (default) or keep them as "unknown <code>"
    unknown_classes: Literal["error", "keep"] = "error"
    # also write the layer as COPC (one .copc.laz per input file in <layer>/copc/, positions in the working
    # CRS) plus <layer>/<layer>.vpc over them, for QGIS (docs/qgis.md)
    copc: bool = True

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, v: list[str]) -> list[str]:
        from pipeline.point_attributes import check_optional

        check_optional(v)  # ValueError naming the unknown ones and the choices
        return v

    @property
    def extra_dimension_names(self) -> tuple[str, ...] | None:
        """The extra dimensions to keep: None = all the inputs have, () = none."""
        if self.extra_dimensions == "all":
            return None
        if self.extra_dimensions == "none":
            return ()
        return tuple(self.extra_dimensions)

    @field_validator("extra_dimensions")
    @classmethod
    def _standard_fields_are_no_extra_dimensions(cls, v: str | list[str]) -> str | list[str]:
        """Standard LAS fields listed here (intensity, classification: always in the tiles) are dropped."""
        from pipeline.point_attributes import extra_dimensions_only

        return v if isinstance(v, str) else extra_dimensions_only(v)


def _non_buildings() -> dict[str, Literal["skip", "keep"]]:
    return {
        "51002_1220": "skip",
        "51002_1250": "skip",
        "51002_1251": "skip",
        "51002_1260": "skip",
        "51002_1270": "skip",
        "51002_1330": "skip",
        "51002_1331": "skip",
        "51002_1332": "skip",
        "51002_1333": "skip",
        "51005": "skip",
    }


class BuildingsLayer(LayerBase):
    format: Literal["1.1", "1.0"] = "1.1"
    roof_percentile: float = Field(75.0, gt=0, lt=100)
    stats_percentiles: list[float] = Field(default_factory=lambda: [50.0, 70.0, 90.0, 99.0])
    shrink_m: float = 0.5
    ground_ring_m: float = 3.0
    min_points: int = 5
    floor_height_m: float = 3.0
    default_height_m: float = 9.0
    skip_bauteil: bool = True
    skip_underground: bool = True
    min_area_m2: float = 2.0
    # base height: this percentile of the ground points in the ring; fewer ground points -> DGM fallback
    ground_percentile: float = Field(10.0, gt=0, lt=100)
    min_ground_points: int = Field(3, ge=1)
    # class codes per scheme: roof candidates (non-ground, first/only returns) and ground
    roof_classes: dict[str, list[int]] = Field(default_factory=lambda: {"adv": [20, 1], "asprs": [6, 1]})
    ground_classes: dict[str, list[int]] = Field(default_factory=lambda: {"adv": [2], "asprs": [2]})
    first_returns_only: bool = True
    # mean NDVI over the footprint above this flags vegetation over the roof
    ndvi_threshold: float = 0.3
    # per-epoch roof statistics (roof_p75_<epoch>, n_points_<epoch>) for change detection
    per_epoch_stats: bool = True
    # tiling: leaves hold <= max_features buildings and are <= max_leaf_m wide; parent geometricError =
    # ge_factor x tile width; every `external_every` levels a subtree goes to its own tileset file
    # (0 = never; only used when the tree has more than 1000 tiles)
    max_features_per_tile: int = Field(2000, ge=1, le=65535)
    max_leaf_m: float = Field(250.0, gt=0)
    ge_factor: float = Field(0.1, gt=0)
    external_every: int = Field(4, ge=0)
    floor: bool = True  # close the solids with a floor polygon
    # LoD1 roof height. lod1_roof_source "lod2" (default): the plan-area-weighted mean height of the
    # building's LoD2 roof (the AdV / Geobasis NRW LoD1 definition), i.e. of the roof reconstructed from
    # the survey (or taken from the official model with lod2_source official); buildings without an LoD2
    # roof (lod 1, LoD1 fallback) take roof_statistic of their roof points. "points": roof_statistic for
    # every building. "official_lod2": the mean roof height of the official LoD2 building
    # (sources.reference_citygml, joined by ALKIS id, else by footprint overlap >= lod2_join_min_iou)
    # where there is one, else roof_statistic.
    # roof_statistic: "mean" (default) = the mean of the roof points, an estimate of the area-weighted
    # mean roof height (0.28 m median from the official LoD1 roofs on the real NRW crop with shrink_m
    # 0.5, 0.13 m with shrink_m 0); "percentile" = roof_percentile of them (p75: +1.2 m there)
    roof_statistic: Literal["percentile", "mean"] = "mean"
    lod1_roof_source: Literal["lod2", "points", "official_lod2"] = "lod2"
    lod2_join_min_iou: float = Field(0.5, gt=0, le=1)
    # level of detail of the solids: 2 = LoD2 roofs reconstructed from the newest epoch's roof points
    # (standard roof shapes / multi-plane, pipeline.stages.buildings.roofs); a building with too few
    # (< lod2_min_points) or too noisy (RMSE > lod2_max_rmse_m) roof points keeps its LoD1 box and says
    # why (lod2_fallback_reason); 1 = LoD1 boxes only
    lod: Literal[1, 2] = 2
    lod2_min_points: int = Field(20, ge=6)
    lod2_max_rmse_m: float = Field(0.5, gt=0)
    # roof points: non-ground first/only returns inside the footprint shrunk by this (m)
    lod2_shrink_m: float = Field(0.3, ge=0)
    # "points": every LoD2 roof reconstructed from the survey; "official": buildings joined to the
    # official LoD2 model (sources.reference_citygml, by ALKIS id else overlap >= lod2_join_min_iou)
    # take its roof polygons over the cadastral footprint (lod_source "official"), the others and any
    # official roof that gives no valid solid are reconstructed from the points
    lod2_source: Literal["points", "official"] = "points"
    # vegetation over roofs: only points of single-return pulses are roof candidates (a tree crown
    # splits the pulse, a roof - also a green roof - stops it); false keeps every first return
    lod2_single_returns: bool = True
    # vegetation over roofs, where the orthophoto (sources.orthophoto) has a near-infrared band: roof
    # points whose orthophoto pixel has NDVI above ndvi_threshold are dropped before the fit (count in
    # roof_n_vegetation), except where at least lod2_green_roof_share of a footprint's points are green
    # (a green roof keeps its points)
    lod2_ndvi_filter: bool = True
    # building parts (ALKIS Bauteil records): true = each Bauteil (clipped to the building holding it)
    # and the rest of the footprint get a roof fit of their own, merged into the building's LoD2 roof;
    # per-part roof attributes in buildings.gpkg layer `building_parts` (needs lod 2 and lod2_source
    # points; Bauteil records are then not filtered by skip_bauteil)
    lod2_parts: bool = True
    # which Bauteile have a roof of their own and become units (lod2_parts): AX_Bauteil bauart codes
    # (GeoInfoDok code list; the record's gfkzshh is "31002_<bauart>"; the others stay filtered by
    # skip_bauteil, under their building's roof). Default: 1200 higher part
    # (not high-rise), 1300 high-rise part, 1400 different storey height, 2720 tower in the building.
    # Not by default: 1100 lower part (often under the main roof's slope), 2000/2100 cellar and
    # underground garage, 2300 loggia, 2350 winter garden, 2400 arcade, 2500/2510/2520 projecting or
    # receding storeys, 2610/2620 passages, 2710 chimney, 9999 other (no roof of their own)
    lod2_part_bauarten: list[int] = Field(default_factory=lambda: [1200, 1300, 1400, 2720])
    lod2_green_roof_share: float = Field(0.6, gt=0, le=1)
    # CityJSON 2.0 export: one CityJSONSeq file per building tile (buildings/cityjson/<L>/<X>_<Y>.city.jsonl)
    cityjson: bool = True
    # structures that are not buildings, by ALKIS function key (gfkzshh, e.g. "51002_1251") or object
    # class ("51002"): "skip" (reported in rejected.csv, no LoD1 box) or "keep" (extruded like a building).
    # Default: masts, pylons, antennas, wind turbines and cranes (AX_BauwerkOderAnlageFuerIndustrie-
    # UndGewerbe 1220, 1250, 1251, 1260, 1270, 1330-1333) and overhead lines (AX_Leitung 51005)
    non_building_functions: dict[str, Literal["skip", "keep"]] = Field(default_factory=_non_buildings)

    @field_validator("non_building_functions", mode="before")
    @classmethod
    def _function_keys_as_text(cls, v: object) -> object:
        # YAML reads `51002: skip` with an integer key
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v


# the land-use classes a parcel can take (`layers.overlays.land_use_classes` keys); each has its colour in
# pipeline.styles.palettes.LAND_USE (a test keeps the two equal: config sits below styles in the layers)
LAND_USE_CLASSES: tuple[str, ...] = ("traffic", "water")


class OverlayLayer(LayerBase):
    ndvi_threshold: float = 0.3
    tree_min_height_m: float = 2.5
    # analysis grid of the raster shares (NDVI, nDSM) in metres
    raster_res_m: float = Field(0.5, gt=0)
    # GFZ / volume estimates: floors = height / floor_height_m (flagged as estimates)
    floor_height_m: float = Field(3.0, gt=0)
    # parcels draped on the terrain: offset above the DGM in metres
    drape_offset_m: float = 0.3
    # side (m) of the square tiles the parcel overlay and the building change run in as parallel tasks
    # (the delivery tile grid: 1 km in NRW); the output does not depend on it, each task's memory does
    partition_m: float = Field(1000.0, gt=0)
    # land-use class of each parcel (property `land_use`, palette pipeline.styles.palettes.LAND_USE): the
    # cadastre's land-use values (sources.cadastre.landuse_layer / landuse_column, ALKIS tatsächliche
    # Nutzung) per class; a parcel takes the class of the use covering most of it, "" for other uses.
    # Parcels with a class are drawn in its colour, the others by GRZ class. Empty: no land-use classes.
    land_use_classes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "traffic": ["Straßenverkehr", "Weg", "Platz", "Bahnverkehr", "Flugverkehr", "Schiffsverkehr"],
            "water": ["Fließgewässer", "Stehendes Gewässer", "Hafenbecken", "Meer"],
        }
    )
    outlines: bool = True  # parcel edges as lines in the 3D tiles

    @field_validator("land_use_classes")
    @classmethod
    def _land_use_classes(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        known = list(LAND_USE_CLASSES)
        bad = sorted(set(v) - set(known))
        if bad:
            raise ValueError(f"unknown land-use classes {bad} (classes of the palette: {known})")
        return v


class ChangeLayer(LayerBase):
    min_dh_m: float = 1.0
    unregistered_min_height_m: float = 2.5
    unregistered_min_area_m2: float = 20.0
    # surface rasters (DSM per epoch) are compared on this grid (metres)
    raster_res_m: float = Field(1.0, gt=0)
    # a footprint counts as built in an epoch when its roof (p75 of the nDSM) is at least this high
    present_min_height_m: float = 2.0
    # fraction of a footprint's cells that must have data in both epochs, else the class is `unknown`
    min_coverage: float = Field(0.5, ge=0, le=1)
    # footprints are shrunk by this before sampling roofs (walls, neighbours, misregistration)
    shrink_m: float = 0.5
    # cadastral footprints are buffered by this before looking for unregistered structures
    footprint_buffer_m: float = 1.0
    # height noise of one roof estimate (m): with the footprint's spread it scales the confidence
    height_sigma_m: float = Field(0.15, gt=0)
    # no-data areas smaller than this are gaps between points, not missing data
    unknown_min_area_m2: float = 10.0


class TerrainLayer(LayerBase):
    texture_from_orthophoto: bool = True
    # grid cells per terrain tile side at every level (coarser levels double the cell size)
    tile_cells: int = Field(64, ge=4, le=256)
    # terrain mesh resolution at the finest level (None: the DGM's resolution)
    resolution_m: float | None = Field(None, gt=0)
    # texture pixels per tile side
    texture_px: int = Field(256, ge=16, le=2048)
    # embedded texture images: JPEG (default), WebP (glTF EXT_texture_webp; smaller, needs a WebP-capable
    # viewer) or PNG (lossless, large); quality of JPEG/WebP 1-100; JPEG chroma subsampling
    texture_format: Literal["jpeg", "png", "webp"] = "jpeg"
    texture_quality: int = Field(80, ge=1, le=100)
    texture_subsampling: Literal["4:2:0", "4:4:4"] = "4:2:0"
    # mesh encoding of the terrain GLBs: float = float32, uncompressed (QGIS 3.40 reads only these);
    # compact = 16-bit positions and UVs (KHR_mesh_quantization, error at most the tile's box size / 131070
    # per axis) + EXT_meshopt_compression, 3x smaller terrain (CesiumJS reads it, QGIS 3.40 does not)
    mesh_encoding: Literal["compact", "float"] = "float"
    # ground-point fallback without a DGM: grid resolution in metres
    ground_res_m: float = Field(1.0, gt=0)
    # orthophoto XYZ pyramid: finest ground resolution (metres/pixel at the district) and zoom overrides
    imagery_min_res_m: float = Field(0.3, gt=0)
    imagery_min_zoom: int | None = Field(None, ge=0, le=24)
    imagery_max_zoom: int | None = Field(None, ge=0, le=24)


class ZoningLayer(LayerBase):
    """Zoning-plan checks against XPlanGML Bebauungspläne (docs/overlays.md, "Zoning plans")."""

    access: AccessClass = "internal"  # judgments on individual buildings: internal unless decided otherwise
    # plan files (.gml, .xml or .zip of them), globs relative to paths.raw; none = layer skipped
    paths: list[str] = Field(default_factory=list)
    # CRS of plans whose geometries carry no srsName (None: such plans are refused)
    crs: str | None = None
    arc_tolerance_m: float = Field(0.01, gt=0)
    # a measured value exceeds only beyond permitted + tolerance (measurement noise)
    grz_tolerance: float = Field(0.01, ge=0)
    gfz_tolerance: float = Field(0.05, ge=0)
    area_tolerance_m2: float = Field(2.0, ge=0)
    height_tolerance_m: float = Field(0.5, ge=0)
    storeys_tolerance: int = Field(0, ge=0)
    # buildable areas are grown by this before parts outside them count; smaller parts are ignored
    buildable_tolerance_m: float = Field(0.3, ge=0)
    min_outside_area_m2: float = Field(1.0, ge=0)
    # GRZ/GFZ judged only when this share of the parcel lies in building areas stating them
    min_zoned_share: float = Field(0.5, ge=0, le=1)
    min_overlap_m2: float = Field(0.5, ge=0)
    # building columns for the top (FH/GH) and for telling flat roofs (eaves = top) from pitched ones
    top_statistic: str = "p99"
    eaves_statistic: str = "p50"
    flat_roof_spread_m: float = Field(0.5, ge=0)
    floor_height_m: float = Field(3.0, gt=0)
    judge_estimated_storeys: bool = True
    # XP_ArtHoehenbezug names measured against the terrain at the building / against sea level
    ground_references: list[str] = Field(default_factory=lambda: ["relativGelaendeoberkante"])
    absolute_references: list[str] = Field(default_factory=lambda: ["absolutNHN", "absolutDHHN"])
    # rechtscharakter codes that bind (1000 FestsetzungBPlan; "" = not given)
    binding_rechtscharakter: list[str] = Field(default_factory=lambda: ["1000", ""])


class SolarLayer(LayerBase):
    """Solar potential: annual irradiation per DSM cell and per roof (docs/overlays.md, "Solar potential")."""

    enabled: bool = False  # off by default: about 15-50 CPU seconds per km2 at 1 m (bench/results/solar.json)
    # DSM / result raster cell size (m); the Solarkataster NRW uses 0.5 m
    raster_res_m: float = Field(1.0, gt=0)
    # cells computed: the roof cells (inside footprints) or every cell (squares, gardens, facades' feet)
    cells: Literal["roofs", "all"] = "roofs"
    # slope and aspect of roof cells: from the roof surfaces of the official LoD2 model
    # (sources.reference_citygml; per-surface results too) where there are any, else from the surface model
    roof_planes: Literal["official_lod2", "surface"] = "official_lod2"
    # sun path: the UTC year, time step, every n-th day (a 7 is a fast preview)
    year: int = Field(2025, ge=1900, le=2100)
    step_minutes: float = Field(60.0, gt=0, le=240)
    day_step: int = Field(1, ge=1, le=31)
    # clear-sky model (ESRA): monthly Linke turbidity (air mass 2), Jan..Dec; default SoDa values for Essen
    linke_turbidity: list[float] = Field(
        default_factory=lambda: [2.83, 3.73, 3.45, 4.04, 4.10, 4.54, 4.75, 4.20, 3.61, 3.00, 2.90, 2.80]
    )
    # monthly real-sky factors (e.g. measured / clear-sky global irradiation from DWD); null = clear sky
    sky_factors: list[float] | None = None
    altitude_m: float = 100.0
    albedo: float = Field(0.2, ge=0, le=1)
    # horizon: azimuth directions, search radius, cells walked at full resolution before the walk
    # doubles its cell size (max-pooled DSM), own-roof tolerance
    n_directions: int = Field(72, ge=8, le=720)
    max_distance_m: float = Field(500.0, gt=0)
    fine_cells: int = Field(32, ge=4)
    plane_tolerance_m: float = Field(0.25, ge=0)
    # sun positions merged into bins of this size (deg; 0 = every time step)
    bin_deg: float = Field(1.0, ge=0, le=10)

    @field_validator("step_minutes")
    @classmethod
    def _divides_a_day(cls, v: float) -> float:
        if abs(1440.0 / v - round(1440.0 / v)) > 1e-9:
            raise ValueError("must divide a day (1440 minutes) into whole steps, e.g. 10, 15, 30, 60")
        return v

    @field_validator("linke_turbidity", "sky_factors")
    @classmethod
    def _monthly(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 12 or any(x <= 0 for x in v)):
            raise ValueError("needs 12 positive monthly values (January to December)")
        return v


class StreetSpaceLayer(LayerBase):
    """Street space from the mobile scans, per segment of a street axis (docs/overlays.md, "Street space")."""

    access: AccessClass = "internal"  # mobile mapping is licensed for municipal use only
    # street axes: centrelines of the cadastre's street-use areas (`cadastre`), the scan tracks of the
    # panorama list (`tracks`), or the cadastre's where it has street-use areas, else the tracks (`auto`)
    axes: Literal["auto", "cadastre", "tracks"] = "auto"
    # land-use values (sources.cadastre.landuse_column) of street areas: ALKIS Straßenverkehr and Weg
    street_uses: list[str] = Field(default_factory=lambda: ["Straßenverkehr", "Weg"])
    segment_m: float = Field(10.0, gt=0)
    max_half_width_m: float = Field(20.0, gt=0)  # points farther from the axis are not looked at
    bin_m: float = Field(0.05, gt=0)  # lateral profile resolution
    min_bin_points: int = Field(3, ge=1)
    kerb_window_m: float = Field(0.3, gt=0)  # profile stretch on either side of a kerb candidate
    window_coverage: float = Field(0.8, gt=0, le=1)  # share of that stretch's bins that need ground
    kerb_min_m: float = Field(0.06, gt=0)  # kerb: a rise between these heights
    kerb_max_m: float = Field(0.25, gt=0)
    edge_step_m: float = Field(0.06, gt=0)  # a sidewalk ends at the next step of this height
    coverage_gap_m: float = Field(0.3, gt=0)  # ... or where the ground has no points for this width
    fallback_half_width_m: float = Field(3.0, gt=0)  # clearance corridor beside the axis without kerbs
    min_overhead_m: float = Field(2.0, ge=0)  # lower returns over the carriageway: vehicles, people
    clearance_margin_m: float = Field(0.025, ge=0)  # returns this far beyond a kerb line still count
    obstacle_min_m: float = Field(0.3, ge=0)  # sidewalk obstacles: non-ground points in this band
    obstacle_max_m: float = Field(2.5, gt=0)
    slice_m: float = Field(1.0, gt=0)  # free sidewalk width: the smallest over slices of this length
    vehicle_width_m: float = Field(2.55, gt=0)
    vehicle_height_m: float = Field(4.0, gt=0)
    ground_classes: list[int] = Field(default_factory=lambda: [2])
    building_classes: list[int] = Field(default_factory=lambda: [6])
    ignored_classes: list[int] = Field(default_factory=lambda: [7, 18])  # noise


class ModelCheckLayer(LayerBase):
    """Outdated-model check: survey reconstruction vs the official LoD2 model (sources.reference_citygml),
    per building (docs/buildings.md, "Outdated-model check"). Skipped without a reference model."""

    access: AccessClass = "internal"  # judgments on individual buildings: internal unless decided otherwise
    # roof_changed: reconstructed eave or ridge differs from the official lowest / highest roof point by more
    roof_dz_m: float = Field(1.0, gt=0)
    # footprint_differs: cadastral vs official footprint intersection over union below this
    footprint_min_iou: float = Field(0.8, gt=0, le=1)
    # per roof plane: official roof polygons of at least this plan area are compared with the
    # reconstructed roof (median height difference over samples inside the polygon; roof_changed when
    # it exceeds roof_dz_m); smaller ones (dormer cheeks, chimneys) are not
    plane_min_area_m2: float = Field(4.0, ge=0)


class ViewerLayer(LayerBase):
    pass


class LayersConfig(Strict):
    aerial_points: PointsLayer = PointsLayer()
    mobile_points: PointsLayer = PointsLayer(access="internal", colour_from_orthophoto=False)
    panoramas: LayerBase = LayerBase(access="internal")
    buildings: BuildingsLayer = BuildingsLayer()
    overlays: OverlayLayer = OverlayLayer()
    change: ChangeLayer = ChangeLayer()
    terrain: TerrainLayer = TerrainLayer()
    zoning: ZoningLayer = ZoningLayer()
    solar: SolarLayer = SolarLayer()
    model_check: ModelCheckLayer = ModelCheckLayer()
    street_space: StreetSpaceLayer = StreetSpaceLayer()
    viewer: ViewerLayer = ViewerLayer()


class ChangeLimits(Strict):
    """Largest relative change against the previous release that publishes without `--accept-change`
    (0.1 = a drop or a jump of more than 10 % refuses). null = this metric is not compared."""

    buildings: float | None = Field(0.10, ge=0)
    parcels: float | None = Field(0.10, ge=0)
    points: float | None = Field(0.25, ge=0)  # points of the published aerial layer
    terrain_area: float | None = Field(0.10, ge=0)  # m2 of DGM cells with data


class GatesConfig(Strict):
    """Plausibility gates run before a release is published (docs/operations.md, "Plausibility gates")."""

    max_change: ChangeLimits = ChangeLimits()
    # heights (point Z, DGM cells) outside this range [m] are refused (normal or ellipsoidal heights on
    # Earth: Dead Sea shore to above Everest, with room for the geoid)
    height_range_m: tuple[float, float] = (-500.0, 9000.0)
    # [xmin, ymin, xmax, ymax] in crs.horizontal that every input must lie within; null = only the CRS's
    # area of use is checked
    region: tuple[float, float, float, float] | None = None
    # a DGM cell more than this above or below all four neighbours is a spike (refused)
    raster_spike_m: float = Field(200.0, gt=0)
    # the same file content under two names: refuse (error) or use the first name and warn (skip)
    duplicate_inputs: Literal["error", "skip"] = "error"
    # share of cadastre building records the buildings layer may reject before the release is refused
    max_rejected_share: float = Field(0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> GatesConfig:
        lo, hi = self.height_range_m
        if not lo < hi:
            raise ValueError(f"height_range_m: {lo} must be below {hi}")
        if self.region is not None and not (
            self.region[0] < self.region[2] and self.region[1] < self.region[3]
        ):
            raise ValueError("region: expected [xmin, ymin, xmax, ymax] with xmin < xmax and ymin < ymax")
        return self


class ReleaseConfig(Strict):
    keep: int = Field(5, ge=1, description="releases kept on disk")
    validate_gltf: bool = True
    # corrupt input tile: fail the build (default) or skip and report it
    on_bad_tile: Literal["fail", "skip"] = "fail"
    # folders 0755 / files 0644 in every release, so a web server running as another user can serve it;
    # false: keep the modes the writers created (umask)
    world_readable: bool = True
    # plausibility gates against the inputs and the previous release
    gates: GatesConfig = GatesConfig()


class TwinConfig(Strict):
    name: str
    paths: PathsConfig = PathsConfig()
    crs: CrsConfig = CrsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    sources: SourcesConfig = SourcesConfig()
    layers: LayersConfig = LayersConfig()
    release: ReleaseConfig = ReleaseConfig()
    # where the config file lives; relative paths resolve against it (set by the loader)
    base_dir: Path = Path(".")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ "):
            raise ValueError("must be a non-empty name without spaces or slashes")
        return v

    @model_validator(mode="after")
    def _epochs_unique(self) -> TwinConfig:
        names = [e.epoch for e in self.sources.aerial]
        if len(names) != len(set(names)):
            raise ValueError(f"sources.aerial: duplicate epoch names {names}")
        return self

    def resolve(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def raw_dir(self) -> Path:
        return self.resolve(self.paths.raw)

    @property
    def out_dir(self) -> Path:
        return self.resolve(self.paths.out)

    @property
    def cache_dir(self) -> Path:
        return self.resolve(self.paths.cache)
