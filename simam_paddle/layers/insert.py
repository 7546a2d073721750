"""Put SimAM (or any attention of the factory) into an existing ``paddle.nn.Layer``.

``add_simam(model)`` on a ResNet or MobileNetV2 of ``paddle.vision.models`` uses the placement of the
paper's official code: right after the 3x3 convolution (``conv2``) of every BasicBlock and
BottleneckBlock, before its BatchNorm (``bn2``) and the residual add; in MobileNetV2, right after the
depthwise convolution of every InvertedResidual, before its BatchNorm. ``after_types=`` /
``after_names=`` choose other places in any model.

The same rule holds for PaddleClas 2.6's backbones, whose blocks are known by their class names and
checked by their structure, so that PaddleClas is never imported here: ResNet and ResNet-vd
(``BasicBlock``, ``BottleneckBlock``: after ``conv1.conv``, the block's last 3x3 convolution, before
``conv1.bn``), MobileNetV3 (``ResidualUnit``: after ``bottleneck_conv.conv``, the depthwise
convolution, before ``bottleneck_conv.bn``), PP-LCNet (``DepthwiseSeparable``: after
``dw_conv.conv``, before ``dw_conv.bn``) and MobileNetV1 (``DepthwiseSeparable``: after
``depthwise_conv.conv``, before ``depthwise_conv.bn``). A block of one of these names that is not
built so (say, in a ResNet built with ``layer_type="DiverseBranchBlock"``, or ResNet50_vc's) makes the
default placement an error that names it, rather than a model with SimAM in some blocks only.

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
from .messages import listed
from .simam import E_LAMBDA

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


def _is_3x3(conv: nn.Conv2D) -> bool:
    return list(conv._kernel_size) == [3, 3] and conv._groups == 1


def _is_depthwise(conv: nn.Conv2D) -> bool:
    return conv._groups > 1 and conv._groups == conv._in_channels == conv._out_channels


# PaddleClas 2.6 (ppcls.arch.backbone.legendary_models), by block class name: the block's conv-BN unit
# (a ConvBNLayer, whose forward runs ``conv`` then ``bn``) and the kind of convolution SimAM follows; a name
# that two backbones use has one entry per structure.
PADDLECLAS_PLACEMENT = {
    "BasicBlock": [("conv1", "3x3")],  # ResNet18/34(_vd): conv0 3x3 -> conv1 3x3, + shortcut
    "BottleneckBlock": [("conv1", "3x3")],  # ResNet50/101/152/200(_vd): conv0 1x1 -> conv1 3x3 -> conv2 1x1, + shortcut
    "ResidualUnit": [("bottleneck_conv", "depthwise")],  # MobileNetV3: expand 1x1 -> depthwise -> (SE) -> linear 1x1
    "DepthwiseSeparable": [
        ("dw_conv", "depthwise"),  # PP-LCNet: depthwise -> (SE) -> pointwise 1x1
        ("depthwise_conv", "depthwise"),  # MobileNetV1: depthwise -> pointwise 1x1
    ],
}
CONV_KINDS = {"3x3": _is_3x3, "depthwise": _is_depthwise}
BATCH_NORMS = (nn.BatchNorm, nn.layer.norm._BatchNormBase)


def _paddleclas_site(block: nn.Layer) -> str | None:
    """``UNIT.conv`` when ``block`` is built like PaddleClas's block of its class name, else None."""
    for unit_name, kind in PADDLECLAS_PLACEMENT[type(block).__name__]:
        unit = block._sub_layers.get(unit_name)
        conv, bn = (unit._sub_layers.get("conv"), unit._sub_layers.get("bn")) if unit is not None else (None, None)
        if (
            isinstance(conv, nn.Conv2D)
            and conv._data_format == "NCHW"
            and CONV_KINDS[kind](conv)
            and isinstance(bn, BATCH_NORMS)
        ):
            return f"{unit_name}.conv"
    return None


def _apply_attn(layer: nn.Layer, inputs, output):
    return getattr(layer, ATTN_NAME)(output)


def official_places(model: nn.Layer) -> list[str]:
    """Names of the layers that SimAM follows in the official placement (empty for models without such blocks).

    Raises ValueError when a block is named like one of PaddleClas's but not built like it.
    """
    places, misfits = [], []
    for name, block in model.named_sublayers(include_self=True):
        if type(block) in OFFICIAL_PLACEMENT:
            child = OFFICIAL_PLACEMENT[type(block)](block)
        elif type(block).__name__ in PADDLECLAS_PLACEMENT:
            child = _paddleclas_site(block)
            if child is None:
                misfits.append((name or "the model", type(block).__name__))
                continue
        else:
            continue
        places.append(f"{name}.{child}" if name else child)
    if misfits:
        cls = misfits[0][1]
        names = [name for name, c in misfits if c == cls]
        built = " or ".join(f"{unit}.conv, a {kind} NCHW Conv2D, then {unit}.bn" for unit, kind in PADDLECLAS_PLACEMENT[cls])
        raise ValueError(
            f"{cls} {listed(names, 3)}: named like a block of a PaddleClas backbone but not built like one ({built}), "
            "so there is no default placement for it: pass after_names= (sublayer names, shell patterns allowed) "
            "or after_types="
        )
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
    neither, the official placement in the blocks of paddle.vision's ResNets and MobileNetV2 and of
    PaddleClas's ResNets, ResNet-vd, MobileNetV1, MobileNetV3 and PP-LCNet is used (see the module docstring).
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
                f"{type(model).__name__} has no block of a paddle.vision.models ResNet or MobileNetV2, nor of a PaddleClas "
                "ResNet, ResNet-vd, MobileNetV1, MobileNetV3 or PP-LCNet, so there is no default placement: pass after_types= "
                "(e.g. paddle.nn.Conv2D) or after_names= (sublayer names)"
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
        raise ValueError(f"{listed(taken, 3)} already have an attention layer (was add_simam called twice?)")
    for _, layer in chosen:
        layer.add_sublayer(ATTN_NAME, create_attn(attn_layer, getattr(layer, "_out_channels", None), **attn_kwargs))
        layer.register_forward_post_hook(_apply_attn)
    return len(chosen)


def add_simam(
    model: nn.Layer,
    after_types: type | Iterable[type] | None = None,
    after_names: str | Iterable[str] | None = None,
    e_lambda: float = E_LAMBDA,
) -> int:
    """Insert SimAM(e_lambda) into ``model`` in place and return how many were inserted.

    With no ``after_types``/``after_names`` on a ``paddle.vision.models`` ResNet: after ``conv2`` of
    every block, before ``bn2``; on a MobileNetV2: after every depthwise convolution, before its BatchNorm
    (the official placements); on PaddleClas's ResNet(-vd), MobileNetV1, MobileNetV3 and PP-LCNet the same rule (see
    the module docstring). Parameters and state-dict keys are unchanged.
    """
    return add_attention(model, "simam", after_types=after_types, after_names=after_names, e_lambda=e_lambda)
