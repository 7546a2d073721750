"""bfloat16 training on the CPU: oneDNN's bf16 convolutions (fastconv) and train.precision.

The reference is Paddle's own float64 convolution of the operands rounded to bfloat16 (round to
nearest even, written out below): oneDNN's bf16 convolution reads exactly those values and
accumulates in float32, so it must agree to float32 rounding, 1e-5 of the largest value, while the
float32 convolution of the unrounded operands differs by about 1e-3 (so the test fails when the
bf16 setting is ignored).
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle import nn

from simam_paddle import build_model, fastconv
from simam_paddle.config import ConfigError, load_config
from simam_paddle.fastconv import Conv2D, kernel


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as float64."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return rounded.view(np.float32).astype(np.float64)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_rounding_to_bf16_written_out():
    values = np.array([1.0, 1 + 2**-8, 1 + 2**-7 + 2**-8, 1 + 2**-9, -3.0e-3], dtype=np.float32)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even one, 1; 1 + 3*2^-8 to 1 + 2^-6
    np.testing.assert_array_equal(to_bf16(values)[:4], [1.0, 1.0, 1 + 2**-6, 1.0])
    assert abs(to_bf16(values)[4] / -3.0e-3 - 1) < 2**-8


@pytest.fixture(scope="module")
def bf16_cpu():
    if not (paddle.get_device().startswith("cpu") and kernel.prepare()):
        pytest.skip(f"the oneDNN convolution is unavailable here: {kernel.status()['error']}")
    if not kernel.cpu_has_bf16():
        pytest.skip("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX-BF16)")


@pytest.mark.parametrize("cin, cout, k, stride, pad, size", [(3, 48, 11, 4, 2, 64), (48, 128, 5, 1, 2, 15),
                                                             (128, 192, 3, 1, 1, 7)])
def test_bf16_convolution_equals_the_float64_convolution_of_rounded_operands(bf16_cpu, cin, cout, k, stride, pad, size):
    rng = np.random.default_rng(0)
    layer = Conv2D(cin, cout, k, stride=stride, padding=pad)
    layer.bias.set_value(paddle.to_tensor(rng.standard_normal(cout).astype("float32")))
    assert fastconv.use_bfloat16(layer) == 1 and fastconv.implementation(layer)["bf16"]
    x_np = rng.standard_normal([16, cin, size, size]).astype("float32")
    x = paddle.to_tensor(x_np, stop_gradient=False)
    y = layer(x)
    dy_np = rng.standard_normal(y.shape).astype("float32")
    got = [y.numpy()] + [g.numpy() for g in paddle.grad(y, [x, layer.weight, layer.bias], paddle.to_tensor(dy_np))]

    ref = nn.Conv2D(cin, cout, k, stride=stride, padding=pad)
    ref.to(dtype="float64")
    w_np, b_np = layer.weight.numpy(), layer.bias.numpy()
    f64 = lambda a, grad=False: paddle.to_tensor(a, dtype="float64", stop_gradient=not grad)  # noqa: E731
    ref.weight.set_value(f64(to_bf16(w_np)))
    ref.bias.set_value(f64(b_np))
    xr = f64(to_bf16(x_np), grad=True)
    yr = ref(xr)
    dx_ref, dw_ref, db_ref = paddle.grad(yr, [xr, ref.weight, ref.bias], f64(to_bf16(dy_np)))
    want = [yr.numpy(), dx_ref.numpy(), dw_ref.numpy(), db_ref.numpy()]
    for name, g, w in zip(("y", "dx", "dw", "db"), got, want):
        err = relative_error(g, w)
        assert err <= 1e-5, f"{name}: relative error {err:.2e} against the float64 convolution of bf16 operands"

    layer.bf16 = False  # float32: the same layer now misses the bf16 reference by far more
    assert relative_error(layer(paddle.to_tensor(x_np)).numpy(), want[0]) > 1e-4


def test_bf16_needs_the_instructions(monkeypatch):
    monkeypatch.setattr(kernel, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="need a CPU with bf16 instructions"):
        fastconv.use_bfloat16(build_model("alexnet"))
    assert fastconv.use_bfloat16(build_model("alexnet"), enable=False) == 5


def test_train_precision_is_checked_before_anything_is_written(monkeypatch, tmp_path):
    from simam_paddle.train import check_environment

    assert load_config()["train"]["precision"] == "fp32"
    with pytest.raises(ConfigError, match="precision.*one of fp32, bf16"):
        load_config(overrides=["train.precision=fp16"])
    with pytest.raises(ConfigError, match="train.precision=bf16 .* needs model.fast_conv=true"):
        check_environment(load_config(overrides=["train.precision=bf16", "model.fast_conv=false"]))
    monkeypatch.setattr(kernel, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="train.precision=bf16 needs a CPU with bfloat16 instructions"):
        check_environment(load_config(overrides=["train.precision=bf16"]))
