"""Batch Mixup: targets, the mixing of images and targets with one lam, Beta draws, exact resume."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from simam_paddle import LabelSmoothingCrossEntropy
from simam_paddle.data import Mixup


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    return images, labels


def test_off_when_alpha_is_zero():
    mixup = Mixup(0.0)
    assert mixup.enabled is False
    images, labels = batch()
    out, targets = mixup(paddle.to_tensor(images), paddle.to_tensor(labels))
    np.testing.assert_array_equal(out.numpy(), images)
    np.testing.assert_array_equal(targets.numpy(), np.eye(10, dtype=np.float32)[labels])


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_images_and_targets_mixed_with_one_lam(alpha):
    mixup = Mixup(alpha, num_classes=10, seed=3)
    assert mixup.enabled is True
    images, labels = batch()
    out, targets = mixup(paddle.to_tensor(images), paddle.to_tensor(labels))
    lam, perm = mixup.last_lam, mixup.last_perm
    assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(6))
    onehot = np.eye(10, dtype=np.float32)[labels]
    np.testing.assert_allclose(out.numpy(), lam * images + (1 - lam) * images[perm], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(targets.numpy(), lam * onehot + (1 - lam) * onehot[perm], rtol=1e-6, atol=1e-7)
    assert targets.dtype == paddle.float32 and targets.shape == [6, 10]
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, rtol=1e-6)


def test_targets_feed_the_loss():
    images, labels = batch()
    _, targets = Mixup(0.2, seed=1)(paddle.to_tensor(images), paddle.to_tensor(labels))
    loss = LabelSmoothingCrossEntropy(0.1)(paddle.zeros([6, 10]), targets)
    assert float(loss) == pytest.approx(np.log(10), rel=1e-5)  # uniform logits: -log(1/10) whatever the target


def test_lam_follows_beta():
    mixup = Mixup(0.4, seed=0)
    images, labels = paddle.to_tensor(batch(2)[0]), paddle.to_tensor(batch(2)[1])
    lams = []
    for _ in range(3000):
        mixup(images, labels)
        lams.append(mixup.last_lam)
    lams = np.array(lams)
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1389 for a = 0.4; SE of the mean ~0.0068
    assert abs(lams.mean() - 0.5) < 0.03
    assert abs(lams.var() - 1 / (4 * 1.8)) < 0.01


def test_same_seed_same_draws_and_bad_alpha():
    images, labels = paddle.to_tensor(batch()[0]), paddle.to_tensor(batch()[1])
    a, b = Mixup(0.2, seed=4), Mixup(0.2, seed=4)
    np.testing.assert_array_equal(a(images, labels)[1].numpy(), b(images, labels)[1].numpy())
    with pytest.raises(ValueError, match="alpha"):
        Mixup(-0.1)
    other = Mixup(0.2, seed=5)(images, labels)[1].numpy()
    assert not np.array_equal(other, Mixup(0.2, seed=4)(images, labels)[1].numpy())
