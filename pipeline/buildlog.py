"""Structured build log: one JSON object per line (for schedulers and `twin status`), plus rich console output."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class BuildLog:
    def __init__(self, path: Path | None = None, console: TextIO | None = None, quiet: bool = False):
        self.path = path
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")
        self.console = console if console is not None else sys.stderr
        self.quiet = quiet

    def event(self, event: str, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 3), "event": event, **fields}
        if self._fh:
            self._fh.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
            self._fh.flush()
        if not self.quiet and event in ("warning", "error"):
            print(f"[{event}] {fields.get('message', '')}", file=self.console)

    def info(self, message: str, **fields: Any) -> None:
        self.event("info", message=message, **fields)
        if not self.quiet:
            print(message, file=self.console)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
