"""simam_paddle: the SimAM attention module for PaddlePaddle, and the AlexNet vs AlexNet-SimAM
experiment on CIFAR-10 built on it (see README.md).

``simam_paddle.layers`` is the library (SimAM, its kernel, fusion, insertion, the attention factory);
``simam_paddle.models`` the experiment's models by name; the rest is the experiment: config, data,
losses, training, the run directory and the tools around a run.

The names below are imported on first use, so that ``import simam_paddle`` (and a tool started
with ``python -m simam_paddle.<tool>``) loads Paddle only when it is needed.
"""

from __future__ import annotations

import importlib
import os
import warnings

__version__ = "0.2.0"

VERBOSE_ENV = "SIMAM_PADDLE_VERBOSE"  # also read by simam_paddle.native.library, which stands alone


def verbose() -> bool:
    """Whether ``$SIMAM_PADDLE_VERBOSE`` asks to see Paddle's notices and the C++ builds' output."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


# Paddle's import warns "No ccache found" (a note for people compiling C++ operators with Paddle's own
# builder) in every process: filtered, narrowly, before anything of this package loads Paddle.
if not verbose():
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

_LAZY = {
    "SimAM": "layers", "simam": "layers", "add_simam": "layers", "get_attn": "layers", "create_attn": "layers",
    "build_model": "models", "list_models": "models", "LabelSmoothingCrossEntropy": "losses",
}
__all__ = [*_LAZY, "__version__", "verbose"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'simam_paddle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
