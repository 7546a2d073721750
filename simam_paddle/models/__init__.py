"""The experiment's models by name: AlexNet, and the ResNets and MobileNetV2 of ``paddle.vision``, each
plain and with SimAM.

``build_model(name, num_classes=10, **options)`` builds one; ``list_models()`` names them all, and
``model_table()`` gives each with its parameter count. Each name accepts the options listed in
``MODELS`` and nothing else, so a misspelt or misplaced option (``build_model("resnet18",
pretrained=True)``) is an error naming the valid ones, not silently ignored. An entry also declares
the input size it needs (AlexNet: 128x128), or None for any size, and the other facts of the model:
its normalisation, classifier, SimAM sites, official lambda and weights (``ModelSpec``).
The SimAM layer itself and its insertion into other models are in ``simam_paddle.layers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from paddle import nn

from ..errors import WeightsMismatch
from .alexnet import INPUT_SIZE as ALEXNET_INPUT_SIZE
from .alexnet import AlexNet
from .mobilenet import mobilenet_v2
from .resnet import DEPTHS as RESNET_DEPTHS
from .resnet import resnet
from .weights import load_weights

SIMAM_OPTIONS = ("e_lambda", "backend")  # reach every SimAM layer of a *_simam model
# The normalisation of every model here: the recipe's, and that of the ImageNet weights the converter reads.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_LAMBDA = 0.1  # the lambda of the SimAM paper's official ImageNet runs and weights
OFFICIAL_WEIGHTS = ("the SimAM paper's official ImageNet weights (PyTorch), converted by python -m simam_paddle.convert; "
                    "ImageNet-1k, 224x224")
RESNET_OFFICIAL_DEPTHS = (18, 34, 50, 101)  # the SimAM ResNets with official weights
TORCHVISION_WEIGHTS = "torchvision-style ImageNet weights (PyTorch), converted by python -m simam_paddle.convert"


@dataclass(frozen=True)
class ModelSpec:
    """One record per model: how to build it, and the facts that every consumer reads from here
    (transforms, the config's checks, fine-tuning's head swap, the converter)."""

    build: Callable[..., nn.Layer]
    options: tuple[str, ...]  # keyword arguments accepted besides num_classes
    classifier: str  # the sublayer that is the classifier (a Linear): its weight and bias form the head
    input_size: int | None = None  # the square input size the model needs; None: any size
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the normalisation of its input, per RGB channel
    std: tuple[float, float, float] = IMAGENET_STD
    attention_sites: tuple[str, ...] = ()  # the names of its SimAM layers, as shell patterns; () without SimAM
    official_lambda: float | None = None  # the lambda of its official weights, where there are any
    checkpoint: str | None = None  # where pretrained weights for it come from; None: trained by the recipe only

    @property
    def head(self) -> tuple[str, str]:
        """The state-dict keys of the classifier."""
        return f"{self.classifier}.weight", f"{self.classifier}.bias"


def _simam(attn: str, sites: tuple[str, ...]) -> dict:
    return {"attention_sites": sites} if attn == "simam" else {}


def _alexnet(attn: str) -> ModelSpec:
    options = ("dropout", "fuse", "fast_conv") + (SIMAM_OPTIONS if attn == "simam" else ())
    sites = tuple(f"features.{i}" for i in (1, 5, 9, 12, 15))  # after each convolution (features.0, 4, 8, 11, 14)
    return ModelSpec(partial(AlexNet, attn_layer=attn), options, "classifier.6", ALEXNET_INPUT_SIZE, **_simam(attn, sites))


def _official(attn: str, has_weights: bool) -> dict:
    """The ImageNet facts of a ResNet or MobileNetV2: SimAM ones were run with OFFICIAL_LAMBDA, some have weights."""
    if attn != "simam":
        return {"checkpoint": TORCHVISION_WEIGHTS}
    return {"official_lambda": OFFICIAL_LAMBDA, "checkpoint": OFFICIAL_WEIGHTS if has_weights else None}


def _resnet(depth: int, attn: str) -> ModelSpec:
    options = ("plain_weights", "strict") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(resnet, depth, attn_layer=attn), options, "fc",
                     **_simam(attn, ("layer*.*.conv2.attn",)), **_official(attn, depth in RESNET_OFFICIAL_DEPTHS))


def _mobilenet_v2(attn: str) -> ModelSpec:
    options = ("plain_weights", "strict") + (SIMAM_OPTIONS if attn == "simam" else ())
    return ModelSpec(partial(mobilenet_v2, attn_layer=attn), options, "classifier.1",
                     **_simam(attn, ("features.*.conv.*.0.attn",)), **_official(attn, True))


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
