"""A rebuilt layer's files: the files its results name are matched against the files it wrote by a set,
not by scanning the list once per name (a layer's results name all its files: ~650,000 XYZ tiles for a
Ruhr-sized region, n^2/2 string comparisons in the build process before)."""

from __future__ import annotations

from types import SimpleNamespace

import pipeline.orchestrate.reuse as reuse
from pipeline.model import LayerResult


class _Name(str):
    """A file name that counts how often it is compared."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Name.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_named_files_matched_by_set(tmp_path, monkeypatch):
    monkeypatch.setattr(reuse, "layer_config_key", lambda ctx, name: "k")
    events = []
    ctx = SimpleNamespace(
        release_dir=tmp_path,
        previous_release=None,
        reuse=None,
        log=SimpleNamespace(event=lambda *a, **k: events.append(a)),
    )
    n = 400
    old = tmp_path / "imagery" / "old.png"  # written before the layer ran (e.g. a resumed build)
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    names = [f"imagery/xyz/18/{i // 20}/{i % 20}.png" for i in range(n)]

    def build() -> LayerResult:
        for rel in names:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(rel.encode())
        return LayerResult(
            "imagery", "imagery", "public", files=[_Name(r) for r in [*names, "imagery/old.png"]]
        )

    _Name.compared = 0
    (res,) = reuse.reuse_or_build(ctx, "imagery", [], build)
    assert len(res.files) == n + 1
    entry = ctx.reuse.layers["imagery"]
    assert entry["files"] == sorted([*names, "imagery/old.png"])  # the old file is the layer's too
    # a set lookup compares each name about once; the list scan compared ~n^2/2 = 80,000 times
    assert _Name.compared <= 3 * (n + 1), _Name.compared
