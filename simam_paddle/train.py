"""Train a model of the experiment: ``python -m simam_paddle.train --config configs/alexnet_simam.yaml``.

The recipe of the SimAM notebook (RECIPE.md): per iteration forward, label-smoothing loss, backward,
Adam step and a cosine LR step over all iterations; per epoch the running train loss and accuracy,
then loss and accuracy on the test set. The best and final weights, a resumable checkpoint of the last
completed epoch, the history of every recorded figure, the log and the figures go into
``train.output_dir``. Runs unchanged under ``python -m paddle.distributed.launch`` (one process per
device, ``data.batch_size`` per process).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist

from .checkpoint import CHECKPOINT, prepare_run_dir, resume_state, save_checkpoint
from .config import ConfigError, describe, load_config, save_config
from .data import CLASS_NAMES, Mixup, build_loaders, sample_images, set_loader_epoch
from .distributed import all_reduce_sum
from .evaluate import evaluate, model_throughput
from .io import atomic_paddle_save, atomic_write_json
from .losses import LabelSmoothingCrossEntropy
from .plots import plot_curves, plot_predictions
from .runs import build_run_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf."""


def environment() -> dict:
    """What the run ran on, recorded with its results."""
    return {
        "python": platform.python_version(),
        "paddle": paddle.__version__,
        "numpy": np.__version__,
        "device": paddle.device.get_device(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "world_size": dist.get_world_size(),
    }


class RunLog:
    """Log lines to stdout and ``train.log`` (rank 0 only); a live progress line on a terminal."""

    def __init__(self, path: Path | None):
        self.file = open(path, "a") if path is not None else None
        self.live = sys.stdout.isatty() and path is not None

    def __call__(self, message: str) -> None:
        if self.file is None:
            return
        line = f"[{datetime.datetime.now():%Y-%m-%d %H:%M:%S}] {message}"
        print(("\r\033[K" if self.live else "") + line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def progress(self, message: str) -> None:
        if self.live:
            print("\r\033[K" + message, end="", flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def check_environment(config: dict) -> None:
    """Problems with the machine that would only show after work started."""
    if config["train"]["amp"] != "off" and not paddle.device.is_compiled_with_cuda():
        raise ConfigError(
            f"train.amp={config['train']['amp']} needs a GPU build of Paddle with a GPU; this machine runs Paddle "
            "on the CPU, where mixed precision does not apply. Set train.amp=off"
        )
    if config["train"]["visualdl"]:
        try:
            import visualdl  # noqa: F401
        except ImportError:
            raise ConfigError("train.visualdl=true needs VisualDL: pip install visualdl (or set train.visualdl=false)") from None


def new_history(config: dict, model: paddle.nn.Layer, steps_per_epoch: int) -> dict:
    return {
        "model": config["model"]["name"],
        "params": int(sum(np.prod(p.shape) for p in model.parameters())),
        "steps_per_epoch": steps_per_epoch,
        "environment": environment(),
        "iter_loss": {"iter": [], "loss": [], "lr": []},
        "epoch": {k: [] for k in ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                  "epoch_time", "train_ips", "val_ips")},
        "best": {"epoch": None, "val_acc": None},
        "throughput": {},
        "finished": False,
    }


def seconds(s: float) -> str:
    return str(datetime.timedelta(seconds=int(s)))


class Trainer:
    """One run: built from a validated config, fitted with ``fit()``."""

    def __init__(self, config: dict):
        check_environment(config)
        self.config = config
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        if self.world > 1:
            dist.init_parallel_env()
        self.main = self.rank == 0
        tc, dc = config["train"], config["data"]
        self.out = Path(tc["output_dir"])
        resuming = prepare_run_dir(self.out, config) if self.main else tc["resume"]
        self.seed = tc["seed"]
        paddle.seed(self.seed)
        np.random.seed(self.seed)
        random.seed(self.seed)
        try:
            self.train_loader, self.val_loader = build_loaders(dc, seed=self.seed, distributed=self.world > 1)
        except ValueError as exc:  # bad data (not an image, not CIFAR-10, too few images): a config problem
            raise ConfigError(f"data: {exc}") from exc
        self.model = build_run_model(config)
        self.steps = len(self.train_loader)
        self.scheduler = paddle.optimizer.lr.CosineAnnealingDecay(tc["lr"], T_max=self.steps * tc["epochs"])
        self.optimizer = paddle.optimizer.Adam(learning_rate=self.scheduler, parameters=self.model.parameters(),
                                               weight_decay=tc["weight_decay"])
        self.criterion = LabelSmoothingCrossEntropy(config["loss"]["smoothing"])
        self.history = new_history(config, self.model, self.steps)
        self.start_epoch, self.best_acc = 0, -1.0
        if resuming:
            state = resume_state(self.out, config, self.model, self.optimizer)
            self.history, self.start_epoch, self.best_acc = state["history"], state["epoch"], state["best_acc"]
        if tc["amp"] == "O2":  # O2 keeps float16 weights with float32 master copies in the optimizer
            self.model, self.optimizer = paddle.amp.decorate(models=self.model, optimizers=self.optimizer, level="O2")
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        self.scaler = paddle.amp.GradScaler() if tc["amp"] != "off" else None
        self.vdl = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out / "config.yaml")
            if tc["visualdl"]:
                from visualdl import LogWriter

                self.vdl = LogWriter(logdir=str(self.out / "visualdl"))
        self.log = RunLog(self.out / "train.log" if self.main else None)

    # -- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        tc, epochs = self.config["train"], self.config["train"]["epochs"]
        # Dropout and Mixup of epoch e depend on (seed, e) only, so a resumed run repeats them exactly.
        paddle.seed(self.seed * 1000 + epoch)
        alpha = self.config["data"]["mixup_alpha"]
        mixup = Mixup(alpha, self.config["model"]["num_classes"], seed=self.seed * 1000 + epoch) if alpha > 0 else None
        set_loader_epoch(self.train_loader, epoch)
        self.net.train()
        loss_sum = correct = count = 0.0
        start = batch_start = time.perf_counter()
        reader_cost = batch_cost = 0.0
        for it, (images, labels) in enumerate(self.train_loader):
            reader_cost += time.perf_counter() - batch_start
            global_iter = epoch * self.steps + it
            targets = labels
            if mixup is not None:
                images, targets = mixup(images, labels)
            with paddle.amp.auto_cast(enable=self.scaler is not None, level=tc["amp"] if tc["amp"] != "off" else "O1"):
                logits = self.net(images)
                loss = self.criterion(logits, targets)
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {epoch + 1}, iteration {it + 1}; stopping. The last good state "
                    f"is {self.out / CHECKPOINT} (epoch {epoch}). Lower train.lr or check the data, then start again"
                )
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.optimizer.clear_grad()
            lr = self.optimizer.get_lr()
            self.scheduler.step()
            n = labels.shape[0]
            loss_sum += loss_value * n
            correct += float((logits.argmax(axis=1) == labels).astype("float32").sum())
            count += n
            if it % tc["loss_record_interval"] == 0:
                self.history["iter_loss"]["iter"].append(global_iter)
                self.history["iter_loss"]["loss"].append(loss_value)
                self.history["iter_loss"]["lr"].append(lr)
                if self.vdl is not None:
                    self.vdl.add_scalar("train/loss", loss_value, global_iter)
                    self.vdl.add_scalar("train/lr", lr, global_iter)
            batch_cost += time.perf_counter() - batch_start
            done = it + 1
            if done % tc["log_interval"] == 0 or done == self.steps:
                avg = batch_cost / done
                eta = avg * ((epochs - epoch) * self.steps - done)
                self.log(f"[Train][Epoch {epoch + 1}/{epochs}][Iter {done}/{self.steps}] lr: {lr:.6f}, "
                         f"loss: {loss_value:.5f}, top1: {correct / count:.4f}, batch_cost: {avg:.4f}s, "
                         f"reader_cost: {reader_cost / done:.4f}s, ips: {n / avg:.1f} images/sec, eta: {seconds(eta)}")
            else:
                self.log.progress(f"epoch {epoch + 1}/{epochs} iter {done}/{self.steps} loss {loss_value:.4f}")
            batch_start = time.perf_counter()
        elapsed = time.perf_counter() - start
        loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count])
        if count == 0:
            raise ConfigError("the training loader yielded no batch: data.batch_size is larger than the training set "
                              "(with drop_last); lower data.batch_size or raise data.limit_train")
        return {"train_loss": loss_sum / count, "train_acc": correct / count, "epoch_time": elapsed,
                "train_ips": count / elapsed}

    # -- the run ---------------------------------------------------------------------------------
    def fit(self) -> dict:
        tc = self.config["train"]
        h = self.history
        if self.start_epoch:
            self.log(f"resuming {self.out} after epoch {self.start_epoch}")
        self.log(f"{h['model']}: {h['params']:,} parameters, {self.steps} iterations per epoch, "
                 f"{tc['epochs']} epochs, output {self.out}")
        for epoch in range(self.start_epoch, tc["epochs"]):
            lr = self.optimizer.get_lr()
            stats = self.train_epoch(epoch)
            val = evaluate(self.model, self.val_loader, self.config["loss"]["smoothing"])
            record = {"epoch": epoch + 1, "lr": lr, **stats, "val_loss": val["loss"], "val_acc": val["acc"],
                      "val_ips": val["ips"]}
            for key, value in record.items():
                h["epoch"][key].append(value)
            improved = val["acc"] > self.best_acc
            if improved:
                self.best_acc = val["acc"]
                h["best"] = {"epoch": epoch + 1, "val_acc": val["acc"]}
            self.log(f"[Eval][Epoch {epoch + 1}/{tc['epochs']}] train loss: {stats['train_loss']:.5f}, train acc: "
                     f"{stats['train_acc']:.4f}, val loss: {val['loss']:.5f}, val acc: {val['acc']:.4f}"
                     f"{' (best)' if improved else ''}, epoch time: {seconds(stats['epoch_time'])}, "
                     f"train ips: {stats['train_ips']:.1f}")
            if self.main:
                if self.vdl is not None:
                    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "train_ips"):
                        self.vdl.add_scalar(f"epoch/{key}", record[key], epoch + 1)
                if improved:
                    atomic_paddle_save(self.model.state_dict(), self.out / "best_model.pdparams")
                    atomic_paddle_save(self.optimizer.state_dict(), self.out / "best_optimizer.pdopt")
                save_checkpoint(self.out / CHECKPOINT, self.model, self.optimizer,
                                {"epoch": epoch + 1, "best_acc": self.best_acc, "history": h, "config": self.config})
                atomic_write_json(self.out / "history.json", h)
        self.finish()
        return h

    def finish(self) -> None:
        """Final weights, throughput of the best model, figures."""
        if not self.main:
            return
        tc, h = self.config["train"], self.history
        atomic_paddle_save(self.model.state_dict(), self.out / "final_model.pdparams")
        atomic_paddle_save(self.optimizer.state_dict(), self.out / "final_optimizer.pdopt")
        best = build_run_model(self.config)
        best.set_state_dict(paddle.load(str(self.out / "best_model.pdparams")))
        best.eval()
        if tc["throughput_batches"]:
            h["throughput"]["model_only_ips"] = model_throughput(
                {"best": best}, self.config["data"]["batch_size"], tc["throughput_batches"])["best"]
        # the notebook's figure: the test set through the loader, loading included; every epoch measured it
        h["throughput"]["end_to_end_ips"] = float(np.median(h["epoch"]["val_ips"]))
        h["finished"] = True
        atomic_write_json(self.out / "history.json", h)
        plot_curves(h, self.out / "curves.png", title=f"{h['model']}, seed {self.seed}")
        images, truth = sample_images(self.val_loader, 18)
        with paddle.no_grad():
            predicted = best(paddle.to_tensor(images)).argmax(axis=1).tolist()
        plot_predictions(images, predicted, truth, CLASS_NAMES, self.out / "predictions.png")
        tp = h["throughput"]
        self.log(f"done: best val acc {h['best']['val_acc']:.4f} (epoch {h['best']['epoch']}), final val acc "
                 f"{h['epoch']['val_acc'][-1]:.4f}; throughput model-only {tp.get('model_only_ips', float('nan')):.1f} "
                 f"img/s, end-to-end {tp['end_to_end_ips']:.1f} img/s; files in {self.out}")
        self.log.close()
        if self.vdl is not None:
            self.vdl.close()


def train(config: dict) -> dict:
    """Train with a validated config (see ``simam_paddle.config``); return the history."""
    return Trainer(config).fit()


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m simam_paddle.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", "-c", help="YAML config (configs/*.yaml); omitted: the defaults")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="section.key=value",
                        help="override a config value, e.g. -o train.epochs=5 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in train.output_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in train.output_dir")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config, every key with its meaning, and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = [f"train.{name}=true" for name in ("resume", "overwrite") if getattr(args, name)]
    try:
        config = load_config(args.config, args.override + flags)
        if args.print_config:
            print(describe(config), end="")
            return 0
        train(config)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\ninterrupted: the last completed epoch is saved; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
