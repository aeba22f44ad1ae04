"""The ahead-of-time compiled point kernels (stages/points/_aot.py): same bytes as numba's JIT, workers
without numba, and arguments the compiled code was not built for go to the JIT instead of crashing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.sources.pointcloud.synthetic import synthetic_points, write_las


@pytest.fixture(scope="module")
def built() -> Path:
    from pipeline.stages.points import _aot

    try:
        return _aot.build(quiet=True)  # make setup has done it: then a no-op
    except RuntimeError as e:  # no C compiler on this machine: the JIT path is all there is
        pytest.skip(f"the point kernels cannot be compiled here: {str(e)[:300]}")


def _env(mode: str) -> dict[str, str]:
    return dict(os.environ, RUHRTWIN_KERNELS=mode)


def _py(code: str, mode: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(mode), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(d)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_workers_start_without_numba(built):
    out = _py(
        "import sys, pipeline.orchestrate.points_worker as w; from pipeline.stages.points import _aot;"
        "print('numba' in sys.modules, _aot.FALLBACKS)",
        "aot",
    )
    assert out.split() == ["False", "[]"]  # warm_all ran every kernel through the compiled code
    out = _py("import sys, pipeline.orchestrate.points_worker; print('numba' in sys.modules)", "jit")
    assert out.strip() == "True"


def test_compiled_and_jit_tilesets_are_byte_identical(built, tmp_path):
    laz = write_las(
        tmp_path / "a.laz", synthetic_points(90_000, size=50.0, seed=11), point_format=3, scale=0.001,
        chunk_size=20_000,
    )  # fmt: skip
    hashes, modes = [], []
    for mode, jobs, fmt in (
        ("aot", "2", "1.1"),
        ("jit", "1", "1.1"),
        ("aot", "1", "1.0"),
        ("jit", "2", "1.0"),
    ):
        out = tmp_path / f"{mode}-{jobs}-{fmt}"
        cmd = [sys.executable, "-m", "pipeline.cli.main", "points", str(laz), "--out", str(out), "--jobs", jobs,
               "--crs", "EPSG:25832+7837", "--format", fmt, "--max-points", "5000", "--class-scheme", "adv", "--json"]  # fmt: skip
        r = subprocess.run(cmd, env=_env(mode), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(r.stdout)
        assert summary["points_out"] == 90_000
        modes.append(summary["kernels"])
        hashes.append(_tree_hash(out))
    assert modes == ["compiled", "jit", "compiled", "jit"]
    assert hashes[0] == hashes[1]  # glb: compiled (2 workers) == JIT (in process)
    assert hashes[2] == hashes[3]  # pnts


def test_unexpected_argument_types_fall_back_to_the_jit(built):
    # the compiled functions trust their arguments: a wrong dtype would crash and a strided array passed
    # as contiguous would be read wrongly. The guard must send both to the JIT version.
    code = """
import numpy as np
from pipeline.stages.points import _aot, kernels as K
assert not isinstance(K.nb, type(np)), "expected the compiled kernels"
a = np.arange(3000, dtype=np.uint16)
m = K._rgb_max(a[::3], a[1::3], a[2::3])          # the build's types: compiled, no fallback
assert _aot.FALLBACKS == [], _aot.FALLBACKS
b = (np.arange(3000) % 251).astype(np.uint8)
m8 = K._rgb_max(b, b, b)                          # uint8: not built for it
xyz = np.asfortranarray(np.arange(3000, dtype=np.int32).reshape(1000, 3))
h = np.empty(1000, np.uint64)
K._hash_kernel(xyz, h)                            # Fortran order where C order was built
ref = np.empty(1000, np.uint64)
K._hash_kernel(np.ascontiguousarray(xyz), ref)    # compiled
print(int(m), int(m8), int(b.max()), bool(np.array_equal(h, ref)), sorted(set(_aot.FALLBACKS)))
"""
    m, m8, bmax, same, fallbacks = _py(code, "aot").split(maxsplit=4)
    assert int(m) == 2999 and int(m8) == int(bmax) == 250
    assert same == "True"
    assert fallbacks.strip() == "['_hash_kernel', '_rgb_max']"


def test_forced_compiled_mode_without_a_build_is_a_clear_error(tmp_path):
    env = dict(_env("aot"), RUHRTWIN_KERNEL_DIR=str(tmp_path / "none"))
    r = subprocess.run(
        [sys.executable, "-c", "import pipeline.stages.points.kernels"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "no compiled kernels" in r.stderr and "_aot build" in r.stderr


def test_build_key_changes_with_the_kernel_source(monkeypatch, tmp_path):
    from pipeline.stages.points import _aot

    k1 = _aot.build_key()
    src = tmp_path / "kernels.py"
    src.write_bytes(_aot._KERNELS_SRC.read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(_aot, "_KERNELS_SRC", src)
    assert _aot.build_key() != k1
    assert np.all([c in "0123456789abcdef" for c in _aot.build_key()])


def test_build_into_an_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = dict(os.environ, RUHRTWIN_KERNEL_DIR=str(blocker / "kernels"))
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.points._aot", "build"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "cannot write the compiled kernels" in r.stderr and "RUHRTWIN_KERNEL_DIR" in r.stderr
    assert "Traceback" not in r.stderr
