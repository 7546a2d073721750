"""The fused CPU kernel of SimAM: build on first use (``simam_paddle.native``), load, call.

Two Paddle custom operators (forward and backward each, OpenMP over the B*C channels), compiled
into one library with ``paddle.utils.cpp_extension.load``: ``simam_fused`` (``csrc/simam_op.cc``),
SimAM itself, and ``simam_relu_maxpool`` (``csrc/simam_relu_pool_op.cc``), SimAM, ReLU and an
optional max-pool as one call (see ``fusion.py``); ``csrc/simam_channel.h`` holds the per-channel
arithmetic both share. Built and cached as every operator library of this package is
(``simam_paddle.native``).

Threads: those of Paddle's own CPU operators and oneDNN, on the same OpenMP runtime (``native/threads.py``:
``$SIMAM_PADDLE_NUM_THREADS``, else the available cores, at most 8; set by :func:`prepare`). The
channels are handed out in chunks, so a thread that a busy machine deschedules holds up one chunk,
not half the tensor; the result is the same, to the bit, for any number of threads.

The kernel is an optimisation, not a requirement: where it cannot be built, :func:`prepare`
returns False with one warning and SimAM uses its pure-Paddle path; ``status()`` says which, with
the build error; ``SIMAM_PADDLE_REQUIRE_KERNEL=1`` makes it an error (see ``simam_paddle.native``).
``SimAM`` calls :func:`prepare` when it is built on a CPU device, so the build never falls inside
a timed training step; call it yourself to build ahead of time.
"""

from __future__ import annotations

from pathlib import Path

import paddle

from ..native import OperatorLibrary, threads

CSRC = Path(__file__).resolve().parent / "csrc"
# The operators (compiled into one library) and the header they share.
SOURCES = (CSRC / "simam_op.cc", CSRC / "simam_relu_pool_op.cc")
HEADERS = (CSRC / "simam_channel.h", CSRC / "parallel.h")
# -O3 for the vectorised loops; OpenMP splits the channels across threads, on the runtime that
# Paddle's oneDNN uses (threads.link_flags).
CXX_FLAGS = ["-O3", "-fopenmp"]

LIBRARY = OperatorLibrary(
    "kernel", SOURCES, HEADERS, ("simam_fused", "simam_relu_maxpool"), what="SimAM's fused CPU kernel",
    fallback="using the pure-Paddle path", cxx_flags=CXX_FLAGS, ld_flags=threads.link_flags,
)


def prepare() -> bool:
    """Build or load the kernel once per process; True when it can be used.

    A failed build returns False (logged once), or raises ``KernelUnavailable`` when
    ``$SIMAM_PADDLE_REQUIRE_KERNEL`` is set. An invalid ``$SIMAM_PADDLE_NUM_THREADS`` is a ValueError.
    """
    return LIBRARY.prepare()


def status() -> dict:
    """Whether this process has the kernel: ``OperatorLibrary.status()`` (available, version, threads, error)."""
    return LIBRARY.status()


def num_threads() -> int:
    """Threads the kernel runs on: what the OpenMP runtime reports (see ``threads.py``)."""
    return threads.running()


def load_error() -> str | None:
    """Why the kernel could not be built or loaded, or None (also before :func:`prepare` ran)."""
    return LIBRARY.error


def cache_dir() -> Path:
    """The directory this build of the kernel is cached in."""
    return LIBRARY.cache_dir()


def simam_fused(x: paddle.Tensor, e_lambda: float) -> paddle.Tensor:
    """SimAM of a CPU float32/float64 [B, C, H, W] tensor with the fused kernel (after prepare())."""
    return LIBRARY.loaded().simam_fused(x, float(e_lambda))[0]


def simam_relu_maxpool(x: paddle.Tensor, e_lambda: float, pool_size: int = 0, pool_stride: int = 1) -> paddle.Tensor:
    """max_pool(relu(simam(x))) with a pool_size x pool_size window (no padding, floor mode), or
    relu(simam(x)) for pool_size 0, as one kernel call on a CPU float32/float64 tensor (after prepare()).

    A training step keeps only x and two numbers per channel: see ``csrc/simam_relu_pool_op.cc``.
    """
    return LIBRARY.loaded().simam_relu_maxpool(x, float(e_lambda), int(pool_size), int(pool_stride))[0]
