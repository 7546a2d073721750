"""Models of the experiment, and the SimAM layer, built by name with ``build_model``."""

from __future__ import annotations

from functools import partial
from typing import Callable

from paddle import nn

from .alexnet import AlexNet
from .attention import attention_names, create_attn, get_attn
from .insert import add_attention, add_simam
from .resnet import (
    DEPTHS as RESNET_DEPTHS,
    load_plain_weights,
    resnet,
    resnet18_simam,
    resnet34_simam,
    resnet50_simam,
    resnet101_simam,
    resnet152_simam,
)
from .simam import SimAM, simam

MODELS: dict[str, Callable[..., nn.Layer]] = {
    "alexnet": partial(AlexNet, attn_layer="none"),
    "alexnet_simam": partial(AlexNet, attn_layer="simam"),
    **{f"resnet{d}": partial(resnet, d, attn_layer="none") for d in RESNET_DEPTHS},
    **{f"resnet{d}_simam": partial(resnet, d, attn_layer="simam") for d in RESNET_DEPTHS},
}


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Layer:
    """Build a model by name; extra keyword arguments (``e_lambda``...) reach its attention layers."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
    return MODELS[name](num_classes=num_classes, **kwargs)


__all__ = [
    "AlexNet", "SimAM", "simam", "build_model", "model_names", "get_attn", "create_attn", "attention_names", "MODELS",
    "add_simam", "add_attention", "resnet", "load_plain_weights",
    "resnet18_simam", "resnet34_simam", "resnet50_simam", "resnet101_simam", "resnet152_simam",
]
