"""Typed, validated configuration (YAML -> pydantic).

`load_config(path)` is the only entry point; errors name the file, the key and the problem.
Relative paths in a config are resolved against the directory of the config file.
"""

import importlib
from typing import Any

# Imported on first use (PEP 562): `from pipeline.config.model import CrsConfig` then costs no YAML parser
# and no loader (the standalone `twin points` start-up path).
_WHERE = {"config_hash": "loader", "load_config": "loader", "parse_size": "sizes"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'pipeline.config' has no attribute {name!r}")
    mod = importlib.import_module(f"pipeline.config.{_WHERE.get(name, 'model')}")
    return getattr(mod, name)


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
