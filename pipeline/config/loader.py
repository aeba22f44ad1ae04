"""Load a YAML config into a validated `TwinConfig`; errors name the file, the key and the problem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.model import TwinConfig
from pipeline.config.sizes import parse_size
from pipeline.errors import ConfigError

__all__ = ["config_hash", "load_config", "parse_size"]


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"  {key}: {msg}")
    return f"invalid configuration in {path}:\n" + "\n".join(lines)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TwinConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", path=path) from e
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping of keys", path=path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    data["base_dir"] = str(path.resolve().parent)
    try:
        cfg = TwinConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from e
    try:
        parse_size(cfg.runtime.memory)
    except ConfigError as e:
        raise ConfigError(f"invalid configuration in {path}:\n  runtime.memory: {e.message}") from e
    return cfg


def config_hash(cfg: TwinConfig) -> str:
    """Hash of everything that changes outputs: not where the config, the deliveries, the releases or the
    cache sit (`paths`: inputs enter the build id by name and content), not runtime, not the plausibility
    thresholds (they decide whether a release is published, not its bytes)."""
    d = cfg.model_dump(
        mode="json", exclude={"base_dir": True, "runtime": True, "paths": True, "release": {"gates"}}
    )
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
