"""add_simam: counts, placement on ResNet blocks, parameters and state-dict keys unchanged, output changed."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v2, resnet18, resnet50
from paddle.vision.models.mobilenetv2 import InvertedResidual
from paddle.vision.models.resnet import BasicBlock, BottleneckBlock

from simam_paddle import SimAM, build_model, simam
from simam_paddle.layers import add_attention, add_simam


def simams(model):
    return [(name, layer) for name, layer in model.named_sublayers() if isinstance(layer, SimAM)]


def params(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("build, block_type, blocks", [(resnet18, BasicBlock, 8), (resnet50, BottleneckBlock, 16)])
def test_official_placement_on_paddle_resnets(build, block_type, blocks):
    model = build(num_classes=10)
    model.eval()
    x = paddle.randn([2, 3, 32, 32])
    before, keys, out_before = params(model), list(model.state_dict()), model(x).numpy()

    assert add_simam(model, e_lambda=1e-4) == blocks
    names = [name for name, _ in simams(model)]
    block_names = [name for name, layer in model.named_sublayers() if isinstance(layer, block_type)]
    assert names == [f"{b}.conv2.attn" for b in block_names]
    assert all(layer.e_lambda == 1e-4 for _, layer in simams(model))

    after = params(model)
    assert list(model.state_dict()) == keys
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    out_after = model(x).numpy()
    assert np.isfinite(out_after).all()
    assert not np.allclose(out_before, out_after)


@pytest.mark.parametrize("build", [resnet18, resnet50])
def test_simam_sits_between_conv2_and_bn2(build):
    model = build(num_classes=10)
    add_simam(model)
    model.eval()
    block = model.layer2[0]  # a strided block: conv2 has stride 2 in the bottleneck
    seen = {}
    block.conv2.register_forward_pre_hook(lambda layer, inputs: seen.__setitem__("conv2_in", inputs[0]))
    block.conv2.attn.register_forward_pre_hook(lambda layer, inputs: seen.__setitem__("attn_in", inputs[0]))
    block.bn2.register_forward_pre_hook(lambda layer, inputs: seen.__setitem__("bn2_in", inputs[0]))
    model(paddle.randn([1, 3, 64, 64]))
    conv = block.conv2
    conv_out = nn.functional.conv2d(seen["conv2_in"], conv.weight, stride=conv._stride, padding=conv._padding)
    np.testing.assert_allclose(seen["attn_in"].numpy(), conv_out.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(seen["bn2_in"].numpy(), simam(conv_out, 1e-4).numpy(), rtol=1e-5, atol=1e-5)


def test_after_types_on_alexnet_gives_alexnet_simam():
    plain, reference = build_model("alexnet"), build_model("alexnet_simam", e_lambda=1e-5)
    reference.set_state_dict(plain.state_dict())
    assert add_simam(plain, after_types=nn.Conv2D, e_lambda=1e-5) == 5
    plain.eval(), reference.eval()
    x = paddle.randn([2, 3, 128, 128])
    a, b = plain(x).numpy(), reference(x).numpy()
    assert np.allclose(a, b, atol=1e-5), f"max diff {np.abs(a - b).max()}"


@pytest.mark.parametrize("after_names, count", [("features.0", 1), (["features.0", "features.4"], 2), ("features.*", 18)])
def test_after_names_and_patterns(after_names, count):
    model = build_model("alexnet")
    assert add_simam(model, after_names=after_names) == count
    assert len(simams(model)) == count


def test_types_and_names_together():
    model = resnet18(num_classes=10)
    assert add_simam(model, after_types=nn.Linear, after_names="layer4.*.conv1") == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "no default placement: pass after_types="),
        ({"after_names": ["features.0", "classifier.9*"]}, "'classifier.9\\*' match no sublayer of AlexNet"),
        ({"after_types": nn.Conv3D}, "no sublayer of AlexNet is an instance of Conv3D"),
    ],
)
def test_nothing_to_insert_is_an_error(kwargs, message):
    model = build_model("alexnet")
    with pytest.raises(ValueError, match=message):
        add_simam(model, **kwargs)
    assert simams(model) == []


def test_bad_type_is_an_error():
    with pytest.raises(TypeError, match="paddle.nn.Layer subclasses"):
        add_simam(build_model("alexnet"), after_types="Conv2D")


def test_second_insertion_is_refused():
    model = resnet18(num_classes=10)
    add_simam(model)
    with pytest.raises(ValueError, match=r"layer1.0.conv2, layer1.1.conv2, layer2.0.conv2 and 5 more already have"):
        add_simam(model)
    assert len(simams(model)) == 8


def test_official_placement_on_mobilenet_v2():
    model = mobilenet_v2(num_classes=10)
    model.eval()
    keys, x = list(model.state_dict()), paddle.randn([1, 3, 32, 32])
    out_before = model(x).numpy()
    blocks = [layer for layer in model.sublayers() if isinstance(layer, InvertedResidual)]
    assert add_simam(model) == len(blocks) == 17
    for block in blocks:
        # after the depthwise convolution (groups == channels), before its BatchNorm, in every block
        (conv,) = [layer for layer in block.sublayers() if isinstance(layer, nn.Conv2D) and hasattr(layer, "attn")]
        assert conv._groups == conv._in_channels == conv._out_channels > 1
        depthwise_unit = next(layer for layer in block.conv if conv in layer.sublayers())
        assert [type(layer).__name__ for layer in depthwise_unit][:2] == ["Conv2D", "BatchNorm2D"]
    assert list(model.state_dict()) == keys
    out_after = model(x).numpy()
    assert np.isfinite(out_after).all() and not np.allclose(out_before, out_after)


@pytest.mark.parametrize("attn_layer, error", [("none", "is no attention"), ("se", "unknown attention layer 'se'")])
def test_add_attention_needs_an_attention(attn_layer, error):
    model = resnet18(num_classes=10)
    with pytest.raises(ValueError, match=error):
        add_attention(model, attn_layer)
    assert simams(model) == []


class ConvBNLayer(nn.Layer):
    """Shaped like PaddleClas's ConvBNLayer: ``conv`` then ``bn``."""

    def __init__(self, channels: int, kernel: int, data_format: str = "NCHW"):
        super().__init__()
        self.conv = nn.Conv2D(channels, channels, kernel, padding=kernel // 2, data_format=data_format)
        self.bn = nn.BatchNorm2D(channels, data_format=data_format)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(nn.Layer):
    """Named like PaddleClas's ResNet block (and paddle.vision's), built as the test asks."""

    def __init__(self, conv1_kernel: int = 3, data_format: str = "NCHW"):
        super().__init__()
        self.conv0 = ConvBNLayer(4, 3, data_format)
        self.conv1 = ConvBNLayer(4, conv1_kernel, data_format)

    def forward(self, x):
        return x + self.conv1(self.conv0(x))


def test_a_block_named_and_built_like_paddleclas_gets_the_default_placement():
    model = nn.Sequential(BasicBlock(), BasicBlock())
    assert add_simam(model) == 2
    assert [name for name, _ in simams(model)] == ["0.conv1.conv.attn", "1.conv1.conv.attn"]


@pytest.mark.parametrize("block", [lambda: BasicBlock(conv1_kernel=1), lambda: BasicBlock(data_format="NHWC")])
def test_a_block_named_like_paddleclas_but_built_otherwise_is_an_error(block):
    model = nn.Sequential(block(), block())
    message = (r"BasicBlock 0, 1: named like a block of a PaddleClas backbone but not built like one "
               r"\(conv1.conv, a 3x3 NCHW Conv2D, then conv1.bn\), so there is no default placement for it: pass after_names=")
    with pytest.raises(ValueError, match=message):
        add_simam(model)
    assert simams(model) == []
