"""The oneDNN convolution operator: build on first use, cache per user, load.

``csrc/conv_op.cc`` holds a Paddle custom operator, ``fastconv``, and its gradient, which call
oneDNN's convolution primitives (forward; backward-data and backward-weights). It links against
the oneDNN that Paddle itself ships (``paddle/libs/libdnnl.so.3``: one copy of the library in the
process) and compiles against the
headers of oneDNN 3.6 in ``csrc/onednn/`` (copied from the ``onednn-devel`` 2025.0.1 package, with
``dnnl_config.h`` set to Paddle's build: OpenMP CPU runtime, no GPU). Before building, the
library's ``dnnl_version()`` must report the headers' major.minor version; otherwise, or where
Paddle ships no such library (another OS, a build without oneDNN), the operator is unavailable.

Built and cached like the SimAM kernel (``simam_paddle.layers.simam_kernel``): the same cache root
(``$SIMAM_PADDLE_CACHE_DIR`` or ``~/.cache/simam_paddle``), a directory named after the sources,
the flags, Paddle and Python, the same build lock; the first build takes 30-60 s. A failed build
returns False from :func:`prepare` with one warning, and the convolutions stay Paddle's own;
``$SIMAM_PADDLE_REQUIRE_KERNEL=1`` makes it an error instead (CI sets it).

Threads: ``$SIMAM_PADDLE_CONV_THREADS`` when set, else the SimAM kernel's default (the cores this
process may run on, shared out among the processes of a distributed launch, at most 8). oneDNN
runs on that many OpenMP threads during each call; Paddle's own operators keep theirs.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from pathlib import Path
from types import ModuleType

import paddle

from ..layers import simam_kernel

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (CSRC / "conv_op.cc",)
INCLUDE = CSRC / "onednn"
HEADERS = tuple(sorted(INCLUDE.rglob("*.h*")))
OP_MODULE_NAME = "simam_paddle_fastconv"
OPS = ("fastconv",)
CXX_FLAGS = ["-O2", "-fopenmp"]
# Paddle's extension builder already puts paddle/libs on the library and run paths.
LD_FLAGS = ["-fopenmp", "-l:libdnnl.so.3"]
THREADS_ENV = "SIMAM_PADDLE_CONV_THREADS"


def library_path() -> Path:
    """The oneDNN library Paddle ships (it may be absent)."""
    return Path(paddle.__file__).resolve().parent / "libs" / "libdnnl.so.3"


def header_version() -> tuple[int, int, int]:
    """(major, minor, patch) of the headers in csrc/onednn."""
    text = (INCLUDE / "oneapi" / "dnnl" / "dnnl_version.h").read_text()
    return tuple(int(re.search(rf"#define DNNL_VERSION_{part} (\d+)", text).group(1))
                 for part in ("MAJOR", "MINOR", "PATCH"))


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


DNNL_RUNTIME_OMP = 2


def library_version(path: Path | None = None) -> tuple[int, int, int, int]:
    """(major, minor, patch, cpu_runtime) that the library's ``dnnl_version()`` reports."""
    library = ctypes.CDLL(str(path or library_path()))
    library.dnnl_version.restype = ctypes.POINTER(_Version)
    v = library.dnnl_version().contents
    return v.major, v.minor, v.patch, v.cpu_runtime


def check_library() -> str:
    """The library's version as "X.Y.Z" when the headers fit it; raises RuntimeError saying why not."""
    path = library_path()
    if not path.is_file():
        raise RuntimeError(f"Paddle ships no oneDNN library here ({path} not found)")
    major, minor, patch, runtime = library_version(path)
    headers = header_version()
    if (major, minor) != headers[:2]:
        raise RuntimeError(f"Paddle's oneDNN is {major}.{minor}.{patch}; the operators are written against the "
                           f"{headers[0]}.{headers[1]} headers")
    if runtime != DNNL_RUNTIME_OMP:
        raise RuntimeError(f"Paddle's oneDNN {major}.{minor}.{patch} uses CPU runtime {runtime}, not OpenMP")
    return f"{major}.{minor}.{patch}"


def cache_dir() -> Path:
    """The directory this build is cached in, beside the SimAM kernel's (``simam_kernel.operator_cache_dir``)."""
    return simam_kernel.operator_cache_dir("fastconv", SOURCES + HEADERS, CXX_FLAGS + LD_FLAGS)


def _build_and_load() -> ModuleType:
    """Compile (or find in the cache) and load the operators; raises on any failure."""
    return simam_kernel.build_operators(cache_dir(), OP_MODULE_NAME, SOURCES, OPS, CXX_FLAGS, LD_FLAGS,
                                        include_paths=(INCLUDE,), what="fastconv's oneDNN convolutions")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tried = False
        self.module: ModuleType | None = None
        self.error: str | None = None
        self.onednn: str | None = None
        self.num_threads = 1


_state = _State()


def prepare() -> bool:
    """Check, build or load the operators once per process; True when they can be used.

    Unavailable: False (logged once), or ``KernelUnavailable`` when ``$SIMAM_PADDLE_REQUIRE_KERNEL``
    is set. An invalid ``$SIMAM_PADDLE_CONV_THREADS`` is a ValueError.
    """
    with _state.lock:
        if not _state.tried:
            _state.num_threads = simam_kernel.threads_from_env(THREADS_ENV, "the oneDNN convolutions")
            try:
                _state.onednn = check_library()
                _state.module = _build_and_load()
            except Exception as exc:
                _state.error = str(exc).strip() or type(exc).__name__
                logger.warning("fastconv: the oneDNN convolutions are unavailable, using Paddle's (%s)",
                               _state.error.splitlines()[0])
                logger.debug("fastconv build output:\n%s", _state.error)
            _state.tried = True  # not reached on Ctrl-C: the next call tries again
    if _state.module is None and simam_kernel.required():
        raise simam_kernel.KernelUnavailable(
            f"{simam_kernel.REQUIRE_ENV} is set, but the oneDNN convolutions are unavailable: {_state.error}")
    return _state.module is not None


def status() -> dict:
    """{"available": bool, "onednn": "X.Y.Z" | None, "threads": int, "error": str | None} of this process."""
    return {"available": _state.module is not None, "onednn": _state.onednn, "threads": _state.num_threads,
            "error": _state.error}


def num_threads() -> int:
    return _state.num_threads


def ops() -> ModuleType:
    """The operators' module (after a successful :func:`prepare`)."""
    if _state.module is None and not prepare():
        raise RuntimeError(f"the oneDNN convolutions are unavailable: {_state.error}")
    return _state.module
