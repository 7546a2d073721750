"""Paddle's oneDNN library and the oneDNN headers this package's operators compile against.

Operators that call oneDNN (``simam_paddle.fastconv``) or read its memory descriptors
(``simam_deploy.py``) link against the ``libdnnl.so.3`` that Paddle itself ships (one copy of the
library in the process) and compile against the headers of oneDNN 3.6 in ``third_party/onednn/`` (copied
from the ``onednn-devel`` 2025.0.1 package, with ``dnnl_config.h`` set to Paddle's build: OpenMP CPU
runtime, no GPU; see its README). :func:`check_library` is their ``check`` before a build: the
library's ``dnnl_version()`` must report the headers' major.minor version and the OpenMP runtime;
otherwise, or where Paddle ships no such library (another OS, a build without oneDNN), they are
unavailable.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import paddle

INCLUDE = Path(__file__).resolve().parent / "third_party" / "onednn"
# dnnl.hpp is included as "oneapi/dnnl/dnnl.hpp" by this package, as "dnnl.hpp" by Paddle's headers
INCLUDE_PATHS = (INCLUDE, INCLUDE / "oneapi" / "dnnl")
HEADERS = tuple(sorted(INCLUDE.rglob("*.h*")))
DNNL_RUNTIME_OMP = 2


def paddle_libs() -> Path:
    """The folder of the native libraries Paddle ships."""
    return Path(paddle.__file__).resolve().parent / "libs"


def library_path() -> Path:
    """The oneDNN library Paddle ships (it may be absent)."""
    return paddle_libs() / "libdnnl.so.3"


def header_version() -> tuple[int, int, int]:
    """(major, minor, patch) of the headers in third_party/onednn."""
    text = (INCLUDE / "oneapi" / "dnnl" / "dnnl_version.h").read_text()
    return tuple(int(re.search(rf"#define DNNL_VERSION_{part} (\d+)", text).group(1))
                 for part in ("MAJOR", "MINOR", "PATCH"))


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


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
