"""The per-point attributes of the point tiles: one table, from which everything else is derived.

- the spill record layout (`record_fields`): x, y, z, then every active attribute in table order;
- the decode picks (`stages.points.decode`): an attribute's column is the decoded field of its `name`
  (LAS fields as `sources.pointcloud.las.decode_unit` names them), or `from_las(raw records, point
  format)` for fields only some runs ask for; a file that lacks the field leaves it 0;
- the glTF vertex layout (`tiles.points_glb.vertex_dtype`): POSITION, the table's first 2-byte
  attribute (intensity), then the others by component size (largest first; ties in table order), each
  4-byte aligned;
- the `EXT_structural_metadata` class `point` and the order of its property attribute;
- the 3D Tiles 1.0 (pnts) batch table (the spill dtype; colour goes to the feature table as `RGB`).

Which attributes a tileset has: `always`, those whose input has them (`rgb`, `gps`, `nir`: any input file
has the field, or an orthophoto gives colour / NIR), those asked for by name (`optin`: `--attribute NAME`
/ `attributes:` of a point layer), and the LAS extra dimensions asked for (`extra_attribute`, appended
after the table's rows). Adding an attribute is one row here plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (numpy is imported where it is used: the CLI reads the table's names at start-up)
    import numpy as np


def _scan_angle_degrees(raw: np.ndarray, point_format: int) -> np.ndarray:
    """LAS scan angle in degrees: formats 6-10 store 0.006 degree steps (int16), 0-5 whole degrees
    (int8 `scan_angle_rank`)."""
    import numpy as np

    if point_format >= 6:
        return (raw["scan_angle"].astype(np.float32) * np.float32(0.006)).astype(np.float32)
    return raw["scan_angle_rank"].astype(np.float32)


@dataclass(frozen=True)
class PointAttribute:
    """One per-point attribute of the tiles."""

    name: str  # record field and metadata property name
    spill: str  # numpy dtype of one component in the spill record (and the pnts batch table)
    when: str  # "always" | "rgb" | "gps" | "nir" | "optin" | "extra"
    vertex: str = ""  # numpy dtype of one vertex component ("": the spill dtype)
    width: int = 1  # components
    gltf: str = ""  # glTF attribute name ("": "_" + NAME)
    description: str | None = None  # metadata property description (None: none)
    metadata: bool = True  # an EXT_structural_metadata property (False: COLOR_0)
    normalized: bool = False  # glTF accessor `normalized`
    from_las: Callable[[np.ndarray, int], np.ndarray] | None = None  # (raw records, point format) -> column
    las_layer: str = ""  # the lazrs layer (LAS formats 6-10) holding it: `SELECTIVE_DECOMPRESS_<layer>`
    no_data: float | None = None  # metadata property `noData` (extra dimensions: EXTRA_NO_DATA)
    las_fields: tuple[str, ...] = ()  # opt-in rows: the standard LAS fields (laspy names) it is read from

    @property
    def attr(self) -> str:
        return self.gltf or f"_{self.name.upper()}"

    @property
    def vertex_dtype(self) -> np.dtype:
        import numpy as np

        return np.dtype(self.vertex or self.spill)


# the table (order matters: spill records, metadata properties and the pnts batch table follow it)
ATTRIBUTES: tuple[PointAttribute, ...] = (
    PointAttribute(
        "rgb", "u1", "rgb", width=3, gltf="COLOR_0", metadata=False, normalized=True, las_layer="RGB"
    ),
    PointAttribute("intensity", "<u2", "always", description="LAS intensity", las_layer="INTENSITY"),
    PointAttribute("classification", "u1", "always", las_layer="CLASSIFICATION"),  # described by the scheme
    PointAttribute("return_number", "u1", "always", las_layer="XY_RETURNS_CHANNEL"),
    PointAttribute("number_of_returns", "u1", "always", las_layer="XY_RETURNS_CHANNEL"),
    PointAttribute("point_source_id", "<u2", "always", las_layer="POINT_SOURCE_ID"),
    PointAttribute(
        "gps_time",
        "<f8",
        "gps",
        vertex="<f4",
        description="GPS time in seconds; stored relative to the tile's base time (offset)",
        las_layer="GPS_TIME",
    ),
    PointAttribute("nir", "<u2", "nir", description="near infrared", las_layer="NIR"),
    PointAttribute(
        "scan_angle",
        "<f4",
        "optin",
        description="scan angle in degrees (LAS; 0 = nadir, negative = left of the flight direction)",
        from_las=_scan_angle_degrees,
        las_layer="SCAN_ANGLE",
        las_fields=("scan_angle", "scan_angle_rank"),
    ),
)

OPTIONAL = tuple(a.name for a in ATTRIBUTES if a.when == "optin")  # asked for by name
# standard LAS field -> the opt-in attribute read from it (asked for by the attribute's name)
_OPTIN_OF_FIELD = {f: a.name for a in ATTRIBUTES if a.when == "optin" for f in a.las_fields}


# the declared no-data value of every extra dimension (lowest finite float32): points whose value is the
# file's Extra Bytes `no_data`, or not finite, or outside float32's range get it (never inf or NaN)
EXTRA_NO_DATA = -3.4028234663852886e38


# standard fields the tiles carry whenever an input has them (positions, the `always` / rgb / gps / nir rows)
_CARRIED = frozenset({"x", "y", "z", "red", "green", "blue"}) | {
    a.name for a in ATTRIBUTES if a.when != "optin"
}


def extra_dimensions_only(names: list[str]) -> list[str]:
    """The Extra Bytes dimensions of an `extra_dimensions` list (order kept).

    A standard LAS field the tiles carry anyway (intensity, classification, ...) is dropped silently; one
    they carry only when asked for (scan_angle) or never is a ValueError that says what to do instead."""
    import laspy

    # the standard fields of LAS 1.4 point records (laspy's names); none of them is an Extra Bytes dimension
    standard = {
        d.lower() for f in laspy.supported_point_formats() for d in laspy.PointFormat(f).dimension_names
    }
    standard.add("classification_flags")
    out: list[str] = []
    for n in names:
        low = n.lower()
        if low not in standard:
            out.append(n)
        elif low in _OPTIN_OF_FIELD:
            raise ValueError(
                f"{n!r} is a standard LAS field, not an extra dimension: ask for it with "
                f"`attributes: [{_OPTIN_OF_FIELD[low]}]`"
            )
        elif low not in _CARRIED:
            carried = sorted(_CARRIED - {"x", "y", "z", "red", "green", "blue"})
            raise ValueError(
                f"{n!r} is a standard LAS field, not an extra dimension, and the point tiles do not carry it "
                f"(they carry {carried}, rgb and the opt-in {list(OPTIONAL)})"
            )
    return out


def extra_attribute(name: str) -> PointAttribute:
    """A LAS extra dimension (float32 everywhere; property `x_<name>`, `noData` EXTRA_NO_DATA)."""
    return PointAttribute(f"x_{name}", "<f4", "extra", description=name, no_data=EXTRA_NO_DATA)


def check_optional(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The opt-in attribute names, validated (ValueError naming the unknown ones and the choices)."""
    bad = [n for n in names if n not in OPTIONAL]
    if bad:
        raise ValueError(f"unknown point attribute(s) {bad}; choose from {list(OPTIONAL)}")
    return tuple(n for n in OPTIONAL if n in names)  # table order, no duplicates


def active(
    has_rgb: bool,
    has_gps: bool,
    has_nir: bool,
    optional: tuple[str, ...] = (),
    extra_dims: tuple[str, ...] = (),
) -> tuple[PointAttribute, ...]:
    """The attributes a tileset carries, in table order, then its extra dimensions."""
    on = {"always": True, "rgb": has_rgb, "gps": has_gps, "nir": has_nir}
    rows = [a for a in ATTRIBUTES if on.get(a.when, False) or (a.when == "optin" and a.name in optional)]
    return tuple(rows) + tuple(extra_attribute(n) for n in extra_dims)


def record_fields(attrs: tuple[PointAttribute, ...]) -> list[tuple[Any, ...]]:
    """The spill record: integer millimetre positions, then the attributes."""
    fields = ((a.name, a.spill) if a.width == 1 else (a.name, a.spill, (a.width,)) for a in attrs)
    return [("x", "<i4"), ("y", "<i4"), ("z", "<i4"), *fields]


def vertex_order(attrs: tuple[PointAttribute, ...]) -> tuple[PointAttribute, ...]:
    """The attributes in vertex order (after POSITION): the first 2-byte one (intensity: POSITION and it
    make the first 12 bytes), then by component size, largest first (ties in table order)."""
    first = [a for a in attrs if a.vertex_dtype.itemsize * a.width == 2][:1]
    rest = sorted((a for a in attrs if a not in first), key=lambda a: -a.vertex_dtype.itemsize)  # stable
    return (*first, *rest)


def metadata_properties(attrs: tuple[PointAttribute, ...], class_description: str) -> dict[str, Any]:
    """The properties of the metadata class `point` (table order)."""
    props: dict[str, Any] = {}
    for a in attrs:
        if not a.metadata:
            continue
        dt = a.vertex_dtype
        kind = {"u": "UINT", "i": "INT", "f": "FLOAT"}[dt.kind]
        p: dict[str, Any] = {"type": "SCALAR", "componentType": f"{kind}{8 * dt.itemsize}"}
        desc = class_description if a.name == "classification" else a.description
        if desc is not None:
            p["description"] = desc
        if a.no_data is not None:
            p["noData"] = a.no_data
        props[a.name] = p
    return props


# ---- classification codes (the values of `classification`) ------------------------------------------
# AdV (German state surveys, NRW 3D-Messdaten) and ASPRS (LAS 1.4); checks and inference of the scheme:
# pipeline.stages.points.classes; colours: pipeline.styles.palettes

ADV_CLASSES: dict[int, str] = {
    1: "unklassifiziert (unclassified)",
    2: "Boden (ground)",
    9: "Wasser (water)",
    17: "Brücke (bridge)",
    18: "AdV 18 (high noise?)",
    20: "Nicht-Boden (non-ground)",
    21: "AdV 21",
    24: "AdV 24",
    26: "AdV 26",
}

ASPRS_CLASSES: dict[int, str] = {
    0: "Created, never classified",
    1: "Unclassified",
    2: "Ground",
    3: "Low Vegetation",
    4: "Medium Vegetation",
    5: "High Vegetation",
    6: "Building",
    7: "Low Point (noise)",
    8: "Model Key-point (reserved)",
    9: "Water",
    10: "Rail",
    11: "Road Surface",
    12: "Overlap (reserved)",
    13: "Wire - Guard (Shield)",
    14: "Wire - Conductor (Phase)",
    15: "Transmission Tower",
    16: "Wire-structure Connector",
    17: "Bridge Deck",
    18: "High Noise",
}

SCHEMES = {"adv": ADV_CLASSES, "asprs": ASPRS_CLASSES}
