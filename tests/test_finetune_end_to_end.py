"""Fine-tuning a converted official SimAM ResNet-18 on a user's 3-class PaddleClas image list, as a
PaddleClas or timm user would, through the tools' command lines: convert, train with momentum, warmup,
a step schedule and gradient clipping, evaluate (top-1, top-5 or why not, per-class accuracy and the
confusion matrix), predict, and compare with the plain twin trained the same way.

The official checkpoint is written by PyTorch in its own process (``test_convert``'s reference); every
figure a tool reports is checked against a reference computed here: the learning rates against the
schedule's formula, the confusion matrix against predict's answers and the image list's labels, the
comparison's difference against the two runs' histories.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import paddle
import pytest
from helpers import run_tool, run_train, write_learnable_image_list
from test_convert import _torch_stays_out, needs_torch, torch_reference  # noqa: F401 (the fixture guards this module too)

from simam_paddle.models.weights import PROVENANCE

CLASSES = ["cat", "dog", "fox"]
TRAIN_PER_CLASS, VAL_PER_CLASS, BATCH, EPOCHS = 4, 3, 4, 3
STEPS = math.ceil(len(CLASSES) * TRAIN_PER_CLASS / BATCH)  # 3 iterations per epoch
LR, WARMUP, STEP_SIZE, GAMMA = 0.01, 2, 2, 0.1


def expected_lr(i: int) -> float:
    """The rate of iteration i (from 0): linear warmup from 0 over WARMUP iterations, then LR times GAMMA
    for every STEP_SIZE epochs completed."""
    if i < WARMUP:
        return LR * i / WARMUP
    return LR * GAMMA ** (i // (STEP_SIZE * STEPS))


@pytest.mark.slow
@pytest.mark.integration
@needs_torch
def test_a_converted_simam_resnet18_fine_tunes_on_an_image_list_and_is_evaluated_and_compared(tmp_path):
    torch_reference("save", "resnet18_simam", "--output", tmp_path / "official.pth.tar")  # 1000 classes, GPU layout
    run_tool("convert", tmp_path / "official.pth.tar", "--model", "resnet18_simam", "--output", tmp_path)
    weights = tmp_path / "resnet18_simam.pdparams"
    root = write_learnable_image_list(tmp_path / "data", TRAIN_PER_CLASS, VAL_PER_CLASS, CLASSES)

    common = [f"model.pretrained={weights}", f"data.root={root}", "data.image_size=32", f"data.batch_size={BATCH}",
              "data.num_workers=0", f"train.epochs={EPOCHS}", "train.optimizer=momentum", "train.nesterov=true",
              "train.weight_decay=1e-4", f"train.lr={LR}", f"train.warmup_iters={WARMUP}", "train.schedule=step",
              f"train.step_size={STEP_SIZE}", f"train.gamma={GAMMA}", "train.clip_grad_norm=1.0",
              "train.loss_record_interval=1", "train.throughput_batches=0"]
    runs = {"resnet18_simam": tmp_path / "simam", "resnet18": tmp_path / "plain"}
    # The plain twin starts from the same converted weights without model.pretrained_other_model: that
    # flag only lifts the refusal of weights whose provenance names another model, and a converted file
    # carries no provenance. The load is still strict, and the two models share every key and shape
    # (SimAM has no parameters), so the plain ResNet-18 loads the SimAM model's weights whole.
    assert PROVENANCE not in paddle.load(str(weights))
    histories = {}
    for name, out in runs.items():
        run_train(*(arg for o in [f"model.name={name}", "model.e_lambda=0.1", *common, f"train.output_dir={out}"]
                    for arg in ("-o", o)))
        log = (out / "train.log").read_text()
        assert ("except the classifier fc.weight, fc.bias, which starts new: the weights have 1000 classes, "
                "the model 3") in log, name
        history = histories[name] = json.loads((out / "history.json").read_text())
        assert history["steps_per_epoch"] == STEPS
        assert history["iter_loss"]["iter"] == list(range(EPOCHS * STEPS))
        want = [expected_lr(i) for i in range(EPOCHS * STEPS)]  # 0, 0.005, 0.01 x 4, 0.001 x 3
        assert history["iter_loss"]["lr"] == pytest.approx(want, rel=1e-9, abs=1e-15), name

    simam = runs["resnet18_simam"]
    evaluation = run_tool("evaluate", simam, "--rounds", 1).stdout
    figures = json.loads((simam / "evaluation.json").read_text())
    assert (simam / "confusion.png").stat().st_size > 5_000
    assert figures["top5"] is None
    assert "top-5 is not reported: with 3 classes (5 or fewer) every class is in the top 5" in evaluation

    # the reference confusion matrix: predict's top-1 for each validation image against its listed label
    run_tool("predict", simam, root / "images" / "val", "--top-k", 1, "--output", tmp_path / "preds.csv")
    with open(tmp_path / "preds.csv", newline="") as f:
        predicted = {row["path"]: CLASSES.index(row["class_1"]) for row in csv.DictReader(f)}
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for line in (root / "val_list.txt").read_text().splitlines():
        path, label = line.rsplit(" ", 1)
        confusion[int(label), predicted.pop(str(root / path))] += 1
    assert not predicted  # predict saw exactly the listed images
    assert confusion.sum(axis=1).tolist() == [VAL_PER_CLASS] * len(CLASSES)
    assert figures["confusion"] == confusion.tolist()
    assert figures["top1"] == pytest.approx(np.trace(confusion) / confusion.sum())
    for c, name in enumerate(CLASSES):
        assert figures["per_class"][name]["acc"] == pytest.approx(confusion[c, c] / VAL_PER_CLASS), name

    run_tool("compare", *runs.values(), "--output", tmp_path / "results", "--no-throughput")
    md = (tmp_path / "results" / "results.md").read_text()
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")] for line in md.splitlines())
            if len(cells) > 1 and cells[1] in ("model", *runs)}
    assert len(rows) == 3 and rows["model"][7:9] == ["Δ best val (pts)", "Δ final val (pts)"]  # no interval
    for column, accuracy in ((7, lambda h: h["best"]["val_acc"]), (8, lambda h: h["epoch"]["val_acc"][-1])):
        delta = 100 * (accuracy(histories["resnet18_simam"]) - accuracy(histories["resnet18"]))
        assert rows["resnet18_simam"][column] == f"{delta:+.2f}"
        assert rows["resnet18"][column] == "—"  # the baseline itself
    assert "one seed per model: no ± and no interval" in md
    assert "resnet18_simam − resnet18 (paired by seed over 1 seed; no interval: a t interval needs at least two seeds)" in md
