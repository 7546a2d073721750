"""Validation and throughput of a model; ``python -m simam_paddle.evaluate PATH [--rounds N] [-o data.KEY=VALUE]``.

A run directory is evaluated in the dynamic graph; an export folder of ``simam_paddle.export`` through
its engine (Paddle Inference or onnxruntime) with the fastest settings measured, named once in the
output (``--threads``, ``--no-onednn``, ``--program`` change them), on the data of the run it was exported from
(its config.yaml, when the run is still there) or of ``-o data.root=...``. ``-o`` takes the data and
loss keys only: the model is the one saved, and a model key (``model.e_lambda``) would be ignored, so
it is refused. Data whose classes (names, in label order) are not the model's is refused, naming both.

It prints the loss, top-1 and top-5 (with more than 5 classes) and per-class accuracy, and writes
``evaluation.json`` (every figure and the confusion matrix) and ``confusion.png`` into ``--output``
(default: PATH's folder); ``simam_paddle.metrics`` defines them. A training run writes the same two
files for its best weights at its end (``evaluate_run_end``).

Two throughputs, because they answer different questions:
- model-only: images/s of forward passes on ready tensors, after warm-up (what the model costs);
- end-to-end: images/s of a pass over the test set through the data loader, loading included (what
  the notebook measured; on its GPU this is mostly the speed of the 2-worker loader).
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("evaluate", __doc__.split("\n")[0])
    cli.add_path(p, exports=True)
    cli.add_weights(p)
    cli.add_engine(p)
    cli.add_rounds(p, 10, "the model-only throughput (batches)")
    cli.add_overrides(p, "a data or loss setting of the run (data.root=PATH, data.limit_val=1000, ...)")
    # the file names of metrics.EVALUATION_FILE and CONFUSION_FILE (metrics loads Paddle, which --help does not)
    cli.add_output(p, "evaluation.json and confusion.png", "PATH's folder: the run directory or export folder")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np
import paddle

from .distributed import all_reduce_sum
from .errors import DataError
from .layers.messages import listed
from .losses import label_smoothing_cross_entropy
from .metrics import Tally, evaluation_figures, report, save_evaluation
from .timing import measure


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader, smoothing: float = 0.1, reduce: bool = True) -> dict:
    """Mean loss and accuracy over ``loader``, the pass's end-to-end images/s (loading included), and
    the confusion matrix ``confusion`` and top-5 hits ``top5_hits`` (``simam_paddle.metrics``). With
    ``reduce`` the sums are over all processes' shards (every process must call it then); without, over
    this process's loader alone. ``model`` is a Layer or any function from images to logits (tensors)."""
    if isinstance(model, paddle.nn.Layer):
        model.eval()
    loss_sum = correct = count = 0.0
    tally = Tally()
    start = time.perf_counter()
    for images, labels in loader:
        logits = model(images)
        n = labels.shape[0]
        loss_sum += float(label_smoothing_cross_entropy(logits, labels, smoothing)) * n
        correct += float((logits.argmax(axis=1) == labels.reshape([-1])).astype("float32").sum())
        count += n
        tally.add(logits.numpy(), labels.numpy())
    seconds = time.perf_counter() - start
    if tally.confusion is None:
        raise DataError("the evaluation loader yielded no images")
    sums = [loss_sum, correct, count, tally.top_k_hits, *tally.confusion.ravel().tolist()]
    if reduce:
        sums = all_reduce_sum(sums)  # each process saw its shard
    loss_sum, correct, count, top5_hits = sums[:4]
    confusion = np.rint(sums[4:]).astype(np.int64).reshape(tally.confusion.shape)
    return {"loss": loss_sum / count, "acc": correct / count, "images": int(count), "seconds": seconds,
            "ips": count / seconds, "confusion": confusion, "top5_hits": int(round(top5_hits))}


def check_classes(model_classes: list[str], data_classes: list[str], model_what: str, data_what: str) -> None:
    """A DataError naming both class sets when the data's classes (names, in label order) are not the model's."""
    if list(model_classes) == list(data_classes):
        return
    only_model = [c for c in model_classes if c not in data_classes]
    only_data = [c for c in data_classes if c not in model_classes]
    detail = (f"only in the model: {listed(only_model, 12) or '-'}; only in the data: {listed(only_data, 12) or '-'}"
              if only_model or only_data else "the same names in another label order")
    raise DataError(
        f"the data's classes are not the model's: {model_what} has {len(model_classes)} classes "
        f"({listed(model_classes, 12)}), {data_what} {len(data_classes)} ({listed(data_classes, 12)}); {detail}. "
        "Evaluate on data of the model's classes (-o data.root=...)")


def write_evaluation(model, loader, class_names: list[str], folder: Path, title: str, about: dict,
                     smoothing: float = 0.1, reduce: bool = True) -> tuple[dict, dict, list[Path]]:
    """Evaluate ``model`` on ``loader``, then write evaluation.json and confusion.png into ``folder``
    (``simam_paddle.metrics.save_evaluation``). Returns the evaluation, its figures and the files written."""
    result = evaluate(model, loader, smoothing, reduce)
    figures = evaluation_figures(result["confusion"], result["top5_hits"], class_names)
    about = {**about, "loss": result["loss"]}
    return result, figures, save_evaluation(figures, folder, title, about)


@paddle.no_grad()
def model_throughput(models: dict[str, paddle.nn.Layer], batch_size: int = 128, rounds: int = 10, warmup: int = 2,
                     input_size: int = 128) -> dict[str, float]:
    """Images/s of each model's eval-mode forward pass on one ready random batch; several models are
    timed interleaved (``simam_paddle.timing``), median over ``rounds`` rounds after ``warmup``."""
    x = paddle.randn([batch_size, 3, input_size, input_size])
    for model in models.values():
        model.eval()
    # .numpy() waits for the result
    seconds = measure({name: lambda m=m: m(x).numpy() for name, m in models.items()}, rounds, warmup,
                      quiet_wait=0).seconds
    return {name: batch_size / s for name, s in seconds.items()}


def evaluate_run_end(model: paddle.nn.Layer, loader, class_names: list[str], run_dir: Path, config: dict,
                     best_epoch: int) -> str:
    """The end of a training run: the best weights (``model``, of epoch ``best_epoch``) on ``loader``, this
    process's whole validation set, into the run's evaluation.json and confusion.png; returns the log line."""
    result, figures, written = write_evaluation(
        model, loader, class_names, run_dir,
        f"{config['model']['name']}, seed {config['train']['seed']}, best weights (epoch {best_epoch})",
        {"model": f"{config['model']['name']} (best weights, epoch {best_epoch})", "data_root": config["data"]["root"]},
        config["loss"]["smoothing"], reduce=False)
    top5 = f", top-5 {figures['top5']:.4f}" if figures["top5"] is not None else f" ({figures['top5_note']})"
    return (f"best weights on {result['images']} test images: top-1 {figures['top1']:.4f}{top5}; per-class accuracy "
            f"and confusion matrix in {', '.join(path.name for path in written)}")


# The config sections evaluate applies: the data it evaluates on and the loss it reports. Model and
# training keys are refused: the model is the saved one, and a changed model.e_lambda (say) would
# measure a model that was never trained under the run's name.
EVALUATE_KEYS = ("data", "loss")


def main(argv: list[str] | None = None) -> int:
    from .data import build_loader, classes_of, worker_count
    from .runner import open_model

    args = parse_args(argv)

    def work() -> None:
        overrides = cli.overrides(args.override, "evaluate", EVALUATE_KEYS,
                                  "evaluate measures the model as it was trained and saved")
        model = open_model(args.path, args.weights, args.onednn, args.threads, args.program, overrides=overrides)
        config, batch_size = model.config, model.config["data"]["batch_size"]
        root = config["data"]["root"]
        check_classes(model.class_names, classes_of(root), f"the model ({args.path})",
                      f"the data (data.root {root if root is not None else 'null: CIFAR-10 in Paddle cache'})")
        folder = args.output or (Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent)
        result, figures, written = write_evaluation(
            lambda images: paddle.to_tensor(model(images.numpy())), build_loader(config, "val"), model.class_names,
            folder, f"{config['model']['name']}: confusion matrix", {"model": model.description, "data_root": root},
            config["loss"]["smoothing"])
        x = np.random.default_rng(0).standard_normal((batch_size, 3, model.input_size, model.input_size), np.float32)
        model_ips = batch_size / measure({"model": lambda: model(x)}, args.rounds, 2, quiet_wait=0).seconds["model"]
        print(f"{model.description} on {result['images']} test images")
        print(f"  val loss {result['loss']:.4f}  val acc {result['acc']:.4f}")
        print(report(figures))
        print(f"  throughput: model-only {model_ips:.1f} img/s (batch {config['data']['batch_size']}, ready tensors, "
              f"median of {args.rounds} after warm-up); end-to-end {result['ips']:.1f} img/s "
              f"(through the loader, {worker_count(config['data']['num_workers'])} workers)")
        print(f"written: {', '.join(str(path) for path in written)}")

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
