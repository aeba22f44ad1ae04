"""Structured build log: one JSON object per line (for schedulers and `twin status`), plus console progress.

On a terminal the console shows a live rich progress display (one row per stage, a bar where the stage
reports counts); in cron/CI logs (no TTY) it prints one plain line per finished stage instead.

Stages that run at the same time (`pipeline.orchestrate.stages`) log from threads of their own: each
thread has its own stack of nested stages (its own console row), and records are written whole.
"""

from __future__ import annotations

import json
import sys
import threading
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
        self._stacks = threading.local()  # per thread: its open stages, outermost first
        self._lock = threading.RLock()

    @property
    def _stack(self) -> list[str]:
        stack: list[str] | None = getattr(self._stacks, "stack", None)
        if stack is None:
            stack = self._stacks.stack = []
        return stack

    def event(self, event: str, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(rec, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            if self._fh:
                self._fh.write(line)
                self._fh.flush()
            if not self.quiet and event in ("warning", "error"):
                self._print(f"[{event}] {fields.get('message', '')}")

    def info(self, message: str, **fields: Any) -> None:
        self.event("info", message=message, **fields)
        if not self.quiet:
            self._print(message)

    # ---- console progress ------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        with self._lock:
            self._print_locked(text)

    def _print_locked(self, text: str) -> None:
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
        stack = self._stack
        stack.append(name)
        top = stack[0]
        with self._lock:
            prog = self._live()
            if prog is None:
                return
            if len(stack) == 1:
                self._rows[top] = prog.add_task(top, total=None)
            else:
                prog.update(self._rows[top], description=f"{top} › {name}")

    def stage_end(self, name: str, seconds: float) -> None:
        stack = self._stack
        if stack and stack[-1] == name:
            stack.pop()
        with self._lock:
            prog = self._progress
            if stack:  # nested stage finished: show the enclosing stage again
                if prog is not None and stack[0] in self._rows:
                    prog.update(self._rows[stack[0]], description=stack[0])
                return
            if prog is not None and name in self._rows:
                task = self._rows[name]
                total = prog.tasks[task].total or 1
                prog.update(task, description=f"{name} ({seconds:.1f} s)", total=total, completed=total)
            elif not self.quiet:
                self._print_locked(f"  ✓ {name} ({seconds:.1f} s)")

    def advance(self, label: str, done: int, total: int) -> None:
        """A stage reports countable progress (e.g. bins tiled): drives the bar of the current row."""
        stack = self._stack
        with self._lock:
            prog = self._progress
            if prog is None or not stack or stack[0] not in self._rows:
                return
            top = stack[0]
            prog.update(self._rows[top], description=f"{top} › {label}", total=total, completed=done)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            if self._fh:
                self._fh.close()
                self._fh = None
