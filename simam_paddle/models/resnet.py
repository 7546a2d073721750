"""SimAM ResNets: the ResNets of ``paddle.vision.models`` with SimAM in every block.

SimAM sits where the paper's official code puts it: right after the 3x3 convolution (conv2) of every
BasicBlock and BottleneckBlock, before its BatchNorm and the residual add (see ``insert.py``). SimAM
has no parameters, so ``resnet50_simam`` has exactly the parameters of ``resnet50``, under the same
names: a plain ResNet's weights load unchanged (``plain_weights=``), e.g. ImageNet weights saved by
``paddle.vision.models.resnet50(pretrained=True)`` on a machine that can download them.

The official ImageNet runs used lambda = 0.1; the default here is the official module's 1e-4.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import paddle
from paddle import nn
from paddle.vision.models import resnet as paddle_resnet

from .insert import add_attention

DEPTHS = (18, 34, 50, 101, 152)


def load_plain_weights(model: nn.Layer, weights: str | Path | dict, strict: bool = True) -> list[str]:
    """Load a plain ResNet's state dict (or the path of its ``.pdparams``) into ``model``.

    strict=True: every key must be present on both sides with the same shape, else a ValueError lists
    the differences. strict=False: keys missing or of another shape (say, a 1000-class ``fc`` into a
    10-class model) are skipped; their names are returned so the caller can see what stays as built.
    """
    state = paddle.load(str(weights)) if isinstance(weights, (str, Path)) else weights
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {list(state[k].shape)} vs {list(own[k].shape)}"
        for k in set(own) & set(state)
        if list(state[k].shape) != list(own[k].shape)
    )
    if strict and (missing or unexpected or mismatched):
        problems = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs (given vs model)", mismatched))
            if keys
        ]
        raise ValueError(
            "plain weights do not fit the model (" + "; ".join(problems) + "); "
            "check depth and num_classes, or pass strict=False to skip what differs"
        )
    skipped = missing + [m.split(" ")[0] for m in mismatched]
    model.set_state_dict({k: own[k] if k in skipped else state[k] for k in own})
    return sorted(skipped)


def resnet(
    depth: int,
    num_classes: int = 10,
    attn_layer: str | None = "simam",
    plain_weights: str | Path | dict | None = None,
    strict: bool = True,
    **attn_kwargs,
) -> nn.Layer:
    """ResNet-``depth`` of ``paddle.vision.models`` with ``attn_layer`` in every block ("none": plain).

    ``plain_weights``: a plain ResNet's state dict or ``.pdparams`` path to start from (see
    ``load_plain_weights`` for ``strict``). ``attn_kwargs`` (``e_lambda``...) reach the attention.
    """
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, DEPTHS))}, got {depth}")
    model = getattr(paddle_resnet, f"resnet{depth}")(num_classes=num_classes)
    if attn_layer not in (None, "none"):
        add_attention(model, attn_layer, **attn_kwargs)
    if plain_weights is not None:
        load_plain_weights(model, plain_weights, strict=strict)
    return model


resnet18_simam = partial(resnet, 18, attn_layer="simam")
resnet34_simam = partial(resnet, 34, attn_layer="simam")
resnet50_simam = partial(resnet, 50, attn_layer="simam")
resnet101_simam = partial(resnet, 101, attn_layer="simam")
resnet152_simam = partial(resnet, 152, attn_layer="simam")
