"""Top-1, top-5, per-class accuracy and the confusion matrix against numbers worked out by hand, through
``evaluate`` on known logits; the picture and the file they are written to."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from simam_paddle.errors import DataError
from simam_paddle.evaluate import check_classes, evaluate, write_evaluation
from simam_paddle.metrics import evaluation_figures, report

# 3 classes, 6 images: (label, logits) and, by hand, the prediction (the first of equal maxima).
THREE = [
    (0, [2, 1, 0]),  # -> 0, right
    (0, [0, 3, 1]),  # -> 1
    (1, [0, 1, 0.5]),  # -> 1, right
    (2, [5, 0, 1]),  # -> 0
    (2, [0, 0, 9]),  # -> 2, right
    (2, [1, 1, 1]),  # a tie: -> 0
]
# rows: true class, columns: predicted class
THREE_CONFUSION = [[1, 1, 0], [0, 1, 0], [2, 0, 1]]

# 7 classes: the true class's rank among the logits decides top-5 (ties: lower class index ranks first).
RAMP = [0, 1, 2, 3, 4, 5, 6]
SEVEN = [
    (0, RAMP),  # rank 7: miss
    (2, RAMP),  # 4 larger (3, 4, 5, 6): rank 5, hit
    (1, RAMP),  # 5 larger: rank 6, miss
    (6, RAMP),  # rank 1: hit, and the one top-1 hit
    (1, [1] * 7),  # all equal: classes 0..4 rank first, hit
    (6, [1] * 7),  # all equal: miss
]


def loader_of(cases, batch):
    """Batches (images, labels) whose "images" are indices into ``cases``."""
    for start in range(0, len(cases), batch):
        chunk = range(start, min(start + batch, len(cases)))
        yield paddle.to_tensor(np.array(list(chunk), dtype="float32")), paddle.to_tensor([cases[k][0] for k in chunk])


def model_of(cases):
    return lambda indices: paddle.to_tensor(np.array([cases[int(k)][1] for k in indices.numpy()], dtype="float32"))


@pytest.mark.parametrize("batch", [1, 4, 6])
def test_three_classes_by_hand(batch):
    result = evaluate(model_of(THREE), loader_of(THREE, batch), smoothing=0.0)
    assert result["confusion"].tolist() == THREE_CONFUSION
    figures = evaluation_figures(result["confusion"], result["top5_hits"], ["a", "b", "c"])
    assert figures["images"] == 6 and figures["top1"] == pytest.approx(3 / 6) == pytest.approx(result["acc"])
    assert {name: row["acc"] for name, row in figures["per_class"].items()} == pytest.approx(
        {"a": 1 / 2, "b": 1 / 1, "c": 1 / 3})
    assert figures["per_class"]["c"] == {"images": 3, "correct": 1, "acc": pytest.approx(1 / 3)}
    assert figures["top5"] is None
    assert "with 3 classes (5 or fewer) every class is in the top 5" in figures["top5_note"]
    # the loss, written plainly: mean of -log softmax(logits)[label] (smoothing 0)
    logits = np.array([x for _, x in THREE], dtype=np.float64)
    labels = np.array([y for y, _ in THREE])
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert result["loss"] == pytest.approx(-log_softmax[np.arange(6), labels].mean(), rel=1e-5)


@pytest.mark.parametrize("batch", [1, 6])
def test_top5_with_seven_classes_by_hand(batch):
    result = evaluate(model_of(SEVEN), loader_of(SEVEN, batch))
    assert result["top5_hits"] == 3
    figures = evaluation_figures(result["confusion"], result["top5_hits"], [f"c{k}" for k in range(7)])
    assert figures["top5"] == pytest.approx(3 / 6) and figures["top1"] == pytest.approx(1 / 6)
    assert figures["top5_note"] is None
    assert figures["per_class"]["c6"] == {"images": 2, "correct": 1, "acc": 0.5}
    assert figures["per_class"]["c3"] == {"images": 0, "correct": 0, "acc": None}  # no images: no accuracy
    text = report(figures)
    assert "top-1 0.1667  top-5 0.5000" in text and "c6  0.5000  (1/2)" in text
    assert "no test images of 3 class(es): c3, c4, c5" in text


def test_many_classes_print_the_lowest_and_keep_all_in_the_file(tmp_path):
    names = [f"class_{k:03d}" for k in range(100)]
    labels = np.repeat(np.arange(100), 3)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 100))
    logits[np.arange(300), labels] += np.where(labels % 2 == 0, 5.0, 0.0)  # even classes mostly right
    cases = list(zip(labels.tolist(), logits.tolist()))
    _, figures, written = write_evaluation(model_of(cases), loader_of(cases, 64), names, tmp_path, "100 classes",
                                           {"model": "test"})
    assert [p.name for p in written] == ["evaluation.json", "confusion.png"]
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(saved["per_class"]) == 100 and saved["model"] == "test" and np.array(saved["confusion"]).sum() == 300
    assert saved["top5"] == pytest.approx(figures["top5"])
    text = report(figures)
    assert "the 10 lowest of 100 classes (all in evaluation.json)" in text
    printed = [line.split()[0] for line in text.splitlines()[2:]]
    assert len(printed) == 10 and all(int(name[-3:]) % 2 == 1 for name in printed)  # the odd, weak classes
    png = (tmp_path / "confusion.png").read_bytes()
    assert png[:4] == b"\x89PNG"


def test_other_classes_are_named_both_ways():
    check_classes(["cat", "dog"], ["cat", "dog"], "the model", "the data")
    with pytest.raises(DataError) as info:
        check_classes(["cat", "dog", "fox"], ["cat", "dog", "owl"], "the model (runs/pets)", "the data (data.root X)")
    message = str(info.value)
    assert "the model (runs/pets) has 3 classes (cat, dog, fox), the data (data.root X) 3 (cat, dog, owl)" in message
    assert "only in the model: fox; only in the data: owl" in message
    with pytest.raises(DataError, match="the same names in another label order"):
        check_classes(["cat", "dog"], ["dog", "cat"], "the model", "the data")


@pytest.mark.parametrize("classes, widest", [(10, 1000), (100, 2200), (1000, 3000)])
def test_the_picture_grows_with_the_classes_up_to_a_bound(tmp_path, classes, widest):
    import struct

    from simam_paddle.metrics import confusion_matrix, plot_confusion

    labels = np.arange(classes)
    figures = evaluation_figures(confusion_matrix(labels, labels, classes), classes, [f"c{k}" for k in labels])
    plot_confusion(figures, tmp_path / "confusion.png", "title")
    width, height = struct.unpack(">II", (tmp_path / "confusion.png").read_bytes()[16:24])  # the PNG's IHDR
    assert 600 < width <= widest and 600 < height <= widest
