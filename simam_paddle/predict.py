"""Classify image files with a trained run or with its export: the top-k classes and their probabilities.

    python -m simam_paddle.predict RUN_DIR|EXPORT_DIR IMAGE [IMAGE ...] [--top-k 3] [--weights best|final]
                                   [--threads N] [--no-onednn] [--program auto|simam_op|standard]

RUN_DIR is a run directory (its ``best`` or ``final`` weights in the dynamic graph); EXPORT_DIR is a
folder written by ``simam_paddle.export`` (Paddle Inference or ONNX), or a file in it, run with the
fastest engine settings measured (``simam_paddle.runner.open_model``: oneDNN on; threads: the cores
available, or ``--threads``; the program with the SimAM operator where it can run, or ``--program``),
which are named once on stderr. Images of any size are prepared by the
test transforms (resize to the run's ``data.image_size``, 128 in the recipe, and normalise). The
classes are named as the run saved them (``classes.json``; export.json in an export). A file that
cannot be read as an image stops the run before any model is loaded, with an error naming it and a
non-zero exit.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("predict", "Top-k classes of image files, from a run or an export.")
    cli.add_path(p, exports=True)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default: 3)")
    cli.add_weights(p)
    cli.add_engine(p)
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np

from .data import load_image, preprocess
from .errors import ArgumentError
from .losses import softmax
from .runner import open_model

BATCH_SIZE = 64


def predict(
    model_path: str | Path, image_paths: list[str | Path], top_k: int = 3, weights: str = "best",
    onednn: bool = True, threads: int | None = None, log: Callable[[str], None] | None = None,
    program: str = "auto",
) -> list[list[tuple[str, float]]]:
    """For each image, its ``top_k`` (class name, probability) pairs, most probable first."""
    if top_k < 1:
        raise ArgumentError(f"top-k must be >= 1, got {top_k}")
    images = [load_image(p) for p in image_paths]  # every file is read before the model is loaded
    model = open_model(model_path, weights, onednn, threads, program, log=log)
    names, size = model.class_names, model.input_size
    k = min(top_k, len(names))
    results = []
    for start in range(0, len(images), BATCH_SIZE):
        for probs in softmax(model(preprocess(images[start : start + BATCH_SIZE], size))):
            order = np.argsort(-probs, kind="stable")[:k]
            results.append([(names[i], float(probs[i])) for i in order])
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        results = predict(args.path, args.images, args.top_k, args.weights, args.onednn, args.threads,
                          log=lambda line: print(line, file=sys.stderr), program=args.program)
        for path, top in zip(args.images, results):
            print(f"{path}: " + ", ".join(f"{name} {prob:.4f}" for name, prob in top))

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
