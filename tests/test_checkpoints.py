"""The run directory's weights and checkpoints: each file written once (its size bounded), runs of the
layout before (with optimizer files) still loading, kept checkpoints (train.save_interval, keep_last),
resuming from a kept epoch or with more epochs, and train.device / --device refused before anything
is written."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import paddle
import pytest

from simam_paddle import run_dir
from simam_paddle.config import load_config
from simam_paddle.train import main as train_main
from simam_paddle.train import train

TIMING = ("epoch_time", "train_ips", "val_ips")
LR = 1e-3


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("SIMAM_PADDLE_NUM_THREADS", "1")  # runs compared bit for bit


def run_args(root, out, *extra: str) -> list[str]:
    """A tiny AlexNet run: 20 images, 5 iterations per epoch."""
    return [f"data.root={root}", f"train.output_dir={out}", "model.name=alexnet", "data.batch_size=4",
            "data.num_workers=0", "train.throughput_batches=0", "train.loss_record_interval=1", f"train.lr={LR}", *extra]


def run(root, out, *extra: str) -> dict:
    return train(load_config(None, run_args(root, out, *extra)))


def tree_bytes(folder) -> int:
    """Bytes of the files under ``folder``, each file (inode) counted once."""
    seen = {}
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


@pytest.fixture(scope="module")
def one_epoch(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("lean") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIMAM_PADDLE_NUM_THREADS", "1")
        run(image_folder, out, "train.epochs=1")
    return out


def test_a_one_epoch_run_writes_its_weights_once(one_epoch):
    weights = (one_epoch / "best_model.pdparams").stat().st_size
    checkpoint = (one_epoch / "checkpoint.pdckpt").stat().st_size
    assert weights > 20e6  # AlexNet's 7.5 M float32 parameters
    assert tree_bytes(one_epoch) <= 1.3 * (weights + checkpoint)
    assert not list(one_epoch.glob("*.pdopt")), "optimizer state outside the checkpoint"
    assert (one_epoch / "final_model.pdparams").samefile(one_epoch / "best_model.pdparams")  # the last epoch is the best
    log = (one_epoch / "train.log").read_text()
    assert ", 1 epoch, output" in log and "5 iterations per epoch" in log and "1 epochs" not in log
    assert "[Train][Epoch 1/1][Iter 5/5] lr: " in log and "train acc: " in log and "top1" not in log


@pytest.fixture(scope="module")
def old_layout(one_epoch, tmp_path_factory):
    """The one-epoch run as the layout before wrote it: optimizer files beside best and final weights, final a copy."""
    out = tmp_path_factory.mktemp("old") / "run"
    shutil.copytree(one_epoch, out)
    final = out / "final_model.pdparams"
    final.unlink()
    shutil.copyfile(out / "best_model.pdparams", final)
    optimizer = paddle.load(str(out / "checkpoint.pdckpt"))["optimizer"]
    for name in ("best_optimizer.pdopt", "final_optimizer.pdopt"):
        paddle.save(optimizer, str(out / name))
    return out


def test_an_old_layout_run_still_loads_predicts_and_exports(old_layout, image_folder, tmp_path):
    from simam_paddle.export import export
    from simam_paddle.predict import predict

    best, _ = run_dir.load_run_model(old_layout, "best")
    final, _ = run_dir.load_run_model(old_layout, "final")
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 128, 128)).astype("float32"))
    np.testing.assert_array_equal(best(x).numpy(), final(x).numpy())
    image = next((image_folder / "test" / "cat").iterdir())
    assert len(predict(old_layout, [image], top_k=2)[0]) == 2
    meta = export(old_layout, "paddle", output=tmp_path / "export", num_images=2, log=lambda _: None, program="standard")
    assert meta["format"] == "paddle" and (tmp_path / "export" / "model.pdiparams").is_file()


def test_an_old_layout_run_resumes_with_more_epochs(old_layout, image_folder):
    h = run(image_folder, old_layout, "train.epochs=2", "train.resume=true")
    assert h["epoch"]["epoch"] == [1, 2]
    log = (old_layout / "train.log").read_text()
    assert ("train.epochs raised from 1 to 2: the cosine schedule now spans 10 iterations (was 5); "
            "iteration 6 trains with lr") in log
    # the new horizon's cosine from iteration 5 on (the recursive form, to float rounding)
    expected = [LR * (1 + math.cos(math.pi * i / 10)) / 2 for i in range(5, 10)]
    assert h["iter_loss"]["lr"][5:] == pytest.approx(expected, rel=1e-9)
    assert h["finished"] and json.loads((old_layout / "history.json").read_text())["epoch"]["epoch"] == [1, 2]


def test_resuming_with_fewer_epochs_or_another_optimizer_is_refused(one_epoch, capsys):
    code = train_main(["--resume", str(one_epoch), "-o", "train.optimizer=adamw"])
    assert code == 2
    assert "train.optimizer: 'adam' -> 'adamw'" in capsys.readouterr().err
    saved = load_config(None, ["train.epochs=3"])
    run_dir.check_resumable(saved, load_config(None, ["train.epochs=4"]), one_epoch)  # more epochs: allowed
    with pytest.raises(run_dir.ConfigError, match="train.epochs: 3 -> 2"):
        run_dir.check_resumable(saved, load_config(None, ["train.epochs=2"]), one_epoch)


def history_figures(h: dict) -> dict:
    return {"epoch": {k: v for k, v in h["epoch"].items() if k not in TIMING}, "iter_loss": h["iter_loss"], "best": h["best"]}


def test_kept_checkpoints_resume_from_their_epoch_as_if_never_stopped(image_folder, tmp_path):
    out = tmp_path / "run"
    first = history_figures(run(image_folder, out, "train.epochs=3", "train.save_interval=1",
                                "train.optimizer=momentum", "train.warmup_iters=2"))
    assert run_dir.kept_epochs(out) == [1, 2, 3]
    assert run_dir.kept_checkpoint(out, 3).samefile(out / "checkpoint.pdckpt")  # a second name, not a copy
    code = train_main(["--resume", str(out), "--resume-epoch", "2", "-o", "train.throughput_batches=0"])
    assert code == 0
    again = history_figures(json.loads((out / "history.json").read_text()))
    assert again == first
    assert "resuming " + str(out) + " after epoch 2 (its kept checkpoint" in (out / "train.log").read_text()
    assert run_dir.kept_epochs(out) == [1, 2, 3]


def test_keep_last_keeps_the_newest_kept_checkpoints(tmp_path):
    model = paddle.nn.Linear(2, 2)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    for epoch in range(1, 8):
        run_dir.save_checkpoint(tmp_path, model, optimizer, {"epoch": epoch}, save_interval=2, keep_last=2)
    assert run_dir.kept_epochs(tmp_path) == [4, 6]
    assert paddle.load(str(run_dir.kept_checkpoint(tmp_path, 6)))["state"] == {"epoch": 6}


def test_a_resume_epoch_that_was_not_kept_is_named(one_epoch, capsys):
    code = train_main(["--resume", str(one_epoch), "--resume-epoch", "3"])
    assert code == 2
    assert "kept no checkpoint of epoch 3 (it kept none; train.save_interval keeps them)" in capsys.readouterr().err
    assert train_main(["--resume-epoch", "1"]) == 2
    assert "train.resume_epoch=1 applies to a resumed run: add --resume" in capsys.readouterr().err


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="this Paddle is a GPU build: a GPU is not refused")
@pytest.mark.parametrize("flag", [["--device", "gpu"], ["-o", "train.device=gpu:1"]])
def test_a_gpu_on_a_cpu_build_is_refused_before_the_run_directory_exists(flag, image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = train_main([*sum((["-o", a] for a in run_args(image_folder, out)), []), *flag])
    assert code == 2
    assert "this Paddle is a CPU build" in capsys.readouterr().err
    assert not out.exists()


def fake_run(folder, best_epoch: int, kept: tuple[int, ...]):
    """A run directory whose history names ``best_epoch`` as best, with checkpoints of ``kept`` epochs
    (epoch e's model: every weight e) and best and final weights of the best epoch."""
    model = paddle.nn.Linear(2, 2)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    for e in kept:
        for p in model.parameters():
            p.set_value(paddle.full(p.shape, float(e)))
        run_dir.save_checkpoint(folder, model, optimizer, {"epoch": e}, save_interval=1)
    for name in ("best", "final"):
        paddle.save({k: paddle.full(v.shape, float(best_epoch)) for k, v in model.state_dict().items()},
                    str(folder / run_dir.WEIGHTS[name]))
    (folder / run_dir.HISTORY).write_text(json.dumps({"best": {"epoch": best_epoch}}))


def test_rewinding_to_a_kept_epoch_restores_the_best_weights_up_to_it(tmp_path):
    fake_run(tmp_path, best_epoch=4, kept=(1, 2, 3, 4))
    run_dir.rewind(tmp_path, 3, {"best": {"epoch": 2}}, lambda w: {**w, "written_by": "test"})
    best = paddle.load(str(tmp_path / run_dir.WEIGHTS["best"]))
    assert best["written_by"] == "test" and float(best["weight"].numpy().max()) == 2.0  # epoch 2's weights
    assert run_dir.kept_epochs(tmp_path) == [1, 2, 3]
    assert not (tmp_path / run_dir.WEIGHTS["final"]).exists()
    assert paddle.load(str(tmp_path / run_dir.CHECKPOINT))["state"] == {"epoch": 3}
    assert json.loads((tmp_path / run_dir.HISTORY).read_text()) == {"best": {"epoch": 2}}


def test_rewinding_past_a_best_epoch_that_was_not_kept_is_refused_untouched(tmp_path):
    fake_run(tmp_path, best_epoch=4, kept=(3, 4))
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(run_dir.ConfigError, match="up to epoch 3 the best epoch is 1, whose weights"):
        run_dir.rewind(tmp_path, 3, {"best": {"epoch": 1}}, lambda w: w)
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
