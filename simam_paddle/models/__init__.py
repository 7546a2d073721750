"""The experiment's models by name: AlexNet and the ResNets of ``paddle.vision``, each plain and with SimAM.

``build_model(name, num_classes=10, **options)`` builds one; ``list_models()`` names them all. Each
name accepts the options listed in ``MODELS`` and nothing else, so a misspelt or misplaced option
(``build_model("resnet18", pretrained=True)``) is an error naming the valid ones, not silently ignored.
The SimAM layer itself and its insertion into other models are in ``simam_paddle.layers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from paddle import nn

from .alexnet import AlexNet
from .resnet import DEPTHS as RESNET_DEPTHS
from .resnet import resnet
from .weights import WeightsMismatch, load_weights

SIMAM_OPTIONS = ("e_lambda", "backend")  # reach every SimAM layer of a *_simam model


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Layer]
    options: tuple[str, ...]  # keyword arguments accepted besides num_classes


def _alexnet(attn: str) -> ModelSpec:
    options = ("dropout", "fuse", "fast_conv") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(AlexNet, attn_layer=attn), options)


def _resnet(depth: int, attn: str) -> ModelSpec:
    options = ("plain_weights", "strict") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(resnet, depth, attn_layer=attn), options)


MODELS: dict[str, ModelSpec] = {
    "alexnet": _alexnet("none"),
    "alexnet_simam": _alexnet("simam"),
    **{f"resnet{d}": _resnet(d, "none") for d in RESNET_DEPTHS},
    **{f"resnet{d}_simam": _resnet(d, "simam") for d in RESNET_DEPTHS},
}


def list_models() -> list[str]:
    """Every name ``build_model`` accepts, sorted."""
    return sorted(MODELS)


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


__all__ = ["AlexNet", "MODELS", "ModelSpec", "build_model", "list_models", "load_weights", "resnet", "WeightsMismatch"]
