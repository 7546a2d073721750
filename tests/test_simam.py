"""SimAM against the formula of the paper, written out plainly in numpy (float64), on every path.

The paths are the fused CPU kernel ("kernel", skipped where it cannot be built), the PyLayer with a
hand-written backward ("paddle"), the plain Paddle operations ("plain") and the formulation that static
graphs and exports run ("static"); see simam.py.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import paddle
import pytest
from helpers import reference_simam, unbuildable

from simam_paddle import SimAM, native, simam
from simam_paddle.layers import simam_kernel

simam_module = sys.modules["simam_paddle.layers.simam"]
PATHS = ["kernel", "paddle", "plain", "static"]
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


def grad_tolerance(path: str, dtype: str) -> float:
    """TOLERANCE, except for the "static" path's float64 gradients: Paddle's pool2d backward scales by
    1/(H*W) in float32, 1e-9 relative (measured: 1.4e-9 on a 9x1 map), where the others reach 1e-10."""
    return 1e-8 if (path, dtype) == ("static", "float64") else TOLERANCE[dtype]


def reference_simam_grad(x: np.ndarray, lam: float, g: np.ndarray) -> np.ndarray:
    """d(sum(g * y))/dx in float64: reference_simam's operations differentiated one by one, in reverse."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    hw = x.shape[2] * x.shape[3]
    n = max(hw - 1, 1)  # with hw == 1 every d is 0, so n only has to be non-zero
    d = x - x.mean(axis=(2, 3), keepdims=True)
    d2 = d**2
    den = 4 * (d2.sum(axis=(2, 3), keepdims=True) / n + lam)
    s = 1 / (1 + np.exp(-(d2 / den + 0.5)))
    grad_x = g * s  # y = x * s
    grad_e = g * x * s * (1 - s)  # s = sigmoid(e)
    grad_d2 = grad_e / den  # e = d2 / den + 0.5 ...
    grad_den = -(grad_e * d2).sum(axis=(2, 3), keepdims=True) / den**2  # ... and through den
    grad_d2 = grad_d2 + 4 * grad_den / n  # den = 4 * (sum(d2) / n + lam)
    grad_d = 2 * d * grad_d2
    return grad_x + grad_d - grad_d.mean(axis=(2, 3), keepdims=True)  # d = x - mean(x)


def numerical_grad(x: np.ndarray, lam: float, g: np.ndarray, eps: float = 1e-6) -> np.ndarray:
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


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, floor: float, what: str) -> None:
    """|actual - expected| <= rtol * (|expected| + floor * max|expected|), the worst element named."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bound = rtol * (np.abs(expected) + floor * np.abs(expected).max())
    excess = np.abs(actual - expected) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (
        f"{what}: max abs diff {np.abs(actual - expected).max():.3g}; worst at {worst}: "
        f"{actual[worst]!r} vs {expected[worst]!r} (allowed {bound[worst]:.3g})"
    )


@pytest.fixture(scope="session")
def kernel_available() -> bool:
    """The kernel built or loaded, and tensors made on the CPU (where it runs) by default."""
    return paddle.get_device().startswith("cpu") and simam_kernel.prepare()


@pytest.fixture(params=PATHS)
def path(request, kernel_available) -> str:
    if request.param == "kernel" and not kernel_available:
        pytest.skip(f"SimAM kernel unavailable on this machine: {simam_kernel.load_error()}")
    return request.param


def run_path(x: np.ndarray, lam: float, path: str, g: np.ndarray | None = None):
    """simam(x) on ``path`` and, when g is given, d(sum(g * y))/dx, both as numpy arrays."""
    xt = paddle.to_tensor(x, stop_gradient=g is None)
    y = simam(xt, e_lambda=lam, backend=path)
    assert y.dtype == xt.dtype and list(y.shape) == list(x.shape)
    if g is None:
        return y.numpy(), None
    (grad,) = paddle.grad(y, xt, paddle.to_tensor(g))
    return y.numpy(), grad.numpy()


# Shapes with single positions (1x1, 1xN, Nx1), odd sizes, the AlexNet maps (7x7, 15x15), and a few
# drawn at random (seeded), each with a magnitude from 1e-3 to 1e3.
RANDOM = np.random.RandomState(6)
SHAPES = [(2, 3, 1, 1), (1, 2, 1, 7), (1, 3, 9, 1), (2, 3, 5, 4), (2, 4, 7, 7), (1, 3, 15, 15), (2, 2, 32, 32)]
SHAPES += [tuple(int(v) for v in RANDOM.randint(1, [4, 5, 18, 18])) for _ in range(4)]
MAGNITUDES = [1e-3, 1.0, 1e3]
LAMBDAS = [1e-5, 1e-4, 0.1]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lam", LAMBDAS)
def test_forward_and_gradient_match_formula(path, shape, dtype, lam):
    rng = np.random.RandomState(hash((shape, lam)) % 2**31)
    scale = MAGNITUDES[rng.randint(len(MAGNITUDES))]
    x = (rng.randn(*shape) * scale).astype(dtype)
    g = rng.randn(*shape).astype(dtype)
    y, grad = run_path(x, lam, path, g)
    assert_close(y, reference_simam(x, lam), TOLERANCE[dtype], 1e-2, f"{path} forward, scale {scale:g}")
    assert_close(grad, reference_simam_grad(x, lam, g), grad_tolerance(path, dtype), 1.0, f"{path} gradient, scale {scale:g}")


@pytest.mark.parametrize("scale", MAGNITUDES)
@pytest.mark.parametrize("lam", LAMBDAS)
def test_every_magnitude_and_lambda_on_alexnet_sized_maps(path, scale, lam):
    x = (np.random.randn(2, 8, 15, 15) * scale).astype("float32")
    g = np.random.randn(*x.shape).astype("float32")
    y, grad = run_path(x, lam, path, g)
    assert_close(y, reference_simam(x, lam), 1e-5, 1e-2, f"{path} forward")
    assert_close(grad, reference_simam_grad(x, lam, g), 1e-5, 1.0, f"{path} gradient")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lam", LAMBDAS)
def test_constant_channels_beside_varying_ones(path, dtype, lam):
    x = np.random.randn(2, 4, 6, 5).astype(dtype)
    x[0, 1] = 3.0
    x[1, 2] = -250.0
    x[1, 3] = 0.0
    g = np.random.randn(*x.shape).astype(dtype)
    y, grad = run_path(x, lam, path, g)
    assert_close(y, reference_simam(x, lam), TOLERANCE[dtype], 1e-2, f"{path} forward")
    assert_close(grad, reference_simam_grad(x, lam, g), grad_tolerance(path, dtype), 1.0, f"{path} gradient")


def test_reference_gradient_is_the_numerical_gradient():
    x, g = np.random.randn(2, 2, 3, 4), np.random.randn(2, 2, 3, 4)
    np.testing.assert_allclose(reference_simam_grad(x, 1e-4, g), numerical_grad(x, 1e-4, g), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (1, 1, 1, 5), (2, 1, 3, 1), (1, 2, 3, 3)])
@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_gradient_matches_numerical_gradient(path, shape, lam):
    x = np.random.randn(*shape)
    g = np.random.randn(*shape)
    _, grad = run_path(x, lam, path, g)
    np.testing.assert_allclose(grad, numerical_grad(x, lam, g), rtol=1e-6, atol=1e-8)


def test_float32_gradient_matches_float64(path):
    x = np.random.randn(2, 3, 32, 32)
    grads = []
    for dtype in ("float32", "float64"):
        xt = paddle.to_tensor(x.astype(dtype), stop_gradient=False)
        (simam(xt, e_lambda=1e-4, backend=path) ** 2).sum().backward()
        grads.append(xt.grad.numpy().astype(np.float64))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_single_position_uses_half_energy_limit(path):
    # H*W == 1: var is taken as 0, so e = 0.5 and the weight is sigmoid(0.5) (about 0.6225)
    x = paddle.to_tensor([[[[2.0]], [[-3.0]]]])
    y = simam(x, backend=path)
    np.testing.assert_allclose(y.numpy().ravel(), np.array([2.0, -3.0]) / (1 + np.exp(-0.5)), rtol=1e-6)


def test_single_position_gradient_is_finite(path):
    x = paddle.to_tensor(np.random.randn(3, 4, 1, 1).astype("float32"), stop_gradient=False)
    simam(x, backend=path).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full([3, 4, 1, 1], 1 / (1 + np.exp(-0.5))), rtol=1e-6)


@pytest.mark.parametrize("value", [0.0, 5.0, -1e6])
def test_constant_channel_is_finite_with_weight_sigmoid_half(path, value):
    x = paddle.full([2, 3, 8, 8], value, dtype="float32")
    y = simam(x, backend=path)
    np.testing.assert_allclose(y.numpy(), value / (1 + np.exp(-0.5)), rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e15])
def test_extreme_magnitudes_stay_finite(path, scale):
    x = paddle.to_tensor((np.random.randn(2, 3, 16, 16) * scale).astype("float32"), stop_gradient=False)
    y = simam(x, e_lambda=1e-5, backend=path)
    y.sum().backward()
    assert np.isfinite(y.numpy()).all()
    if not (path == "static" and scale > 1e11):  # its gradient overflows past |x| ~ 1e12 (see _simam_static)
        assert np.isfinite(x.grad.numpy()).all()
    if scale <= 1e3:
        np.testing.assert_allclose(y.numpy(), reference_simam(x.numpy(), 1e-5), rtol=1e-5, atol=1e-36)


def test_a_nan_spoils_its_channel_only(path):
    x = np.random.randn(2, 3, 7, 7).astype("float32")
    x[1, 2, 3, 4] = np.nan
    y = simam(paddle.to_tensor(x), backend=path).numpy()
    assert np.isnan(y[1, 2]).all()
    keep = np.ones(x.shape[:2], dtype=bool)
    keep[1, 2] = False
    np.testing.assert_allclose(y[keep], reference_simam(x, 1e-4)[keep], rtol=1e-5, atol=1e-7)


def test_strided_input(path):
    base = paddle.randn([2, 3, 9, 8])
    x = base[:, :, 1::2, :]  # a view with strides, where Paddle makes them
    g = np.random.randn(*x.shape).astype("float32")
    y, grad = run_path(x.numpy(), 1e-4, path, g)
    direct = simam(x, backend=path)
    np.testing.assert_allclose(direct.numpy(), y, rtol=1e-6)
    assert_close(y, reference_simam(x.numpy(), 1e-4), 1e-5, 1e-2, f"{path} forward")


def test_layer_has_no_parameters_and_accepts_channels():
    layer = SimAM(64, e_lambda=1e-5)
    assert layer.parameters() == []
    assert layer.e_lambda == 1e-5
    x = paddle.randn([2, 64, 4, 4])
    np.testing.assert_allclose(layer(x).numpy(), reference_simam(x.numpy(), 1e-5), rtol=1e-5)


def test_layer_forwards_its_backend(path):
    layer = SimAM(8, e_lambda=1e-3, backend=path)
    assert layer.backend == path and f"backend='{path}'" in repr(layer)
    x = paddle.randn([2, 8, 5, 5])
    np.testing.assert_allclose(layer(x).numpy(), reference_simam(x.numpy(), 1e-3), rtol=1e-5, atol=1e-7)


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
    with pytest.raises(ValueError, match="e_lambda"):
        simam(paddle.ones([1, 1, 2, 2]), e_lambda=-1e-4)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_keeps_dtype_and_agrees_with_reference(dtype):
    x = np.random.randn(2, 3, 8, 8).astype("float32")
    xt = paddle.to_tensor(x).astype(dtype)
    for backend in ("auto", "paddle", "plain"):
        xt.stop_gradient = False
        y = simam(xt, backend=backend)
        assert y.dtype == xt.dtype
        (grad,) = paddle.grad(y, xt, paddle.ones_like(y))
        assert grad.dtype == xt.dtype
        x_rounded = xt.astype("float32").numpy()
        tol = 2e-3 if dtype == "float16" else 2e-2
        np.testing.assert_allclose(y.astype("float32").numpy(), reference_simam(x_rounded, 1e-4), rtol=tol, atol=tol)
        expected = reference_simam_grad(x_rounded, 1e-4, np.ones_like(x_rounded))
        np.testing.assert_allclose(grad.astype("float32").numpy(), expected, rtol=4 * tol, atol=4 * tol)


# Which path runs


def test_auto_uses_the_kernel_for_cpu_float32_and_float64(kernel_available):
    if not kernel_available:
        pytest.skip(f"SimAM kernel unavailable on this machine: {simam_kernel.load_error()}")
    for dtype in ("float32", "float64"):
        assert simam_module.resolve_backend(paddle.ones([1, 1, 2, 2], dtype=dtype)) == "kernel"
    assert simam_module.resolve_backend(paddle.ones([1, 1, 2, 2], dtype="float16")) == "paddle"


def test_kernel_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="float16"):
        simam(paddle.ones([1, 1, 2, 2], dtype="float16"), backend="kernel")


def test_unknown_backend_is_an_error_naming_it(monkeypatch):
    with pytest.raises(ValueError, match="'cuda'.*auto, kernel, paddle, plain"):
        SimAM(backend="cuda")
    monkeypatch.setenv("SIMAM_PADDLE_BACKEND", "fast")
    with pytest.raises(ValueError, match="'fast'"):
        simam(paddle.ones([1, 1, 2, 2]))


def test_environment_variable_steers_auto_only(monkeypatch):
    x = paddle.ones([1, 1, 2, 2])
    monkeypatch.setenv("SIMAM_PADDLE_BACKEND", "plain")
    assert simam_module.resolve_backend(x) == "plain"
    assert simam_module.resolve_backend(x, "paddle") == "paddle"


@pytest.fixture
def broken_kernel(monkeypatch):
    """The kernel as on a machine without a compiler: the build fails; a fresh per-process state."""
    unbuildable(monkeypatch, simam_kernel)


def test_a_required_kernel_that_cannot_be_built_is_an_error(broken_kernel, monkeypatch):
    monkeypatch.setenv(native.REQUIRE_ENV, "1")
    with pytest.raises(native.KernelUnavailable, match="SIMAM_PADDLE_REQUIRE_KERNEL.*simulated"):
        simam_kernel.prepare()
    with pytest.raises(native.KernelUnavailable):
        SimAM(3)
    assert simam_kernel.status() == {"available": False, "version": None, "threads": simam_kernel.status()["threads"],
                                      "error": "no C++ compiler found (simulated)"}


def test_ctrl_c_during_the_build_interrupts_and_the_next_call_builds(monkeypatch):
    monkeypatch.delenv(native.REQUIRE_ENV, raising=False)
    monkeypatch.setattr(simam_kernel, "LIBRARY", simam_kernel.LIBRARY.fresh())
    calls = []

    def interrupted():
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        raise RuntimeError("second attempt (simulated)")

    monkeypatch.setattr(simam_kernel.LIBRARY, "build_and_load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simam_kernel.prepare()
    assert simam_kernel.load_error() is None  # not recorded as "unavailable"
    assert not simam_kernel.prepare() and len(calls) == 2 and "second attempt" in simam_kernel.load_error()


@pytest.mark.parametrize("value", ["0", "-2", "four", "1.5"])
def test_an_invalid_thread_count_is_an_error_naming_the_variable(value, monkeypatch):
    monkeypatch.setattr(simam_kernel, "LIBRARY", simam_kernel.LIBRARY.fresh())
    monkeypatch.setenv("SIMAM_PADDLE_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"SIMAM_PADDLE_NUM_THREADS must be a positive integer.*{value!r}"):
        simam_kernel.prepare()


def test_fallback_when_the_kernel_cannot_be_built(broken_kernel, caplog):
    x = np.random.randn(2, 3, 6, 6).astype("float32")
    with caplog.at_level(logging.WARNING, logger=simam_kernel.__name__):
        layer = SimAM(3, e_lambda=1e-5)  # builds the kernel on a CPU device: fails quietly
        assert simam_module.resolve_backend(paddle.to_tensor(x)) == "paddle"
        y = layer(paddle.to_tensor(x))
        layer(paddle.to_tensor(x))
    np.testing.assert_allclose(y.numpy(), reference_simam(x, 1e-5), rtol=1e-5)
    assert "simulated" in simam_kernel.load_error()
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1, "one warning per process"


def test_forcing_an_unavailable_kernel_is_an_error(broken_kernel):
    with pytest.raises(RuntimeError, match="simulated"):
        SimAM(backend="kernel")


def test_kernel_cache_is_per_user_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMAM_PADDLE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert simam_kernel.cache_dir().parent == tmp_path / "xdg" / "simam_paddle"
    monkeypatch.setenv("SIMAM_PADDLE_CACHE_DIR", str(tmp_path))
    assert simam_kernel.cache_dir().parent == tmp_path
    assert all(path.is_file() for path in simam_kernel.SOURCES + simam_kernel.HEADERS)
