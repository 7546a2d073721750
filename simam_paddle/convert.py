"""Convert a PyTorch checkpoint of a SimAM ResNet or MobileNetV2 into Paddle weights.

    python -m simam_paddle.convert CHECKPOINT --model resnet50_simam [--output DIR] [-o model.e_lambda=0.1]

writes ``DIR/resnet50_simam.pdparams`` (DIR: the current folder by default).

Made for the ImageNet checkpoints of the SimAM paper's official code (ResNet-18/34/50/101 and
MobileNetV2 with SimAM, lambda 0.1): the output loads into ``build_model(NAME, num_classes=1000,
e_lambda=0.1)``, and serves as ``model.pretrained`` for fine-tuning. Plain torchvision-style ResNet and
MobileNetV2 checkpoints convert the same way into the plain models.

What it maps, from the official code's layout to ``paddle.vision``'s:

- the checkpoint's state dict, also inside a ``{"state_dict": ...}`` (or ``{"model": ...}``) wrapper
  beside anything else (epoch, optimizer state, best accuracy), with or without the ``module.`` prefix
  of ``DataParallel``;
- ``thop.profile``'s counters, which the official training scripts leave in the model: a
  ``total_ops`` and a ``total_params`` buffer (one number each) on every module, at any prefix, are
  dropped and counted: they hold no weights;
- ResNet: SimAM wraps each block's 3x3 conv in a Sequential, ``layerL.B.conv2.0.weight`` -> ``layerL.B.conv2.weight``;
- MobileNetV2: SimAM sits inside each depthwise conv-BN-ReLU6 block, moving its BatchNorm from index 1
  to 2 (``features.N.conv.M.2.*`` -> ``features.N.conv.M.1.*``); the classifier is a Linear alone
  (``classifier.0``), where Paddle's has a Dropout first (``classifier.1``);
- BatchNorm's ``running_mean`` / ``running_var`` -> ``_mean`` / ``_variance``; ``num_batches_tracked`` is dropped;
- Linear weights (the only 2-D ones) are transposed: PyTorch stores [out, in], Paddle [in, out].

The checkpoint is read by ``simam_paddle.torch_zip`` (no PyTorch needed, and nothing but tensors and
plain values unpickled; where the storages were saved, e.g. ``cuda:0``, does not matter). The number of
classes is read from the classifier. Every converted key and shape must fit the model exactly: a
checkpoint that does not is refused, naming the keys (in the checkpoint's own names) and shapes, and
saying which of two cases it is: the weights of another network (missing or reshaped weights, or those
of a convertible network other than ``--model``, which is then named), or every weight of ``--model``
there and tensors beside them that this converter does not know. The output is written atomically;
an existing file is replaced only with ``--overwrite``.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import re
import sys
from pathlib import Path
from typing import NamedTuple

from .model_list import MODEL_LIST

# The ResNets and MobileNetV2, plain and with SimAM: every model but AlexNet, which has no ImageNet checkpoint
CONVERTIBLE = [name for name in MODEL_LIST if not name.startswith("alexnet")]
ARCHITECTURES = [name for name in CONVERTIBLE if not name.endswith("_simam")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("convert", "Convert a PyTorch checkpoint of a (SimAM) ResNet or MobileNetV2 into Paddle weights.")
    p.add_argument("checkpoint", help="the PyTorch checkpoint (torch.save's zip format), e.g. the official SimAM ImageNet ones")
    p.add_argument("--model", required=True, choices=CONVERTIBLE, metavar="NAME",
                   help=f"the network the checkpoint holds, as build_model names it: {', '.join(CONVERTIBLE)}")
    cli.add_output(p, "NAME.pdparams", "the current folder")
    cli.add_overrides(p, "the SimAM lambda of the model built for the check (default: the official runs', 0.1)",
                      "model.e_lambda=0.1")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NAME.pdparams in --output")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np
import paddle

from .config import load_config
from .errors import ArgumentError, CheckpointError
from .io import atomic_paddle_save
from .layers.messages import listed
from .models import MODELS, build_model, load_weights
from .torch_zip import read_torch_checkpoint

WRAPPERS = ("state_dict", "model")  # keys under which a training checkpoint keeps the model's state dict
COUNTERS = ("total_ops", "total_params")  # the buffers thop.profile registers on every module, one number each
# Renames from the official (torchvision-style) names to paddle.vision's, per family, applied in order.
COMMON = ((r"\.running_mean$", "._mean"), (r"\.running_var$", "._variance"))
RENAMES = {
    "resnet": ((r"^(layer\d+\.\d+\.conv2)\.0\.weight$", r"\1.weight"), *COMMON),
    "mobilenet_v2": (
        (r"^(features\.\d+\.conv\.\d+)\.2\.(weight|bias|running_mean|running_var)$", r"\1.1.\2"),
        (r"^classifier\.0\.(weight|bias)$", r"classifier.1.\1"),
        *COMMON,
    ),
}
# The networks with weights of their own; a _simam model holds exactly its plain model's weights.


def _family(model: str) -> str:
    if model not in CONVERTIBLE:
        raise ArgumentError(f"--model {model!r}: checkpoints convert into {', '.join(CONVERTIBLE)}")
    return "resnet" if model.startswith("resnet") else "mobilenet_v2"


def find_state_dict(obj, where: str) -> dict[str, np.ndarray]:
    """The state dict in a loaded checkpoint, keys as saved: the dict of arrays itself, or one under a
    ``WRAPPERS`` key."""
    for _ in range(3):  # a wrapper inside a wrapper at most
        if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if isinstance(obj, dict) and any(k in obj for k in WRAPPERS):
            obj = obj[next(k for k in WRAPPERS if k in obj)]
            continue
        break
    held = f"a dict with keys {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise CheckpointError(f"{where} holds {held}: expected a state dict of tensors, or one under "
                          f"{' or '.join(repr(k) for k in WRAPPERS)}")


def model_weights(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The state dict without thop's counters (a ``COUNTERS`` name at any prefix, holding one number),
    and without a ``module.`` prefix that every remaining key has; and how many counters were dropped."""
    kept = {k: v for k, v in state.items() if not (k.rsplit(".", 1)[-1] in COUNTERS and v.size == 1)}
    if kept and all(k.startswith("module.") for k in kept):
        kept = {k.removeprefix("module."): v for k, v in kept.items()}
    return kept, len(state) - len(kept)


def to_paddle(state: dict[str, np.ndarray], family: str) -> dict[str, tuple[str, np.ndarray]]:
    """Paddle key -> (the checkpoint's key, the array in Paddle's layout)."""
    out = {}
    for key, array in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = key
        for pattern, replacement in RENAMES[family]:
            name = re.sub(pattern, replacement, name)
        out[name] = (key, array.T.copy() if array.ndim == 2 else array)
    return out


def _classes(converted: dict[str, tuple[str, np.ndarray]], model: str) -> int | None:
    """The number of classes of the checkpoint's classifier, the one ``model``'s record names; None without one."""
    head = converted.get(MODELS[model].head[0])
    return int(head[1].shape[1]) if head is not None and head[1].ndim == 2 else None


class Fit(NamedTuple):
    """How a converted state dict fits a model's keys and shapes."""

    missing: list[str]  # the model's keys (Paddle names) that the checkpoint lacks
    unexpected: list[str]  # the checkpoint's keys (its own names) that the model has no place for
    shapes: list[str]  # "<checkpoint key> [shape] (as <Paddle key> [shape]) vs [model's shape]"

    @classmethod
    def of(cls, converted: dict[str, tuple[str, np.ndarray]], own: dict[str, list[int]]) -> Fit:
        shapes = sorted(f"{converted[k][0]} {list(converted[k][1].shape)} (as {k} {list(converted[k][1].shape)}) vs "
                        f"{own[k]}" for k in set(converted) & set(own) if list(converted[k][1].shape) != own[k])
        return cls(sorted(set(own) - set(converted)), sorted(converted[k][0] for k in set(converted) - set(own)), shapes)

    @property
    def weights_fit(self) -> bool:
        """Every weight of the model is in the checkpoint, with its shape."""
        return not self.missing and not self.shapes


def _shapes(net: paddle.nn.Layer) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def fitting_models(state: dict[str, np.ndarray], simam: bool) -> dict[str, int]:
    """The convertible models all of whose weights ``state`` holds with their shapes (the _simam ones if
    ``simam``: a SimAM model has its plain model's weights), each with how many of the checkpoint's
    tensors it leaves over, fewest first."""
    found = []
    for arch in ARCHITECTURES:
        family = _family(arch)
        converted = to_paddle(state, family)
        classes = _classes(converted, arch)
        if classes is None:
            continue
        with paddle.LazyGuard():  # keys and shapes only: no weights are initialised
            fit = Fit.of(converted, _shapes(build_model(arch, num_classes=classes)))
        if fit.weights_fit:
            found.append((arch + ("_simam" if simam else ""), len(fit.unexpected)))
    return dict(sorted(found, key=lambda item: item[1]))


def mismatch_message(state: dict[str, np.ndarray], fit: Fit, where: str, model: str) -> str:
    """Why ``state`` (``fit`` against ``model``) does not convert, and the fix: the --model whose
    weights it holds, or the extra tensors removed."""
    problems = "; ".join(f"{label}: {listed(items)}" for label, items in (
        ("missing (Paddle names)", fit.missing), ("unexpected", fit.unexpected),
        ("shape differs (checkpoint vs model)", fit.shapes)) if items)
    better = [m for m, left in fitting_models(state, model.endswith("_simam")).items()
              if m != model and (not fit.weights_fit or left < len(fit.unexpected))]
    if better:
        return f"{where} does not fit {model} ({problems}). It holds the weights of {better[0]}: pass --model {better[0]}"
    if not fit.weights_fit:
        return (f"{where} does not fit {model} ({problems}), nor any other model this converter knows. Check --model: "
                f"it names the network the checkpoint was trained as, one of {', '.join(CONVERTIBLE)}")
    return (f"{where} holds every weight of {model}, and tensors beside them that are no weights of it ({problems}). "
            "This converter drops only BatchNorm's num_batches_tracked and thop's total_ops / total_params counters; "
            "if these extra tensors are not needed either, save the state dict without them, "
            "torch.save({k: v for k, v in state_dict.items() if k not in EXTRA}, PATH), and convert that")


def convert(checkpoint: str | Path, model: str, output: str | Path = ".", e_lambda: float | None = None,
            overwrite: bool = False) -> dict:
    """Convert ``checkpoint`` into Paddle weights for ``model``, written as ``<model>.pdparams`` into the
    folder ``output``; return what was done (``dropped``: how many profiling counters were left out).
    ``e_lambda``: of the SimAM model built for the check (default: the official lambda of its record)."""
    family = _family(model)
    output = Path(output) / f"{model}.pdparams"
    if output.exists() and not overwrite:
        raise ArgumentError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")
    where = str(checkpoint)
    state, dropped = model_weights(find_state_dict(read_torch_checkpoint(checkpoint), where))
    converted = to_paddle(state, family)
    num_classes = _classes(converted, model)
    if num_classes is None:
        others = list(fitting_models(state, model.endswith("_simam")))
        hint = f" It holds the weights of {others[0]}: pass --model {others[0]}" if others else ""
        raise CheckpointError(f"{where} has no classifier {MODELS[model].head[0]} (as Paddle names it): is it a "
                              f"{family} checkpoint? Its first keys: {listed(list(state))}.{hint}")
    options = {"e_lambda": e_lambda or MODELS[model].official_lambda} if model.endswith("_simam") else {}
    net = build_model(model, num_classes=num_classes, **options)
    own = net.state_dict()
    fit = Fit.of(converted, _shapes(net))
    if any(fit):
        raise CheckpointError(mismatch_message(state, fit, where, model))
    weights = {k: array.astype(own[k].numpy().dtype) for k, (_, array) in converted.items()}
    load_weights(net, weights, model_name=model, source=where)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_paddle_save(net.state_dict(), output)
    return {"model": model, "num_classes": num_classes, "tensors": len(weights), "output": str(output),
            "options": options, "dropped": dropped}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        overrides = cli.overrides(args.override, "convert", ("model.e_lambda",), "convert builds the model --model names")
        e_lambda = load_config(None, overrides)["model"]["e_lambda"] if overrides else None
        done = convert(args.checkpoint, args.model, args.output or ".", e_lambda, args.overwrite)
        if done["dropped"]:
            print(f"dropped {done['dropped']} profiling counters (thop's total_ops / total_params buffers), which "
                  "hold no weights")
        built = ", ".join(f"{k}={v}" for k, v in {"num_classes": done["num_classes"], **done["options"]}.items())
        print(f"wrote {done['output']}: {done['tensors']} tensors of {args.checkpoint} as {done['model']} "
              f"({done['num_classes']} classes); load it with build_model({done['model']!r}, {built}), or fine-tune "
              f"from it with -o model.name={done['model']} -o model.pretrained={done['output']}")

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
