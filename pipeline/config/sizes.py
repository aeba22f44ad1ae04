"""Memory and size settings ('1.5GB', '512MiB') as bytes: no YAML or pydantic needed to read them."""

from __future__ import annotations

import re

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
