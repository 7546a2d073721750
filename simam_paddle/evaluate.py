"""Validation and throughput of a model; ``python -m simam_paddle.evaluate PATH [--rounds N] [-o data.KEY=VALUE]``.

A run directory is evaluated in the dynamic graph; an export folder of ``simam_paddle.export`` through
its engine (Paddle Inference or onnxruntime) with the fastest settings measured, named once in the
output (``--threads``, ``--no-onednn``, ``--program`` change them), on the data of the run it was exported from
(its config.yaml, when the run is still there) or of ``-o data.root=...``. ``-o`` takes the data and
loss keys only: the model is the one saved, and a model key (``model.e_lambda``) would be ignored, so
it is refused.

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("evaluate", __doc__.split("\n")[0])
    cli.add_path(p, exports=True)
    cli.add_weights(p)
    cli.add_engine(p)
    cli.add_rounds(p, 10, "the model-only throughput (batches)")
    cli.add_overrides(p, "a data or loss setting of the run (data.root=PATH, data.limit_val=1000, ...)")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np
import paddle

from .distributed import all_reduce_sum
from .errors import DataError
from .losses import label_smoothing_cross_entropy
from .timing import measure


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader, smoothing: float = 0.1) -> dict:
    """Mean loss and accuracy over ``loader`` (over all processes' shards), and the pass's end-to-end
    images/s (loading included). ``model`` is a Layer or any function from images to logits (tensors)."""
    if isinstance(model, paddle.nn.Layer):
        model.eval()
    loss_sum = correct = count = 0.0
    start = time.perf_counter()
    for images, labels in loader:
        logits = model(images)
        n = labels.shape[0]
        loss_sum += float(label_smoothing_cross_entropy(logits, labels, smoothing)) * n
        correct += float((logits.argmax(axis=1) == labels.reshape([-1])).astype("float32").sum())
        count += n
    seconds = time.perf_counter() - start
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count])  # each process saw its shard
    if count == 0:
        raise DataError("the evaluation loader yielded no images")
    return {"loss": loss_sum / count, "acc": correct / count, "images": int(count), "seconds": seconds,
            "ips": count / seconds}


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


# The config sections evaluate applies: the data it evaluates on and the loss it reports. Model and
# training keys are refused: the model is the saved one, and a changed model.e_lambda (say) would
# measure a model that was never trained under the run's name.
EVALUATE_KEYS = ("data", "loss")


def main(argv: list[str] | None = None) -> int:
    from .data import build_loader, worker_count
    from .runner import open_model

    args = parse_args(argv)

    def work() -> None:
        overrides = cli.overrides(args.override, "evaluate", EVALUATE_KEYS,
                                  "evaluate measures the model as it was trained and saved")
        model = open_model(args.path, args.weights, args.onednn, args.threads, args.program, overrides=overrides)
        config, batch_size = model.config, model.config["data"]["batch_size"]
        result = evaluate(lambda images: paddle.to_tensor(model(images.numpy())), build_loader(config, "val"),
                          config["loss"]["smoothing"])
        x = np.random.default_rng(0).standard_normal((batch_size, 3, model.input_size, model.input_size), np.float32)
        model_ips = batch_size / measure({"model": lambda: model(x)}, args.rounds, 2, quiet_wait=0).seconds["model"]
        print(f"{model.description} on {result['images']} test images")
        print(f"  val loss {result['loss']:.4f}  val acc {result['acc']:.4f}")
        print(f"  throughput: model-only {model_ips:.1f} img/s (batch {config['data']['batch_size']}, ready tensors, "
              f"median of {args.rounds} after warm-up); end-to-end {result['ips']:.1f} img/s "
              f"(through the loader, {worker_count(config['data']['num_workers'])} workers)")

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
