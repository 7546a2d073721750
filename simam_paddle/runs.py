"""A run directory, as ``simam_paddle.train`` leaves it, and the model it holds.

    RUN_DIR/config.yaml            the resolved config
    RUN_DIR/best_model.pdparams    weights of the best validation epoch (+ best_optimizer.pdopt)
    RUN_DIR/final_model.pdparams   weights after the last epoch (+ final_optimizer.pdopt)
    RUN_DIR/history.json           every recorded figure
    RUN_DIR/checkpoint/            the resumable state of the last completed epoch
"""

from __future__ import annotations

from pathlib import Path

import paddle

from .config import SCHEMA, ConfigError, load_config
from .models import build_model

WEIGHTS = {"best": "best_model.pdparams", "final": "final_model.pdparams"}


def run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {path} is missing (train one with python -m simam_paddle.train)")
    return load_config(path)


def build_run_model(config: dict) -> paddle.nn.Layer:
    model = config["model"]
    kwargs = {"e_lambda": model["e_lambda"]}
    if model["name"].startswith("alexnet"):
        kwargs["dropout"] = model["dropout"]
    elif model["dropout"] != SCHEMA["model"]["dropout"].default:
        raise ConfigError(f"model.dropout applies to AlexNet models only; {model['name']} has no dropout to set")
    return build_model(model["name"], num_classes=model["num_classes"], **kwargs)


def load_run_model(run_dir: str | Path, weights: str = "best") -> tuple[paddle.nn.Layer, dict]:
    """The model of a run with its ``best`` or ``final`` weights, in eval mode, and the run's config."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    config = run_config(run_dir)
    path = Path(run_dir) / WEIGHTS[weights]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run has no {weights} weights yet (has it finished an epoch?)")
    model = build_run_model(config)
    model.set_state_dict(paddle.load(str(path)))
    model.eval()
    return model, config
