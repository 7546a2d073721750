"""Loading a state dict into a model, checked key by key and shape by shape.

Paddle's ``set_state_dict`` skips what does not fit with a warning and leaves those parameters as
built, so the weights of another model load "successfully" into random ones. ``load_weights`` is the
one way this package loads weights: strict by default (every key present on both sides with the same
shape, else a ``WeightsMismatch`` naming the source, the model and the first mismatches), and with
``strict=False`` a deliberate partial load that returns, and the caller reports, what it skipped.
``load_pretrained`` is fine-tuning's load: strict, but for a classifier of another number of classes,
which keeps its new values.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import paddle
from paddle import nn

from ..errors import WeightsMismatch
from ..layers.messages import listed


def read_state(weights: str | Path | dict) -> tuple[dict, str]:
    """A state dict and a name for it in messages, from a dict or the path of a ``.pdparams`` file."""
    if isinstance(weights, dict):
        return weights, "the given state dict"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = paddle.load(str(path))
    except Exception as exc:  # a truncated or foreign file: name it
        raise WeightsMismatch(f"{path} is not a readable Paddle state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise WeightsMismatch(f"{path} holds a {type(state).__name__}, not a state dict of parameters")
    return state, str(path)


def load_weights(
    model: nn.Layer, weights: str | Path | dict, strict: bool = True, model_name: str | None = None, source: str | None = None,
    keep: tuple[str, ...] = (),
) -> list[str]:
    """Load ``weights`` (a state dict or a ``.pdparams`` path) into ``model``; return the skipped keys.

    strict=True: any missing, unexpected or wrongly shaped key raises ``WeightsMismatch``.
    strict=False: those keys are skipped (the model keeps its own values there), reported in a warning
    and returned, sorted. ``keep``: keys of the model that keep their values whatever the weights hold
    there (the caller reports them). ``model_name`` and ``source`` name the model and the weights in messages.
    """
    state, name = read_state(weights)
    source = source or name
    own = model.state_dict()
    kept = {k: own.pop(k) for k in keep}
    state = {k: v for k, v in state.items() if k not in kept}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if list(state[k].shape) != list(own[k].shape))
    if strict and (missing or unexpected or mismatched):
        problems = [f"{label}: {listed(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        if mismatched:
            shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in mismatched]
            problems.append(f"shape differs (file vs model): {listed(shapes)}")
        name = model_name or type(model).__name__
        raise WeightsMismatch(
            f"{source} does not fit the model {name} (" + "; ".join(problems) + "). "
            "Check the model name, depth and num_classes it was trained with, or load with strict=False to skip what differs"
        )
    skipped = sorted(missing + mismatched)
    if skipped:
        warnings.warn(f"{source}: {len(skipped)} key(s) not loaded, kept as built (strict=False): {listed(skipped)}",
                      stacklevel=2)
    model.set_state_dict({**{k: own[k] if k in skipped else state[k] for k in own}, **kept})
    return skipped


def load_pretrained(model: nn.Layer, weights: str | Path, model_name: str, source: str | None = None) -> str:
    """Initialise ``model`` (the model ``model_name`` of ``simam_paddle.models.MODELS``) from the weights file
    ``weights``, strictly, except the classifier that the model's record names when its number of classes
    differs (left as built); return what was done, for the log. ``source`` names the weights in messages
    (default: the path)."""
    from . import MODELS  # the registry imports this module

    head = MODELS[model_name].head
    state, _ = read_state(weights)
    own = model.state_dict()
    new_head = [k for k in head if k in state and list(state[k].shape) != list(own[k].shape)]
    load_weights(model, state, model_name=model_name, source=source or str(weights), keep=tuple(new_head))
    if not new_head:
        return f"initialised from {weights} (every parameter)"
    theirs = list(state[head[0]].shape)[-1] if head[0] in state else "?"
    return (f"initialised from {weights}, except the classifier {', '.join(new_head)}, which starts new: the weights "
            f"have {theirs} classes, the model {list(own[head[0]].shape)[-1]}")
