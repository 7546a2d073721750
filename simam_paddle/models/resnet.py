"""SimAM ResNets: the ResNets of ``paddle.vision.models`` with SimAM in every block.

SimAM sits where the paper's official code puts it: right after the 3x3 convolution (conv2) of every
BasicBlock and BottleneckBlock, before its BatchNorm and the residual add (see ``simam_paddle.layers.insert``).
SimAM has no parameters, so ``resnet50_simam`` has exactly the parameters of ``resnet50``, under the same
names: a plain ResNet's weights load unchanged (``plain_weights=``), e.g. ImageNet weights saved by
``paddle.vision.models.resnet50(pretrained=True)`` on a machine that can download them.

The lambda of the official ImageNet runs is in each model's record (``simam_paddle.models.MODELS``);
the default here is SimAM's (``simam_paddle.layers.simam.E_LAMBDA``).
"""

from __future__ import annotations

from pathlib import Path

from paddle import nn
from paddle.vision.models import resnet as paddle_resnet

from ..layers import add_attention
from .weights import load_weights

DEPTHS = (18, 34, 50, 101, 152)


def resnet(
    depth: int,
    num_classes: int = 10,
    attn_layer: str | None = "simam",
    plain_weights: str | Path | dict | None = None,
    strict: bool = True,
    **attn_kwargs,
) -> nn.Layer:
    """ResNet-``depth`` of ``paddle.vision.models`` with ``attn_layer`` in every block ("none": plain).

    ``plain_weights``: a plain ResNet's state dict or ``.pdparams`` path to start from, strictly, or
    with ``strict=False`` skipping what differs (see ``weights.load_weights``). ``attn_kwargs``
    (``e_lambda``...) reach the attention.
    """
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, DEPTHS))}, got {depth}")
    model = getattr(paddle_resnet, f"resnet{depth}")(num_classes=num_classes)
    if attn_layer not in (None, "none"):
        add_attention(model, attn_layer, **attn_kwargs)
    if plain_weights is not None:
        load_weights(model, plain_weights, strict=strict, model_name=f"resnet{depth}")
    return model


