"""`points_run.peak_rss`: the peak RSS of the run's process and its children (the workers)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from pipeline.orchestrate.points_run import peak_rss

_CHILD = "import sys, time; b = bytearray(96 * 2**20); print('ready', flush=True); time.sleep(30)"


def test_a_child_started_during_the_run_counts_in_the_peak():
    """A worker started after the first sample is found by a later look-up of the children and its memory
    is read at every sample from then on."""
    me = psutil.Process().memory_info().rss
    with peak_rss(interval=0.02, rescan=5) as peak:
        time.sleep(0.1)
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(0.5)  # several look-ups of the children
            seen = peak()
        finally:
            child.kill()
            child.wait()
    assert seen >= me + 90 * 2**20  # the child's 96 MB buffer is in the peak
    assert peak() >= seen
