"""Default 3D Tiles styles shipped beside the tilesets (3D Tiles styling language, JSON)."""

from __future__ import annotations

from typing import Any

from pipeline.styles.palettes import BUILDING_FUNCTION, hex_colour

# Colour by building function group (property `funktion_gruppe`): the palette of pipeline.styles.palettes.
BUILDING_COLOURS: dict[str, str] = {str(e.value): hex_colour(e.rgba).upper() for e in BUILDING_FUNCTION}


def buildings_style() -> dict[str, Any]:
    """Colour by function; buildings whose height is a fallback are drawn lighter (translucent)."""
    conditions = [
        [f"${{funktion_gruppe}} === '{name}'", f"color('{hex_}')"] for name, hex_ in BUILDING_COLOURS.items()
    ]
    conditions.append(["true", "color('#FFFFFF')"])
    return {
        "color": {
            "conditions": [
                [
                    "${quality} === 'fallback_default' || ${quality} === 'fallback_floors'",
                    "color('#FFFFFF', 0.6)",
                ],
                *conditions,
            ]
        },
        "meta": {"description": "'RuhrTwin buildings: colour by ALKIS function group'"},
    }
