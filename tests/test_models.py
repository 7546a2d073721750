"""AlexNet and AlexNet-SimAM: structure, parameter count, shapes, gradients, input checks."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from simam_paddle import SimAM, build_model

# Counted by hand from docs/recipe.md's layer list (weights + biases).
EXPECTED_PARAMS = (
    (3 * 48 * 11 * 11 + 48)
    + (48 * 128 * 5 * 5 + 128)
    + (128 * 192 * 3 * 3 + 192)
    + (192 * 192 * 3 * 3 + 192)
    + (192 * 128 * 3 * 3 + 128)
    + (1152 * 2048 + 2048)
    + (2048 * 2048 + 2048)
    + (2048 * 10 + 10)
)


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def test_hand_count_is_the_published_count():
    assert EXPECTED_PARAMS == 7_524_042


@pytest.mark.parametrize("name", ["alexnet", "alexnet_simam"])
def test_parameter_count_output_shape_and_gradients(name):
    model = build_model(name)
    assert n_params(model) == EXPECTED_PARAMS
    out = model(paddle.randn([2, 3, 128, 128]))
    assert list(out.shape) == [2, 10]
    assert np.isfinite(out.numpy()).all()
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert float(p.grad.abs().sum()) > 0, f"{pname} got a zero gradient"


def test_models_differ_only_in_simam_layers():
    plain, simam_model = build_model("alexnet"), build_model("alexnet_simam", e_lambda=1e-5)
    shapes = lambda m: {k: list(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(plain) == shapes(simam_model)
    simams = [layer for layer in simam_model.sublayers() if isinstance(layer, SimAM)]
    assert len(simams) == 5 and all(s.e_lambda == 1e-5 for s in simams)
    # SimAM sits right after each convolution, before its ReLU
    kinds = [type(layer).__name__ for layer in simam_model.features]
    for i, kind in enumerate(kinds):
        if kind == "Conv2D":
            assert kinds[i + 1 : i + 3] == ["SimAM", "ReLU"]
    assert [type(layer).__name__ for layer in plain.features if type(layer).__name__ in ("SimAM", "Identity")] == ["Identity"] * 5
    # same weights in, different outputs: the SimAM layers change the function
    simam_model.set_state_dict(plain.state_dict())
    plain.eval(), simam_model.eval()
    x = paddle.randn([2, 3, 128, 128])
    assert not np.allclose(plain(x).numpy(), simam_model(x).numpy())


def test_num_classes():
    model = build_model("alexnet_simam", num_classes=100)
    assert list(model(paddle.randn([1, 3, 128, 128])).shape) == [1, 100]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="alexnet, alexnet_simam"):
        build_model("resnet_simam_typo")


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 128, 96)])
def test_wrong_input_size_is_a_clear_error(shape):
    model = build_model("alexnet")
    with pytest.raises(ValueError, match=f"expects 128x128 input.*got {shape[2]}x{shape[3]}"):
        model(paddle.randn(shape))
