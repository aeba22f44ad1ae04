"""Load a YAML config into a validated `TwinConfig`; errors name the file, the key and the problem."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.model import TwinConfig
from pipeline.errors import ConfigError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "B": 1,
    "K": 1e3,
    "KB": 1e3,
    "M": 1e6,
    "MB": 1e6,
    "G": 1e9,
    "GB": 1e9,
    "T": 1e12,
    "TB": 1e12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "KI": 2**10,
    "MI": 2**20,
    "GI": 2**30,
}


def parse_size(text: str | int) -> int:
    """'1.5GB' -> 1500000000 bytes; '512MiB' -> 536870912."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m or (m.group(2) or "").upper() not in _UNITS:
        raise ConfigError(f"cannot read size {text!r} (use e.g. 800MB, 1.5GB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


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
    """Hash of everything that changes outputs (not where the file happens to sit, not runtime)."""
    d = cfg.model_dump(mode="json", exclude={"base_dir", "runtime"})
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
