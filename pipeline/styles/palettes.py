"""One palette and class table per concept, used by every consumer.

Each concept (change class, building function group, roof type, model source, LoD2 surface, GRZ class,
point classification per scheme) is
defined here once: its values, labels and sRGB colours. Everything that shows it derives from these tables:

- the colours baked into the change tiles (`pipeline.stages.change.CLASS_COLOURS`) and the parcels tiles
  (`pipeline.stages.overlays.GRZ_CLASSES`), and the report's maps;
- the QGIS styles in this folder (`*.qml`, rendered by `pipeline.styles.qml`; a test keeps the files
  equal to the rendering) and the GeoPackages' embedded `layer_styles`;
- the 3D Tiles style JSON beside a tileset (`tiles_style`);
- the viewer: `viewer/palettes.json` (`viewer_palettes`) is written with the viewer, and the page's legends,
  class names, noise switches and class filters come from it.

Colours are sRGB RGBA 0-255 tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class ClassEntry:
    """One class of a categorical palette."""

    value: str | int
    label: str
    rgba: RGBA
    hidden: bool = False  # hidden by default in the viewer (noise)


def hex_colour(rgba: RGBA) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])


# ---- change detection (pipeline.stages.change) ------------------------------------------------------
CHANGE_PROPERTY = "change_class"
CHANGE: tuple[ClassEntry, ...] = (
    ClassEntry("new", "new", (46, 160, 67, 255)),
    ClassEntry("demolished", "demolished", (214, 39, 40, 255)),
    ClassEntry("raised", "raised", (31, 119, 180, 255)),
    ClassEntry("lowered", "lowered", (255, 127, 14, 255)),
    ClassEntry("unchanged", "unchanged", (190, 190, 190, 255)),
    ClassEntry("absent", "absent", (240, 240, 240, 255)),
    ClassEntry("unknown", "unknown", (148, 103, 189, 255)),
    ClassEntry("unregistered", "unregistered structure", (227, 0, 190, 255)),
)
CHANGE_COLOURS: dict[str, RGBA] = {str(e.value): e.rgba for e in CHANGE}

# ---- outdated-model check (pipeline.stages.buildings.model_check) ------------------------------------
MODEL_CHECK_PROPERTY = "model_check"
MODEL_CHECK: tuple[ClassEntry, ...] = (
    ClassEntry("consistent", "consistent with the official model", (190, 190, 190, 255)),
    ClassEntry("roof_changed", "roof changed since the model", (31, 119, 180, 255)),
    ClassEntry("new_since_model", "new since the model", (46, 160, 67, 255)),
    ClassEntry("demolished_since_model", "demolished since the model", (214, 39, 40, 255)),
    ClassEntry("footprint_differs", "footprint differs", (255, 127, 14, 255)),
    ClassEntry("unknown", "unknown (no model, no survey roof)", (148, 103, 189, 255)),
)
MODEL_CHECK_COLOURS: dict[str, RGBA] = {str(e.value): e.rgba for e in MODEL_CHECK}

# ---- building function groups (property `funktion_gruppe` of the buildings) -------------------------
BUILDING_FUNCTION_PROPERTY = "funktion_gruppe"
BUILDING_FUNCTION: tuple[ClassEntry, ...] = (
    ClassEntry("Wohngebäude", "Wohngebäude", (232, 194, 122, 255)),
    ClassEntry("Gemischt", "Gemischt", (229, 152, 102, 255)),
    ClassEntry("Handel/Dienstleistung", "Handel/Dienstleistung", (192, 80, 77, 255)),
    ClassEntry("Industrie/Gewerbe", "Industrie/Gewerbe", (142, 124, 195, 255)),
    ClassEntry("Garage", "Garage", (166, 166, 166, 255)),
    ClassEntry("Öffentlich", "Öffentlich", (79, 129, 189, 255)),
    ClassEntry("Landwirtschaft", "Landwirtschaft", (155, 187, 89, 255)),
    ClassEntry("Sonstige", "Sonstige", (217, 217, 217, 255)),
)
BUILDING_OTHER: RGBA = (255, 255, 255, 255)

# ---- GRZ (Grundflächenzahl) classes of the parcels overlay -------------------------------------------
GRZ_PROPERTY = "grz"
# (upper bound, colour, label); the last class is open-ended
GRZ: tuple[tuple[float, RGBA, str], ...] = (
    (0.2, (26, 150, 65, 255), "GRZ < 0.2"),
    (0.4, (166, 217, 106, 255), "0.2 - 0.4"),
    (0.6, (253, 174, 97, 255), "0.4 - 0.6"),
    (0.8, (215, 25, 28, 255), "0.6 - 0.8"),
    (float("inf"), (120, 0, 20, 255), "GRZ >= 0.8"),
)
GRZ_NO_VALUE: RGBA = (170, 170, 170, 255)

# ---- land-use classes of the parcels overlay (ALKIS tatsächliche Nutzung, layers.overlays) -----------
# A parcel with one of these classes (property `land_use`) is drawn in its colour; every other parcel
# (building land, gardens, green) by its GRZ class.
LAND_USE_PROPERTY = "land_use"
LAND_USE: tuple[ClassEntry, ...] = (
    ClassEntry("traffic", "Verkehrsfläche / traffic area (street, path, square)", (106, 81, 163, 255)),
    ClassEntry("water", "Gewässer / water", (33, 113, 181, 255)),
)
LAND_USE_COLOURS: dict[str, RGBA] = {str(e.value): e.rgba for e in LAND_USE}
PARCEL_OUTLINE: RGBA = (245, 245, 245, 255)  # parcel edges (3D tiles, parcels.qml): light over the orthophoto


# ---- street space segments (pipeline.stages.street_space.status) -----------------------------------
STREET_SPACE_PROPERTY = "status"
STREET_SPACE: tuple[ClassEntry, ...] = (
    ClassEntry("passable", "passable for the vehicle", (26, 150, 65, 255)),
    ClassEntry("too_low", "too low (clearance)", (253, 174, 97, 255)),
    ClassEntry("too_narrow", "too narrow (carriageway)", (215, 25, 28, 255)),
    ClassEntry("too_narrow_and_low", "too narrow and too low", (120, 0, 20, 255)),
    ClassEntry("not_judged", "not judged (no kerbs found)", (170, 170, 170, 255)),
)


# ---- roof types of the LoD2 buildings (AdV roofType / Dachform catalogue) ---------------------------
@dataclass(frozen=True)
class RoofType:
    """One roof shape: the `roof_type` name the buildings carry, its AdV code and names."""

    value: str  # property `roof_type` of the buildings (pipeline.stages.buildings.solids.OFFICIAL_ROOF_TYPES)
    code: str  # AdV roofType code (property `roof_type_code`)
    de: str  # AdV name (Dachform)
    en: str
    rgba: RGBA

    @property
    def label(self) -> str:
        return f"{self.de} / {self.en} ({self.code})"


ROOF_TYPE_PROPERTY = "roof_type"
ROOF_TYPE_CODE_PROPERTY = "roof_type_code"
# The eight shapes the reconstruction fits (flat, shed, gable, hip, half-hip, mansard, pyramid, multi)
# have hues at least 28 degrees apart (flat is grey); the shapes only official models carry follow.
ROOF_TYPES: tuple[RoofType, ...] = (
    RoofType("flat", "1000", "Flachdach", "flat", (150, 150, 150, 255)),
    RoofType("shed", "2100", "Pultdach", "shed", (44, 160, 44, 255)),
    RoofType("gable", "3100", "Satteldach", "gable", (214, 39, 40, 255)),
    RoofType("hip", "3200", "Walmdach", "hip", (31, 119, 180, 255)),
    RoofType("half_hip", "3300", "Krüppelwalmdach", "half-hip", (188, 189, 34, 255)),
    RoofType("mansard", "3400", "Mansardendach", "mansard", (197, 60, 160, 255)),
    RoofType("pyramid", "3500", "Zeltdach", "pyramid", (255, 127, 14, 255)),
    RoofType("cone", "3600", "Kegeldach", "cone", (23, 190, 207, 255)),
    RoofType("dome", "3700", "Kuppeldach", "dome", (140, 86, 75, 255)),
    RoofType("sawtooth", "3800", "Sheddach", "sawtooth", (57, 59, 121, 255)),
    RoofType("arched", "3900", "Bogendach", "arched", (152, 223, 138, 255)),
    RoofType("tower", "4000", "Turmdach", "tower", (197, 176, 213, 255)),
    RoofType("multi", "5000", "Mischform", "generic / multi-plane", (148, 103, 189, 255)),
    RoofType("other", "9999", "Sonstiges", "other", (196, 156, 148, 255)),
)
ROOF_TYPE: tuple[ClassEntry, ...] = tuple(ClassEntry(r.value, r.label, r.rgba) for r in ROOF_TYPES)
ROOF_TYPE_COLOURS: dict[str, RGBA] = {r.value: r.rgba for r in ROOF_TYPES}
# buildings without an LoD2 roof (LoD1 box: `lod_source` lod1_fallback or no roof type)
ROOF_NONE_LABEL = "kein LoD2-Dach / no LoD2 roof (LoD1 box)"
ROOF_NONE: RGBA = (240, 240, 240, 255)

# ---- where each building's model comes from (property `lod_source`) ----------------------------------
LOD_SOURCE_PROPERTY = "lod_source"
LOD_SOURCE: tuple[ClassEntry, ...] = (
    ClassEntry("reconstructed", "reconstructed from the survey (LoD2)", (0, 158, 115, 255)),
    ClassEntry("official", "official LoD2 model (Geobasis)", (0, 114, 178, 255)),
    ClassEntry("lod1_fallback", "LoD1 fallback (box)", (230, 159, 0, 255)),
)

# ---- semantic surfaces of the LoD2 solids (property attribute `surface`, vertex attribute `_SURFACE`) --
SURFACE_PROPERTY = "surface"
SURFACE: tuple[ClassEntry, ...] = (  # values = the codes of pipeline.tiles.buildings_glb.SURFACE_NAMES
    ClassEntry(0, "roof", (196, 58, 49, 255)),
    ClassEntry(1, "wall", (236, 226, 198, 255)),
    ClassEntry(2, "ground", (90, 90, 90, 255)),
)

# ---- point classification per scheme ----------------------------------------------------------------
# Names come from the scheme tables of the point stage (AdV: German names); colours and noise are here.
POINT_CLASS_COLOURS: dict[int, RGBA] = {
    0: (158, 158, 158, 255),
    1: (189, 189, 189, 255),
    2: (160, 82, 45, 255),
    3: (184, 233, 134, 255),
    4: (95, 191, 63, 255),
    5: (31, 122, 31, 255),
    6: (224, 69, 43, 255),
    7: (255, 0, 255, 255),
    8: (136, 136, 136, 255),
    9: (43, 123, 214, 255),
    10: (109, 76, 65, 255),
    11: (112, 112, 112, 255),
    12: (204, 204, 204, 255),
    13: (255, 213, 79, 255),
    14: (255, 179, 0, 255),
    15: (255, 111, 0, 255),
    16: (255, 241, 118, 255),
    17: (141, 110, 99, 255),
    18: (255, 64, 129, 255),
    19: (186, 104, 200, 255),
    20: (232, 197, 71, 255),
    21: (238, 238, 238, 255),
    22: (96, 125, 139, 255),
    24: (0, 188, 212, 255),
    26: (149, 117, 205, 255),
}
UNKNOWN_CLASS_COLOURS: tuple[RGBA, ...] = (
    (224, 123, 57, 255),
    (57, 116, 224, 255),
    (76, 175, 80, 255),
    (156, 39, 176, 255),
)
# low/high noise: hidden in the viewer by default (AdV uses the ASPRS codes for noise where it has any)
NOISE_CLASSES: dict[str, frozenset[int]] = {"asprs": frozenset({7, 18}), "adv": frozenset({7, 18})}


def point_class_name(scheme: str, code: int) -> str:
    from pipeline.point_attributes import SCHEMES

    table = SCHEMES.get(scheme.lower(), {})
    return table.get(int(code), f"{scheme.upper()} class {int(code)}")


def point_class_colour(code: int) -> RGBA:
    c = int(code)
    return POINT_CLASS_COLOURS.get(c) or UNKNOWN_CLASS_COLOURS[c % len(UNKNOWN_CLASS_COLOURS)]


def point_classes(scheme: str) -> tuple[ClassEntry, ...]:
    """Every class of a scheme (code order), with its name, colour and noise flag."""
    from pipeline.point_attributes import SCHEMES

    noise = NOISE_CLASSES.get(scheme.lower(), frozenset())
    codes = sorted(set(SCHEMES.get(scheme.lower(), {})) | set(noise))
    return tuple(
        ClassEntry(c, point_class_name(scheme, c), point_class_colour(c), hidden=c in noise) for c in codes
    )


# ---- consumers -------------------------------------------------------------------------------------
def _js_literal(v: str | int) -> str:
    return str(v) if isinstance(v, int) else "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def tiles_style(
    prop: str, entries: tuple[ClassEntry, ...], *, other: RGBA | None = None, title: str = ""
) -> dict[str, Any]:
    """A 3D Tiles style (styling language JSON) colouring features by `prop` with a palette."""
    conditions = [
        [f"${{{prop}}} === {_js_literal(e.value)}", f"color('{hex_colour(e.rgba)}')"] for e in entries
    ]
    if other is not None:
        conditions.append(["true", f"color('{hex_colour(other)}')"])
    style: dict[str, Any] = {"color": {"conditions": conditions}}
    if title:
        style["meta"] = {"title": f"'{title}'"}
    return style


def parcels_style() -> dict[str, Any]:
    """The parcels overlay: land-use classes (LAND_USE) in their colours, the other parcels by GRZ class."""
    conditions = [
        [f"${{{LAND_USE_PROPERTY}}} === {_js_literal(e.value)}", f"color('{hex_colour(e.rgba)}', 0.6)"]
        for e in LAND_USE
    ]
    conditions += [
        [
            "true" if up == float("inf") else f"${{{GRZ_PROPERTY}}} < {up:g}",
            f"color('{hex_colour(c)}', 0.6)",
        ]
        for up, c, _lab in GRZ
    ]
    # no GRZ: the tiles' metadata no-data value (pipeline.orchestrate.overlays.NODATA_METADATA)
    nodata = [f"${{{GRZ_PROPERTY}}} === -9999.0", f"color('{hex_colour(GRZ_NO_VALUE)}', 0.6)"]
    conditions.insert(len(LAND_USE), nodata)
    return {"color": {"conditions": conditions}, "meta": {"title": "'parcels: land use, else GRZ class'"}}


def change_style() -> dict[str, Any]:
    return tiles_style(CHANGE_PROPERTY, CHANGE, other=(255, 255, 255, 255), title="change class")


def roof_type_style() -> dict[str, Any]:
    """Buildings by roof type; LoD1 boxes (lod1_fallback, or no roof type) in the no-roof colour."""
    style = tiles_style(ROOF_TYPE_PROPERTY, ROOF_TYPE, other=ROOF_NONE, title="roof type")
    none = [f"${{{LOD_SOURCE_PROPERTY}}} === 'lod1_fallback'", f"color('{hex_colour(ROOF_NONE)}')"]
    style["color"]["conditions"].insert(0, none)
    return style


def lod_source_style() -> dict[str, Any]:
    return tiles_style(LOD_SOURCE_PROPERTY, LOD_SOURCE, other=BUILDING_OTHER, title="model source")


def viewer_palettes() -> dict[str, Any]:
    """What the viewer needs to know about every palette (written as viewer/palettes.json)."""

    def cats(entries: tuple[ClassEntry, ...]) -> list[dict[str, Any]]:
        return [{"value": e.value, "label": e.label, "color": hex_colour(e.rgba)} for e in entries]

    return {
        "change": {"property": CHANGE_PROPERTY, "classes": cats(CHANGE)},
        "building_function": {
            "property": BUILDING_FUNCTION_PROPERTY,
            "classes": cats(BUILDING_FUNCTION),
            "other": hex_colour(BUILDING_OTHER),
        },
        "roof_type": {
            "property": ROOF_TYPE_PROPERTY,
            "code_property": ROOF_TYPE_CODE_PROPERTY,
            "classes": [
                {
                    "value": r.value,
                    "code": r.code,
                    "de": r.de,
                    "en": r.en,
                    "label": r.label,
                    "color": hex_colour(r.rgba),
                }
                for r in ROOF_TYPES
            ],
            "none": {"label": ROOF_NONE_LABEL, "color": hex_colour(ROOF_NONE)},
        },
        "lod_source": {
            "property": LOD_SOURCE_PROPERTY,
            "classes": cats(LOD_SOURCE),
            "other": hex_colour(BUILDING_OTHER),
        },
        "surface": {"property": SURFACE_PROPERTY, "classes": cats(SURFACE)},
        "grz": {
            "property": GRZ_PROPERTY,
            "classes": [
                {"upper": None if up == float("inf") else up, "label": lab, "color": hex_colour(c)}
                for up, c, lab in GRZ
            ],
            "no_value": hex_colour(GRZ_NO_VALUE),
            "land_use_property": LAND_USE_PROPERTY,
            "land_use": cats(LAND_USE),
        },
        "classification": {
            scheme: [
                {"code": e.value, "name": e.label, "color": hex_colour(e.rgba), "noise": e.hidden}
                for e in point_classes(scheme)
            ]
            for scheme in ("asprs", "adv")
        },
        "classification_other": [hex_colour(c) for c in UNKNOWN_CLASS_COLOURS],
        "noise": {k: sorted(v) for k, v in NOISE_CLASSES.items()},
    }
