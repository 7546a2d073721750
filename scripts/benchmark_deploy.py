"""Benchmark deployed models: each SimAM model against its plain twin, through every engine setting.

Exports the AlexNet pair (alexnet, alexnet_simam) and the ResNet-18 pair (resnet18, resnet18_simam)
with ``simam_paddle.export`` (checked against the dynamic graph as every export is), from run
directories when given (``--run NAME=RUN_DIR``, their best weights), else with random weights, the
two models of a pair sharing theirs. Then, for each pair and each engine setting,

    paddle.inference, default Config     Config(model, params) as it comes (Paddle 3.3: oneDNN on, 1 thread)
    paddle.inference, oneDNN on          T CPU math threads: what predict and evaluate use
    paddle.inference, oneDNN off         T CPU math threads
    onnxruntime                          T intra-op threads, graph optimisations on (its default)

(T = ``--threads``, default: the cores available; through Paddle Inference, the SimAM model runs
each of its two programs in turn: ``model_simam_op.json``, SimAM as one operator, what ``predict``
and ``evaluate`` run, and ``model.json``, standard operators), it times the two models side by side in one
process (``simam_paddle.timing.interleaved_medians``: round-robin, the order rotated every round,
median over the rounds after warm-up): batch 64 throughput (img/s) and batch 1 latency (ms, the
mean of ``--latency-calls`` consecutive calls per round). The ratio is the SimAM model's speed over
the plain model's: its img/s over theirs, their latency over its latency (1.00 = SimAM costs nothing).

    python scripts/benchmark_deploy.py                           # random weights, ~10 minutes on 2 cores
    python scripts/benchmark_deploy.py --run alexnet=runs/alexnet --run alexnet_simam=runs/alexnet_simam \\
        --json results/benchmark_deploy/run_1.json

The input is random normal data of the exported input shape [N, 3, 128, 128]; the time is the
engine's (copy in, run, copy out), no preprocessing.

``--formulation plain`` exports the SimAM models with the dynamic graph's "plain" formulation (mean
over H and W, square, divide) in place of "static", as exports were built before "static" existed,
for a before/after comparison on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads would spin beside the timed code

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from simam_paddle import cli  # noqa: E402,F401  (first: it quiets Paddle's start-up notices)
from simam_paddle.config import load_config  # noqa: E402
from simam_paddle.export import export  # noqa: E402
from simam_paddle.models import load_weights  # noqa: E402
from simam_paddle.models.from_config import build_from_config  # noqa: E402
from simam_paddle.run_dir import WEIGHTS, is_run_dir, save_run_config  # noqa: E402
from simam_paddle.runner import engine_threads, open_model  # noqa: E402
from simam_paddle.timing import measure  # noqa: E402

PAIRS = (("alexnet", "alexnet_simam"), ("resnet18", "resnet18_simam"))
SETTINGS = ("default Config", "oneDNN on", "oneDNN off", "onnxruntime")


def random_run(root: Path, name: str, state: dict | None, seed: int) -> tuple[Path, dict]:
    """A run directory of ``name`` with ``state`` as its best weights (random ones of ``seed`` if None)."""
    config = load_config(None, [f"model.name={name}", "model.num_classes=10"])  # CIFAR-10's classes
    run = root / name
    run.mkdir(parents=True)
    save_run_config(config, run)
    paddle.seed(seed)
    model = build_from_config(config)
    if state is not None:
        load_weights(model, state, model_name=name)
    paddle.save(model.state_dict(), str(run / WEIGHTS["best"]))
    return run, model.state_dict()


def export_pair(pair: tuple[str, str], runs: dict[str, Path], root: Path, seed: int, tolerance: float) -> dict:
    """{name: {"paddle": folder, "onnx": folder, "weights": ..., "check": {...}}} for the pair's two models."""
    exported, state = {}, None
    for name in pair:
        if name in runs:
            run, weights = runs[name], f"{runs[name]} (best weights)"
        else:
            run, state = random_run(root / "runs", name, state, seed)
            weights = f"random (paddle.seed({seed}), shared within the pair)"
        exported[name] = {"weights": weights, "check": {}}
        for fmt in ("paddle", "onnx"):
            folder = root / "exports" / name / fmt
            meta = export(run, fmt, output=folder, num_images=8, tolerance=tolerance, log=lambda _: None)
            exported[name][fmt] = folder
            exported[name]["check"][fmt] = meta["check"]["max_abs_diff"]
        print(f"  exported {name} ({weights}); max abs logit diff vs dynamic graph: "
              + ", ".join(f"{fmt} {diff:.1e}" for fmt, diff in exported[name]["check"].items()), flush=True)
    return exported


# The programs of a Paddle export the SimAM model runs (see simam_paddle.runner.choose_program).
PROGRAMS = ("simam_op", "standard")


def make_runner(setting: str, exported: dict, threads: int, program: str = "auto"):
    """The exported model of one engine setting, opened as predict and evaluate open it."""
    return open_model(exported["onnx" if setting == "onnxruntime" else "paddle"], onednn=setting != "oneDNN off",
                      threads=threads, program=program, default_config=setting == "default Config")


def time_pair(pair, exported, setting, program, threads, rounds, warmup, batch, latency_calls, latency_rounds,
              quiet_wait) -> dict:
    plain, simam = pair
    runners = {plain: make_runner(setting, exported[plain], threads),
               simam: make_runner(setting, exported[simam], threads, program)}
    rng = np.random.default_rng(0)
    big = rng.standard_normal((batch, 3, 128, 128)).astype(np.float32)
    one = rng.standard_normal((1, 3, 128, 128)).astype(np.float32)
    throughput = measure({n: (lambda r=r: r(big)) for n, r in runners.items()}, rounds, warmup, quiet_wait)
    print(f"  throughput: {throughput.conditions()}", flush=True)

    def calls(r):
        for _ in range(latency_calls):
            r(one)

    latency = measure({n: (lambda r=r: calls(r)) for n, r in runners.items()}, latency_rounds, warmup, quiet_wait)
    print(f"  latency: {latency.conditions()}", flush=True)
    row = {
        "engine": {n: runners[n].engine for n in pair},
        "img_s": {n: batch / throughput.seconds[n] for n in pair},
        "latency_ms": {n: 1e3 * latency.seconds[n] / latency_calls for n in pair},
        "conditions": {"throughput": throughput.conditions(), "latency": latency.conditions(),
                       "busy": throughput.busy or latency.busy},
    }
    row["throughput_ratio"] = row["img_s"][simam] / row["img_s"][plain]
    row["latency_ratio"] = row["latency_ms"][plain] / row["latency_ms"][simam]
    return row


def label(setting: str, program: str | None) -> str:
    """The row's name: the engine setting, and for Paddle Inference the SimAM model's program."""
    if program is None:
        return setting
    return f"{setting}, {'SimAM operator' if program == 'simam_op' else 'standard operators'}"


def machine() -> dict:
    model_name = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": model_name, "machine": platform.machine(), "cores_available": engine_threads(),
        "python": platform.python_version(), "paddlepaddle": paddle.__version__,
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
    }


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="take NAME's weights from a run directory (NAME: alexnet, alexnet_simam, resnet18, resnet18_simam)")
    p.add_argument("--pairs", nargs="+", default=[plain for plain, _ in PAIRS], choices=[plain for plain, _ in PAIRS],
                   help="which pairs (by the plain model's name; default: both)")
    p.add_argument("--threads", type=int, default=None, help="engine threads T (default: the cores available)")
    p.add_argument("--batch", type=int, default=64, help="throughput batch size (default: 64)")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds per measurement (default: 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    p.add_argument("--latency-calls", type=int, default=20, help="batch-1 calls per latency round (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="export check bound (default: 1e-4)")
    p.add_argument("--formulation", choices=("static", "plain"), default="static",
                   help="the SimAM formulation exports get (default: static, what simam_paddle exports; plain: as before it)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="seconds each measurement waits at most for a quiet machine (0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    if args.formulation == "plain":
        simam_module = sys.modules["simam_paddle.layers.simam"]
        simam_module._simam_static = simam_module._simam_plain  # what static graphs ran before "static"

    runs = {}
    for item in args.run:
        name, sep, path = item.partition("=")
        if not sep or name not in {n for pair in PAIRS for n in pair} or not is_run_dir(path):
            p.error(f"--run {item!r}: expected NAME=RUN_DIR with NAME one of the four models and a run directory")
        runs[name] = Path(path)
    threads = engine_threads(args.threads)
    info = {"machine": machine(), "formulation": args.formulation, "threads": threads, "batch": args.batch,
            "rounds": args.rounds, "warmup": args.warmup,
            "latency_calls": args.latency_calls, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_start": load()}
    print(f"machine: {info['machine']}; SimAM formulation in the exports: {args.formulation}")
    print(f"engine threads T = {threads}; batch {args.batch} throughput and batch 1 latency, median of {args.rounds} "
          f"interleaved rounds after {args.warmup} warm-up (latency: {args.latency_calls} calls per round); "
          f"load average at the start {info['load_start']}", flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="benchmark_deploy_") as tmp:
        for pair in PAIRS:
            if pair[0] not in args.pairs:
                continue
            print(f"{pair[0]} / {pair[1]}:", flush=True)
            exported = export_pair(pair, runs, Path(tmp) / pair[0], args.seed, args.tolerance)
            for setting, program in [(s, p) for s in SETTINGS[:-1] for p in PROGRAMS] + [(SETTINGS[-1], None)]:
                row = time_pair(pair, exported, setting, program, threads, args.rounds, args.warmup, args.batch,
                                args.latency_calls, args.rounds, args.quiet_wait)
                row.update(pair=list(pair), setting=label(setting, program), load=load())
                results.append(row)
                plain, simam = pair
                print(f"  {row['setting']:42s} {row['img_s'][plain]:8.1f} {row['img_s'][simam]:8.1f} img/s  "
                      f"ratio {row['throughput_ratio']:.3f} | {row['latency_ms'][plain]:7.2f} {row['latency_ms'][simam]:7.2f} ms "
                      f" ratio {row['latency_ratio']:.3f}  (load {row['load'][0]})", flush=True)
            info.setdefault("weights", {}).update({n: exported[n]["weights"] for n in pair})
            info.setdefault("export_check_max_abs_diff", {}).update({n: exported[n]["check"] for n in pair})
    info["load_end"] = load()

    print()
    print("| pair | engine, setting | plain img/s | SimAM img/s | ratio | plain ms (batch 1) | SimAM ms (batch 1) | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in results:
        plain, simam = row["pair"]
        print(f"| {plain} / {simam} | {row['setting']} | {row['img_s'][plain]:,.0f} | {row['img_s'][simam]:,.0f} | "
              f"{row['throughput_ratio']:.2f} | {row['latency_ms'][plain]:.2f} | {row['latency_ms'][simam]:.2f} | "
              f"{row['latency_ratio']:.2f} |")
    print(f"\nratio: the SimAM model's speed over the plain model's (img/s over img/s; plain ms over SimAM ms). "
          f"SimAM operator / standard operators: the SimAM model's program (model_simam_op.json / model.json). "
          f"Load average at the end {info['load_end']}.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**info, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
