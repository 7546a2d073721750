"""Train a model of the experiment: ``python -m simam_paddle.train --config configs/alexnet_simam.yaml``.

The recipe of the SimAM notebook (docs/recipe.md) by default: per iteration forward, label-smoothing
loss, backward, Adam step and a cosine LR step over all iterations (the optimizer, schedule, warmup and
clipping of other configs: ``simam_paddle.optim``); per epoch the running train loss and accuracy, then
loss and accuracy on the test set. The best and final weights, a resumable checkpoint of the last
completed epoch (and of every ``train.save_interval``-th), the history of every recorded figure, the log and the figures go into
``train.output_dir`` (the layout: ``simam_paddle.run_dir``). Runs unchanged under
``python -m paddle.distributed.launch`` (one process per device, ``data.batch_size`` per process).
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import math
import random
import signal
import sys
import time
from pathlib import Path


class ListModels(argparse.Action):
    """``--list-models``: print every model name with its facts (``simam_paddle.model_list``) and exit."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .model_list import list_models_text

        print(list_models_text(), end="")
        parser.exit()


def parse_args(argv: list[str] | None):
    p = cli.parser("train", __doc__.split("\n")[0])
    p.add_argument("--config", "-c", help="YAML config: a path, or the name of a shipped config (alexnet, "
                   "alexnet_simam, alexnet_simam_mixup); omitted: the defaults, or the run's own with --resume RUN_DIR")
    cli.add_overrides(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue the run in train.output_dir (or in RUN_DIR, with its own config) from its last "
                        "completed epoch")
    p.add_argument("--resume-epoch", type=int, metavar="N", help="with --resume: continue from the checkpoint of "
                   "epoch N that the run kept (train.save_interval) instead of its last; its later epochs are discarded")
    p.add_argument("--device", metavar="DEVICE", help="cpu, gpu, gpu:N or auto: the same as -o train.device=DEVICE")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in train.output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, every key with its meaning, and exit")
    p.add_argument("--list-models", action=ListModels, nargs=0,
                   help="print every model name (model.name) with its parameters, SimAM layers and input size, and exit")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --list-models: answered before the imports below load Paddle

# isort: split

import numpy as np
import paddle
import paddle.distributed as dist

from . import fastconv, optim, run_dir
from .config import ConfigError, check_config, describe, load_config
from .data import Mixup, build_loader, evenly_spaced_images, set_loader_epoch, worker_count
from .distributed import all_reduce_sum
from .errors import DataError, Interrupted, MissingDependency, TrainingDiverged
from .evaluate import evaluate, evaluate_run_end, model_throughput
from .io import atomic_write_json
from .losses import LabelSmoothingCrossEntropy
from .models.from_config import build_from_config
from .models.weights import load_pretrained, with_provenance
from .native import threads
from .plots import plot_curves, plot_predictions
from .run_record import RunLog, describe_conv, describe_simam, new_history, plural, seconds, simam_implementation


def check_device(device: str) -> None:
    """``train.device`` names a device this Paddle can run on; a GPU on a CPU build, or a GPU beyond
    those present, is a ConfigError naming the fix."""
    if not device.startswith("gpu"):
        return
    if not paddle.device.is_compiled_with_cuda():
        raise ConfigError(f"train.device={device}: this Paddle is a CPU build, which runs on the CPU only; set "
                          "train.device=cpu (or auto), or install a GPU build of PaddlePaddle")
    index, count = int(device.partition(":")[2] or 0), paddle.device.cuda.device_count()
    if index >= count:
        raise ConfigError(f"train.device={device}: this machine has {plural(count, 'GPU')} (gpu:0 .. gpu:{count - 1}); "
                          "choose one of those, or train.device=cpu")


def check_environment(config: dict) -> None:
    """Problems with the machine that would only show after work started."""
    check_device(config["train"]["device"])
    if config["train"]["amp"] != "off" and not paddle.device.is_compiled_with_cuda():
        raise ConfigError(
            f"train.amp={config['train']['amp']} needs a GPU build of Paddle with a GPU; this machine runs Paddle "
            "on the CPU, where mixed precision does not apply. Set train.amp=off"
        )
    if config["train"]["precision"] == "bf16":
        if not config["model"]["fast_conv"]:
            raise ConfigError("train.precision=bf16 computes the oneDNN convolutions in bfloat16: it needs "
                              "model.fast_conv=true (or set train.precision=fp32)")
        if not fastconv.kernel.cpu_has_bf16():
            raise ConfigError("train.precision=bf16 needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX-BF16); "
                              "this CPU has neither. Set train.precision=fp32")
        if config["train"]["amp"] != "off":
            raise ConfigError("train.precision=bf16 and train.amp are two mixed-precision modes: set train.amp=off")
    if config["train"]["visualdl"]:
        try:
            import visualdl  # noqa: F401
        except ImportError:
            raise MissingDependency("train.visualdl=true needs VisualDL: pip install visualdl "
                                    "(or set train.visualdl=false)") from None


def build_loaders(config: dict, distributed: bool = False) -> tuple:
    """The train and val loaders of a validated config; bad data (not an image, not CIFAR-10, too few
    images for a batch) is a DataError."""
    try:
        return build_loader(config, "train", distributed=distributed), build_loader(config, "val", distributed=distributed)
    except ValueError as exc:
        raise DataError(f"data: {exc}") from exc


class Trainer:
    """One run: built from a validated config, fitted with ``fit()``."""

    def __init__(self, config: dict):
        # Everything that can be checked is checked before the run directory is touched.
        check_environment(config)
        if config["train"]["device"] != "auto":
            paddle.set_device(config["train"]["device"])
        threads.configure()  # every CPU operator of the step on the available cores (native/threads.py)
        self.config = config
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        if self.world > 1:
            dist.init_parallel_env()
        self.main = self.rank == 0
        tc = config["train"]
        self.out = Path(tc["output_dir"])
        self.seed = tc["seed"]
        paddle.seed(self.seed)
        np.random.seed(self.seed)
        random.seed(self.seed)
        check_config(config)  # a config assembled in code has not been through load_config's checks
        self.classes = run_dir.resolve_classes(config)  # sets a null model.num_classes from the data
        self.train_loader, self.val_loader = build_loaders(config, distributed=self.world > 1)
        self.model = build_from_config(config)
        if tc["precision"] == "bf16":
            fastconv.use_bfloat16(self.model)
        self.notes = []  # said once the log is open
        pretrained = None
        if config["model"]["pretrained"]:
            path = run_dir.pretrained_path(config["model"]["pretrained"])
            pretrained = load_pretrained(self.model, path, config["model"]["name"], source=f"model.pretrained {path}",
                                         other_model=config["model"]["pretrained_other_model"])
        self.steps = len(self.train_loader)
        self.scheduler = optim.build_schedule(tc, self.steps)
        self.optimizer = optim.build_optimizer(tc, self.scheduler, self.model.parameters())
        self.criterion = LabelSmoothingCrossEntropy(config["loss"]["smoothing"])
        self.history = new_history(config, self.model, self.steps)
        self.start_epoch, self.best_acc = 0, -1.0
        self.completed_epochs = 0  # the last epoch saved in the run directory
        if self.main:
            self.start = run_dir.start_run(self.out, config)
        else:
            self.start = run_dir.resume_point(self.out, config) if tc["resume"] else "new"
        if pretrained and self.start == "new":
            self.notes.append(f"model.pretrained: {pretrained}")
        if tc["resume"] and self.start == "new":
            self.notes.append(f"--resume: {self.out} has no completed epoch to resume from; starting the run anew")
        if self.start == "resumable":
            saved = run_dir.run_classes(self.out, config)
            if saved != self.classes:
                raise ConfigError(f"cannot resume {self.out}: its classes ({', '.join(saved)}) are not those of data.root "
                                  f"({', '.join(self.classes)}); resume with the run's own data, or start a new run")
            state = run_dir.resume_state(self.out, config, self.model, self.optimizer)
            self.history, self.start_epoch, self.best_acc = state["history"], state["epoch"], state["best_acc"]
            self.completed_epochs = self.start_epoch
            if tc["resume_epoch"] is not None and self.main:
                run_dir.rewind(self.out, self.start_epoch, self.history, self.with_provenance)
            before = state["config"]["train"]["epochs"]
            if tc["epochs"] != before:  # raised (check_resumable refuses fewer): the schedule's horizon moves
                self.scheduler.step(self.start_epoch * self.steps)
                self.notes.append(f"train.epochs raised from {before} to {tc['epochs']}: the {tc['schedule']} schedule "
                                  f"now spans {tc['epochs'] * self.steps:,} iterations (was {before * self.steps:,}); "
                                  f"iteration {self.start_epoch * self.steps + 1:,} trains with lr {self.scheduler():.6g}")
        if tc["amp"] == "O2":  # O2 keeps float16 weights with float32 master copies in the optimizer
            self.model, self.optimizer = paddle.amp.decorate(models=self.model, optimizers=self.optimizer, level="O2")
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        self.scaler = paddle.amp.GradScaler() if tc["amp"] != "off" else None
        self.vdl = None
        if self.main and self.start != "finished":
            self.out.mkdir(parents=True, exist_ok=True)
            run_dir.save_run_config(config, self.out)
            run_dir.save_classes(self.out, self.classes)
            if tc["visualdl"]:
                from visualdl import LogWriter

                self.vdl = LogWriter(logdir=str(self.out / run_dir.VISUALDL))
        self.log = RunLog(self.out / run_dir.LOG if self.main and self.start != "finished" else None)

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
                saved = (f"The last good state is {self.out / run_dir.CHECKPOINT} (epoch {epoch})" if epoch else
                         "No epoch was completed, so nothing was saved")
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {epoch + 1}, iteration {it + 1}; stopping. {saved}. "
                    "Lower train.lr or check the data, then start again"
                )
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.optimizer.clear_grad()
            lr = self.optimizer.get_lr()  # the rate this step used
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
                         f"loss: {loss_value:.5f}, train acc: {correct / count:.4f}, batch_cost: {avg:.4f}s, "
                         f"reader_cost: {reader_cost / done:.4f}s, ips: {n / avg:.1f} images/sec, eta: {seconds(eta)}")
            else:
                self.log.progress(f"epoch {epoch + 1}/{epochs} iter {done}/{self.steps} loss {loss_value:.4f}")
            batch_start = time.perf_counter()
        elapsed = time.perf_counter() - start
        loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count])
        if count == 0:
            raise ConfigError("the training loader yielded no batch: data.batch_size is larger than the training set "
                              "(with drop_last); lower data.batch_size or raise data.limit_train")
        return {"lr": lr, "train_loss": loss_sum / count, "train_acc": correct / count, "epoch_time": elapsed,
                "train_ips": count / elapsed}

    # -- the run ---------------------------------------------------------------------------------
    def fit(self) -> dict:
        tc = self.config["train"]
        h = self.history
        if self.start == "finished":
            print(f"{self.out} holds a finished run ({plural(tc['epochs'], 'epoch')}): nothing to resume", flush=True)
            return h
        for note in self.notes:
            self.log(note)
        if self.start_epoch:
            kept = " (its kept checkpoint; any later epochs are discarded)" if tc["resume_epoch"] is not None else ""
            self.log(f"resuming {self.out} after epoch {self.start_epoch}{kept}")
        self.log(f"{h['model']}: {h['params']:,} parameters, {plural(self.steps, 'iteration')} per epoch, "
                 f"{plural(tc['epochs'], 'epoch')}, output {self.out}")
        self.log(f"SimAM implementation: {describe_simam(simam_implementation(self.model))}")
        self.log(f"Convolutions: {describe_conv(fastconv.implementation(self.model))}")
        self.log(f"CPU threads: {threads.running()} for every operator of a step, data loading: "
                 f"{worker_count(self.config['data']['num_workers'])} worker processes ({threads.ENV} sets the threads)")
        for epoch in range(self.start_epoch, tc["epochs"]):
            stats = self.train_epoch(epoch)
            val = evaluate(self.model, self.val_loader, self.config["loss"]["smoothing"])
            # lr: the rate the epoch's last step used, as the epoch's last [Train] line says
            record = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_acc": val["acc"], "val_ips": val["ips"]}
            for key, value in record.items():
                h["epoch"][key].append(value)
            improved = val["acc"] > self.best_acc
            if improved:
                self.best_acc = val["acc"]
                h["best"] = {"epoch": epoch + 1, "val_acc": val["acc"]}
            self.log(f"[Eval][Epoch {epoch + 1}/{tc['epochs']}] lr: {stats['lr']:.6f}, train loss: "
                     f"{stats['train_loss']:.5f}, train acc: "
                     f"{stats['train_acc']:.4f}, val loss: {val['loss']:.5f}, val acc: {val['acc']:.4f}"
                     f"{' (best)' if improved else ''}, epoch time: {seconds(stats['epoch_time'])}, "
                     f"train ips: {stats['train_ips']:.1f}")
            if self.main:
                if self.vdl is not None:
                    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "train_ips"):
                        self.vdl.add_scalar(f"epoch/{key}", record[key], epoch + 1)
                if improved:
                    run_dir.save_weights(self.out, "best", self.weights_to_save())
                run_dir.save_checkpoint(self.out, self.model, self.optimizer,
                                        {"epoch": epoch + 1, "best_acc": self.best_acc, "history": h, "config": self.config},
                                        tc["save_interval"], tc["keep_last"])
                run_dir.commit_replacement(self.out)
                atomic_write_json(self.out / run_dir.HISTORY, h)
                self.completed_epochs = epoch + 1
        self.finish()
        return h

    def weights_to_save(self) -> dict:
        """The model's state dict with its provenance: this model's name and this run directory."""
        return self.with_provenance(self.model.state_dict())

    def with_provenance(self, weights: dict) -> dict:
        return with_provenance(weights, self.config["model"]["name"], f"the run {self.out.resolve()}")

    def finish(self) -> None:
        """Final weights, throughput of the best model, figures."""
        if not self.main:
            return
        tc, h = self.config["train"], self.history
        last_is_best = h["best"]["epoch"] == h["epoch"]["epoch"][-1]
        run_dir.save_weights(self.out, "final", self.weights_to_save(), same_as="best" if last_is_best else None)
        best, _ = run_dir.load_run_model(self.out, "best")
        if tc["throughput_batches"]:
            h["throughput"]["model_only_ips"] = model_throughput(
                {"best": best}, self.config["data"]["batch_size"], tc["throughput_batches"],
                input_size=self.config["data"]["image_size"])["best"]
        # the notebook's figure: the test set through the loader, loading included; every epoch measured it
        h["throughput"]["end_to_end_ips"] = float(np.median(h["epoch"]["val_ips"]))
        h["finished"] = True
        atomic_write_json(self.out / run_dir.HISTORY, h)
        plot_curves(h, self.out / run_dir.CURVES, title=f"{h['model']}, seed {self.seed}")
        images, truth = evenly_spaced_images(self.val_loader, 18)
        with paddle.no_grad():
            predicted = best(paddle.to_tensor(images)).argmax(axis=1).tolist()
        plot_predictions(images, predicted, truth, self.classes, self.out / run_dir.PREDICTIONS)
        val_loader = self.val_loader if self.world == 1 else build_loader(self.config, "val")  # all of it, here alone
        self.log(evaluate_run_end(best, val_loader, self.classes, self.out, self.config, h["best"]["epoch"]))
        tp = h["throughput"]
        model_only = (f"model-only {tp['model_only_ips']:.1f} img/s" if "model_only_ips" in tp
                      else "model-only not measured (train.throughput_batches=0)")
        self.log(f"done: best val acc {h['best']['val_acc']:.4f} (epoch {h['best']['epoch']}), final val acc "
                 f"{h['epoch']['val_acc'][-1]:.4f}; throughput {model_only}, end-to-end {tp['end_to_end_ips']:.1f} "
                 f"img/s; files in {self.out}")
        self.log.close()
        if self.vdl is not None:
            self.vdl.close()


def train(config: dict) -> dict:
    """Train with a validated config (see ``simam_paddle.config``); return the history.

    A run that replaced another (``train.overwrite``) and stops before its first checkpoint puts the
    old run back.
    """
    trainer = Trainer(config)
    try:
        return trainer.fit()
    except BaseException as exc:
        restored = trainer.main and run_dir.restore_replaced(trainer.out)
        if restored:
            print(f"the run that --overwrite was replacing is back in {trainer.out}", file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            what = "terminated" if getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM else "interrupted"
            if trainer.completed_epochs and not restored:
                kept = (f"epoch {trainer.completed_epochs} is the last one saved in {trainer.out}; "
                        "continue with --resume")
            else:
                kept = "no epoch of this run was completed, so none was saved"
            raise Interrupted(f"{what}: {kept}", getattr(exc, "signum", signal.SIGINT)) from None
        raise


def resolve_config(args) -> dict:
    """The config of this invocation: file (or a resumed run's own), overrides, the one-off flags."""
    overrides = list(args.override)
    path = cli.find_config(args.config) if args.config else None
    if isinstance(args.resume, str):
        if path is None:
            path = run_dir.read_config_path(args.resume)
        overrides.append(f"train.output_dir={args.resume}")
    flags = [f"train.{name}=true" for name in ("resume", "overwrite") if getattr(args, name)]
    if args.resume_epoch is not None:
        flags.append(f"train.resume_epoch={args.resume_epoch}")
    if args.device is not None:
        flags.append(f"train.device={args.device}")
    return load_config(path, overrides + flags)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> int:
        config = resolve_config(args)
        if args.print_config:
            print(describe(config), end="")
            return cli.EXIT_OK
        train(config)
        return cli.EXIT_OK

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
