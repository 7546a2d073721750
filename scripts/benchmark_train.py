"""Benchmark the CPU training step: Paddle's own convolutions, ``simam_paddle.fastconv`` (oneDNN), and PyTorch.

Two measurements, batch 128 of 128x128 inputs, float32, on the CPU:

1. Layers: each of AlexNet's five convolutions at the shape it has in the model, forward
   (no_grad) and forward+backward (``paddle.grad`` of the output against a fixed output gradient,
   for the weight, the bias and, except for conv1 whose input is the images, the input), by
   ``paddle.nn.Conv2D`` ("paddle"), by ``simam_paddle.fastconv.Conv2D`` ("fastconv") and, when
   PyTorch is importable, by ``torch.nn.Conv2d`` ("torch").
2. Models: one training step (forward in train mode, label-smoothing loss, backward, Adam step,
   clearing the gradients) and one inference forward (eval mode, no_grad) of AlexNet and
   AlexNet-SimAM as the package builds them, with ``fast_conv=False`` ("paddle") and with the
   default ``fast_conv=True`` ("fastconv"), and the same AlexNet in PyTorch ("torch": the same
   layers, dropout, label smoothing 0.1 and Adam with L2 weight decay; AlexNet-SimAM with SimAM as
   the official PyTorch code writes it, unfused).

3. Paddle's own ways to oneDNN, each in a subprocess: a dynamic-graph convolution (forward and
   backward) with ``FLAGS_use_mkldnn=1 FLAGS_use_onednn=1``, counting the oneDNN convolution
   primitives it executes (``ONEDNN_VERBOSE=1``); and a training step of AlexNet under
   ``paddle.jit.to_static`` with ``FLAGS_use_mkldnn=1``, reporting whether it runs. The training
   step of (2) also times AlexNet under ``paddle.jit.to_static`` without oneDNN ("to_static").

All candidates of a measurement run interleaved in one process (``simam_paddle.timing``:
round-robin, the order rotated every round, the median over the rounds after warm-up), so that
the load of a shared machine falls on all of them alike; read the ratios, not the absolute times.

    python scripts/benchmark_train.py --json results/benchmark_train/run_1.json

Threads, as a user gets them: Paddle's own operators run on one thread (Paddle sets
``OMP_NUM_THREADS=1`` unless told otherwise), the SimAM kernel and the oneDNN convolutions on the
available cores (``SIMAM_PADDLE_NUM_THREADS``, ``SIMAM_PADDLE_CONV_THREADS``), PyTorch on its
default (the available cores). The first lines printed say which. PyTorch is not a dependency of
the package: ``pip install torch`` (a CPU wheel) to time the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads would spin beside the timed code

import numpy as np  # noqa: E402
import paddle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simam_paddle import LabelSmoothingCrossEntropy, build_model, fastconv  # noqa: E402
from simam_paddle.fastconv import Conv2D as FastConv2D  # noqa: E402
from simam_paddle.layers import simam_kernel  # noqa: E402
from simam_paddle.models.alexnet import CONVS, INPUT_SIZE  # noqa: E402
from simam_paddle.timing import interleaved_medians  # noqa: E402

try:
    import torch
except ImportError:  # the reference is optional
    torch = None

BATCH = 128
MODELS = ("alexnet", "alexnet_simam")
E_LAMBDA = 1e-5  # the notebook's


def conv_inputs() -> list[tuple[str, tuple, list[int]]]:
    """(name, (cin, cout, k, stride, pad), input shape) of AlexNet's convolutions at batch BATCH."""
    out, size = [], INPUT_SIZE
    for i, (cin, cout, k, stride, pad, pool) in enumerate(CONVS, start=1):
        out.append((f"conv{i}", (cin, cout, k, stride, pad), [BATCH, cin, size, size]))
        size = (size + 2 * pad - k) // stride + 1
        if pool:
            size = (size - 3) // 2 + 1
    return out


def layer_candidates(spec: tuple, shape: list[int], needs_input_grad: bool) -> dict:
    cin, cout, k, stride, pad = spec
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape).astype("float32")
    layers = {"paddle": paddle.nn.Conv2D(cin, cout, k, stride=stride, padding=pad)}
    layers["fastconv"] = FastConv2D(cin, cout, k, stride=stride, padding=pad)
    layers["fastconv"].set_state_dict(layers["paddle"].state_dict())
    x = paddle.to_tensor(x_np, stop_gradient=not needs_input_grad)
    out_shape = layers["paddle"](x).shape
    dy_np = rng.standard_normal(out_shape).astype("float32")
    dy = paddle.to_tensor(dy_np)
    candidates = {}
    for name, layer in layers.items():
        wrt = ([x] if needs_input_grad else []) + [layer.weight, layer.bias]

        def forward(layer=layer):
            with paddle.no_grad():
                layer(x)

        candidates[f"{name} fwd"] = forward
        candidates[f"{name} fwd+bwd"] = lambda layer=layer, wrt=wrt: paddle.grad(layer(x), wrt, dy)
    if torch is not None:
        conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
        tx = torch.tensor(x_np, requires_grad=needs_input_grad)
        tdy = torch.tensor(dy_np)
        twrt = ([tx] if needs_input_grad else []) + [conv.weight, conv.bias]

        def torch_forward():
            with torch.no_grad():
                conv(tx)

        candidates["torch fwd"] = torch_forward
        candidates["torch fwd+bwd"] = lambda: torch.autograd.grad(conv(tx), twrt, tdy)
    return candidates


def paddle_step(model_name: str, fast_conv: bool, x: paddle.Tensor, y: paddle.Tensor, static: bool = False):
    model = build_model(model_name, e_lambda=E_LAMBDA, fast_conv=fast_conv) if model_name.endswith("simam") \
        else build_model(model_name, fast_conv=fast_conv)
    forward = paddle.jit.to_static(model, full_graph=True) if static else model
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    opt = paddle.optimizer.Adam(learning_rate=5e-4, parameters=model.parameters(), weight_decay=1e-5)

    def train():
        model.train()
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()

    def infer():
        model.eval()
        with paddle.no_grad():
            forward(x)

    return train, infer


def torch_alexnet(simam: bool):
    """The package's AlexNet in PyTorch; SimAM as in the paper's official code (plain operations)."""
    nn = torch.nn

    class SimAM(nn.Module):
        def forward(self, x):
            n = x.shape[2] * x.shape[3] - 1
            d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
            y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + E_LAMBDA)) + 0.5
            return x * torch.sigmoid(y)

    layers = []
    for cin, cout, k, stride, pad, pool in CONVS:
        layers += [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), SimAM() if simam else nn.Identity(), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(CONVS[-1][1] * 9, 2048), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2048, 10))


def torch_step(model_name: str, x_np: np.ndarray, y_np: np.ndarray):
    model = torch_alexnet(model_name.endswith("simam"))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    x, y = torch.tensor(x_np), torch.tensor(y_np)

    def train():
        model.train()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x)

    return train, infer


SWITCH_PROBES = {
    "dygraph conv with FLAGS_use_mkldnn/FLAGS_use_onednn": (
        "import paddle, paddle.nn.functional as F\n"
        "x = paddle.randn([8, 48, 15, 15]); x.stop_gradient = False\n"
        "w = paddle.randn([128, 48, 5, 5]); w.stop_gradient = False\n"
        "F.conv2d(x, w, padding=2).sum().backward()\n"
        "print('ran')\n",
        {"FLAGS_use_mkldnn": "1", "FLAGS_use_onednn": "1", "ONEDNN_VERBOSE": "1"}),
    "to_static AlexNet training step with FLAGS_use_mkldnn": (
        "import paddle\n"
        "from simam_paddle import LabelSmoothingCrossEntropy, build_model\n"
        "model = build_model('alexnet', fast_conv=False)\n"
        "static = paddle.jit.to_static(model, full_graph=True)\n"
        "opt = paddle.optimizer.Adam(learning_rate=5e-4, parameters=model.parameters())\n"
        "x = paddle.randn([16, 3, 128, 128]); y = paddle.randint(0, 10, [16])\n"
        "LabelSmoothingCrossEntropy(0.1)(static(x), y).backward(); opt.step()\n"
        "print('ran')\n",
        {"FLAGS_use_mkldnn": "1", "ONEDNN_VERBOSE": "1"}),
}


def paddle_onednn_switches() -> dict:
    """Run each probe in a subprocess: did it finish, and how many oneDNN convolution primitives ran."""
    import subprocess

    out = {}
    for name, (code, env) in SWITCH_PROBES.items():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[1])
        lines = proc.stdout.splitlines()
        convs = sum(1 for line in lines if line.startswith("onednn_verbose") and ",exec,cpu,convolution," in line)
        error = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line][-3:]
        out[name] = {"returncode": proc.returncode, "finished": "ran" in lines, "onednn_conv_primitives": convs,
                     "error": error}
        print(f"{name}: exit {proc.returncode}, finished {'ran' in lines}, oneDNN convolutions executed {convs}"
              + (f", {error[-1]}" if error else ""), flush=True)
    return out


def machine() -> dict:
    info = {"python": platform.python_version(), "paddle": paddle.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["fastconv"] = fastconv.kernel.status()
    info["simam_kernel"] = simam_kernel.status()
    info["paddle_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def print_table(title: str, rows: dict[str, dict[str, float]], unit: str) -> None:
    """Rows of figures per implementation, and fastconv's speed against each other one (> 1: fastconv faster)."""
    order = [n for n in ("paddle", "to_static", "fastconv", "torch") if any(n in row for row in rows.values())]
    others = [n for n in order if n != "fastconv"]
    print(f"\n{title} ({unit}, median)")
    print(f"{'':20s}" + "".join(f"{n:>12s}" for n in order) + "".join(f"{'fast vs ' + n:>16s}" for n in others))
    for key, row in rows.items():
        speed = {n: (row["fastconv"] / row[n] if unit == "images/s" else row[n] / row["fastconv"]) for n in others
                 if n in row}
        print(f"{key:20s}" + "".join(f"{row[n]:12.1f}" if n in row else f"{'-':>12s}" for n in order)
              + "".join(f"{speed[n]:15.2f}x" if n in speed else f"{'-':>16s}" for n in others), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer-rounds", type=int, default=10)
    parser.add_argument("--model-rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-switches", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    paddle.set_device("cpu")
    paddle.seed(0)
    if not fastconv.kernel.prepare():
        sys.exit(f"the oneDNN convolutions are unavailable here: {fastconv.kernel.status()['error']}")
    simam_kernel.prepare()
    info = machine()
    print(json.dumps(info))
    if torch is None:
        print("PyTorch is not importable: no reference figures")
    result = {"machine": info, "batch": BATCH, "input_size": INPUT_SIZE, "warmup": args.warmup, "layers": {},
              "models": {}, "switches": {}}

    if not args.skip_layers:
        rows = {}
        for name, spec, shape in conv_inputs():
            medians = interleaved_medians(layer_candidates(spec, shape, needs_input_grad=name != "conv1"),
                                          args.layer_rounds, args.warmup)
            ms = {key: 1000 * value for key, value in medians.items()}
            result["layers"][name] = {"spec": spec, "input": shape, "ms": ms, "rounds": args.layer_rounds}
            for part in ("fwd", "fwd+bwd"):
                rows[f"{name} {part}"] = {impl: ms[f"{impl} {part}"] for impl in ("paddle", "fastconv", "torch")
                                          if f"{impl} {part}" in ms}
            print(f"{name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()), flush=True)
        print_table("Convolutions, batch 128", rows, "ms")

    if not args.skip_models:
        rng = np.random.default_rng(1)
        x_np = rng.standard_normal([BATCH, 3, INPUT_SIZE, INPUT_SIZE]).astype("float32")
        y_np = rng.integers(0, 10, BATCH).astype("int64")
        x, y = paddle.to_tensor(x_np), paddle.to_tensor(y_np)
        train, infer = {}, {}
        for model_name in MODELS:
            for impl, fast in (("paddle", False), ("fastconv", True)):
                train[f"{model_name} {impl}"], infer[f"{model_name} {impl}"] = paddle_step(model_name, fast, x, y)
            if model_name == "alexnet":
                train["alexnet to_static"], infer["alexnet to_static"] = paddle_step(model_name, False, x, y, static=True)
            if torch is not None:
                train[f"{model_name} torch"], infer[f"{model_name} torch"] = torch_step(model_name, x_np, y_np)
        for what, candidates in (("train", train), ("infer", infer)):
            medians = interleaved_medians(candidates, args.model_rounds, args.warmup)
            result["models"][what] = {"ms": {k: 1000 * v for k, v in medians.items()},
                                      "images_per_s": {k: BATCH / v for k, v in medians.items()},
                                      "rounds": args.model_rounds}
            rows = {}
            for model_name in MODELS:
                rows[model_name] = {impl: BATCH / medians[f"{model_name} {impl}"]
                                    for impl in ("paddle", "to_static", "fastconv", "torch")
                                    if f"{model_name} {impl}" in medians}
            print_table(f"{'Training step' if what == 'train' else 'Inference'}, batch 128", rows, "images/s")

    if not args.skip_switches:
        print("\nPaddle's own switches to oneDNN (subprocesses)")
        result["switches"] = paddle_onednn_switches()

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
