"""SimAM against the formula of the paper, written out plainly in numpy (float64)."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from simam_paddle import SimAM, simam


def reference_simam(x: np.ndarray, lam: float) -> np.ndarray:
    """The formula as RECIPE.md states it, in float64 loops-free numpy; H*W == 1 gives e = 0.5."""
    x = x.astype(np.float64)
    hw = x.shape[2] * x.shape[3]
    mu = x.mean(axis=(2, 3), keepdims=True)
    d2 = (x - mu) ** 2
    var = d2.sum(axis=(2, 3), keepdims=True) / (hw - 1) if hw > 1 else np.zeros_like(mu)
    e = d2 / (4 * (var + lam)) + 0.5
    return x / (1 + np.exp(-e))


def reference_grad(x: np.ndarray, lam: float, g: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d(sum(g * y))/dx by central differences on the float64 reference."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1).astype(np.float64)
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += eps
        down[i] -= eps
        fu = (g * reference_simam(up.reshape(x.shape), lam)).sum()
        fd = (g * reference_simam(down.reshape(x.shape), lam)).sum()
        grad.reshape(-1)[i] = (fu - fd) / (2 * eps)
    return grad


SHAPES = [(2, 3, 1, 1), (1, 2, 1, 7), (1, 2, 7, 1), (2, 3, 5, 4), (2, 2, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("lam", [1e-5, 1e-4, 0.1])
def test_forward_matches_formula(shape, dtype, rtol, lam):
    x = np.random.randn(*shape).astype(dtype)
    y = simam(paddle.to_tensor(x), e_lambda=lam)
    assert y.dtype == paddle.to_tensor(x).dtype
    assert list(y.shape) == list(shape)
    ref = reference_simam(x, lam)
    np.testing.assert_allclose(y.numpy(), ref, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (1, 1, 1, 5), (2, 1, 3, 1), (1, 2, 3, 3)])
@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_gradient_matches_numerical_gradient(shape, lam):
    x = np.random.randn(*shape)
    g = np.random.randn(*shape)
    xt = paddle.to_tensor(x, stop_gradient=False)
    (simam(xt, e_lambda=lam) * paddle.to_tensor(g)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), reference_grad(x, lam, g), rtol=1e-6, atol=1e-8)


def test_float32_gradient_matches_float64():
    x = np.random.randn(2, 3, 32, 32)
    grads = []
    for dtype in ("float32", "float64"):
        xt = paddle.to_tensor(x.astype(dtype), stop_gradient=False)
        (simam(xt, e_lambda=1e-4) ** 2).sum().backward()
        grads.append(xt.grad.numpy().astype(np.float64))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_single_position_uses_half_energy_limit():
    # H*W == 1: var is taken as 0, so e = 0.5 and the weight is sigmoid(0.5) (about 0.6225)
    x = paddle.to_tensor([[[[2.0]], [[-3.0]]]])
    y = simam(x)
    np.testing.assert_allclose(y.numpy().ravel(), np.array([2.0, -3.0]) / (1 + np.exp(-0.5)), rtol=1e-6)


def test_single_position_gradient_is_finite():
    x = paddle.to_tensor(np.random.randn(3, 4, 1, 1).astype("float32"), stop_gradient=False)
    simam(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full([3, 4, 1, 1], 1 / (1 + np.exp(-0.5))), rtol=1e-6)


@pytest.mark.parametrize("value", [0.0, 5.0, -1e6])
def test_constant_channel_is_finite_with_weight_sigmoid_half(value):
    x = paddle.full([2, 3, 8, 8], value, dtype="float32")
    y = simam(x)
    np.testing.assert_allclose(y.numpy(), value / (1 + np.exp(-0.5)), rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e15])
def test_extreme_magnitudes_stay_finite(scale):
    x = paddle.to_tensor((np.random.randn(2, 3, 16, 16) * scale).astype("float32"), stop_gradient=False)
    y = simam(x, e_lambda=1e-5)
    y.sum().backward()
    assert np.isfinite(y.numpy()).all()
    assert np.isfinite(x.grad.numpy()).all()
    if scale <= 1e3:
        np.testing.assert_allclose(y.numpy(), reference_simam(x.numpy(), 1e-5), rtol=1e-5, atol=1e-36)


def test_layer_has_no_parameters_and_accepts_channels():
    layer = SimAM(64, e_lambda=1e-5)
    assert layer.parameters() == []
    assert layer.e_lambda == 1e-5
    x = paddle.randn([2, 64, 4, 4])
    np.testing.assert_allclose(layer(x).numpy(), reference_simam(x.numpy(), 1e-5), rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (1, 2, 3, 4, 5)])
def test_wrong_rank_is_an_error_naming_the_shape(shape):
    with pytest.raises(ValueError, match=r"4-D.*" + r"\[" + ", ".join(map(str, shape)) + r"\]"):
        simam(paddle.zeros(shape))


def test_integer_input_is_an_error_naming_the_dtype():
    with pytest.raises(TypeError, match="int64"):
        simam(paddle.zeros([1, 2, 3, 3], dtype="int64"))


def test_non_positive_lambda_is_rejected():
    with pytest.raises(ValueError, match="e_lambda"):
        SimAM(e_lambda=0)


def test_float16_keeps_dtype_and_agrees_with_reference():
    x = np.random.randn(2, 3, 8, 8).astype("float16")
    y = simam(paddle.to_tensor(x))
    assert y.dtype == paddle.float16
    np.testing.assert_allclose(y.numpy().astype(np.float64), reference_simam(x, 1e-4), rtol=2e-3, atol=2e-3)
