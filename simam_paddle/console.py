"""The console scripts ``simam-<tool>`` (pyproject.toml's ``[project.scripts]``): each runs the module
``simam_paddle.<tool>`` as ``python -m`` does (``cli.console``), so that it answers ``--help`` before
Paddle loads and its usage lines name the script."""

from .cli import console

TOOLS = ("train", "evaluate", "predict", "compare", "export", "visualize", "reproduce", "convert", "paddleclas")
train, evaluate, predict, compare, export, visualize, reproduce, convert, paddleclas = map(console, TOOLS)
