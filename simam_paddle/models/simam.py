"""SimAM: a simple, parameter-free attention module (Yang et al., ICML 2021).

Paper: "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
http://proceedings.mlr.press/v139/yang21o.html

For x of shape [B, C, H, W], per sample and channel, over the H*W positions (n = H*W - 1):

    mu  = mean(x)
    var = sum((x - mu)^2) / n                         (unbiased variance)
    e   = (x - mu)^2 / (4 * (var + lambda)) + 0.5     (inverse of the minimal energy)
    y   = sigmoid(e) * x

The module has no parameters. Its weight differs per channel and per position (3-D attention).
"""

from __future__ import annotations

import paddle
from paddle import nn

FLOAT_DTYPES = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)
# Low-precision inputs are promoted for the statistics: a sum of squares over H*W positions
# overflows float16 quickly (and loses precision in bfloat16).
_STATS_DTYPE = {paddle.float16: paddle.float32, paddle.bfloat16: paddle.float32}


def check_input(x: paddle.Tensor) -> None:
    """Raise a ValueError/TypeError naming the problem when x is not a 4-D float tensor."""
    if x.ndim != 4:
        raise ValueError(f"SimAM expects a 4-D [B, C, H, W] tensor, got shape {list(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"SimAM expects a floating-point tensor (float16, bfloat16, float32, float64), got {x.dtype}"
        )


def simam(x: paddle.Tensor, e_lambda: float = 1e-4) -> paddle.Tensor:
    """Apply SimAM to x ([B, C, H, W], any float dtype); returns a tensor of x's shape and dtype.

    With H*W == 1 the formula reads 0/0 (the official code returns NaN). The limit used here: a single
    position has zero deviation from its own mean, so its variance is taken as 0, e = 0.5 and
    y = sigmoid(0.5) * x, the weight every position gets when it does not stand out from its channel.
    """
    check_input(x)
    h, w = x.shape[2], x.shape[3]
    n = max(h * w - 1, 1)  # H*W == 1: the sum of squares is exactly 0, so var = 0 (see docstring)
    stats_dtype = _STATS_DTYPE.get(x.dtype)
    xs = x.astype(stats_dtype) if stats_dtype is not None else x
    d2 = (xs - xs.mean(axis=[2, 3], keepdim=True)).square()
    var = d2.sum(axis=[2, 3], keepdim=True) / n
    e = d2 / (4 * (var + e_lambda)) + 0.5
    y = xs * paddle.nn.functional.sigmoid(e)
    return y.astype(x.dtype) if stats_dtype is not None else y


class SimAM(nn.Layer):
    """SimAM attention layer: ``SimAM(channels=None, e_lambda=1e-4)``.

    ``channels`` is accepted and ignored, so that every attention layer can be built as
    ``layer(channels, **kwargs)``. ``e_lambda`` is the lambda of the formula: 1e-4 is the official
    default, the notebook's CIFAR-10 runs use 1e-5, the official ImageNet runs 0.1.
    """

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4):
        super().__init__()
        if not e_lambda > 0:
            raise ValueError(f"SimAM e_lambda must be > 0, got {e_lambda}")
        self.e_lambda = float(e_lambda)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return simam(x, self.e_lambda)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda:g}"
