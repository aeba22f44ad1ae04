"""Every import in pipeline/ follows the one-way layer order of docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"


def layer_order() -> list[list[str]]:
    """The ```layers block of docs/architecture.md, top layer first."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```layers\n", 1)[1].split("```", 1)[0]
    return [line.split() for line in block.splitlines() if line.strip()]


def unit_of(module: str) -> str:
    """`pipeline.stages.points.spill` -> `stages`; `pipeline.crs` -> `crs`; `pipeline` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every `pipeline` import of one file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "pipeline":  # `from pipeline import arena` (a module), `__version__` (not)
                out += [
                    (node.lineno, f"pipeline.{a.name}" if _is_module(package, a.name) else "pipeline")
                    for a in node.names
                ]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import (the test reads absolute ones)")
    return [(n, m) for n, m in out if m == "pipeline" or m.startswith("pipeline.")]


def _is_module(package: Path, name: str) -> bool:
    return (package / name / "__init__.py").is_file() or (package / f"{name}.py").is_file()


def violations(package: Path, order: list[list[str]]) -> list[str]:
    rank = {name: i for i, line in enumerate(order) for name in line}
    base = len(order) - 1
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        here = unit_of(".".join(rel.parts))
        if here not in rank:
            found.append(f"{rel}: `{here}` is in no layer of docs/architecture.md")
            continue
        for line, module in imports(path, package):
            there = unit_of(module)
            if there == here or (rank.get(there) == base and rank[here] == base):
                continue
            if there not in rank:
                found.append(f"{rel}.py:{line}: imports `{module}`, which is in no layer")
            elif rank[there] <= rank[here]:
                found.append(f"{rel}.py:{line}: `{here}` imports `{module}` (layer {there!r} is not below)")
    return found


def test_every_package_has_a_layer():
    order = layer_order()
    names = [n for line in order for n in line]
    assert len(names) == len(set(names))
    present = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    present |= {p.stem for p in PACKAGE.glob("*.py")}
    assert present <= set(names), sorted(present - set(names))


def test_no_import_runs_against_the_layer_order():
    assert violations(PACKAGE, layer_order()) == []


def test_the_check_finds_an_upward_import(tmp_path):
    """The check is not vacuous: a stage importing the orchestration, a source importing a stage and a
    format importing a reader (same layer) are each reported, an import downwards is not."""
    pkg = tmp_path / "pipeline"
    for sub in ("stages", "orchestrate", "sources", "tiles"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "a.py").write_text("def f():\n    from pipeline.orchestrate.b import g\n")
    (pkg / "sources" / "c.py").write_text("import pipeline.stages.a\n")
    (pkg / "tiles" / "d.py").write_text("from pipeline.sources import c\n")
    (pkg / "orchestrate" / "b.py").write_text(
        "from pipeline.stages.a import f\nfrom pipeline import errors\n"
    )
    found = violations(pkg, [["orchestrate"], ["stages"], ["sources", "tiles"], ["errors", "__init__"]])
    assert len(found) == 3, found
    assert any("stages/a.py:2" in v for v in found)
    assert any("sources/c.py:1" in v for v in found)
    assert any("tiles/d.py:1" in v for v in found)
