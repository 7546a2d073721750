"""The oneDNN convolution operator: build on first use, cache per user, load.

``csrc/conv_op.cc`` holds a Paddle custom operator, ``fastconv``, and its gradient, which call
oneDNN's convolution primitives (forward; backward-data and backward-weights), linked against
Paddle's own oneDNN and compiled against the headers in ``simam_paddle/layers/csrc/onednn/``, after
the check that they fit (``simam_paddle.layers.onednn``).

Built and cached as every operator library of this package is (``simam_paddle.layers.custom_ops``);
the first build takes 30-60 s. A failed build or check returns False from :func:`prepare` with one
warning, and the convolutions stay Paddle's own; ``$SIMAM_PADDLE_REQUIRE_KERNEL=1`` makes it an
error instead (CI sets it).

Threads: ``$SIMAM_PADDLE_CONV_THREADS`` when set, else the SimAM kernel's default (the cores this
process may run on, shared out among the processes of a distributed launch, at most 8). oneDNN
runs on that many OpenMP threads during each call; Paddle's own operators keep theirs.
"""

from __future__ import annotations

from pathlib import Path

from ..layers import onednn
from ..layers.custom_ops import OperatorLibrary

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (CSRC / "conv_op.cc",)
CXX_FLAGS = ["-O2", "-fopenmp"]
# Paddle's extension builder already puts paddle/libs on the library and run paths.
LD_FLAGS = ["-fopenmp", "-l:libdnnl.so.3"]
THREADS_ENV = "SIMAM_PADDLE_CONV_THREADS"

LIBRARY = OperatorLibrary(
    "fastconv", SOURCES, onednn.HEADERS, ("fastconv",), what="the oneDNN convolutions (fastconv)",
    fallback="using Paddle's", cxx_flags=CXX_FLAGS, ld_flags=LD_FLAGS, include_paths=onednn.INCLUDE_PATHS[:1],
    threads_env=THREADS_ENV, check=onednn.check_library,
)


def prepare() -> bool:
    """Check, build or load the operators once per process; True when they can be used.

    Unavailable: False (logged once), or ``KernelUnavailable`` when ``$SIMAM_PADDLE_REQUIRE_KERNEL``
    is set. An invalid ``$SIMAM_PADDLE_CONV_THREADS`` is a ValueError.
    """
    return LIBRARY.prepare()


def status() -> dict:
    """{"available": bool, "onednn": "X.Y.Z" | None, "threads": int, "error": str | None} of this process."""
    return {"available": LIBRARY.module is not None, "onednn": LIBRARY.version, "threads": LIBRARY.num_threads,
            "error": LIBRARY.error}


def num_threads() -> int:
    return LIBRARY.num_threads


def ops():
    """The operators' module (after a successful :func:`prepare`)."""
    return LIBRARY.loaded()
