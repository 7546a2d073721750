"""SimAM: a simple, parameter-free attention module (Yang et al., ICML 2021).

Paper: "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
http://proceedings.mlr.press/v139/yang21o.html

For x of shape [B, C, H, W], per sample and channel, over the H*W positions (n = H*W - 1):

    mu  = mean(x)
    var = sum((x - mu)^2) / n                         (unbiased variance)
    e   = (x - mu)^2 / (4 * (var + lambda)) + 0.5     (inverse of the minimal energy)
    y   = sigmoid(e) * x

The module has no parameters. Its weight differs per channel and per position (3-D attention).

Four implementations of this one formula, equal to float rounding (tests/test_simam.py):

- ``"kernel"``: a fused C++ CPU operator (``csrc/simam_op.cc``, see ``simam_kernel.py``), for CPU
  float32/float64 tensors: about one pass over memory forward; its backward keeps only x and two
  numbers per channel.
- ``"paddle"``: a ``paddle.autograd.PyLayer`` of few Paddle operations with a hand-written
  backward that also keeps only x and the per-channel statistics; any device and float dtype.
- ``"plain"``: the formula in plain Paddle operations, differentiated by Paddle.
- ``"static"``: the formula in operations that deployment engines run in their own fast layouts:
  the two per-channel means (of x, then of the squared deviations: the variance stays two-pass) are
  global average pools, and the rest is element-wise. Static graphs (``paddle.jit.to_static``,
  ``paddle.jit.save``, hence every ONNX export and every ``model.json``) use it outside
  :func:`deploy_operator`, whatever the backend asked for: paddle2onnx
  converts it (it aborts on PyLayer and on custom operators), and Paddle Inference's oneDNN keeps
  its every operation on a feature map in oneDNN's own memory format, where a mean over H and W, or
  ``square`` and ``divide``, fall out of oneDNN and force layout reorders of the feature map around
  each SimAM (BENCHMARKS.md, "Deployment", measures both).
- ``"deploy"``: inside :func:`deploy_operator`, static graphs record SimAM as one operator,
  ``simam_deploy`` (``simam_deploy.py``), which Paddle Inference runs in oneDNN's own memory format;
  ``simam_paddle.export`` writes every Paddle export both ways.

A SimAM followed by a ReLU (and a max-pool) in a Sequential run by ``fusion.run_sequential``, as
AlexNet-SimAM runs its features, becomes one kernel call that keeps only x for the backward pass
(see ``fusion.py``).

``backend="auto"`` (the default) takes ``$SIMAM_PADDLE_BACKEND`` when set, else the kernel where it
builds and the tensor is a CPU float32/float64 one, else ``"paddle"``. The kernel and PyLayer paths
give first-order gradients only; ``"plain"`` supports higher orders. ``"static"`` can be asked for in
the dynamic graph too, to compute exactly what an export computes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from ..native import SettingError
from . import simam_deploy, simam_kernel

FLOAT_DTYPES = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)
# Low-precision inputs are promoted for the statistics: a sum of squares over H*W positions
# overflows float16 quickly (and loses precision in bfloat16).
_STATS_DTYPE = {paddle.float16: paddle.float32, paddle.bfloat16: paddle.float32}
KERNEL_DTYPES = (paddle.float32, paddle.float64)
BACKENDS = ("auto", "kernel", "paddle", "plain", "static")
BACKEND_ENV = "SIMAM_PADDLE_BACKEND"
# SimAM's default lambda: the official module's, the layer's, add_simam's and the config's (model.e_lambda).
# The official ImageNet runs used 0.1 (simam_paddle.models' records), the notebook's CIFAR-10 runs 1e-5.
E_LAMBDA = 1e-4
_DEPLOY_OPERATOR = contextvars.ContextVar("simam_deploy_operator", default=False)


@contextlib.contextmanager
def deploy_operator():
    """Within: static graphs (``paddle.jit.save``) record SimAM as the ``simam_deploy`` operator, and
    SimAM -> ReLU (-> max-pool) in a Sequential run by ``fusion.run_sequential`` as one such operator.
    Raises RuntimeError (or ``KernelUnavailable``) when the operator's library is unavailable."""
    if not simam_deploy.prepare():
        raise RuntimeError(f"the SimAM deployment operator is unavailable: {simam_deploy.status()['error']}")
    token = _DEPLOY_OPERATOR.set(True)
    try:
        yield
    finally:
        _DEPLOY_OPERATOR.reset(token)


def check_input(x: paddle.Tensor) -> None:
    """Raise a ValueError/TypeError naming the problem when x is not a 4-D float tensor."""
    if x.ndim != 4:
        raise ValueError(f"SimAM expects a 4-D [B, C, H, W] tensor, got shape {list(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"SimAM expects a floating-point tensor (float16, bfloat16, float32, float64), got {x.dtype}"
        )


def check_lambda(e_lambda: float) -> float:
    if not e_lambda > 0:
        raise ValueError(f"SimAM e_lambda must be > 0, got {e_lambda}")
    return float(e_lambda)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown SimAM backend {backend!r}; valid names: {', '.join(BACKENDS)}")
    return backend


def _kernel_supports(x: paddle.Tensor) -> bool:
    return x.dtype in KERNEL_DTYPES and x.place.is_cpu_place()


def requested_backend(backend: str = "auto") -> str:
    """The backend asked for: ``backend``, or for "auto" ``$SIMAM_PADDLE_BACKEND`` when it is set."""
    if check_backend(backend) == "auto":
        chosen = os.environ.get(BACKEND_ENV, "auto")
        if chosen not in BACKENDS:
            raise SettingError(f"${BACKEND_ENV}={chosen!r} is not a SimAM backend; valid names: {', '.join(BACKENDS)}, "
                               "or unset it")
        return chosen
    return backend


def resolve_backend(x: paddle.Tensor, backend: str = "auto") -> str:
    """The implementation ``simam(x, backend=backend)`` runs: "kernel", "paddle", "plain", "static" or "deploy"."""
    if not paddle.in_dynamic_mode():
        return "deploy" if _DEPLOY_OPERATOR.get() else "static"
    backend = requested_backend(backend)
    if backend == "auto":
        return "kernel" if _kernel_supports(x) and simam_kernel.prepare() else "paddle"
    if backend == "kernel" and not _kernel_supports(x):
        raise ValueError(
            f"SimAM backend 'kernel' runs on CPU float32/float64 tensors, got {x.dtype} on {x.place}"
        )
    return backend


def _positions(x: paddle.Tensor, dtype) -> tuple:
    """N = H*W and n = max(N - 1, 1) (H*W == 1: the sum of squares is exactly 0, so var = 0).

    Python numbers when H and W are known; tensors in a static graph with dynamic H or W.
    """
    h, w = x.shape[2], x.shape[3]
    if isinstance(h, int) and isinstance(w, int) and h >= 0 and w >= 0:
        return h * w, max(h * w - 1, 1)
    shape = paddle.shape(x)
    hw = (shape[2] * shape[3]).astype(dtype)
    return hw, paddle.clip(hw - 1, min=1.0)


def _weight_plain(xs: paddle.Tensor, e_lambda: float) -> paddle.Tensor:
    _, n = _positions(xs, xs.dtype)
    d2 = (xs - xs.mean(axis=[2, 3], keepdim=True)).square()
    var = d2.sum(axis=[2, 3], keepdim=True) / n
    e = d2 / (4 * (var + e_lambda)) + 0.5
    return F.sigmoid(e)


@paddle.jit.not_to_static  # see simam()
def simam_weight(x: paddle.Tensor, e_lambda: float = E_LAMBDA) -> paddle.Tensor:
    """SimAM's weight sigmoid(e) of every activation of x [B, C, H, W] (``simam(x) == x * simam_weight(x)``),
    in x's dtype, computed as plain operations (float16/bfloat16: in float32); with H*W == 1, sigmoid(0.5)."""
    check_input(x)
    stats_dtype = _STATS_DTYPE.get(x.dtype)
    w = _weight_plain(x.astype(stats_dtype) if stats_dtype is not None else x, check_lambda(e_lambda))
    return w.astype(x.dtype) if stats_dtype is not None else w


def _simam_plain(x: paddle.Tensor, e_lambda: float) -> paddle.Tensor:
    """The formula as plain operations. Kept to ops paddle2onnx converts: no scalar / tensor."""
    stats_dtype = _STATS_DTYPE.get(x.dtype)
    xs = x.astype(stats_dtype) if stats_dtype is not None else x
    y = xs * _weight_plain(xs, e_lambda)
    return y.astype(x.dtype) if stats_dtype is not None else y


def _simam_static(x: paddle.Tensor, e_lambda: float) -> paddle.Tensor:
    """The formula for static graphs and exports (see the module docstring), to float rounding the
    same numbers as ``_simam_plain``.

    Every operation on a feature map is one that Paddle Inference runs in oneDNN (global average
    pooling, subtract, multiply, add with the sigmoid fused, multiply with the following ReLU fused;
    only the scale and reciprocal of the [N, C, 1, 1] statistics run outside it), and every one
    converts to ONNX (GlobalAveragePool, Sub, Mul, Reciprocal, Add, Sigmoid). The
    variance is the mean of the squared deviations from the mean, never E[x^2] - E[x]^2, which
    cancels in float32 when the mean is large against the spread. The forward pass is finite for any
    finite x; the gradient (taken only by static-graph training) sums x * d^2 terms and overflows in
    float32 once |x|^3 * H * W passes 3.4e38 (|x| of about 1e12 on a 16x16 map), where the other paths
    stay finite.
    """
    stats_dtype = _STATS_DTYPE.get(x.dtype)
    xs = x.astype(stats_dtype) if stats_dtype is not None else x
    big_n, n = _positions(x, xs.dtype)
    d = xs - F.adaptive_avg_pool2d(xs, 1)
    d2 = d * d
    mean_d2 = F.adaptive_avg_pool2d(d2, 1)
    if isinstance(n, int):
        var4 = paddle.scale(mean_d2, 4.0 * big_n / n, 4.0 * e_lambda)  # 4 (var + lambda), var = sum(d2) / n
    else:
        var4 = mean_d2 * (4.0 * big_n / n) + 4.0 * e_lambda
    # + 0.5 as a tensor, not a scalar: an add with a tensor takes the sigmoid into one oneDNN operation
    e = d2 * paddle.reciprocal(var4) + paddle.full([1], 0.5, xs.dtype)
    y = xs * F.sigmoid(e)
    return y.astype(x.dtype) if stats_dtype is not None else y


class _SimAMFunction(PyLayer):
    """SimAM with a hand-written backward that keeps x, mu and k = 1 / (4 (var + lambda)).

    With d = x - mu, s = sigmoid(e), a = g x s (1 - s), S1 = sum(a d), S2 = sum(a d^2):
        dL/dx = g s + 2k (a d - S1 / N) - (8 k^2 / n) S2 d
    computed over w = d k (so that a d^2 cannot overflow for large x) as
        dL/dx = g s + 2 a w - (8 sum(a w^2) / n) d - 2 sum(a w) / N.
    Work tensors are updated in place: on CPU a fresh full-size buffer costs about as much as a
    pass of arithmetic.
    """

    @staticmethod
    def forward(ctx, x, e_lambda):
        stats_dtype = _STATS_DTYPE.get(x.dtype)
        xs = x.astype(stats_dtype) if stats_dtype is not None else x
        _, n = _positions(x, xs.dtype)
        mu = xs.mean(axis=[2, 3], keepdim=True)
        t = (xs - mu).square_()
        k = 0.25 / (t.sum(axis=[2, 3], keepdim=True) / n + e_lambda)
        y = t.multiply_(k).scale_(1.0, 0.5).sigmoid_().multiply_(xs)
        ctx.save_for_backward(x, mu, k)
        return y.astype(x.dtype) if stats_dtype is not None else y

    @staticmethod
    def backward(ctx, grad):
        x, mu, k = ctx.saved_tensor()
        stats_dtype = _STATS_DTYPE.get(x.dtype)
        xs = x.astype(stats_dtype) if stats_dtype is not None else x
        g = grad.astype(stats_dtype) if stats_dtype is not None else grad
        big_n, n = _positions(x, xs.dtype)
        d = xs - mu
        w = d * k
        s = (d * w).scale_(1.0, 0.5).sigmoid_()
        gs = g * s
        aw = s.scale_(-1.0, 1.0).multiply_(gs).multiply_(xs).multiply_(w)  # a w, a = g x s (1 - s)
        s1 = aw.sum(axis=[2, 3], keepdim=True)
        s2 = w.multiply_(aw).sum(axis=[2, 3], keepdim=True)
        dx = gs.add_(aw.scale_(2.0)).subtract_(d.multiply_(8.0 * s2 / n)).subtract_(2.0 * s1 / big_n)
        return dx.astype(x.dtype) if stats_dtype is not None else dx


# not_to_static: dy2static would re-create these functions from their source in a module of its own,
# where the default E_LAMBDA is not defined; their bodies branch on Python values only, so a static
# graph records the same operators when they run as they are.
@paddle.jit.not_to_static
def simam(x: paddle.Tensor, e_lambda: float = E_LAMBDA, backend: str = "auto") -> paddle.Tensor:
    """Apply SimAM to x ([B, C, H, W], any float dtype); returns a tensor of x's shape and dtype.

    With H*W == 1 the formula reads 0/0 (the official code returns NaN). The limit used here: a single
    position has zero deviation from its own mean, so its variance is taken as 0, e = 0.5 and
    y = sigmoid(0.5) * x, the weight every position gets when it does not stand out from its channel.

    float16/bfloat16 inputs get their statistics in float32 and the result in their own dtype.
    ``backend`` is "auto", "kernel", "paddle", "plain" or "static" (see the module docstring).
    """
    check_input(x)
    e_lambda = check_lambda(e_lambda)
    path = resolve_backend(x, backend)
    if path == "kernel":
        return simam_kernel.simam_fused(x, e_lambda)
    if path == "paddle":
        return _SimAMFunction.apply(x, e_lambda)
    if path == "static":
        return _simam_static(x, e_lambda)
    if path == "deploy":
        return simam_deploy.simam_deploy(x, e_lambda)
    return _simam_plain(x, e_lambda)


class SimAM(nn.Layer):
    """SimAM attention layer: ``SimAM(channels=None, e_lambda=1e-4, backend="auto")``.

    ``channels`` is accepted and ignored, so that every attention layer can be built as
    ``layer(channels, **kwargs)``. ``e_lambda`` is the lambda of the formula (default ``E_LAMBDA``,
    the official module's 1e-4; the notebook's CIFAR-10 runs use 1e-5, the official ImageNet runs 0.1). ``backend``
    picks the implementation (see the module docstring). Built on a CPU device with a backend that
    may use the compiled kernel, the layer builds or loads it now, so that the one-off build does
    not land inside the first (timed) training step.
    """

    def __init__(self, channels: int | None = None, e_lambda: float = E_LAMBDA, backend: str = "auto"):
        super().__init__()
        self.e_lambda = check_lambda(e_lambda)
        self.backend = check_backend(backend)
        requested = requested_backend(backend)
        if requested == "kernel" and not simam_kernel.prepare():
            raise RuntimeError(f"SimAM backend 'kernel' asked for, but unavailable: {simam_kernel.load_error()}")
        if requested == "auto" and paddle.get_device().startswith("cpu"):
            simam_kernel.prepare()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return simam(x, self.e_lambda, self.backend)

    def extra_repr(self) -> str:
        backend = "" if self.backend == "auto" else f", backend={self.backend!r}"
        return f"e_lambda={self.e_lambda:g}{backend}"
