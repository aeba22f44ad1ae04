"""Run notebooks/build_report.ipynb without Jupyter or nbconvert (nbclient + nbformat, from the dev extras).

    .venv/bin/python notebooks/run_build_report.py [--release data/out/current] [--out DIR]

Executes the notebook in DIR (default: a new temporary folder), with the parameter cell set to RELEASE and
DIR/report_plots; writes the executed notebook (with its tables and plots) to DIR/build_report.ipynb and
prints DIR. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent / "build_report.ipynb"


def run(release: Path, out: Path, timeout: int = 600) -> Path:
    """Execute the notebook for `release`; outputs in `out` (created). Returns the executed notebook's path."""
    import nbclient
    import nbformat

    out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        raise SystemExit(f"{NOTEBOOK}: expected one cell tagged 'parameters', found {len(params)}")
    params[
        0
    ].source = f"RELEASE = {str(release.resolve())!r}\nOUT = {str((out / 'report_plots').resolve())!r}"
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out)}}
    )
    client.execute()
    done = out / NOTEBOOK.name
    nbformat.write(nb, done)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_build_report.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", type=Path, default=Path("data/out/current"), help="release folder")
    ap.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    args = ap.parse_args(argv)
    if not (args.release / "manifest.json").is_file():
        print(
            f"run_build_report.py: error: {args.release} is no release folder (no manifest.json)",
            file=sys.stderr,
        )
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="twin-report-"))
    print(run(args.release, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
