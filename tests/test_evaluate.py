"""evaluate on a run directory and on its exports: the same validation figures, the engine named."""

from __future__ import annotations

import re

import pytest
from helpers import make_run_dir, needs_onnx, write_learnable_image_folder

from simam_paddle.evaluate import main
from simam_paddle.export import export


@pytest.fixture
def run_dir(tmp_path):
    root = write_learnable_image_folder(tmp_path / "data", train_per_class=1, test_per_class=4)
    return make_run_dir(tmp_path / "run", "model.name=alexnet_simam", "model.e_lambda=1e-5", f"data.root={root}",
                        "data.batch_size=8", "data.num_workers=0")


def figures(text: str) -> tuple[float, float]:
    loss, acc = re.search(r"val loss ([\d.]+)\s+val acc ([\d.]+)", text).groups()
    return float(loss), float(acc)


@pytest.mark.parametrize("fmt", ["paddle", pytest.param("onnx", marks=needs_onnx)])
def test_an_export_evaluates_like_its_run(run_dir, fmt, capsys):
    assert main([str(run_dir), "--rounds", "1"]) == 0
    from_run = capsys.readouterr().out
    export(run_dir, fmt, num_images=2, log=lambda _: None)
    assert main([str(run_dir / "export" / fmt), "--rounds", "1", "--threads", "1"]) == 0
    from_export = capsys.readouterr().out
    assert "on 40 test images" in from_run and "on 40 test images" in from_export
    engine = ("paddle.inference, oneDNN on, 1 thread, model_simam_op.json (SimAM operator)" if fmt == "paddle"
              else "onnxruntime, 1 intra-op thread")
    assert f"({fmt} export of the best weights; engine: {engine})" in from_export
    (loss_run, acc_run), (loss_export, acc_export) = figures(from_run), figures(from_export)
    assert acc_export == acc_run and loss_export == pytest.approx(loss_run, abs=1e-4)


def test_an_export_whose_run_is_gone_takes_the_data_from_the_command_line(run_dir, tmp_path, capsys):
    export(run_dir, "paddle", num_images=2, log=lambda _: None)
    moved = tmp_path / "moved_export"
    (run_dir / "export" / "paddle").rename(moved)
    data = run_dir.parent / "data"
    for name in list(run_dir.iterdir()):
        if name.is_file():
            name.unlink()
    assert main([str(moved), "--rounds", "1", "-o", f"data.root={data}", "-o", "data.batch_size=8",
                 "-o", "data.num_workers=0"]) == 0
    assert "on 40 test images" in capsys.readouterr().out


@pytest.mark.parametrize("override, message", [
    ("model.e_lambda=0.1", "evaluate uses only data, loss from -o; model.e_lambda would be ignored"),
    ("train.epochs=3", "train.epochs would be ignored"),
])
def test_keys_that_evaluate_would_ignore_are_refused(run_dir, override, message, capsys):
    assert main([str(run_dir), "--rounds", "1", "-o", override]) == 2
    assert message in capsys.readouterr().err
