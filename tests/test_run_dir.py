"""The run directory: strict weights everywhere, a safe --overwrite, temp files cleared, resume rules."""

from __future__ import annotations

import json

import paddle
import pytest
import yaml
from helpers import call_tool, make_run_dir, run_train, write_learnable_image_folder

from simam_paddle import build_model, run_dir
from simam_paddle.config import load_config
from simam_paddle.io import LOCK_NAME, atomic_write_text
from simam_paddle.models import WeightsMismatch, load_weights

pytestmark = pytest.mark.integration  # tools run end to end in subprocesses


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_learnable_image_folder(tmp_path_factory.mktemp("tiny"), train_per_class=4, test_per_class=1)


def train_args(root, out, *extra):
    return ["--config", "alexnet_simam", "-o", f"data.root={root}", "-o", f"train.output_dir={out}",
            "-o", "data.batch_size=16", "-o", "data.num_workers=0", "-o", "train.epochs=1",
            "-o", "train.throughput_batches=1", *extra]


# -- weights that do not fit -------------------------------------------------------------------------
def test_another_models_weights_are_refused_by_name(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam")
    paddle.save(build_model("resnet18").state_dict(), str(run / "best_model.pdparams"))
    with pytest.raises(WeightsMismatch) as error:
        run_dir.load_run_model(run)
    message = str(error.value)
    assert str(run / "best_model.pdparams") in message and "alexnet_simam" in message
    assert "missing: classifier.0.bias" in message and "unexpected: bn1._mean" in message


def test_a_wrong_shape_is_named_with_both_shapes(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet", "model.num_classes=10")
    paddle.save(build_model("alexnet", num_classes=7).state_dict(), str(run / "best_model.pdparams"))
    with pytest.raises(WeightsMismatch, match=r"classifier.6.weight \[2048, 7\] vs \[2048, 10\]"):
        run_dir.load_run_model(run)


@pytest.mark.parametrize("tool, args", [("predict", ["{image}"]), ("evaluate", []), ("visualize", []),
                                        ("export", ["--format", "paddle"])])
def test_every_tool_stops_on_weights_of_another_model(tool, args, tmp_path, tiny_root):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam", f"data.root={tiny_root}", "data.num_workers=0")
    paddle.save(build_model("resnet18").state_dict(), str(run / "best_model.pdparams"))
    image = next((tiny_root / "test" / "cat").iterdir())
    proc = call_tool(tool, run, *[a.format(image=image) for a in args])
    assert proc.returncode == 2 and "does not fit the model alexnet_simam" in proc.stderr, proc.stderr[-1500:]
    assert not (run / "export").exists() and not (run / "attention.png").exists()


def test_partial_loads_report_what_they_skip():
    model = build_model("alexnet", num_classes=7)
    before = model.classifier[6].weight.numpy().copy()
    with pytest.warns(UserWarning, match="2 key.*classifier.6.bias, classifier.6.weight"):
        skipped = load_weights(model, build_model("alexnet").state_dict(), strict=False)
    assert skipped == ["classifier.6.bias", "classifier.6.weight"]
    assert (model.classifier[6].weight.numpy() == before).all()


@pytest.mark.parametrize("name, options, valid", [
    ("alexnet", {"foo": 1}, "num_classes, dropout, fuse"),
    ("resnet18", {"pretrained": True}, "num_classes, plain_weights, strict"),
    ("alexnet_simam", {"pretrained": True}, "e_lambda, backend"),
    ("alexnet", {"e_lambda": 0.1}, "num_classes, dropout, fuse"),
])
def test_build_model_rejects_unknown_options_naming_the_valid_ones(name, options, valid):
    with pytest.raises(TypeError, match=f"unknown option.*{next(iter(options))}.*{valid}"):
        build_model(name, **options)


# -- --overwrite keeps the old run until the new one has a checkpoint --------------------------------
def test_overwrite_with_a_bad_data_root_keeps_the_old_run(tmp_path, tiny_root):
    out = tmp_path / "run"
    run_train(*train_args(tiny_root, out))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME}
    assert len(before) >= 9  # config, classes, log, history, checkpoint, best, final, curves, predictions
    proc = call_tool("train", *train_args(tmp_path / "typo", out), "--overwrite")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME} == before


@pytest.mark.slow
def test_a_new_run_that_stops_before_its_first_checkpoint_puts_the_old_run_back(tmp_path, tiny_root, monkeypatch):
    from simam_paddle.train import Trainer, train

    out = tmp_path / "run"
    run_train(*train_args(tiny_root, out))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME}
    moved_aside = []

    def interrupted(self, epoch):
        moved_aside.append((out / run_dir.REPLACED).is_dir() and not (out / "best_model.pdparams").exists())
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(run_dir.read_config_path(out), ["train.overwrite=true"]))
    assert moved_aside == [True]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME} == before
    assert not (out / run_dir.REPLACED).exists()


def test_a_killed_replacement_is_recovered_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    (out / run_dir.REPLACED).mkdir(parents=True)
    (out / run_dir.REPLACED / "history.json").write_text('{"finished": true}')
    (out / "config.yaml").write_text("partial: new run\n")
    run_dir.recover_replaced(out)  # no checkpoint of the new run: the old one comes back
    assert json.loads((out / "history.json").read_text()) == {"finished": True}
    assert not (out / "config.yaml").exists() and not (out / run_dir.REPLACED).exists()
    (out / run_dir.REPLACED).mkdir()
    (out / run_dir.REPLACED / "history.json").write_text("old")
    (out / "checkpoint.pdckpt").write_bytes(b"new")
    run_dir.recover_replaced(out)  # the new run got its checkpoint: the old one goes
    assert not (out / run_dir.REPLACED).exists() and (out / "history.json").read_text() != "old"


# -- temp files ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path, tiny_root):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".history.json.abc123.tmp", out / ".checkpoint.pdckpt.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (out / "notes.tmp").write_text("mine")
    run_train(*train_args(tiny_root, out))
    assert not any(p.exists() for p in stale)
    assert (out / "notes.tmp").read_text() == "mine"
    assert not list(out.glob(".*.tmp"))


def test_atomic_writes_leave_no_temp_file(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# -- resume ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_of_a_run_without_a_completed_epoch_starts_it_anew(tmp_path, tiny_root):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("left: by a run killed in epoch 1\n")
    proc = run_train(*train_args(tiny_root, out), "--resume")
    assert "no completed epoch to resume from; starting the run anew" in proc.stdout
    assert json.loads((out / "history.json").read_text())["finished"]


@pytest.mark.slow
def test_resume_given_only_the_run_dir_uses_its_own_config_and_a_finished_run_says_so(tmp_path, tiny_root):
    out = tmp_path / "run"
    run_train(*train_args(tiny_root, out, "-o", "train.epochs=2"))
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert "resume" not in saved["train"] and "overwrite" not in saved["train"]  # never the one-off flags
    history = (out / "history.json").read_text()
    proc = run_train("--resume", str(out))
    assert proc.returncode == 0 and "holds a finished run (2 epochs): nothing to resume" in proc.stdout
    assert (out / "history.json").read_text() == history


@pytest.mark.slow
def test_the_saved_config_can_start_a_new_run(tmp_path, tiny_root):
    first = tmp_path / "first"
    run_train(*train_args(tiny_root, first))
    second = tmp_path / "second"
    run_train("--config", str(first / "config.yaml"), "-o", f"train.output_dir={second}")
    assert json.loads((second / "history.json").read_text())["finished"]


# -- the run records which SimAM ran -----------------------------------------------------------------
@pytest.mark.slow
def test_the_simam_implementation_is_recorded_and_logged(tmp_path, tiny_root):
    from simam_paddle.layers import simam_kernel

    out = tmp_path / "run"
    run_train(*train_args(tiny_root, out))
    simam = json.loads((out / "history.json").read_text())["environment"]["simam"]
    expected = "kernel" if simam_kernel.prepare() else "paddle"
    assert simam["implementation"] == expected
    assert f"SimAM implementation: {expected}" in (out / "train.log").read_text()
    plain = tmp_path / "plain"
    run_train(*train_args(tiny_root, plain, "-o", "model.name=alexnet"))
    assert json.loads((plain / "history.json").read_text())["environment"]["simam"] == {"implementation": "none"}


@pytest.mark.slow
def test_a_forced_paddle_backend_is_recorded(tmp_path, tiny_root):
    import os

    from helpers import run_tool

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "SIMAM_PADDLE_REQUIRE_KERNEL"}
    env["SIMAM_PADDLE_BACKEND"] = "paddle"
    run_tool("train", *train_args(tiny_root, out), env=env)
    simam = json.loads((out / "history.json").read_text())["environment"]["simam"]
    assert simam["implementation"] == "paddle"


# -- divergence ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergence_in_the_first_epoch_exits_3_and_names_no_checkpoint(tmp_path, tiny_root):
    out = tmp_path / "run"
    proc = run_train(*train_args(tiny_root, out, "-o", "train.lr=1e30", "-o", "data.batch_size=8"), check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "loss became" in proc.stderr and "at epoch 1" in proc.stderr
    assert "No epoch was completed, so nothing was saved" in proc.stderr and "checkpoint.pdckpt" not in proc.stderr
    assert not (out / "checkpoint.pdckpt").exists()
