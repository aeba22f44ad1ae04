"""Shared fixtures: paths to ../shared (skipped when absent), small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent (real third-party samples are not part of the repo)")
    return REALDATA


@pytest.fixture
def shared_spec() -> Path:
    p = SHARED / "spec" / "3d-tiles-1.1-schema"
    if not p.is_dir():
        pytest.skip("../shared/spec is absent")
    return p
