"""SimAM in static graphs and mixed precision: paddle.jit.to_static, paddle.jit.save, paddle2onnx, AMP.

A static graph always gets SimAM's plain-operation formulation (paddle2onnx aborts on PyLayer and
on custom operators); these tests check that it runs, trains and exports like the dynamic graph.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from helpers import reference_simam
from paddle import nn

from simam_paddle import SimAM, simam
from simam_paddle.layers import simam_kernel

BACKENDS = ["auto", "kernel", "paddle", "plain"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "kernel" and not paddle.get_device().startswith("cpu"):
        pytest.skip("the SimAM kernel runs on CPU tensors; the default device here is not the CPU")
    if request.param == "kernel" and not simam_kernel.prepare():
        pytest.skip(f"SimAM kernel unavailable on this machine: {simam_kernel.load_error()}")
    return request.param


def small_model(backend: str = "auto") -> nn.Layer:
    """Convolutions with SimAM on 8x8, 4x4 and 1x1 maps (the 1x1 one takes the H*W == 1 limit)."""
    paddle.seed(1)
    return nn.Sequential(
        nn.Conv2D(3, 6, 3, padding=1),
        SimAM(6, e_lambda=1e-5, backend=backend),
        nn.ReLU(),
        nn.Conv2D(6, 4, 3, stride=2, padding=1),
        SimAM(4, backend=backend),
        nn.AdaptiveAvgPool2D(1),
        SimAM(4, e_lambda=0.1, backend=backend),
        nn.Flatten(),
    )


# Paddle's own backward construction in a PIR program asks a value for its place and warns.
PIR_PLACE_WARNING = "ignore:Tensor do not have 'place' interface for pir graph mode"


@pytest.mark.filterwarnings(PIR_PLACE_WARNING)
@pytest.mark.parametrize("full_graph", [False, True])
def test_to_static_matches_dynamic_graph_forward_and_backward(backend, full_graph):
    x = paddle.randn([2, 3, 8, 8])
    results = []
    for static in (False, True):
        model = small_model(backend)
        if static:
            model = paddle.jit.to_static(model, full_graph=full_graph)
        xg = x.detach()
        xg.stop_gradient = False
        y = model(xg)
        (y**2).sum().backward()
        results.append((y.numpy(), xg.grad.numpy(), model[0].weight.grad.numpy()))
    for (dyn, stat, what) in zip(results[0], results[1], ("output", "input gradient", "weight gradient")):
        np.testing.assert_allclose(stat, dyn, rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.mark.filterwarnings(PIR_PLACE_WARNING)
def test_functional_simam_under_to_static_with_dynamic_spatial_size():
    @paddle.jit.to_static(full_graph=True, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32")])
    def f(x):
        return simam(x, 1e-4)

    for shape in ([2, 3, 5, 7], [1, 3, 1, 1]):
        x = paddle.randn(shape)
        np.testing.assert_allclose(f(x).numpy(), reference_simam(x.numpy(), 1e-4), rtol=1e-5, atol=1e-7)


@pytest.fixture
def saved_model(tmp_path):
    """small_model in eval mode, saved with paddle.jit.save for any batch size; (model, path prefix)."""
    model = small_model()
    model.eval()
    prefix = str(tmp_path / "model")
    paddle.jit.save(model, prefix, input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
    return model, prefix


def test_jit_save_and_load_round_trip(saved_model):
    model, prefix = saved_model
    loaded = paddle.jit.load(prefix)
    x = paddle.randn([3, 3, 8, 8])
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_onnx_round_trip(saved_model, tmp_path):
    paddle2onnx = pytest.importorskip("paddle2onnx")
    ort = pytest.importorskip("onnxruntime")
    model, prefix = saved_model
    onnx_file = tmp_path / "model.onnx"
    # no graph optimiser: polygraphy would try to pip-install onnx_graphsurgeon
    paddle2onnx.export(f"{prefix}.json", f"{prefix}.pdiparams", str(onnx_file), opset_version=13, optimize_tool="None")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = paddle.randn([batch, 3, 8, 8])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        diff = np.abs(got - model(x).numpy()).max()
        assert diff <= 1e-4, f"ONNX vs dynamic graph: max abs diff {diff:.3g}"


# On a CPU-only build auto_cast changes nothing (and says so); the half-precision inputs are what
# exercises the float32 statistics here. On a GPU the same test runs with casting in effect.
@pytest.mark.filterwarnings("ignore:amp_guard can only be enabled")
@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("level", ["O1", "O2"])
def test_auto_cast_keeps_statistics_in_float32(backend, amp_dtype, level):
    x = np.random.randn(2, 4, 6, 6).astype("float32")
    with paddle.amp.auto_cast(dtype=amp_dtype, level=level):
        y32 = simam(paddle.to_tensor(x), backend=backend)
        x_half = paddle.to_tensor(x).astype(amp_dtype)
        y_half = simam(x_half, backend="auto" if backend == "kernel" else backend)
    assert y32.dtype == paddle.float32
    np.testing.assert_allclose(y32.numpy(), reference_simam(x, 1e-4), rtol=1e-5, atol=1e-7)
    assert y_half.dtype == x_half.dtype
    tol = 2e-3 if amp_dtype == "float16" else 2e-2
    expected = reference_simam(x_half.astype("float32").numpy(), 1e-4)
    np.testing.assert_allclose(y_half.astype("float32").numpy(), expected, rtol=tol, atol=tol)
