"""The evaluation a training run writes at its end and the one ``simam-evaluate`` writes: the same figures,
matching the predictions of the saved weights; data of other classes refused, both class sets named."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from helpers import run_tool, run_train, write_learnable_image_folder

from simam_paddle.data import build_test_transform, load_image
from simam_paddle.run_dir import load_run_model

pytestmark = pytest.mark.integration  # tools run end to end in subprocesses

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]  # 7: top-5 is reported


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = write_learnable_image_folder(tmp_path_factory.mktemp("data"), 2, 3, classes=CLASSES, val_folder="val")
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = run_train("-o", "model.name=mobilenet_v2", "-o", "data.image_size=32", "-o", f"data.root={root}",
                     "-o", f"train.output_dir={out}", "-o", "data.batch_size=7", "-o", "data.num_workers=0",
                     "-o", "train.epochs=1", "-o", "train.throughput_batches=0", "-o", "data.train_transforms=none")
    return root, out, proc


def confusion_by_hand(out, root):
    """The confusion matrix of the run's best weights, from each validation file's arg-max."""
    model, _ = load_run_model(out, "best")
    transform = build_test_transform(32)
    counts = np.zeros((7, 7), dtype=int)
    for t, name in enumerate(CLASSES):
        files = sorted((root / "val" / name).iterdir())
        batch = np.stack([transform(load_image(f)) for f in files]).astype("float32")
        with paddle.no_grad():
            for p in model(paddle.to_tensor(batch)).numpy().argmax(axis=1):
                counts[t, p] += 1
    return counts


def test_a_run_ends_with_its_evaluation(run):
    root, out, proc = run
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["confusion"] == confusion_by_hand(out, root).tolist()
    history = json.loads((out / "history.json").read_text())
    assert saved["top1"] == pytest.approx(history["best"]["val_acc"]) and saved["images"] == 21
    assert saved["class_names"] == CLASSES and 0 <= saved["top1"] <= saved["top5"] <= 1
    for t, name in enumerate(CLASSES):
        row = saved["confusion"][t]
        assert saved["per_class"][name] == {"images": 3, "correct": row[t], "acc": pytest.approx(row[t] / 3)}
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    log = (out / "train.log").read_text()
    assert f"best weights on 21 test images: top-1 {saved['top1']:.4f}, top-5 {saved['top5']:.4f}" in log


def test_evaluate_prints_and_writes_the_same_figures(run, tmp_path):
    root, out, _ = run
    at_end = json.loads((out / "evaluation.json").read_text())
    text = run_tool("evaluate", out, "--rounds", "1", "--output", tmp_path / "eval").stdout
    again = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert again["confusion"] == at_end["confusion"] and again["top5"] == pytest.approx(at_end["top5"])
    assert f"top-1 {at_end['top1']:.4f}  top-5 {at_end['top5']:.4f}" in text
    assert "per-class accuracy:" in text and f"    ant  {at_end['per_class']['ant']['acc']:.4f}  (" in text
    assert f"written: {tmp_path / 'eval' / 'evaluation.json'}, {tmp_path / 'eval' / 'confusion.png'}" in text


def test_evaluate_refuses_data_of_other_classes_naming_both(run, tmp_path):
    _, out, _ = run
    other = write_learnable_image_folder(tmp_path / "other", 1, 1, classes=["ant", "bee", "owl"], val_folder="val")
    proc = run_tool("evaluate", out, "--rounds", "1", "-o", f"data.root={other}", check=False)
    assert proc.returncode == 2, proc.stderr
    assert (f"the model ({out}) has 7 classes (ant, bee, cat, dog, eel, fox, gnu), the data (data.root {other}) 3 "
            "(ant, bee, owl); only in the model: cat, dog, eel, fox, gnu; only in the data: owl") in proc.stderr
    assert not (tmp_path / "other" / "evaluation.json").exists()
