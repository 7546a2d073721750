"""The attention factory: layers by name, built the same way, unknown names fail with the valid ones."""

from __future__ import annotations

import pytest

from simam_paddle import SimAM
from simam_paddle.layers import attention_names, create_attn, get_attn
from simam_paddle.models import AlexNet


def test_names():
    assert attention_names() == ["none", "simam"]


@pytest.mark.parametrize("name", ["simam", "SimAM", "SIMAM"])
def test_get_attn_returns_the_class(name):
    assert get_attn(name) is SimAM


@pytest.mark.parametrize("name", ["none", None])
def test_none_means_no_attention(name):
    assert get_attn(name) is None
    assert create_attn(name, 32, e_lambda=1e-5) is None


@pytest.mark.parametrize("channels", [None, 64])
def test_create_attn_passes_keywords(channels):
    layer = create_attn("simam", channels, e_lambda=1e-5)
    assert isinstance(layer, SimAM) and layer.e_lambda == 1e-5


@pytest.mark.parametrize("call", [get_attn, create_attn])
def test_unknown_name_lists_valid_names(call):
    with pytest.raises(ValueError, match=r"unknown attention layer 'se'; valid names: none, simam"):
        call("se")


def test_alexnet_builds_attention_through_the_factory():
    model = AlexNet(attn_layer="simam", e_lambda=0.1)
    layers = [layer for layer in model.sublayers() if isinstance(layer, SimAM)]
    assert len(layers) == 5 and {layer.e_lambda for layer in layers} == {0.1}
    with pytest.raises(ValueError, match="unknown attention layer 'cbam'"):
        AlexNet(attn_layer="cbam")
