"""Benchmark the CPU training step and inference against PyTorch, both run as their users run them.

Batch 128 of 128x128 inputs, float32, on the CPU, no environment variable set for either framework:
Paddle with this package's defaults (every CPU operator on the available cores: ``native/threads.py``),
PyTorch with its own (the available cores).

1. Layers: each of AlexNet's five convolutions at the shape it has in the model, forward (no_grad)
   and forward+backward (the gradient of the output against a fixed output gradient, for the
   weight, the bias and, except for conv1 whose input is the images, the input), by
   ``paddle.nn.Conv2D`` ("paddle"), ``simam_paddle.fastconv.Conv2D`` ("fastconv", what the models
   use; "bf16": its bfloat16 mode, ``train.precision=bf16``, on CPUs with bf16 instructions) and
   ``torch.nn.Conv2d`` ("torch").
2. Models: one training step (forward in train mode, label-smoothing loss, backward, Adam step,
   clearing the gradients) and one inference forward (eval mode, no_grad) of AlexNet and
   AlexNet-SimAM as the package builds them by default ("fastconv"), with ``fast_conv=False``
   ("paddle"), in bf16 mode ("bf16"), and the same networks in PyTorch ("torch": the same layers, dropout, label smoothing
   0.1, Adam with L2 weight decay; SimAM as the paper's official code writes it, unfused).
3. Pipeline (``--data ROOT``, the CIFAR-10 image folder): ``simam-train`` for one epoch of
   ``--pipeline-images`` training images with the recipe's data pipeline, its end-to-end training
   images/s (history.json's ``train_ips``: loading, augmentation, the step, logging), alternated
   over ``--pipeline-rounds`` rounds with the model-only training step of the same model on one
   ready batch, each in a fresh process, for each ``--pipeline-workers`` count; the full recipe's
   CPU time (50 epochs of 50,000 training and 10,000 test images) estimated from those rates.

Paddle and PyTorch never share a process (each brings its own OpenMP runtime): PyTorch's candidates
run in a worker process of this script (``--torch-worker``, which never imports Paddle), in turn
with Paddle's (``simam_paddle.timing``: round-robin, the order rotated every round, the median over
the rounds after warm-up, a pause when the turn passes between processes, the load before and
after every measurement, busy ones marked). Read the ratios, not the absolute times.

    python scripts/benchmark_train.py --data PATH/cifar10-jpeg --json results/benchmark_train/run_2.json

PyTorch is not a dependency of the package: ``pip install "torch==2.13.0+cpu"`` to time the reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simam_paddle import timing  # noqa: E402  (standard library only: the PyTorch worker imports it too)

BATCH = 128
MODELS = ("alexnet", "alexnet_simam")
E_LAMBDA = 1e-4  # the recipe's lambda, the package's default
IMPLS = ("paddle", "fastconv", "bf16", "torch")


def conv_inputs(convs, input_size: int) -> list[tuple[str, tuple, list[int]]]:
    """(name, (cin, cout, k, stride, pad), input shape) of AlexNet's convolutions at batch BATCH."""
    out, size = [], input_size
    for i, (cin, cout, k, stride, pad, pool) in enumerate(convs, start=1):
        out.append((f"conv{i}", (cin, cout, k, stride, pad), [BATCH, cin, size, size]))
        size = (size + 2 * pad - k) // stride + 1
        if pool:
            size = (size - 3) // 2 + 1
    return out


def random_inputs(shape, seed: int):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def model_inputs(input_size: int):
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.standard_normal([BATCH, 3, input_size, input_size]).astype("float32")
    return x, rng.integers(0, 10, BATCH).astype("int64")


# -- PyTorch, in its own process ------------------------------------------------------------------

def torch_layer_candidates(spec: dict) -> dict:
    import torch

    cin, cout, k, stride, pad = spec["conv"]
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
    x = torch.tensor(random_inputs(spec["input"], 0), requires_grad=spec["needs_input_grad"])
    with torch.no_grad():
        out_shape = list(conv(x).shape)
    dy = torch.tensor(random_inputs(out_shape, 1))
    wrt = ([x] if spec["needs_input_grad"] else []) + [conv.weight, conv.bias]

    def forward():
        with torch.no_grad():
            conv(x)

    return {"fwd": forward, "fwd+bwd": lambda: torch.autograd.grad(conv(x), wrt, dy)}


def torch_alexnet(convs, simam: bool):
    """The package's AlexNet in PyTorch; SimAM as in the paper's official code (plain operations)."""
    import torch

    nn = torch.nn

    class SimAM(nn.Module):
        def forward(self, x):
            n = x.shape[2] * x.shape[3] - 1
            d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
            y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + E_LAMBDA)) + 0.5
            return x * torch.sigmoid(y)

    layers = []
    for cin, cout, k, stride, pad, pool in convs:
        layers += [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), SimAM() if simam else nn.Identity(), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(convs[-1][1] * 9, 2048), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2048, 10))


def torch_model_candidates(spec: dict) -> dict:
    import torch

    x_np, y_np = model_inputs(spec["input_size"])
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    candidates = {}
    for name in MODELS:
        model = torch_alexnet(spec["convs"], name.endswith("simam"))
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)

        def train(model=model, loss_fn=loss_fn, opt=opt):
            model.train()
            loss_fn(model(x), y).backward()
            opt.step()
            opt.zero_grad()

        def infer(model=model):
            model.eval()
            with torch.no_grad():
                model(x)

        candidates[f"{name} train"], candidates[f"{name} infer"] = train, infer
    return candidates


def torch_worker(kind: str, spec: dict) -> None:
    import torch

    candidates = torch_layer_candidates(spec) if kind == "layer" else torch_model_candidates(spec)
    assert "paddle" not in sys.modules, "the PyTorch worker must not load Paddle"
    timing.serve(candidates, info={"torch": torch.__version__, "torch_threads": torch.get_num_threads()})


def torch_worker_process(kind: str, spec: dict) -> timing.Worker:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as a user runs PyTorch
    return timing.Worker([sys.executable, __file__, "--torch-worker", kind, json.dumps(spec)], env=env)


# -- Paddle, in this process ----------------------------------------------------------------------

def paddle_layer_candidates(spec: tuple, shape: list[int], needs_input_grad: bool, bf16: bool) -> dict:
    import paddle

    from simam_paddle.fastconv import Conv2D as FastConv2D
    from simam_paddle.fastconv import use_bfloat16

    cin, cout, k, stride, pad = spec
    layers = {"paddle": paddle.nn.Conv2D(cin, cout, k, stride=stride, padding=pad)}
    layers["fastconv"] = FastConv2D(cin, cout, k, stride=stride, padding=pad)
    layers["fastconv"].set_state_dict(layers["paddle"].state_dict())
    if bf16:
        layers["bf16"] = FastConv2D(cin, cout, k, stride=stride, padding=pad)
        layers["bf16"].set_state_dict(layers["paddle"].state_dict())
        use_bfloat16(layers["bf16"])
    x = paddle.to_tensor(random_inputs(shape, 0), stop_gradient=not needs_input_grad)
    dy = paddle.to_tensor(random_inputs(layers["paddle"](x).shape, 1))
    candidates = {}
    for name, layer in layers.items():
        wrt = ([x] if needs_input_grad else []) + [layer.weight, layer.bias]

        def forward(layer=layer):
            with paddle.no_grad():
                layer(x)

        candidates[f"{name} fwd"] = forward
        candidates[f"{name} fwd+bwd"] = lambda layer=layer, wrt=wrt: paddle.grad(layer(x), wrt, dy)
    return candidates


def paddle_step(model_name: str, fast_conv: bool, x, y, bf16: bool = False):
    import paddle

    from simam_paddle import LabelSmoothingCrossEntropy, build_model
    from simam_paddle.fastconv import use_bfloat16

    model = build_model(model_name, fast_conv=fast_conv)
    if bf16:
        use_bfloat16(model)
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    opt = paddle.optimizer.Adam(learning_rate=5e-4, parameters=model.parameters(), weight_decay=1e-5)

    def train():
        model.train()
        loss_fn(model(x), y).backward()
        opt.step()
        opt.clear_grad()

    def infer():
        model.eval()
        with paddle.no_grad():
            model(x).numpy()

    return train, infer


def model_step_rate(model_name: str, steps: int) -> float:
    """Images/s of the model-only training step on one ready batch (median of ``steps`` after 2)."""
    import paddle

    from simam_paddle.models.alexnet import INPUT_SIZE

    x_np, y_np = model_inputs(INPUT_SIZE)
    train, _ = paddle_step(model_name, True, paddle.to_tensor(x_np), paddle.to_tensor(y_np))
    return BATCH / timing.measure({"step": train}, steps, 2, quiet_wait=0).seconds["step"]


def pipeline(args) -> dict:
    """simam-train's end-to-end training images/s beside the model-only step rate, alternated in fresh
    processes, for each number of data-loading workers; and the full recipe's time estimated from them."""
    from simam_paddle.compare import FULL_EPOCHS, FULL_TEST, FULL_TRAIN

    out = {}
    for model_name in MODELS:
        for workers in args.pipeline_workers:
            timing.wait_for_quiet(args.quiet_wait)
            load_before = os.getloadavg()
            e2e, val, step = [], [], []
            for _ in range(args.pipeline_rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    cmd = [sys.executable, "-m", "simam_paddle.train", "--config", model_name,
                           "-o", f"data.root={args.data}", "-o", f"data.limit_train={args.pipeline_images}",
                           "-o", "data.limit_val=2000", "-o", f"data.num_workers={workers}", "-o", "train.epochs=1",
                           "-o", "train.throughput_batches=0", "-o", f"train.output_dir={tmp}/run"]
                    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
                    epoch = json.loads((Path(tmp) / "run" / "history.json").read_text())["epoch"]
                    e2e.append(epoch["train_ips"][0])
                    val.append(epoch["val_ips"][0])
                proc = subprocess.run([sys.executable, __file__, "--step-rate", model_name, "--steps", str(args.rounds)],
                                      check=True, cwd=ROOT, capture_output=True, text=True)
                step.append(float(proc.stdout.strip().splitlines()[-1]))
            load_after = os.getloadavg()
            median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
            row = {"workers": workers, "end_to_end_ips": e2e, "val_ips": val, "model_step_ips": step,
                   "ratio": median(e2e) / median(step), "load_before": load_before, "load_after": load_after,
                   "busy": load_before[0] > timing.busy_threshold(),
                   # an estimate from the measured per-image costs, not a measurement
                   "full_recipe_hours_estimate": FULL_EPOCHS * (FULL_TRAIN / median(e2e) + FULL_TEST / median(val)) / 3600}
            out[f"{model_name} workers={workers}"] = row
            print(f"{model_name}, {workers} workers: simam-train {median(e2e):.1f} img/s end to end, model-only step "
                  f"{median(step):.1f} img/s, ratio {row['ratio']:.3f}; full recipe ~{row['full_recipe_hours_estimate']:.1f} h "
                  f"(rounds {', '.join(f'{v:.0f}' for v in e2e)} / {', '.join(f'{v:.0f}' for v in step)}; "
                  f"load {load_before[0]:.2f} before, {load_after[0]:.2f} after{'; BUSY' if row['busy'] else ''})", flush=True)
    return out


def machine() -> dict:
    import paddle

    from simam_paddle import fastconv
    from simam_paddle.layers import simam_kernel
    from simam_paddle.native import threads

    info = {"python": platform.python_version(), "paddle": paddle.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": threads.running(), "fastconv": fastconv.kernel.status(),
            "simam_kernel": simam_kernel.status(), "busy_load": timing.busy_threshold()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                info["bf16"] = "avx512_bf16" in line.split() or "amx_bf16" in line.split()
                break
    except OSError:
        pass
    return info


def print_table(title: str, rows: dict[str, dict[str, float]], unit: str) -> None:
    """Rows of figures per implementation, fastconv's speed against the others (> 1: fastconv faster),
    and bf16's against fastconv and torch."""
    order = [n for n in IMPLS if any(n in row for row in rows.values())]
    others = [n for n in order if n not in ("fastconv", "bf16")]
    print(f"\n{title} ({unit}, median)")
    print(f"{'':20s}" + "".join(f"{n:>12s}" for n in order) + "".join(f"{'fast vs ' + n:>16s}" for n in others))
    for key, row in rows.items():
        speed = {n: (row["fastconv"] / row[n] if unit == "images/s" else row[n] / row["fastconv"]) for n in others
                 if n in row}
        print(f"{key:20s}" + "".join(f"{row[n]:12.1f}" if n in row else f"{'-':>12s}" for n in order)
              + "".join(f"{speed[n]:15.2f}x" if n in speed else f"{'-':>16s}" for n in others), flush=True)
    for key, row in rows.items():
        if "bf16" in row:
            ratio = {n: (row["bf16"] / row[n] if unit == "images/s" else row[n] / row["bf16"])
                     for n in ("fastconv", "torch") if n in row}
            print(f"{key:20s} bf16 speed: " + ", ".join(f"{v:.2f}x {n}" for n, v in ratio.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per candidate")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--data", type=Path, help="the CIFAR-10 image folder, for the pipeline measurement")
    parser.add_argument("--pipeline-images", type=int, default=6400, help="training images of each simam-train run")
    parser.add_argument("--pipeline-rounds", type=int, default=3)
    parser.add_argument("--pipeline-workers", type=int, nargs="+", default=[2],
                        help="data.num_workers of the simam-train runs (each a row)")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="seconds each measurement waits at most for a quiet machine (0: none)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--torch-worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--step-rate", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model_rounds = args.rounds
    if args.torch_worker:
        torch_worker(args.torch_worker[0], json.loads(args.torch_worker[1]))
        return
    if args.step_rate:
        print(model_step_rate(args.step_rate, args.steps))
        return

    import paddle

    from simam_paddle import fastconv
    from simam_paddle.layers import simam_kernel
    from simam_paddle.models.alexnet import CONVS, INPUT_SIZE

    paddle.set_device("cpu")
    paddle.seed(0)
    if not fastconv.kernel.prepare():
        sys.exit(f"the oneDNN convolutions are unavailable here: {fastconv.kernel.status()['error']}")
    simam_kernel.prepare()
    info = machine()
    has_torch = importlib.util.find_spec("torch") is not None
    print(json.dumps(info), flush=True)
    if not has_torch:
        print("PyTorch is not installed: no reference figures")
    result = {"machine": info, "batch": BATCH, "input_size": INPUT_SIZE, "rounds": args.rounds, "warmup": args.warmup,
              "layers": {}, "models": {}, "pipeline": {}}

    if not args.skip_layers:
        rows = {}
        for name, spec, shape in conv_inputs(CONVS, INPUT_SIZE):
            candidates = paddle_layer_candidates(spec, shape, name != "conv1", bf16=info.get("bf16", False))
            worker = None
            if has_torch:
                worker = torch_worker_process("layer", {"conv": spec, "input": shape, "needs_input_grad": name != "conv1"})
                result["machine"].update(worker.info)
                candidates.update(worker.candidates("torch "))
            try:
                m = timing.measure(candidates, args.rounds, args.warmup, args.quiet_wait)
            finally:
                if worker is not None:
                    worker.close()
            ms = {key: 1000 * value for key, value in m.seconds.items()}
            result["layers"][name] = {"spec": spec, "input": shape, "ms": ms, "measurement": m.as_dict()}
            for part in ("fwd", "fwd+bwd"):
                rows[f"{name} {part}"] = {impl: ms[f"{impl} {part}"] for impl in IMPLS if f"{impl} {part}" in ms}
            print(f"{name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()) + f"  [{m.conditions()}]", flush=True)
        print_table("Convolutions, batch 128", rows, "ms")

    if not args.skip_models:
        x_np, y_np = model_inputs(INPUT_SIZE)
        x, y = paddle.to_tensor(x_np), paddle.to_tensor(y_np)
        candidates = {"train": {}, "infer": {}}
        for model_name in MODELS:
            for impl, fast, bf16 in (("paddle", False, False), ("fastconv", True, False), ("bf16", True, True)):
                if bf16 and not info.get("bf16"):
                    continue
                train, infer = paddle_step(model_name, fast, x, y, bf16)
                candidates["train"][f"{model_name} {impl}"], candidates["infer"][f"{model_name} {impl}"] = train, infer
        worker = torch_worker_process("models", {"convs": CONVS, "input_size": INPUT_SIZE}) if has_torch else None
        try:
            for what in ("train", "infer"):
                if worker is not None:
                    candidates[what].update({f"{m} torch": worker.candidate(f"{m} {what}") for m in MODELS})
                m = timing.measure(candidates[what], args.rounds, args.warmup, args.quiet_wait)
                result["models"][what] = {"images_per_s": {k: BATCH / v for k, v in m.seconds.items()},
                                          "measurement": m.as_dict()}
                rows = {model_name: {impl: BATCH / m.seconds[f"{model_name} {impl}"] for impl in IMPLS
                                     if f"{model_name} {impl}" in m.seconds} for model_name in MODELS}
                print_table(f"{'Training step' if what == 'train' else 'Inference'}, batch 128", rows, "images/s")
                simam_vs_plain = {impl: rows["alexnet_simam"][impl] / rows["alexnet"][impl] for impl in rows["alexnet"]}
                result["models"][what]["alexnet_simam_vs_alexnet"] = simam_vs_plain
                print("AlexNet-SimAM / AlexNet: " + ", ".join(f"{k} {v:.3f}" for k, v in simam_vs_plain.items())
                      + f"  [{m.conditions()}]", flush=True)
        finally:
            if worker is not None:
                worker.close()

    if args.data:
        print(f"\nsimam-train end to end ({args.pipeline_images} images, recipe pipeline) vs the model-only step")
        result["pipeline"] = pipeline(args)

    result["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
