"""Custom C++ operator libraries: built on first use, cached per user, loaded once per process.

Three libraries are built this way: SimAM's fused CPU kernel (``simam_paddle.layers.simam_kernel``),
the SimAM operator of exported models (``simam_paddle.layers.simam_deploy``) and the oneDNN
convolutions (``simam_paddle.fastconv.kernel``). Each is an :class:`OperatorLibrary`: compiled with
``paddle.utils.cpp_extension.load`` into a per-user cache directory, ``$SIMAM_PADDLE_CACHE_DIR`` or
``~/.cache/simam_paddle`` (``$XDG_CACHE_HOME`` is honoured), under a name that changes with the
sources and their folder, the flags, the Paddle installation and Python; the first build takes
up to a minute, later processes load it from the cache. Builds of one directory are serialised across
processes.

Each library is an optimisation, not a requirement: when the compiler is missing or the build
fails, ``prepare()`` returns False and logs one warning, and the caller takes its pure-Paddle path;
``status()`` says which, with the error, in the same keys for every library.
``SIMAM_PADDLE_REQUIRE_KERNEL=1`` makes an unavailable library an error instead (CI sets it, so an
operator that stops building fails the tests rather than skipping them). Ctrl-C during a build
interrupts it; the next call tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import paddle

from . import threads

logger = logging.getLogger(__name__)


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


VERBOSE_ENV = "SIMAM_PADDLE_VERBOSE"


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 1, true or yes."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def verbose() -> bool:
    """Whether ``$SIMAM_PADDLE_VERBOSE`` asks to see Paddle's and the compiler's output as they print it
    (the tools' ``-v`` sets it)."""
    return env_flag(VERBOSE_ENV)


@contextlib.contextmanager
def captured_output(sink: list[str]):
    """Everything written to this process's stdout and stderr, at the file-descriptor level, inside the
    block, appended to ``sink`` (as one string) instead of printed: Python's prints, warnings and logging,
    and the output of child processes, which inherit the descriptors (Paddle's extension builder runs
    setup.py and the compiler in one). Paddle's build and load of a library print a dozen lines of
    progress ("running build", the compiler's command lines, "No ccache found", "using custom operator
    only") that are no news to a user; so does paddle2onnx (``simam_paddle.export``). With
    ``$SIMAM_PADDLE_VERBOSE`` set nothing is captured. Output of other threads in the same window is
    captured too."""
    if verbose():
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as file:
        sys.stdout.flush(), sys.stderr.flush()
        saved = [os.dup(fd) for fd in (1, 2)]
        try:
            for fd in (1, 2):
                os.dup2(file.fileno(), fd)
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            file.seek(0)
            sink.append(file.read().decode(errors="replace"))


def build_operators(directory: Path, name: str, sources: tuple[Path, ...], ops: tuple[str, ...], cxx_flags: list[str],
                    ld_flags: list[str], include_paths: tuple[Path, ...] = (), what: str = "") -> ModuleType:
    """Compile (or find in ``directory``) and load the custom operators ``ops`` built from ``sources``;
    raises RuntimeError with the build's output on any failure. Builds of one folder are serialised."""
    directory.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory):
        if not (directory / name / f"{name}.so").exists():
            logger.info("%s: building in %s (first use, up to a minute)", what or name, directory)
        output: list[str] = []
        try:
            with captured_output(output):
                from paddle.utils.cpp_extension import load  # its import warns "No ccache found"

                module = load(
                    name=name,
                    sources=[str(path) for path in sources],
                    extra_cxx_cflags=list(cxx_flags),
                    extra_ldflags=list(ld_flags),
                    extra_include_paths=[str(path) for path in include_paths],
                    build_directory=str(directory),
                )
        except (Exception, SystemExit) as exc:  # SystemExit from a failed setup.py build included
            raise RuntimeError(f"{type(exc).__name__}: {exc}\n{''.join(output)}") from exc
    logger.debug("%s: output of the build and load:\n%s", what or name, "".join(output))
    missing = [op for op in ops if not hasattr(module, op)]
    if missing:
        raise RuntimeError(f"the built library in {directory} lacks the operators {', '.join(missing)}")
    return module


def missing_compiler() -> str | None:
    """Why no library can be compiled here, when the C++ compiler that Paddle's extension builder
    calls (``$CXX``, else Python's build configuration: ``g++`` on Linux) is not on the PATH; else None."""
    compiler = (os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++").split()[0]
    if shutil.which(compiler) is None:
        return (f"no C++ compiler: {compiler} is not on the PATH; install one (Debian/Ubuntu: apt-get install g++) "
                "or point $CXX at it, and the next start builds the library")
    return None


REQUIRE_ENV = "SIMAM_PADDLE_REQUIRE_KERNEL"


class KernelUnavailable(RuntimeError):
    """A library of operators could not be built or loaded while ``$SIMAM_PADDLE_REQUIRE_KERNEL`` asks for it."""


def required() -> bool:
    return env_flag(REQUIRE_ENV)


class OperatorLibrary:
    """One library of custom operators and what this process knows of it.

    ``name`` names its cache directory and module; ``what`` names it in messages ("SimAM's fused CPU
    kernel"); ``fallback`` says what runs instead ("using the pure-Paddle path"). ``check``, when
    given, runs before the build and returns a version string or raises, saying why the library
    cannot work here. ``ld_flags`` may be a callable, evaluated at build time. Its operators run on the
    threads that ``threads.configure()`` sets, which :meth:`prepare` calls.
    """

    def __init__(self, name: str, sources: tuple[Path, ...], headers: tuple[Path, ...], ops: tuple[str, ...],
                 what: str, fallback: str, cxx_flags: list[str], ld_flags: list[str] | Callable[[], list[str]],
                 include_paths: tuple[Path, ...] = (), check: Callable[[], str] | None = None):
        self.name, self.sources, self.headers, self.ops = name, sources, headers, ops
        self.what, self.fallback, self.cxx_flags, self._ld_flags = what, fallback, cxx_flags, ld_flags
        self.include_paths, self.check = include_paths, check
        self.lock = threading.Lock()
        self.tried = False
        self.module: ModuleType | None = None
        self.error: str | None = None
        self.version: str | None = None

    def fresh(self) -> OperatorLibrary:
        """The same library as a process that has not prepared it yet sees it (for tests)."""
        return OperatorLibrary(self.name, self.sources, self.headers, self.ops, self.what, self.fallback,
                               self.cxx_flags, self._ld_flags, self.include_paths, self.check)

    def ld_flags(self) -> list[str]:
        return list(self._ld_flags() if callable(self._ld_flags) else self._ld_flags)

    def cache_dir(self) -> Path:
        return operator_cache_dir(self.name, self.sources + self.headers, self.cxx_flags + self.ld_flags())

    def build_and_load(self) -> ModuleType:
        """Compile (or find in the cache) and load the operators; raises on any failure."""
        return build_operators(self.cache_dir(), f"simam_paddle_{self.name}", self.sources, self.ops,
                               self.cxx_flags, self.ld_flags(), self.include_paths, self.what)

    def prepare(self) -> bool:
        """Check, build or load the library once per process; True when its operators can be used.

        Unavailable: False (logged once), or ``KernelUnavailable`` when ``$SIMAM_PADDLE_REQUIRE_KERNEL``
        is set. An invalid ``$SIMAM_PADDLE_NUM_THREADS`` is a ValueError naming the variable.
        """
        threads.configure()
        with self.lock:
            if not self.tried:
                try:
                    if self.check is not None:
                        self.version = self.check()
                    if not self.is_built() and (why := missing_compiler()):
                        raise RuntimeError(why)  # before Paddle's builder, which fails with pages of tracebacks
                    self.module = self.build_and_load()
                except Exception as exc:
                    self.error = str(exc).strip() or type(exc).__name__
                    self._report_fallback()
                self.tried = True  # not reached on Ctrl-C: the next call tries again
        if self.module is None and required():
            raise KernelUnavailable(f"{REQUIRE_ENV} is set, but {self.what} is unavailable: {self.error}")
        return self.module is not None

    def is_built(self) -> bool:
        """Whether the compiled library is in the cache (it then loads without a compiler)."""
        name = f"simam_paddle_{self.name}"
        return (self.cache_dir() / name / f"{name}.so").is_file()

    def _report_fallback(self) -> None:
        """One warning line naming the fallback and the reason, the first time a reason is met for this
        cache; the same reason again (each later start of a machine without a compiler, say) is
        logged at DEBUG level only, and ``status()`` and a run's history still record it."""
        reason = self.error.splitlines()[0]
        told = self.cache_dir() / "unavailable.txt"
        try:
            repeated = told.is_file() and told.read_text() == reason
            if not repeated:
                told.parent.mkdir(parents=True, exist_ok=True)
                told.write_text(reason)
        except OSError:
            repeated = False
        logger.log(logging.DEBUG if repeated else logging.WARNING, "%s is unavailable, %s (%s)", self.what,
                   self.fallback, reason)
        logger.debug("%s: build output:\n%s", self.what, self.error)

    def status(self) -> dict:
        """What this process has of the library, the same keys for every library: {"available": bool,
        "version": the version its check reported (oneDNN's "X.Y.Z") or None, "threads": the threads its
        operators run on (``threads.running()``), "error": why it is unavailable, or None}."""
        return {"available": self.module is not None, "version": self.version, "threads": threads.running(),
                "error": self.error}

    def file(self) -> Path:
        """The compiled library (built now if need be), for programs and tests that open it themselves."""
        self.loaded()
        name = f"simam_paddle_{self.name}"
        return self.cache_dir() / name / f"{name}.so"

    def loaded(self) -> ModuleType:
        """The operators' module, built or loaded now if need be; raises when the library is unavailable."""
        if self.module is None and not self.prepare():
            raise RuntimeError(f"{self.what} is unavailable: {self.error}")
        return self.module
