"""The model a validated config describes: ``build_from_config(config)``.

The config's ``model`` section names the model and sets the options its entry in ``MODELS`` accepts
(``e_lambda`` of SimAM models, ``dropout`` and ``fast_conv`` of AlexNet); the cross-key checks
(an input size the model takes, dropout only where there is one) belong to the config schema
(``simam_paddle.config.check_config``) and are run here too, for configs assembled in code.
"""

from __future__ import annotations

from paddle import nn

from ..config import ConfigError, check_config
from . import MODELS, build_model


def model_options(config: dict) -> dict:
    """The keyword arguments of ``build_model`` that the config's model section sets."""
    model = config["model"]
    accepted = MODELS[model["name"]].options
    return {key: model[key] for key in ("e_lambda", "dropout", "fast_conv") if key in accepted}


def build_from_config(config: dict) -> nn.Layer:
    """The model a validated config describes (``model.num_classes`` resolved: see ``run_dir.resolve_classes``)."""
    check_config(config)
    if config["model"]["num_classes"] is None:
        raise ConfigError("model.num_classes is null: it is resolved from the data (resolve_classes) before a model is built")
    return build_model(config["model"]["name"], num_classes=config["model"]["num_classes"], **model_options(config))
