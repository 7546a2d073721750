"""The experiment's model names with their facts, readable without Paddle: ``simam-train --list-models``
prints them at once, where building every model to count its parameters would load Paddle and the C++
libraries. tests/test_model_list.py checks every row against the model that ``simam_paddle.models``
builds under that name, and the names against ``list_models()``.
"""

from __future__ import annotations

from typing import NamedTuple


class Row(NamedTuple):
    parameters: int  # trainable parameters for 10 classes (BatchNorm's running statistics not counted)
    simam_layers: int  # SimAM layers in the model
    input_size: int | None  # the square input size the model needs; None: any size
    description: str


_SIMAM_PLACES = {"alexnet": "after each convolution", "resnet": "after the 3x3 convolution of each block",
                 "mobilenet_v2": "after each depthwise convolution"}


def _pair(name: str, family: str, parameters: int, simam_layers: int, input_size: int | None, what: str) -> dict:
    """The plain model and its SimAM twin, which has the same parameters."""
    return {name: Row(parameters, 0, input_size, what),
            f"{name}_simam": Row(parameters, simam_layers, input_size, f"{what}, SimAM {_SIMAM_PLACES[family]}")}


MODEL_LIST: dict[str, Row] = {
    **_pair("alexnet", "alexnet", 7_524_042, 5, 128, "AlexNet of the SimAM notebook (the recipe)"),
    **_pair("resnet18", "resnet", 11_181_642, 8, None, "ResNet-18 (paddle.vision)"),
    **_pair("resnet34", "resnet", 21_289_802, 16, None, "ResNet-34 (paddle.vision)"),
    **_pair("resnet50", "resnet", 23_528_522, 16, None, "ResNet-50 (paddle.vision)"),
    **_pair("resnet101", "resnet", 42_520_650, 33, None, "ResNet-101 (paddle.vision)"),
    **_pair("resnet152", "resnet", 58_164_298, 50, None, "ResNet-152 (paddle.vision)"),
    **_pair("mobilenet_v2", "mobilenet_v2", 2_236_682, 17, None, "MobileNetV2 (paddle.vision)"),
}


def list_models_text() -> str:
    """What ``simam-train --list-models`` prints: a line per model name, sorted, with its facts."""
    width = max(map(len, MODEL_LIST))
    lines = [f"{'model.name':<{width}}  {'parameters':>10}  SimAM  input    description "
             "(parameters: trainable, for 10 classes; SimAM: its layers)"]
    for name in sorted(MODEL_LIST):
        row = MODEL_LIST[name]
        size = f"{row.input_size}x{row.input_size}" if row.input_size else "any"
        lines.append(f"{name:<{width}}  {row.parameters:>10,}  {row.simam_layers:>5}  {size:<7}  {row.description}")
    return "\n".join(lines) + "\n"
