"""SimAM ResNets: registered names, parameters as the plain ResNet, 1x1 maps finite, plain weights load."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle.vision import models as paddle_models

from simam_paddle import SimAM, build_model
from simam_paddle.config import ConfigError, load_config
from simam_paddle.models import list_models, load_weights

BLOCKS = {18: 8, 34: 16, 50: 16, 101: 33, 152: 50}
FAST = [18, 50]
SLOW = [pytest.param(d, marks=pytest.mark.slow) for d in (34, 101, 152)]


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def test_registered_names():
    for d in BLOCKS:
        assert {f"resnet{d}", f"resnet{d}_simam"} <= set(list_models())
    assert load_config(None, ["model.name=resnet50_simam"])["model"]["name"] == "resnet50_simam"
    with pytest.raises(ConfigError, match="resnet18_simam"):
        load_config(None, ["model.name=resnet19_simam"])


@pytest.mark.parametrize("depth", FAST + SLOW)
def test_same_parameters_as_plain_resnet(depth):
    plain = getattr(paddle_models, f"resnet{depth}")(num_classes=10)
    model = build_model(f"resnet{depth}_simam", e_lambda=0.1)
    assert n_params(model) == n_params(plain)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {k: list(v.shape) for k, v in plain.state_dict().items()}
    layers = [layer for layer in model.sublayers() if isinstance(layer, SimAM)]
    assert len(layers) == BLOCKS[depth] and {layer.e_lambda for layer in layers} == {0.1}
    assert not any(isinstance(layer, SimAM) for layer in build_model(f"resnet{depth}").sublayers())


@pytest.mark.parametrize("depth", FAST)
def test_shape_finite_and_gradients_down_to_1x1_maps(depth):
    # A 32x32 input leaves 1x1 maps in the last stage, where SimAM's variance reads 0/0.
    model = build_model(f"resnet{depth}_simam", num_classes=7)
    out = model(paddle.randn([2, 3, 32, 32]))
    assert list(out.shape) == [2, 7]
    assert np.isfinite(out.numpy()).all()
    out.sum().backward()
    for name, p in model.named_parameters():
        if p.stop_gradient:  # BatchNorm running statistics
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert np.isfinite(p.grad.numpy()).all(), f"{name} got a non-finite gradient"


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("as_path", [False, True])
def test_loads_plain_resnet_weights(depth, as_path, tmp_path):
    plain = getattr(paddle_models, f"resnet{depth}")(num_classes=10)
    weights = plain.state_dict()
    if as_path:
        paddle.save(weights, str(tmp_path / "plain.pdparams"))
        weights = tmp_path / "plain.pdparams"
    model = build_model(f"resnet{depth}_simam", num_classes=10, plain_weights=weights)
    own = model.state_dict()
    for k, v in plain.state_dict().items():
        assert np.array_equal(own[k].numpy(), v.numpy()), f"{k} was not loaded"
    # same weights, SimAM on: a different function; and the plain registry entry reproduces the plain model
    x = paddle.randn([1, 3, 32, 32])
    plain.eval(), model.eval()
    assert not np.allclose(model(x).numpy(), plain(x).numpy())
    again = build_model(f"resnet{depth}", plain_weights=weights)
    again.eval()
    np.testing.assert_allclose(again(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)


def test_imagenet_head_needs_strict_false():
    imagenet = paddle_models.resnet18(num_classes=1000).state_dict()
    with pytest.raises(ValueError, match=r"fc.weight \[512, 1000\] vs \[512, 10\].*num_classes.*strict=False"):
        build_model("resnet18_simam", num_classes=10, plain_weights=imagenet)
    model = build_model("resnet18_simam", num_classes=10)
    fc_before = model.fc.weight.numpy().copy()
    with pytest.warns(UserWarning, match="2 key.*not loaded.*fc.bias, fc.weight"):
        assert load_weights(model, imagenet, strict=False) == ["fc.bias", "fc.weight"]
    assert np.array_equal(model.fc.weight.numpy(), fc_before)
    assert np.array_equal(model.conv1.weight.numpy(), imagenet["conv1.weight"].numpy())


def test_wrong_depth_weights_are_refused():
    with pytest.raises(ValueError, match="does not fit the model resnet34.*missing: layer1.2.bn1._mean.*depth"):
        build_model("resnet34_simam", plain_weights=paddle_models.resnet18(num_classes=10).state_dict())


def test_jit_save_keeps_the_simam_layers(tmp_path):
    model = build_model("resnet18_simam", num_classes=10)
    model.eval()
    x = paddle.randn([2, 3, 32, 32])
    spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")]
    paddle.jit.save(model, str(tmp_path / "model"), input_spec=spec)
    loaded = paddle.jit.load(str(tmp_path / "model"))
    a, b = model(x).numpy(), loaded(x).numpy()
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max()), f"max diff {np.abs(a - b).max()}"
