"""The main process of a `twin points --jobs 2` run stays light: the workers (forked from the preloaded fork
server) run the kernels and decoders; the main process plans from headers and never loads numba, laspy's
decoders or GDAL (rasterio) unless the run colours points from an orthophoto (docs/pointcloud.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests._synthetic_las import synthetic_points, write_las

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from pipeline.cli.main import main
code = main(["points", sys.argv[1], "--out", sys.argv[2], "--jobs", "2", "--quiet"])
print(json.dumps({"code": code, "loaded": [m for m in ("numba", "rasterio", "osgeo") if m in sys.modules]}))
"""


def test_main_process_of_a_pooled_run_loads_no_numba_or_gdal(tmp_path):
    f = write_las(tmp_path / "a.laz", synthetic_points(20_000, x0=372000.0, y0=5707000.0, size=100.0, seed=1),
                  crs="EPSG:25832+7837")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(f), str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["code"] == 0
    assert (tmp_path / "out" / "tileset.json").is_file()
    assert res["loaded"] == [], f"the main process loaded {res['loaded']}"
