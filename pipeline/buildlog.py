"""Structured build log: one JSON object per line (for schedulers and `twin status`), plus console progress.

On a terminal the console shows a live rich progress display (one row per stage, a bar where the stage
reports counts); in cron/CI logs (no TTY) it prints one plain line per finished stage instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress


class BuildLog:
    def __init__(self, path: Path | None = None, console: TextIO | None = None, quiet: bool = False):
        self.path = path
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")
        self.console = console if console is not None else sys.stderr
        self.quiet = quiet
        self._progress: Progress | None = None  # rich.progress.Progress on a TTY, started at the first stage
        self._rows: dict[str, Any] = {}
        self._stack: list[str] = []

    def event(self, event: str, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 3), "event": event, **fields}
        if self._fh:
            self._fh.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
            self._fh.flush()
        if not self.quiet and event in ("warning", "error"):
            self._print(f"[{event}] {fields.get('message', '')}")

    def info(self, message: str, **fields: Any) -> None:
        self.event("info", message=message, **fields)
        if not self.quiet:
            self._print(message)

    # ---- console progress ------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.console)

    def _live(self) -> Progress | None:
        if self.quiet or not getattr(self.console, "isatty", lambda: False)():
            return None
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.console),
            )
            self._progress.start()
        return self._progress

    def stage_start(self, name: str) -> None:
        self._stack.append(name)
        top = self._stack[0]
        prog = self._live()
        if prog is None:
            return
        if len(self._stack) == 1:
            self._rows[top] = prog.add_task(top, total=None)
        else:
            prog.update(self._rows[top], description=f"{top} › {name}")

    def stage_end(self, name: str, seconds: float) -> None:
        if self._stack and self._stack[-1] == name:
            self._stack.pop()
        prog = self._progress
        if self._stack:  # nested stage finished: show the enclosing stage again
            if prog is not None and self._stack[0] in self._rows:
                prog.update(self._rows[self._stack[0]], description=self._stack[0])
            return
        if prog is not None and name in self._rows:
            task = self._rows[name]
            total = prog.tasks[task].total or 1
            prog.update(task, description=f"{name} ({seconds:.1f} s)", total=total, completed=total)
        elif not self.quiet:
            self._print(f"  ✓ {name} ({seconds:.1f} s)")

    def advance(self, label: str, done: int, total: int) -> None:
        """A stage reports countable progress (e.g. bins tiled): drives the bar of the current row."""
        prog = self._progress
        if prog is None or not self._stack or self._stack[0] not in self._rows:
            return
        top = self._stack[0]
        prog.update(self._rows[top], description=f"{top} › {label}", total=total, completed=done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._fh:
            self._fh.close()
            self._fh = None
