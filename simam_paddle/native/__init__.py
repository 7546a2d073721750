"""The package's native operators, one wing: how a C++ operator library is built, loaded, reported,
replaced by its pure-Paddle fallback, or required.

Three libraries use it, each an :class:`OperatorLibrary` declared beside the Python code that calls
it: SimAM's fused CPU kernel (``simam_paddle.layers.simam_kernel``), the SimAM operator of exported
models (``simam_paddle.layers.simam_deploy``) and the oneDNN convolutions
(``simam_paddle.fastconv.kernel``). Each offers the same face:

    prepare()    build (first use, cached per user) or load the library once per process; True when usable
    status()     {"available": bool, "version": str | None, "threads": int, "error": str | None}
    file()       the compiled library, for programs that load it themselves

- ``library.py``: :class:`OperatorLibrary`, the build cache, ``$SIMAM_PADDLE_REQUIRE_KERNEL``
  (:data:`REQUIRE_ENV`: an unavailable library is then :class:`KernelUnavailable`, not a fallback).
- ``threads.py``: one OpenMP runtime and one thread count for Paddle's CPU operators and these
  libraries (``$SIMAM_PADDLE_NUM_THREADS``; an unusable value is a :class:`SettingError`).
- ``onednn.py``: Paddle's oneDNN library, checked against the vendored headers that the operators
  using it compile against: ``third_party/onednn/`` (oneDNN 3.6.1, Apache License 2.0; its README
  says where they come from).

Part of the SimAM library: imports nothing of the experiment.
"""

from . import onednn, threads
from .library import REQUIRE_ENV, KernelUnavailable, OperatorLibrary, required
from .threads import SettingError

__all__ = ["KernelUnavailable", "OperatorLibrary", "REQUIRE_ENV", "SettingError", "onednn", "required", "threads"]
