"""What a training run records about itself: the environment it ran on (which SimAM and which
convolutions ran, on how many threads; ``history.json``'s ``environment``), the frame of its history,
and its log (``train.log``, with a live progress line on a terminal), with the phrases the log uses for them.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist

from . import fastconv
from .io import disk_full
from .layers import SimAM, simam_kernel
from .layers.simam import resolve_backend
from .models import parameter_count
from .native import threads


def simam_implementation(model: paddle.nn.Layer) -> dict:
    """Which SimAM implementation the model's layers run here ("kernel", "paddle", "plain", or "none"
    for a model without SimAM), the kernel's threads, and why the kernel is unavailable if it is."""
    layers = [layer for layer in model.sublayers() if isinstance(layer, SimAM)]
    if not layers:
        return {"implementation": "none"}
    probe = paddle.zeros([1, 1, 2, 2], dtype=next(iter(model.parameters())).dtype)
    status = simam_kernel.status()
    return {"implementation": resolve_backend(probe, layers[0].backend), "kernel_threads": status["threads"],
            "kernel_error": status["error"]}


def environment(model: paddle.nn.Layer) -> dict:
    """What the run ran on, recorded with its results."""
    return {
        "python": platform.python_version(),
        "paddle": paddle.__version__,
        "numpy": np.__version__,
        "device": paddle.device.get_device(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "world_size": dist.get_world_size(),
        "threads": threads.running(),
        "simam": simam_implementation(model),
        "conv": fastconv.implementation(model),
    }


class RunLog:
    """Log lines to stdout and ``train.log`` (rank 0 only); a live progress line on a terminal."""

    def __init__(self, path: Path | None):
        self.path = path
        self.file = open(path, "a") if path is not None else None
        self.live = sys.stdout.isatty() and path is not None

    def __call__(self, message: str) -> None:
        if self.file is None:
            return
        line = f"[{datetime.datetime.now():%Y-%m-%d %H:%M:%S}] {message}"
        print(("\r\033[K" if self.live else "") + line, flush=True)
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except OSError as exc:
            self.file = None  # the log is what cannot be written: stop writing it
            raise disk_full(self.path, exc) or exc from None

    def progress(self, message: str) -> None:
        if self.live:
            print("\r\033[K" + message, end="", flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def new_history(config: dict, model: paddle.nn.Layer, steps_per_epoch: int) -> dict:
    return {
        "model": config["model"]["name"],
        "params": parameter_count(model),
        "steps_per_epoch": steps_per_epoch,
        "environment": environment(model),
        "iter_loss": {"iter": [], "loss": [], "lr": []},
        "epoch": {k: [] for k in ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                  "epoch_time", "train_ips", "val_ips")},
        "best": {"epoch": None, "val_acc": None},
        "throughput": {},
        "finished": False,
    }


def describe_simam(info: dict) -> str:
    if info["implementation"] == "kernel":
        return f"kernel (fused C++ CPU operator, {info['kernel_threads']} threads)"
    if info["implementation"] == "none":
        return "none (the model has no SimAM layer)"
    why = f"; the kernel is unavailable: {info['kernel_error'].splitlines()[0]}" if info.get("kernel_error") else ""
    return f"{info['implementation']} (Paddle operations{why})"


def describe_conv(info: dict) -> str:
    if info["implementation"] == "onednn":
        precision = ", bfloat16 inputs" if info.get("bf16") else ""
        return f"onednn (oneDNN {info['onednn']}, {info['threads']} threads, {info['layers']} layers{precision})"
    if info["implementation"] == "none":
        return "none (the model has no convolution)"
    why = f"; oneDNN is unavailable: {info['error'].splitlines()[0]}" if info.get("error") else ""
    return f"paddle (Paddle's own kernels{why})"


def plural(count: int, word: str) -> str:
    """``plural(1, "epoch")`` -> "1 epoch", ``plural(3, "epoch")`` -> "3 epochs"."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def seconds(s: float) -> str:
    return str(datetime.timedelta(seconds=int(s)))
