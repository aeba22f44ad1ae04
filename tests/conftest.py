"""Shared fixtures: paths to ../shared (skipped when absent), small helpers."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# the test run keeps PROJ's operation cache (pipeline.crs) to itself, not in the user's ~/.cache
# (removed again when the run ends: one folder per test session used to pile up in /tmp)
if "RUHRTWIN_PROJ_CACHE" not in os.environ:
    _proj_cache = tempfile.mkdtemp(prefix="ruhrtwin-test-proj-")
    os.environ["RUHRTWIN_PROJ_CACHE"] = _proj_cache
    atexit.register(shutil.rmtree, _proj_cache, ignore_errors=True)

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


TINY_PATHS = {"paths.raw": "../data/raw", "paths.out": "../data/out", "paths.cache": "../data/cache"}


def load_tiny_config(project: Path, overrides: dict | None = None):
    """configs/tiny.yaml of a tiny project, with its paths pointing inside the project folder."""
    from pipeline.config import load_config

    return load_config(project / "configs" / "tiny.yaml", {**TINY_PATHS, **(overrides or {})})


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A tiny demo district (200 m x 200 m, 4 tiles) with its config, generated once per test session."""
    from pipeline.sources.demo import generate_demo

    root = tmp_path_factory.mktemp("tiny")
    # mobile scans at 2e6 returns/km² (the demo default is a mobile mapping system's ~40e6): the layers
    # these tests check do not need street-level density; tests/unit/test_street_space.py uses the default
    generate_demo(
        root / "data" / "raw", size_m=200, tile_m=100, density=8, mobile_density=2e6, progress=False
    )
    (root / "configs").mkdir()
    text = (REPO / "configs" / "tiny.yaml").read_text()
    (root / "configs" / "tiny.yaml").write_text(text)
    return root


@pytest.fixture(scope="session")
def tiny_release(tiny_project) -> Path:
    """The published release of the tiny district (built once per session with 2 local workers)."""
    from pipeline.buildlog import BuildLog
    from pipeline.orchestrate.build import run_build

    res = run_build(load_tiny_config(tiny_project), workers=2, log=BuildLog(quiet=True))
    return res.release_dir
