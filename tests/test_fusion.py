"""The fused SimAM -> ReLU (-> max-pool) kernel against the three layers run one by one.

References: in float64, the plain formula ("plain" backend, Paddle operations) followed by Paddle's
own F.relu and F.max_pool2d, differentiated by Paddle; in float32, the SimAM kernel followed by the
same Paddle layers, which must agree to the bit (the fused kernel computes y with the same code).
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from simam_paddle import SimAM, build_model
from simam_paddle.layers import fusion, simam_kernel

# (shape, pool size, pool stride); pool size 0: SimAM and ReLU only
CASES = [
    ([2, 3, 32, 32], 3, 2),  # AlexNet's conv1 block
    ([2, 4, 15, 15], 3, 2),  # conv2
    ([2, 5, 7, 7], 0, 1),  # conv3, conv4
    ([2, 5, 7, 7], 3, 2),  # conv5
    ([3, 2, 5, 6], 2, 2),  # odd sizes, a window that leaves a row out
    ([1, 2, 3, 3], 3, 1),  # one window over the whole map
    ([2, 3, 1, 1], 0, 1),  # one position: e = 0.5
    ([2, 3, 1, 9], 0, 1),
]


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not (paddle.get_device().startswith("cpu") and simam_kernel.prepare()):
        pytest.skip(f"SimAM kernel unavailable on this machine: {simam_kernel.load_error()}")


def layers_one_by_one(x: paddle.Tensor, lam: float, pool_size: int, pool_stride: int, backend: str):
    y = F.relu(SimAM(e_lambda=lam, backend=backend)(x))
    return F.max_pool2d(y, pool_size, pool_stride) if pool_size else y


def forward_and_grad(fn, x: np.ndarray, g_seed: int = 0):
    xt = paddle.to_tensor(x, stop_gradient=False)
    out = fn(xt)
    g = np.random.default_rng(g_seed).standard_normal(out.shape).astype(x.dtype)
    (dx,) = paddle.grad(out, xt, paddle.to_tensor(g))
    return out.numpy(), dx.numpy()


def inputs(shape, dtype, seed=0, constant_channel=False):
    x = np.random.default_rng(seed).standard_normal(shape) * 2 + 0.3
    if constant_channel:
        x[0, 0] = 1.5  # positive and constant: every pool window is a tie
        x[-1, -1] = -0.7  # negative and constant: the ReLU passes nothing
    return x.astype(dtype)


@pytest.mark.parametrize("shape, pool_size, pool_stride", CASES)
@pytest.mark.parametrize("lam", [1e-5, 0.1])
def test_float64_matches_plain_formula_relu_and_pool(shape, pool_size, pool_stride, lam):
    x = inputs(shape, "float64", constant_channel=True)
    fused = forward_and_grad(lambda t: simam_kernel.simam_relu_maxpool(t, lam, pool_size, pool_stride), x)
    reference = forward_and_grad(lambda t: layers_one_by_one(t, lam, pool_size, pool_stride, "plain"), x)
    for got, want, what in zip(fused, reference, ("output", "gradient")):
        assert got.shape == want.shape, what
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("shape, pool_size, pool_stride", CASES)
def test_float32_equals_the_kernel_relu_and_pool_to_the_bit(shape, pool_size, pool_stride):
    x = inputs(shape, "float32", seed=1, constant_channel=True)
    fused = forward_and_grad(lambda t: simam_kernel.simam_relu_maxpool(t, 1e-5, pool_size, pool_stride), x)
    reference = forward_and_grad(lambda t: layers_one_by_one(t, 1e-5, pool_size, pool_stride, "kernel"), x)
    for got, want, what in zip(fused, reference, ("output", "gradient")):
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_tied_window_gives_its_gradient_to_the_first_maximum():
    x = np.full([1, 1, 3, 3], 2.0)  # constant: y is the same everywhere
    _, dx_fused = forward_and_grad(lambda t: simam_kernel.simam_relu_maxpool(t, 1e-4, 3, 1), x)
    # by hand: the gradient of the one output reaches y[0, 0] only, times s = sigmoid(0.5) there;
    # the paths through the mean and the variance add 2k(a d - S1/N) - 8k^2 S2 d / n with d = 0
    # everywhere, which is -2k S1/N with S1 = sum(a d) = 0: nothing.
    g = np.random.default_rng(0).standard_normal([1, 1, 1, 1])
    expected = np.zeros([1, 1, 3, 3])
    expected[0, 0, 0, 0] = g[0, 0, 0, 0] / (1 + np.exp(-0.5))
    np.testing.assert_allclose(dx_fused, expected, rtol=1e-12, atol=1e-15)


def test_non_finite_channel_gives_nan_outputs_there_only():
    x = inputs([1, 3, 7, 7], "float32")
    x[0, 1, 2, 2] = np.nan
    out = simam_kernel.simam_relu_maxpool(paddle.to_tensor(x), 1e-5, 3, 2).numpy()
    assert np.isnan(out[0, 1]).all()
    assert np.isfinite(out[0, [0, 2]]).all()


def test_window_larger_than_the_map_is_an_error_naming_both():
    with pytest.raises(Exception, match="3x3 pool window is larger than the 2x2 map"):
        simam_kernel.simam_relu_maxpool(paddle.randn([1, 1, 2, 2]), 1e-5, 3, 2)


def fused_calls(monkeypatch) -> list[int]:
    """Records the pool size of every fused kernel call."""
    calls = []
    original = simam_kernel.simam_relu_maxpool

    def recording(x, e_lambda, pool_size=0, pool_stride=1):
        calls.append(pool_size)
        return original(x, e_lambda, pool_size, pool_stride)

    monkeypatch.setattr(simam_kernel, "simam_relu_maxpool", recording)
    return calls


@pytest.mark.parametrize("training", [True, False])
def test_alexnet_simam_fused_equals_layer_by_layer(monkeypatch, training):
    paddle.seed(0)
    model = build_model("alexnet_simam", e_lambda=1e-5)
    model.train() if training else model.eval()
    x = paddle.randn([2, 3, 128, 128])
    results = []
    for fuse in (True, False):
        model.fuse = fuse
        calls = fused_calls(monkeypatch)
        paddle.seed(1)  # the same dropout masks
        out = model(x)
        out.sum().backward()
        grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
        model.clear_gradients()
        results.append((out.numpy(), grads))
        assert calls == ([3, 3, 0, 0, 3] if fuse else []), f"fuse={fuse}: kernel calls {calls}"
    (out_fused, grads_fused), (out_plain, grads_plain) = results
    np.testing.assert_array_equal(out_fused, out_plain)
    for name in grads_plain:
        np.testing.assert_array_equal(grads_fused[name], grads_plain[name], err_msg=name)


def test_hooks_backends_and_autocast_keep_the_layers_apart(monkeypatch):
    model = build_model("alexnet_simam", e_lambda=1e-5)
    model.eval()
    x = paddle.randn([1, 3, 128, 128])
    calls = fused_calls(monkeypatch)
    handle = model.features[1].register_forward_pre_hook(lambda layer, inputs: None)
    model(x)
    handle.remove()
    assert calls == [3, 0, 0, 3], "the hooked first SimAM runs on its own, blocks 2-5 stay fused"
    calls.clear()
    # Paddle's autocast only takes effect on accelerators: pretend it is on
    monkeypatch.setattr(paddle.amp, "is_autocast_enabled", lambda *args: True)
    model(x)
    assert calls == [], "autocast leaves the layers to Paddle's AMP lists"
    monkeypatch.undo()
    calls = fused_calls(monkeypatch)
    paddle_backend = build_model("alexnet_simam", backend="paddle")
    paddle_backend.eval()
    paddle_backend(x)
    assert calls == [], "only the kernel backend fuses"


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2D(3, 2, padding=1),
        nn.MaxPool2D(3, 2, ceil_mode=True),
        nn.MaxPool2D((3, 2), 2),
        nn.AvgPool2D(3, 2),
    ],
)
def test_pools_the_kernel_does_not_compute_run_as_layers(monkeypatch, pool):
    seq = nn.Sequential(SimAM(e_lambda=1e-5), nn.ReLU(), pool)
    x = paddle.to_tensor(inputs([2, 3, 8, 8], "float32"))
    calls = fused_calls(monkeypatch)
    got = fusion.run_sequential(seq, x)
    assert calls == [0], "SimAM and ReLU still fuse; the pool runs on its own"
    np.testing.assert_array_equal(got.numpy(), seq(x).numpy())
