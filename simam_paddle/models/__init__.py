"""The experiment's models by name: AlexNet, and the ResNets and MobileNetV2 of ``paddle.vision``, each
plain and with SimAM.

``build_model(name, num_classes=10, **options)`` builds one; ``list_models()`` names them all, and
``model_table()`` gives each with its parameter count. Each name accepts the options listed in
``MODELS`` and nothing else, so a misspelt or misplaced option (``build_model("resnet18",
pretrained=True)``) is an error naming the valid ones, not silently ignored. An entry also declares
the input size it needs (AlexNet: 128x128), or None for any size.
The SimAM layer itself and its insertion into other models are in ``simam_paddle.layers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from paddle import nn

from .alexnet import INPUT_SIZE as ALEXNET_INPUT_SIZE
from .alexnet import AlexNet
from .mobilenet import mobilenet_v2
from .resnet import DEPTHS as RESNET_DEPTHS
from .resnet import resnet
from .weights import WeightsMismatch, load_weights

SIMAM_OPTIONS = ("e_lambda", "backend")  # reach every SimAM layer of a *_simam model


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Layer]
    options: tuple[str, ...]  # keyword arguments accepted besides num_classes
    input_size: int | None = None  # the square input size the model needs; None: any size


def _alexnet(attn: str) -> ModelSpec:
    options = ("dropout", "fuse", "fast_conv") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(AlexNet, attn_layer=attn), options, ALEXNET_INPUT_SIZE)


def _resnet(depth: int, attn: str) -> ModelSpec:
    options = ("plain_weights", "strict") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(resnet, depth, attn_layer=attn), options)


def _mobilenet_v2(attn: str) -> ModelSpec:
    options = ("plain_weights", "strict") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(mobilenet_v2, attn_layer=attn), options)


MODELS: dict[str, ModelSpec] = {
    "alexnet": _alexnet("none"),
    "alexnet_simam": _alexnet("simam"),
    **{f"resnet{d}": _resnet(d, "none") for d in RESNET_DEPTHS},
    **{f"resnet{d}_simam": _resnet(d, "simam") for d in RESNET_DEPTHS},
    "mobilenet_v2": _mobilenet_v2("none"),
    "mobilenet_v2_simam": _mobilenet_v2("simam"),
}


def list_models() -> list[str]:
    """Every name ``build_model`` accepts, sorted."""
    return sorted(MODELS)


def parameter_count(model: nn.Layer) -> int:
    """Trainable parameters, as papers count them: BatchNorm's running mean and variance, which Paddle
    keeps as (non-trainable) parameters, are not counted."""
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


def model_table(num_classes: int = 10) -> list[tuple[str, int]]:
    """Every name ``build_model`` accepts, sorted, with its parameter count for ``num_classes`` classes."""
    return [(name, parameter_count(build_model(name, num_classes=num_classes))) for name in list_models()]


def build_model(name: str, num_classes: int = 10, **options) -> nn.Layer:
    """Build the model ``name`` for ``num_classes`` classes; ``options`` must be among ``MODELS[name].options``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    spec = MODELS[name]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(
            f"build_model({name!r}) got unknown option(s) {', '.join(unknown)}; "
            f"{name} accepts num_classes, {', '.join(spec.options)}"
        )
    return spec.build(num_classes=num_classes, **options)


__all__ = ["AlexNet", "MODELS", "ModelSpec", "build_model", "list_models", "load_weights", "mobilenet_v2", "model_table",
           "parameter_count", "resnet", "WeightsMismatch"]
