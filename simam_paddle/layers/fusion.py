"""SimAM -> ReLU (-> max-pool) run as one kernel call inside a ``Sequential``.

AlexNet-SimAM follows each convolution with SimAM, a ReLU and (three times) a max-pool. Run as
three operators, a training step keeps two full-size tensors per block: x for SimAM's backward and
relu(y) for the ReLU's and the pool's. The fused kernel (``csrc/simam_relu_pool_op.cc``) keeps only x
and recomputes y in its backward, so AlexNet-SimAM keeps no more than AlexNet where a pool follows,
and one tensor more per block where none does. Outputs and gradients are those of the three layers
run one by one, to the bit (``tests/test_fusion.py``).

:func:`run_sequential` runs the layers of a Sequential in order and takes such a run as one call
where it can: the SimAM would use its kernel (CPU float32/float64, dynamic graph; see
:func:`simam.resolve_backend`), no layer of the run has hooks (``simam_paddle.visualize`` reads SimAM
inputs through a pre-hook), autocast is off, and the pool is one the kernel computes: a square
window, equal strides, no padding, floor mode, NCHW, no mask. Anything else runs layer by layer,
so the result never depends on whether the fused path was taken.

In a static graph recorded inside ``simam.deploy_operator`` (an export), the same runs become one
``simam_deploy`` operator (see ``simam_deploy.py``) under the same conditions.
"""

from __future__ import annotations

import paddle
from paddle import nn

from . import simam_deploy, simam_kernel
from .simam import SimAM, resolve_backend


def _has_hooks(layer: nn.Layer) -> bool:
    return bool(layer._forward_pre_hooks or layer._forward_post_hooks)


def _square(value) -> int | None:
    """The one size of an int or a pair of equal ints, else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return value[0]
    return None


def pool_window(pool: nn.Layer) -> tuple[int, int] | None:
    """(size, stride) of a max-pool the fused kernel computes exactly, else None."""
    if type(pool) is not nn.MaxPool2D or pool.return_mask or pool.ceil_mode or pool.data_format != "NCHW":
        return None
    size = _square(pool.ksize)
    stride = _square(pool.stride if pool.stride is not None else pool.ksize)
    if size is None or stride is None or _square(pool.padding) != 0 or size < 1 or stride < 1:
        return None
    return size, stride


# The paths that take a fusable run as one call: the kernel (dynamic graph), the deployment operator (exports).
FUSED_BACKENDS = ("kernel", "deploy")


def fusable_run(layers: list[nn.Layer], start: int, x: paddle.Tensor) -> tuple[int, int, int]:
    """(number of layers, pool size, pool stride) of the fusable run at ``start``; (0, 0, 0) if none.

    Pool size 0 means a SimAM and a ReLU without a pool.
    """
    if start + 1 >= len(layers):
        return 0, 0, 0
    attn, relu = layers[start], layers[start + 1]
    if type(attn) is not SimAM or type(relu) is not nn.ReLU or _has_hooks(attn) or _has_hooks(relu):
        return 0, 0, 0
    if x.ndim != 4 or paddle.amp.is_autocast_enabled() or resolve_backend(x, attn.backend) not in FUSED_BACKENDS:
        return 0, 0, 0
    if start + 2 < len(layers) and not _has_hooks(layers[start + 2]):
        window = pool_window(layers[start + 2])
        if window is not None and window[0] <= min(x.shape[2], x.shape[3]):
            return 3, *window
    return 2, 0, 1


@paddle.jit.not_to_static  # plain Python while a static graph is recorded: its choices are made on known shapes
def run_sequential(sequential: nn.Sequential, x: paddle.Tensor) -> paddle.Tensor:
    """``sequential(x)``, with each fusable SimAM -> ReLU (-> max-pool) run as one kernel call (one
    ``simam_deploy`` operator in an export)."""
    layers = list(sequential.children())
    i = 0
    while i < len(layers):
        count, pool_size, pool_stride = fusable_run(layers, i, x)
        if count and paddle.in_dynamic_mode():
            x = simam_kernel.simam_relu_maxpool(x, layers[i].e_lambda, pool_size, pool_stride)
            i += count
        elif count:
            x = simam_deploy.simam_deploy(x, layers[i].e_lambda, True, pool_size, pool_stride)
            i += count
        else:
            x = layers[i](x)
            i += 1
    return x
