"""The convolution: oneDNN where it applies, Paddle's own ``conv2d`` everywhere else.

:class:`Conv2D` is ``paddle.nn.Conv2D`` (same constructor, parameters, state-dict keys, hooks) whose
forward runs the oneDNN operators (``kernel.py``) when :func:`applies` says so, and
``paddle.nn.Conv2D.forward`` otherwise. They apply to a float32 4-D CPU input and float32
parameters in the dynamic graph, with autocast off, for a convolution with ``groups == 1``, zero
padding given as numbers (not "SAME"/"VALID"), NCHW, when the operators built on this machine.
Anything else, static graphs (``paddle.jit.to_static``, ``paddle.jit.save``, the ONNX export)
included, runs Paddle's convolution, so an exported model holds Paddle's ``conv2d``.

Forward and backward are oneDNN's convolution primitives (one custom operator and its gradient);
the input gradient is computed only when the input needed one when the forward ran (not for the
images entering conv1), the weight and bias gradients only when a parameter is trainable.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle
from paddle import nn

from . import kernel


@dataclass(frozen=True)
class Geometry:
    """What the operators take besides the tensors: strides [h, w], paddings [top, bottom, left, right], dilations."""

    strides: tuple[int, int]
    paddings: tuple[int, int, int, int]
    dilations: tuple[int, int]


def geometry(layer: nn.Conv2D) -> Geometry | None:
    """The layer's convolution in the operators' terms, or None when they do not compute it."""
    if layer._groups != 1 or layer._data_format != "NCHW" or layer._padding_mode != "zeros":
        return None
    if getattr(layer, "_padding_algorithm", "EXPLICIT") != "EXPLICIT":
        return None
    padding = [int(p) for p in layer._updated_padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    if len(padding) != 4 or len(layer._stride) != 2 or len(layer._dilation) != 2:
        return None
    return Geometry(tuple(int(s) for s in layer._stride), tuple(padding), tuple(int(d) for d in layer._dilation))


def applies(x: paddle.Tensor, layer: nn.Conv2D) -> bool:
    """Whether the oneDNN operators compute ``layer(x)`` here (see the module docstring)."""
    if not paddle.in_dynamic_mode() or paddle.amp.is_autocast_enabled():
        return False
    if x.ndim != 4 or not x.place.is_cpu_place() or x.dtype != paddle.float32:
        return False
    params = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    if any(p.dtype != paddle.float32 or not p.place.is_cpu_place() for p in params):
        return False
    return layer.geometry is not None and kernel.prepare()


_ZERO_BIAS: dict[int, paddle.Tensor] = {}


def _zero_bias(channels: int) -> paddle.Tensor:
    """A constant zero bias for layers without one (the operator always adds a bias)."""
    if channels not in _ZERO_BIAS:
        _ZERO_BIAS[channels] = paddle.zeros([channels], dtype=paddle.float32)
    return _ZERO_BIAS[channels]


def onednn_conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None, geo: Geometry,
                  bf16: bool = False) -> paddle.Tensor:
    """conv2d(x, weight) + bias by oneDNN (the caller has checked :func:`applies`); with ``bf16``, the
    convolution reads x, weight (and, backward, the output gradient) rounded to bfloat16 and
    accumulates and writes float32."""
    bias = _zero_bias(weight.shape[0]) if bias is None else bias
    need_weight_grad = not weight.stop_gradient or not bias.stop_gradient
    return kernel.ops().fastconv(x, weight, bias, list(geo.strides), list(geo.paddings), list(geo.dilations),
                                 not x.stop_gradient, need_weight_grad, bf16)


class Conv2D(nn.Conv2D):
    """``paddle.nn.Conv2D`` computed by oneDNN where :func:`applies`, else by Paddle (same numbers to float rounding).

    ``bf16 = True`` (see :func:`use_bfloat16`) makes oneDNN compute it from bfloat16 inputs, the
    parameters, their gradients and the output staying float32.
    """

    bf16 = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.geometry = geometry(self)
        if self.geometry is not None and paddle.get_device().startswith("cpu"):
            kernel.prepare()  # build now, never inside a timed step

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if applies(x, self):
            return onednn_conv2d(x, self.weight, self.bias, self.geometry, self.bf16)
        return super().forward(x)
