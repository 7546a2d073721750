"""The training loop end to end: files, history, resume, kill-and-resume, determinism, bad configs.

Runs go through the command line in subprocesses, as a user runs them. Most use a tiny synthetic
image folder (so they run on any clone); one uses a subset of the real CIFAR-10 copy.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
import yaml
from helpers import REPO_ROOT, call_tool, run_train
from helpers import write_learnable_image_folder as write_image_folder

pytestmark = pytest.mark.integration  # tools run end to end in subprocesses

TIMING_KEYS = {"epoch_time", "train_ips", "val_ips"}


def tiny_args(root, out, *extra):
    return ["--config", str(REPO_ROOT / "configs" / "alexnet_simam.yaml"), "-o", f"data.root={root}",
            "-o", f"train.output_dir={out}", "-o", "data.batch_size=16", "-o", "data.num_workers=0",
            "-o", "train.epochs=3", "-o", "train.log_interval=2", "-o", "train.loss_record_interval=1",
            "-o", "train.throughput_batches=2", "-o", "train.lr=1e-3", *extra]


def comparable(history):
    """A history without the wall-clock figures, which differ between any two runs."""
    h = json.loads(json.dumps(history))
    for key in TIMING_KEYS:
        h["epoch"].pop(key)
    h.pop("throughput")
    return h


def assert_same_history(a, b):
    a, b = comparable(a), comparable(b)
    assert a["epoch"]["epoch"] == b["epoch"]["epoch"]
    for key in a["epoch"]:
        np.testing.assert_allclose(a["epoch"][key], b["epoch"][key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(a["iter_loss"]["loss"], b["iter_loss"]["loss"], rtol=1e-5)
    assert a["iter_loss"]["iter"] == b["iter_loss"]["iter"]
    assert a["best"]["epoch"] == b["best"]["epoch"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("tiny"), train_per_class=8, test_per_class=3)


@pytest.fixture(scope="module")
def reference_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ref"
    proc = run_train(*tiny_args(tiny_root, out))
    return out, proc


def test_run_leaves_every_file(reference_run):
    out, proc = reference_run
    for name in ("config.yaml", "train.log", "history.json", "best_model.pdparams",
                 "final_model.pdparams", "curves.png", "predictions.png", "checkpoint.pdckpt"):
        assert (out / name).is_file(), f"{name} missing"
    assert not list(out.glob("*.pdopt")), "optimizer state is kept in the checkpoint only"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["epochs"] == 3 and config["model"]["e_lambda"] == 1e-5
    h = json.loads((out / "history.json").read_text())
    assert h["finished"] and h["epoch"]["epoch"] == [1, 2, 3]
    assert h["steps_per_epoch"] == 80 // 16
    assert len(h["iter_loss"]["loss"]) == 3 * 5
    assert h["params"] == 7_524_042
    assert 0 <= min(h["epoch"]["val_acc"]) and max(h["epoch"]["val_acc"]) <= 1
    assert h["best"]["val_acc"] == max(h["epoch"]["val_acc"])
    assert h["throughput"]["model_only_ips"] > 0 and h["throughput"]["end_to_end_ips"] > 0
    log = (out / "train.log").read_text()
    lr_iter2 = 1e-3 * (1 + math.cos(math.pi * 1 / 15)) / 2  # the LR used by the second iteration
    assert f"[Train][Epoch 1/3][Iter 2/5] lr: {lr_iter2:.6f}, loss: " in log
    assert "batch_cost:" in log and "reader_cost:" in log and "ips:" in log and "eta:" in log
    assert "[Eval][Epoch 3/3]" in log
    for png in ("curves.png", "predictions.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and (out / png).stat().st_size > 20_000
    paddle.load(str(out / "best_model.pdparams"))


def test_learning_rate_follows_the_cosine_by_hand(reference_run):
    h = json.loads((reference_run[0] / "history.json").read_text())
    total = 3 * 5
    for it, lr in zip(h["iter_loss"]["iter"], h["iter_loss"]["lr"]):
        assert lr == pytest.approx(1e-3 * (1 + math.cos(math.pi * it / total)) / 2, rel=1e-6)
    # an epoch's lr: the rate of its last step (iteration 5e + 4)
    assert h["epoch"]["lr"] == pytest.approx([1e-3 * (1 + math.cos(math.pi * (e * 5 + 4) / total)) / 2 for e in range(3)])


def test_training_loss_decreases(reference_run):
    h = json.loads((reference_run[0] / "history.json").read_text())
    assert h["epoch"]["train_loss"][-1] < h["epoch"]["train_loss"][0]


@pytest.mark.slow
def test_same_seed_same_history_with_two_workers(reference_run, tiny_root, tmp_path):
    run_train(*tiny_args(tiny_root, tmp_path / "w2", "-o", "data.num_workers=2"))
    a = json.loads((reference_run[0] / "history.json").read_text())
    b = json.loads((tmp_path / "w2" / "history.json").read_text())
    assert_same_history(a, b)


@pytest.mark.slow
def test_resume_after_an_interrupted_run_gives_the_same_history(reference_run, tiny_root, tmp_path):
    first = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "simam_paddle.train", *tiny_args(tiny_root, first),
                             "-o", "train.log_interval=1"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = _kill_during_epoch(proc, first / "train.log", epoch=2)
    assert killed, "the run finished before it could be killed"
    assert json.loads((first / "history.json").read_text())["epoch"]["epoch"] == [1]
    refused = run_train(*tiny_args(tiny_root, first), check=False)
    assert refused.returncode != 0 and "already holds a run" in refused.stderr
    run_train(*tiny_args(tiny_root, first), "--resume")
    assert_same_history(json.loads((reference_run[0] / "history.json").read_text()),
                        json.loads((first / "history.json").read_text()))
    assert "resuming" in (first / "train.log").read_text()


def _kill_during_epoch(proc, log, epoch, timeout=300):
    """SIGKILL ``proc`` once its log shows an iteration of ``epoch``; False if it ended first."""
    deadline = time.time() + timeout
    marker = f"[Train][Epoch {epoch}/"
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and marker in log.read_text():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


@pytest.mark.slow
def test_overwrite_replaces_only_the_run_files(tiny_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    run_train(*tiny_args(tiny_root, out, "-o", "train.epochs=1"), "--overwrite")
    assert json.loads((out / "history.json").read_text())["finished"]
    assert (out / "notes.txt").read_text() == "mine", "overwrite removed a file the run did not write"


def test_resume_with_a_different_recipe_is_refused(reference_run, tiny_root, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_run[0], out)
    proc = call_tool("train", *tiny_args(tiny_root, out, "-o", "train.lr=0.01"), "--resume")
    assert proc.returncode == 2 and "train.lr: 0.001 -> 0.01" in proc.stderr


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_root, tmp_path):
    from simam_paddle.config import load_config
    from simam_paddle.train import Trainer, TrainingDiverged

    out = tmp_path / "nan"
    trainer = Trainer(load_config(None, tiny_args(tiny_root, out)[3::2]))
    real, calls = trainer.criterion, []

    def poisoned(logits, target):  # a loss that turns NaN at the first iteration of epoch 2
        calls.append(1)
        loss = real(logits, target)
        return loss * float("nan") if len(calls) > 5 else loss

    trainer.criterion = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, iteration 1.*checkpoint\.pdckpt \(epoch 1\)"):
        trainer.fit()
    state = paddle.load(str(out / "checkpoint.pdckpt"))["state"]
    assert state["epoch"] == 1
    assert json.loads((out / "history.json").read_text())["epoch"]["epoch"] == [1]
    assert not (out / "final_model.pdparams").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs: expected between 1 and 100,000, got 0"),
        ("train.epochs=10000000000", "train.epochs: expected between 1 and 100,000, got 10000000000"),
        ("train.seed=-1", "train.seed: expected between 0 and 4,294,967,295 (2^32 - 1, NumPy's range), got -1"),
        ("train.seed=4294967296", "train.seed: expected between 0 and 4,294,967,295"),
        ("train.seed=18446744073709551616", "train.seed: expected between 0 and 4,294,967,295"),
        ("data.batch_size=0", "data.batch_size: expected >= 1, got 0"),
        ("loss.smoothing=1", "loss.smoothing: expected in [0, 1), got 1"),
        ("train.epochz=3", "unknown key train.epochz"),
        ("train.epochs=two", "train.epochs: expected int, got 'two'"),
        ("train.amp=O1", "train.amp=O1 needs a GPU"),
    ],
)
def test_bad_config_fails_before_work_with_the_key_named(tmp_path, override, message):
    out = tmp_path / "bad"
    args = ("--config", str(REPO_ROOT / "configs" / "alexnet.yaml"), "-o", f"train.output_dir={out}",
            "-o", "data.root=/nonexistent", "-o", override)
    # one case as a user runs it, the others in this process (the same main, without Paddle's import each time)
    proc = run_train(*args, check=False) if override == "train.epochz=3" else call_tool("train", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_missing_data_root_is_a_clear_error(tmp_path):
    proc = call_tool("train", "-o", f"data.root={tmp_path / 'nowhere'}", "-o", f"train.output_dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and str(tmp_path / "nowhere") in proc.stderr


@pytest.mark.parametrize("content, says", [(b"", "an empty file"), (b"\xff\xd8\xff\xe0 cut short", "not a readable image")])
def test_an_unreadable_image_in_the_data_is_named(tmp_path, content, says):
    root = write_image_folder(tmp_path / "data", train_per_class=2, test_per_class=1)
    bad = sorted((root / "train" / "cat").iterdir())[0]
    bad.write_bytes(content)
    out = tmp_path / "run"
    proc = call_tool("train", *tiny_args(root, out))
    assert proc.returncode == 2 and f"{bad}: {says}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_short_run_on_real_cifar10(cifar10_jpeg, tmp_path):
    out = tmp_path / "real"
    run_train("--config", str(REPO_ROOT / "configs" / "alexnet_simam.yaml"), "-o", f"data.root={cifar10_jpeg}",
              "-o", f"train.output_dir={out}", "-o", "data.limit_train=320", "-o", "data.limit_val=100",
              "-o", "data.batch_size=32", "-o", "data.num_workers=0", "-o", "train.epochs=2",
              "-o", "train.throughput_batches=2", "-o", "train.lr=1e-3")
    h = json.loads((out / "history.json").read_text())
    assert h["finished"] and h["steps_per_epoch"] == 10
    assert all(math.isfinite(v) for v in h["epoch"]["val_loss"])
    assert h["epoch"]["train_loss"][-1] < h["epoch"]["train_loss"][0]


@pytest.mark.slow
def test_visualdl_scalars(tiny_root, tmp_path):
    pytest.importorskip("visualdl", reason="VisualDL is not installed (pip install -e '.[dev]' installs it)")
    from visualdl import LogReader

    out = tmp_path / "vdl"
    run_train(*tiny_args(tiny_root, out, "-o", "train.epochs=1", "-o", "train.visualdl=true"))
    records = list((out / "visualdl").glob("vdlrecords*"))
    assert len(records) == 1
    reader = LogReader(file_path=str(records[0]))
    losses = reader.get_data("scalar", "train/loss")
    history = json.loads((out / "history.json").read_text())
    assert [r.id for r in losses] == history["iter_loss"]["iter"]
    np.testing.assert_allclose([r.value for r in losses], history["iter_loss"]["loss"], rtol=1e-6)
    assert [r.value for r in reader.get_data("scalar", "epoch/val_acc")] == pytest.approx(history["epoch"]["val_acc"])


def test_evaluate_recomputes_the_best_epoch_from_the_saved_weights(reference_run, tiny_root):
    out = reference_run[0]
    h = json.loads((out / "history.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "simam_paddle.evaluate", str(out), "--rounds", "2"],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = h["best"]["epoch"] - 1
    assert f"val loss {h['epoch']['val_loss'][best]:.4f}  val acc {h['epoch']['val_acc'][best]:.4f}" in proc.stdout
    assert "model-only" in proc.stdout and "end-to-end" in proc.stdout


def test_evaluate_on_a_directory_that_is_not_a_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "simam_paddle.evaluate", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "is neither a run directory" in proc.stderr


@pytest.mark.slow
def test_mixup_run_trains_on_soft_targets(reference_run, tiny_root, tmp_path):
    out = tmp_path / "mixup"
    run_train(*tiny_args(tiny_root, out, "-o", "train.epochs=1", "-o", "data.mixup_alpha=0.2"))
    mixed = json.loads((out / "history.json").read_text())
    plain = json.loads((reference_run[0] / "history.json").read_text())
    assert mixed["finished"] and all(math.isfinite(v) for v in mixed["iter_loss"]["loss"])
    # same seed, data and weights: only Mixup differs, and it changes the losses from the first batch on
    assert mixed["iter_loss"]["loss"][0] != pytest.approx(plain["iter_loss"]["loss"][0], rel=1e-4)


@pytest.mark.slow
def test_bf16_run_computes_its_convolutions_in_bf16(reference_run, tiny_root, tmp_path):
    from simam_paddle.fastconv import kernel

    if not kernel.cpu_has_bf16():
        pytest.skip("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX-BF16)")
    out = tmp_path / "bf16"
    run_train(*tiny_args(tiny_root, out, "-o", "train.epochs=1", "-o", "train.precision=bf16"))
    history = json.loads((out / "history.json").read_text())
    conv = history["environment"]["conv"]
    assert conv["implementation"] == "onednn" and conv["bf16"] is True
    assert "bfloat16 inputs" in (out / "train.log").read_text()
    reference = json.loads((reference_run[0] / "history.json").read_text())
    bf16_loss, fp32_loss = history["iter_loss"]["loss"][0], reference["iter_loss"]["loss"][0]
    # the first step, before any update: the same network but for bfloat16 operands, close but not equal
    assert bf16_loss != fp32_loss and abs(bf16_loss / fp32_loss - 1) < 1e-3
