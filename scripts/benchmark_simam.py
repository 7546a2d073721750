"""Benchmark SimAM: per-layer cost in element-wise passes, per-block cost, model throughput, memory.

Four measurements (the first prints the formula-as-written baseline beside the fast paths):

1. Layers: SimAM at the five shapes AlexNet-SimAM produces at batch 128 (after conv1..conv5),
   forward and forward+backward, for the notebook's formula written out in Paddle ("formula"),
   and for each backend of ``simam_paddle.simam`` ("kernel", "paddle", "plain"). The unit is one
   element-wise pass: the time of ``x * 2.0`` on the same tensor (allocation of its output
   included, as for every candidate). Forward+backward is ``paddle.grad(f(x), x, g)``.
2. Blocks: what follows each convolution, AlexNet's ReLU (and max-pool) beside AlexNet-SimAM's
   SimAM, ReLU (and max-pool) run as one fused kernel call ("fused", what the model runs) and as
   three operators ("kernel + layers"), in ms, forward and forward+backward.
3. Models: AlexNet-SimAM / AlexNet throughput, inference (eval, no_grad) and a training step
   (forward, label-smoothing loss, backward, Adam step, clear_grad), batch 128 of 128x128 inputs;
   "kernel" is the model as built (fused blocks), "kernel-unfused" the same with ``fuse=False``.
4. Memory: peak of Paddle's host allocator ("Allocated", everything Paddle allocates: parameters,
   gradients, Adam moments, activations, workspaces) during one training step after two warm-up
   steps, each model in a fresh subprocess; the peak resident set size (VmHWM, reset before the
   step through /proc/self/clear_refs) is printed beside it as a cross-check.

All candidates of a measurement run interleaved in one process (round-robin, the order rotated
every round) and the median over the rounds after warm-up is reported, so that the load of a
shared machine falls on all of them alike.

    python scripts/benchmark_simam.py                 # everything (about 9 minutes on 2 cores)
    python scripts/benchmark_simam.py --skip-models   # layers, blocks and memory only

Threads: Paddle's operators, oneDNN and the SimAM kernel run on one count of one OpenMP runtime
(``simam_paddle.native.threads``: ``SIMAM_PADDLE_NUM_THREADS``, default the available cores); the first
line printed says how many.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads would spin beside the timed code

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simam_paddle import LabelSmoothingCrossEntropy, build_model, simam  # noqa: E402
from simam_paddle.layers import simam_kernel  # noqa: E402
from simam_paddle.models.alexnet import CONVS  # noqa: E402
from simam_paddle.timing import measure  # noqa: E402

LAYER_SHAPES = {  # AlexNet-SimAM at batch 128, 128x128 input (see docs/recipe.md)
    "conv1": [128, 48, 32, 32],
    "conv2": [128, 128, 15, 15],
    "conv3": [128, 192, 7, 7],
    "conv4": [128, 192, 7, 7],
    "conv5": [128, 128, 7, 7],
}
E_LAMBDA = 1e-5  # the notebook's
BACKENDS = ("kernel", "paddle", "plain")


def formula_as_written(x: paddle.Tensor, e_lambda: float = E_LAMBDA) -> paddle.Tensor:
    """The notebook's / official SimAM forward, operation for operation, differentiated by Paddle."""
    n = x.shape[2] * x.shape[3] - 1
    x_minus_mu_square = (x - x.mean(axis=[2, 3], keepdim=True)).pow(2)
    y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(axis=[2, 3], keepdim=True) / n + e_lambda)) + 0.5
    return x * F.sigmoid(y)


def layer_candidates(shape: list[int], backends: list[str]) -> dict:
    x = paddle.randn(shape)
    xg = x.detach()
    xg.stop_gradient = False
    g = paddle.randn(shape)
    funcs = {"formula": formula_as_written}
    funcs.update({b: (lambda t, b=b: simam(t, E_LAMBDA, backend=b)) for b in backends})
    candidates = {"x * 2.0": lambda: x * 2.0}
    for name, f in funcs.items():
        candidates[f"{name} fwd"] = lambda f=f: f(x)
        candidates[f"{name} fwd+bwd"] = lambda f=f: paddle.grad(f(xg), xg, g)
    return candidates


def bench_layers(args, backends: list[str]) -> dict:
    results = {}
    print(f"\n## SimAM layers, in element-wise passes (time / time of x * 2.0), median of {args.rounds}")
    header = f"{'layer':6} {'shape':18} {'x*2.0 ms':>9}"
    for name in ["formula", *backends]:
        header += f" {name + ' fwd':>13} {name + ' f+b':>13}"
    print(header)
    for layer, shape in LAYER_SHAPES.items():
        m = measure(layer_candidates(shape, backends), args.rounds, args.warmup, args.quiet_wait)
        med = m.seconds
        unit = med["x * 2.0"]
        row = {"shape": shape, "x*2.0 ms": unit * 1e3, "conditions": m.conditions(), "busy": m.busy}
        line = f"{layer:6} {str(shape):18} {unit * 1e3:9.2f}"
        for name in ["formula", *backends]:
            fwd, fb = med[f"{name} fwd"] / unit, med[f"{name} fwd+bwd"] / unit
            row[name] = {"fwd": fwd, "fwd+bwd": fb}
            line += f" {fwd:13.2f} {fb:13.2f}"
        print(f"{line}  [{m.conditions()}]", flush=True)
        results[layer] = row
    return results


def block_candidates(shape: list[int], pooled: bool) -> dict:
    """AlexNet's block after a convolution beside AlexNet-SimAM's, fused and as three operators."""
    x = paddle.randn(shape)
    xg = x.detach()
    xg.stop_gradient = False
    pool_size, pool_stride = (3, 2) if pooled else (0, 1)

    def layers(t, attention: bool):
        t = F.relu(simam(t, E_LAMBDA, backend="kernel") if attention else t)
        return F.max_pool2d(t, pool_size, pool_stride) if pooled else t

    funcs = {
        "AlexNet": lambda t: layers(t, False),
        "fused": lambda t: simam_kernel.simam_relu_maxpool(t, E_LAMBDA, pool_size, pool_stride),
        "kernel + layers": lambda t: layers(t, True),
    }
    g = paddle.randn(funcs["AlexNet"](x).shape)
    candidates = {}
    for name, f in funcs.items():
        candidates[f"{name} fwd"] = lambda f=f: f(x)
        candidates[f"{name} fwd+bwd"] = lambda f=f: paddle.grad(f(xg), xg, g)
    return candidates


def bench_blocks(args) -> dict:
    names = ("AlexNet", "fused", "kernel + layers")
    print(f"\n## Blocks after each convolution, ms, median of {args.rounds}: AlexNet's ReLU (+ max-pool) beside")
    print("## AlexNet-SimAM's SimAM, ReLU (+ max-pool) as one fused call and as three operators")
    print(f"{'layer':6} {'block':16}" + "".join(f" {n + ' fwd':>20} {n + ' f+b':>20}" for n in names))
    results = {}
    for (layer, shape), conv in zip(LAYER_SHAPES.items(), CONVS):
        pooled = conv[-1]
        m = measure(block_candidates(shape, pooled), args.rounds, args.warmup, args.quiet_wait)
        med = m.seconds
        row = {"pool": pooled, "conditions": m.conditions(), "busy": m.busy}
        line = f"{layer:6} {'ReLU + max-pool' if pooled else 'ReLU':16}"
        for name in names:
            fwd, fb = med[f"{name} fwd"] * 1e3, med[f"{name} fwd+bwd"] * 1e3
            row[name] = {"fwd ms": fwd, "fwd+bwd ms": fb}
            line += f" {fwd:20.2f} {fb:20.2f}"
        print(f"{line}  [{m.conditions()}]", flush=True)
        results[layer] = row
    return results


def training_step(model, opt, loss_fn, x, y):
    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()

    return step


def inference(model, x):
    def run():
        with paddle.no_grad():
            model(x)

    return run


def build(name: str, backend: str | None):
    kwargs = {"e_lambda": E_LAMBDA} if name == "alexnet_simam" else {}
    if backend == "kernel-unfused":
        kwargs.update(backend="kernel", fuse=False)
    elif backend is not None:
        kwargs["backend"] = backend
    paddle.seed(0)
    return build_model(name, **kwargs)


def model_variants(backends: list[str]) -> dict[str, tuple[str, str | None]]:
    """name -> (model, backend); the kernel also as ``fuse=False`` ("kernel-unfused")."""
    variants = {"alexnet": ("alexnet", None)}
    for b in backends:
        variants[f"simam-{b}"] = ("alexnet_simam", b)
        if b == "kernel":
            variants["simam-kernel-unfused"] = ("alexnet_simam", "kernel-unfused")
    return variants


def bench_models(args, backends: list[str]) -> dict:
    paddle.seed(0)
    x = paddle.randn([args.batch, 3, 128, 128])
    labels = paddle.randint(0, 10, [args.batch])
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    variants = model_variants(backends)
    infer, train = {}, {}
    for name, (model_name, backend) in variants.items():
        model = build(model_name, backend)
        eval_model = build(model_name, backend)
        eval_model.eval()
        opt = paddle.optimizer.Adam(learning_rate=5e-4, parameters=model.parameters(), weight_decay=1e-5)
        infer[name] = inference(eval_model, x)
        train[name] = training_step(model, opt, loss_fn, x, labels)
    print(f"\n## Whole models, batch {args.batch}, median of {args.model_rounds} interleaved rounds")
    results = {}
    for kind, candidates in (("inference", infer), ("training step", train)):
        m = measure(candidates, args.model_rounds, args.model_warmup, args.quiet_wait)
        med = m.seconds
        base = med["alexnet"]
        print(f"{kind}: AlexNet {base * 1e3:.0f} ms/batch ({args.batch / base:.0f} img/s)  [{m.conditions()}]")
        results[kind] = {"alexnet ms": base * 1e3, "conditions": m.conditions(), "busy": m.busy}
        for name in variants:
            if name != "alexnet":
                ratio = base / med[name]
                results[kind][name] = {"ms": med[name] * 1e3, "throughput ratio": ratio}
                print(f"  AlexNet-SimAM ({name[6:]}): {med[name] * 1e3:.0f} ms/batch, throughput ratio {ratio:.3f}")
    return results


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_child(model_name: str, backend: str | None, batch: int) -> dict:
    """One training step's peak memory in this (fresh) process; printed as JSON."""
    from paddle.base import core

    model = build(model_name, backend)
    opt = paddle.optimizer.Adam(learning_rate=5e-4, parameters=model.parameters(), weight_decay=1e-5)
    x = paddle.randn([batch, 3, 128, 128])
    labels = paddle.randint(0, 10, [batch])
    step = training_step(model, opt, LabelSmoothingCrossEntropy(0.1), x, labels)
    step()
    step()  # the Adam moments exist from here on
    before = core.host_memory_stat_current_value("Allocated", 0)
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    rss_reset = _peak_rss_reset()
    step()
    return {
        "allocated_before": before,
        "allocated_peak": core.host_memory_stat_peak_value("Allocated", 0),
        "rss_peak": _vm_hwm_bytes() if rss_reset else None,
    }


def bench_memory(args, backends: list[str]) -> dict:
    print(f"\n## Peak memory of one training step, batch {args.batch}, each model in a fresh process")
    results = {}
    for name, (model_name, backend) in model_variants(backends).items():
        cmd = [sys.executable, __file__, "--memory-child", model_name, "--batch", str(args.batch)]
        if backend is not None:
            cmd += ["--backend", backend]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    base = results["alexnet"]
    mib = 2**20
    for name, r in results.items():
        line = (
            f"{name:14} Paddle peak allocated {r['allocated_peak'] / mib:7.1f} MiB"
            f" (ratio {r['allocated_peak'] / base['allocated_peak']:.3f});"
            f" above the pre-step level {(r['allocated_peak'] - r['allocated_before']) / mib:7.1f} MiB"
            f" (ratio {(r['allocated_peak'] - r['allocated_before']) / (base['allocated_peak'] - base['allocated_before']):.3f})"
        )
        if r["rss_peak"] and base["rss_peak"]:
            line += f"; peak RSS {r['rss_peak'] / mib:7.1f} MiB (ratio {r['rss_peak'] / base['rss_peak']:.3f})"
        print(line)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per layer candidate")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--model-rounds", type=int, default=10, help="timed rounds per model candidate")
    parser.add_argument("--model-warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-blocks", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="seconds each measurement waits at most for a quiet machine (0: none)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.backend, args.batch)))
        return

    backends = list(BACKENDS) if simam_kernel.prepare() else [b for b in BACKENDS if b != "kernel"]
    print(
        f"# SimAM benchmark: Paddle {paddle.__version__}, Python {platform.python_version()},"
        f" {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" threads {simam_kernel.num_threads()} (Paddle's operators, oneDNN and the kernel: one OpenMP runtime),"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    if "kernel" not in backends:
        print(f"(kernel unavailable: {simam_kernel.load_error()})")
    np.random.seed(0)
    results = {}
    if not args.skip_layers:
        results["layers"] = bench_layers(args, backends)
    if not args.skip_blocks and "kernel" in backends:
        results["blocks"] = bench_blocks(args)
    if not args.skip_models:
        results["models"] = bench_models(args, backends)
    if not args.skip_memory:
        results["memory"] = bench_memory(args, backends)
    results["load average after"] = os.getloadavg()[0]
    print(f"\nload average after: {results['load average after']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
