"""Loading a state dict into a model, checked key by key and shape by shape.

Paddle's ``set_state_dict`` skips what does not fit with a warning and leaves those parameters as
built, so the weights of another model load "successfully" into random ones. ``load_weights`` is the
one way this package loads weights: strict by default (every key present on both sides with the same
shape, else a ``WeightsMismatch`` naming the source, the model and the first mismatches), and with
``strict=False`` a deliberate partial load that returns, and the caller reports, what it skipped.
``load_pretrained`` is fine-tuning's load: strict, but for a classifier of another number of classes,
which keeps its new values.

Provenance: the weights a run writes carry, under the key ``PROVENANCE``, the name of the model that
wrote them and where (:func:`with_provenance`). ``paddle.load`` returns it as one more entry, which
Paddle's ``set_state_dict`` ignores, so the files stay plain state dicts for anyone else; here
``read_state`` takes it out, and loading weights that another model wrote is refused, naming both,
unless ``other_model=True`` says it is meant (starting a SimAM model from its plain twin's weights,
whose keys are the same). Files without it (written elsewhere or before) load as they are.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import paddle
from paddle import nn

from ..errors import WeightsMismatch
from ..layers.messages import listed

PROVENANCE = "__simam_paddle__"


def with_provenance(state: dict, model_name: str, written_by: str) -> dict:
    """``state`` with the record of the model and the run (or tool) that wrote it, for ``paddle.save``."""
    return {**state, PROVENANCE: {"model": model_name, "written_by": written_by}}


def read_state(weights: str | Path | dict) -> tuple[dict, str, dict | None]:
    """A state dict (without its provenance), a name for it in messages, and its provenance or None,
    from a dict or the path of a ``.pdparams`` file."""
    if isinstance(weights, dict):
        state = dict(weights)
        return state, "the given state dict", state.pop(PROVENANCE, None)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = paddle.load(str(path))
    except Exception as exc:  # a truncated or foreign file: name it
        raise WeightsMismatch(f"{path} is not a readable Paddle state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise WeightsMismatch(f"{path} holds a {type(state).__name__}, not a state dict of parameters")
    provenance = state.pop(PROVENANCE, None)
    return state, str(path), provenance if isinstance(provenance, dict) else None


def load_weights(
    model: nn.Layer, weights: str | Path | dict, strict: bool = True, model_name: str | None = None, source: str | None = None,
    keep: tuple[str, ...] = (), other_model: bool = False,
) -> list[str]:
    """Load ``weights`` (a state dict or a ``.pdparams`` path) into ``model``; return the skipped keys.

    strict=True: any missing, unexpected or wrongly shaped key raises ``WeightsMismatch``.
    strict=False: those keys are skipped (the model keeps its own values there), reported in a warning
    and returned, sorted. ``keep``: keys of the model that keep their values whatever the weights hold
    there (the caller reports them). ``model_name`` and ``source`` name the model and the weights in messages.
    Weights that another model than ``model_name`` wrote (their provenance) are refused unless ``other_model``.
    """
    state, name, provenance = read_state(weights)
    source = source or name
    if provenance and model_name and provenance.get("model") != model_name and not other_model:
        raise WeightsMismatch(
            f"{source} holds the weights of {provenance.get('model')} (written by {provenance.get('written_by')}), "
            f"not of {model_name}. Use the weights of a {model_name} run; to start {model_name} from them on purpose "
            "(a SimAM model from its plain twin, say), set model.pretrained_other_model=true (load_weights(..., "
            "other_model=True) in Python)"
        )
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


def load_pretrained(model: nn.Layer, weights: str | Path, model_name: str, source: str | None = None,
                    other_model: bool = False) -> str:
    """Initialise ``model`` (the model ``model_name`` of ``simam_paddle.models.MODELS``) from the weights file
    ``weights``, strictly, except the classifier that the model's record names when its number of classes
    differs (left as built); return what was done, for the log. ``source`` names the weights in messages
    (default: the path); ``other_model`` allows weights that another model wrote (see the module docstring)."""
    from . import MODELS  # the registry imports this module

    head = MODELS[model_name].head
    state, _, provenance = read_state(weights)
    own = model.state_dict()
    new_head = [k for k in head if k in state and list(state[k].shape) != list(own[k].shape)]
    if provenance:
        state[PROVENANCE] = provenance
    load_weights(model, state, model_name=model_name, source=source or str(weights), keep=tuple(new_head),
                 other_model=other_model)
    if not new_head:
        return f"initialised from {weights} (every parameter)"
    theirs = list(state[head[0]].shape)[-1] if head[0] in state else "?"
    return (f"initialised from {weights}, except the classifier {', '.join(new_head)}, which starts new: the weights "
            f"have {theirs} classes, the model {list(own[head[0]].shape)[-1]}")
