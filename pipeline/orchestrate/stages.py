"""Run the stages of a build at the same time where their inputs allow it.

A build's stages (the layer units of `pipeline.orchestrate.build`) form a small dependency graph: a stage
reads the release files of the stages it names in `after` and nothing else of the others. `run_stages`
starts every stage whose `after` stages have finished, each in a thread of this process, at most
`parallel` at once; the stages' per-tile tasks all go to the build's one executor, which keeps every
worker busy while one stage does its region-level work in this process.

- Deterministic: `commit(name, result)` is called in this thread, in the order of the list, as soon as a
  stage and every stage before it have finished; so whatever depends on the order (warnings, timings,
  the manifest's layer list) is the same as in a serial run. `parallel=1` is a serial run in list order.
- The first failing stage stops the build: no further stage starts, the running ones stop at their next
  task (`executor.StopSignal`: their waiting tasks are cancelled, they raise `StageStopped`), and once
  every thread has ended its exception is raised here (also a Ctrl-C of this thread stops them first).
- Stages that write the same release folder never run at the same time (`writes`): a stage's output
  files are the files that appear in its folders while it runs (`reuse.reuse_or_build`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.orchestrate.executor import StageStopped, StopSignal, stopped_by

__all__ = ["Stage", "StageStopped", "run_stages"]


@dataclass(frozen=True)
class Stage:
    """`after`: stages (earlier in the list) that must finish first; `writes`: the release paths (folders
    or files) the stage writes, two stages sharing one (or one inside the other) never run at the same
    time; None: anywhere, the stage runs alone."""

    name: str
    after: tuple[str, ...] = ()
    writes: tuple[str, ...] | None = None


def _overlap(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    if a is None or b is None:
        return True
    return any(x == y or x.startswith(y + "/") or y.startswith(x + "/") for x in a for y in b)


def _check(stages: Sequence[Stage]) -> None:
    seen: set[str] = set()
    for st in stages:
        if st.name in seen:
            raise ValueError(f"stage {st.name!r} is listed twice")
        missing = [a for a in st.after if a not in seen]
        if missing:  # later in the list or unknown: the list order must be a valid serial order
            raise ValueError(f"stage {st.name!r} runs after {missing}, which are not listed before it")
        seen.add(st.name)


def run_stages(
    stages: Sequence[Stage],
    run: Callable[[str], Any],
    *,
    parallel: int,
    commit: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """`run(name)` for every stage (in threads, at most `parallel` at once, each after its `after`
    stages); returns {name: result} in list order. `commit(name, result)` in list order (see above)."""
    _check(stages)
    parallel = max(1, parallel)
    signal = StopSignal()
    finished: queue.Queue[tuple[str, bool, Any]] = queue.Queue()
    pending = list(stages)
    running: dict[str, tuple[Stage, threading.Thread]] = {}
    results: dict[str, Any] = {}
    failure: list[BaseException] = []
    committed = 0

    def body(st: Stage) -> None:
        try:
            with stopped_by(signal):
                out = run(st.name)
        except BaseException as e:  # handed to the scheduling thread, raised there
            finished.put((st.name, False, e))
        else:
            finished.put((st.name, True, out))

    def busy(st: Stage) -> bool:
        return any(_overlap(st.writes, other.writes) for other, _t in running.values())

    def start_ready() -> None:
        for st in list(pending):
            if len(running) >= parallel:
                return
            if all(a in results for a in st.after) and not busy(st):
                pending.remove(st)
                t = threading.Thread(target=body, args=(st,), name=f"twin-stage-{st.name}")
                running[st.name] = (st, t)
                t.start()

    try:
        while True:
            if not failure:
                start_ready()
            if not running:
                break
            name, ok, value = finished.get()
            running.pop(name)[1].join()
            if not ok:
                if not failure and not isinstance(value, StageStopped):
                    failure.append(value)
                signal.stop()
                continue
            results[name] = value
            while commit is not None and committed < len(stages) and stages[committed].name in results:
                commit(stages[committed].name, results[stages[committed].name])
                committed += 1
    except BaseException:  # e.g. Ctrl-C in this thread: stop the stages, then let it through
        signal.stop()
        for _st, t in running.values():
            t.join()
        raise
    if failure:
        raise failure[0]
    if pending:  # cannot happen with a checked list (every `after` is earlier)
        raise RuntimeError(f"stages never ready: {[st.name for st in pending]}")
    return {st.name: results[st.name] for st in stages}
