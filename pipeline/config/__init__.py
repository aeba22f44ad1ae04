"""Typed, validated configuration (YAML -> pydantic).

`load_config(path)` is the only entry point; errors name the file, the key and the problem.
Relative paths in a config are resolved against the directory of the config file.
"""

from pipeline.config.loader import config_hash, load_config, parse_size
from pipeline.config.model import (
    AccessClass,
    AerialEpoch,
    BuildingsLayer,
    CadastreSource,
    ChangeLayer,
    CrsConfig,
    MobileSource,
    OverlayLayer,
    PathsConfig,
    PointsLayer,
    RasterSource,
    ReleaseConfig,
    RuntimeConfig,
    TerrainLayer,
    TwinConfig,
    ViewerLayer,
)

__all__ = [
    "AccessClass",
    "AerialEpoch",
    "BuildingsLayer",
    "CadastreSource",
    "ChangeLayer",
    "CrsConfig",
    "MobileSource",
    "OverlayLayer",
    "PathsConfig",
    "PointsLayer",
    "RasterSource",
    "ReleaseConfig",
    "RuntimeConfig",
    "TerrainLayer",
    "TwinConfig",
    "ViewerLayer",
    "config_hash",
    "load_config",
    "parse_size",
]
