"""The build's stage scheduler (`pipeline.orchestrate.stages`): dependency order, stages at once, the first
failure stops the others, results and commits in list order. No timing assertions: concurrency is shown
with barriers and events (a barrier only passes when its stages really run at the same time)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.orchestrate.executor import StageStopped, StopSignal, call, map_ordered, stopped_by
from pipeline.orchestrate.stages import Stage, run_stages

WAIT = 30  # seconds a test waits for an event that must come (a hang fails instead of blocking)


class Journal:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def add(self, what: str, name: str) -> None:
        with self.lock:
            self.events.append((what, name))

    def index(self, what: str, name: str) -> int:
        return self.events.index((what, name))


def test_dependencies_finish_before_their_dependents_start():
    stages = [
        Stage("a", writes=()),
        Stage("b", writes=()),
        Stage("c", after=("a",), writes=()),
        Stage("d", after=("b", "c"), writes=()),
        Stage("e", writes=()),
        Stage("f", after=("a", "b", "c", "d", "e"), writes=()),
    ]
    j = Journal()

    def run(name: str) -> str:
        j.add("start", name)
        j.add("end", name)
        return name.upper()

    out = run_stages(stages, run, parallel=3)
    assert out == {s.name: s.name.upper() for s in stages}
    assert list(out) == ["a", "b", "c", "d", "e", "f"]
    for st in stages:
        for dep in st.after:
            assert j.index("end", dep) < j.index("start", st.name), (dep, st.name)


def test_independent_stages_run_at_the_same_time():
    both = threading.Barrier(2, timeout=WAIT)  # broken (the test fails) unless a and b overlap

    def run(name: str) -> str:
        if name in ("a", "b"):
            both.wait()
        return name

    assert run_stages(
        [Stage("a", writes=()), Stage("b", writes=()), Stage("c", after=("a", "b"), writes=())],
        run,
        parallel=2,
    ) == {
        "a": "a",
        "b": "b",
        "c": "c",
    }


def test_parallel_one_is_the_serial_order():
    j = Journal()

    def run(name: str) -> None:
        j.add("start", name)
        j.add("end", name)

    stages = [
        Stage("x", writes=()),
        Stage("y", writes=()),
        Stage("z", after=("x",), writes=()),
        Stage("w", writes=()),
    ]
    run_stages(stages, run, parallel=1)
    assert j.events == [(w, s.name) for s in stages for w in ("start", "end")]


def test_commits_in_list_order_whatever_finishes_first():
    # b, then c finish before a: the commits still come a, b, c
    b_done, c_done = threading.Event(), threading.Event()
    commits: list[tuple[str, int]] = []

    def run(name: str) -> int:
        if name == "a":
            assert c_done.wait(WAIT)
        if name == "c":
            assert b_done.wait(WAIT)
        {"b": b_done, "c": c_done}.get(name, threading.Event()).set()
        return ord(name)

    def commit(name: str, value: int) -> None:
        commits.append((name, value))

    out = run_stages(
        [Stage("a", writes=()), Stage("b", writes=()), Stage("c", writes=())], run, parallel=3, commit=commit
    )
    assert commits == [("a", 97), ("b", 98), ("c", 99)]
    assert list(out.items()) == commits


def test_stages_writing_the_same_folder_never_overlap():
    j = Journal()
    active: set[str] = set()
    overlaps: list[tuple[str, str]] = []

    def run(name: str) -> None:
        with j.lock:
            for other in active:
                overlaps.append((name, other))
            active.add(name)
        threading.Event().wait(0.2)  # give a wrongly started neighbour the chance to overlap
        with j.lock:
            active.discard(name)

    stages = [
        Stage("overlays", writes=("overlays", "change")),
        Stage("zoning", writes=("overlays",)),
        Stage("nested", writes=("change/review",)),
        Stage("report"),  # writes anywhere: alone
    ]
    run_stages(stages, run, parallel=4)
    # zoning and nested share no folder: they may overlap; every other pair must not
    assert [pair for pair in overlaps if set(pair) != {"zoning", "nested"}] == []


def test_first_failure_stops_the_running_stages_and_starts_no_more():
    pool = ThreadPoolExecutor(1)
    release = threading.Event()  # keeps the pool's one task running, so b's other tasks stay queued
    b_waiting = threading.Event()
    outcome: dict[str, str] = {}

    def hold(k: int) -> int:
        if k == 0:
            b_waiting.set()
            release.wait(WAIT)
        return k

    def run(name: str) -> str:
        try:
            if name == "a":
                assert b_waiting.wait(WAIT)
                raise ValueError("stage a failed")
            if name == "b":
                map_ordered(pool, hold, [(k,) for k in range(5)], name="b")
            outcome[name] = "finished"
            return name
        except BaseException as e:
            outcome[name] = type(e).__name__
            raise

    stages = [
        Stage("a", writes=()),
        Stage("b", writes=()),
        Stage("c", writes=()),  # independent, but parallel=2 keeps it waiting: never started
        Stage("d", after=("a",), writes=()),
    ]
    try:
        with pytest.raises(ValueError, match="stage a failed"):
            run_stages(stages, run, parallel=2)
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert outcome == {"a": "ValueError", "b": "StageStopped"}


def test_a_stopped_stage_is_never_the_reported_error():
    # b stops itself (as if cancelled) only after a's real error: a's error is the one raised
    a_failed = threading.Event()

    def run(name: str) -> None:
        if name == "a":
            a_failed.set()
            raise KeyError("a")
        assert a_failed.wait(WAIT)
        raise StageStopped("stopped")

    with pytest.raises(KeyError):
        run_stages([Stage("b", writes=()), Stage("a", writes=())], run, parallel=2)


def test_list_order_must_be_a_serial_order():
    with pytest.raises(ValueError, match="not listed before"):
        run_stages([Stage("a", after=("b",), writes=()), Stage("b", writes=())], lambda n: n, parallel=1)
    with pytest.raises(ValueError, match="twice"):
        run_stages([Stage("a", writes=()), Stage("a", writes=())], lambda n: n, parallel=1)


def test_stop_signal_stops_serial_and_executor_work():
    sig = StopSignal()
    seen: list[int] = []

    def step(k: int) -> int:
        seen.append(k)
        if k == 1:
            sig.stop()
        return k

    with stopped_by(sig), pytest.raises(StageStopped):
        map_ordered(None, step, [(k,) for k in range(4)], name="serial")
    assert seen == [0, 1]
    with ThreadPoolExecutor(1) as pool, stopped_by(sig):
        with pytest.raises(StageStopped):
            map_ordered(pool, step, [(5,)], name="pool")
        with pytest.raises(StageStopped):
            call(pool, step, 6)
    assert seen == [0, 1]  # nothing ran after the stop
    # outside the scope the signal has no effect
    assert map_ordered(None, step, [(7,)], name="free") == [7]


def test_a_stage_opened_inside_itself_is_timed_once(tmp_path, monkeypatch):
    """The build wraps each layer unit in a stage of its name and a layer module may open the same stage:
    its seconds are counted once (they were counted twice), other nested stages still are."""
    import json

    import pipeline.model
    from pipeline.buildlog import BuildLog
    from pipeline.config.model import TwinConfig
    from pipeline.model import BuildContext

    clock = iter([0.0, 2.0, 3.0, 10.0])  # outer "a" starts, "b" starts, "b" ends, outer "a" ends
    monkeypatch.setattr(pipeline.model.time, "perf_counter", lambda: next(clock))
    cfg = TwinConfig.model_validate(
        {"name": "t", "crs": {"horizontal": "EPSG:25832", "vertical": "EPSG:7837"}}
    )
    log = BuildLog(tmp_path / "build.log.jsonl", quiet=True)
    ctx = BuildContext(cfg=cfg, build_id="t", release_dir=tmp_path, frame=None, inputs=[], log=log)  # type: ignore[arg-type]
    with ctx.stage("a"):
        with ctx.stage("a"):
            pass
        with ctx.stage("b"):
            pass
    assert ctx.timings == {"a": 10.0, "b": 1.0}
    events = [json.loads(line) for line in (tmp_path / "build.log.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events if e.get("event") == "stage_start"] == ["a", "b"]
