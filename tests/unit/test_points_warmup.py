"""The kernel warm-up (`kernels.warm_all`): the fork server of the local pool runs it before it forks the
workers, so it must load every kernel signature a run uses. A signature it misses is loaded (or, with a
stale cache, compiled) by every worker on its own: tens of milliseconds of CPU and private memory each."""

from __future__ import annotations

from pathlib import Path

import pytest
from numba.core.dispatcher import Dispatcher

from pipeline.orchestrate.points_plan import PointTilingOptions
from pipeline.orchestrate.points_run import tile_pointcloud
from pipeline.stages.points import kernels
from tests._synthetic_las import synthetic_points, write_las


def _signatures() -> dict[str, int]:
    """The number of loaded signatures of every kernel (numba dispatcher) of the kernels package."""
    mods = (kernels.enu, kernels.keys, kernels.lod, kernels.records)
    return {
        f"{m.__name__}.{name}": len(d.overloads)
        for m in mods
        for name, d in vars(m).items()
        if isinstance(d, Dispatcher)
    }


# (file name, LAS point format, LAS version, options): colour and returns as bit fields of formats 6-10,
# pre-1.4 classes as a bit field, no colour, no GPS time, pnts, COPC, an optional attribute; an E57 scan
E57 = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "e57" / "bunnyDouble.e57"
CASES = [
    ("f7.laz", 7, "1.4", {}),
    ("f3.las", 3, "1.2", {"format": "1.0"}),
    ("f1.laz", 1, "1.2", {"attributes": ("scan_angle",)}),
    ("f2.laz", 2, "1.2", {}),
    ("f6.laz", 6, "1.4", {"copc": "yes"}),
    ("e57", 0, "", {"crs": "EPSG:32632", "assume_ellipsoidal": True}),
]


@pytest.mark.parametrize(("name", "point_format", "version", "extra"), CASES)
def test_a_run_uses_no_kernel_signature_the_warm_up_did_not_load(
    tmp_path, name, point_format, version, extra
):
    kernels.warm_all()
    before = _signatures()
    assert sum(before.values()) >= 20  # (the check sees the kernels)
    if name == "e57":
        if not E57.is_file():
            pytest.skip(f"no {E57}")
        f = E57
    else:
        f = write_las(tmp_path / name, synthetic_points(30_000, size=60.0), point_format=point_format,
                      version=version)  # fmt: skip
    if extra.get("copc"):
        from pipeline.stages.points.copc_records import CopcOptions

        extra = {"copc": CopcOptions(vpc_name="out")}
    s = tile_pointcloud([Path(f)], tmp_path / "out", PointTilingOptions(max_points_per_tile=4000, **extra))
    assert s.points_out == (30_000 if name != "e57" else s.points_in) > 0
    after = _signatures()
    assert {k: (before[k], v) for k, v in after.items() if v != before[k]} == {}
