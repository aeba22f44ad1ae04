"""Rows grouped by a key with one stable sort (the build process's region-sized tables: feature tiles,
panorama tracks, street-space and change tiles), never one comparison of the whole array per key."""

from __future__ import annotations

from typing import Any

import numpy as np


def group_positions(keys: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """(key, the positions of `keys` holding it, ascending) for every distinct key, keys ascending."""
    if len(keys) == 0:
        return []
    order = np.argsort(keys, kind="stable")
    uniq, start = np.unique(keys[order], return_index=True)
    return list(zip(uniq, np.split(order, start[1:]), strict=True))
