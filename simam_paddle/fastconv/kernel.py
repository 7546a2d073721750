"""The oneDNN convolution operator: build on first use, cache per user, load.

``csrc/conv_op.cc`` holds a Paddle custom operator, ``fastconv``, and its gradient, which call
oneDNN's convolution primitives (forward; backward-data and backward-weights), linked against
Paddle's own oneDNN and compiled against the headers in ``simam_paddle/native/third_party/onednn/``, after
the check that they fit (``simam_paddle.native.onednn``).

Built and cached as every operator library of this package is (``simam_paddle.native``);
the first build takes up to a minute. A failed build or check returns False from :func:`prepare` with one
warning, and the convolutions stay Paddle's own; ``$SIMAM_PADDLE_REQUIRE_KERNEL=1`` makes it an
error instead (CI sets it).

Threads: oneDNN runs on the OpenMP runtime and thread count of Paddle's own CPU operators
(``simam_paddle.native.threads``: ``$SIMAM_PADDLE_NUM_THREADS``, else the available cores, at most 8;
set by :func:`prepare`); the library links that runtime, not one of its own.
"""

from __future__ import annotations

from pathlib import Path

from ..native import OperatorLibrary, onednn, threads

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (CSRC / "conv_op.cc",)
CXX_FLAGS = ["-O2", "-fopenmp"]


def ld_flags() -> list[str]:
    """Paddle's oneDNN and the OpenMP runtime it runs on (Paddle's extension builder already puts
    paddle/libs on the library and run paths)."""
    return [*threads.link_flags(), "-l:libdnnl.so.3"]


LIBRARY = OperatorLibrary(
    "fastconv", SOURCES, onednn.HEADERS, ("fastconv",), what="the oneDNN convolutions (fastconv)",
    fallback="using Paddle's", cxx_flags=CXX_FLAGS, ld_flags=ld_flags, include_paths=onednn.INCLUDE_PATHS[:1],
    check=onednn.check_library,
)


def prepare() -> bool:
    """Check, build or load the operators once per process; True when they can be used.

    Unavailable: False (logged once), or ``KernelUnavailable`` when ``$SIMAM_PADDLE_REQUIRE_KERNEL``
    is set. An invalid ``$SIMAM_PADDLE_NUM_THREADS`` is a ValueError.
    """
    return LIBRARY.prepare()


def status() -> dict:
    """Whether this process has the operators: ``OperatorLibrary.status()`` (available, version: oneDNN's
    "X.Y.Z", threads, error)."""
    return LIBRARY.status()


def num_threads() -> int:
    """Threads oneDNN runs the convolutions on: what the OpenMP runtime reports."""
    return threads.running()


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions oneDNN's bf16 convolutions run on (Linux's
    /proc/cpuinfo flags avx512_bf16 or amx_bf16; False where they cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split()))
    except OSError:
        pass
    return False


def ops():
    """The operators' module (after a successful :func:`prepare`)."""
    return LIBRARY.loaded()
