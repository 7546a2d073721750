"""Side-by-side timing that holds on a shared machine; every benchmark of the package uses it.

- The candidates of one measurement run round-robin, the order rotated every round, and the median
  over the rounds after warm-up is reported: the load of a shared machine falls on all of them alike,
  so read the ratios, not the absolute times.
- A framework that brings its own OpenMP runtime (PyTorch) never runs in one process with Paddle:
  its candidates live in a :class:`Worker` process that runs them when asked, in turn with the
  others. When the turn passes from one process to another, the timer first waits ``SETTLE`` seconds,
  the time idle OpenMP threads spin before they sleep (Intel's runtime: 200 ms), so that the last
  process's threads do not compete with the next one's.
- Each measurement waits (up to ``quiet_wait`` seconds) for the 1-minute load average to fall to
  ``BUSY_LOAD_PER_CORE`` per core (1.0 on 2 cores) and records the load average before and after and
  the CPU time that other processes took meanwhile (in cores). A measurement that starts above that
  load is marked ``busy``: a busy machine hurts multi-threaded candidates most, so its ratios are
  not headline figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

SETTLE = 0.3
BUSY_LOAD_PER_CORE = 0.5
_PROTOCOL = "TIMING "


def busy_threshold() -> float:
    """The 1-minute load average above which a measurement is busy: half a task per core."""
    return BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)


def _jiffies_busy() -> int | None:
    """Non-idle CPU time of the whole machine, in clock ticks (Linux), else None."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


def _jiffies_of(pid: int) -> int:
    """CPU time (user + system) of one process, in clock ticks; 0 where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Worker:
    """Candidates in another process: ``argv`` starts a program that calls :func:`serve` with them.

    Its stdout carries the protocol (lines starting ``TIMING ``; anything else it prints is passed
    on to this process's stdout); its stderr is this process's.
    """

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=cwd, bufsize=1)
        ready = self._receive()
        self.names, self.info = ready["ready"], ready.get("info", {})

    def _receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_PROTOCOL):
                return json.loads(line[len(_PROTOCOL):])
            print(line, end="", flush=True)
        raise RuntimeError(f"the timing worker {self.proc.args} stopped (exit code {self.proc.wait()})")

    def run(self, name: str) -> float:
        """Seconds one call of ``name`` took, timed inside the worker."""
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        answer = self._receive()
        if "error" in answer:
            raise RuntimeError(f"timing worker: {name}: {answer['error']}")
        return answer["seconds"]

    def candidate(self, name: str) -> Remote:
        if name not in self.names:
            raise KeyError(f"the worker has no candidate {name!r} (it has {', '.join(self.names)})")
        return Remote(self, name)

    def candidates(self, prefix: str = "") -> dict[str, Remote]:
        """Every candidate of the worker, named ``prefix + name``."""
        return {prefix + name: Remote(self, name) for name in self.names}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Remote:
    """One candidate of a :class:`Worker`."""

    worker: Worker
    name: str


def serve(candidates: dict[str, Callable[[], object]], info: dict | None = None) -> None:
    """The worker's side: announce the candidates (and ``info`` on the worker, e.g. its threads), then
    time one call per request line until stdin closes."""
    out = sys.stdout

    def send(message: dict) -> None:
        out.write(_PROTOCOL + json.dumps(message) + "\n")
        out.flush()

    send({"ready": list(candidates), "info": info or {}})
    for line in sys.stdin:
        name = line.strip()
        try:
            start = time.perf_counter()
            candidates[name]()
            send({"seconds": time.perf_counter() - start})
        except Exception as exc:  # reported to the timing process, which raises it there
            send({"error": f"{type(exc).__name__}: {exc}"})


@dataclass
class Measurement:
    """Median seconds per call of each candidate, and the conditions they were taken in."""

    seconds: dict[str, float]
    rounds: int
    warmup: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    waited_for_quiet: float
    other_processes_cpu: float | None  # cores' worth of CPU time other processes took meanwhile
    busy: bool
    samples: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def conditions(self) -> str:
        """One line: the loads and whether the measurement counts as busy."""
        other = "" if self.other_processes_cpu is None else f", other processes {self.other_processes_cpu:.2f} cores"
        state = "BUSY: not a headline figure" if self.busy else "quiet"
        return (f"load {self.load_before[0]:.2f}/{self.load_before[1]:.2f}/{self.load_before[2]:.2f} before, "
                f"{self.load_after[0]:.2f} after{other}; {state}")


def wait_for_quiet(max_wait: float) -> float:
    """Sleep until the 1-minute load average is at most :func:`busy_threshold`, at most ``max_wait``
    seconds; returns the seconds waited."""
    start = time.monotonic()
    while os.getloadavg()[0] > busy_threshold() and time.monotonic() - start < max_wait:
        time.sleep(2)
    return time.monotonic() - start


def measure(candidates: dict[str, Callable[[], object] | Remote], rounds: int, warmup: int,
            quiet_wait: float = 120.0) -> Measurement:
    """Time ``candidates`` (callables of this process or :class:`Remote` ones) round-robin, with a
    rotating start, ``warmup`` untimed rounds first (see the module docstring)."""
    waited = wait_for_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    load_before = os.getloadavg()
    workers = {c.worker.proc.pid for c in candidates.values() if isinstance(c, Remote)}
    own = [os.getpid(), *workers]
    machine_start, own_start, wall_start = _jiffies_busy(), sum(map(_jiffies_of, own)), time.monotonic()
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    last_process = None
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            candidate = candidates[name]
            process = candidate.worker.proc.pid if isinstance(candidate, Remote) else os.getpid()
            if last_process is not None and process != last_process:
                time.sleep(SETTLE)
            last_process = process
            if isinstance(candidate, Remote):
                elapsed = candidate.worker.run(candidate.name)
            else:
                start = time.perf_counter()
                candidate()
                elapsed = time.perf_counter() - start
            if r >= warmup:
                samples[name].append(elapsed)
    other = None
    if machine_start is not None:
        ticks = os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - wall_start
        busy_ticks = (_jiffies_busy() - machine_start) - (sum(map(_jiffies_of, own)) - own_start)
        other = max(busy_ticks, 0) / ticks / wall if wall > 0 else None
    return Measurement(
        seconds={name: statistics.median(t) for name, t in samples.items()}, rounds=rounds, warmup=warmup,
        load_before=load_before, load_after=os.getloadavg(), waited_for_quiet=round(waited, 1),
        other_processes_cpu=None if other is None else round(other, 3), busy=load_before[0] > busy_threshold(),
        samples=samples,
    )
