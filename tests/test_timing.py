"""The side-by-side timer: medians, a candidate in another process, the conditions it records."""

from __future__ import annotations

import sys
import time

import pytest

from simam_paddle import timing

# A worker serving two candidates of known duration, and one that fails.
WORKER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from simam_paddle import timing
assert "paddle" not in sys.modules
print("a line of the worker's own")
timing.serve({"sleep 20 ms": lambda: time.sleep(0.02), "sleep 40 ms": lambda: time.sleep(0.04),
              "fails": lambda: 1 / 0}, info={"pid_role": "worker"})
"""


@pytest.fixture
def worker():
    from helpers import REPO_ROOT

    with timing.Worker([sys.executable, "-c", WORKER, str(REPO_ROOT)]) as w:
        yield w


def test_medians_of_candidates_in_two_processes(worker, monkeypatch):
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (0.2, 0.3, 0.4))
    assert worker.names == ["sleep 20 ms", "sleep 40 ms", "fails"] and worker.info == {"pid_role": "worker"}
    switches = []
    real_sleep = time.sleep
    monkeypatch.setattr(timing.time, "sleep", lambda s: (switches.append(s), real_sleep(s)))
    candidates = {"here 30 ms": lambda: real_sleep(0.03), "there 20": worker.candidate("sleep 20 ms"),
                  "there 40": worker.candidate("sleep 40 ms")}
    m = timing.measure(candidates, rounds=5, warmup=1)
    for name, expected in (("here 30 ms", 0.03), ("there 20", 0.02), ("there 40", 0.04)):
        assert expected <= m.seconds[name] < expected + 0.015, (name, m.seconds[name])
        assert len(m.samples[name]) == 5
    # every round passes the turn between the processes twice (the rotation varies where): a pause each time
    assert switches and all(s == timing.SETTLE for s in switches) and len(switches) >= 2 * 6 - 2
    assert not m.busy and m.load_before == (0.2, 0.3, 0.4) and "quiet" in m.conditions()


def test_a_failing_remote_candidate_raises_here(worker):
    with pytest.raises(RuntimeError, match="fails: ZeroDivisionError"):
        timing.measure({"x": worker.candidate("fails")}, rounds=1, warmup=0, quiet_wait=0)
    with pytest.raises(KeyError, match="no candidate 'nope'"):
        worker.candidate("nope")


def test_a_measurement_started_on_a_busy_machine_is_marked(monkeypatch):
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (1.3, 3.2, 4.3))
    m = timing.measure({"noop": lambda: None}, rounds=3, warmup=0, quiet_wait=0)
    assert timing.busy_threshold() == 1.0 and m.busy and "BUSY" in m.conditions()
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (0.9, 3.2, 4.3))
    assert not timing.measure({"noop": lambda: None}, rounds=3, warmup=0, quiet_wait=0).busy


def test_waiting_for_quiet_stops_when_the_load_falls(monkeypatch):
    loads = iter([2.5, 1.8, 0.7])
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    naps = []
    monkeypatch.setattr(timing.time, "sleep", naps.append)
    timing.wait_for_quiet(60)
    assert naps == [2, 2]
