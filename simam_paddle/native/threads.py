"""The threads of this package's CPU work: one OpenMP runtime per process, one thread count.

Paddle's x86 wheels run their oneDNN and MKL on Intel's OpenMP runtime, ``libiomp5.so``, shipped in
``paddle/libs``. This package's three operator libraries (the SimAM kernel, the oneDNN convolutions,
the deployment operator) are linked against that same runtime (:func:`link_flags`), not GCC's
``libgomp``: a process then holds one runtime and one pool of threads. With two runtimes, each
one's idle threads spin on the cores the other one's threads need, and a thread count set in one is
not seen by the other.

Paddle sets ``OMP_NUM_THREADS=1`` when it is imported (unless it is set already), so its own CPU
operators, oneDNN's included, run on one thread. :func:`configure` sets Paddle's CPU math threads
(MKL's and the OpenMP runtime's, for the calling thread: the one that runs a dynamic-graph training
step) to :func:`requested`: ``$SIMAM_PADDLE_NUM_THREADS`` when set, else the CPU cores this process
may run on, shared out among the processes of a distributed launch on this machine
(``$PADDLE_LOCAL_SIZE``), at most 8. It runs when an operator library is prepared (a ``SimAM`` layer
or a fast convolution built on the CPU) and when a training starts.
:func:`running` reads back what the runtime reports, the count that the next parallel region of
oneDNN, MKL or this package's operators runs with.

Where Paddle ships no ``libiomp5.so`` (non-x86 wheels), the libraries link GCC's runtime with
``-fopenmp``, as Paddle's own build does there.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from pathlib import Path

from .onednn import paddle_libs

logger = logging.getLogger(__name__)

ENV = "SIMAM_PADDLE_NUM_THREADS"
# Past a handful of threads SimAM's passes are bound by memory bandwidth and by the cost of waking the
# team, and idle OpenMP threads spin for a while after each region, in the way of data-loader workers.
MAX_DEFAULT_THREADS = 8


def openmp_library() -> Path | None:
    """Intel's OpenMP runtime as Paddle ships it, or None where it ships none."""
    path = paddle_libs() / "libiomp5.so"
    return path if path.is_file() else None


def link_flags() -> list[str]:
    """How an operator library links the OpenMP runtime of Paddle's oneDNN (see the module docstring)."""
    return ["-l:libiomp5.so"] if openmp_library() is not None else ["-fopenmp"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """The available cores shared out among the local processes of a distributed launch, 1 to 8."""
    try:
        local_processes = max(int(os.environ.get("PADDLE_LOCAL_SIZE", "1")), 1)
    except ValueError:
        local_processes = 1
    return min(max(available_cores() // local_processes, 1), MAX_DEFAULT_THREADS)


class SettingError(ValueError):
    """An environment variable of the library (``$SIMAM_PADDLE_NUM_THREADS``, ``$SIMAM_PADDLE_BACKEND``) with
    a value it cannot use; the message names the variable and the fix. The tools report it as bad input."""


def requested() -> int:
    """The positive integer in ``$SIMAM_PADDLE_NUM_THREADS``, else :func:`default_threads`; anything else
    is a SettingError naming the variable."""
    value = os.environ.get(ENV)
    if value is None or not value.strip():
        return default_threads()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise SettingError(f"{ENV} must be a positive integer (the threads of Paddle's and SimAM's CPU operators), "
                         f"got {value!r}; unset it to use the available cores")
    return threads


@functools.cache
def _runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime Paddle's oneDNN runs on, as loaded in this process (opened once)."""
    path = openmp_library()
    if path is not None:
        return ctypes.CDLL(str(path))
    try:
        return ctypes.CDLL("libgomp.so.1")
    except OSError:
        return None


def running() -> int:
    """Threads the OpenMP runtime of Paddle's oneDNN reports for this thread's next parallel region."""
    runtime = _runtime()
    return int(runtime.omp_get_max_threads()) if runtime is not None else 1


_lock = threading.Lock()
_configured: int | None = None


def configure() -> int:
    """Set Paddle's CPU math threads to :func:`requested` (again only when that changes); returns
    :func:`running`. An invalid ``$SIMAM_PADDLE_NUM_THREADS`` is a ValueError naming the variable."""
    global _configured
    threads = requested()
    with _lock:
        if _configured != threads:
            from paddle.base import core

            core.set_num_threads(threads)
            _configured = threads
            logger.debug("CPU threads: %d requested, %d reported by the OpenMP runtime", threads, running())
    return running()
