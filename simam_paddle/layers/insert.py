"""Put SimAM (or any attention of the factory) into an existing ``paddle.nn.Layer``.

``add_simam(model)`` on a ResNet or MobileNetV2 of ``paddle.vision.models`` uses the placement of the
paper's official code: right after the 3x3 convolution (``conv2``) of every BasicBlock and
BottleneckBlock, before its BatchNorm (``bn2``) and the residual add; in MobileNetV2, right after the
depthwise convolution of every InvertedResidual, before its BatchNorm. ``after_types=`` /
``after_names=`` choose other places in any model.

How it is attached: the attention becomes a child ``attn`` of the layer it follows, and a forward
post-hook of that layer passes the layer's output through it. No layer is replaced or renamed, so the
state dict keeps its keys: checkpoints of the plain model load into the SimAM model and back, and the
hook is traced like any other call by ``paddle.jit.save``. SimAM has no parameters, so the parameter
count does not change either.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from paddle import nn
from paddle.vision.models.mobilenetv2 import InvertedResidual
from paddle.vision.models.resnet import BasicBlock, BottleneckBlock

from .attention import create_attn, get_attn

ATTN_NAME = "attn"  # the child that holds the inserted attention: e.g. layer1.0.conv2.attn


def _depthwise_conv(block: nn.Layer) -> str:
    return next(
        name
        for name, layer in block.named_sublayers()
        if isinstance(layer, nn.Conv2D) and layer._groups > 1 and layer._groups == layer._in_channels
    )


# The official placement: per block type, the child of the block that the attention follows.
OFFICIAL_PLACEMENT = {
    BasicBlock: lambda block: "conv2",
    BottleneckBlock: lambda block: "conv2",
    InvertedResidual: _depthwise_conv,
}


def _apply_attn(layer: nn.Layer, inputs, output):
    return getattr(layer, ATTN_NAME)(output)


def official_places(model: nn.Layer) -> list[str]:
    """Names of the layers that SimAM follows in the official placement (empty for models without such blocks)."""
    places = []
    for name, block in model.named_sublayers(include_self=True):
        if type(block) in OFFICIAL_PLACEMENT:
            child = OFFICIAL_PLACEMENT[type(block)](block)
            places.append(f"{name}.{child}" if name else child)
    return places


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, type)):
        return (value,)
    return tuple(value)


def add_attention(
    model: nn.Layer,
    attn_layer: str = "simam",
    after_types: type | Iterable[type] | None = None,
    after_names: str | Iterable[str] | None = None,
    **attn_kwargs,
) -> int:
    """Insert ``attn_layer`` (a factory name) after chosen layers of ``model``, in place; return the count.

    ``after_types``: layer classes (e.g. ``nn.Conv2D``); ``after_names``: sublayer names as
    ``model.named_sublayers()`` gives them, shell-style patterns allowed (``"layer*.*.conv2"``). With
    neither, the official placement in ResNet and MobileNetV2 blocks is used (see the module docstring).
    Each attention is built as ``create_attn(attn_layer, channels, **attn_kwargs)``, channels being the
    layer's output channels where it has them. Raises ValueError, changing nothing, when nothing matches,
    when a name or pattern matches nothing, or when a chosen layer already has an attention.
    """
    if get_attn(attn_layer) is None:
        raise ValueError(f"attn_layer {attn_layer!r} is no attention; nothing to insert")
    types, names = _as_tuple(after_types), _as_tuple(after_names)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Layer)):
            raise TypeError(f"after_types must be paddle.nn.Layer subclasses, got {t!r}")
    if not types and not names:
        names = tuple(official_places(model))
        if not names:
            raise ValueError(
                f"{type(model).__name__} has no block of a paddle.vision.models ResNet or MobileNetV2, so there is no "
                "default placement: pass after_types= (e.g. paddle.nn.Conv2D) or after_names= (sublayer names)"
            )
    sublayers = dict(model.named_sublayers())
    unmatched = [pattern for pattern in names if not any(fnmatchcase(name, pattern) for name in sublayers)]
    if unmatched:
        raise ValueError(f"after_names {', '.join(map(repr, unmatched))} match no sublayer of {type(model).__name__}")
    chosen = [
        (name, layer)
        for name, layer in sublayers.items()
        if isinstance(layer, types) or any(fnmatchcase(name, pattern) for pattern in names)
    ]
    if not chosen:
        raise ValueError(f"no sublayer of {type(model).__name__} is an instance of {', '.join(t.__name__ for t in types)}")
    taken = [name for name, layer in chosen if ATTN_NAME in layer._sub_layers]
    if taken:
        listed = ", ".join(taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise ValueError(f"{listed} already have an attention layer (was add_simam called twice?)")
    for _, layer in chosen:
        layer.add_sublayer(ATTN_NAME, create_attn(attn_layer, getattr(layer, "_out_channels", None), **attn_kwargs))
        layer.register_forward_post_hook(_apply_attn)
    return len(chosen)


def add_simam(
    model: nn.Layer,
    after_types: type | Iterable[type] | None = None,
    after_names: str | Iterable[str] | None = None,
    e_lambda: float = 1e-4,
) -> int:
    """Insert SimAM(e_lambda) into ``model`` in place and return how many were inserted.

    With no ``after_types``/``after_names`` on a ``paddle.vision.models`` ResNet: after ``conv2`` of
    every block, before ``bn2``; on a MobileNetV2: after every depthwise convolution, before its BatchNorm
    (the official placements). Parameters and state-dict keys are unchanged.
    """
    return add_attention(model, "simam", after_types=after_types, after_names=after_names, e_lambda=e_lambda)
