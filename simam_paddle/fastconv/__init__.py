"""Fast CPU convolutions for Paddle's dynamic graph: oneDNN's primitives behind ``paddle.nn.Conv2D``.

Paddle 3.x computes a dynamic-graph CPU convolution with its own im2col + GEMM kernels, although it
ships oneDNN. ``simam_paddle.fastconv.Conv2D`` is a drop-in ``nn.Conv2D`` whose
forward and backward call oneDNN's convolution primitives (C++ custom operators built on first
use, ``kernel.py``) where they apply, and Paddle's own convolution everywhere else (other devices
and dtypes, static graphs and exports, a failed build). Outputs and gradients agree with Paddle's
to float rounding (``tests/test_fastconv.py``). Imports nothing of the experiment.

    from simam_paddle.fastconv import Conv2D, implementation
    conv = Conv2D(48, 128, kernel_size=5, padding=2)   # what nn.Conv2D takes
    implementation(model)   # {"implementation": "onednn" | "paddle", ...}: what a model's convolutions run
    use_bfloat16(model)     # oneDNN's bf16 convolutions, on CPUs with bf16 instructions
"""

from __future__ import annotations

import paddle
from paddle import nn

from . import kernel
from .conv import Conv2D, applies


def implementation(model: nn.Layer) -> dict:
    """Which convolution the model's ``Conv2D`` layers run for float32 CPU inputs in the dynamic graph:
    "onednn" (with the oneDNN version and threads), "paddle" (with the reason, if the operators are
    unavailable), or "none" for a model without convolutions."""
    convs = [layer for layer in model.sublayers(include_self=True) if isinstance(layer, nn.Conv2D)]
    if not convs:
        return {"implementation": "none"}
    probe = paddle.zeros([1, convs[0]._in_channels, 8, 8], dtype=convs[0].weight.dtype)
    fast = [layer for layer in convs if isinstance(layer, Conv2D) and applies(probe, layer)]
    status = kernel.status()
    if not fast:
        return {"implementation": "paddle", "error": status["error"]}
    return {"implementation": "onednn", "layers": f"{len(fast)}/{len(convs)}", "onednn": status["version"],
            "threads": status["threads"], "bf16": any(layer.bf16 for layer in fast)}


def use_bfloat16(model: nn.Layer, enable: bool = True) -> int:
    """Compute the model's oneDNN convolutions from bfloat16 inputs (``enable=False``: float32 again);
    parameters, gradients and outputs stay float32, so an optimizer keeps float32 master weights.
    Returns how many layers it set. A CPU without bf16 instructions (AVX512-BF16 or AMX), where
    oneDNN would emulate them slowly, is a ValueError that says so."""
    if enable and not kernel.cpu_has_bf16():
        raise ValueError("bfloat16 convolutions need a CPU with bf16 instructions (AVX512-BF16 or AMX-BF16); "
                         "this CPU has neither: train in float32")
    layers = [layer for layer in model.sublayers(include_self=True) if isinstance(layer, Conv2D)]
    for layer in layers:
        layer.bf16 = enable
    return len(layers)


__all__ = ["Conv2D", "applies", "implementation", "kernel", "use_bfloat16"]
