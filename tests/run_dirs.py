"""Run directories for tests (a config and weights, as ``simam_paddle.train`` leaves them), and the ONNX skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import paddle
import pytest

from simam_paddle.config import load_config, save_config
from simam_paddle.runs import build_run_model


def make_run_dir(path: Path, *overrides: str, seed: int = 0, weights: tuple[str, ...] = ("best",)) -> Path:
    """A run directory at ``path`` with random weights of the model that ``overrides`` configure."""
    config = load_config(None, list(overrides))
    path.mkdir(parents=True, exist_ok=True)
    save_config(config, path / "config.yaml")
    paddle.seed(seed)
    model = build_run_model(config)
    for name in weights:
        paddle.save(model.state_dict(), str(path / f"{name}_model.pdparams"))
    return path


ONNX_MISSING = [name for name in ("paddle2onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING), reason=f"{' and '.join(ONNX_MISSING)} not installed (pip install -e '.[export]'; CI installs .[dev])"
)
