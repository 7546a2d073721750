"""Label-smoothing cross-entropy against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from simam_paddle import LabelSmoothingCrossEntropy

LOGITS = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]


def hand_log_softmax(row):
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


def test_hard_labels_by_hand():
    eps = 0.1
    labels = [0, 2]
    expected = 0.0
    for row, t in zip(LOGITS, labels):
        lp = hand_log_softmax(row)
        expected += (1 - eps) * -lp[t] + eps * -sum(lp) / 3
    expected /= 2
    # spelled-out numbers for the first row: log-sum-exp(2, 0, -1) = 2.1698...
    assert math.isclose(hand_log_softmax(LOGITS[0])[0], -0.16984, abs_tol=1e-5)
    loss = LabelSmoothingCrossEntropy(eps)(paddle.to_tensor(LOGITS), paddle.to_tensor(labels))
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


@pytest.mark.parametrize("shape", [[2], [2, 1]])
def test_label_shapes_agree(shape):
    crit = LabelSmoothingCrossEntropy()
    a = crit(paddle.to_tensor(LOGITS), paddle.to_tensor([1, 0]).reshape(shape))
    b = crit(paddle.to_tensor(LOGITS), paddle.to_tensor([1, 0]))
    assert float(a) == pytest.approx(float(b))


def test_soft_targets_by_hand():
    eps, k = 0.1, 3
    targets = [[0.7, 0.3, 0.0], [0.0, 0.25, 0.75]]
    expected = 0.0
    for row, q in zip(LOGITS, targets):
        lp = hand_log_softmax(row)
        expected += -sum(((1 - eps) * qi + eps / k) * li for qi, li in zip(q, lp))
    expected /= 2
    loss = LabelSmoothingCrossEntropy(eps)(paddle.to_tensor(LOGITS), paddle.to_tensor(targets))
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_one_hot_soft_targets_equal_hard_labels():
    logits = paddle.randn([5, 4])
    labels = paddle.to_tensor([0, 3, 1, 1, 2])
    one_hot = paddle.nn.functional.one_hot(labels, 4)
    crit = LabelSmoothingCrossEntropy(0.2)
    assert float(crit(logits, labels)) == pytest.approx(float(crit(logits, one_hot)), rel=1e-6)


def test_zero_smoothing_is_plain_cross_entropy():
    logits, labels = paddle.randn([6, 5]), paddle.to_tensor([0, 1, 2, 3, 4, 0])
    ce = paddle.nn.functional.cross_entropy(logits, labels)
    assert float(LabelSmoothingCrossEntropy(0.0)(logits, labels)) == pytest.approx(float(ce), rel=1e-6)


def test_gradient_flows_to_logits():
    logits = paddle.to_tensor(np.random.randn(3, 4).astype("float32"), stop_gradient=False)
    LabelSmoothingCrossEntropy()(logits, paddle.to_tensor([0, 1, 2])).backward()
    # d loss / d logits = (softmax - smoothed target) / B, rows sum to 0
    np.testing.assert_allclose(logits.grad.numpy().sum(axis=1), 0, atol=1e-7)


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0]])
def test_label_out_of_range_is_an_error(labels):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        LabelSmoothingCrossEntropy()(paddle.to_tensor(LOGITS), paddle.to_tensor(labels))


@pytest.mark.parametrize("target", [[[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0, 0.0]]])
def test_soft_target_shape_mismatch_is_an_error(target):
    with pytest.raises(ValueError, match=r"soft targets must have the logits' shape \[2, 3\]"):
        LabelSmoothingCrossEntropy()(paddle.to_tensor(LOGITS), paddle.to_tensor(target))


def test_label_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="integer labels must have shape"):
        LabelSmoothingCrossEntropy()(paddle.to_tensor(LOGITS), paddle.to_tensor([0, 1, 2]))


def test_smoothing_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        LabelSmoothingCrossEntropy(1.0)
