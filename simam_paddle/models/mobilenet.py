"""SimAM MobileNetV2: ``paddle.vision``'s MobileNetV2 with SimAM after every depthwise convolution.

SimAM sits where the paper's official code puts it: right after the 3x3 depthwise convolution of every
InvertedResidual, before its BatchNorm (see ``simam_paddle.layers.insert``). SimAM has no parameters,
so ``mobilenet_v2_simam`` has exactly the parameters of ``mobilenet_v2``, under the same names.
Width 1.0 (the official ImageNet model); the classifier is Paddle's Dropout(0.2) then Linear(1280, K).
"""

from __future__ import annotations

from pathlib import Path

from paddle import nn
from paddle.vision.models import mobilenet_v2 as paddle_mobilenet_v2

from ..layers import add_attention
from .weights import load_weights


def mobilenet_v2(
    num_classes: int = 10,
    attn_layer: str | None = "simam",
    plain_weights: str | Path | dict | None = None,
    strict: bool = True,
    **attn_kwargs,
) -> nn.Layer:
    """MobileNetV2 (width 1.0) of ``paddle.vision.models`` with ``attn_layer`` after each depthwise conv ("none": plain).

    ``plain_weights`` and ``strict`` as for ``simam_paddle.models.resnet``.
    """
    model = paddle_mobilenet_v2(num_classes=num_classes)
    if attn_layer not in (None, "none"):
        add_attention(model, attn_layer, **attn_kwargs)
    if plain_weights is not None:
        load_weights(model, plain_weights, strict=strict, model_name="mobilenet_v2")
    return model
