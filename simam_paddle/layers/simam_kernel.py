"""The fused CPU kernel of SimAM: build on first use, cache per user, load, call.

Two Paddle custom operators (forward and backward each, OpenMP over the B*C channels), compiled
into one library with ``paddle.utils.cpp_extension.load``: ``simam_fused`` (``csrc/simam_op.cc``),
SimAM itself, and ``simam_relu_maxpool`` (``csrc/simam_relu_pool_op.cc``), SimAM, ReLU and an
optional max-pool as one call (see ``fusion.py``); ``csrc/simam_channel.h`` holds the per-channel
arithmetic both share. The first build on a machine takes 10-30 s and goes to a per-user cache
directory, ``$SIMAM_PADDLE_CACHE_DIR`` or ``~/.cache/simam_paddle`` (``$XDG_CACHE_HOME`` is
honoured), under a name that changes with the sources and their folder, the flags, the Paddle
installation and Python; later processes load it in about a second.

Threads: ``$SIMAM_PADDLE_NUM_THREADS`` when set; otherwise the CPU cores this process may run on,
shared out among the processes of a distributed launch on this machine (``$PADDLE_LOCAL_SIZE``),
at most 8; read once by :func:`prepare`. Paddle runs its own CPU operators on one thread unless
``OMP_NUM_THREADS`` says otherwise, so in a single-process job the other cores sit idle beside them;
SimAM's kernel uses them (on 7x7 maps one thread is arithmetic-bound: see BENCHMARKS.md). The
channels are handed out in chunks, so a thread that a busy machine deschedules holds up one chunk,
not half the tensor; the result is the same, to the bit, for any number of threads.

The kernel is an optimisation, not a requirement: when the compiler is missing or the build fails,
:func:`prepare` returns False, logs one warning, and SimAM uses its pure-Paddle path; ``status()``
says which, with the build error. ``SIMAM_PADDLE_REQUIRE_KERNEL=1`` makes an unavailable kernel an
error instead (CI sets it, so a kernel that stops building fails the tests rather than skipping
them). Ctrl-C during the build interrupts it; the next call tries again.
``SimAM`` calls :func:`prepare` when it is built on a CPU device, so the build never falls inside
a timed training step; call it yourself to build ahead of time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import sys
import threading
from pathlib import Path
from types import ModuleType

import paddle

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
# The operators (compiled into one library) and the header they share.
SOURCES = (CSRC / "simam_op.cc", CSRC / "simam_relu_pool_op.cc")
HEADERS = (CSRC / "simam_channel.h",)
OP_MODULE_NAME = "simam_paddle_op"
# -O3 for the vectorised loops; OpenMP splits the channels across threads (see num_threads).
CXX_FLAGS = ["-O3", "-fopenmp"]
LD_FLAGS = ["-fopenmp"]


class _KernelState:
    """What one process knows about the kernel: the loaded module, or why there is none."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tried = False
        self.module: ModuleType | None = None
        self.error: str | None = None
        self.num_threads = 1


_state = _KernelState()


def cache_root() -> Path:
    """``$SIMAM_PADDLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/simam_paddle`` or ``~/.cache/simam_paddle``."""
    root = os.environ.get("SIMAM_PADDLE_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "simam_paddle"
    return Path(root)


def operator_cache_dir(prefix: str, files: tuple[Path, ...], flags: list[str]) -> Path:
    """The cache folder of one build of custom operators: one per content and place of ``files``, the
    ``flags``, the Paddle installation and Python."""
    signature = "\n".join(
        [
            *(hashlib.sha256(path.read_bytes()).hexdigest() for path in files),
            # Paddle rebuilds a cached library whose sources it finds at another path,
            # or that another Paddle installation built
            *(str(path.parent) for path in files[:1]),
            str(Path(paddle.__file__).parent),
            " ".join(flags),
            paddle.__version__,
            sys.version,
            platform.machine(),
        ]
    )
    return cache_root() / f"{prefix}-{hashlib.sha256(signature.encode()).hexdigest()[:16]}"


def cache_dir() -> Path:
    """The directory this build of the kernel is cached in."""
    return operator_cache_dir("kernel", SOURCES + HEADERS, CXX_FLAGS + LD_FLAGS)


@contextlib.contextmanager
def _build_lock(directory: Path):
    """Serialise builds of one cache directory across processes (tests, data-loader workers)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, concurrent first builds may repeat work
        yield
        return
    with open(directory / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def build_operators(directory: Path, name: str, sources: tuple[Path, ...], ops: tuple[str, ...], cxx_flags: list[str],
                    ld_flags: list[str], include_paths: tuple[Path, ...] = (), what: str = "") -> ModuleType:
    """Compile (or find in ``directory``) and load the custom operators ``ops`` built from ``sources``;
    raises RuntimeError with the build's output on any failure. Builds of one folder are serialised."""
    from paddle.utils.cpp_extension import load

    directory.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory):
        if not (directory / name / f"{name}.so").exists():
            logger.info("%s: building in %s (first use, up to a minute)", what or name, directory)
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                module = load(
                    name=name,
                    sources=[str(path) for path in sources],
                    extra_cxx_cflags=list(cxx_flags),
                    extra_ldflags=list(ld_flags),
                    extra_include_paths=[str(path) for path in include_paths],
                    build_directory=str(directory),
                )
        except (Exception, SystemExit) as exc:  # SystemExit from a failed setup.py build included
            raise RuntimeError(f"{type(exc).__name__}: {exc}\n{output.getvalue()}") from exc
    missing = [op for op in ops if not hasattr(module, op)]
    if missing:
        raise RuntimeError(f"the built library in {directory} lacks the operators {', '.join(missing)}")
    return module


def _build_and_load() -> ModuleType:
    """Compile (or find in the cache) and load the kernel's operators; raises on any failure."""
    return build_operators(cache_dir(), OP_MODULE_NAME, SOURCES, ("simam_fused", "simam_relu_maxpool"), CXX_FLAGS,
                           LD_FLAGS, what="SimAM's fused CPU kernel")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# A SimAM tensor is a few MB; past a handful of threads it is bound by memory bandwidth and by the
# cost of waking the threads, while idle OpenMP threads spin for a while after each call, in the way
# of data-loader workers. So the default stops at 8.
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """The available cores shared out among the local processes of a distributed launch, 1 to 8."""
    try:
        local_processes = max(int(os.environ.get("PADDLE_LOCAL_SIZE", "1")), 1)
    except ValueError:
        local_processes = 1
    return min(max(available_cores() // local_processes, 1), MAX_DEFAULT_THREADS)


THREADS_ENV = "SIMAM_PADDLE_NUM_THREADS"


def threads_from_env(variable: str = THREADS_ENV, what: str = "the SimAM kernel") -> int:
    """The positive integer in ``$variable``, else :func:`default_threads`; anything else is a ValueError
    naming the variable."""
    value = os.environ.get(variable)
    if value is None or not value.strip():
        return default_threads()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{variable} must be a positive integer (threads of {what}), got {value!r}; "
                         "unset it to use the available cores")
    return threads


REQUIRE_ENV = "SIMAM_PADDLE_REQUIRE_KERNEL"


class KernelUnavailable(RuntimeError):
    """The kernel could not be built or loaded while ``$SIMAM_PADDLE_REQUIRE_KERNEL`` asks for it."""


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def prepare() -> bool:
    """Build or load the kernel once per process; True when it can be used.

    A failed build returns False (logged once), or raises ``KernelUnavailable`` when
    ``$SIMAM_PADDLE_REQUIRE_KERNEL`` is set. An invalid ``$SIMAM_PADDLE_NUM_THREADS`` is a ValueError.
    """
    with _state.lock:
        if not _state.tried:
            _state.num_threads = threads_from_env()
            try:
                _state.module = _build_and_load()
            except Exception as exc:
                _state.error = str(exc).strip() or type(exc).__name__
                logger.warning(
                    "SimAM: the fused CPU kernel is unavailable, using the pure-Paddle path (%s)",
                    _state.error.splitlines()[0],
                )
                logger.debug("SimAM kernel build output:\n%s", _state.error)
            _state.tried = True  # not reached on Ctrl-C: the next call tries again
    if _state.module is None and required():
        raise KernelUnavailable(f"{REQUIRE_ENV} is set, but the SimAM CPU kernel is unavailable: {_state.error}")
    return _state.module is not None


def status() -> dict:
    """Which SimAM CPU path this process has: {"kernel": bool, "threads": int, "error": str | None}."""
    return {"kernel": _state.module is not None, "threads": _state.num_threads, "error": _state.error}


def num_threads() -> int:
    """Threads the kernel runs on (see the module docstring; known once :func:`prepare` ran)."""
    return _state.num_threads


def load_error() -> str | None:
    """Why the kernel could not be built or loaded, or None (also before :func:`prepare` ran)."""
    return _state.error


def _loaded() -> ModuleType:
    """The operators' module, built or loaded now if need be; raises when the kernel is unavailable."""
    if _state.module is None and not prepare():
        raise RuntimeError(f"the SimAM CPU kernel is unavailable: {_state.error}")
    return _state.module


def simam_fused(x: paddle.Tensor, e_lambda: float) -> paddle.Tensor:
    """SimAM of a CPU float32/float64 [B, C, H, W] tensor with the fused kernel (after prepare())."""
    return _loaded().simam_fused(x, float(e_lambda), _state.num_threads)[0]


def simam_relu_maxpool(x: paddle.Tensor, e_lambda: float, pool_size: int = 0, pool_stride: int = 1) -> paddle.Tensor:
    """max_pool(relu(simam(x))) with a pool_size x pool_size window (no padding, floor mode), or
    relu(simam(x)) for pool_size 0, as one kernel call on a CPU float32/float64 tensor (after prepare()).

    A training step keeps only x and two numbers per channel: see ``csrc/simam_relu_pool_op.cc``.
    """
    return _loaded().simam_relu_maxpool(x, float(e_lambda), int(pool_size), int(pool_stride), _state.num_threads)[0]
