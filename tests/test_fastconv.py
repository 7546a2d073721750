"""simam_paddle.fastconv against Paddle's own convolution (the reference: paddle.nn.Conv2D).

Outputs and the gradients of input, weight and bias must agree to float rounding: the largest
difference at most 1e-5 of the largest reference value in float32 (the two sum in different
orders), and in float64, where oneDNN has no CPU convolution and the layer runs Paddle's own, to
1e-10 (in fact to the bit). Where the oneDNN path does not apply (float64, other layouts and
paddings, groups, static graphs, a failed build) the layer must run Paddle's convolution.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle import nn

from simam_paddle import build_model, fastconv, native
from simam_paddle.fastconv import Conv2D, applies, kernel
from simam_paddle.models.alexnet import CONVS
from simam_paddle.native import onednn

RTOL = {"float32": 1e-5, "float64": 1e-10}


@pytest.fixture(scope="module", autouse=True)
def operator():
    if not (paddle.get_device().startswith("cpu") and kernel.prepare()):
        pytest.skip(f"the oneDNN convolution is unavailable here: {kernel.status()['error']}")


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def pair(cin, cout, k, dtype="float32", **kw):
    """A fastconv.Conv2D and a paddle.nn.Conv2D with the same (random, non-zero bias) parameters."""
    fast = Conv2D(cin, cout, k, **kw)
    ref = nn.Conv2D(cin, cout, k, **kw)
    if dtype != "float32":
        fast.to(dtype=dtype)
        ref.to(dtype=dtype)
    if fast.bias is not None:
        fast.bias.set_value(paddle.randn(fast.bias.shape).astype(dtype))
    ref.set_state_dict(fast.state_dict())
    return fast, ref


def outputs_and_grads(layer, x_np, dy_np, input_grad=True):
    x = paddle.to_tensor(x_np, stop_gradient=not input_grad)
    y = layer(x)
    wrt = ([x] if input_grad else []) + [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    return [y.numpy()] + [g.numpy() for g in paddle.grad(y, wrt, paddle.to_tensor(dy_np))]


def check_against_paddle(fast, ref, shape, dtype="float32", input_grad=True, seed=0):
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(shape).astype(dtype)
    dy_np = rng.standard_normal(ref(paddle.to_tensor(x_np)).shape).astype(dtype)
    got = outputs_and_grads(fast, x_np, dy_np, input_grad)
    want = outputs_and_grads(ref, x_np, dy_np, input_grad)
    names = ["y"] + (["dx"] if input_grad else []) + ["dw"] + (["db"] if ref.bias is not None else [])
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        err = relative_error(g, w)
        assert err <= RTOL[dtype], f"{name}: relative error {err:.2e} > {RTOL[dtype]:.0e}"
    return got, want


# AlexNet's convolutions at batch 128, the size of a training step, where the sums are longest.
ALEXNET = [(f"conv{i}", spec, size) for i, (spec, size) in enumerate(zip(CONVS, (128, 15, 7, 7, 7)), start=1)]


@pytest.mark.parametrize("name, spec, size", ALEXNET, ids=[a[0] for a in ALEXNET])
def test_alexnet_convolutions_match_paddle_at_batch_128(name, spec, size):
    cin, cout, k, stride, pad, _ = spec
    fast, ref = pair(cin, cout, k, stride=stride, padding=pad)
    x = paddle.zeros([1, cin, size, size])
    assert applies(x, fast)
    check_against_paddle(fast, ref, [128, cin, size, size])


CASES = [  # (cin, cout, k, options, input shape)
    (3, 48, 11, dict(stride=4, padding=5), [3, 3, 37, 41]),  # conv1's stride and padding, odd sizes
    (3, 48, 11, dict(stride=4, padding=5), [2, 3, 128, 128]),
    (5, 7, 5, dict(padding=2), [3, 5, 15, 13]),
    (6, 4, 3, dict(padding=1), [1, 6, 7, 7]),
    (4, 6, 3, dict(stride=(2, 3), padding=[1, 0, 2, 1]), [2, 4, 9, 11]),  # padding top, bottom, left, right
    (4, 5, 3, dict(dilation=2, padding=2), [2, 4, 10, 9]),
    (3, 4, 1, dict(), [2, 3, 5, 5]),
    (3, 4, 3, dict(bias_attr=False, padding=1), [2, 3, 6, 6]),  # no bias
    (2, 3, 5, dict(), [2, 2, 5, 5]),  # one output position
]


@pytest.mark.parametrize("cin, cout, k, options, shape", CASES)
def test_odd_shapes_match_paddle(cin, cout, k, options, shape):
    fast, ref = pair(cin, cout, k, **options)
    assert applies(paddle.zeros(shape), fast)
    check_against_paddle(fast, ref, shape)


def test_a_batch_whose_weight_gradient_is_summed_in_uneven_chunks():
    # conv1 at batch 37: 37 x 32 x 32 terms per weight, more than one chunk, the last one shorter
    fast, ref = pair(3, 8, 11, stride=4, padding=5)
    check_against_paddle(fast, ref, [37, 3, 128, 128])


def test_an_input_without_gradient_gets_none_and_the_parameters_theirs():
    fast, ref = pair(3, 8, 11, stride=4, padding=5)
    check_against_paddle(fast, ref, [4, 3, 64, 64], input_grad=False)
    x = paddle.randn([4, 3, 64, 64])
    fast(x).sum().backward()
    assert x.grad is None and fast.weight.grad is not None and fast.bias.grad is not None


def test_gradient_of_part_of_the_inputs():
    fast, ref = pair(4, 6, 3, padding=1)
    x_np = np.random.default_rng(1).standard_normal([2, 4, 8, 8]).astype("float32")
    grads = []
    for layer in (fast, ref):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        (dx,) = paddle.grad(layer(x).sum(), [x])
        grads.append(dx.numpy())
    assert relative_error(*grads) <= RTOL["float32"]


def test_frozen_parameters_get_no_gradient():
    fast, _ = pair(4, 6, 3, padding=1)
    fast.weight.stop_gradient = True
    fast.bias.stop_gradient = True
    x = paddle.randn([2, 4, 8, 8])
    x.stop_gradient = False
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is None and fast.bias.grad is None


def test_float64_runs_paddles_convolution():
    fast, ref = pair(5, 7, 5, dtype="float64", padding=2)
    assert not applies(paddle.zeros([1, 5, 9, 9], dtype="float64"), fast)
    got, want = check_against_paddle(fast, ref, [3, 5, 9, 9], dtype="float64")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("options", [dict(groups=2), dict(data_format="NHWC"), dict(padding="SAME"),
                                     dict(padding_mode="reflect", padding=1)], ids=["groups", "nhwc", "same", "reflect"])
def test_convolutions_it_does_not_compute_run_paddles(options):
    fast, ref = pair(4, 6, 3, **options)
    shape = [2, 9, 9, 4] if options.get("data_format") == "NHWC" else [2, 4, 9, 9]
    assert not applies(paddle.zeros(shape), fast)
    x = paddle.randn(shape)
    np.testing.assert_array_equal(fast(x).numpy(), ref(x).numpy())


def test_static_graphs_and_saved_programs_hold_paddles_conv(tmp_path):
    fast, ref = pair(3, 4, 3, padding=1)
    x = paddle.randn([2, 3, 8, 8])
    static = paddle.jit.to_static(fast, full_graph=True)
    np.testing.assert_allclose(static(x).numpy(), ref(x).numpy(), rtol=0, atol=0)
    paddle.jit.save(fast, str(tmp_path / "conv"), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32")])
    program = (tmp_path / "conv.json").read_text()
    assert "conv2d" in program and "fastconv" not in program
    loaded = paddle.jit.load(str(tmp_path / "conv"))
    np.testing.assert_allclose(loaded(x).numpy(), ref(x).numpy(), rtol=1e-6, atol=1e-6)


def test_second_order_gradients_are_refused_not_wrong():
    fast, _ = pair(3, 4, 3, padding=1)
    x = paddle.randn([2, 3, 6, 6])
    x.stop_gradient = False
    (dx,) = paddle.grad(fast(x).sum(), [x], create_graph=True)
    with pytest.raises(Exception, match="does not appear in the backward graph"):
        paddle.grad((dx**2).sum(), [fast.weight])


def test_a_failed_build_falls_back_and_says_why(monkeypatch):
    monkeypatch.setattr(kernel.LIBRARY, "module", None)
    monkeypatch.setattr(kernel.LIBRARY, "error", "RuntimeError: no compiler")
    monkeypatch.delenv(native.REQUIRE_ENV, raising=False)
    fast, ref = pair(3, 4, 3, padding=1)
    x = paddle.randn([2, 3, 6, 6])
    assert not applies(x, fast)
    np.testing.assert_array_equal(fast(x).numpy(), ref(x).numpy())
    assert fastconv.implementation(fast) == {"implementation": "paddle", "error": "RuntimeError: no compiler"}
    monkeypatch.setenv(native.REQUIRE_ENV, "1")
    with pytest.raises(native.KernelUnavailable, match="no compiler"):
        kernel.prepare()


def test_a_library_of_another_version_is_refused(monkeypatch):
    monkeypatch.setattr(onednn, "library_version", lambda path=None: (3, 7, 0, onednn.DNNL_RUNTIME_OMP))
    with pytest.raises(RuntimeError, match=r"oneDNN is 3\.7\.0; the operators are written against the 3\.6 headers"):
        onednn.check_library()


def test_paddles_library_fits_the_headers():
    major, minor, _, runtime = onednn.library_version()
    assert (major, minor) == onednn.header_version()[:2] and runtime == onednn.DNNL_RUNTIME_OMP


@pytest.mark.parametrize("name", ["alexnet", "alexnet_simam"])
def test_alexnet_uses_it_with_the_same_parameters_and_gradients(name):
    fast = build_model(name)
    ref = build_model(name, fast_conv=False)
    assert list(fast.state_dict()) == list(ref.state_dict())
    ref.set_state_dict(fast.state_dict())
    info = fastconv.implementation(fast)
    assert info["implementation"] == "onednn" and info["layers"] == "5/5"
    assert fastconv.implementation(ref)["implementation"] == "paddle"
    x_np = np.random.default_rng(2).standard_normal([8, 3, 128, 128]).astype("float32")
    grads = []
    for model in (fast, ref):
        model.eval()  # no dropout: the two runs see the same network
        loss = model(paddle.to_tensor(x_np)).square().mean()
        loss.backward()
        grads.append({n: p.grad.numpy() for n, p in model.named_parameters()})
    for n in grads[1]:
        # through the whole network the two sums' rounding compounds: 1e-4 for the model
        assert relative_error(grads[0][n], grads[1][n]) <= 1e-4, n


def test_the_three_operator_libraries_report_their_status_in_the_same_keys():
    from simam_paddle.layers import simam_deploy, simam_kernel

    for module in (simam_kernel, simam_deploy, kernel):
        status = module.status()
        assert sorted(status) == ["available", "error", "threads", "version"], module.__name__
        assert isinstance(status["available"], bool) and status["threads"] >= 1
