"""Classify images with a trained run or with its export: the top-k classes and their probabilities.

    python -m simam_paddle.predict RUN_DIR|EXPORT_DIR INPUT [INPUT ...] [--top-k 3] [--output results.csv|json]
                                   [--batch-size 64] [--weights best|final]
                                   [--threads N] [--no-onednn] [--program auto|simam_op|standard]

RUN_DIR is a run directory (its ``best`` or ``final`` weights in the dynamic graph); EXPORT_DIR is a
folder written by ``simam_paddle.export`` (Paddle Inference or ONNX), or a file in it, run with the
fastest engine settings measured (``simam_paddle.runner.open_model``: oneDNN on; threads: the cores
available, or ``--threads``; the program with the SimAM operator where it can run, or ``--program``),
which are named once on stderr.

Each INPUT is an image file, a folder (its .jpg/.jpeg/.png files, in its subfolders too, sorted by path;
other files are left out and counted on stderr), or a glob pattern (``"photos/*.jpg"``, ``**`` for any
depth, quoted so that the shell leaves it to this tool). Every input is listed, and a missing file, a
folder without images or a pattern that matches none stops the tool naming it, before the model is
loaded. Images are then read, prepared by the test transforms (resize to the run's ``data.image_size``,
128 in the recipe, and normalise) and classified ``--batch-size`` at a time, so memory stays bounded;
a file that cannot be read as an image stops the tool naming it (exit 2). The classes are named as the
run saved them (``classes.json``; export.json in an export).

Each image's line is printed as its batch finishes (``path: class prob, class prob, ...``).
``--output FILE`` also writes every image's top-k into FILE, once all are classified: ``.csv`` (a header,
then ``path,class_1,prob_1,...,class_k,prob_k`` per image) or ``.json`` (a list of ``{"path", "top_k":
[{"class", "probability"}, ...]}``), chosen by its suffix. Unlike the tools that write several files
into an ``--output`` folder, predict writes one table, so its ``--output`` names that file.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import csv
import glob
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

BATCH_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("predict", "Top-k classes of images (files, folders, glob patterns), from a run or an export.")
    cli.add_path(p, exports=True)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (JPEG, PNG), folders of them (subfolders included), or quoted glob patterns")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default: 3)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="also write every image's top-k into FILE: results.csv or results.json (by the suffix)")
    p.add_argument("--batch-size", type=cli.positive_int, default=BATCH_SIZE, metavar="N",
                   help=f"images read and classified at a time (default: {BATCH_SIZE})")
    cli.add_weights(p)
    cli.add_engine(p)
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np

from .data import load_image, preprocess
from .data.sources import IMAGE_SUFFIXES
from .errors import ArgumentError
from .io import atomic_write_json, atomic_write_text
from .losses import softmax
from .runner import open_model

OUTPUT_FORMATS = (".csv", ".json")
GLOB_CHARACTERS = "*?["


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(inputs: list[str | Path], log: Callable[[str], None] | None = None) -> list[Path]:
    """The image files that ``inputs`` name, in order (see the module docstring): files as given, a folder's
    images sorted by path, a glob pattern's matches sorted. Nothing found for an input is an error naming it."""
    files: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise FileNotFoundError(f"{path}: a folder with no {'/'.join(IMAGE_SUFFIXES)} image files")
            if log is not None and len(found) > len(images):
                log(f"{path}: left out {len(found) - len(images)} files that are not {'/'.join(IMAGE_SUFFIXES)} images")
            files += images
        elif path.exists() or not any(c in str(given) for c in GLOB_CHARACTERS):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such image file")
            files.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(given), recursive=True))
            images = [p for p in matches if _is_image(p)]
            if not images:
                raise FileNotFoundError(f"{given}: the pattern matches no {'/'.join(IMAGE_SUFFIXES)} image file"
                                        + (f" (it matches {len(matches)} other paths)" if matches else ""))
            files += images
    return files


def output_format(path: str | Path | None) -> str | None:
    """``.csv`` or ``.json``, the format of ``--output`` by its suffix (None: no file)."""
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ArgumentError(f"--output {path}: predict writes a .csv or .json file, chosen by the suffix; "
                            f"got {suffix or 'no suffix'}")
    return suffix


def predict_batches(
    model_path: str | Path, image_paths: list[Path], top_k: int = 3, weights: str = "best", onednn: bool = True,
    threads: int | None = None, log: Callable[[str], None] | None = None, program: str = "auto",
    batch_size: int = BATCH_SIZE,
) -> Iterator[list[tuple[Path, list[tuple[str, float]]]]]:
    """The images' top-``top_k`` (class name, probability) pairs, most probable first, a batch at a time:
    each item is a list of (path, pairs). The model is opened before the first image is read."""
    if top_k < 1:
        raise ArgumentError(f"top-k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise ArgumentError(f"batch size must be >= 1, got {batch_size}")
    model = open_model(model_path, weights, onednn, threads, program, log=log)
    names, size = model.class_names, model.input_size
    k = min(top_k, len(names))
    for start in range(0, len(image_paths), batch_size):
        paths = image_paths[start : start + batch_size]
        probabilities = softmax(model(preprocess([load_image(p) for p in paths], size)))
        yield [(path, [(names[i], float(probs[i])) for i in np.argsort(-probs, kind="stable")[:k]])
               for path, probs in zip(paths, probabilities)]


def predict(model_path: str | Path, image_paths: list[str | Path], top_k: int = 3, weights: str = "best",
            onednn: bool = True, threads: int | None = None, log: Callable[[str], None] | None = None,
            program: str = "auto", batch_size: int = BATCH_SIZE) -> list[list[tuple[str, float]]]:
    """For each image file, its ``top_k`` (class name, probability) pairs, most probable first."""
    paths = [Path(p) for p in image_paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
    return [top for batch in predict_batches(model_path, paths, top_k, weights, onednn, threads, log, program,
                                             batch_size) for _, top in batch]


def write_results(path: Path, results: list[tuple[Path, list[tuple[str, float]]]]) -> None:
    """``results`` (path, top-k pairs) into ``path``, .csv or .json by its suffix (see the module docstring)."""
    if output_format(path) == ".json":
        atomic_write_json(path, [{"path": str(p), "top_k": [{"class": c, "probability": v} for c, v in top]}
                                 for p, top in results])
        return
    k = max(len(top) for _, top in results)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path"] + [f"{what}_{r}" for r in range(1, k + 1) for what in ("class", "prob")])
    for p, top in results:
        writer.writerow([str(p)] + [field for c, v in top for field in (c, f"{v:.6f}")])
    atomic_write_text(path, text.getvalue())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        def note(line: str) -> None:
            print(line, file=sys.stderr)

        output_format(args.output)  # a wrong suffix stops here, before any work
        paths = expand_inputs(args.inputs, log=note)
        results = []
        for batch in predict_batches(args.path, paths, args.top_k, args.weights, args.onednn, args.threads,
                                     log=note, program=args.program, batch_size=args.batch_size):
            for path, top in batch:
                print(f"{path}: " + ", ".join(f"{name} {prob:.4f}" for name, prob in top), flush=True)
            results += batch
        if args.output is not None:
            write_results(args.output, results)
            print(f"written: {args.output} ({len(results)} images)")

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
