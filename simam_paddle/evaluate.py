"""Validation and throughput of a model; ``python -m simam_paddle.evaluate RUN_DIR|EXPORT_DIR``.

A run directory is evaluated in the dynamic graph; an export folder of ``simam_paddle.export`` through
its engine (Paddle Inference or onnxruntime) with the fastest settings measured, named once in the
output (``--threads``, ``--no-onednn``, ``--program`` change them), on the data of the run it was exported from
(its config.yaml, when the run is still there) or of ``-o data.root=...``.

Two throughputs, because they answer different questions:
- model-only: images/s of forward passes on ready tensors, after warm-up (what the model costs);
- end-to-end: images/s of a pass over the test set through the data loader, loading included (what
  the notebook measured; on its GPU this is mostly the speed of the 2-worker loader).
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import sys
import time

import numpy as np
import paddle

from .distributed import all_reduce_sum
from .errors import DataError
from .losses import label_smoothing_cross_entropy
from .timing import interleaved_medians


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
def model_throughput(models: dict[str, paddle.nn.Layer], batch_size: int = 128, batches: int = 10, warmup: int = 2,
                     input_size: int = 128) -> dict[str, float]:
    """Images/s of each model's eval-mode forward pass on one ready random batch; several models are
    timed interleaved (``simam_paddle.timing``), median over ``batches`` rounds after ``warmup``."""
    x = paddle.randn([batch_size, 3, input_size, input_size])
    for model in models.values():
        model.eval()
    # .numpy() waits for the result
    seconds = interleaved_medians({name: lambda m=m: m(x).numpy() for name, m in models.items()}, batches, warmup)
    return {name: batch_size / s for name, s in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    from .data import build_loader
    from .runner import open_model

    p = cli.parser("evaluate", __doc__.split("\n")[0])
    p.add_argument("model", metavar="run_dir", help="a run directory written by simam_paddle.train, or an export folder")
    cli.add_weights(p)
    cli.add_engine(p)
    p.add_argument("--batches", type=int, default=10, help="timed batches for the model-only throughput")
    cli.add_overrides(p, "a data setting of the run (data.root=PATH, data.limit_val=1000, ...)")
    args = p.parse_args(argv)

    def work() -> None:
        model = open_model(args.model, args.weights, args.onednn, args.threads, args.program, overrides=args.override)
        config, batch_size = model.config, model.config["data"]["batch_size"]
        result = evaluate(lambda images: paddle.to_tensor(model(images.numpy())), build_loader(config, "val"),
                          config["loss"]["smoothing"])
        x = np.random.default_rng(0).standard_normal((batch_size, 3, model.input_size, model.input_size), np.float32)
        model_ips = batch_size / interleaved_medians({"model": lambda: model(x)}, args.batches, 2)["model"]
        print(f"{model.description} on {result['images']} test images")
        print(f"  val loss {result['loss']:.4f}  val acc {result['acc']:.4f}")
        print(f"  throughput: model-only {model_ips:.1f} img/s (batch {config['data']['batch_size']}, ready tensors, "
              f"median of {args.batches} after warm-up); end-to-end {result['ips']:.1f} img/s "
              f"(through the loader, {config['data']['num_workers']} workers)")

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
