"""Default 3D Tiles styles shipped beside the tilesets (3D Tiles styling language, JSON)."""

from __future__ import annotations

from typing import Any

# Colour by building function group (property `funktion_gruppe` of the buildings' property table).
BUILDING_COLOURS: dict[str, str] = {
    "Wohngebäude": "#E8C27A",
    "Gemischt": "#E59866",
    "Handel/Dienstleistung": "#C0504D",
    "Industrie/Gewerbe": "#8E7CC3",
    "Garage": "#A6A6A6",
    "Öffentlich": "#4F81BD",
    "Landwirtschaft": "#9BBB59",
    "Sonstige": "#D9D9D9",
}


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
